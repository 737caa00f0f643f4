package decisionlog_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mandate-dev/mandate/broker"
	"github.com/mandate-dev/mandate/internal/db"
	"github.com/mandate-dev/mandate/internal/db/dbtest"
	"github.com/mandate-dev/mandate/policies"
	"github.com/mandate-dev/mandate/policies/decisionlog"
)

var testStart = time.Date(2026, 3, 10, 10, 0, 0, 0, time.UTC)

// testClock starts at testStart and moves one second per reading.
type testClock struct{ n atomic.Int64 }

func (c *testClock) now() time.Time { return testStart.Add(time.Duration(c.n.Add(1)-1) * time.Second) }

func eachBackend(t *testing.T, fn func(t *testing.T, d *db.DB)) {
	for _, dialect := range dbtest.Backends() {
		t.Run(string(dialect), func(t *testing.T) { fn(t, dbtest.Open(t, dialect)) })
	}
}

func openLog(t *testing.T, d *db.DB, opts decisionlog.Options) *decisionlog.Log {
	t.Helper()
	l := decisionlog.New(d, opts)
	t.Cleanup(l.Close)
	return l
}

func flush(t *testing.T, l *decisionlog.Log) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := l.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

func input(client, subject string, scopes ...string) *policies.Input {
	return &policies.Input{
		Version: policies.InputVersion,
		Client:  policies.ClientInput{ID: client, Type: policies.ClientTypeAgent, Scopes: scopes},
		Subject: policies.SubjectInput{Issuer: "https://idp.example.com", Subject: subject, Kind: policies.SubjectUpstream,
			Claims: map[string]any{"sub": subject, "email": subject + "@example.com"}},
		Chain:   []policies.ChainLink{{Sub: client}},
		Grant:   &policies.GrantInput{ID: "grt_" + subject, Scopes: scopes},
		Request: policies.RequestInput{GrantType: broker.GrantTypeTokenExchange, Scopes: scopes, Audiences: []string{"https://mail.example.com"}, Delegation: true, Depth: 1},
		Meta:    policies.MetaInput{Time: testStart.Format(time.RFC3339), Unix: testStart.Unix()},
	}
}

func audit(client, subject string, allowed bool, scopes ...string) *broker.Audit {
	a := &broker.Audit{
		ClientID: client, Subject: subject, SubjectIssuer: "https://idp.example.com", Actors: []string{client},
		GrantID: "grt_" + subject, GrantType: broker.GrantTypeTokenExchange, Requested: scopes,
		Audiences: []string{"https://mail.example.com"}, Allowed: allowed, BundleVersion: "v1",
		EvalDuration: 42 * time.Microsecond, Input: input(client, subject, scopes...),
	}
	if allowed {
		a.Issued = scopes
	} else {
		a.Reasons = []string{"no grant covers " + client}
		a.Error = "invalid_grant"
	}
	return a
}

