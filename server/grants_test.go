package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/mandate-dev/mandate/grants"
	"github.com/mandate-dev/mandate/internal/db"
	"github.com/mandate-dev/mandate/internal/db/dbtest"
	"github.com/mandate-dev/mandate/server"
)

const grantsTestIssuer = "https://login.example.com"

// grantsTestAuth stands in for the upstream token verifier (a network edge):
// bearer token -> {issuer, subject}.
type grantsTestAuth map[string][2]string

func (a grantsTestAuth) AuthenticateUser(_ context.Context, bearer string) (string, string, error) {
	if bearer == "unavailable-token" {
		return "", "", fmt.Errorf("fetch JWKS: %w", server.ErrUserAuthUnavailable)
	}
	u, ok := a[bearer]
	if !ok {
		return "", "", errors.New("token not valid")
	}
	return u[0], u[1], nil
}

// grantsTestRevoker stands in for the broker's ledger.
type grantsTestRevoker struct {
	mu    sync.Mutex
	calls []string
	fail  error
}

func (r *grantsTestRevoker) Revoke(_ context.Context, kind, id, _ string, _ time.Time) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, kind+":"+id)
	return r.fail
}

func (r *grantsTestRevoker) setFail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fail = err
}

func (r *grantsTestRevoker) Calls() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.calls)
}

type grantsTestEnv struct {
	t     testing.TB
	d     *db.DB
	e     *echo.Echo
	store *grants.Store
	rev   *grantsTestRevoker
}

func newGrantsTestEnv(t testing.TB, dialect db.Dialect) *grantsTestEnv {
	t.Helper()
	env := &grantsTestEnv{t: t, d: dbtest.Open(t, dialect), e: echo.New(), rev: &grantsTestRevoker{}}
	env.store = grants.NewStore(env.d, env.rev, grants.Options{Logger: slog.New(slog.DiscardHandler)})
	auth := grantsTestAuth{
		"alice-token": {grantsTestIssuer, "alice"},
		"bob-token":   {grantsTestIssuer, "bob"},
		"sql-token":   {grantsTestIssuer, `Robert'); DROP TABLE grants;-- $1 ?1 "x"`},
	}
	server.RegisterUserGrants(env.e.Group("/v1"), env.store, auth)
	server.RegisterAdminGrants(env.e.Group("/admin/v1"), env.store)
	return env
}

type grantsTestResponse struct {
	*httptest.ResponseRecorder
}

func (r grantsTestResponse) JSON(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.Body.Bytes(), &m); err != nil {
		t.Fatalf("response is not a JSON object: %q: %v", r.Body.String(), err)
	}
	return m
}

// do sends a request; token "" sends no Authorization, body "" no body.
func (env *grantsTestEnv) do(method, path, token, body string, header ...string) grantsTestResponse {
	env.t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	env.e.ServeHTTP(rec, req)
	if rec.Code >= 500 && rec.Code != http.StatusServiceUnavailable {
		env.t.Fatalf("%s %s: got %d %s", method, path, rec.Code, rec.Body)
	}
	return grantsTestResponse{rec}
}

func grantsTestExpiry(d time.Duration) string {
	return time.Now().Add(d).UTC().Format(time.RFC3339)
}

func grantsTestBody(client string) string {
	return `{"client_id":"` + client + `","scopes":["mail.read","mail.search"],` +
		`"resources":["https://api.example.com/mail/*"],"max_depth":2,"max_lifetime_seconds":600,` +
		`"allowed_sub_agents":["summarizer","translator"],"expires_at":"` + grantsTestExpiry(30*24*time.Hour) + `"}`
}

func grantsTestEachBackend(t *testing.T, fn func(t *testing.T, env *grantsTestEnv)) {
	for _, d := range dbtest.Backends() {
		t.Run(string(d), func(t *testing.T) { fn(t, newGrantsTestEnv(t, d)) })
	}
}

