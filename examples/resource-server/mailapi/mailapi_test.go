package mailapi_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/mandate-dev/mandate/examples/agent/agentclient"
	"github.com/mandate-dev/mandate/examples/demo/devnode"
	"github.com/mandate-dev/mandate/examples/resource-server/mailapi"
)

const calendarAPI = "https://api.example.com/calendar"

// fixture is a mandate node, the mail API in front of it, and an agent that
// Alice granted mail:read on both the mail and the calendar API.
type fixture struct {
	node    *devnode.Node
	api     *httptest.Server
	agent   *agentclient.Client
	alice   string
	grantID string
}

func setup(t *testing.T) *fixture {
	t.Helper()
	ctx := t.Context()
	n, err := devnode.Start(ctx, devnode.Options{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	// t.Context ends before the cleanups run: the feed stops before the node.
	s, err := mailapi.Start(ctx, mailapi.Config{Issuer: n.URL, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	api := httptest.NewServer(s.Handler())
	t.Cleanup(api.Close)

	key, err := agentclient.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := agentclient.Register(ctx, nil, n.URL, n.AdminKey, agentclient.Registration{ClientID: "reader", Name: "Reader",
		Scopes: []string{"mail:read"}, Audiences: []string{mailapi.DefaultAudience, calendarAPI}, Key: key}); err != nil {
		t.Fatal(err)
	}
	agent, err := agentclient.New(ctx, agentclient.Config{Issuer: n.URL, ClientID: "reader", Key: key})
	if err != nil {
		t.Fatal(err)
	}
	alice, err := n.UserToken(ctx, "alice", "mail:read mail:send")
	if err != nil {
		t.Fatal(err)
	}
	grantID, err := n.CreateGrant(ctx, alice, devnode.Grant{ClientID: "reader", Scopes: []string{"mail:read"},
		Resources: []string{mailapi.DefaultAudience, calendarAPI}})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{node: n, api: api, agent: agent, alice: alice, grantID: grantID}
}

// token exchanges Alice's token for the agent's token for resource.
func (f *fixture) token(t *testing.T, resource string) string {
	t.Helper()
	tok, err := f.agent.Exchange(t.Context(), agentclient.ExchangeRequest{SubjectToken: f.alice, Scopes: []string{"mail:read"}, Resources: []string{resource}})
	if err != nil {
		t.Fatalf("exchange: %v", err)
	}
	return tok.AccessToken
}

func (f *fixture) call(t *testing.T, method, path, token string) *http.Response {
	t.Helper()
	var body io.Reader
	if method == http.MethodPost {
		body = strings.NewReader(`{"to":"bob@example.com","subject":"hi"}`)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, f.api.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { res.Body.Close() })
	return res
}

func TestAPI(t *testing.T) {
	f := setup(t)
	tok := f.token(t, mailapi.DefaultAudience)

	res := f.call(t, http.MethodGet, "/mail/messages", tok)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET /mail/messages: got %d, want 200 (%s)", res.StatusCode, res.Header.Get("WWW-Authenticate"))
	}
	var got mailapi.MessagesResponse
	if err := json.NewDecoder(res.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	want := mailapi.Caller{User: "alice", UserIssuer: f.node.URL + "/dev", Client: "reader", Actors: []string{"reader"},
		Scopes: []string{"mail:read"}, GrantID: f.grantID, Depth: 1}
	if g, _ := json.Marshal(got.Caller); string(g) != string(must(json.Marshal(want))) {
		t.Errorf("caller: got %s, want %s", g, must(json.Marshal(want)))
	}
	if len(got.Messages) == 0 || got.Messages[0].To != "alice" {
		t.Errorf("messages: got %+v", got.Messages)
	}

	cases := []struct {
		name, method, path, token string
		status                    int
		challenge                 string // the error code in WWW-Authenticate
	}{
		{"no token", http.MethodGet, "/mail/messages", "", 401, ""},
		{"garbage", http.MethodGet, "/mail/messages", "not-a-token", 401, "invalid_token"},
		{"user token: audience is mandate", http.MethodGet, "/mail/messages", f.alice, 401, "invalid_token"},
		{"token for another API", http.MethodGet, "/mail/messages", f.token(t, calendarAPI), 401, "invalid_token"},
		{"missing scope", http.MethodPost, "/mail/send", tok, 403, "insufficient_scope"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res := f.call(t, c.method, c.path, c.token)
			if res.StatusCode != c.status {
				t.Fatalf("got %d, want %d", res.StatusCode, c.status)
			}
			ch := res.Header.Get("WWW-Authenticate")
			if !strings.HasPrefix(ch, `Bearer realm="mail"`) || mailapi.ChallengeError(res.Header) != c.challenge {
				t.Fatalf("WWW-Authenticate: got %q, want error %q", ch, c.challenge)
			}
		})
	}
	if res := f.call(t, http.MethodGet, "/healthz", ""); res.StatusCode != http.StatusOK {
		t.Errorf("healthz: got %d", res.StatusCode)
	}
}

// TestRevocationReachesTheAPI: once mandate revokes a token (or its grant), the
// feed delivers it and the API refuses the token within a second (DESIGN.md:
// "Revocations reach every node and every edge validator within a second").
func TestRevocationReachesTheAPI(t *testing.T) {
	f := setup(t)
	revoke := map[string]func(t *testing.T, tok string){
		"token (RFC 7009)": func(t *testing.T, tok string) {
			if err := f.agent.Revoke(t.Context(), tok); err != nil {
				t.Fatal(err)
			}
		},
		"grant (by the user)": func(t *testing.T, _ string) {
			if err := f.node.RevokeGrant(t.Context(), f.alice, f.grantID); err != nil {
				t.Fatal(err)
			}
		},
	}
	for _, name := range []string{"token (RFC 7009)", "grant (by the user)"} { // the grant last: it ends the fixture
		t.Run(name, func(t *testing.T) {
			tok := f.token(t, mailapi.DefaultAudience)
			if res := f.call(t, http.MethodGet, "/mail/messages", tok); res.StatusCode != http.StatusOK {
				t.Fatalf("before revocation: got %d, want 200", res.StatusCode)
			}
			start := time.Now()
			revoke[name](t, tok)
			deadline := start.Add(time.Second)
			for {
				res := f.call(t, http.MethodGet, "/mail/messages", tok)
				if res.StatusCode == http.StatusUnauthorized && mailapi.ChallengeError(res.Header) == "invalid_token" {
					t.Logf("refused %v after the revocation", time.Since(start))
					break
				}
				if res.StatusCode != http.StatusOK {
					t.Fatalf("while waiting for the revocation: got %d (%s)", res.StatusCode, res.Header.Get("WWW-Authenticate"))
				}
				if time.Now().After(deadline) {
					t.Fatal("the API still accepts the revoked token 1 s after the revocation")
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}
