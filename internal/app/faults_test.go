package app_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mandate-dev/mandate/grants"
	"github.com/mandate-dev/mandate/internal/config"
	"github.com/mandate-dev/mandate/internal/db/dbtest"
	"github.com/mandate-dev/mandate/policies"
)

// PostgreSQL faults are simulated with pgProxy, a TCP proxy between the nodes
// and the shared test PostgreSQL: restarting the real server would disturb the
// other packages' tests running against it.
//
//   - Pause closes every proxied connection and refuses new ones (accepts and
//     closes them at once), as a PostgreSQL restart or crash does.
//   - Blackhole stops forwarding: existing connections stay open but nothing
//     passes, new ones are accepted and never answered, as a network partition
//     or a frozen server does.
//   - Resume forwards again (connections held by Blackhole are closed first).
type pgProxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	cond  *sync.Cond
	state proxyState
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

type proxyState int

const (
	proxyOpen proxyState = iota
	proxyPaused
	proxyBlackhole
	proxyClosed
)

// startPGProxy listens on a loopback port and forwards to the host of baseDSN.
func startPGProxy(t testing.TB, baseDSN string) *pgProxy {
	t.Helper()
	u, err := url.Parse(baseDSN)
	if err != nil {
		t.Fatalf("parse %s: %v", dbtest.TestDatabaseURLEnv, err)
	}
	target := u.Host
	if u.Port() == "" {
		target = net.JoinHostPort(u.Hostname(), "5432")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &pgProxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.cond = sync.NewCond(&p.mu)
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.Close)
	return p
}

// dsn returns dsn pointed at the proxy.
func (p *pgProxy) dsn(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		panic(err)
	}
	u.Host = p.ln.Addr().String()
	return u.String()
}

func (p *pgProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.state == proxyPaused || p.state == proxyClosed {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns[c] = struct{}{}
		p.wg.Add(1)
		p.mu.Unlock()
		go p.handle(c)
	}
}

func (p *pgProxy) handle(c net.Conn) {
	defer p.wg.Done()
	defer p.drop(c)
	if !p.flowing() { // black-holed: hold the connection, never dial
		return
	}
	up, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		return
	}
	p.mu.Lock()
	if p.state != proxyOpen {
		p.mu.Unlock()
		up.Close()
		return
	}
	p.conns[up] = struct{}{}
	p.mu.Unlock()
	defer p.drop(up)
	done := make(chan struct{}, 2)
	go func() { p.pipe(up, c); done <- struct{}{} }()
	go func() { p.pipe(c, up); done <- struct{}{} }()
	<-done
	c.Close()
	up.Close()
	<-done
}

