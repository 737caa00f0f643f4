package app_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jwt"

	"github.com/mandate-dev/mandate/broker"
	"github.com/mandate-dev/mandate/internal/app"
	"github.com/mandate-dev/mandate/internal/config"
	"github.com/mandate-dev/mandate/internal/db"
	"github.com/mandate-dev/mandate/internal/db/dbtest"
	"github.com/mandate-dev/mandate/policies"
)

// The multi-node tests run several production-mode nodes (not dev mode) in
// process, each on its own loopback port, sharing one PostgreSQL schema, one
// KEK, one admin key and one issuer URL, as nodes behind a load balancer do.
// User tokens come from testIdP, a trusted upstream issuer configured inline.

const mailAPI = "https://api.example.com/mail"

// requirePostgres skips a test that is about PostgreSQL only.
func requirePostgres(t testing.TB) {
	t.Helper()
	if os.Getenv(dbtest.TestDatabaseURLEnv) == "" {
		t.Skipf("multi-node and fault tests need PostgreSQL: set %s (e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable); CI always sets it", dbtest.TestDatabaseURLEnv)
	}
}

// testIdP is the upstream identity provider whose user tokens the nodes trust.
type testIdP struct {
	iss  string
	key  jwk.Key
	jwks string
}

func newTestIdP(t testing.TB) *testIdP {
	t.Helper()
	raw, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := jwk.FromRaw(raw)
	if err != nil {
		t.Fatal(err)
	}
	_ = k.Set(jwk.KeyIDKey, "idp-key-1")
	_ = k.Set(jwk.AlgorithmKey, jwa.ES256)
	pub, err := k.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	set := jwk.NewSet()
	_ = set.AddKey(pub)
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return &testIdP{iss: "https://idp.test.example", key: k, jwks: string(b)}
}

// userToken signs a user's access token for mandate (aud = mandate's issuer).
// It never calls t.Fatal, so workers may use it.
func (p *testIdP) userToken(aud, sub, scope string) (string, error) {
	now := time.Now()
	tok, err := jwt.NewBuilder().Issuer(p.iss).Subject(sub).Audience([]string{aud}).
		IssuedAt(now).Expiration(now.Add(time.Hour)).Claim("scope", scope).Build()
	if err != nil {
		return "", err
	}
	b, err := jwt.Sign(tok, jwt.WithKey(jwa.ES256, p.key))
	return string(b), err
}

func (p *testIdP) mustUserToken(t testing.TB, aud, sub, scope string) string {
	t.Helper()
	s, err := p.userToken(aud, sub, scope)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// nodeSpec describes one node of a cluster.
type nodeSpec struct {
	ln     net.Listener
	issuer string
	dsn    string
	idp    *testIdP
	logs   io.Writer // nil: warnings to stderr under -v, else nothing
	tune   func(*config.Config)
}

// buildApp builds a node; it reports errors instead of failing the test, so
// that nodes can start concurrently.
func buildApp(ctx context.Context, tempDir string, s nodeSpec) (*app.App, config.Config, error) {
	cfg := config.Default()
	cfg.Listen = s.ln.Addr().String()
	cfg.Issuer = s.issuer
	cfg.DataDir = tempDir
	cfg.DatabaseURL = s.dsn
	cfg.Upstream = []broker.TrustedIssuer{{Issuer: s.idp.iss, JWKS: s.idp.jwks, Audience: s.issuer, Algorithms: []string{"ES256"}}}
	if s.tune != nil {
		s.tune(&cfg)
	}
	if err := cfg.Finish(); err != nil {
		return nil, cfg, err
	}
	var h slog.Handler
	switch {
	case s.logs != nil:
		h = slog.NewTextHandler(s.logs, &slog.HandlerOptions{Level: slog.LevelDebug})
	case testing.Verbose():
		h = slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})
	default:
		h = slog.NewTextHandler(io.Discard, nil)
	}
	a, err := app.New(ctx, cfg, app.Options{KEK: testKEK, AdminKey: testAdminKey, Logger: slog.New(h).With("node", cfg.Listen)})
	return a, cfg, err
}

