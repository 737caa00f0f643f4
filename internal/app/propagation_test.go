package app_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mandate-dev/mandate/broker/clients"
	"github.com/mandate-dev/mandate/grants"
	"github.com/mandate-dev/mandate/internal/app"
	"github.com/mandate-dev/mandate/internal/config"
	"github.com/mandate-dev/mandate/internal/db/dbtest"
	"github.com/mandate-dev/mandate/internal/devissuer"
)

// TestPropagationRevocationLatency measures how long a revocation acknowledged
// by node A takes to reach node B's in-memory revocation set (what B's
// exchange, introspection and revocation feed consult). It logs the figures and
// asserts only DESIGN.md's bound: every node within a second.
//
//	MANDATE_TEST_DATABASE_URL=... go test -run TestPropagationRevocationLatency -v ./internal/app/
func TestPropagationRevocationLatency(t *testing.T) {
	requirePostgres(t)
	const tokenRevocations, grantRevocations = 100, 20
	dsn := dbtest.SchemaURL(t)
	idp := newTestIdP(t)
	nodes := startNodes(t, 2, dsn, "", idp, nil, nil)
	a, b := nodes[0], nodes[1]
	issuer := a.url
	agent := a.registerClient(map[string]any{"client_id": "agent-p", "name": "Agent P", "type": "agent",
		"scopes": []string{"mail:read"}, "audiences": []string{mailAPI}})
	ctx := context.Background()

	// Tokens to revoke (minted on A), and users whose grants will be revoked, each with a token.
	alice := idp.mustUserToken(t, issuer, "alice", "mail:read")
	a.createGrant(alice, grantBody(agent.id, []string{"mail:read"}))
	toks := make([]string, tokenRevocations)
	for i := range toks {
		toks[i] = a.exchange(agent, alice, "scope", "mail:read", "resource", mailAPI)
	}
	type grantCase struct{ user, grantID, tok string }
	gcs := make([]grantCase, grantRevocations)
	for i := range gcs {
		u := idp.mustUserToken(t, issuer, fmt.Sprintf("user-%d", i), "mail:read")
		gid := a.createGrant(u, grantBody(agent.id, []string{"mail:read"}))
		gcs[i] = grantCase{user: u, grantID: gid, tok: a.exchange(agent, u, "scope", "mail:read", "resource", mailAPI)}
	}

	// seen polls B's in-memory set every 100µs, up to 1s after the request was sent.
	seen := func(sent time.Time, revoked func() bool) (time.Time, bool) {
		deadline := sent.Add(time.Second)
		for {
			if revoked() {
				return time.Now(), true
			}
			if time.Now().After(deadline) {
				return time.Time{}, false
			}
			time.Sleep(100 * time.Microsecond)
		}
	}
	measure := func(kind string, n int, revoke func(i int) (hresp, func() bool)) (fromAck, fromSend []time.Duration) {
		for i := range n {
			sent := time.Now()
			r, revoked := revoke(i)
			acked := time.Now()
			if r.err != nil || r.status >= 300 {
				t.Fatalf("%s revocation %d on %s: %s", kind, i, a.name, r)
			}
			at, ok := seen(sent, revoked)
			if !ok {
				t.Fatalf("%s revocation %d acknowledged by %s was not seen by %s within 1s", kind, i, a.name, b.name)
			}
			fromSend = append(fromSend, at.Sub(sent))
			fromAck = append(fromAck, max(0, at.Sub(acked)))
		}
		return fromAck, fromSend
	}

	tokAck, tokSend := measure("token", tokenRevocations, func(i int) (hresp, func() bool) {
		c := claimsOf(t, toks[i])
		jti := c["jti"].(string)
		r := a.callForm(ctx, "/oauth2/revoke", agent.id, agent.secret, url.Values{"token": {toks[i]}})
		return r, func() bool { _, rev := b.app.Ledger.Revoked(jti, "", nil); return rev }
	})
	grAck, grSend := measure("grant", grantRevocations, func(i int) (hresp, func() bool) {
		gc := gcs[i]
		r := a.callJSON(ctx, "DELETE", "/v1/grants/"+gc.grantID, "Bearer "+gc.user, nil)
		return r, func() bool { return b.app.Ledger.GrantRevoked(gc.grantID) }
	})
	report := func(what string, d []time.Duration) {
		p50, p99, mx := percentiles(d)
		t.Logf("%-48s n=%3d  p50=%-10s p99=%-10s max=%s", what, len(d), p50, p99, mx)
	}
	report("token revocation, node A ack → node B memory", tokAck)
	report("token revocation, node A request → node B memory", tokSend)
	report("grant revocation, node A ack → node B memory", grAck)
	report("grant revocation, node A request → node B memory", grSend)

	// A burst: burstSize revocations sent by 8 concurrent clients at once.
	const burstSize, workers = 300, 8
	burst := make([]string, burstSize)
	for i := range burst {
		burst[i] = a.exchange(agent, alice, "scope", "mail:read", "resource", mailAPI)
	}
	type ack struct {
		jti   string
		acked time.Time
	}
	acks := make(chan ack, burstSize)
	errs := make(chan hresp, burstSize)
	var next atomic.Int64
	var wg sync.WaitGroup
	burstStart := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= burstSize {
					return
				}
				jti, _ := claimsOfToken(burst[i])
				rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				r := a.callForm(rctx, "/oauth2/revoke", agent.id, agent.secret, url.Values{"token": {burst[i]}})
				cancel()
				if r.err != nil || r.status != 200 {
					errs <- r
					continue
				}
				acks <- ack{jti, time.Now()}
			}
		}()
	}
	// Watch B's memory while the burst runs.
	var burstLat []time.Duration
	var pending []ack
	collected := 0
	deadline := time.Now().Add(30 * time.Second)
	for collected < burstSize || len(pending) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("burst: %d of %d revocations acknowledged and seen in 30s", len(burstLat), burstSize)
		}
		for drained := false; !drained; {
			select {
			case k := <-acks:
				pending = append(pending, k)
				collected++
			case r := <-errs:
				t.Fatalf("burst revocation on %s: %s", a.name, r)
			default:
				drained = true
			}
		}
		rest := pending[:0]
		for _, k := range pending {
			if _, rev := b.app.Ledger.Revoked(k.jti, "", nil); rev {
				burstLat = append(burstLat, max(0, time.Since(k.acked)))
				continue
			}
			if time.Since(k.acked) > time.Second {
				t.Fatalf("burst: revocation %s acknowledged by %s not seen by %s within 1s", k.jti, a.name, b.name)
			}
			rest = append(rest, k)
		}
		pending = rest
		time.Sleep(200 * time.Microsecond)
	}
	wg.Wait()
	elapsed := time.Since(burstStart)
	report(fmt.Sprintf("burst of %d by %d clients, ack → node B memory", burstSize, workers), burstLat)
	t.Logf("burst: node A acknowledged %.0f revocations/s", float64(burstSize)/elapsed.Seconds())

	// And what a client of B sees: every revoked token and every token under a
	// revoked grant introspects inactive on B.
	for i, tok := range toks {
		if on, err := b.active(ctx, agent, tok); err != nil || on {
			t.Fatalf("token %d on %s after revocation: active=%v err=%v", i, b.name, on, err)
		}
	}
	for i, gc := range gcs {
		if on, err := b.active(ctx, agent, gc.tok); err != nil || on {
			t.Fatalf("token under revoked grant %d on %s: active=%v err=%v", i, b.name, on, err)
		}
	}
}