func (p *pgProxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !p.flowing() {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// flowing waits while the proxy black-holes and reports whether bytes may pass.
func (p *pgProxy) flowing() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.state == proxyBlackhole {
		p.cond.Wait()
	}
	return p.state == proxyOpen
}

func (p *pgProxy) drop(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

func (p *pgProxy) closeAllLocked() {
	for c := range p.conns {
		c.Close()
	}
}

// Pause closes every proxied connection and refuses new ones.
func (p *pgProxy) Pause() { p.set(proxyPaused, true) }

// Blackhole stops forwarding without closing anything.
func (p *pgProxy) Blackhole() { p.set(proxyBlackhole, false) }

// Resume forwards again.
func (p *pgProxy) Resume() {
	p.mu.Lock()
	prev := p.state
	p.mu.Unlock()
	p.set(proxyOpen, prev == proxyBlackhole)
}

func (p *pgProxy) set(s proxyState, closeAll bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state == proxyClosed {
		return
	}
	p.state = s
	if closeAll {
		p.closeAllLocked()
	}
	p.cond.Broadcast()
}

// Close stops the proxy and every connection through it.
func (p *pgProxy) Close() {
	p.mu.Lock()
	if p.state == proxyClosed {
		p.mu.Unlock()
		return
	}
	p.state = proxyClosed
	p.ln.Close()
	p.closeAllLocked()
	p.cond.Broadcast()
	p.mu.Unlock()
	p.wg.Wait()
}

// syncBuffer collects the nodes' logs for the log-hygiene check.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// checkLogHygiene fails if the logs hold anything shaped like a token or a secret.
func checkLogHygiene(t *testing.T, logs string, secrets ...string) {
	t.Helper()
	for _, bad := range append([]string{"eyJ", "mnd_", string(testKEK)}, secrets...) {
		if bad == "" {
			continue
		}
		if i := strings.Index(logs, bad); i >= 0 {
			lo, hi := max(0, strings.LastIndexByte(logs[:i], '\n')+1), min(len(logs), i+200)
			t.Errorf("log hygiene: the logs contain %q (a token or a secret): %s", bad[:min(len(bad), 8)]+"…", logs[lo:hi])
		}
	}
}

// outcome is one request of the load.
type outcome struct {
	op         string // exchange, grant-create, grant-revoke, token-revoke
	node       string
	start, end time.Time
	status     int
	code       string
	raw        string
	retryAfter string
	err        error
	id         string // grant id or token jti acknowledged; issued token for exchange
}

func (o outcome) ok() bool { return o.err == nil && o.status >= 200 && o.status < 300 }

func (o outcome) unavailable() bool {
	return o.err == nil && o.status == http.StatusServiceUnavailable && o.code == "temporarily_unavailable"
}

func (o outcome) String() string {
	if o.err != nil {
		return fmt.Sprintf("%s on %s after %s: %v", o.op, o.node, o.end.Sub(o.start).Round(time.Millisecond), o.err)
	}
	return fmt.Sprintf("%s on %s after %s: %d %s", o.op, o.node, o.end.Sub(o.start).Round(time.Millisecond), o.status, strings.TrimSpace(o.raw))
}

// TestFaultPostgresOutageUnderLoad takes PostgreSQL away for 2s under a load of
// exchanges, grant creations, grant revocations and token revocations on two
// nodes, then brings it back. During the outage every request must be answered
// within database.query_timeout, either served (caches) or 503
// temporarily_unavailable, never 500 and never a hang; afterwards the nodes
// must serve again without restart, and everything acknowledged must be in
// the database.
func TestFaultPostgresOutageUnderLoad(t *testing.T) {
	requirePostgres(t)
	base := dbtest.SchemaURL(t)
	proxy := startPGProxy(t, base)
	idp := newTestIdP(t)
	logs := &syncBuffer{}
	nodes := startNodes(t, 2, proxy.dsn(base), "", idp, nil, logs)
	t.Cleanup(proxy.Resume) // runs before the nodes stop, so that they can flush
	// Some handlers log through slog's default logger: collect those lines too.
	prevLog := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	t.Cleanup(func() { slog.SetDefault(prevLog) })
	direct := openDirect(t, base)
	n1 := nodes[0]
	issuer := n1.url
	bound := n1.cfg.Database.QueryTimeout
	ctx := context.Background()

	agent := n1.registerClient(map[string]any{"client_id": "agent-load", "name": "Load", "type": "agent",
		"scopes": []string{"mail:read"}, "audiences": []string{mailAPI}})

	// Users whose grants stay: the exchange load.
	exUsers := make([]string, 8)
	for i := range exUsers {
		exUsers[i] = idp.mustUserToken(t, issuer, fmt.Sprintf("ex-%d", i), "mail:read")
		n1.createGrant(exUsers[i], grantBody(agent.id, []string{"mail:read"}))
	}
	// Tokens to revoke, and grants to revoke (created through the store for speed).
	var revTokens []string
	for i := range 400 {
		revTokens = append(revTokens, nodes[i%2].exchange(agent, exUsers[i%len(exUsers)], "scope", "mail:read", "resource", mailAPI))
	}
	type userGrant struct{ tok, id string }
	var revGrants []userGrant
	for i := range 400 {
		sub := fmt.Sprintf("rv-%d", i)
		g, err := n1.app.Grants.Create(ctx, &grants.Grant{UserIssuer: idp.iss, UserSubject: sub, ClientID: agent.id,
			Scopes: []string{"mail:read"}, Resources: []string{mailAPI}, ExpiresAt: time.Now().Add(24 * time.Hour)}, grants.AdminActor)
		if err != nil {
			t.Fatal(err)
		}
		revGrants = append(revGrants, userGrant{tok: idp.mustUserToken(t, issuer, sub, "mail:read"), id: g.ID})
	}

	var (
		mu       sync.Mutex
		outcomes []outcome
		stop     = make(chan struct{})
		wg       sync.WaitGroup
		nextTok  atomic.Int64
		nextGr   atomic.Int64
		nextUser atomic.Int64
	)
	record := func(o outcome) {
		mu.Lock()
		outcomes = append(outcomes, o)
		mu.Unlock()
	}
	worker := func(op string, n *cnode, pace time.Duration, do func(ctx context.Context) (hresp, string, bool)) {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			rctx, cancel := context.WithTimeout(ctx, 2*bound+5*time.Second)
			start := time.Now()
			r, id, more := do(rctx)
			cancel()
			if !more {
				return
			}
			record(outcome{op: op, node: n.name, start: start, end: time.Now(), status: r.status, code: r.code(), raw: r.raw,
				retryAfter: r.header.Get("Retry-After"), err: r.err, id: id})
			time.Sleep(pace)
		}
	}
	for i, n := range []*cnode{nodes[0], nodes[1], nodes[0], nodes[1]} {
		wg.Add(1)
		go worker("exchange", n, 10*time.Millisecond, func(ctx context.Context) (hresp, string, bool) {
			r := n.callForm(ctx, "/oauth2/token", agent.id, agent.secret, exchangeForm(exUsers[i], "scope", "mail:read", "resource", mailAPI))
			tok, _ := r.body["access_token"].(string)
			return r, tok, true
		})
	}
	for _, n := range nodes {
		wg.Add(3)
		go worker("grant-create", n, 10*time.Millisecond, func(ctx context.Context) (hresp, string, bool) {
			sub := fmt.Sprintf("new-%d", nextUser.Add(1))
			u, err := idp.userToken(issuer, sub, "mail:read")
			if err != nil {
				return hresp{err: err}, "", true
			}
			r := n.callJSON(ctx, "POST", "/v1/grants", "Bearer "+u, grantBody(agent.id, []string{"mail:read"}))
			id, _ := r.body["grant_id"].(string)
			return r, id, true
		})
		go worker("grant-revoke", n, 20*time.Millisecond, func(ctx context.Context) (hresp, string, bool) {
			i := int(nextGr.Add(1)) - 1
			if i >= len(revGrants) {
				return hresp{}, "", false
			}
			g := revGrants[i]
			return n.callJSON(ctx, "DELETE", "/v1/grants/"+g.id, "Bearer "+g.tok, nil), g.id, true
		})
		go worker("token-revoke", n, 20*time.Millisecond, func(ctx context.Context) (hresp, string, bool) {
			i := int(nextTok.Add(1)) - 1
			if i >= len(revTokens) {
				return hresp{}, "", false
			}
			return n.callForm(ctx, "/oauth2/revoke", agent.id, agent.secret, url.Values{"token": {revTokens[i]}}), revTokens[i], true
		})
	}

	time.Sleep(time.Second)
	pauseAt := time.Now()
	proxy.Pause()
	// As if the outage began just as the caches' entries lapsed: every client
	// and grant lookup during it must go to the database.
	for _, n := range nodes {
		n.app.Clients.InvalidateAll()
		n.app.Grants.InvalidateAll()
	}
	time.Sleep(2 * time.Second)
	resumeAt := time.Now()
	proxy.Resume()
	var readyAt time.Time
	for _, n := range nodes {
		took := eventually(t, 10*time.Second, n.name+" ready again after PostgreSQL came back", func(ctx context.Context) bool {
			r := n.call(ctx, "GET", "/readyz", "", "", nil)
			return r.err == nil && r.status == 200
		})
		t.Logf("%s: /readyz 200 again %s after PostgreSQL came back", n.name, took)
		if now := time.Now(); now.After(readyAt) {
			readyAt = now
		}
	}
	time.Sleep(1500 * time.Millisecond)
	close(stop)
	waitDone := make(chan struct{})
	go func() { wg.Wait(); close(waitDone) }()
	select {
	case <-waitDone:
	case <-time.After(2*bound + 10*time.Second):
		t.Fatal("load workers did not stop: a request hangs")
	}

	// Classify by phase.
	phase := func(o outcome) string {
		switch {
		case o.end.Before(pauseAt):
			return "1 before"
		case o.start.Before(resumeAt):
			return "2 outage"
		case o.start.Before(readyAt):
			return "3 recovering"
		default:
			return "4 after"
		}
	}
	dist := map[string]map[string]int{}
	var slowest time.Duration
	var bad []string
	for _, o := range outcomes {
		ph := phase(o)
		key := fmt.Sprintf("%-12s %-13s", ph, o.op)
		if dist[key] == nil {
			dist[key] = map[string]int{}
		}
		label := fmt.Sprintf("%d %s", o.status, o.code)
		if o.err != nil {
			label = "transport error"
		}
		policyTimeout := o.status == 400 && strings.Contains(o.raw, "policy could not be evaluated")
		if policyTimeout {
			// CPU starvation, not PostgreSQL: see TestFaultPolicyTimeoutIsTemporary.
			label += " (policy decision timed out)"
		}
		dist[key][label]++
		d := o.end.Sub(o.start)
		slowest = max(slowest, d)
		switch {
		case policyTimeout:
		case o.err != nil:
			bad = append(bad, "no answer: "+o.String())
		case d > bound:
			bad = append(bad, fmt.Sprintf("slower than database.query_timeout (%s): %s", bound, o))
		case o.status >= 500 && !o.unavailable():
			bad = append(bad, fmt.Sprintf("[%s] %s", ph, o))
		case o.unavailable() && o.retryAfter == "":
			bad = append(bad, fmt.Sprintf("[%s] 503 without Retry-After: %s", ph, o))
		case ph == "1 before" || ph == "4 after":
			if !o.ok() {
				bad = append(bad, fmt.Sprintf("[%s] not served with PostgreSQL up: %s", ph, o))
			}
		default:
			if !o.ok() && !o.unavailable() {
				bad = append(bad, fmt.Sprintf("[%s] want 2xx or 503 temporarily_unavailable: %s", ph, o))
			}
		}
	}
	keys := make([]string, 0, len(dist))
	for k := range dist {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	t.Logf("%d requests; outage %s; slowest answer %s; statuses by phase:", len(outcomes), resumeAt.Sub(pauseAt).Round(time.Millisecond), slowest.Round(time.Millisecond))
	for _, k := range keys {
		t.Logf("  %s %v", k, dist[k])
	}
	if len(bad) > 0 {
		// One example per kind of failure, with its count.
		kinds := map[string][]string{}
		var order []string
		for _, b := range bad {
			k := b
			if i := strings.Index(b, " after "); i >= 0 {
				k = b[:i]
				if j := strings.Index(b[i:], ": "); j >= 0 {
					k += " " + strings.SplitN(b[i+j+2:], " ", 2)[0]
				}
			}
			if kinds[k] == nil {
				order = append(order, k)
			}
			kinds[k] = append(kinds[k], b)
		}
		sort.Strings(order)
		for _, k := range order {
			t.Errorf("%d× %s", len(kinds[k]), kinds[k][0])
		}
		for _, line := range strings.Split(logs.String(), "\n") {
			if strings.Contains(line, "level=ERROR") {
				t.Logf("node log: %s", line)
			}
		}
	}

	// After the outage: every node serves at once.
	exUser := idp.mustUserToken(t, issuer, "ex-after", "mail:read")
	n1.createGrant(exUser, grantBody(agent.id, []string{"mail:read"}))
	for _, n := range nodes {
		eventually(t, 2*time.Second, n.name+" sees the new grant", func(ctx context.Context) bool {
			r := n.callForm(ctx, "/oauth2/token", agent.id, agent.secret, exchangeForm(exUser, "scope", "mail:read", "resource", mailAPI))
			return r.status == 200
		})
	}

	// Nothing acknowledged is lost.
	var grantsAcked, grantRevAcked, tokRevAcked, issued []string
	for _, o := range outcomes {
		if !o.ok() {
			continue
		}
		switch o.op {
		case "grant-create":
			grantsAcked = append(grantsAcked, o.id)
		case "grant-revoke":
			grantRevAcked = append(grantRevAcked, o.id)
		case "token-revoke":
			tokRevAcked = append(tokRevAcked, claimsOf(t, o.id)["jti"].(string))
		case "exchange":
			issued = append(issued, claimsOf(t, o.id)["jti"].(string))
		}
	}
	t.Logf("acknowledged: %d grants created, %d grants revoked, %d tokens revoked, %d tokens issued", len(grantsAcked), len(grantRevAcked), len(tokRevAcked), len(issued))
	for _, id := range grantsAcked {
		if countRows(t, direct, `SELECT COUNT(*) FROM grants WHERE id = $1`, id) != 1 {
			t.Errorf("grant %s was acknowledged (201) but is not in the database", id)
		}
	}
	for _, id := range grantRevAcked {
		if countRows(t, direct, `SELECT COUNT(*) FROM grants WHERE id = $1 AND status = 'revoked'`, id) != 1 {
			t.Errorf("grant revocation %s was acknowledged (204) but the grant is not revoked in the database", id)
		}
		if countRows(t, direct, `SELECT COUNT(*) FROM revocations WHERE kind = 'grant' AND id = $1`, id) != 1 {
			t.Errorf("grant revocation %s was acknowledged (204) but is not in the revocations table", id)
		}
	}
	for _, jti := range tokRevAcked {
		if countRows(t, direct, `SELECT COUNT(*) FROM revocations WHERE kind = 'token' AND id = $1`, jti) != 1 {
			t.Errorf("token revocation %s was acknowledged (200) but is not in the revocations table", jti)
		}
	}
	// Every node applies every acknowledged revocation.
	for _, n := range nodes {
		eventually(t, time.Second, n.name+" holds every acknowledged revocation", func(context.Context) bool {
			for _, jti := range tokRevAcked {
				if _, rev := n.app.Ledger.Revoked(jti, "", nil); !rev {
					return false
				}
			}
			for _, id := range grantRevAcked {
				if !n.app.Ledger.GrantRevoked(id) {
					return false
				}
			}
			return true
		})
	}
	// Every token issued has its audit record (the ledger writes them in the background).
	missing := func() []string {
		var out []string
		for _, jti := range issued {
			if countRows(t, direct, `SELECT COUNT(*) FROM issued_tokens WHERE jti = $1`, jti) != 1 {
				out = append(out, jti)
			}
		}
		return out
	}
	deadline := time.Now().Add(5 * time.Second)
	m := missing()
	for len(m) > 0 && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
		m = missing()
	}
	if len(m) > 0 {
		t.Errorf("%d of %d tokens issued (200) have no issued_tokens record: the audit record was lost (e.g. %s)", len(m), len(issued), m[0])
	}
	checkLogHygiene(t, logs.String(), agent.secret)
}

// TestFaultIssuedRecordsSurviveOutage: tokens issued just before and (from
// the caches) during a 3s PostgreSQL outage, an ordinary restart, keep their
// audit records.
func TestFaultIssuedRecordsSurviveOutage(t *testing.T) {
	requirePostgres(t)
	base := dbtest.SchemaURL(t)
	proxy := startPGProxy(t, base)
	idp := newTestIdP(t)
	n := startNodes(t, 1, proxy.dsn(base), "", idp, nil, nil)[0]
	t.Cleanup(proxy.Resume)
	direct := openDirect(t, base)
	agent := n.registerClient(map[string]any{"client_id": "agent-audit", "name": "Audit", "type": "agent",
		"scopes": []string{"mail:read"}, "audiences": []string{mailAPI}})
	user := idp.mustUserToken(t, n.url, "alice", "mail:read")
	n.createGrant(user, grantBody(agent.id, []string{"mail:read"}))
	// The last token before the outage fills the caches; its record is still
	// queued (the writer flushes every 10ms) when PostgreSQL goes away.
	warm := n.exchange(agent, user, "scope", "mail:read", "resource", mailAPI)
	proxy.Pause()
	pausedAt := time.Now()
	jtis := []string{claimsOf(t, warm)["jti"].(string)}
	for range 20 {
		r := n.form("/oauth2/token", agent.id, agent.secret, exchangeForm(user, "scope", "mail:read", "resource", mailAPI))
		if r.status != 200 {
			t.Logf("during the outage: %d %s", r.status, r.raw)
			break // the caches ran out
		}
		jtis = append(jtis, claimsOf(t, r.body["access_token"].(string))["jti"].(string))
	}
	if len(jtis) == 1 {
		// On a loaded machine the caches may expire before the first request of
		// the outage; the record queued before the outage is still checked.
		t.Log("no exchange was served from the caches during the outage")
	}
	time.Sleep(3*time.Second - time.Since(pausedAt))
	proxy.Resume()
	eventually(t, 10*time.Second, "ready again", func(ctx context.Context) bool {
		r := n.call(ctx, "GET", "/readyz", "", "", nil)
		return r.err == nil && r.status == 200
	})
	var lost []string
	deadline := time.Now().Add(5 * time.Second)
	for {
		lost = lost[:0]
		for _, jti := range jtis {
			if countRows(t, direct, `SELECT COUNT(*) FROM issued_tokens WHERE jti = $1`, jti) != 1 {
				lost = append(lost, jti)
			}
		}
		if len(lost) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if len(lost) > 0 {
		t.Fatalf("%d of %d tokens issued around a 3s outage have no issued_tokens record after it: the ledger writer gave up on them", len(lost), len(jtis))
	}
}

// TestFaultPostgresUnresponsive freezes PostgreSQL (connections stay open,
// nothing answers) instead of refusing connections: requests must still be
// answered within database.query_timeout, with 503 temporarily_unavailable.
func TestFaultPostgresUnresponsive(t *testing.T) {
	requirePostgres(t)
	base := dbtest.SchemaURL(t)
	proxy := startPGProxy(t, base)
	idp := newTestIdP(t)
	n := startNodes(t, 1, proxy.dsn(base), "", idp, nil, nil)[0]
	t.Cleanup(proxy.Resume)
	bound := n.cfg.Database.QueryTimeout
	n.hc = newTestHTTPClient(bound + 7*time.Second)
	agent := n.registerClient(map[string]any{"client_id": "agent-frozen", "name": "Frozen", "type": "agent",
		"scopes": []string{"mail:read"}, "audiences": []string{mailAPI}})
	alice := idp.mustUserToken(t, n.url, "alice", "mail:read")
	gid := n.createGrant(alice, grantBody(agent.id, []string{"mail:read"}))
	tok := n.exchange(agent, alice, "scope", "mail:read", "resource", mailAPI)
	bob := idp.mustUserToken(t, n.url, "bob", "mail:read")

	proxy.Blackhole()
	n.app.Clients.InvalidateAll()
	n.app.Grants.InvalidateAll()
	reqs := map[string]func(ctx context.Context) hresp{
		"exchange": func(ctx context.Context) hresp {
			return n.callForm(ctx, "/oauth2/token", agent.id, agent.secret, exchangeForm(alice, "scope", "mail:read", "resource", mailAPI))
		},
		"token revoke": func(ctx context.Context) hresp {
			return n.callForm(ctx, "/oauth2/revoke", agent.id, agent.secret, url.Values{"token": {tok}})
		},
		"grant create": func(ctx context.Context) hresp {
			return n.callJSON(ctx, "POST", "/v1/grants", "Bearer "+bob, grantBody(agent.id, []string{"mail:read"}))
		},
		"grant revoke": func(ctx context.Context) hresp {
			return n.callJSON(ctx, "DELETE", "/v1/grants/"+gid, "Bearer "+alice, nil)
		},
		"admin list clients": func(ctx context.Context) hresp {
			return n.callJSON(ctx, "GET", "/admin/v1/clients", "Bearer "+testAdminKey, nil)
		},
		"readyz": func(ctx context.Context) hresp { return n.call(ctx, "GET", "/readyz", "", "", nil) },
	}
	type res struct {
		name string
		r    hresp
	}
	out := make(chan res, len(reqs))
	for name, do := range reqs {
		go func() { out <- res{name, do(context.Background())} }()
	}
	var results []res
	for range reqs {
		results = append(results, <-out)
	}
	sort.Slice(results, func(i, j int) bool { return results[i].name < results[j].name })
	for _, x := range results {
		t.Logf("frozen PostgreSQL: %-18s answered after %-8s %s", x.name, x.r.dur.Round(time.Millisecond), x.r)
	}
	for _, x := range results {
		switch {
		case x.r.err != nil:
			t.Errorf("%s: no answer within %s (database.query_timeout is %s): %v", x.name, n.hc.Timeout, bound, x.r.err)
		case x.r.dur > bound+500*time.Millisecond:
			t.Errorf("%s: answered after %s, want within database.query_timeout (%s)", x.name, x.r.dur.Round(time.Millisecond), bound)
		case x.r.status != http.StatusServiceUnavailable:
			t.Errorf("%s: got %s, want 503", x.name, x.r)
		}
	}
	proxy.Resume()
	eventually(t, 10*time.Second, "ready again", func(ctx context.Context) bool {
		r := n.call(ctx, "GET", "/readyz", "", "", nil)
		return r.err == nil && r.status == 200
	})
	eventually(t, 5*time.Second, "exchanges served again", func(ctx context.Context) bool {
		r := n.callForm(ctx, "/oauth2/token", agent.id, agent.secret, exchangeForm(bob, "scope", "mail:read"))
		return r.err == nil && r.status < 500
	})
}

// TestFaultRevokeRacesExchange races 50 exchanges against one grant
// revocation: whatever was issued, once the revocation is acknowledged every
// token under the grant is inactive on the acknowledging node at once and on
// the other node within 1s, and no exchange under the grant succeeds any more.
func TestFaultRevokeRacesExchange(t *testing.T) {
	requirePostgres(t)
	dsn := dbtest.SchemaURL(t)
	idp := newTestIdP(t)
	nodes := startNodes(t, 2, dsn, "", idp, nil, nil)
	n1, n2 := nodes[0], nodes[1]
	agent := n1.registerClient(map[string]any{"client_id": "agent-race", "name": "Race", "type": "agent",
		"scopes": []string{"mail:read"}, "audiences": []string{mailAPI}})
	const rounds, exchanges = 5, 50
	for round := range rounds {
		user := idp.mustUserToken(t, n1.url, fmt.Sprintf("racer-%d", round), "mail:read")
		gid := n1.createGrant(user, grantBody(agent.id, []string{"mail:read"}))
		for _, n := range nodes {
			eventually(t, 2*time.Second, n.name+" sees the grant", func(ctx context.Context) bool {
				r := n.callForm(ctx, "/oauth2/token", agent.id, agent.secret, exchangeForm(user, "scope", "mail:read", "resource", mailAPI))
				return r.status == 200
			})
		}
		var (
			mu       sync.Mutex
			issued   []string
			lateOK   int // 200s received after the revocation was acknowledged
			ackAt    atomic.Int64
			statuses = map[string]int{}
			wg       sync.WaitGroup
		)
		// The exchanges are spread over ~40ms and the revocation is sent ~15ms
		// in, so that some exchanges finish before it, some race it, some follow.
		start := make(chan struct{})
		for i := range exchanges {
			n := nodes[i%2]
			delay := time.Duration(i) * 800 * time.Microsecond
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				<-start
				time.Sleep(delay)
				r := n.callForm(ctx, "/oauth2/token", agent.id, agent.secret, exchangeForm(user, "scope", "mail:read", "resource", mailAPI))
				got := time.Now().UnixNano()
				mu.Lock()
				defer mu.Unlock()
				label := fmt.Sprintf("%d %s", r.status, r.code())
				if d, _ := r.body["error_description"].(string); strings.Contains(d, "policy could not be evaluated") {
					label += " (policy decision timed out)"
				}
				if r.err != nil {
					label = "transport error"
				}
				statuses[label]++
				if r.err == nil && r.status == 200 {
					issued = append(issued, r.body["access_token"].(string))
					if a := ackAt.Load(); a != 0 && got > a {
						lateOK++
					}
				}
			}()
		}
		close(start)
		time.Sleep(15 * time.Millisecond)
		d := n1.json("DELETE", "/v1/grants/"+gid, "Bearer "+user, nil)
		ackAt.Store(time.Now().UnixNano())
		if d.status != 204 {
			t.Fatalf("round %d: revoke grant: %s", round, d)
		}
		wg.Wait()
		t.Logf("round %d: %d of %d exchanges issued a token, %d of them answered after the revocation was acknowledged; %v", round, len(issued), exchanges, lateOK, statuses)
		if statuses["transport error"] > 0 {
			t.Fatalf("round %d: %d exchanges got no answer", round, statuses["transport error"])
		}
		for i, tok := range issued {
			if on, err := n1.active(context.Background(), agent, tok); err != nil || on {
				t.Fatalf("round %d: token %d (%s) on %s, which acknowledged the revocation: active=%v err=%v", round, i, claimsOf(t, tok)["jti"], n1.name, on, err)
			}
		}
		var why string
		deadline := time.Now().Add(time.Second)
		for pending := issued; len(pending) > 0; {
			ctx, cancel := context.WithDeadline(context.Background(), deadline)
			on, err := n2.active(ctx, agent, pending[0])
			cancel()
			switch {
			case err == nil && !on:
				pending = pending[1:]
				continue
			case err != nil:
				why = err.Error()
			default:
				c := claimsOf(t, pending[0])
				_, revoked := n2.app.Ledger.Revoked(c["jti"].(string), c["grant_id"].(string), nil)
				why = fmt.Sprintf("token %s (grant %s) still active; %s's ledger says revoked=%v, grant revoked=%v",
					c["jti"], c["grant_id"], n2.name, revoked, n2.app.Ledger.GrantRevoked(gid))
			}
			if time.Now().After(deadline) {
				t.Fatalf("round %d: %s did not see every token under the revoked grant inactive within 1s: %s", round, n2.name, why)
			}
			time.Sleep(10 * time.Millisecond)
		}
		wantError(t, toResp(n1.form("/oauth2/token", agent.id, agent.secret, exchangeForm(user, "scope", "mail:read", "resource", mailAPI))), 400, "invalid_grant")
		eventually(t, time.Second, n2.name+" refuses exchanges under the revoked grant", func(ctx context.Context) bool {
			r := n2.callForm(ctx, "/oauth2/token", agent.id, agent.secret, exchangeForm(user, "scope", "mail:read", "resource", mailAPI))
			return r.status == 400 && r.code() == "invalid_grant"
		})
	}
}

// TestFaultGrantRevocationRepublishedAfterRestart: a grant revocation that was
// committed to the grants table but could not be published to the revocation
// set (503 "recorded but not yet published") must not leave the grant's tokens
// valid forever: at the latest when a node starts, it is published.
func TestFaultGrantRevocationRepublishedAfterRestart(t *testing.T) {
	requirePostgres(t)
	dsn := dbtest.SchemaURL(t)
	idp := newTestIdP(t)
	n1 := startNodes(t, 1, dsn, "", idp, nil, nil)[0]
	direct := openDirect(t, dsn)
	agent := n1.registerClient(map[string]any{"client_id": "agent-pub", "name": "Publish", "type": "agent",
		"scopes": []string{"mail:read"}, "audiences": []string{mailAPI}})
	alice := idp.mustUserToken(t, n1.url, "alice", "mail:read")
	gid := n1.createGrant(alice, grantBody(agent.id, []string{"mail:read"}))
	tok := n1.exchange(agent, alice, "scope", "mail:read", "resource", mailAPI)

	// The revocations table refuses grant revocations for a moment.
	ctx := context.Background()
	for _, q := range []string{
		`CREATE FUNCTION mandate_test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'injected fault'; END $$`,
		`CREATE TRIGGER mandate_test_refuse BEFORE INSERT ON revocations FOR EACH ROW WHEN (NEW.kind = 'grant') EXECUTE FUNCTION mandate_test_refuse()`,
	} {
		if _, err := direct.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	d := n1.json("DELETE", "/v1/grants/"+gid, "Bearer "+alice, nil)
	if d.status != 503 || d.code() != "temporarily_unavailable" {
		t.Fatalf("revoke while the revocation set refuses writes: got %s, want 503 temporarily_unavailable", d)
	}
	if _, err := direct.Exec(ctx, `DROP TRIGGER mandate_test_refuse ON revocations`); err != nil {
		t.Fatal(err)
	}
	if countRows(t, direct, `SELECT COUNT(*) FROM grants WHERE id = $1 AND status = 'revoked'`, gid) != 1 {
		t.Fatalf("the grant should be recorded revoked")
	}
	if on, _ := n1.active(ctx, agent, tok); !on {
		t.Logf("note: the running node already treats the token as inactive")
	}

	// The node restarts (same issuer) and nobody repeats the DELETE.
	n1.srv.Close()
	n1.app.Close()
	n2 := startNodes(t, 1, dsn, n1.url, idp, nil, nil)[0]
	if on, err := n2.active(ctx, agent, tok); err != nil || on {
		t.Fatalf("after a restart, a token under grant %s (revoked in the grants table, revocation never published) is active=%v (err %v): nothing republishes unpublished grant revocations", gid, on, err)
	}
}

// TestFaultPolicyTimeoutIsTemporary: when a policy decision times out (an
// overloaded node; here a rule made slow on purpose for one client), the
// request is denied, as DESIGN.md requires, but as 503 temporarily_unavailable
// with Retry-After: nothing is wrong with the client's grant, and invalid_grant
// would send an agent back to its user for a consent it already has.
func TestFaultPolicyTimeoutIsTemporary(t *testing.T) {
	dir := t.TempDir()
	for name, src := range policies.DefaultFiles() {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	slow := `package mandate.exchange

# Never fires, but takes seconds to find out, for one client only.
deny contains "never" if {
	input.client.id == "agent-slow"
	some i in numbers.range(1, 4000)
	some j in numbers.range(1, 4000)
	i == j + 10000
}
`
	if err := os.WriteFile(filepath.Join(dir, "slow.rego"), []byte(slow), 0o600); err != nil {
		t.Fatal(err)
	}
	idp := newTestIdP(t)
	n := startNodes(t, 1, "sqlite:"+filepath.Join(t.TempDir(), "m.db"), "", idp, func(_ int, c *config.Config) {
		c.Policies.Dir = dir
	}, nil)[0]
	agent := n.registerClient(map[string]any{"client_id": "agent-slow", "name": "Slow", "type": "agent",
		"scopes": []string{"mail:read"}, "audiences": []string{mailAPI}})
	alice := idp.mustUserToken(t, n.url, "alice", "mail:read")
	n.createGrant(alice, grantBody(agent.id, []string{"mail:read"}))
	r := n.form("/oauth2/token", agent.id, agent.secret, exchangeForm(alice, "scope", "mail:read", "resource", mailAPI))
	if r.status == 200 {
		t.Fatalf("a timed-out policy decision issued a token: %s", r)
	}
	if r.dur > time.Second {
		t.Errorf("the policy decision was not cut at policies.eval_timeout (%s): answered after %s", n.cfg.Policies.EvalTimeout, r.dur)
	}
	if r.status != http.StatusServiceUnavailable || r.code() != "temporarily_unavailable" || r.header.Get("Retry-After") == "" {
		t.Fatalf("timed-out policy decision: got %s (Retry-After %q), want 503 temporarily_unavailable with Retry-After", r, r.header.Get("Retry-After"))
	}
}
