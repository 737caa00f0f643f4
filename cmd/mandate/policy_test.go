package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/mandate-dev/mandate/broker"
	"github.com/mandate-dev/mandate/internal/db"
	"github.com/mandate-dev/mandate/internal/db/dbtest"
	"github.com/mandate-dev/mandate/policies"
	"github.com/mandate-dev/mandate/policies/decisionlog"
	"github.com/mandate-dev/mandate/policies/registry"
	"github.com/mandate-dev/mandate/server"
)

// policyTestDir writes a bundle folder.
func policyTestDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, src := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

const policyTestPolicy = `package mandate.exchange

decision := {"allow": false, "reasons": ["agent-evil is blocked"]} if {
	input.client.id == "agent-evil"
} else := {"allow": true, "reasons": [], "scopes": ["mail:read"]}
`

const policyTestTests = `package mandate.exchange_test

import data.mandate.exchange

test_allows if {
	exchange.decision.allow with input as {"client": {"id": "agent-mail"}}
}
`

const policyTestFailing = `package mandate.exchange_test

import data.mandate.exchange

test_blocks_everyone if {
	not exchange.decision.allow with input as {"client": {"id": "agent-mail"}}
}
`

// runPolicyCLI runs the mandate command line and returns what it printed.
func runPolicyCLI(t *testing.T, g *globals, args ...string) (string, string, error) {
	t.Helper()
	root := newRoot()
	if g != nil {
		args = append([]string{"--url", g.url, "--admin-key", g.adminKey}, args...)
	}
	root.SetArgs(args)
	var out, errb bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errb)
	root.SetIn(strings.NewReader(""))
	err := root.Execute()
	return out.String(), errb.String(), err
}

func TestPolicyTestDefaultBundle(t *testing.T) {
	out, _, err := runPolicyCLI(t, nil, "policy", "test", filepath.Join("..", "..", "policies", "default"))
	if err != nil {
		t.Fatalf("policy test on the default bundle: %v\n%s", err, out)
	}
	if !regexp.MustCompile(`(?m)^PASS: data\.mandate\.exchange_test\.test_\w+ \([0-9.]+(µs|ms|s)\)$`).MatchString(out) {
		t.Errorf("no PASS line in:\n%s", out)
	}
	if !regexp.MustCompile(`(?m)^[1-9]\d* passed, 0 failed$`).MatchString(out) {
		t.Errorf("no summary in:\n%s", out)
	}
	if strings.Contains(out, "FAIL") {
		t.Errorf("a default test fails:\n%s", out)
	}
}

func TestPolicyTestFailingFolder(t *testing.T) {
	dir := policyTestDir(t, map[string]string{"policy.rego": policyTestPolicy, "policy_test.rego": policyTestTests, "more/more_test.rego": policyTestFailing})
	out, _, err := runPolicyCLI(t, nil, "policy", "test", dir)
	if !errors.Is(err, errPolicyTestsFailed) {
		t.Fatalf("err = %v, want errPolicyTestsFailed", err)
	}
	for _, want := range []string{
		"PASS: data.mandate.exchange_test.test_allows (",
		"FAIL: data.mandate.exchange_test.test_blocks_everyone (",
		"    at " + filepath.Join(dir, "more", "more_test.rego") + ":5:1\n",
		"1 passed, 1 failed\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	out, _, err = runPolicyCLI(t, nil, "--json", "policy", "test", dir)
	var rep policies.TestReport
	if !errors.Is(err, errPolicyTestsFailed) || json.Unmarshal([]byte(out), &rep) != nil || rep.Failed != 1 {
		t.Errorf("--json: %v, %s", err, out)
	}
}

func TestPolicyTestBrokenFolders(t *testing.T) {
	syntax := policyTestDir(t, map[string]string{"policy.rego": "package mandate.exchange\n\ndecision := {\n\tinput.x ==\n}\n", "policy_test.rego": policyTestTests})
	_, stderr, err := runPolicyCLI(t, nil, "policy", "test", syntax)
	if err == nil || !regexp.MustCompile(`(?m)^`+regexp.QuoteMeta(filepath.Join(syntax, "policy.rego"))+`:\d+:\d+: rego_parse_error: `).MatchString(stderr) {
		t.Errorf("syntax error: %v\n%s", err, stderr)
	}
	noTests := policyTestDir(t, map[string]string{"policy.rego": policyTestPolicy})
	out, _, err := runPolicyCLI(t, nil, "policy", "test", noTests)
	if err == nil || !strings.Contains(err.Error(), "no tests") || !strings.Contains(out, "0 passed, 0 failed") {
		t.Errorf("no tests: %v\n%s", err, out)
	}
	if _, _, err := runPolicyCLI(t, nil, "policy", "test", filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("missing folder: no error")
	}
}

// startPolicyAPI serves the policy admin API (no admin-key check: the CLI
// sends one anyway) over a fresh SQLite database.
func startPolicyAPI(t *testing.T) (*globals, *decisionlog.Log) {
	t.Helper()
	d := dbtest.Open(t, db.SQLite)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	reg := registry.New(d, registry.Options{Logger: quiet})
	eng := policies.NewEngine(policies.EngineConfig{})
	registry.NewSyncer(reg, eng, registry.SyncerOptions{})
	dl := decisionlog.New(d, decisionlog.Options{Logger: quiet})
	t.Cleanup(dl.Close)
	e := echo.New()
	server.RegisterPolicyAdmin(e.Group("/admin/v1"), reg, eng, dl)
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)
	return &globals{url: srv.URL, adminKey: "test-admin-key"}, dl
}