func claimsOfToken(tok string) (string, error) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return "", fmt.Errorf("not a JWS")
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", err
	}
	var c struct {
		JTI string `json:"jti"`
	}
	err = json.Unmarshal(b, &c)
	return c.JTI, err
}

// percentiles returns the nearest-rank p50 and p99 and the maximum.
func percentiles(d []time.Duration) (p50, p99, mx time.Duration) {
	if len(d) == 0 {
		return 0, 0, 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	rank := func(p float64) time.Duration {
		i := int(p*float64(len(s))+0.999999) - 1
		return s[min(max(i, 0), len(s)-1)]
	}
	return rank(0.50).Round(time.Microsecond), rank(0.99).Round(time.Microsecond), s[len(s)-1].Round(time.Microsecond)
}

// newBenchEnvDSN is bench_test.go's newBenchEnv on any database URL.
func newBenchEnvDSN(b *testing.B, users int, dsn func(dataDir string) string) *benchEnv {
	b.Helper()
	cfg := config.Default()
	cfg.Dev = true
	cfg.Issuer = "http://127.0.0.1:1"
	cfg.DataDir = b.TempDir()
	cfg.DatabaseURL = dsn(cfg.DataDir)
	if err := cfg.Finish(); err != nil {
		b.Fatal(err)
	}
	a, err := app.New(context.Background(), cfg, app.Options{KEK: testKEK, AdminKey: testAdminKey, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(a.Close)
	ctx := context.Background()
	env := &benchEnv{a: a, h: a.Handler(), agent: "bench-agent", resrc: mailAPI}
	env.secret, err = a.Clients.Create(ctx, &clients.Client{ID: env.agent, Name: "Bench", Type: "agent", AuthMethod: "client_secret_basic",
		Scopes: []string{"mail:read", "mail:write"}, Audiences: []string{env.resrc}})
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; i < users; i++ {
		sub := fmt.Sprintf("user-%d", i)
		tok, err := a.Dev.Mint(devissuer.UserToken{Subject: sub, Scopes: []string{"mail:read", "mail:write"}, TTL: time.Hour})
		if err != nil {
			b.Fatal(err)
		}
		env.users = append(env.users, tok)
		if _, err := a.Grants.Create(ctx, &grants.Grant{UserIssuer: a.Dev.Issuer(), UserSubject: sub, ClientID: env.agent,
			Scopes: []string{"mail:read"}, Resources: []string{env.resrc}, ExpiresAt: time.Now().Add(24 * time.Hour)}, grants.AdminActor); err != nil {
			b.Fatal(err)
		}
	}
	return env
}

func postgresBenchDSN(b *testing.B) func(string) string {
	requirePostgres(b)
	dsn := dbtest.SchemaURL(b)
	return func(string) string { return dsn }
}

func sqliteBenchDSN(dataDir string) string { return "sqlite:" + filepath.Join(dataDir, "m.db") }

// BenchmarkExchangePostgres is BenchmarkExchange on PostgreSQL: one full token
// exchange, in process. Compare with BenchmarkExchange (SQLite):
//
//	MANDATE_TEST_DATABASE_URL=... go test -run '^$' -bench 'Exchange(Parallel)?(Postgres)?$' -benchmem ./internal/app/
func BenchmarkExchangePostgres(b *testing.B) {
	env := newBenchEnvDSN(b, 100, postgresBenchDSN(b))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		env.exchange(b, env.users[i%len(env.users)])
	}
}

// BenchmarkExchangeParallelPostgres runs exchanges on every core against PostgreSQL.
func BenchmarkExchangeParallelPostgres(b *testing.B) {
	env := newBenchEnvDSN(b, 100, postgresBenchDSN(b))
	var n atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			env.exchange(b, env.users[int(n.Add(1))%len(env.users)])
		}
	})
}

