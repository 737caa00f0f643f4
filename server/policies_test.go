package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/mandate-dev/mandate/broker"
	"github.com/mandate-dev/mandate/internal/db"
	"github.com/mandate-dev/mandate/internal/db/dbtest"
	"github.com/mandate-dev/mandate/policies"
	"github.com/mandate-dev/mandate/policies/decisionlog"
	"github.com/mandate-dev/mandate/policies/registry"
	"github.com/mandate-dev/mandate/server"
)

type policiesTestEnv struct {
	t    testing.TB
	d    *db.DB
	e    *echo.Echo
	reg  *registry.Registry
	eng  *policies.Engine
	sync *registry.Syncer
	log  *decisionlog.Log
}

func newPoliciesTestEnv(t testing.TB, dialect db.Dialect) *policiesTestEnv {
	t.Helper()
	quiet := slog.New(slog.DiscardHandler)
	env := &policiesTestEnv{t: t, d: dbtest.Open(t, dialect), e: echo.New(), eng: policies.NewEngine(policies.EngineConfig{})}
	env.reg = registry.New(env.d, registry.Options{Logger: quiet})
	env.sync = registry.NewSyncer(env.reg, env.eng, registry.SyncerOptions{})
	env.log = decisionlog.New(env.d, decisionlog.Options{Logger: quiet})
	t.Cleanup(env.log.Close)
	server.RegisterPolicyAdmin(env.e.Group("/admin/v1"), env.reg, env.eng, env.log)
	return env
}

func policiesTestEachBackend(t *testing.T, fn func(t *testing.T, env *policiesTestEnv)) {
	for _, d := range dbtest.Backends() {
		t.Run(string(d), func(t *testing.T) { fn(t, newPoliciesTestEnv(t, d)) })
	}
}

type policiesTestResponse struct{ *httptest.ResponseRecorder }

func (env *policiesTestEnv) do(method, path, body string, header ...string) policiesTestResponse {
	env.t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	env.e.ServeHTTP(rec, req)
	if rec.Code >= 500 && rec.Code != http.StatusServiceUnavailable {
		env.t.Fatalf("%s %s: got %d %s", method, path, rec.Code, rec.Body)
	}
	return policiesTestResponse{rec}
}

// expect checks the status (and error code) and decodes the body.
func policiesTestExpect(t testing.TB, r policiesTestResponse, status int, errCode string) map[string]any {
	t.Helper()
	if r.Code != status {
		t.Fatalf("got %d %s, want %d", r.Code, r.Body, status)
	}
	var m map[string]any
	if err := json.Unmarshal(r.Body.Bytes(), &m); err != nil {
		t.Fatalf("response is not a JSON object: %q: %v", r.Body.String(), err)
	}
	if errCode != "" && m["error"] != errCode {
		t.Fatalf("error: got %v, want %q (%s)", m["error"], errCode, r.Body)
	}
	if cc := r.Header().Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control: got %q, want no-store", cc)
	}
	return m
}

// policiesTestFiles is a small bundle: deny lists denied clients; allowed
// requests are narrowed to scopes.
func policiesTestFiles(deny, scopes string) map[string]string {
	return map[string]string{
		"exchange.rego": `package mandate.exchange

denied := {` + deny + `}

decision := {"allow": false, "reasons": [sprintf("client %s is denied", [input.client.id])]} if {
	input.client.id in denied
} else := {"allow": true, "reasons": [], "scopes": [` + scopes + `]}
`,
		"exchange_test.rego": `package mandate.exchange_test

import data.mandate.exchange

test_allows_others if {
	exchange.decision.allow with input as {"client": {"id": "somebody-else"}}
}
`,
	}
}

func policiesTestPushBody(version string, files map[string]string) string {
	b, _ := json.Marshal(map[string]any{"version": version, "files": files})
	return string(b)
}