// cnode is one running node, driven over real HTTP with bounded requests.
type cnode struct {
	t    testing.TB
	name string
	url  string
	cfg  config.Config
	app  *app.App
	srv  *httptest.Server
	hc   *http.Client
}

// serveNode serves a on s.ln and stops both at cleanup.
func serveNode(t testing.TB, name string, a *app.App, cfg config.Config, ln net.Listener) *cnode {
	t.Helper()
	srv := httptest.NewUnstartedServer(a.Handler())
	srv.Listener.Close()
	srv.Listener = ln
	// As cmd/mandate serve configures its server.
	srv.Config.ReadHeaderTimeout = cfg.HTTP.ReadHeaderTimeout
	srv.Config.ReadTimeout = cfg.HTTP.ReadTimeout
	srv.Config.WriteTimeout = cfg.HTTP.WriteTimeout
	srv.Config.IdleTimeout = cfg.HTTP.IdleTimeout
	srv.Start()
	t.Cleanup(func() { srv.Close(); a.Close() })
	return &cnode{t: t, name: name, url: "http://" + ln.Addr().String(), cfg: cfg, app: a, srv: srv, hc: newTestHTTPClient(10 * time.Second)}
}

func newTestHTTPClient(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{MaxIdleConnsPerHost: 64, MaxConnsPerHost: 256}}
}

// startNodes starts n nodes sharing dsn and issuer (issuer "" means the first
// node's URL), all at once, as a deployment's replicas start.
func startNodes(t testing.TB, n int, dsn, issuer string, idp *testIdP, tune func(i int, c *config.Config), logs io.Writer) []*cnode {
	t.Helper()
	lns := make([]net.Listener, n)
	for i := range lns {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns[i] = ln
	}
	if issuer == "" {
		issuer = "http://" + lns[0].Addr().String()
	}
	type built struct {
		a   *app.App
		cfg config.Config
		err error
	}
	out := make([]built, n)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for i := range n {
		dir := t.TempDir()
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := nodeSpec{ln: lns[i], issuer: issuer, dsn: dsn, idp: idp, logs: logs}
			if tune != nil {
				s.tune = func(c *config.Config) { tune(i, c) }
			}
			a, cfg, err := buildApp(ctx, dir, s)
			out[i] = built{a, cfg, err}
		}()
	}
	wg.Wait()
	var errs []error
	for i, b := range out {
		if b.err != nil {
			errs = append(errs, fmt.Errorf("node %d: %w", i+1, b.err))
		}
	}
	if len(errs) > 0 {
		for i, b := range out {
			if b.a != nil {
				b.a.Close()
			}
			lns[i].Close()
		}
		t.Fatalf("start nodes: %v", errors.Join(errs...))
	}
	nodes := make([]*cnode, n)
	for i, b := range out {
		nodes[i] = serveNode(t, fmt.Sprintf("node%d", i+1), b.a, b.cfg, lns[i])
	}
	return nodes
}

// hresp is one HTTP answer (or the transport error).
type hresp struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
	dur    time.Duration
	err    error
}

func (r hresp) code() string { s, _ := r.body["error"].(string); return s }

func (r hresp) String() string {
	if r.err != nil {
		return "transport error: " + r.err.Error()
	}
	return fmt.Sprintf("%d %s", r.status, strings.TrimSpace(r.raw))
}