func grantsTestExpect(t testing.TB, r grantsTestResponse, status int, errCode string) map[string]any {
	t.Helper()
	if r.Code != status {
		t.Fatalf("got %d %s, want %d", r.Code, r.Body, status)
	}
	if status == http.StatusNoContent {
		return nil
	}
	m := r.JSON(t)
	if errCode != "" && m["error"] != errCode {
		t.Fatalf("error: got %v, want %q (%s)", m["error"], errCode, r.Body)
	}
	if cc := r.Header().Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control: got %q, want no-store", cc)
	}
	return m
}

func TestGrantsAPIUserFlow(t *testing.T) {
	grantsTestEachBackend(t, func(t *testing.T, env *grantsTestEnv) {
		// Create.
		r := env.do("POST", "/v1/grants", "alice-token", grantsTestBody("mail-agent"))
		g := grantsTestExpect(t, r, http.StatusCreated, "")
		id, _ := g["grant_id"].(string)
		if !grants.ValidID(id) || g["user_subject"] != "alice" || g["user_issuer"] != grantsTestIssuer || g["status"] != "active" ||
			g["max_lifetime_seconds"] != 600.0 || g["max_depth"] != 2.0 || g["created_at"] == "" {
			t.Fatalf("created: %s", r.Body)
		}
		if _, ok := g["revoked_at"]; ok {
			t.Errorf("revoked_at on an active grant: %s", r.Body)
		}
		if loc := r.Header().Get("Location"); loc != "/v1/grants/"+id {
			t.Errorf("Location: got %q", loc)
		}
		// A second active grant to the same client: 409 naming the first.
		r = env.do("POST", "/v1/grants", "alice-token", grantsTestBody("mail-agent"))
		if m := grantsTestExpect(t, r, http.StatusConflict, "conflict"); !strings.Contains(m["error_description"].(string), id) {
			t.Errorf("409 does not name the existing grant: %s", r.Body)
		}

		// List and get.
		r = env.do("GET", "/v1/grants", "alice-token", "")
		list := grantsTestExpect(t, r, http.StatusOK, "")["grants"].([]any)
		if len(list) != 1 || list[0].(map[string]any)["grant_id"] != id {
			t.Fatalf("list: %s", r.Body)
		}
		grantsTestExpect(t, env.do("GET", "/v1/grants/"+id, "alice-token", ""), http.StatusOK, "")

		// Narrow, then try to widen.
		r = env.do("PATCH", "/v1/grants/"+id, "alice-token", `{"scopes":["mail.read"],"max_depth":1}`)
		g = grantsTestExpect(t, r, http.StatusOK, "")
		if fmt.Sprint(g["scopes"]) != "[mail.read]" || g["max_depth"] != 1.0 {
			t.Fatalf("narrowed: %s", r.Body)
		}
		for _, body := range []string{
			`{"scopes":["mail.read","mail.send"]}`,
			`{"resources":["https://api.example.com/*"]}`,
			`{"max_depth":2}`,
			`{"max_depth":0}`,
			`{"max_lifetime_seconds":3600}`,
			`{"allowed_sub_agents":["*"]}`,
			`{"expires_at":"` + grantsTestExpiry(60*24*time.Hour) + `"}`,
		} {
			r = env.do("PATCH", "/v1/grants/"+id, "alice-token", body)
			grantsTestExpect(t, r, http.StatusBadRequest, "invalid_request")
		}

		// Revoke, idempotently.
		grantsTestExpect(t, env.do("DELETE", "/v1/grants/"+id+"?reason=done", "alice-token", ""), http.StatusNoContent, "")
		if calls := env.rev.Calls(); len(calls) != 1 || calls[0] != "grant:"+id {
			t.Fatalf("Revoker calls: %q", calls)
		}
		grantsTestExpect(t, env.do("DELETE", "/v1/grants/"+id, "alice-token", ""), http.StatusNoContent, "")
		g = grantsTestExpect(t, env.do("GET", "/v1/grants/"+id, "alice-token", ""), http.StatusOK, "")
		if g["status"] != "revoked" || g["revoked_at"] == nil {
			t.Fatalf("after revoke: %v", g)
		}
		grantsTestExpect(t, env.do("PATCH", "/v1/grants/"+id, "alice-token", `{"scopes":["mail.read"]}`), http.StatusConflict, "conflict")
		r = env.do("GET", "/v1/grants?status=revoked", "alice-token", "")
		if n := len(grantsTestExpect(t, r, http.StatusOK, "")["grants"].([]any)); n != 1 {
			t.Fatalf("revoked list: %s", r.Body)
		}

		// History.
		r = env.do("GET", "/v1/grants/"+id+"/events", "alice-token", "")
		evs := grantsTestExpect(t, r, http.StatusOK, "")["events"].([]any)
		var actions []string
		for _, e := range evs {
			ev := e.(map[string]any)
			actions = append(actions, ev["action"].(string))
			if ev["actor"] != grants.UserActor(grantsTestIssuer, "alice") {
				t.Errorf("actor: %v", ev["actor"])
			}
		}
		if strings.Join(actions, ",") != "created,narrowed,revoked" {
			t.Fatalf("events: %s", r.Body)
		}
		if d := evs[2].(map[string]any)["detail"].(map[string]any); d["reason"] != "done" {
			t.Fatalf("revoke detail: %v", d)
		}

		// The slot is free again.
		grantsTestExpect(t, env.do("POST", "/v1/grants", "alice-token", grantsTestBody("mail-agent")), http.StatusCreated, "")
	})
}