const policiesTestInput = `{"version":"mandate.policy/v1","client":{"id":"agent-mail","name":"Mail","type":"agent","first_party":false,"may_impersonate":false,"scopes":["mail:read"],"audiences":[]},
"subject":{"issuer":"https://idp.example.com","subject":"alice","kind":"upstream","client_id":"","scopes":["mail:read","mail:write"],"depth":0,"grant_id":"","claims":{"sub":"alice","n":12345678901234567890}},
"actor_chain":[{"sub":"agent-mail"}],"grant":null,
"request":{"grant_type":"urn:ietf:params:oauth:grant-type:token-exchange","scopes":["mail:read","mail:write"],"audiences":[],"resources":[],"requested_token_type":"","delegation":true,"depth":1},
"meta":{"time":"2026-03-10T10:00:00Z","unix":1773136800,"client_ip":"","request_id":""}}`

func TestPoliciesAPILifecycle(t *testing.T) {
	policiesTestEachBackend(t, func(t *testing.T, env *policiesTestEnv) {
		// Push.
		r := env.do("POST", "/admin/v1/policies", policiesTestPushBody("v1", policiesTestFiles(`"agent-evil"`, `"mail:read", "mail:write"`)))
		m := policiesTestExpect(t, r, http.StatusCreated, "")
		if m["version"] != "v1" || m["author"] != "admin" || m["active"] != false || m["files"] != nil {
			t.Errorf("push: %v", m)
		}
		if rep := m["test_report"].(map[string]any); rep["passed"] != 1.0 {
			t.Errorf("test report: %v", rep)
		}
		if loc := r.Header().Get("Location"); loc != "/admin/v1/policies/v1" {
			t.Errorf("Location = %q", loc)
		}
		policiesTestExpect(t, env.do("POST", "/admin/v1/policies", policiesTestPushBody("v1", policiesTestFiles(`"x"`, `"mail:read"`))), http.StatusConflict, "conflict")

		// A generated version.
		m = policiesTestExpect(t, env.do("POST", "/admin/v1/policies", policiesTestPushBody("", policiesTestFiles(`"agent-mail"`, `"mail:read"`))), http.StatusCreated, "")
		v2 := m["version"].(string)
		if !strings.HasPrefix(v2, "v2-") {
			t.Errorf("generated version %q", v2)
		}

		// Nothing is active yet.
		m = policiesTestExpect(t, env.do("GET", "/admin/v1/policies", ""), http.StatusOK, "")
		if m["active"] != nil || len(m["bundles"].([]any)) != 2 {
			t.Errorf("list: %v", m)
		}

		// Activate v1: this node runs it at once.
		m = policiesTestExpect(t, env.do("POST", "/admin/v1/policies/v1/activate", ""), http.StatusOK, "")
		if m["version"] != "v1" || m["action"] != "activate" || m["activated_by"] != "admin" {
			t.Errorf("activate: %v", m)
		}
		if env.eng.Active() == nil || env.eng.Active().Version != "v1" {
			t.Fatalf("engine runs %v", env.eng.Active())
		}
		m = policiesTestExpect(t, env.do("GET", "/admin/v1/policies/v1", ""), http.StatusOK, "")
		if m["active"] != true || m["files"].(map[string]any)["exchange.rego"] == nil || len(m["test_report"].(map[string]any)["results"].([]any)) != 1 {
			t.Errorf("get: %v", m)
		}
		m = policiesTestExpect(t, env.do("GET", "/admin/v1/policies", ""), http.StatusOK, "")
		if m["active"].(map[string]any)["version"] != "v1" || m["node"].(map[string]any)["version"] != "v1" || len(m["activations"].([]any)) != 1 {
			t.Errorf("list: %v", m)
		}

		// Activate v2, roll back to v1, and no further.
		policiesTestExpect(t, env.do("POST", "/admin/v1/policies/"+v2+"/activate", ""), http.StatusOK, "")
		if env.eng.Active().Version != v2 {
			t.Fatalf("engine runs %s, want %s", env.eng.Active().Version, v2)
		}
		m = policiesTestExpect(t, env.do("POST", "/admin/v1/policies/rollback", ""), http.StatusOK, "")
		if m["version"] != "v1" || m["action"] != "rollback" || env.eng.Active().Version != "v1" {
			t.Errorf("rollback: %v, engine %s", m, env.eng.Active().Version)
		}
		policiesTestExpect(t, env.do("POST", "/admin/v1/policies/rollback", ""), http.StatusConflict, "conflict")

		policiesTestExpect(t, env.do("POST", "/admin/v1/policies/v9/activate", ""), http.StatusNotFound, "not_found")
		policiesTestExpect(t, env.do("GET", "/admin/v1/policies/v9", ""), http.StatusNotFound, "not_found")
		policiesTestExpect(t, env.do("GET", "/admin/v1/policies/v1%2F..%2Fv2", ""), http.StatusNotFound, "not_found")

		// Versions that spell a route still reach their bundle.
		for _, v := range []string{"rollback", "eval", "simulate"} {
			policiesTestExpect(t, env.do("POST", "/admin/v1/policies", policiesTestPushBody(v, policiesTestFiles(`"a"`, `"mail:read"`))), http.StatusCreated, "")
			if m := policiesTestExpect(t, env.do("GET", "/admin/v1/policies/"+v, ""), http.StatusOK, ""); m["version"] != v {
				t.Errorf("GET /policies/%s: %v", v, m)
			}
			if m := policiesTestExpect(t, env.do("POST", "/admin/v1/policies/"+v+"/activate", ""), http.StatusOK, ""); m["version"] != v {
				t.Errorf("activate %s: %v", v, m)
			}
		}
	})
}

