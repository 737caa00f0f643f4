package app_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jwt"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/mandate-dev/mandate/internal/app"
	"github.com/mandate-dev/mandate/internal/app/apptest"
	"github.com/mandate-dev/mandate/internal/db"
	"github.com/mandate-dev/mandate/internal/db/dbtest"
)

// node is one mandate started in-process on a loopback port, driven over real HTTP.
type node struct {
	t        *testing.T
	url      string
	adminKey string
	app      *app.App
}

const testAdminKey = apptest.AdminKey

var testKEK = apptest.KEK()

// startNode starts a dev-mode node on the given backend.
func startNode(t *testing.T, _ db.Dialect, dsn string) *node {
	t.Helper()
	n := apptest.Start(t, apptest.Options{DSN: dsn, Dev: true})
	return &node{t: t, url: n.URL, adminKey: n.AdminKey, app: n.App}
}

// dsnFor gives each test its own database on the backend.
func dsnFor(t *testing.T, dialect db.Dialect) string {
	if dialect == db.SQLite {
		return "sqlite:" + filepath.Join(t.TempDir(), "m.db")
	}
	return dbtest.SchemaURL(t)
}

type resp struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

func (n *node) do(method, path, auth string, body any) resp {
	n.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = strings.NewReader(string(b))
	}
	req, _ := http.NewRequest(method, n.url+path, rd)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	return n.send(req)
}

func (n *node) send(req *http.Request) resp {
	n.t.Helper()
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		n.t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	r := resp{status: res.StatusCode, header: res.Header, raw: string(b)}
	_ = json.Unmarshal(b, &r.body)
	return r
}

func (n *node) admin(method, path string, body any) resp {
	return n.do(method, "/admin/v1"+path, "Bearer "+n.adminKey, body)
}

