package server_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/go-jose/go-jose/v3"
	"github.com/labstack/echo/v4"

	"github.com/mandate-dev/mandate/broker/clients"
	"github.com/mandate-dev/mandate/internal/db"
	"github.com/mandate-dev/mandate/internal/db/dbtest"
	"github.com/mandate-dev/mandate/server"
)

var clientAdminTestPepper = []byte("pepper-pepper-pepper-pepper-32by")

type clientAdminTestEnv struct {
	t      testing.TB
	d      *db.DB
	e      *echo.Echo
	store  *clients.Store
	hasher *clients.SecretHasher
	// bodies collects every response body, to check no secret hash ever leaves.
	bodies []string
}

func newClientAdminTestEnv(t testing.TB, dialect db.Dialect) *clientAdminTestEnv {
	t.Helper()
	env := &clientAdminTestEnv{t: t, d: dbtest.Open(t, dialect), e: echo.New(), hasher: &clients.SecretHasher{Key: clientAdminTestPepper}}
	var err error
	env.store, err = clients.NewStore(env.d, env.hasher, clients.StoreOptions{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	server.RegisterClientAdmin(env.e.Group("/admin/v1"), env.store)
	return env
}

func clientAdminTestEachBackend(t *testing.T, fn func(t *testing.T, env *clientAdminTestEnv)) {
	for _, d := range dbtest.Backends() {
		t.Run(string(d), func(t *testing.T) { fn(t, newClientAdminTestEnv(t, d)) })
	}
}

type clientAdminTestResponse struct {
	*httptest.ResponseRecorder
}

// do sends a request with a JSON Content-Type when body is not empty; header
// pairs override.
func (env *clientAdminTestEnv) do(method, path, body string, header ...string) clientAdminTestResponse {
	env.t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		if header[i+1] == "" {
			req.Header.Del(header[i])
		} else {
			req.Header.Set(header[i], header[i+1])
		}
	}
	rec := httptest.NewRecorder()
	env.e.ServeHTTP(rec, req)
	if rec.Code >= 500 && rec.Code != http.StatusServiceUnavailable {
		env.t.Fatalf("%s %s: got %d %s", method, path, rec.Code, rec.Body)
	}
	env.bodies = append(env.bodies, rec.Body.String())
	return clientAdminTestResponse{rec}
}

// expect checks the status (and error code) and returns the JSON body.
func clientAdminTestExpect(t testing.TB, r clientAdminTestResponse, status int, errCode string) map[string]any {
	t.Helper()
	if r.Code != status {
		t.Fatalf("got %d %s, want %d", r.Code, r.Body, status)
	}
	if cc := r.Header().Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control: got %q, want no-store", cc)
	}
	if status == http.StatusNoContent {
		return nil
	}
	var m map[string]any
	if err := json.Unmarshal(r.Body.Bytes(), &m); err != nil {
		t.Fatalf("response is not a JSON object: %q: %v", r.Body, err)
	}
	if errCode != "" {
		if m["error"] != errCode || m["error_description"] == "" || len(m) != 2 {
			t.Fatalf("error: got %s, want error %q with a description", r.Body, errCode)
		}
	}
	return m
}

// checkNoHashes fails if any response carried a stored secret hash.
func (env *clientAdminTestEnv) checkNoHashes(t *testing.T) {
	t.Helper()
	list, err := env.store.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range list {
		if c.SecretHash == nil {
			continue
		}
		forms := []string{
			base64.StdEncoding.EncodeToString(c.SecretHash), base64.RawURLEncoding.EncodeToString(c.SecretHash),
			fmt.Sprintf("%x", c.SecretHash),
		}
		for _, b := range env.bodies {
			for _, f := range forms {
				if strings.Contains(b, f) {
					t.Fatalf("a response carried the secret hash of %s: %s", c.ID, b)
				}
			}
			if strings.Contains(b, "secret_hash") {
				t.Fatalf("a response names secret_hash: %s", b)
			}
		}
	}
}