func TestPoliciesAPIRefusedPush(t *testing.T) {
	policiesTestEachBackend(t, func(t *testing.T, env *policiesTestEnv) {
		policiesTestExpect(t, env.do("POST", "/admin/v1/policies", policiesTestPushBody("good", policiesTestFiles(`"x"`, `"mail:read"`))), http.StatusCreated, "")
		policiesTestExpect(t, env.do("POST", "/admin/v1/policies/good/activate", ""), http.StatusOK, "")

		syntax := policiesTestFiles(`"x"`, `"mail:read"`)
		syntax["exchange.rego"] = "package mandate.exchange\n\ndecision := {\"allow\": true,\n\tinput.client.id ==\n}\n"
		m := policiesTestExpect(t, env.do("POST", "/admin/v1/policies", policiesTestPushBody("bad", syntax)), http.StatusBadRequest, "invalid_policy")
		problems := m["problems"].([]any)
		if len(problems) == 0 {
			t.Fatalf("no problems: %v", m)
		}
		p := problems[0].(map[string]any)
		if p["file"] != "exchange.rego" || p["line"].(float64) < 3 || p["col"].(float64) < 1 || p["message"] == "" {
			t.Errorf("problem: %v", p)
		}
		if !strings.Contains(m["error_description"].(string), "exchange.rego:") || len(m["failed_tests"].([]any)) != 0 {
			t.Errorf("refusal: %v", m)
		}

		failing := policiesTestFiles(`"x"`, `"mail:read"`)
		failing["more_test.rego"] = "package mandate.exchange_test\n\nimport data.mandate.exchange\n\ntest_denies_everyone if {\n\tnot exchange.decision.allow with input as {\"client\": {\"id\": \"y\"}}\n}\n"
		m = policiesTestExpect(t, env.do("POST", "/admin/v1/policies", policiesTestPushBody("bad", failing)), http.StatusBadRequest, "invalid_policy")
		ft := m["failed_tests"].([]any)
		if len(ft) != 1 || ft[0].(map[string]any)["name"] != "data.mandate.exchange_test.test_denies_everyone" ||
			ft[0].(map[string]any)["location"] != "more_test.rego:5:1" || m["test_report"] == nil {
			t.Errorf("failed tests: %v", m)
		}

		noEntry := map[string]string{"p.rego": "package other\n\nx := 1\n"}
		m = policiesTestExpect(t, env.do("POST", "/admin/v1/policies", policiesTestPushBody("bad", noEntry)), http.StatusBadRequest, "invalid_policy")
		if !strings.Contains(m["error_description"].(string), "data.mandate.exchange.decision") {
			t.Errorf("no entry point: %v", m)
		}
		policiesTestExpect(t, env.do("POST", "/admin/v1/policies", policiesTestPushBody("bad version", policiesTestFiles(`"x"`, `"y"`))), http.StatusBadRequest, "invalid_request")

		if m := policiesTestExpect(t, env.do("GET", "/admin/v1/policies", ""), http.StatusOK, ""); len(m["bundles"].([]any)) != 1 {
			t.Errorf("a refused push was stored: %v", m)
		}
		if env.eng.Active().Version != "good" {
			t.Errorf("engine runs %s after refused pushes", env.eng.Active().Version)
		}
	})
}