// BenchmarkExchangeUncachedPostgres and BenchmarkExchangeUncachedSQLite make
// every exchange read the client and the grant from the database (their caches
// emptied before each one): the cost of a cache miss on each backend.
func BenchmarkExchangeUncachedPostgres(b *testing.B) {
	benchUncached(b, newBenchEnvDSN(b, 100, postgresBenchDSN(b)))
}

func BenchmarkExchangeUncachedSQLite(b *testing.B) {
	benchUncached(b, newBenchEnvDSN(b, 100, sqliteBenchDSN))
}

func benchUncached(b *testing.B, env *benchEnv) {
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		env.a.Clients.InvalidateAll()
		env.a.Grants.InvalidateAll()
		env.exchange(b, env.users[i%len(env.users)])
	}
}

// BenchmarkRevokePostgres is one durable token revocation through
// POST /oauth2/revoke (database write + NOTIFY), in process.
func BenchmarkRevokePostgres(b *testing.B) {
	env := newBenchEnvDSN(b, 1, postgresBenchDSN(b))
	benchRevoke(b, env)
}

// BenchmarkRevokeSQLite is BenchmarkRevokePostgres on SQLite.
func BenchmarkRevokeSQLite(b *testing.B) {
	benchRevoke(b, newBenchEnvDSN(b, 1, sqliteBenchDSN))
}

func benchRevoke(b *testing.B, env *benchEnv) {
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; {
		// Tokens are minted outside the timer, in chunks.
		b.StopTimer()
		chunk := make([]string, 0, min(256, b.N-i))
		for range cap(chunk) {
			chunk = append(chunk, benchMint(b, env))
		}
		b.StartTimer()
		for _, tok := range chunk {
			if rec := serveForm(env, "/oauth2/revoke", url.Values{"token": {tok}}); rec.Code != http.StatusOK {
				b.Fatalf("revoke: %d %s", rec.Code, rec.Body.String())
			}
			i++
		}
	}
}

func serveForm(env *benchEnv, path string, v url.Values) *httptest.ResponseRecorder {
	req := httptest.NewRequest("POST", path, strings.NewReader(v.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(env.agent, env.secret)
	rec := httptest.NewRecorder()
	env.h.ServeHTTP(rec, req)
	return rec
}

func benchMint(b *testing.B, env *benchEnv) string {
	rec := serveForm(env, "/oauth2/token", exchangeForm(env.users[0], "scope", "mail:read", "resource", env.resrc))
	var out struct {
		AccessToken string `json:"access_token"`
	}
	if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &out) != nil || out.AccessToken == "" {
		b.Fatalf("exchange: %d %s", rec.Code, rec.Body.String())
	}
	return out.AccessToken
}