func clientAdminTestJWKS(t testing.TB) (string, *ecdsa.PrivateKey) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &k.PublicKey, KeyID: "key-1"}}})
	if err != nil {
		t.Fatal(err)
	}
	return string(b), k
}

func TestClientAdminFlow(t *testing.T) {
	clientAdminTestEachBackend(t, func(t *testing.T, env *clientAdminTestEnv) {
		ctx := context.Background()
		// Register a secret client.
		r := env.do("POST", "/admin/v1/clients", `{"client_id":"travel-agent","name":"Travel agent","type":"agent",
			"token_endpoint_auth_method":"client_secret_basic","scopes":["calendar.read","mail.send"],
			"audiences":["https://calendar.example.com"],"may_impersonate":false,"first_party":true}`)
		m := clientAdminTestExpect(t, r, http.StatusCreated, "")
		secret, _ := m["client_secret"].(string)
		if !strings.HasPrefix(secret, clients.SecretPrefix) {
			t.Fatalf("client_secret: got %q", secret)
		}
		if loc := r.Header().Get("Location"); loc != "/admin/v1/clients/travel-agent" {
			t.Errorf("Location: got %q", loc)
		}
		if m["client_id"] != "travel-agent" || m["type"] != "agent" || m["first_party"] != true || m["disabled"] != false ||
			m["token_endpoint_auth_method"] != "client_secret_basic" || m["created_at"] == "" {
			t.Fatalf("created: %s", r.Body)
		}
		if gt := m["grant_types"].([]any); len(gt) != 1 || gt[0] != clients.GrantTokenExchange {
			t.Errorf("default grant types: got %v", gt)
		}
		fc, err := env.store.GetClient(ctx, "travel-agent")
		if err != nil || env.hasher.Compare(ctx, fc.GetHashedSecret(), []byte(secret)) != nil {
			t.Fatalf("returned secret does not authenticate: %v", err)
		}

		// Read it back: no secret, same fields.
		m = clientAdminTestExpect(t, env.do("GET", "/admin/v1/clients/travel-agent", ""), http.StatusOK, "")
		if _, ok := m["client_secret"]; ok {
			t.Fatalf("GET returned a client_secret: %v", m)
		}
		if m["name"] != "Travel agent" || len(m["scopes"].([]any)) != 2 {
			t.Fatalf("GET: %v", m)
		}

		// A generated id and a private_key_jwt client: no secret at all.
		jwks, _ := clientAdminTestJWKS(t)
		r = env.do("POST", "/admin/v1/clients", `{"name":"Signer","type":"app","token_endpoint_auth_method":"private_key_jwt","jwks":`+jwks+`}`)
		m = clientAdminTestExpect(t, r, http.StatusCreated, "")
		signer, _ := m["client_id"].(string)
		if !strings.HasPrefix(signer, "app_") {
			t.Fatalf("generated id: got %q", signer)
		}
		if _, ok := m["client_secret"]; ok {
			t.Fatalf("private_key_jwt client got a secret: %s", r.Body)
		}
		keys := m["jwks"].(map[string]any)["keys"].([]any)
		if k := keys[0].(map[string]any); k["use"] != "sig" || k["alg"] != "ES256" || k["kid"] != "key-1" {
			t.Fatalf("stored JWKS: %v", k)
		}

		// List, ordered by id.
		m = clientAdminTestExpect(t, env.do("GET", "/admin/v1/clients", ""), http.StatusOK, "")
		list := m["clients"].([]any)
		if len(list) != 2 || list[0].(map[string]any)["client_id"] != signer || list[1].(map[string]any)["client_id"] != "travel-agent" {
			t.Fatalf("list: %v", m)
		}

		// Patch.
		m = clientAdminTestExpect(t, env.do("PATCH", "/admin/v1/clients/travel-agent",
			`{"name":"Travel agent v2","scopes":["calendar.read"],"may_impersonate":true,"grant_types":["client_credentials"]}`), http.StatusOK, "")
		if m["name"] != "Travel agent v2" || len(m["scopes"].([]any)) != 1 || m["may_impersonate"] != true || m["first_party"] != true {
			t.Fatalf("PATCH: %v", m)
		}
		// Rotate: the old secret stops working at once.
		m = clientAdminTestExpect(t, env.do("POST", "/admin/v1/clients/travel-agent/rotate-secret", ""), http.StatusOK, "")
		fresh, _ := m["client_secret"].(string)
		if m["client_id"] != "travel-agent" || fresh == "" || fresh == secret || len(m) != 2 {
			t.Fatalf("rotate: %v", m)
		}
		fc, _ = env.store.GetClient(ctx, "travel-agent")
		if env.hasher.Compare(ctx, fc.GetHashedSecret(), []byte(secret)) == nil || env.hasher.Compare(ctx, fc.GetHashedSecret(), []byte(fresh)) != nil {
			t.Fatalf("after rotation the old secret must fail and the new one work")
		}
		clientAdminTestExpect(t, env.do("POST", "/admin/v1/clients/"+signer+"/rotate-secret", ""), http.StatusBadRequest, "invalid_request")

		// Disable and enable.
		m = clientAdminTestExpect(t, env.do("POST", "/admin/v1/clients/travel-agent/disable", ""), http.StatusOK, "")
		if m["disabled"] != true {
			t.Fatalf("disable: %v", m)
		}
		if _, err := env.store.GetClient(ctx, "travel-agent"); err == nil {
			t.Fatal("disabled client still authenticates")
		}
		m = clientAdminTestExpect(t, env.do("POST", "/admin/v1/clients/travel-agent/enable", ""), http.StatusOK, "")
		if m["disabled"] != false {
			t.Fatalf("enable: %v", m)
		}

		// Duplicate id.
		clientAdminTestExpect(t, env.do("POST", "/admin/v1/clients", `{"client_id":"travel-agent","name":"x","type":"app"}`), http.StatusConflict, "conflict")

		// Delete.
		clientAdminTestExpect(t, env.do("DELETE", "/admin/v1/clients/travel-agent", ""), http.StatusNoContent, "")
		clientAdminTestExpect(t, env.do("GET", "/admin/v1/clients/travel-agent", ""), http.StatusNotFound, "not_found")
		clientAdminTestExpect(t, env.do("DELETE", "/admin/v1/clients/travel-agent", ""), http.StatusNotFound, "not_found")

		env.checkNoHashes(t)
	})
}