func TestPoliciesAPIEval(t *testing.T) {
	policiesTestEachBackend(t, func(t *testing.T, env *policiesTestEnv) {
		eval := func(body string) policiesTestResponse { return env.do("POST", "/admin/v1/policies/eval", body) }
		// No active bundle yet.
		policiesTestExpect(t, eval(`{"input":`+policiesTestInput+`}`), http.StatusServiceUnavailable, "temporarily_unavailable")

		policiesTestExpect(t, env.do("POST", "/admin/v1/policies", policiesTestPushBody("open", policiesTestFiles(`"nobody"`, `"mail:read"`))), http.StatusCreated, "")
		policiesTestExpect(t, env.do("POST", "/admin/v1/policies", policiesTestPushBody("closed", policiesTestFiles(`"agent-mail"`, `"mail:read"`))), http.StatusCreated, "")
		policiesTestExpect(t, env.do("POST", "/admin/v1/policies/open/activate", ""), http.StatusOK, "")

		m := policiesTestExpect(t, eval(`{"input":`+policiesTestInput+`}`), http.StatusOK, "")
		if m["allow"] != true || m["bundle_version"] != "open" || fmt.Sprint(m["scopes"]) != "[mail:read]" || m["error"] != nil {
			t.Errorf("eval with the active bundle: %v", m)
		}
		m = policiesTestExpect(t, eval(`{"version":"closed","input":`+policiesTestInput+`}`), http.StatusOK, "")
		if m["allow"] != false || m["bundle_version"] != "closed" || fmt.Sprint(m["reasons"]) != "[client agent-mail is denied]" {
			t.Errorf("eval with a named bundle: %v", m)
		}
		// The input version may be left out.
		m = policiesTestExpect(t, eval(`{"input":{"client":{"id":"x"}}}`), http.StatusOK, "")
		if m["allow"] != true {
			t.Errorf("eval of a partial input: %v", m)
		}

		for _, tc := range []struct{ name, body, want string }{
			{"unknown field in input", `{"input":{"client":{"id":"x","nickname":"y"}}}`, "nickname"},
			{"unknown top-level field", `{"inputs":{}}`, "inputs"},
			{"wrong type", `{"input":{"client":{"first_party":"yes"}}}`, "input.client.first_party must be true or false"},
			{"wrong input version", `{"input":{"version":"v0"}}`, "version"},
			{"no input", `{"version":"open"}`, "input is required"},
			{"null input", `{"input":null}`, "input is required"},
			{"trailing data", `{"input":{}} {}`, "exactly one JSON value"},
			{"not an object", `[1]`, "must be a JSON object"},
			{"truncated", `{"input":{`, "ends too early"},
		} {
			m := policiesTestExpect(t, eval(tc.body), http.StatusBadRequest, "invalid_request")
			if !strings.Contains(m["error_description"].(string), tc.want) {
				t.Errorf("%s: %v, want %q", tc.name, m["error_description"], tc.want)
			}
		}
		policiesTestExpect(t, eval(`{"version":"nope","input":{}}`), http.StatusNotFound, "not_found")
		policiesTestExpect(t, env.do("POST", "/admin/v1/policies/eval", `{"input":{}}`, "Content-Type", "text/plain"), http.StatusUnsupportedMediaType, "invalid_request")
		policiesTestExpect(t, env.do("POST", "/admin/v1/policies/eval", `{"input":{"client":{"id":"`+strings.Repeat("x", 2<<20)+`"}}}`), http.StatusRequestEntityTooLarge, "invalid_request")

		// A decision the engine refuses is an answer, not a server error.
		broken := map[string]string{
			"exchange.rego":      "package mandate.exchange\n\ndecision := {\"allow\": true, \"reasons\": []} if input.client.id == \"ok\"\n\ndecision := {\"allow\": true, \"reasons\": [], \"extra\": 1} if input.client.id == \"odd\"\n",
			"exchange_test.rego": "package mandate.exchange_test\n\nimport data.mandate.exchange\n\ntest_ok if exchange.decision.allow with input as {\"client\": {\"id\": \"ok\"}}\n",
		}
		policiesTestExpect(t, env.do("POST", "/admin/v1/policies", policiesTestPushBody("odd", broken)), http.StatusCreated, "")
		m = policiesTestExpect(t, eval(`{"version":"odd","input":{"client":{"id":"odd"}}}`), http.StatusOK, "")
		if m["allow"] != false || !strings.Contains(fmt.Sprint(m["error"]), "unknown key") {
			t.Errorf("eval of a malformed decision: %v", m)
		}
	})
}