func TestGrantsAPIOtherUsersGrantIs404(t *testing.T) {
	grantsTestEachBackend(t, func(t *testing.T, env *grantsTestEnv) {
		id := grantsTestExpect(t, env.do("POST", "/v1/grants", "alice-token", grantsTestBody("mail-agent")), http.StatusCreated, "")["grant_id"].(string)
		missing := "grt_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
		for _, tc := range []struct{ method, suffix, body string }{
			{"GET", "", ""},
			{"PATCH", "", `{"scopes":["mail.read"]}`},
			{"DELETE", "", ""},
			{"GET", "/events", ""},
		} {
			bob := env.do(tc.method, "/v1/grants/"+id+tc.suffix, "bob-token", tc.body)
			none := env.do(tc.method, "/v1/grants/"+missing+tc.suffix, "bob-token", tc.body)
			grantsTestExpect(t, bob, http.StatusNotFound, "not_found")
			if bob.Body.String() != none.Body.String() {
				t.Errorf("%s %s: another user's grant answers %s, a missing one %s", tc.method, tc.suffix, bob.Body, none.Body)
			}
		}
		if n := len(grantsTestExpect(t, env.do("GET", "/v1/grants", "bob-token", ""), http.StatusOK, "")["grants"].([]any)); n != 0 {
			t.Fatalf("bob sees %d grants", n)
		}
		if len(env.rev.Calls()) != 0 {
			t.Fatal("bob's DELETE reached the Revoker")
		}
		g := grantsTestExpect(t, env.do("GET", "/v1/grants/"+id, "alice-token", ""), http.StatusOK, "")
		if g["status"] != "active" || fmt.Sprint(g["scopes"]) != "[mail.read mail.search]" {
			t.Fatalf("bob changed alice's grant: %v", g)
		}
	})
}