func TestClientAdminBadInput(t *testing.T) {
	clientAdminTestEachBackend(t, func(t *testing.T, env *clientAdminTestEnv) {
		clientAdminTestExpect(t, env.do("POST", "/admin/v1/clients", `{"client_id":"pk","name":"K","type":"agent","token_endpoint_auth_method":"private_key_jwt","jwks":`+
			func() string { j, _ := clientAdminTestJWKS(t); return j }()+`}`), http.StatusCreated, "")
		clientAdminTestExpect(t, env.do("POST", "/admin/v1/clients", `{"client_id":"base","name":"B","type":"app"}`), http.StatusCreated, "")
		privateJWKS := func() string {
			k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			b, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: k, KeyID: "k"}}})
			return string(b)
		}()
		huge := `{"name":"` + strings.Repeat("a", 70<<10) + `","type":"app"}`
		tests := []struct {
			name           string
			method, path   string
			body           string
			header         []string
			status         int
			errCode        string
			wantDescSubstr string
		}{
			{"malformed", "POST", "/admin/v1/clients", `{"name":`, nil, 400, "invalid_request", "malformed JSON"},
			{"syntax error", "POST", "/admin/v1/clients", `{"name" "x"}`, nil, 400, "invalid_request", "malformed JSON"},
			{"empty body", "POST", "/admin/v1/clients", ``, []string{"Content-Type", "application/json"}, 400, "invalid_request", "empty"},
			{"two values", "POST", "/admin/v1/clients", `{"name":"a","type":"app"}{}`, nil, 400, "invalid_request", "exactly one"},
			{"trailing garbage", "POST", "/admin/v1/clients", `{"name":"a","type":"app"} x`, nil, 400, "invalid_request", "exactly one"},
			{"array", "POST", "/admin/v1/clients", `[{"name":"a"}]`, nil, 400, "invalid_request", "JSON object"},
			{"null body", "POST", "/admin/v1/clients", `null`, nil, 400, "invalid_request", "JSON object"},
			{"unknown field", "POST", "/admin/v1/clients", `{"name":"a","type":"app","redirect_uris":["x"]}`, nil, 400, "invalid_request", `unknown field "redirect_uris"`},
			{"field in other case", "POST", "/admin/v1/clients", `{"NAME":"a","type":"app"}`, nil, 400, "invalid_request", `unknown field "NAME"`},
			{"duplicate field", "POST", "/admin/v1/clients", `{"name":"a","type":"app","name":"b"}`, nil, 400, "invalid_request", "more than once"},
			{"client_secret chosen", "POST", "/admin/v1/clients", `{"name":"a","type":"app","client_secret":"hunter2"}`, nil, 400, "invalid_request", "client_secret"},
			{"name not string", "POST", "/admin/v1/clients", `{"name":5,"type":"app"}`, nil, 400, "invalid_request", "name: must be a string"},
			{"scopes not array", "POST", "/admin/v1/clients", `{"name":"a","type":"app","scopes":"a b"}`, nil, 400, "invalid_request", "scopes: must be an array"},
			{"scope not string", "POST", "/admin/v1/clients", `{"name":"a","type":"app","scopes":[1]}`, nil, 400, "invalid_request", "scopes: must be an array"},
			{"flag not bool", "POST", "/admin/v1/clients", `{"name":"a","type":"app","first_party":"yes"}`, nil, 400, "invalid_request", "first_party: must be a boolean"},
			{"missing type", "POST", "/admin/v1/clients", `{"name":"a"}`, nil, 400, "invalid_request", "type:"},
			{"bad id", "POST", "/admin/v1/clients", `{"client_id":"a b","name":"a","type":"app"}`, nil, 400, "invalid_request", "client_id:"},
			{"bad scope", "POST", "/admin/v1/clients", `{"name":"a","type":"app","scopes":["a b"]}`, nil, 400, "invalid_request", "scopes:"},
			{"bad audience", "POST", "/admin/v1/clients", `{"name":"a","type":"app","audiences":["https://x/#f"]}`, nil, 400, "invalid_request", "audiences:"},
			{"bad grant", "POST", "/admin/v1/clients", `{"name":"a","type":"app","grant_types":["password"]}`, nil, 400, "invalid_request", "grant_types:"},
			{"private key in jwks", "POST", "/admin/v1/clients", `{"name":"a","type":"app","token_endpoint_auth_method":"private_key_jwt","jwks":` + privateJWKS + `}`, nil, 400, "invalid_request", "jwks:"},
			{"jwks as string", "POST", "/admin/v1/clients", `{"name":"a","type":"app","token_endpoint_auth_method":"private_key_jwt","jwks":"{}"}`, nil, 400, "invalid_request", "jwks:"},
			{"secret client with jwks", "POST", "/admin/v1/clients", `{"name":"a","type":"app","jwks":{"keys":[]}}`, nil, 400, "invalid_request", "jwks:"},
			{"text/plain", "POST", "/admin/v1/clients", `{"name":"a","type":"app"}`, []string{"Content-Type", "text/plain"}, 415, "invalid_request", "application/json"},
			{"form", "POST", "/admin/v1/clients", `name=a&type=app`, []string{"Content-Type", "application/x-www-form-urlencoded"}, 415, "invalid_request", "application/json"},
			{"no content type", "POST", "/admin/v1/clients", `{"name":"a","type":"app"}`, []string{"Content-Type", ""}, 415, "invalid_request", "application/json"},
			{"latin1", "POST", "/admin/v1/clients", `{"name":"a","type":"app"}`, []string{"Content-Type", "application/json; charset=latin1"}, 415, "invalid_request", "UTF-8"},
			{"huge body", "POST", "/admin/v1/clients", huge, nil, 413, "invalid_request", "larger than"},
			{"patch immutable type", "PATCH", "/admin/v1/clients/base", `{"type":"agent"}`, nil, 400, "invalid_request", "type cannot be changed"},
			{"patch immutable id", "PATCH", "/admin/v1/clients/base", `{"client_id":"other"}`, nil, 400, "invalid_request", "client_id cannot be changed"},
			{"patch auth method", "PATCH", "/admin/v1/clients/base", `{"token_endpoint_auth_method":"private_key_jwt"}`, nil, 400, "invalid_request", "cannot be changed"},
			{"patch secret", "PATCH", "/admin/v1/clients/base", `{"client_secret":"x"}`, nil, 400, "invalid_request", "rotate-secret"},
			{"patch null", "PATCH", "/admin/v1/clients/base", `{"name":null}`, nil, 400, "invalid_request", "must not be null"},
			{"patch invalid value", "PATCH", "/admin/v1/clients/base", `{"name":""}`, nil, 400, "invalid_request", "name:"},
			{"patch jwks on secret client", "PATCH", "/admin/v1/clients/base", `{"jwks":{"keys":[]}}`, nil, 400, "invalid_request", "jwks:"},
			{"patch empty jwks", "PATCH", "/admin/v1/clients/pk", `{"jwks":{"keys":[]}}`, nil, 400, "invalid_request", "jwks:"},
			{"patch unknown client", "PATCH", "/admin/v1/clients/nope", `{"name":"x"}`, nil, 404, "not_found", ""},
			{"patch malformed", "PATCH", "/admin/v1/clients/base", `{`, nil, 400, "invalid_request", "malformed"},
			{"get unknown", "GET", "/admin/v1/clients/nope", ``, nil, 404, "not_found", ""},
			{"get invalid id", "GET", "/admin/v1/clients/..", ``, nil, 404, "not_found", ""},
			{"get escaped NUL", "GET", "/admin/v1/clients/a%00b", ``, nil, 404, "not_found", ""},
			{"get bad utf8", "GET", "/admin/v1/clients/%ff%fe", ``, nil, 404, "not_found", ""},
			{"get percent-encoded id", "GET", "/admin/v1/clients/%62ase", ``, nil, 200, "", ""},
			{"get double-escaped id", "GET", "/admin/v1/clients/b%2561se", ``, nil, 404, "not_found", ""},
			{"get long id", "GET", "/admin/v1/clients/" + strings.Repeat("a", 5000), ``, nil, 404, "not_found", ""},
			{"rotate unknown", "POST", "/admin/v1/clients/nope/rotate-secret", ``, nil, 404, "not_found", ""},
			{"disable unknown", "POST", "/admin/v1/clients/nope/disable", ``, nil, 404, "not_found", ""},
			{"enable unknown", "POST", "/admin/v1/clients/nope/enable", ``, nil, 404, "not_found", ""},
			{"delete unknown", "DELETE", "/admin/v1/clients/nope", ``, nil, 404, "not_found", ""},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				env.t = t
				r := env.do(tt.method, tt.path, tt.body, tt.header...)
				m := clientAdminTestExpect(t, r, tt.status, tt.errCode)
				if d, _ := m["error_description"].(string); !strings.Contains(d, tt.wantDescSubstr) {
					t.Fatalf("error_description: got %q, want it to contain %q", d, tt.wantDescSubstr)
				}
			})
		}
		env.t = t
		// Nothing above changed the two clients.
		m := clientAdminTestExpect(t, env.do("GET", "/admin/v1/clients", ""), http.StatusOK, "")
		if n := len(m["clients"].([]any)); n != 2 {
			t.Fatalf("after bad requests: %d clients, want 2", n)
		}
		m = clientAdminTestExpect(t, env.do("GET", "/admin/v1/clients/base", ""), http.StatusOK, "")
		if m["name"] != "B" || m["type"] != "app" {
			t.Fatalf("base client changed: %v", m)
		}
		env.checkNoHashes(t)
	})
}