func TestPolicyCommandsAgainstServer(t *testing.T) {
	g, dl := startPolicyAPI(t)
	good := policyTestDir(t, map[string]string{"policy.rego": policyTestPolicy, "policy_test.rego": policyTestTests})
	failing := policyTestDir(t, map[string]string{"policy.rego": policyTestPolicy, "policy_test.rego": policyTestFailing})

	out, _, err := runPolicyCLI(t, g, "policy", "push", good, "--version", "v1")
	if err != nil || !strings.HasPrefix(out, "pushed v1 (sha256 ") {
		t.Fatalf("push: %v %s", err, out)
	}
	_, stderr, err := runPolicyCLI(t, g, "policy", "push", failing)
	var pe *policyAPIError
	if !errors.As(err, &pe) || pe.Code != "invalid_policy" ||
		!strings.Contains(stderr, "FAIL: data.mandate.exchange_test.test_blocks_everyone ("+filepath.Join(failing, "policy_test.rego")+":5:1)") {
		t.Errorf("push of a failing bundle: %v\n%s", err, stderr)
	}
	broken := policyTestDir(t, map[string]string{"policy.rego": "package mandate.exchange\n\ndecision := {\n", "policy_test.rego": policyTestTests})
	_, stderr, err = runPolicyCLI(t, g, "policy", "push", broken)
	if err == nil || !regexp.MustCompile(`(?m)^`+regexp.QuoteMeta(filepath.Join(broken, "policy.rego"))+`:\d+:\d+: `).MatchString(stderr) {
		t.Errorf("push of a broken bundle: %v\n%s", err, stderr)
	}

	if out, _, err = runPolicyCLI(t, g, "policy", "activate", "v1"); err != nil || out != "activated v1 (activation 1)\n" {
		t.Errorf("activate: %v %q", err, out)
	}
	out, _, err = runPolicyCLI(t, g, "policy", "list")
	if err != nil || !regexp.MustCompile(`(?m)^\*\s+v1\s+admin\s+\S+\s+1 passed`).MatchString(out) {
		t.Errorf("list: %v\n%s", err, out)
	}
	if _, _, err := runPolicyCLI(t, g, "policy", "rollback"); err == nil || !strings.Contains(err.Error(), "conflict") {
		t.Errorf("rollback with one activation: %v", err)
	}
	if out, _, err := runPolicyCLI(t, g, "policy", "get", "v1"); err != nil || !strings.Contains(out, `"policy_test.rego"`) {
		t.Errorf("get: %v %s", err, out)
	}

	in := filepath.Join(t.TempDir(), "input.json")
	if err := os.WriteFile(in, []byte(`{"client":{"id":"agent-evil"},"request":{"scopes":["mail:read"]}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	out, _, err = runPolicyCLI(t, g, "policy", "eval", "--input", in)
	if err != nil || !strings.HasPrefix(out, "deny (bundle v1, ") || !strings.Contains(out, "reason: agent-evil is blocked\n") {
		t.Errorf("eval: %v\n%s", err, out)
	}
	if _, _, err := runPolicyCLI(t, g, "policy", "eval"); err == nil {
		t.Error("eval without --input: no error")
	}

	// Decisions to audit and to replay.
	ctx := context.Background()
	for _, c := range []string{"agent-mail", "agent-evil"} {
		input := &policies.Input{Version: policies.InputVersion, Client: policies.ClientInput{ID: c},
			Request: policies.RequestInput{GrantType: broker.GrantTypeTokenExchange, Scopes: []string{"mail:read", "mail:write"}}}
		dl.RecordDecision(ctx, &broker.Audit{ClientID: c, Subject: "alice", GrantType: broker.GrantTypeTokenExchange,
			Requested: input.Request.Scopes, Issued: input.Request.Scopes, Allowed: true, BundleVersion: "v0", Input: input})
	}
	if err := dl.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	out, _, err = runPolicyCLI(t, g, "policy", "simulate", good, "--since", "1h")
	if err != nil || !strings.Contains(out, "2 decisions replayed") || !strings.Contains(out, "2 would change") ||
		!regexp.MustCompile(`(?m)^allow_to_deny\s+2\s+\S+\s+agent-evil\s+alice\s+agent-evil is blocked$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^scopes_narrowed\s+1\s+\S+\s+agent-mail\s+alice\s+-mail:write$`).MatchString(out) {
		t.Errorf("simulate: %v\n%s", err, out)
	}
	if _, _, err := runPolicyCLI(t, g, "policy", "simulate", "--version", "v1", "--fail-on-change"); !errors.Is(err, errPolicyChanges) {
		t.Errorf("simulate --fail-on-change: %v", err)
	}

	out, _, err = runPolicyCLI(t, g, "audit", "--client", "agent-evil", "--since", "1h")
	if err != nil || !regexp.MustCompile(`(?m)^2\s+\S+\s+allow\s+agent-evil\s+alice\s+mail:read mail:write\s+v0`).MatchString(out) || strings.Contains(out, "agent-mail") {
		t.Errorf("audit: %v\n%s", err, out)
	}
	out, _, err = runPolicyCLI(t, g, "--json", "audit", "--result", "deny")
	if err != nil || !strings.Contains(out, `"decisions": []`) {
		t.Errorf("audit --json: %v\n%s", err, out)
	}
	if _, _, err := runPolicyCLI(t, g, "audit", "--result", "maybe"); err == nil || !strings.Contains(err.Error(), "allow or deny") {
		t.Errorf("audit --result maybe: %v", err)
	}
}