func policiesTestRecord(env *policiesTestEnv, client, subject string, allowed bool) {
	var in policies.Input
	if err := json.Unmarshal([]byte(policiesTestInput), &in); err != nil {
		env.t.Fatal(err)
	}
	in.Client.ID, in.Subject.Subject = client, subject
	a := &broker.Audit{ClientID: client, Subject: subject, SubjectIssuer: in.Subject.Issuer, GrantType: broker.GrantTypeTokenExchange,
		Requested: in.Request.Scopes, Allowed: allowed, BundleVersion: "old", Input: &in}
	if allowed {
		a.Issued = in.Request.Scopes
	} else {
		a.Reasons, a.Error = []string{"denied"}, "invalid_grant"
	}
	env.log.RecordDecision(context.Background(), a)
}

func TestPoliciesAPISimulateAndDecisions(t *testing.T) {
	policiesTestEachBackend(t, func(t *testing.T, env *policiesTestEnv) {
		policiesTestRecord(env, "agent-mail", "alice", true)
		policiesTestRecord(env, "agent-cal", "bob", true)
		policiesTestRecord(env, "agent-mail", "carol", false)
		if err := env.log.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}

		body, _ := json.Marshal(map[string]any{"files": policiesTestFiles(`"agent-mail"`, `"mail:read"`), "since": "1h", "limit": 100})
		m := policiesTestExpect(t, env.do("POST", "/admin/v1/policies/simulate", string(body)), http.StatusOK, "")
		rep := m["report"].(map[string]any)
		// alice: allow -> deny; bob: narrowed to mail:read; carol: deny stays deny.
		if rep["replayed"] != 3.0 || rep["allow_to_deny"] != 1.0 || rep["scopes_narrowed"] != 1.0 || rep["unchanged"] != 1.0 || m["changed"] != 2.0 {
			t.Errorf("report: %v", rep)
		}
		if m["test_report"].(map[string]any)["passed"] != 1.0 {
			t.Errorf("test report: %v", m["test_report"])
		}
		changes := rep["changes"].([]any)
		if len(changes) != 2 || changes[0].(map[string]any)["subject"] != "bob" || changes[0].(map[string]any)["kind"] != "scopes_narrowed" {
			t.Errorf("changes: %v", changes)
		}

		// A pushed version simulates the same way.
		policiesTestExpect(t, env.do("POST", "/admin/v1/policies", policiesTestPushBody("cand", policiesTestFiles(`"agent-cal"`, `"mail:read", "mail:write"`))), http.StatusCreated, "")
		m = policiesTestExpect(t, env.do("POST", "/admin/v1/policies/simulate", `{"version":"cand","since":"2000-01-01T00:00:00Z"}`), http.StatusOK, "")
		if rep := m["report"].(map[string]any); rep["allow_to_deny"] != 1.0 || rep["deny_to_allow"] != 1.0 || m["test_report"] != nil {
			t.Errorf("simulate a version: %v", m)
		}

		syntax := map[string]string{"exchange.rego": "package mandate.exchange\n\ndecision := {\n"}
		body, _ = json.Marshal(map[string]any{"files": syntax})
		m = policiesTestExpect(t, env.do("POST", "/admin/v1/policies/simulate", string(body)), http.StatusBadRequest, "invalid_policy")
		if p := m["problems"].([]any); len(p) == 0 || p[0].(map[string]any)["file"] != "exchange.rego" {
			t.Errorf("simulate a broken candidate: %v", m)
		}
		for _, bad := range []string{`{}`, `{"version":"cand","files":{"a.rego":"package a"}}`, `{"version":"cand","since":"yesterday"}`,
			`{"version":"cand","since":"-1h"}`, `{"version":"cand","limit":100000}`, `{"version":"cand","limit":"10"}`} {
			policiesTestExpect(t, env.do("POST", "/admin/v1/policies/simulate", bad), http.StatusBadRequest, "invalid_request")
		}
		policiesTestExpect(t, env.do("POST", "/admin/v1/policies/simulate", `{"version":"nope"}`), http.StatusNotFound, "not_found")

		// The decision log.
		m = policiesTestExpect(t, env.do("GET", "/admin/v1/decisions", ""), http.StatusOK, "")
		ds := m["decisions"].([]any)
		if len(ds) != 3 || m["next_before"] != nil {
			t.Fatalf("decisions: %v", m)
		}
		first := ds[0].(map[string]any)
		if first["subject"] != "carol" || first["result"] != "deny" || first["error"] != "invalid_grant" || first["input"] != nil || first["bundle_version"] != "old" {
			t.Errorf("newest decision: %v", first)
		}
		m = policiesTestExpect(t, env.do("GET", "/admin/v1/decisions?client_id=agent-mail&result=allow&since=1h&include_input=true", ""), http.StatusOK, "")
		ds = m["decisions"].([]any)
		if len(ds) != 1 || ds[0].(map[string]any)["subject"] != "alice" || ds[0].(map[string]any)["input"].(map[string]any)["version"] != policies.InputVersion {
			t.Errorf("filtered decisions: %v", m)
		}
		m = policiesTestExpect(t, env.do("GET", "/admin/v1/decisions?limit=2", ""), http.StatusOK, "")
		next := m["next_before"].(float64)
		m = policiesTestExpect(t, env.do("GET", fmt.Sprintf("/admin/v1/decisions?limit=2&before=%d", int64(next)), ""), http.StatusOK, "")
		if ds := m["decisions"].([]any); len(ds) != 1 || ds[0].(map[string]any)["subject"] != "alice" {
			t.Errorf("second page: %v", m)
		}
		m = policiesTestExpect(t, env.do("GET", "/admin/v1/decisions?subject=bob&until="+time.Now().Add(-time.Hour).UTC().Format(time.RFC3339), ""), http.StatusOK, "")
		if ds := m["decisions"].([]any); len(ds) != 0 {
			t.Errorf("decisions before an hour ago: %v", ds)
		}
		for _, q := range []string{"result=maybe", "limit=0", "limit=1001", "limit=x", "before=-1", "since=soon", "include_input=yes", "client=x", "subject=a&subject=b"} {
			policiesTestExpect(t, env.do("GET", "/admin/v1/decisions?"+q, ""), http.StatusBadRequest, "invalid_request")
		}
	})
}

