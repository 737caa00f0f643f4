package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/mandate-dev/mandate/examples/demo/devnode"
	"github.com/mandate-dev/mandate/examples/resource-server/mailapi"
)

// env is a test's process environment.
type env map[string]string

func (e env) get(k string) string { return e[k] }

// world is a mandate node and the mail API, in-process on loopback ports.
type world struct {
	node *devnode.Node
	api  string
}

func startWorld(t *testing.T) *world {
	t.Helper()
	n, err := devnode.Start(t.Context(), devnode.Options{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	// t.Context ends before cleanups run, which stops the API's feed first.
	s, err := mailapi.Start(t.Context(), mailapi.Config{Issuer: n.URL, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	api := httptest.NewServer(s.Handler())
	t.Cleanup(api.Close)
	return &world{node: n, api: api.URL}
}

func (w *world) runAgent(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	args = append([]string{"--mandate-url", w.node.URL, "--api-url", w.api}, args...)
	err := run(context.Background(), args, &out, &errb, env{"MANDATE_ADMIN_KEY": w.node.AdminKey}.get)
	if testing.Verbose() {
		t.Logf("agent output:\n%s%s", out.String(), errb.String())
	}
	return out.String(), err
}

// A JWT with a payload: what the output must never hold in full.
var fullJWT = regexp.MustCompile(`eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+`)

func TestAgentFlow(t *testing.T) {
	w := startWorld(t)
	ctx := t.Context()
	keys := t.TempDir()

	// The developer registers both agents; there is no user token yet.
	out, err := w.runAgent(t, "--register", "--key-dir", keys)
	if err != nil {
		t.Fatalf("register: %v\n%s", err, out)
	}
	for _, want := range []string{"inbox-agent registered", "summary-agent registered", "generated into"} {
		if !strings.Contains(out, want) {
			t.Errorf("register output lacks %q:\n%s", want, out)
		}
	}
	for _, id := range []string{"inbox-agent", "summary-agent"} {
		fi, err := os.Stat(filepath.Join(keys, id+".jwk.json"))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s key mode: got %v, want 0600", id, fi.Mode().Perm())
		}
	}

	// Alice logs in and grants the agent, re-delegable to the sub-agent.
	alice, err := w.node.UserToken(ctx, "alice", "mail:read mail:send calendar:read")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.node.CreateGrant(ctx, alice, devnode.Grant{ClientID: "inbox-agent", Scopes: []string{"mail:read", "mail:send"},
		Resources: []string{mailapi.DefaultAudience}, AllowedSubAgents: []string{"summary-agent"}}); err != nil {
		t.Fatal(err)
	}

	// The whole flow; --register again only refreshes the keys.
	out, err = w.runAgent(t, "--register", "--key-dir", keys, "--user-token", alice)
	if err != nil {
		t.Fatalf("agent flow: %v\n%s", err, out)
	}
	for _, want := range []string{
		"loaded from",
		"inbox-agent was already registered",
		// The agent's own token and API calls.
		"sub alice · client_id inbox-agent · act [inbox-agent] · scope \"mail:read mail:send\"",
		"200 · user alice · client inbox-agent · actors [inbox-agent] · scopes [mail:read mail:send]",
		"202 · user alice · client inbox-agent",
		// The hand-off names the next hop.
		"may_act summary-agent",
		// The sub-agent's token and call: the chain, current actor first.
		"act [summary-agent inbox-agent] · scope \"mail:read\"",
		"200 · user alice · client summary-agent · actors [summary-agent inbox-agent] · scopes [mail:read]",
		`403, as it should be · WWW-Authenticate: Bearer realm="mail", error="insufficient_scope"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if m := fullJWT.FindString(out); m != "" {
		t.Errorf("output holds a whole token: %.40s…", m)
	}
}

func TestAgentWithoutGrant(t *testing.T) {
	w := startWorld(t)
	alice, err := w.node.UserToken(t.Context(), "alice", "mail:read")
	if err != nil {
		t.Fatal(err)
	}
	out, err := w.runAgent(t, "--register", "--key-dir", t.TempDir(), "--user-token", alice)
	if err == nil || !strings.Contains(err.Error(), "invalid_grant") {
		t.Fatalf("without a grant: got %v, want invalid_grant\n%s", err, out)
	}
}

func TestAgentFlags(t *testing.T) {
	for _, c := range []struct {
		name string
		args []string
		env  env
		want string
	}{
		{"nothing to do", nil, env{}, "no user token"},
		{"register without admin key", []string{"--register"}, env{}, "MANDATE_ADMIN_KEY"},
		{"stray argument", []string{"--user-token", "x", "extra"}, env{}, "unexpected argument"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := run(t.Context(), c.args, io.Discard, io.Discard, c.env.get)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error mentioning %q", err, c.want)
			}
		})
	}
}
