package conformance

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

	"go.yaml.in/yaml/v3"

	"github.com/mandate-dev/mandate/internal/db"
)

// negativeCases must all FAIL against a correct server: each one expects
// something wrong, so a runner that passed any of them would check nothing.
const negativeCases = `
group: rfc8693
defs:
  ex: &ex
    endpoint: token
    client: agent_a
    form:
      grant_type: urn:ietf:params:oauth:grant-type:token-exchange
      subject_token_type: urn:ietf:params:oauth:token-type:access_token
      subject_token: "{{user_token:alice:mail:read calendar:read}}"
      scope: mail:read
      resource: https://api.example.com/mail
cases:
  - {name: neg-status, spec: x, request: *ex, expect: {status: 401}}
  - {name: neg-error-code, spec: x, request: {endpoint: token, client: agent_a, form: {grant_type: password}}, expect: {error: invalid_scope}}
  - {name: neg-error-on-success, spec: x, request: *ex, expect: {error: invalid_request}}
  - {name: neg-claim, spec: x, request: *ex, expect: {claims: ["act.sub == {{client:agent_b}}"]}}
  - {name: neg-claim-absent, spec: x, request: *ex, expect: {claims: ["act absent"]}}
  - {name: neg-subset, spec: x, request: *ex, expect: {claims: ["scope subset calendar:read"]}}
  - {name: neg-number, spec: x, request: *ex, expect: {body: ["expires_in < 1"]}}
  - {name: neg-header, spec: x, request: *ex, expect: {headers: {Cache-Control: public}}}
  - {name: neg-header-absent, spec: x, request: *ex, expect: {headers: {X-Nothing: "*"}}}
  - {name: neg-field, spec: x, request: *ex, expect: {fields: [refresh_token]}}
  - {name: neg-absent, spec: x, request: *ex, expect: {absent: [access_token]}}
  - {name: neg-token-header, spec: x, request: *ex, expect: {token_header: ["typ == JWT"]}}
  - {name: neg-matches, spec: x, request: {endpoint: token, client: agent_a, form: {grant_type: password}}, expect: {status: 400, body: ["error_description matches ^nothing like this$"]}}
  - {name: neg-wildcard, spec: x, request: {endpoint: jwks}, expect: {body: ["keys.*.kty == oct"]}}
  - name: neg-ref
    spec: x
    steps:
      - {id: t1, request: *ex}
      - id: t2
        request:
          endpoint: token
          client: agent_a
          form: {grant_type: "urn:ietf:params:oauth:grant-type:token-exchange", subject_token_type: "urn:ietf:params:oauth:token-type:access_token", subject_token: "{{token_from:t1}}", resource: https://api.example.com/mail}
        expect: {claims: ["exp > $t1.exp"]}
`

func TestRunnerCatchesFailures(t *testing.T) {
	target, idp := setupNode(t, db.SQLite)
	cases, err := LoadCases(fstest.MapFS{"neg.yaml": {Data: []byte(negativeCases)}})
	if err != nil {
		t.Fatal(err)
	}
	rep := RunCases(context.Background(), target, idp, cases, Filter{})
	if len(rep.Results) != len(cases) {
		t.Fatalf("got %d results, want %d", len(rep.Results), len(cases))
	}
	for _, r := range rep.Results {
		if r.Status != Fail || r.Why == "" {
			t.Errorf("%s: got %s %q, want FAIL with a reason", r.Name, r.Status, r.Why)
		}
		if strings.Contains(r.Why, "eyJ") && !strings.Contains(r.Why, "eyJ…(") {
			t.Errorf("%s: a token leaked into the report: %s", r.Name, r.Why)
		}
	}
}