// form posts to an OAuth endpoint with HTTP Basic client authentication.
func (n *node) form(path, clientID, secret string, v url.Values) resp {
	n.t.Helper()
	req, _ := http.NewRequest("POST", n.url+path, strings.NewReader(v.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if clientID != "" {
		req.SetBasicAuth(url.QueryEscape(clientID), url.QueryEscape(secret))
	}
	return n.send(req)
}

type client struct{ id, secret string }

func (n *node) createClient(body map[string]any) client {
	n.t.Helper()
	r := n.admin("POST", "/clients", body)
	if r.status != http.StatusCreated {
		n.t.Fatalf("create client: got %d %s", r.status, r.raw)
	}
	s, _ := r.body["client_secret"].(string)
	return client{id: r.body["client_id"].(string), secret: s}
}

func (n *node) userToken(sub, scope string) string {
	n.t.Helper()
	r := n.admin("POST", "/dev/user-token", map[string]any{"sub": sub, "scope": scope})
	if r.status != 200 {
		n.t.Fatalf("dev user token: %d %s", r.status, r.raw)
	}
	return r.body["access_token"].(string)
}

func exchangeForm(subject string, extra ...string) url.Values {
	v := url.Values{
		"grant_type":         {"urn:ietf:params:oauth:grant-type:token-exchange"},
		"subject_token":      {subject},
		"subject_token_type": {"urn:ietf:params:oauth:token-type:access_token"},
	}
	for i := 0; i+1 < len(extra); i += 2 {
		v.Add(extra[i], extra[i+1])
	}
	return v
}

func claimsOf(t *testing.T, tok string) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWS: %q", tok)
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func headerOf(t *testing.T, tok string) map[string]any {
	t.Helper()
	b, _ := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[0])
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return m
}

func wantError(t *testing.T, r resp, status int, code string) {
	t.Helper()
	if r.status != status || r.body["error"] != code {
		t.Fatalf("got %d %s, want %d %s", r.status, r.raw, status, code)
	}
	if d, _ := r.body["error_description"].(string); d == "" {
		t.Fatalf("error %s has no error_description", code)
	}
}

func TestEndToEnd(t *testing.T) {
	for _, dialect := range dbtest.Backends() {
		t.Run(string(dialect), func(t *testing.T) {
			n := startNode(t, dialect, dsnFor(t, dialect))
			testDelegationStory(t, n)
			testClientCredentialsWithOAuth2Library(t, n)
			testBadInput(t, n)
		})
	}
}

func testDelegationStory(t *testing.T, n *node) {
	// Discovery and keys.
	md := n.do("GET", "/.well-known/oauth-authorization-server", "", nil)
	if md.status != 200 || md.body["issuer"] != n.url || md.body["token_endpoint"] != n.url+"/oauth2/token" {
		t.Fatalf("metadata: %d %s", md.status, md.raw)
	}
	if gts, _ := md.body["grant_types_supported"].([]any); len(gts) != 2 {
		t.Fatalf("grant_types_supported: got %v", md.body["grant_types_supported"])
	}
	jwks := n.do("GET", "/jwks.json", "", nil)
	if keys, _ := jwks.body["keys"].([]any); jwks.status != 200 || len(keys) == 0 {
		t.Fatalf("jwks: %d %s", jwks.status, jwks.raw)
	}
	if r := n.do("GET", "/admin/v1/clients", "", nil); r.status != 401 {
		t.Fatalf("admin without key: got %d, want 401", r.status)
	}

	mailAPI := "https://api.example.com/mail"
	agentA := n.createClient(map[string]any{"client_id": "agent-a", "name": "Agent A", "type": "agent",
		"scopes": []string{"mail:read", "mail:write", "calendar:read"}, "audiences": []string{mailAPI, "https://api.example.com/calendar"}})
	agentB := n.createClient(map[string]any{"client_id": "agent-b", "name": "Agent B", "type": "agent",
		"scopes": []string{"mail:read"}, "audiences": []string{mailAPI}})
	agentC := n.createClient(map[string]any{"client_id": "agent-c", "name": "Agent C", "type": "agent",
		"scopes": []string{"mail:read"}, "audiences": []string{mailAPI}})
	if agentA.secret == "" || !strings.HasPrefix(agentA.secret, "mnd_") {
		t.Fatalf("client secret: got %q", agentA.secret)
	}

	alice := n.userToken("alice", "mail:read mail:write calendar:read")

	// No grant yet: consent is missing.
	r := n.form("/oauth2/token", agentA.id, agentA.secret, exchangeForm(alice, "scope", "mail:read", "resource", mailAPI))
	wantError(t, r, 400, "invalid_grant")

	// Alice grants agent A mail:read on the mail API, re-delegable to agent B.
	g := n.do("POST", "/v1/grants", "Bearer "+alice, map[string]any{
		"client_id": agentA.id, "scopes": []string{"mail:read", "calendar:read"},
		"resources": []string{"https://api.example.com/*"}, "allowed_sub_agents": []string{agentB.id},
		"expires_at": time.Now().Add(24 * time.Hour).UTC().Format(time.RFC3339),
	})
	if g.status != 201 {
		t.Fatalf("create grant: %d %s", g.status, g.raw)
	}
	grantID := g.body["grant_id"].(string)

	// Agent A exchanges alice's token.
	r = n.form("/oauth2/token", agentA.id, agentA.secret, exchangeForm(alice, "scope", "mail:read", "resource", mailAPI))
	if r.status != 200 {
		t.Fatalf("exchange: %d %s", r.status, r.raw)
	}
	if r.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("Cache-Control: got %q", r.header.Get("Cache-Control"))
	}
	if r.body["issued_token_type"] != "urn:ietf:params:oauth:token-type:access_token" || r.body["token_type"] != "Bearer" {
		t.Fatalf("response: %s", r.raw)
	}
	if _, ok := r.body["expires_in"].(float64); !ok {
		t.Fatalf("expires_in missing: %s", r.raw)
	}
	tokA := r.body["access_token"].(string)
	if h := headerOf(t, tokA); h["typ"] != "at+jwt" || h["alg"] != "ES256" || h["kid"] == "" {
		t.Fatalf("header: %v", h)
	}
	ca := claimsOf(t, tokA)
	if ca["sub"] != "alice" || ca["client_id"] != agentA.id || ca["scope"] != "mail:read" || ca["grant_id"] != grantID || ca["iss"] != n.url {
		t.Fatalf("claims: %v", ca)
	}
	if act, _ := ca["act"].(map[string]any); act["sub"] != agentA.id {
		t.Fatalf("act: got %v", ca["act"])
	}

	// Escalation: mail:write is not in the grant.
	r = n.form("/oauth2/token", agentA.id, agentA.secret, exchangeForm(alice, "scope", "mail:write", "resource", mailAPI))
	wantError(t, r, 400, "invalid_scope")
	// A resource outside what the client may request.
	r = n.form("/oauth2/token", agentA.id, agentA.secret, exchangeForm(alice, "scope", "mail:read", "resource", "https://evil.example.com/"))
	wantError(t, r, 400, "invalid_target")

	// Agent C (no relation) cannot use A's token: no chain splicing.
	r = n.form("/oauth2/token", agentC.id, agentC.secret, exchangeForm(tokA, "scope", "mail:read"))
	wantError(t, r, 400, "invalid_request")

	// Re-delegation: A asks for a token whose next hop is B.
	r = n.form("/oauth2/token", agentA.id, agentA.secret, exchangeForm(tokA, "audience", agentB.id))
	if r.status != 200 {
		t.Fatalf("token for next hop: %d %s", r.status, r.raw)
	}
	tokAB := r.body["access_token"].(string)
	cab := claimsOf(t, tokAB)
	if ma, _ := cab["may_act"].(map[string]any); ma["sub"] != agentB.id {
		t.Fatalf("may_act: %v", cab["may_act"])
	}
	// B exchanges it for its own token: act {B, act {A}}, depth 2.
	r = n.form("/oauth2/token", agentB.id, agentB.secret, exchangeForm(tokAB, "scope", "mail:read", "resource", mailAPI))
	if r.status != 200 {
		t.Fatalf("sub-agent exchange: %d %s", r.status, r.raw)
	}
	tokB := r.body["access_token"].(string)
	cb := claimsOf(t, tokB)
	act, _ := cb["act"].(map[string]any)
	inner, _ := act["act"].(map[string]any)
	if act["sub"] != agentB.id || inner["sub"] != agentA.id || cb["depth"] != float64(2) || cb["sub"] != "alice" {
		t.Fatalf("sub-agent claims: %v", cb)
	}
	if cb["exp"].(float64) > ca["exp"].(float64) {
		t.Fatalf("child outlives parent: %v > %v", cb["exp"], ca["exp"])
	}
	anc, _ := cb["anc"].([]any)
	if !slices.Contains(anc, any(ca["jti"])) {
		t.Fatalf("ancestors %v lack %v", anc, ca["jti"])
	}

	// Introspection returns the chain.
	in := n.form("/oauth2/introspect", agentB.id, agentB.secret, url.Values{"token": {tokB}})
	if in.status != 200 || in.body["active"] != true {
		t.Fatalf("introspect: %d %s", in.status, in.raw)
	}
	if a, _ := in.body["act"].(map[string]any); a["sub"] != agentB.id {
		t.Fatalf("introspect act: %v", in.body["act"])
	}

	// Revoking A's token kills it and every token derived from it.
	rv := n.form("/oauth2/revoke", agentA.id, agentA.secret, url.Values{"token": {tokA}})
	if rv.status != 200 {
		t.Fatalf("revoke: %d %s", rv.status, rv.raw)
	}
	for name, tok := range map[string]string{"A": tokA, "A→B": tokAB, "B": tokB} {
		in = n.form("/oauth2/introspect", agentA.id, agentA.secret, url.Values{"token": {tok}})
		if in.body["active"] != false {
			t.Fatalf("after revoke, token %s: %s", name, in.raw)
		}
	}
	r = n.form("/oauth2/token", agentB.id, agentB.secret, exchangeForm(tokAB, "scope", "mail:read"))
	wantError(t, r, 400, "invalid_request")

	// A fresh token, then the user revokes the grant: everything under it dies.
	r = n.form("/oauth2/token", agentA.id, agentA.secret, exchangeForm(alice, "scope", "mail:read", "resource", mailAPI))
	if r.status != 200 {
		t.Fatalf("exchange again: %d %s", r.status, r.raw)
	}
	tokA2 := r.body["access_token"].(string)
	if d := n.do("DELETE", "/v1/grants/"+grantID, "Bearer "+alice, nil); d.status != 204 {
		t.Fatalf("revoke grant: %d %s", d.status, d.raw)
	}
	in = n.form("/oauth2/introspect", agentA.id, agentA.secret, url.Values{"token": {tokA2}})
	if in.body["active"] != false {
		t.Fatalf("token under revoked grant still active: %s", in.raw)
	}
	r = n.form("/oauth2/token", agentA.id, agentA.secret, exchangeForm(alice, "scope", "mail:read", "resource", mailAPI))
	wantError(t, r, 400, "invalid_grant")
}