func TestGrantsAPIAuthentication(t *testing.T) {
	env := newGrantsTestEnv(t, db.SQLite)
	tests := []struct {
		name, auth string
		status     int
		wwwAuth    string
	}{
		{"missing", "", http.StatusUnauthorized, `Bearer realm="mandate"`},
		{"basic", "Basic YWxpY2U6cHc=", http.StatusUnauthorized, `Bearer realm="mandate"`},
		{"empty bearer", "Bearer ", http.StatusUnauthorized, `Bearer realm="mandate", error="invalid_token"`},
		{"unknown token", "Bearer nope", http.StatusUnauthorized, `Bearer realm="mandate", error="invalid_token"`},
		{"bad characters", "Bearer a b", http.StatusUnauthorized, `Bearer realm="mandate", error="invalid_token"`},
		{"huge token", "Bearer " + strings.Repeat("a", 20000), http.StatusUnauthorized, `Bearer realm="mandate", error="invalid_token"`},
		{"lowercase scheme", "bearer alice-token", http.StatusOK, ""},
		{"unavailable", "Bearer unavailable-token", http.StatusServiceUnavailable, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r grantsTestResponse
			if tt.auth == "" {
				r = env.do("GET", "/v1/grants", "", "")
			} else {
				r = env.do("GET", "/v1/grants", "", "", "Authorization", tt.auth)
			}
			if r.Code != tt.status {
				t.Fatalf("got %d %s, want %d", r.Code, r.Body, tt.status)
			}
			if got := r.Header().Get("WWW-Authenticate"); got != tt.wwwAuth {
				t.Errorf("WWW-Authenticate: got %q, want %q", got, tt.wwwAuth)
			}
			if tt.status == http.StatusServiceUnavailable && r.Header().Get("Retry-After") == "" {
				t.Error("503 without Retry-After")
			}
		})
	}
}