// call sends one request; it never fails the test, so workers may use it.
func (n *cnode) call(ctx context.Context, method, path, auth, contentType string, body []byte) hresp {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, n.url+path, rd)
	if err != nil {
		return hresp{err: err}
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	start := time.Now()
	res, err := n.hc.Do(req)
	if err != nil {
		return hresp{err: err, dur: time.Since(start)}
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	r := hresp{status: res.StatusCode, header: res.Header, raw: string(b), dur: time.Since(start), err: err}
	_ = json.Unmarshal(b, &r.body)
	return r
}

func (n *cnode) callJSON(ctx context.Context, method, path, auth string, v any) hresp {
	var b []byte
	ct := ""
	if v != nil {
		b, _ = json.Marshal(v)
		ct = "application/json"
	}
	return n.call(ctx, method, path, auth, ct, b)
}

func basic(id, secret string) string {
	req, _ := http.NewRequest("GET", "/", nil)
	req.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
	return req.Header.Get("Authorization")
}

func (n *cnode) callForm(ctx context.Context, path, clientID, secret string, v url.Values) hresp {
	auth := ""
	if clientID != "" {
		auth = basic(clientID, secret)
	}
	return n.call(ctx, "POST", path, auth, "application/x-www-form-urlencoded", []byte(v.Encode()))
}

// must fails the test on a transport error; for the test's own goroutine.
func (n *cnode) must(r hresp) hresp {
	n.t.Helper()
	if r.err != nil {
		n.t.Fatalf("%s: %v", n.name, r.err)
	}
	return r
}

func (n *cnode) form(path, clientID, secret string, v url.Values) hresp {
	n.t.Helper()
	return n.must(n.callForm(context.Background(), path, clientID, secret, v))
}

func (n *cnode) json(method, path, auth string, v any) hresp {
	n.t.Helper()
	return n.must(n.callJSON(context.Background(), method, path, auth, v))
}

func (n *cnode) adminJSON(method, path string, v any) hresp {
	n.t.Helper()
	return n.json(method, "/admin/v1"+path, "Bearer "+testAdminKey, v)
}

func (n *cnode) registerClient(body map[string]any) client {
	n.t.Helper()
	r := n.adminJSON("POST", "/clients", body)
	if r.status != http.StatusCreated {
		n.t.Fatalf("%s: create client: %s", n.name, r)
	}
	s, _ := r.body["client_secret"].(string)
	return client{id: r.body["client_id"].(string), secret: s}
}

func (n *cnode) createGrant(userTok string, body map[string]any) string {
	n.t.Helper()
	r := n.json("POST", "/v1/grants", "Bearer "+userTok, body)
	if r.status != http.StatusCreated {
		n.t.Fatalf("%s: create grant: %s", n.name, r)
	}
	return r.body["grant_id"].(string)
}

// exchange runs a token exchange and returns the issued token, failing on anything but 200.
func (n *cnode) exchange(c client, subject string, extra ...string) string {
	n.t.Helper()
	r := n.form("/oauth2/token", c.id, c.secret, exchangeForm(subject, extra...))
	if r.status != http.StatusOK {
		n.t.Fatalf("%s: exchange by %s: %s", n.name, c.id, r)
	}
	return r.body["access_token"].(string)
}

// active introspects tok at n as client c.
func (n *cnode) active(ctx context.Context, c client, tok string) (bool, error) {
	r := n.callForm(ctx, "/oauth2/introspect", c.id, c.secret, url.Values{"token": {tok}})
	if r.err != nil {
		return false, r.err
	}
	if r.status != http.StatusOK {
		return false, fmt.Errorf("introspect: %s", r)
	}
	return r.body["active"] == true, nil
}

// eventually polls cond every 10ms until it holds, failing the test if it does
// not within `within`; it returns how long it took. cond gets a context bounded
// by the remaining time.
func eventually(t testing.TB, within time.Duration, what string, cond func(ctx context.Context) bool) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(within)
	for {
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		ok := cond(ctx)
		cancel()
		if ok {
			return time.Since(start)
		}
		if !time.Now().Before(deadline) {
			t.Fatalf("%s: not seen within %s", what, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// openDirect opens the schema behind dsn for the test's own checks.
func openDirect(t testing.TB, dsn string) *db.DB {
	t.Helper()
	d, err := db.Open(context.Background(), dsn, db.Options{MaxConns: 4})
	if err != nil {
		t.Fatalf("open database: %v", err)
	}
	t.Cleanup(d.Close)
	return d
}

func countRows(t testing.TB, d *db.DB, query string, args ...any) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var n int64
	if err := d.QueryRow(ctx, query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

func grantBody(clientID string, scopes []string, subAgents ...string) map[string]any {
	return map[string]any{
		"client_id": clientID, "scopes": scopes, "resources": []string{"https://api.example.com/*"},
		"allowed_sub_agents": subAgents, "expires_at": time.Now().Add(24 * time.Hour).UTC().Format(time.RFC3339),
	}
}

// jwksKIDs lists the kids a node publishes.
func jwksKIDs(ctx context.Context, n *cnode) ([]string, error) {
	r := n.call(ctx, "GET", "/jwks.json", "", "", nil)
	if r.err != nil {
		return nil, r.err
	}
	if r.status != http.StatusOK {
		return nil, fmt.Errorf("jwks: %s", r)
	}
	var kids []string
	ks, _ := r.body["keys"].([]any)
	for _, k := range ks {
		m, _ := k.(map[string]any)
		if kid, _ := m["kid"].(string); kid != "" {
			kids = append(kids, kid)
		}
	}
	return kids, nil
}

// adminKeys returns the key list as the admin API reports it.
func adminKeys(n *cnode) []map[string]any {
	n.t.Helper()
	r := n.adminJSON("GET", "/keys", nil)
	if r.status != http.StatusOK {
		n.t.Fatalf("%s: list keys: %s", n.name, r)
	}
	var out []map[string]any
	ks, _ := r.body["keys"].([]any)
	for _, k := range ks {
		m, _ := k.(map[string]any)
		out = append(out, m)
	}
	return out
}

func keysInState(ks []map[string]any, state string) []string {
	var kids []string
	for _, k := range ks {
		if k["state"] == state {
			kids = append(kids, k["kid"].(string))
		}
	}
	return kids
}

// TestMultiNode runs three nodes on one PostgreSQL schema behind one issuer URL
// and checks that what one node does, the others honour.
func TestMultiNode(t *testing.T) {
	requirePostgres(t)
	dsn := dbtest.SchemaURL(t)
	idp := newTestIdP(t)
	nodes := startNodes(t, 3, dsn, "", idp, nil, nil)
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	issuer := n1.url
	for _, n := range nodes {
		md := n.json("GET", "/.well-known/oauth-authorization-server", "", nil)
		if md.status != 200 || md.body["issuer"] != issuer {
			t.Fatalf("%s metadata: got %s, want issuer %s", n.name, md, issuer)
		}
	}
	// Three nodes starting at once on an empty schema made exactly one signing key.
	if active := keysInState(adminKeys(n2), "active"); len(active) != 1 {
		t.Fatalf("after a concurrent start: active keys %v, want exactly one", active)
	}

	agentA := n1.registerClient(map[string]any{"client_id": "agent-a", "name": "Agent A", "type": "agent",
		"scopes": []string{"mail:read", "calendar:read"}, "audiences": []string{mailAPI}})
	agentB := n1.registerClient(map[string]any{"client_id": "agent-b", "name": "Agent B", "type": "agent",
		"scopes": []string{"mail:read"}, "audiences": []string{mailAPI}})
	alice := idp.mustUserToken(t, issuer, "alice", "mail:read calendar:read")

	t.Run("client registered on node 1 authenticates on node 3", func(t *testing.T) {
		r := n3.form("/oauth2/introspect", agentA.id, agentA.secret, url.Values{"token": {"not-a-token"}})
		if r.status != 200 || r.body["active"] != false {
			t.Fatalf("node3 introspect as %s: got %s, want 200 {active:false}", agentA.id, r)
		}
		wantError(t, toResp(n3.form("/oauth2/introspect", agentA.id, "wrong-secret", url.Values{"token": {"x"}})), 401, "invalid_client")

		// A secret rotated on node 1 stops working on node 3 (registry NOTIFY; at
		// worst the client cache TTL).
		c := n1.registerClient(map[string]any{"client_id": "agent-rotating", "name": "Rotating", "type": "agent",
			"scopes": []string{"mail:read"}, "audiences": []string{mailAPI}})
		if r := n3.form("/oauth2/introspect", c.id, c.secret, url.Values{"token": {"x"}}); r.status != 200 {
			t.Fatalf("node3 before rotation: %s", r)
		}
		rot := n1.adminJSON("POST", "/clients/"+c.id+"/rotate-secret", nil)
		if rot.status != 200 {
			t.Fatalf("rotate secret: %s", rot)
		}
		newSecret, _ := rot.body["client_secret"].(string)
		took := eventually(t, 5*time.Second, "old secret refused on node 3", func(ctx context.Context) bool {
			r := n3.callForm(ctx, "/oauth2/introspect", c.id, c.secret, url.Values{"token": {"x"}})
			return r.err == nil && r.status == 401
		})
		t.Logf("a secret rotated on node 1 was refused on node 3 after %s", took)
		if r := n3.form("/oauth2/introspect", c.id, newSecret, url.Values{"token": {"x"}}); r.status != 200 {
			t.Fatalf("node3 with the new secret: %s", r)
		}
	})

	var grantID string
	var tokA, tokAB, tokB string
	t.Run("token minted on node 1 introspects on node 2 and is re-exchanged on node 3", func(t *testing.T) {
		// Node 1 learns there is no grant (and may cache that) ...
		wantError(t, toResp(n1.form("/oauth2/token", agentA.id, agentA.secret, exchangeForm(alice, "scope", "mail:read", "resource", mailAPI))), 400, "invalid_grant")
		// ... alice grants on node 2, and node 1 follows.
		grantID = n2.createGrant(alice, grantBody(agentA.id, []string{"mail:read", "calendar:read"}, agentB.id))
		took := eventually(t, 2*time.Second, "grant created on node 2 usable on node 1", func(ctx context.Context) bool {
			r := n1.callForm(ctx, "/oauth2/token", agentA.id, agentA.secret, exchangeForm(alice, "scope", "mail:read", "resource", mailAPI))
			if r.status == 200 {
				tokA = r.body["access_token"].(string)
			}
			return r.status == 200
		})
		t.Logf("a grant created on node 2 was usable on node 1 after %s", took)
		if c := claimsOf(t, tokA); c["iss"] != issuer || c["grant_id"] != grantID {
			t.Fatalf("claims of node 1's token: %v", c)
		}
		tokAB = n1.exchange(agentA, tokA, "audience", agentB.id)

		for _, tok := range []string{tokA, tokAB} {
			in := n2.form("/oauth2/introspect", agentB.id, agentB.secret, url.Values{"token": {tok}})
			if in.status != 200 || in.body["active"] != true || in.body["iss"] != issuer {
				t.Fatalf("node2 introspects node 1's token: %s", in)
			}
		}
		tokB = n3.exchange(agentB, tokAB, "scope", "mail:read", "resource", mailAPI)
		cb := claimsOf(t, tokB)
		act, _ := cb["act"].(map[string]any)
		inner, _ := act["act"].(map[string]any)
		if cb["iss"] != issuer || act["sub"] != agentB.id || inner["sub"] != agentA.id || cb["grant_id"] != grantID || cb["depth"] != float64(2) {
			t.Fatalf("node3 re-exchange claims: %v", cb)
		}
		in := n1.form("/oauth2/introspect", agentA.id, agentA.secret, url.Values{"token": {tokB}})
		if in.body["active"] != true {
			t.Fatalf("node1 introspects node 3's token: %s", in)
		}
	})
	if tokA == "" || tokB == "" {
		t.Fatal("the delegation chain was not built; later sub-tests depend on it")
	}

	t.Run("revocation on node 2 reaches nodes 1 and 3 within 1s", func(t *testing.T) {
		rv := n2.form("/oauth2/revoke", agentA.id, agentA.secret, url.Values{"token": {tokA}})
		if rv.status != 200 {
			t.Fatalf("node2 revoke: %s", rv)
		}
		for _, n := range []*cnode{n1, n3} {
			for name, tok := range map[string]string{"A": tokA, "A→B": tokAB, "B (descendant)": tokB} {
				took := eventually(t, time.Second, n.name+" sees token "+name+" revoked", func(ctx context.Context) bool {
					on, err := n.active(ctx, agentA, tok)
					return err == nil && !on
				})
				t.Logf("token revoked on node2: %s inactive on %s after %s", name, n.name, took)
			}
		}
		wantError(t, toResp(n3.form("/oauth2/token", agentB.id, agentB.secret, exchangeForm(tokAB, "scope", "mail:read"))), 400, "invalid_request")

		// Fresh tokens under the grant on nodes 1 and 3, then alice revokes the grant on node 2.
		t1 := n1.exchange(agentA, alice, "scope", "mail:read", "resource", mailAPI)
		t3 := n3.exchange(agentA, alice, "scope", "calendar:read", "resource", mailAPI)
		if d := n2.json("DELETE", "/v1/grants/"+grantID, "Bearer "+alice, nil); d.status != 204 {
			t.Fatalf("node2 grant revoke: %s", d)
		}
		for _, n := range []*cnode{n1, n3} {
			for name, tok := range map[string]string{"minted on node1": t1, "minted on node3": t3} {
				took := eventually(t, time.Second, n.name+" sees the grant revoked ("+name+")", func(ctx context.Context) bool {
					on, err := n.active(ctx, agentA, tok)
					return err == nil && !on
				})
				t.Logf("grant revoked on node2: token %s inactive on %s after %s", name, n.name, took)
			}
			took := eventually(t, time.Second, n.name+" refuses exchanges under the revoked grant", func(ctx context.Context) bool {
				r := n.callForm(ctx, "/oauth2/token", agentA.id, agentA.secret, exchangeForm(alice, "scope", "mail:read", "resource", mailAPI))
				return r.err == nil && r.status == 400 && r.code() == "invalid_grant"
			})
			t.Logf("grant revoked on node2: exchange refused on %s after %s", n.name, took)
		}
	})

	t.Run("key rotation on one node reaches every node", func(t *testing.T) {
		before := keysInState(adminKeys(n1), "active")
		if len(before) != 1 {
			t.Fatalf("active keys before: %v", before)
		}
		bob := idp.mustUserToken(t, issuer, "bob", "mail:read")
		n2.createGrant(bob, grantBody(agentA.id, []string{"mail:read"}))
		var tokOld string
		eventually(t, 2*time.Second, "node 1 sees bob's grant", func(ctx context.Context) bool {
			r := n1.callForm(ctx, "/oauth2/token", agentA.id, agentA.secret, exchangeForm(bob, "scope", "mail:read", "resource", mailAPI))
			if r.status == 200 {
				tokOld = r.body["access_token"].(string)
			}
			return r.status == 200
		})

		rot := rotateNow(t, n2)
		newKID, _ := rot.body["active_kid"].(string)
		if newKID == "" || newKID == before[0] {
			t.Fatalf("rotate: %s (old active %s)", rot, before[0])
		}
		// The rotating node signs with the new key at once; the others verify its
		// tokens as soon as they have reloaded (NOTIFY; at worst their 10s reload).
		tok2 := n2.exchange(agentA, bob, "scope", "mail:read", "resource", mailAPI)
		if kid := headerOf(t, tok2)["kid"]; kid != newKID {
			t.Fatalf("node2 signed after rotating with kid %v, want %s", kid, newKID)
		}
		for _, n := range []*cnode{n1, n3} {
			took := eventually(t, time.Second, n.name+" verifies node 2's first token under the new key", func(ctx context.Context) bool {
				on, err := n.active(ctx, agentA, tok2)
				return err == nil && on
			})
			t.Logf("a token signed with the new key on node2 right after rotation verified on %s after %s", n.name, took)
		}
		for _, n := range nodes {
			took := eventually(t, time.Second, n.name+" publishes the new key and the retired one", func(ctx context.Context) bool {
				kids, err := jwksKIDs(ctx, n)
				return err == nil && slices.Contains(kids, newKID) && slices.Contains(kids, before[0])
			})
			t.Logf("%s publishes the new key (and still the retired one) after %s", n.name, took)
		}
		// Every node now signs with the new key, and every node verifies every
		// token, including one signed before the rotation.
		toks := map[string]string{"signed on node1 before rotation": tokOld}
		for _, n := range nodes {
			var tok string
			eventually(t, time.Second, n.name+" signs with the new key", func(ctx context.Context) bool {
				r := n.callForm(ctx, "/oauth2/token", agentA.id, agentA.secret, exchangeForm(bob, "scope", "mail:read", "resource", mailAPI))
				if r.status != 200 {
					return false
				}
				tok = r.body["access_token"].(string)
				return headerOf(t, tok)["kid"] == newKID
			})
			toks["signed on "+n.name+" after rotation"] = tok
		}
		for name, tok := range toks {
			for _, n := range nodes {
				if on, err := n.active(context.Background(), agentA, tok); err != nil || !on {
					t.Fatalf("token %s: on %s active=%v err=%v, want active", name, n.name, on, err)
				}
			}
		}
	})

	t.Run("concurrent rotation on all three nodes leaves one active key", func(t *testing.T) {
		d := openDirect(t, dsn)
		exclusive := 0 // rounds where one node rotated and the other two were refused
		for round := 1; round <= 5; round++ {
			keysBefore := countRows(t, d, `SELECT COUNT(*) FROM signing_keys`)
			start := make(chan struct{})
			res := make([]hresp, len(nodes))
			var wg sync.WaitGroup
			for i, n := range nodes {
				wg.Add(1)
				go func() {
					defer wg.Done()
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					<-start
					res[i] = n.callJSON(ctx, "POST", "/admin/v1/keys/rotate?now=true", "Bearer "+testAdminKey, nil)
				}()
			}
			close(start)
			wg.Wait()
			won, lost := 0, 0
			for i, r := range res {
				switch {
				case r.err != nil:
					t.Fatalf("%s rotate: %v", nodes[i].name, r.err)
				case r.status == 200:
					won++
				case r.status == 409 && r.code() == "conflict":
					lost++
				default:
					t.Fatalf("%s rotate: got %s, want 200 or 409 conflict", nodes[i].name, r)
				}
			}
			created := countRows(t, d, `SELECT COUNT(*) FROM signing_keys`) - keysBefore
			active := countRows(t, d, `SELECT COUNT(*) FROM signing_keys WHERE state = 'active'`)
			t.Logf("round %d: %d node(s) rotated, %d got 409 (another node holds the key lock); %d key(s) created; %d active", round, won, lost, created, active)
			if active != 1 {
				t.Fatalf("round %d: %d active keys after concurrent rotation, want exactly 1", round, active)
			}
			if created != int64(won) {
				t.Fatalf("round %d: %d keys created by %d successful rotations, want one each", round, created, won)
			}
			if won == 0 {
				// Another package's test in the same database may hold the
				// (database-wide) advisory lock; try again.
				continue
			}
			if won == 1 && lost == len(nodes)-1 {
				exclusive++
			}
			var activeKID string
			if err := d.QueryRow(context.Background(), `SELECT kid FROM signing_keys WHERE state = 'active'`).Scan(&activeKID); err != nil {
				t.Fatal(err)
			}
			for _, n := range nodes {
				eventually(t, time.Second, n.name+" publishes the winner's key", func(ctx context.Context) bool {
					kids, err := jwksKIDs(ctx, n)
					return err == nil && slices.Contains(kids, activeKID)
				})
			}
		}
		// Calls that do not overlap each rotate (the lock is tried, not waited
		// for), so only some rounds show the exclusion; at least one must.
		if exclusive == 0 {
			t.Fatalf("in no round did exactly one node rotate while the others got 409: the key lock did not exclude concurrent rotations")
		}
	})

	t.Run("policy activation propagates", func(t *testing.T) {
		if r := n1.adminJSON("GET", "/policies", nil); r.status == http.StatusNotFound {
			t.Skipf("GET /admin/v1/policies answers 404: the policy admin API (server.RegisterPolicyAdmin) is not mounted by internal/app yet, so there is no activation to propagate")
		}
		blocked := n1.registerClient(map[string]any{"client_id": "agent-blocked", "name": "Blocked", "type": "agent",
			"scopes": []string{"mail:read"}, "audiences": []string{mailAPI}})
		carol := idp.mustUserToken(t, issuer, "carol", "mail:read")
		n1.createGrant(carol, grantBody(blocked.id, []string{"mail:read"}))
		eventually(t, 2*time.Second, "node 3 serves agent-blocked before the new bundle", func(ctx context.Context) bool {
			r := n3.callForm(ctx, "/oauth2/token", blocked.id, blocked.secret, exchangeForm(carol, "scope", "mail:read", "resource", mailAPI))
			return r.status == 200
		})
		files := policies.DefaultFiles()
		files["block.rego"] = "package mandate.exchange\n\ndeny contains \"agent-blocked is blocked by the multi-node test\" if {\n\tinput.client.id == \"agent-blocked\"\n}\n"
		const version = "multinode-block-1"
		if r := n1.adminJSON("POST", "/policies", map[string]any{"version": version, "files": files}); r.status != http.StatusCreated {
			t.Fatalf("push bundle on node1: %s", r)
		}
		if r := n1.adminJSON("POST", "/policies/"+version+"/activate", nil); r.status != http.StatusOK {
			t.Fatalf("activate on node1: %s", r)
		}
		for _, n := range nodes {
			took := eventually(t, time.Second, n.name+" runs the activated bundle", func(context.Context) bool {
				b := n.app.Policies.Active()
				return b != nil && b.Version == version
			})
			t.Logf("a bundle activated on node1 was active on %s after %s", n.name, took)
			r := n.form("/oauth2/token", blocked.id, blocked.secret, exchangeForm(carol, "scope", "mail:read", "resource", mailAPI))
			if r.status != 400 || !strings.Contains(r.raw, "blocked by the multi-node test") {
				t.Fatalf("%s under the new bundle: got %s, want the new rule's denial", n.name, r)
			}
		}
	})
}

// rotateNow calls POST /admin/v1/keys/rotate?now=true, retrying briefly on 409:
// the advisory lock is database-wide, so another test may hold it.
func rotateNow(t testing.TB, n *cnode) hresp {
	t.Helper()
	var r hresp
	for i := 0; i < 50; i++ {
		r = n.adminJSON("POST", "/keys/rotate?now=true", nil)
		if r.status != http.StatusConflict {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if r.status != 200 {
		t.Fatalf("%s rotate: %s", n.name, r)
	}
	return r
}

// toResp adapts an hresp to e2e_test.go's resp for wantError.
func toResp(r hresp) resp {
	return resp{status: r.status, header: r.header, body: r.body, raw: r.raw}
}