// TestConformanceAsOtherServer runs the suite in configuration-file mode, the
// way it runs against servers other than mandate: the mandate group is
// skipped with its reason and everything else passes.
func TestConformanceAsOtherServer(t *testing.T) {
	setup, idp := setupNode(t, db.SQLite)
	// Write the configuration a user of another server would write.
	cfg := map[string]any{
		"issuer":  setup.Issuer,
		"idp":     map[string]any{"addr": setup.IdP.Addr, "audience": setup.IdP.Audience},
		"clients": map[string]any{},
	}
	keyDir := t.TempDir()
	for role, c := range setup.Clients {
		if role == RoleImpersonator || role == RoleUnvetted {
			continue // roles another server may not have: their cases must skip
		}
		entry := map[string]any{"client_id": c.ID, "auth_method": c.AuthMethod}
		if c.Secret != "" {
			entry["client_secret"] = c.Secret
		}
		if c.key != nil {
			b, err := json.Marshal(c.key)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(keyDir, role+".jwk"), b, 0o600); err != nil {
				t.Fatal(err)
			}
			entry["private_key_file"] = role + ".jwk"
		}
		cfg["clients"].(map[string]any)[role] = entry
	}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(keyDir, "target.yaml")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	target, err := LoadTarget(path)
	if err != nil {
		t.Fatal(err)
	}
	rep := Run(context.Background(), target, idp, Filter{})
	var skippedMandate, skippedRole int
	for _, r := range rep.Results {
		switch {
		case r.Status == Fail:
			t.Errorf("FAIL %s (%s): %s", r.Name, r.Spec, r.Why)
		case r.Status == Skip && r.Group == "mandate-guarantees":
			skippedMandate++
			if !strings.Contains(r.Why, "mandate setup mode") {
				t.Errorf("%s skipped for %q, want the mandate setup reason", r.Name, r.Why)
			}
		case r.Status == Skip && strings.Contains(r.Why, "no client for role"):
			skippedRole++
		case r.Status == Skip && !strings.Contains(r.Why, "feature") && !strings.Contains(r.Why, "mandate"):
			t.Errorf("%s skipped: %s", r.Name, r.Why)
		}
	}
	if skippedMandate == 0 || skippedRole == 0 {
		t.Errorf("skipped %d mandate cases and %d for missing roles, want some of each", skippedMandate, skippedRole)
	}
	if rep.Passed < 100 {
		t.Errorf("only %d cases passed in configuration mode", rep.Passed)
	}
	t.Log(rep.Summary())
}

// TestAutoChecks runs against a deliberately broken server: its token answers
// lack Cache-Control and issued_token_type, its errors are not JSON, and it
// signs with a key it does not publish.
func TestAutoChecks(t *testing.T) {
	idp := newTestIdP(t)
	var srv *httptest.Server
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/oauth-authorization-server", func(w http.ResponseWriter, _ *http.Request) {
		json.NewEncoder(w).Encode(map[string]any{"issuer": srv.URL, "token_endpoint": srv.URL + "/token", "jwks_uri": srv.URL + "/jwks"})
	})
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, _ *http.Request) {
		w.Write(idp.JWKS()) // the IdP's keys, not the ones its tokens are signed with
	})
	mux.HandleFunc("POST /token", func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		if r.PostForm.Get("grant_type") == "password" {
			http.Error(w, "nope", http.StatusBadRequest)
			return
		}
		if r.PostForm.Get("grant_type") != "client_credentials" {
			w.Header().Set("Cache-Control", "no-store")
		}
		tok, _ := idp.MintBad("bad_signature", UserToken{Subject: "alice", Scope: "mail:read", Audience: srv.URL})
		json.NewEncoder(w).Encode(map[string]any{"access_token": tok, "token_type": "Bearer", "expires_in": 60})
	})
	srv = httptest.NewServer(mux)
	defer srv.Close()
	target := &Target{Issuer: srv.URL, IdP: IdPConfig{Audience: srv.URL}, Clients: map[string]*Client{
		RoleAgentA: {ID: "a", Secret: "s", AuthMethod: "client_secret_basic"},
	}}
	if err := target.Validate(); err != nil {
		t.Fatal(err)
	}
	cases, err := LoadCases(fstest.MapFS{"x.yaml": {Data: []byte(`
group: rfc8693
cases:
  - {name: no-store, spec: x, request: {endpoint: token, client: agent_a, form: {grant_type: client_credentials}}}
  - name: issued-token-type
    spec: x
    request: {endpoint: token, client: agent_a, form: {grant_type: "urn:ietf:params:oauth:grant-type:token-exchange", subject_token: x, subject_token_type: y}}
  - {name: error-not-json, spec: x, request: {endpoint: token, client: agent_a, form: {grant_type: password}}, expect: {status: 400}}
  - {name: signature, spec: x, request: {endpoint: token, client: agent_a, form: {grant_type: "urn:example:x"}}, expect: {verify_signature: true}}
  - {name: skipped, spec: x, request: {endpoint: introspection, client: agent_a, form: {token: x}}}
  - {name: skipped-role, spec: x, request: {endpoint: token, client: agent_b, form: {grant_type: client_credentials}}}
`)}})
	if err != nil {
		t.Fatal(err)
	}
	rep := RunCases(context.Background(), target, idp, cases, Filter{})
	want := map[string]string{
		"no-store":          "Cache-Control: no-store",
		"issued-token-type": "issued_token_type is REQUIRED",
		"error-not-json":    "JSON with an error member",
		"signature":         "does not verify",
		"skipped":           "no introspection endpoint",
		"skipped-role":      "no client for role agent_b",
	}
	for _, r := range rep.Results {
		if !strings.Contains(r.Why, want[r.Name]) {
			t.Errorf("%s: got %s %q, want a reason containing %q", r.Name, r.Status, r.Why, want[r.Name])
		}
	}
	if rep.Failed != 4 || rep.Skipped != 2 || rep.OK() {
		t.Errorf("got %s, want 0 passed, 4 failed, 2 skipped", rep.Summary())
	}
}