func TestGrantsAPIBadInput(t *testing.T) {
	long := `{"client_id":"mail-agent","scopes":["` + strings.Repeat("a", 70<<10) + `"],"expires_at":"` + grantsTestExpiry(time.Hour) + `"}`
	exp := grantsTestExpiry(time.Hour)
	tests := []struct {
		name, body string
		header     []string
		status     int
		field      string // expected at the start of error_description
	}{
		{"past expiry", `{"client_id":"a","scopes":["s"],"expires_at":"2001-01-01T00:00:00Z"}`, nil, 400, "expires_at"},
		{"expiry beyond a year", `{"client_id":"a","scopes":["s"],"expires_at":"` + grantsTestExpiry(400*24*time.Hour) + `"}`, nil, 400, "expires_at"},
		{"expiry not RFC 3339", `{"client_id":"a","scopes":["s"],"expires_at":"tomorrow"}`, nil, 400, "expires_at"},
		{"no expiry", `{"client_id":"a","scopes":["s"]}`, nil, 400, "expires_at"},
		{"scope with space", `{"client_id":"a","scopes":["mail read"],"expires_at":"` + exp + `"}`, nil, 400, "scopes"},
		{"scope with quote", `{"client_id":"a","scopes":["mail\"read"],"expires_at":"` + exp + `"}`, nil, 400, "scopes"},
		{"scope non-ASCII", `{"client_id":"a","scopes":["mäil"],"expires_at":"` + exp + `"}`, nil, 400, "scopes"},
		{"null scope", `{"client_id":"a","scopes":[null],"expires_at":"` + exp + `"}`, nil, 400, "scopes"},
		{"no scopes", `{"client_id":"a","scopes":[],"expires_at":"` + exp + `"}`, nil, 400, "scopes"},
		{"bad client id", `{"client_id":"a b","scopes":["s"],"expires_at":"` + exp + `"}`, nil, 400, "client_id"},
		{"NUL in client id", `{"client_id":"a\u0000","scopes":["s"],"expires_at":"` + exp + `"}`, nil, 400, "client_id"},
		{"user may not grant *", `{"client_id":"a","scopes":["s"],"resources":["*"],"expires_at":"` + exp + `"}`, nil, 400, "resources"},
		{"host-level pattern", `{"client_id":"a","scopes":["s"],"resources":["https://api.example.com*"],"expires_at":"` + exp + `"}`, nil, 400, "resources"},
		{"depth 11", `{"client_id":"a","scopes":["s"],"max_depth":11,"expires_at":"` + exp + `"}`, nil, 400, "max_depth"},
		{"depth huge", `{"client_id":"a","scopes":["s"],"max_depth":1e300,"expires_at":"` + exp + `"}`, nil, 400, "max_depth"},
		{"depth fraction", `{"client_id":"a","scopes":["s"],"max_depth":1.5,"expires_at":"` + exp + `"}`, nil, 400, "max_depth"},
		{"lifetime huge", `{"client_id":"a","scopes":["s"],"max_lifetime_seconds":9223372036854775807,"expires_at":"` + exp + `"}`, nil, 400, "max_lifetime_seconds"},
		{"lifetime negative", `{"client_id":"a","scopes":["s"],"max_lifetime_seconds":-1,"expires_at":"` + exp + `"}`, nil, 400, "max_lifetime_seconds"},
		{"scopes as string", `{"client_id":"a","scopes":"s","expires_at":"` + exp + `"}`, nil, 400, "scopes"},
		{"user issuer from body", `{"user_issuer":"https://evil.example","client_id":"a","scopes":["s"],"expires_at":"` + exp + `"}`, nil, 400, "unknown field"},
		{"unknown field", `{"client_id":"a","scopes":["s"],"expires_at":"` + exp + `","admin":true}`, nil, 400, "unknown field"},
		{"malformed", `{"client_id":"a",`, nil, 400, "malformed JSON"},
		{"not JSON", `client_id=a`, nil, 400, "malformed JSON"},
		{"array", `[]`, nil, 400, "the body must be a JSON object"},
		{"two values", `{"client_id":"a"} {}`, nil, 400, "the body must hold exactly one JSON value"},
		{"empty", ` `, nil, 400, "the body is empty"},
		{"huge", long, nil, 413, ""},
		{"form", `client_id=a`, []string{"Content-Type", "application/x-www-form-urlencoded"}, 415, ""},
		{"no content type", `{}`, []string{"Content-Type", ""}, 415, ""},
		{"latin1", `{}`, []string{"Content-Type", "application/json; charset=iso-8859-1"}, 415, ""},
	}
	grantsTestEachBackend(t, func(t *testing.T, env *grantsTestEnv) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				r := env.do("POST", "/v1/grants", "alice-token", tt.body, tt.header...)
				m := grantsTestExpect(t, r, tt.status, "invalid_request")
				if d, _ := m["error_description"].(string); !strings.HasPrefix(d, tt.field) {
					t.Errorf("error_description: got %q, want it to start with %q", d, tt.field)
				}
			})
		}
		// Nothing was stored.
		if list, err := env.store.List(context.Background(), grants.Filter{}); err != nil || len(list) != 0 {
			t.Fatalf("bad input stored %d grants (%v)", len(list), err)
		}
		// PATCH bodies are held to the same rules.
		id := grantsTestExpect(t, env.do("POST", "/v1/grants", "alice-token", grantsTestBody("mail-agent")), http.StatusCreated, "")["grant_id"].(string)
		for body, want := range map[string]string{
			`{}`:                                "the narrowing changes nothing",
			`null`:                              "the narrowing changes nothing",
			`{"scopes":["mail.read"],"x":1}`:    "unknown field",
			`{"expires_at":"soon"}`:             "expires_at",
			`{"max_lifetime_seconds":99999999}`: "max_lifetime_seconds",
			`{"resources":["https://api.example.com/mail/../admin"]}`: "resources",
		} {
			m := grantsTestExpect(t, env.do("PATCH", "/v1/grants/"+id, "alice-token", body), http.StatusBadRequest, "invalid_request")
			if d, _ := m["error_description"].(string); !strings.HasPrefix(d, want) {
				t.Errorf("PATCH %s: got %q, want %q...", body, d, want)
			}
		}
		m := grantsTestExpect(t, env.do("DELETE", "/v1/grants/"+id+"?reason=%00", "alice-token", ""), http.StatusBadRequest, "invalid_request")
		if d, _ := m["error_description"].(string); !strings.HasPrefix(d, "reason") {
			t.Errorf("DELETE with NUL reason: %q", d)
		}
		grantsTestExpect(t, env.do("GET", "/v1/grants?status=bogus", "alice-token", ""), http.StatusBadRequest, "invalid_request")
		grantsTestExpect(t, env.do("GET", "/v1/grants?limit=x", "alice-token", ""), http.StatusBadRequest, "invalid_request")
		grantsTestExpect(t, env.do("GET", "/v1/grants?limit=100000", "alice-token", ""), http.StatusBadRequest, "invalid_request")
		grantsTestExpect(t, env.do("GET", "/v1/grants/not-a-grant-id", "alice-token", ""), http.StatusNotFound, "not_found")
	})
}