func TestRecordAndQuery(t *testing.T) {
	eachBackend(t, func(t *testing.T, d *db.DB) {
		ctx := context.Background()
		clk := &testClock{}
		l := openLog(t, d, decisionlog.Options{Clock: clk.now, BatchSize: 100})
		const n = 1234 // several batches and a partial one
		var wg sync.WaitGroup
		for w := range 4 {
			wg.Go(func() {
				for i := w; i < n; i += 4 {
					l.RecordDecision(ctx, audit(fmt.Sprintf("agent-%d", i%3), fmt.Sprintf("user-%d", i%5), i%2 == 0, "mail:read"))
				}
			})
		}
		wg.Wait()
		flush(t, l)
		if s := l.Stats(); s.Recorded != n || s.Written != n || s.Dropped != 0 || s.Failed != 0 || s.Queued != 0 {
			t.Fatalf("stats = %+v", s)
		}

		all, err := l.Query(ctx, decisionlog.Filter{Limit: decisionlog.MaxLimit})
		if err != nil {
			t.Fatal(err)
		}
		if len(all) != decisionlog.MaxLimit {
			t.Fatalf("query returned %d, want %d", len(all), decisionlog.MaxLimit)
		}
		for i := 1; i < len(all); i++ {
			if all[i].ID >= all[i-1].ID {
				t.Fatalf("not newest first at %d: %d then %d", i, all[i-1].ID, all[i].ID)
			}
		}
		e := all[0]
		if e.SubjectIssuer != "https://idp.example.com" || e.GrantType != broker.GrantTypeTokenExchange || e.BundleVersion != "v1" ||
			e.EvalDuration != 42*time.Microsecond || len(e.Actors) != 1 || len(e.Requested) != 1 || e.Input != nil {
			t.Errorf("entry = %+v", e)
		}
		if e.Allowed && (len(e.Issued) != 1 || len(e.Reasons) != 0 || e.Error != "") || !e.Allowed && (len(e.Issued) != 0 || len(e.Reasons) != 1 || e.Error != "invalid_grant") {
			t.Errorf("entry issued/reasons = %v/%v for allowed=%v", e.Issued, e.Reasons, e.Allowed)
		}

		// Paging reaches every decision exactly once.
		seen := map[int64]bool{}
		var before int64
		for {
			page, err := l.Query(ctx, decisionlog.Filter{Limit: 500, BeforeID: before})
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range page {
				if seen[e.ID] {
					t.Fatalf("decision %d seen twice", e.ID)
				}
				seen[e.ID] = true
			}
			if len(page) < 500 {
				break
			}
			before = page[len(page)-1].ID
		}
		if len(seen) != n {
			t.Fatalf("paging saw %d decisions, want %d", len(seen), n)
		}

		yes, no := true, false
		count := func(f decisionlog.Filter) int {
			t.Helper()
			f.Limit = decisionlog.MaxLimit
			got, err := l.Query(ctx, f)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range got {
				if f.ClientID != "" && e.ClientID != f.ClientID || f.Subject != "" && e.Subject != f.Subject ||
					f.Allowed != nil && e.Allowed != *f.Allowed || !f.Since.IsZero() && e.At.Before(f.Since) ||
					!f.Until.IsZero() && !e.At.Before(f.Until) {
					t.Fatalf("entry %+v does not match filter %+v", e, f)
				}
			}
			return len(got)
		}
		wantCount := func(keep func(i int) bool) int {
			c := 0
			for i := range n {
				if keep(i) {
					c++
				}
			}
			return min(c, decisionlog.MaxLimit)
		}
		for _, tc := range []struct {
			name string
			f    decisionlog.Filter
			want int
		}{
			{"client", decisionlog.Filter{ClientID: "agent-1"}, wantCount(func(i int) bool { return i%3 == 1 })},
			{"subject", decisionlog.Filter{Subject: "user-2"}, wantCount(func(i int) bool { return i%5 == 2 })},
			{"allowed", decisionlog.Filter{Allowed: &yes}, wantCount(func(i int) bool { return i%2 == 0 })},
			{"denied", decisionlog.Filter{Allowed: &no}, wantCount(func(i int) bool { return i%2 == 1 })},
			{"client and subject and denied", decisionlog.Filter{ClientID: "agent-0", Subject: "user-1", Allowed: &no},
				wantCount(func(i int) bool { return i%3 == 0 && i%5 == 1 && i%2 == 1 })},
			// The clock ticks once per decision: the first 100 are in [start, start+100s).
			{"until", decisionlog.Filter{Until: testStart.Add(100 * time.Second)}, 100},
			{"since", decisionlog.Filter{Since: testStart.Add(time.Duration(n-10) * time.Second)}, 10},
			{"since and until", decisionlog.Filter{Since: testStart.Add(10 * time.Second), Until: testStart.Add(30 * time.Second)}, 20},
			{"nobody", decisionlog.Filter{ClientID: "nobody"}, 0},
		} {
			if got := count(tc.f); got != tc.want {
				t.Errorf("%s: %d decisions, want %d", tc.name, got, tc.want)
			}
		}

		got, err := l.Query(ctx, decisionlog.Filter{Limit: 1, IncludeInput: true})
		if err != nil || len(got) != 1 {
			t.Fatal(err)
		}
		var in policies.Input
		if err := json.Unmarshal(got[0].Input, &in); err != nil || in.Version != policies.InputVersion || in.Subject.Subject != got[0].Subject {
			t.Errorf("stored input = %s (%v)", got[0].Input, err)
		}

		for _, bad := range []int{-1, decisionlog.MaxLimit + 1} {
			if _, err := l.Query(ctx, decisionlog.Filter{Limit: bad}); err == nil {
				t.Errorf("limit %d: no error", bad)
			}
		}
	})
}