func TestClientAdminSQLLookingStrings(t *testing.T) {
	clientAdminTestEachBackend(t, func(t *testing.T, env *clientAdminTestEnv) {
		name := `Robert'); DROP TABLE clients;-- $1 ?1 "x" \u0027`
		body, _ := json.Marshal(map[string]any{"client_id": "bobby", "name": name, "type": "app",
			"audiences": []string{"urn:x:'%3B--", "a';DROP"}})
		clientAdminTestExpect(t, env.do("POST", "/admin/v1/clients", string(body)), http.StatusCreated, "")
		m := clientAdminTestExpect(t, env.do("GET", "/admin/v1/clients/bobby", ""), http.StatusOK, "")
		if m["name"] != name {
			t.Fatalf("name: got %q, want %q", m["name"], name)
		}
		if auds := m["audiences"].([]any); auds[0] != "urn:x:'%3B--" || auds[1] != "a';DROP" {
			t.Fatalf("audiences: %v", auds)
		}
		for _, id := range []string{"x' OR '1'='1", "x\"; DELETE FROM clients; --", "1; DROP TABLE clients"} {
			b, _ := json.Marshal(map[string]any{"client_id": id, "name": "n", "type": "app"})
			clientAdminTestExpect(t, env.do("POST", "/admin/v1/clients", string(b)), http.StatusBadRequest, "invalid_request")
		}
		clientAdminTestExpect(t, env.do("GET", "/admin/v1/clients/x'%20OR%20'1'='1", ""), http.StatusNotFound, "not_found")
		clientAdminTestExpect(t, env.do("DELETE", "/admin/v1/clients/bobby'%20OR%20'1'='1", ""), http.StatusNotFound, "not_found")
		m = clientAdminTestExpect(t, env.do("GET", "/admin/v1/clients", ""), http.StatusOK, "")
		if n := len(m["clients"].([]any)); n != 1 {
			t.Fatalf("clients: got %d, want 1", n)
		}
	})
}