func TestPoliciesAPIBodies(t *testing.T) {
	env := newPoliciesTestEnv(t, db.SQLite)
	for _, tc := range []struct {
		body   string
		status int
	}{
		{``, http.StatusUnsupportedMediaType},
		{`{}`, http.StatusBadRequest},
		{`{"files":{}}`, http.StatusBadRequest},
		{`{"files":{"a.rego":1}}`, http.StatusBadRequest},
		{`{"files":[]}`, http.StatusBadRequest},
		{`{"files":{"a.rego":"package a"},"author":"me"}`, http.StatusBadRequest},
		{`{"files":{"../a.rego":"package a"}}`, http.StatusBadRequest},
		{`{"files":{"a.rego":"package a"}}x`, http.StatusBadRequest},
	} {
		r := env.do("POST", "/admin/v1/policies", tc.body)
		if r.Code != tc.status {
			t.Errorf("push %q: %d %s, want %d", tc.body, r.Code, r.Body, tc.status)
		}
	}
	huge := `{"files":{"a.rego":"` + strings.Repeat("x", policies.MaxBundleBytes*2) + `"}}`
	policiesTestExpect(t, env.do("POST", "/admin/v1/policies", huge), http.StatusRequestEntityTooLarge, "invalid_request")
	// Under the body limit but over the bundle limit: refused by the registry.
	big := `{"files":{"a.rego":"` + strings.Repeat("x", policies.MaxBundleBytes+1) + `"}}`
	m := policiesTestExpect(t, env.do("POST", "/admin/v1/policies", big), http.StatusBadRequest, "invalid_policy")
	if !strings.Contains(m["error_description"].(string), "over limit") {
		t.Errorf("over the bundle limit: %v", m)
	}
}