func testClientCredentialsWithOAuth2Library(t *testing.T, n *node) {
	app := n.createClient(map[string]any{"client_id": "reporting-app", "name": "Reporting", "type": "app",
		"scopes": []string{"reports:read"}, "audiences": []string{"https://api.example.com/reports"},
		"grant_types": []string{"client_credentials"}})
	cc := clientcredentials.Config{ClientID: app.id, ClientSecret: app.secret, TokenURL: n.url + "/oauth2/token",
		Scopes: []string{"reports:read"}, EndpointParams: url.Values{"audience": {"https://api.example.com/reports"}}}
	tok, err := cc.Token(context.Background())
	if err != nil {
		t.Fatalf("client credentials: %v", err)
	}
	c := claimsOf(t, tok.AccessToken)
	if c["sub"] != app.id || c["client_id"] != app.id || c["act"] != nil {
		t.Fatalf("claims: %v", c)
	}
	bad := clientcredentials.Config{ClientID: app.id, ClientSecret: "wrong", TokenURL: n.url + "/oauth2/token"}
	if _, err := bad.Token(context.Background()); err == nil || !strings.Contains(err.Error(), "invalid_client") {
		t.Fatalf("wrong secret: got %v, want invalid_client", err)
	}
}

// foreignToken signs a token with a key mandate does not trust.
func foreignToken(t *testing.T, iss, aud string, alg jwa.SignatureAlgorithm, key any, mutate func(jwt.Token)) string {
	t.Helper()
	tok, _ := jwt.NewBuilder().Issuer(iss).Subject("alice").Audience([]string{aud}).
		IssuedAt(time.Now()).Expiration(time.Now().Add(time.Hour)).Claim("scope", "mail:read").Build()
	if mutate != nil {
		mutate(tok)
	}
	b, err := jwt.Sign(tok, jwt.WithKey(alg, key))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func testBadInput(t *testing.T, n *node) {
	a := n.createClient(map[string]any{"client_id": "agent-bad", "name": "Bad input", "type": "agent",
		"scopes": []string{"mail:read"}, "audiences": []string{"https://api.example.com/mail"}})
	devIss := n.url + "/dev"
	alice := n.userToken("alice", "mail:read")
	parts := strings.Split(alice, ".")

	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rogue := foreignToken(t, devIss, n.url, jwa.ES256, ecKey, nil)
	withKid, _ := jwk.FromRaw(ecKey)
	_ = withKid.Set(jwk.KeyIDKey, "unknown-kid")
	unknownKid := foreignToken(t, devIss, n.url, jwa.ES256, withKid, nil)
	hs := foreignToken(t, devIss, n.url, jwa.HS256, []byte("secret-secret-secret-secret-1234"), nil)
	noneHdr := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`))
	none := noneHdr + "." + parts[1] + "."
	// HS256 with the issuer's public key as the HMAC secret: the classic confusion attack.
	pubJWKS := n.do("GET", "/dev/jwks.json", "", nil).raw
	mac := hmac.New(sha256.New, []byte(pubJWKS))
	hsHdr := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))
	mac.Write([]byte(hsHdr + "." + parts[1]))
	confused := hsHdr + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))

	wrongAud := n.admin("POST", "/dev/user-token", map[string]any{"sub": "alice", "scope": "mail:read", "audience": "https://other.example.com"}).body["access_token"].(string)
	wrongIss := foreignToken(t, "https://untrusted.example.com", n.url, jwa.ES256, ecKey, nil)

	cases := []struct {
		name   string
		form   url.Values
		status int
		code   string
	}{
		{"unsupported grant type", url.Values{"grant_type": {"password"}}, 400, "unsupported_grant_type"},
		{"missing grant type", url.Values{"scope": {"x"}}, 400, "invalid_request"},
		{"duplicated parameter", func() url.Values { v := exchangeForm(alice); v.Add("scope", "a"); v.Add("scope", "b"); return v }(), 400, "invalid_request"},
		{"missing subject_token", url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"}, "subject_token_type": {"urn:ietf:params:oauth:token-type:access_token"}}, 400, "invalid_request"},
		{"missing subject_token_type", url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"}, "subject_token": {alice}}, 400, "invalid_request"},
		{"unknown subject_token_type", exchangeForm(alice, "subject_token_type", "urn:x"), 400, "invalid_request"},
		{"actor_token_type without actor_token", exchangeForm(alice, "actor_token_type", "urn:ietf:params:oauth:token-type:access_token"), 400, "invalid_request"},
		{"unsupported requested_token_type", exchangeForm(alice, "requested_token_type", "urn:ietf:params:oauth:token-type:saml2"), 400, "invalid_request"},
		{"garbage subject token", exchangeForm("not-a-token"), 400, "invalid_request"},
		{"alg none", exchangeForm(none), 400, "invalid_request"},
		{"HS256", exchangeForm(hs), 400, "invalid_request"},
		{"HS256 with the public key as secret", exchangeForm(confused), 400, "invalid_request"},
		{"rogue signature", exchangeForm(rogue), 400, "invalid_request"},
		{"unknown kid", exchangeForm(unknownKid), 400, "invalid_request"},
		{"wrong audience", exchangeForm(wrongAud), 400, "invalid_request"},
		{"untrusted issuer", exchangeForm(wrongIss), 400, "invalid_request"},
		{"bad resource", exchangeForm(alice, "resource", "not a uri"), 400, "invalid_target"},
		{"bad scope syntax", exchangeForm(alice, "scope", "a\"b"), 400, "invalid_scope"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := n.form("/oauth2/token", a.id, a.secret, c.form)
			wantError(t, r, c.status, c.code)
			if r.header.Get("Cache-Control") != "no-store" {
				t.Errorf("Cache-Control: got %q", r.header.Get("Cache-Control"))
			}
		})
	}
	// Not a form; too large; wrong method.
	req, _ := http.NewRequest("POST", n.url+"/oauth2/token", strings.NewReader(`{"grant_type":"client_credentials"}`))
	req.Header.Set("Content-Type", "application/json")
	wantError(t, n.send(req), 400, "invalid_request")
	big := url.Values{"grant_type": {"client_credentials"}, "scope": {strings.Repeat("a", 200<<10)}}
	req, _ = http.NewRequest("POST", n.url+"/oauth2/token", strings.NewReader(big.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if r := n.send(req); r.status != 413 && r.status != 400 {
		t.Fatalf("oversized form: got %d %s", r.status, r.raw)
	}
	if r := n.do("GET", "/oauth2/token", "", nil); r.status < 400 || r.status >= 500 {
		t.Fatalf("GET token endpoint: got %d", r.status)
	}
	// Unknown client and wrong secret: 401 invalid_client.
	wantError(t, n.form("/oauth2/token", "nobody", "x", exchangeForm(alice)), 401, "invalid_client")
	wantError(t, n.form("/oauth2/token", a.id, "wrong", exchangeForm(alice)), 401, "invalid_client")
}

// TestPrivateKeyJWT authenticates with an RFC 7523 client assertion and checks
// that a replayed assertion (same jti) is refused.
func TestPrivateKeyJWT(t *testing.T) {
	n := startNode(t, db.SQLite, dsnFor(t, db.SQLite))
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	key, _ := jwk.FromRaw(priv)
	_ = key.Set(jwk.KeyIDKey, "agent-key-1")
	_ = key.Set(jwk.AlgorithmKey, jwa.ES256)
	pub, _ := key.PublicKey()
	set := jwk.NewSet()
	_ = set.AddKey(pub)
	jwks, _ := json.Marshal(set)
	r := n.admin("POST", "/clients", map[string]any{"client_id": "pkjwt-agent", "name": "Key agent", "type": "agent",
		"token_endpoint_auth_method": "private_key_jwt", "jwks": json.RawMessage(jwks),
		"scopes": []string{"mail:read"}, "audiences": []string{"https://api.example.com/mail"},
		"grant_types": []string{"client_credentials", "urn:ietf:params:oauth:grant-type:token-exchange"}})
	if r.status != 201 {
		t.Fatalf("register: %d %s", r.status, r.raw)
	}
	if _, ok := r.body["client_secret"]; ok {
		t.Fatalf("private_key_jwt client got a secret: %s", r.raw)
	}
	assertion := func(jti string, aud string) string {
		tok, _ := jwt.NewBuilder().Issuer("pkjwt-agent").Subject("pkjwt-agent").Audience([]string{aud}).
			JwtID(jti).IssuedAt(time.Now()).Expiration(time.Now().Add(time.Minute)).Build()
		b, err := jwt.Sign(tok, jwt.WithKey(jwa.ES256, key))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	form := func(a string) url.Values {
		return url.Values{"grant_type": {"client_credentials"}, "client_id": {"pkjwt-agent"},
			"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}, "client_assertion": {a}}
	}
	a1 := assertion("jti-1", n.url+"/oauth2/token")
	if r := n.form("/oauth2/token", "", "", form(a1)); r.status != 200 {
		t.Fatalf("private_key_jwt: %d %s", r.status, r.raw)
	}
	// The same assertion again: replay.
	wantError(t, n.form("/oauth2/token", "", "", form(a1)), 401, "invalid_client")
	// Wrong audience.
	wantError(t, n.form("/oauth2/token", "", "", form(assertion("jti-2", "https://elsewhere/token"))), 401, "invalid_client")
	// Signed by another key.
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	okey, _ := jwk.FromRaw(other)
	_ = okey.Set(jwk.KeyIDKey, "agent-key-1")
	tok, _ := jwt.NewBuilder().Issuer("pkjwt-agent").Subject("pkjwt-agent").Audience([]string{n.url + "/oauth2/token"}).
		JwtID("jti-3").Expiration(time.Now().Add(time.Minute)).Build()
	forged, _ := jwt.Sign(tok, jwt.WithKey(jwa.ES256, okey))
	wantError(t, n.form("/oauth2/token", "", "", form(string(forged))), 401, "invalid_client")
	// An assertion that lives for a day would pin its jti for a day: refused.
	long, _ := jwt.NewBuilder().Issuer("pkjwt-agent").Subject("pkjwt-agent").Audience([]string{n.url + "/oauth2/token"}).
		JwtID("jti-4").Expiration(time.Now().Add(24 * time.Hour)).Build()
	longSigned, _ := jwt.Sign(long, jwt.WithKey(jwa.ES256, key))
	wantError(t, n.form("/oauth2/token", "", "", form(string(longSigned))), 401, "invalid_client")
	// A secret-based request for this client is refused.
	wantError(t, n.form("/oauth2/token", "pkjwt-agent", "guess", url.Values{"grant_type": {"client_credentials"}}), 401, "invalid_client")
}

// TestKeyRotationOverHTTP: rotate publishes the next key before it signs, and
// tokens signed before a rotation stay valid after it.
func TestKeyRotationOverHTTP(t *testing.T) {
	n := startNode(t, db.SQLite, dsnFor(t, db.SQLite))
	app := n.createClient(map[string]any{"client_id": "rot-app", "name": "Rot", "type": "app",
		"scopes": []string{"a"}, "grant_types": []string{"client_credentials"}})
	get := func() string {
		r := n.form("/oauth2/token", app.id, app.secret, url.Values{"grant_type": {"client_credentials"}})
		if r.status != 200 {
			t.Fatalf("token: %d %s", r.status, r.raw)
		}
		return r.body["access_token"].(string)
	}
	kids := func() []string {
		var out []string
		for _, k := range n.do("GET", "/jwks.json", "", nil).body["keys"].([]any) {
			out = append(out, k.(map[string]any)["kid"].(string))
		}
		return out
	}
	before := get()
	oldKid := headerOf(t, before)["kid"].(string)
	if r := n.admin("POST", "/keys/rotate", nil); r.status != 200 {
		t.Fatalf("rotate: %d %s", r.status, r.raw)
	}
	if got := kids(); len(got) != 2 {
		t.Fatalf("after first rotate, JWKS kids: got %v, want old and next", got)
	}
	if kid := headerOf(t, get())["kid"]; kid != oldKid {
		t.Fatalf("next key signs before promotion: got %v, want %v", kid, oldKid)
	}
	if r := n.admin("POST", "/keys/rotate", nil); r.status != 200 {
		t.Fatalf("promote: %d %s", r.status, r.raw)
	}
	after := get()
	if kid := headerOf(t, after)["kid"]; kid == oldKid {
		t.Fatalf("after promotion still signing with %v", kid)
	}
	for _, tok := range []string{before, after} {
		in := n.form("/oauth2/introspect", app.id, app.secret, url.Values{"token": {tok}})
		if in.body["active"] != true {
			t.Fatalf("token signed by %v inactive after rotation: %s", headerOf(t, tok)["kid"], in.raw)
		}
	}
}

// TestValidateEndpoint drives GET /validate as a gateway would (nginx auth_request).
func TestValidateEndpoint(t *testing.T) {
	n := startNode(t, db.SQLite, dsnFor(t, db.SQLite))
	mail := "https://api.example.com/mail"
	agent := n.createClient(map[string]any{"client_id": "val-agent", "name": "V", "type": "agent",
		"scopes": []string{"mail:read"}, "audiences": []string{mail}})
	alice := n.userToken("alice", "mail:read")
	if g := n.do("POST", "/v1/grants", "Bearer "+alice, map[string]any{"client_id": agent.id, "scopes": []string{"mail:read"},
		"resources": []string{mail}, "expires_at": time.Now().Add(time.Hour).UTC().Format(time.RFC3339)}); g.status != 201 {
		t.Fatalf("grant: %d %s", g.status, g.raw)
	}
	r := n.form("/oauth2/token", agent.id, agent.secret, exchangeForm(alice, "scope", "mail:read", "resource", mail))
	if r.status != 200 {
		t.Fatalf("exchange: %d %s", r.status, r.raw)
	}
	tok := r.body["access_token"].(string)
	validate := func(q, token string) resp {
		req, _ := http.NewRequest("GET", n.url+"/validate?"+q, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		return n.send(req)
	}
	ok := validate("aud="+url.QueryEscape(mail)+"&scope=mail:read", tok)
	if ok.status != 200 || ok.header.Get("X-Mandate-Subject") != "alice" || ok.header.Get("X-Mandate-Actor") != agent.id {
		t.Fatalf("validate: %d %v", ok.status, ok.header)
	}
	if r := validate("aud="+url.QueryEscape(mail)+"&scope=mail:write", tok); r.status != 403 || !strings.Contains(r.header.Get("WWW-Authenticate"), "insufficient_scope") {
		t.Fatalf("insufficient scope: %d %v", r.status, r.header)
	}
	if r := validate("aud=https://other.example.com", tok); r.status != 401 {
		t.Fatalf("wrong audience: got %d, want 401", r.status)
	}
	if r := validate("", ""); r.status != 401 || r.header.Get("WWW-Authenticate") == "" {
		t.Fatalf("no token: %d %v", r.status, r.header)
	}
	if r := validate("", "garbage"); r.status != 401 {
		t.Fatalf("garbage: got %d, want 401", r.status)
	}
	// Revocation reaches the validator without a database query per request.
	if rv := n.form("/oauth2/revoke", agent.id, agent.secret, url.Values{"token": {tok}}); rv.status != 200 {
		t.Fatalf("revoke: %d", rv.status)
	}
	deadline := time.Now().Add(time.Second)
	for {
		r := validate("aud="+url.QueryEscape(mail), tok)
		if r.status == 401 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("revoked token still validates after 1s: %d", r.status)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Metrics count the cache at work and the token decisions.
	m := n.do("GET", "/metrics", "", nil)
	for _, want := range []string{"mandate_validate_cache_hits_total", "mandate_token_decisions_total{error=\"\",grant_type=\"token_exchange\",result=\"issued\"}", "mandate_revocation_sync_lag_seconds"} {
		if !strings.Contains(m.raw, want) {
			t.Fatalf("/metrics lacks %s", want)
		}
	}
	if strings.Contains(m.raw, "mandate_validate_cache_hits_total 0\n") {
		t.Fatal("repeated validations of one token never hit the cache")
	}
	// A user's own token of a trusted upstream issuer validates too (no chain, no grant).
	up := validate("aud="+url.QueryEscape(n.url)+"&scope=mail:read", alice)
	if up.status != 200 || up.header.Get("X-Mandate-Subject") != "alice" || up.header.Get("X-Mandate-Subject-Issuer") != n.url+"/dev" || up.header.Get("X-Mandate-Actor") != "" {
		t.Fatalf("upstream token: %d %v", up.status, up.header)
	}
	if r := validate("scope=mail:write", alice); r.status != 403 {
		t.Fatalf("upstream token, missing scope: got %d, want 403", r.status)
	}
	if r := validate("aud="+url.QueryEscape(mail), alice); r.status != 401 {
		t.Fatalf("upstream token, wrong audience: got %d, want 401", r.status)
	}
	// After a key rotation, tokens from the new key validate too.
	n.admin("POST", "/keys/rotate?now=true", nil)
	r = n.form("/oauth2/token", agent.id, agent.secret, exchangeForm(alice, "scope", "mail:read", "resource", mail))
	if v := validate("aud="+url.QueryEscape(mail), r.body["access_token"].(string)); v.status != 200 {
		t.Fatalf("token of the rotated key: %d %v", v.status, v.header)
	}
}

// TestDisablingAClientRevokesItsTokens: a disabled client's tokens, and the
// tokens derived from them, stop working at once.
func TestDisablingAClientRevokesItsTokens(t *testing.T) {
	n := startNode(t, db.SQLite, dsnFor(t, db.SQLite))
	mail := "https://api.example.com/mail"
	a := n.createClient(map[string]any{"client_id": "dis-a", "name": "A", "type": "agent", "scopes": []string{"mail:read"}, "audiences": []string{mail}})
	b := n.createClient(map[string]any{"client_id": "dis-b", "name": "B", "type": "agent", "scopes": []string{"mail:read"}, "audiences": []string{mail}})
	alice := n.userToken("alice", "mail:read")
	if g := n.do("POST", "/v1/grants", "Bearer "+alice, map[string]any{"client_id": a.id, "scopes": []string{"mail:read"},
		"resources": []string{mail}, "allowed_sub_agents": []string{b.id}, "expires_at": time.Now().Add(time.Hour).UTC().Format(time.RFC3339)}); g.status != 201 {
		t.Fatalf("grant: %d %s", g.status, g.raw)
	}
	r := n.form("/oauth2/token", a.id, a.secret, exchangeForm(alice, "audience", b.id))
	if r.status != 200 {
		t.Fatalf("exchange: %d %s", r.status, r.raw)
	}
	hop := r.body["access_token"].(string)
	r = n.form("/oauth2/token", b.id, b.secret, exchangeForm(hop, "scope", "mail:read", "resource", mail))
	if r.status != 200 {
		t.Fatalf("sub-agent exchange: %d %s", r.status, r.raw)
	}
	derived := r.body["access_token"].(string)
	if d := n.admin("POST", "/clients/"+a.id+"/disable", nil); d.status >= 300 {
		t.Fatalf("disable: %d %s", d.status, d.raw)
	}
	for name, tok := range map[string]string{"A's token": hop, "B's token derived from it": derived} {
		if in := n.form("/oauth2/introspect", b.id, b.secret, url.Values{"token": {tok}}); in.body["active"] != false {
			t.Fatalf("%s still active after A was disabled: %s", name, in.raw)
		}
	}
	// Disabling through PATCH and deleting do the same.
	for _, remove := range []func(id string) resp{
		func(id string) resp { return n.admin("PATCH", "/clients/"+id, map[string]any{"disabled": true}) },
		func(id string) resp { return n.admin("DELETE", "/clients/"+id, nil) },
	} {
		app := n.createClient(map[string]any{"name": "App", "type": "app", "scopes": []string{"r"}, "grant_types": []string{"client_credentials"}})
		tok := n.form("/oauth2/token", app.id, app.secret, url.Values{"grant_type": {"client_credentials"}}).body["access_token"].(string)
		if r := remove(app.id); r.status >= 300 {
			t.Fatalf("remove %s: %d %s", app.id, r.status, r.raw)
		}
		if in := n.form("/oauth2/introspect", b.id, b.secret, url.Values{"token": {tok}}); in.body["active"] != false {
			t.Fatalf("token of removed client %s still active: %s", app.id, in.raw)
		}
	}
}

// TestAutomaticKeyRotation: with tokens.key_rotation_interval set, a node
// publishes the next key and then promotes it, on its own.
func TestAutomaticKeyRotation(t *testing.T) {
	n := startNode(t, db.SQLite, dsnFor(t, db.SQLite))
	ctx := context.Background()
	before := n.app.Keys.Active().KID
	n.app.RotateIfDue(ctx) // interval 0: never due
	if got := n.app.Keys.Active().KID; got != before {
		t.Fatalf("rotated with no interval set: %s -> %s", before, got)
	}
	n.app.Config.Tokens.KeyRotationInterval = time.Nanosecond // due at once (bypasses the 1h floor of the config check)
	n.app.RotateIfDue(ctx)
	if got := n.app.Keys.Active().KID; got != before {
		t.Fatalf("first step promoted at once: the next key must be published before it signs")
	}
	if keys := n.do("GET", "/jwks.json", "", nil).body["keys"].([]any); len(keys) != 2 {
		t.Fatalf("after the first step the JWKS has %d keys, want 2 (active and next)", len(keys))
	}
	n.app.RotateIfDue(ctx) // dev mode: no publish delay
	if got := n.app.Keys.Active().KID; got == before {
		t.Fatal("second step did not promote the next key")
	}
}