func TestClientAdminHugeStreamedBody(t *testing.T) {
	env := newClientAdminTestEnv(t, db.SQLite)
	srv := httptest.NewServer(env.e)
	defer srv.Close()
	// A chunked body has no Content-Length: the limit must hold while reading.
	pr, pw := io.Pipe()
	go func() {
		pw.Write([]byte(`{"name":"a","type":"app","scopes":["`))
		chunk := []byte(strings.Repeat("a", 4096))
		for range 40 {
			if _, err := pw.Write(chunk); err != nil {
				return
			}
		}
		pw.Write([]byte(`"]}`))
		pw.Close()
	}()
	req, _ := http.NewRequest("POST", srv.URL+"/admin/v1/clients", pr)
	req.Header.Set("Content-Type", "application/json")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(body), "invalid_request") {
		t.Fatalf("got %d %s, want 413", resp.StatusCode, body)
	}
	if resp.ContentLength > 0 && resp.Header.Get("Content-Type") == "" {
		t.Fatalf("413 without a content type")
	}
	pr.CloseWithError(io.EOF)
}

func TestClientAdminDatabaseUnavailable(t *testing.T) {
	clientAdminTestEachBackend(t, func(t *testing.T, env *clientAdminTestEnv) {
		if env.d.Dialect() != db.Postgres {
			// A closed SQLite handle is a programming error, not an outage:
			// internal/db maps only SQLITE_BUSY/LOCKED to ErrUnavailable.
			t.Skip("simulating an outage needs PostgreSQL (a closed pool maps to db.ErrUnavailable)")
		}
		env.d.Close()
		r := env.do("GET", "/admin/v1/clients", "")
		clientAdminTestExpect(t, r, http.StatusServiceUnavailable, "temporarily_unavailable")
		if r.Header().Get("Retry-After") == "" {
			t.Errorf("503 without Retry-After")
		}
		clientAdminTestExpect(t, env.do("POST", "/admin/v1/clients", `{"name":"a","type":"app"}`), http.StatusServiceUnavailable, "temporarily_unavailable")
		clientAdminTestExpect(t, env.do("GET", "/admin/v1/clients/some-id", ""), http.StatusServiceUnavailable, "temporarily_unavailable")
	})
}