func TestGrantsAPISQLLookingStrings(t *testing.T) {
	grantsTestEachBackend(t, func(t *testing.T, env *grantsTestEnv) {
		body := `{"client_id":"mail-agent","scopes":["read'--","x;DELETE","$1"],` +
			`"resources":["urn:x:'or'1'='1","https://api.example.com/q?x='%20OR%201=1--"],` +
			`"expires_at":"` + grantsTestExpiry(time.Hour) + `"}`
		id := grantsTestExpect(t, env.do("POST", "/v1/grants", "sql-token", body), http.StatusCreated, "")["grant_id"].(string)
		g := grantsTestExpect(t, env.do("GET", "/v1/grants/"+id, "sql-token", ""), http.StatusOK, "")
		if g["user_subject"] != `Robert'); DROP TABLE grants;-- $1 ?1 "x"` ||
			fmt.Sprint(g["scopes"]) != `[read'-- x;DELETE $1]` ||
			fmt.Sprint(g["resources"]) != `[urn:x:'or'1'='1 https://api.example.com/q?x='%20OR%201=1--]` {
			t.Fatalf("round trip changed the data: %v", g)
		}
		// The admin filter takes the same strings as data.
		r := env.do("GET", "/admin/v1/grants?user_subject="+strings.ReplaceAll(`Robert'); DROP TABLE grants;-- $1 ?1 "x"`, " ", "%20"), "", "")
		if n := len(grantsTestExpect(t, r, http.StatusOK, "")["grants"].([]any)); n != 1 {
			t.Fatalf("admin filter by SQL-looking subject: %s", r.Body)
		}
	})
}