func TestPoliciesAPIDatabaseUnavailable(t *testing.T) {
	policiesTestEachBackend(t, func(t *testing.T, env *policiesTestEnv) {
		if env.d.Dialect() != db.Postgres {
			t.Skip("simulating an outage needs PostgreSQL (a closed pool maps to db.ErrUnavailable; a closed SQLite handle is a programming error)")
		}
		env.d.Close()
		for _, req := range [][2]string{{"GET", "/admin/v1/policies"}, {"GET", "/admin/v1/policies/v1"}, {"GET", "/admin/v1/decisions"},
			{"POST", "/admin/v1/policies/v1/activate"}, {"POST", "/admin/v1/policies/rollback"}} {
			r := env.do(req[0], req[1], "")
			policiesTestExpect(t, r, http.StatusServiceUnavailable, "temporarily_unavailable")
			if r.Header().Get("Retry-After") == "" {
				t.Errorf("%s %s: 503 without Retry-After", req[0], req[1])
			}
		}
		policiesTestExpect(t, env.do("POST", "/admin/v1/policies", policiesTestPushBody("v1", policiesTestFiles(`"x"`, `"y"`))), http.StatusServiceUnavailable, "temporarily_unavailable")
	})
}

// FuzzPoliciesAPIEval: no body makes the eval endpoint answer 500.
func FuzzPoliciesAPIEval(f *testing.F) {
	for _, s := range []string{`{"input":` + policiesTestInput + `}`, `{"input":{}}`, `{"input":{"subject":{"claims":{"a":[1,{"b":null}]}}}}`,
		`{"input":{"meta":{"time":"not a time"}}}`, `{"input":{"actor_chain":[{"sub":1}]}}`, `{"version":"x","input":{}}`, `{"input":{"grant":{"max_depth":1e400}}}`} {
		f.Add(s)
	}
	env := newPoliciesTestEnv(f, db.SQLite)
	files := policiesTestFiles(`"x"`, `"mail:read"`)
	if _, err := env.reg.Push(context.Background(), files, "t", "v1"); err != nil {
		f.Fatal(err)
	}
	if _, err := env.reg.Activate(context.Background(), "v1", "t"); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body string) {
		req := httptest.NewRequest("POST", "/admin/v1/policies/eval", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		env.e.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%q: %d %s", body, rec.Code, rec.Body)
		}
	})
}