// FuzzClientAdminBodies drives the create and patch decoders, and the validation
// behind them, with arbitrary bodies: the answer is always a JSON response that is
// a success or a client error, never a server error and never a secret hash.
func FuzzClientAdminBodies(f *testing.F) {
	jwks, _ := clientAdminTestJWKS(f)
	for _, seed := range []string{
		`{"name":"a","type":"agent"}`,
		`{"client_id":"x.y-z_1","name":"a","type":"app","token_endpoint_auth_method":"client_secret_post","grant_types":["client_credentials"],"scopes":["a","b:c"],"audiences":["https://x.example/api","urn:a:b","peer"],"may_impersonate":true,"first_party":true,"disabled":false}`,
		`{"name":"s","type":"agent","token_endpoint_auth_method":"private_key_jwt","jwks":` + jwks + `}`,
		`{"jwks":{"keys":[{"kty":"RSA","kid":"k","n":"AQAB","e":"AQAB"}]}}`,
		`{"name":"\u0000","type":"app"}`, `{"scopes":[null,1,{}]}`, `{"name":null}`, `{"Name":"x"}`,
		`[`, `null`, `{}`, `""`, `{"a":1}{}`, "\xff\xfe", `{"name":"a","name":"b"}`,
	} {
		f.Add(seed, false)
		f.Add(seed, true)
	}
	env := newClientAdminTestEnv(f, db.SQLite)
	r := env.do("POST", "/admin/v1/clients", `{"client_id":"fuzz-base","name":"Base","type":"agent","token_endpoint_auth_method":"private_key_jwt","jwks":`+jwks+`}`)
	if r.Code != http.StatusCreated {
		f.Fatalf("base client: %d %s", r.Code, r.Body)
	}
	f.Fuzz(func(t *testing.T, body string, patch bool) {
		env.t = t
		env.bodies = env.bodies[:0]
		var r clientAdminTestResponse
		if patch {
			r = env.do("PATCH", "/admin/v1/clients/fuzz-base", body, "Content-Type", "application/json")
		} else {
			r = env.do("POST", "/admin/v1/clients", body, "Content-Type", "application/json")
		}
		if !slices.Contains([]int{200, 201, 400, 409, 413}, r.Code) {
			t.Fatalf("body %q: got %d %s", body, r.Code, r.Body)
		}
		var m map[string]any
		if err := json.Unmarshal(r.Body.Bytes(), &m); err != nil {
			t.Fatalf("response is not JSON: %q", r.Body)
		}
		if r.Code >= 400 {
			if m["error"] == nil || m["error_description"] == nil {
				t.Fatalf("error without error/error_description: %s", r.Body)
			}
			return
		}
		id, _ := m["client_id"].(string)
		got := env.do("GET", "/admin/v1/clients/"+id, "")
		if got.Code != http.StatusOK {
			t.Fatalf("stored client %s: %d %s", id, got.Code, got.Body)
		}
		if r.Code == http.StatusCreated && id != "fuzz-base" {
			if err := env.store.Delete(context.Background(), id); err != nil {
				t.Fatal(err)
			}
		}
	})
}