func TestGrantsAPIAdmin(t *testing.T) {
	grantsTestEachBackend(t, func(t *testing.T, env *grantsTestEnv) {
		body := `{"user_issuer":"` + grantsTestIssuer + `","user_subject":"carol","client_id":"ops-agent","scopes":["ops.read"],` +
			`"resources":["*"],"expires_at":"` + grantsTestExpiry(time.Hour) + `"}`
		r := env.do("POST", "/admin/v1/grants", "", body)
		g := grantsTestExpect(t, r, http.StatusCreated, "")
		id := g["grant_id"].(string)
		if g["user_subject"] != "carol" || fmt.Sprint(g["resources"]) != "[*]" {
			t.Fatalf("admin create: %s", r.Body)
		}
		if loc := r.Header().Get("Location"); loc != "/admin/v1/grants/"+id {
			t.Errorf("Location: %q", loc)
		}
		grantsTestExpect(t, env.do("POST", "/v1/grants", "alice-token", grantsTestBody("mail-agent")), http.StatusCreated, "")

		for query, want := range map[string]int{
			"":                     2,
			"?client_id=ops-agent": 1,
			"?user_subject=alice":  1,
			"?user_issuer=" + grantsTestIssuer + "&user_subject=carol": 1,
			"?status=active&limit=1":                                   1,
			"?status=revoked":                                          0,
		} {
			r := env.do("GET", "/admin/v1/grants"+query, "", "")
			if n := len(grantsTestExpect(t, r, http.StatusOK, "")["grants"].([]any)); n != want {
				t.Errorf("admin list %q: got %d, want %d", query, n, want)
			}
		}
		grantsTestExpect(t, env.do("GET", "/admin/v1/grants?client_id=a%20b", "", ""), http.StatusBadRequest, "invalid_request")

		missingUser := `{"client_id":"ops-agent","scopes":["ops.read"],"expires_at":"` + grantsTestExpiry(time.Hour) + `"}`
		m := grantsTestExpect(t, env.do("POST", "/admin/v1/grants", "", missingUser), http.StatusBadRequest, "invalid_request")
		if d := m["error_description"].(string); !strings.HasPrefix(d, "user_issuer") {
			t.Errorf("admin create without user: %q", d)
		}
		m = grantsTestExpect(t, env.do("POST", "/admin/v1/grants", "", strings.Replace(body, `"scopes":["ops.read"]`, `"scopes":"ops.read"`, 1)), http.StatusBadRequest, "invalid_request")
		if d := m["error_description"].(string); !strings.HasPrefix(d, "scopes") {
			t.Errorf("admin create with a string scope: %q", d)
		}

		r = env.do("PATCH", "/admin/v1/grants/"+id, "", `{"resources":["https://ops.example.com/*"],"max_lifetime_seconds":300}`)
		if g := grantsTestExpect(t, r, http.StatusOK, ""); fmt.Sprint(g["resources"]) != "[https://ops.example.com/*]" || g["max_lifetime_seconds"] != 300.0 {
			t.Fatalf("admin narrow: %s", r.Body)
		}
		grantsTestExpect(t, env.do("PATCH", "/admin/v1/grants/"+id, "", `{"resources":["*"]}`), http.StatusBadRequest, "invalid_request")
		grantsTestExpect(t, env.do("DELETE", "/admin/v1/grants/"+id+"?reason=offboarding", "", ""), http.StatusNoContent, "")
		r = env.do("GET", "/admin/v1/grants/"+id+"/events", "", "")
		evs := grantsTestExpect(t, r, http.StatusOK, "")["events"].([]any)
		if len(evs) != 3 || evs[2].(map[string]any)["actor"] != "admin" {
			t.Fatalf("admin events: %s", r.Body)
		}
		grantsTestExpect(t, env.do("GET", "/admin/v1/grants/grt_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "", ""), http.StatusNotFound, "not_found")
	})
}

func TestGrantsAPIRevokePublishFailure(t *testing.T) {
	grantsTestEachBackend(t, func(t *testing.T, env *grantsTestEnv) {
		id := grantsTestExpect(t, env.do("POST", "/v1/grants", "alice-token", grantsTestBody("mail-agent")), http.StatusCreated, "")["grant_id"].(string)
		env.rev.setFail(errors.New("ledger down"))
		r := env.do("DELETE", "/v1/grants/"+id, "alice-token", "")
		grantsTestExpect(t, r, http.StatusServiceUnavailable, "temporarily_unavailable")
		if r.Header().Get("Retry-After") == "" {
			t.Error("503 without Retry-After")
		}
		env.rev.setFail(nil)
		grantsTestExpect(t, env.do("DELETE", "/v1/grants/"+id, "alice-token", ""), http.StatusNoContent, "")
		if n := len(env.rev.Calls()); n != 2 {
			t.Fatalf("Revoker calls: %d, want 2", n)
		}
	})
}

func TestGrantsAPIDatabaseUnavailable(t *testing.T) {
	for _, d := range dbtest.Backends() {
		if d != db.Postgres {
			continue // a closed SQLite handle is a programming error, not an outage
		}
		t.Run(string(d), func(t *testing.T) {
			env := newGrantsTestEnv(t, d)
			env.d.Close()
			r := env.do("GET", "/v1/grants", "alice-token", "")
			grantsTestExpect(t, r, http.StatusServiceUnavailable, "temporarily_unavailable")
			if r.Header().Get("Retry-After") == "" {
				t.Error("503 without Retry-After")
			}
		})
	}
}

// FuzzGrantsAPIBodies drives the create and narrow decoders and the
// validation behind them with arbitrary bodies: whatever comes in, the answer
// is a well-formed JSON response and never a server error.
func FuzzGrantsAPIBodies(f *testing.F) {
	exp := grantsTestExpiry(time.Hour)
	for _, seed := range []string{
		grantsTestBody("mail-agent"),
		`{"client_id":"a","scopes":["s"],"expires_at":"` + exp + `"}`,
		`{"client_id":"a","scopes":["s"],"resources":["https://x.example/a/*","urn:a"],"max_depth":3,"max_lifetime_seconds":60,"allowed_sub_agents":["*"],"expires_at":"` + exp + `"}`,
		`{"scopes":["mail.read"]}`,
		`{"max_depth":1,"expires_at":"` + exp + `"}`,
		`{"resources":["https://api.example.com/mail/inbox/*"]}`,
		`{"client_id":"a\u0000"}`,
		`{"scopes":[null,1,{}]}`,
		`[`, `null`, `{}`, `""`, `{"a":1}{}`, "\xff\xfe",
	} {
		f.Add(seed, false)
		f.Add(seed, true)
	}
	env := newGrantsTestEnv(f, db.SQLite)
	base := `{"client_id":"fuzz-base","scopes":["mail.read","mail.search","mail.send"],"resources":["https://api.example.com/mail/*","contacts"],` +
		`"max_depth":5,"max_lifetime_seconds":3600,"allowed_sub_agents":["a","b","*"],"expires_at":"` + grantsTestExpiry(300*24*time.Hour) + `"}`
	r := env.do("POST", "/v1/grants", "bob-token", base)
	if r.Code != http.StatusCreated {
		f.Fatalf("base grant: %d %s", r.Code, r.Body)
	}
	baseID := r.JSON(f)["grant_id"].(string)
	f.Fuzz(func(t *testing.T, body string, narrow bool) {
		env.t = t
		var r grantsTestResponse
		if narrow {
			r = env.do("PATCH", "/v1/grants/"+baseID, "bob-token", body, "Content-Type", "application/json")
		} else {
			r = env.do("POST", "/v1/grants", "alice-token", body, "Content-Type", "application/json")
		}
		switch r.Code {
		case http.StatusOK, http.StatusCreated, http.StatusBadRequest, http.StatusConflict, http.StatusRequestEntityTooLarge:
		default:
			t.Fatalf("body %q: got %d %s", body, r.Code, r.Body)
		}
		m := r.JSON(t)
		if r.Code >= 400 {
			if m["error"] == nil || m["error_description"] == nil {
				t.Fatalf("error without error/error_description: %s", r.Body)
			}
			return
		}
		id, _ := m["grant_id"].(string)
		got := env.do("GET", "/v1/grants/"+id, map[bool]string{true: "bob-token", false: "alice-token"}[narrow], "")
		if got.Code != http.StatusOK {
			t.Fatalf("stored grant %s: %d %s", id, got.Code, got.Body)
		}
		if narrow {
			// What a narrowing produced is still inside the base grant.
			g, err := env.store.Get(context.Background(), baseID)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range g.Scopes {
				if !slices.Contains([]string{"mail.read", "mail.search", "mail.send"}, s) {
					t.Fatalf("narrowing added scope %q", s)
				}
			}
			if g.MaxDepth < 1 || g.MaxDepth > 5 || g.MaxLifetime <= 0 || g.MaxLifetime > time.Hour {
				t.Fatalf("narrowing widened depth or lifetime: %+v", g)
			}
		} else if r.Code == http.StatusCreated {
			// Free the slot so later inputs exercise Create, not the 409.
			if err := env.store.Revoke(context.Background(), id, grants.AdminActor, ""); err != nil {
				t.Fatal(err)
			}
		}
	})
}

func TestGrantsAPIHugeStreamedBody(t *testing.T) {
	env := newGrantsTestEnv(t, db.SQLite)
	body := `{"client_id":"a","scopes":["` + strings.Repeat("a", 70<<10) + `"]}`
	req := httptest.NewRequest("POST", "/v1/grants", strings.NewReader(body))
	req.ContentLength = -1 // chunked: the limit must hold while reading
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer alice-token")
	rec := httptest.NewRecorder()
	env.e.ServeHTTP(rec, req)
	grantsTestExpect(t, grantsTestResponse{rec}, http.StatusRequestEntityTooLarge, "invalid_request")
}