func jwt(header, payload string) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(header)) + "." + enc([]byte(payload)) + "." + enc([]byte("signature-bytes"))
}

// TestNoTokensStored: whatever the audit record carries, no stored column
// holds anything that looks like a JWT.
func TestNoTokensStored(t *testing.T) {
	eachBackend(t, func(t *testing.T, d *db.DB) {
		ctx := context.Background()
		l := openLog(t, d, decisionlog.Options{})
		tok := jwt(`{"alg":"RS256","kid":"upstream"}`, `{"sub":"alice","email":"alice@example.com"}`)
		jwe := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"RSA-OAEP","enc":"A128GCM"}`)) + ".a2V5.aXY.Y2lwaGVy.dGFn"
		a := audit("agent-mail", "alice", false, "mail:read")
		in := a.Input.(*policies.Input)
		in.Subject.Claims["id_token"] = tok
		in.Subject.Claims["ext"] = map[string]any{"upstream_token": "Bearer " + jwe, "tenant": "acme.example.com"}
		in.Subject.Claims["tokens"] = []any{tok, "v1.2.3", "line\n" + tok, "\x01" + jwe}
		in.Subject.Claims["multiline"] = "first line\n" + tok
		in.Actor = &policies.ActorInput{Subject: "agent-mail", Claims: map[string]any{"assertion": tok, "attested": true}}
		a.Reasons = []string{"the claim " + tok + " is refused"}
		a.Subject = tok // a broker bug must not leak either
		l.RecordDecision(ctx, a)
		flush(t, l)

		rows, err := d.Query(ctx, `SELECT client_id || subject || subject_issuer || actors || grant_id || grant_type || requested ||
			audiences || reasons || issued || bundle_version || input FROM decisions`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		n := 0
		for rows.Next() {
			var all string
			if err := rows.Scan(&all); err != nil {
				t.Fatal(err)
			}
			n++
			for _, secret := range []string{tok, jwe, strings.Split(tok, ".")[1], "signature"} {
				if strings.Contains(all, secret) {
					t.Errorf("stored row holds %q: %s", secret, all)
				}
			}
			for _, kept := range []string{"alice@example.com", "acme.example.com", "v1.2.3", `"attested":true`, "[redacted token]"} {
				if !strings.Contains(all, kept) {
					t.Errorf("stored row lost %q: %s", kept, all)
				}
			}
		}
		if n != 1 {
			t.Fatalf("%d rows, want 1", n)
		}
		// The caller's record is left alone.
		if in.Subject.Claims["id_token"] != tok {
			t.Error("RecordDecision modified the caller's input")
		}
	})
}

// TestStringsTheDatabaseRefuses: PostgreSQL refuses NUL and invalid UTF-8
// in TEXT; such a decision is stored cleaned rather than blocking its batch.
func TestStringsTheDatabaseRefuses(t *testing.T) {
	eachBackend(t, func(t *testing.T, d *db.DB) {
		ctx := context.Background()
		l := openLog(t, d, decisionlog.Options{})
		a := audit("agent\x00x", "bad\xff\x00subject", false, "mail:read\x00")
		a.Input.(*policies.Input).Subject.Claims["odd"] = "nul\x00 and \xfe"
		a.Reasons = []string{"why\x00\xff"}
		l.RecordDecision(ctx, a)
		l.RecordDecision(ctx, audit("agent", "alice", true)) // the same batch
		flush(t, l)
		if s := l.Stats(); s.Written != 2 || s.Failed != 0 {
			t.Fatalf("stats = %+v", s)
		}
		got, err := l.Query(ctx, decisionlog.Filter{IncludeInput: true})
		if err != nil || len(got) != 2 {
			t.Fatalf("query = %d, %v", len(got), err)
		}
		e := got[1]
		if e.ClientID != "agentx" || e.Subject != "bad\uFFFDsubject" || e.Requested[0] != "mail:read\x00" || e.Reasons[0] != "why\x00\uFFFD" {
			t.Errorf("entry = %q %q %q %q", e.ClientID, e.Subject, e.Requested, e.Reasons)
		}
	})
}

func TestPrune(t *testing.T) {
	eachBackend(t, func(t *testing.T, d *db.DB) {
		ctx := context.Background()
		clk := &testClock{}
		l := openLog(t, d, decisionlog.Options{Clock: clk.now})
		for range 50 {
			l.RecordDecision(ctx, audit("agent", "alice", true, "mail:read"))
		}
		flush(t, l)
		n, err := l.Prune(ctx, testStart.Add(20*time.Second))
		if err != nil || n != 20 {
			t.Fatalf("prune = %d, %v; want 20", n, err)
		}
		left, err := l.Query(ctx, decisionlog.Filter{Limit: 100})
		if err != nil || len(left) != 30 {
			t.Fatalf("%d left, %v; want 30", len(left), err)
		}
		if oldest := left[len(left)-1].At; !oldest.Equal(testStart.Add(20 * time.Second)) {
			t.Errorf("oldest left at %s", oldest)
		}
		if n, err := l.Prune(ctx, testStart); err != nil || n != 0 {
			t.Errorf("second prune = %d, %v", n, err)
		}
	})
}

// TestBackpressure: when the database cannot take the decisions, the queue
// fills, RecordDecision waits, then drops and counts; nothing is lost
// without being counted.
func TestBackpressure(t *testing.T) {
	broken, err := db.Open(context.Background(), "sqlite:"+t.TempDir()+"/x.db", db.Options{})
	if err != nil {
		t.Fatal(err)
	}
	broken.Close() // every write fails
	l := decisionlog.New(broken, decisionlog.Options{QueueSize: 4, BatchSize: 2, BlockTimeout: time.Millisecond})
	const n = 200
	for range n {
		l.RecordDecision(context.Background(), audit("agent", "alice", true))
	}
	s := l.Stats()
	if s.Dropped == 0 || s.Blocked == 0 {
		t.Errorf("stats = %+v, want drops and waits", s)
	}
	if s.Recorded+s.Dropped != n {
		t.Errorf("recorded %d + dropped %d != %d", s.Recorded, s.Dropped, n)
	}
	l.Close()
	s = l.Stats()
	if s.Written != 0 || s.Failed != s.Recorded || s.Queued != 0 {
		t.Errorf("after close: %+v, want every recorded decision failed", s)
	}
	l.RecordDecision(context.Background(), audit("agent", "alice", true))
	if got := l.Stats().Dropped; got != s.Dropped+1 {
		t.Errorf("a decision after Close: dropped %d, want %d", got, s.Dropped+1)
	}
	if err := l.Flush(context.Background()); err != nil {
		t.Errorf("flush after close: %v", err)
	}
}

func TestFlushReportsFailure(t *testing.T) {
	broken, err := db.Open(context.Background(), "sqlite:"+t.TempDir()+"/x.db", db.Options{})
	if err != nil {
		t.Fatal(err)
	}
	broken.Close()
	l := decisionlog.New(broken, decisionlog.Options{})
	defer l.Close()
	l.RecordDecision(context.Background(), audit("agent", "alice", true))
	if err := l.Flush(context.Background()); err == nil {
		t.Error("flush of a lost batch: no error")
	}
}

func TestCollector(t *testing.T) {
	d := dbtest.Open(t, db.SQLite)
	l := openLog(t, d, decisionlog.Options{})
	l.RecordDecision(context.Background(), audit("agent", "alice", true))
	flush(t, l)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(l)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		m := mf.GetMetric()[0]
		if c := m.GetCounter(); c != nil {
			got[mf.GetName()] = c.GetValue()
		} else {
			got[mf.GetName()] = m.GetGauge().GetValue()
		}
	}
	if got["mandate_decision_log_written_total"] != 1 || got["mandate_decision_log_recorded_total"] != 1 || len(got) != 6 {
		t.Errorf("metrics = %v", got)
	}
}

func BenchmarkRecordDecision(b *testing.B) {
	d := dbtest.Open(b, db.SQLite)
	l := decisionlog.New(d, decisionlog.Options{})
	defer l.Close()
	a := audit("agent-mail", "alice", true, "mail:read", "mail:write")
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			l.RecordDecision(ctx, a)
		}
	})
	if err := l.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "stored/s")
	if s := l.Stats(); s.Dropped > 0 {
		b.ReportMetric(float64(s.Dropped), "dropped")
	}
}
