package edge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeBroker serves the revocation feed protocol over a real HTTP server: a log of entries,
// cursors "c<N>" after the N-th entry, long-polls held until an append or the wait elapses.
type fakeBroker struct {
	t   *testing.T
	srv *httptest.Server

	mu        sync.Mutex
	log       []map[string]any
	epoch     int // bumped by reset: older cursors then get "reset": true
	changed   chan struct{}
	failing   bool // answer 500
	goneOnce  bool // answer 410 to the next request with a cursor
	requests  []pollReq
	authSeen  []string
	rawAnswer string // when set, the next 200 body verbatim
}

type pollReq struct{ since, wait string }

func newFakeBroker(t *testing.T) *fakeBroker {
	b := &fakeBroker{t: t, changed: make(chan struct{})}
	b.srv = httptest.NewServer(http.HandlerFunc(b.serve))
	t.Cleanup(b.srv.Close)
	return b
}

func (b *fakeBroker) cursor() string { return fmt.Sprintf("e%d-c%d", b.epoch, len(b.log)) }

func (b *fakeBroker) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/v1/revocations" {
		http.NotFound(w, r)
		return
	}
	since, waitS := r.URL.Query().Get("since"), r.URL.Query().Get("wait")
	wait, err := strconv.Atoi(waitS)
	if err != nil || wait < 0 || wait > 30 {
		http.Error(w, "bad wait", http.StatusBadRequest)
		return
	}
	b.mu.Lock()
	b.requests = append(b.requests, pollReq{since, waitS})
	b.authSeen = append(b.authSeen, r.Header.Get("Authorization"))
	if b.failing {
		b.mu.Unlock()
		http.Error(w, "database unavailable", http.StatusInternalServerError)
		return
	}
	if since != "" && b.goneOnce {
		b.goneOnce = false
		b.mu.Unlock()
		w.WriteHeader(http.StatusGone)
		return
	}
	if raw := b.rawAnswer; raw != "" {
		b.rawAnswer = ""
		b.mu.Unlock()
		_, _ = w.Write([]byte(raw))
		return
	}
	b.mu.Unlock()

	deadline := time.NewTimer(time.Duration(wait) * time.Second)
	defer deadline.Stop()
	for {
		b.mu.Lock()
		if b.failing {
			b.mu.Unlock()
			http.Error(w, "database unavailable", http.StatusInternalServerError)
			return
		}
		resp, ready := b.answer(since)
		ch := b.changed
		b.mu.Unlock()
		if ready {
			_ = json.NewEncoder(w).Encode(resp)
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			b.mu.Lock()
			resp, _ := b.answer(since)
			b.mu.Unlock()
			_ = json.NewEncoder(w).Encode(resp)
			return
		case <-r.Context().Done():
			return
		}
	}
}

// answer computes the response to since; ready is false when a long-poll should keep waiting.
func (b *fakeBroker) answer(since string) (resp map[string]any, ready bool) {
	all := append([]map[string]any{}, b.log...)
	if since == "" {
		return map[string]any{"cursor": b.cursor(), "entries": all, "reset": false}, true
	}
	var epoch, n int
	if _, err := fmt.Sscanf(since, "e%d-c%d", &epoch, &n); err != nil || epoch != b.epoch || n > len(b.log) {
		return map[string]any{"cursor": b.cursor(), "entries": all, "reset": true}, true
	}
	return map[string]any{"cursor": b.cursor(), "entries": append([]map[string]any{}, b.log[n:]...), "reset": false}, n < len(b.log)
}

func (b *fakeBroker) notify() {
	close(b.changed)
	b.changed = make(chan struct{})
}

func (b *fakeBroker) revoke(kind, id string, exp time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.log = append(b.log, map[string]any{"kind": kind, "id": id, "expires_at": exp.Unix()})
	b.notify()
}

// reset replaces the broker's log, as after a restore: followers must drop their sets.
func (b *fakeBroker) reset(entries ...map[string]any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.log = entries
	b.epoch++
	b.notify()
}

func (b *fakeBroker) setFailing(f bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failing = f
	b.notify()
}

func (b *fakeBroker) requestLog() []pollReq {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]pollReq(nil), b.requests...)
}

func newTestFeed(t *testing.T, b *fakeBroker, clock *fakeClock) *Feed {
	t.Helper()
	f, err := NewFeed(FeedConfig{
		Issuer:     b.srv.URL,
		Wait:       5 * time.Second,
		MinBackoff: time.Millisecond,
		MaxBackoff: 5 * time.Millisecond,
		Header:     http.Header{"Authorization": {"Bearer feed-secret"}},
		Now:        clock.Now,
		Logger:     discardLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// runFeed runs f until the test ends.
func runFeed(t *testing.T, f *Feed) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run: got %v, want %v", err, context.Canceled)
		}
	})
	ctx2, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	if err := f.WaitSynced(ctx2); err != nil {
		t.Fatal(err)
	}
}

func TestFeedFollow(t *testing.T) {
	b := newFakeBroker(t)
	clock := newClock()
	exp := clock.Now().Add(time.Hour)
	b.revoke("token", "jti-1", exp)
	b.revoke("grant", "grant-1", exp)
	f := newTestFeed(t, b, clock)
	runFeed(t, f)

	if !f.Set().Revoked(KindToken, "jti-1") || !f.Set().Revoked(KindGrant, "grant-1") {
		t.Fatalf("snapshot: set lacks jti-1 or grant-1")
	}
	if got, want := f.LastSync(), clock.Now(); !got.Equal(want) {
		t.Errorf("LastSync: got %v, want %v", got, want)
	}
	b.revoke("token", "jti-2", exp)
	waitFor(t, "jti-2 to arrive", func() bool { return f.Set().Revoked(KindToken, "jti-2") })

	reqs := b.requestLog()
	if got, want := reqs[0], (pollReq{since: "", wait: "5"}); got != want {
		t.Errorf("first request: got %+v, want %+v", got, want)
	}
	if got, want := reqs[1], (pollReq{since: "e0-c2", wait: "5"}); got != want {
		t.Errorf("second request (long-poll): got %+v, want %+v", got, want)
	}
	b.mu.Lock()
	auth := b.authSeen[0]
	b.mu.Unlock()
	if got, want := auth, "Bearer feed-secret"; got != want {
		t.Errorf("Authorization sent: got %q, want %q", got, want)
	}
	if got := f.Set().Revoked(KindGrant, "jti-1"); got {
		t.Errorf("kinds are separate: jti-1 revoked as a grant")
	}
}

func TestFeedReset(t *testing.T) {
	b := newFakeBroker(t)
	clock := newClock()
	exp := clock.Now().Add(time.Hour)
	b.revoke("token", "jti-old", exp)
	f := newTestFeed(t, b, clock)
	runFeed(t, f)
	b.reset(map[string]any{"kind": "grant", "id": "grant-new", "expires_at": exp.Unix()})
	waitFor(t, "the reset snapshot", func() bool { return f.Set().Revoked(KindGrant, "grant-new") })
	if f.Set().Revoked(KindToken, "jti-old") {
		t.Errorf("after reset: jti-old still revoked, want the set replaced")
	}
	if got, want := f.Set().Len(), 1; got != want {
		t.Errorf("after reset: got %d entries, want %d", got, want)
	}
}

// TestFeedCatchUp: revocations made while the feed is failing arrive once it recovers, because
// the follower resumes from its last cursor.
func TestFeedCatchUp(t *testing.T) {
	b := newFakeBroker(t)
	clock := newClock()
	exp := clock.Now().Add(time.Hour)
	b.revoke("token", "jti-1", exp)
	f := newTestFeed(t, b, clock)
	runFeed(t, f)
	synced := f.LastSync()

	b.setFailing(true)
	waitFor(t, "failed polls", func() bool {
		n := 0
		for _, r := range b.requestLog() {
			if r.since == "e0-c1" {
				n++
			}
		}
		return n >= 3
	})
	// Revoked during the outage, and the broker's log moves on meanwhile.
	b.mu.Lock()
	b.log = append(b.log,
		map[string]any{"kind": "token", "id": "jti-2", "expires_at": exp.Unix()},
		map[string]any{"kind": "grant", "id": "grant-2", "expires_at": exp.Unix()})
	b.mu.Unlock()
	if got := f.LastSync(); !got.Equal(synced) {
		t.Errorf("LastSync moved during the outage: got %v, want %v", got, synced)
	}
	clock.Advance(time.Second)
	b.setFailing(false)
	waitFor(t, "catch-up", func() bool {
		return f.Set().Revoked(KindToken, "jti-2") && f.Set().Revoked(KindGrant, "grant-2")
	})
	for _, r := range b.requestLog()[1:] {
		if r.since == "" {
			t.Fatalf("a reconnect asked for a snapshot; want it to resume from its cursor")
		}
	}
	waitFor(t, "LastSync after recovery", func() bool { return f.LastSync().Equal(clock.Now()) })
}

// TestFeedCursorGone: a 410 makes the follower take a fresh snapshot.
func TestFeedCursorGone(t *testing.T) {
	b := newFakeBroker(t)
	clock := newClock()
	b.revoke("token", "jti-1", clock.Now().Add(time.Hour))
	f := newTestFeed(t, b, clock)
	ctx := context.Background()
	if err := f.Poll(ctx, 0); err != nil {
		t.Fatal(err)
	}
	b.mu.Lock()
	b.goneOnce = true
	b.mu.Unlock()
	if err := f.Poll(ctx, 0); err != nil {
		t.Fatalf("Poll after 410: got %v, want nil", err)
	}
	reqs := b.requestLog()
	if got, want := reqs[len(reqs)-1].since, ""; got != want {
		t.Errorf("request after 410: since %q, want %q", got, want)
	}
	if !f.Set().Revoked(KindToken, "jti-1") {
		t.Errorf("after 410 snapshot: jti-1 not revoked")
	}
}

func TestFeedProtocolErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		body    string
		wantErr string
	}{
		{"not JSON", `<html>`, "decode"},
		{"no cursor", `{"entries":[]}`, "without cursor"},
		{"empty cursor", `{"cursor":"","entries":[]}`, "without cursor"},
		{"entry without id", `{"cursor":"c1","entries":[{"kind":"token","expires_at":1}]}`, "without id"},
		{"too large", `{"cursor":"c1","entries":[` + strings.Repeat(`{"kind":"token","id":"x","expires_at":1},`, 100) + `{}]}`, "larger than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newFakeBroker(t)
			clock := newClock()
			f, err := NewFeed(FeedConfig{Issuer: b.srv.URL, MaxResponseBytes: 1024, Now: clock.Now, Logger: discardLogger()})
			if err != nil {
				t.Fatal(err)
			}
			b.rawAnswer = tc.body
			err = f.Poll(context.Background(), 0)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Poll: got %v, want an error containing %q", err, tc.wantErr)
			}
			if !f.LastSync().IsZero() {
				t.Errorf("LastSync after a failed poll: got %v, want zero", f.LastSync())
			}
		})
	}
}

func TestFeedUnknownKindSkipped(t *testing.T) {
	b := newFakeBroker(t)
	clock := newClock()
	f := newTestFeed(t, b, clock)
	b.rawAnswer = `{"cursor":"c2","entries":[{"kind":"subject","id":"user-1","expires_at":4102444800},{"kind":"token","id":"jti-1","expires_at":4102444800}]}`
	if err := f.Poll(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	if !f.Set().Revoked(KindToken, "jti-1") {
		t.Errorf("known kind beside an unknown one: jti-1 not revoked")
	}
	if got, want := f.Cursor(), "c2"; got != want {
		t.Errorf("Cursor: got %q, want %q", got, want)
	}
}

func TestNewFeedConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  FeedConfig
		ok   bool
	}{
		{"issuer", FeedConfig{Issuer: "https://broker.example.com"}, true},
		{"url", FeedConfig{URL: "https://broker.example.com/v1/revocations?tenant=a"}, true},
		{"nothing", FeedConfig{}, false},
		{"wait too long", FeedConfig{Issuer: "https://broker.example.com", Wait: time.Minute}, false},
		{"backoff inverted", FeedConfig{Issuer: "https://broker.example.com", MinBackoff: time.Second, MaxBackoff: time.Millisecond}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewFeed(tc.cfg)
			if got := err == nil; got != tc.ok {
				t.Fatalf("NewFeed: got error %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

// TestValidateWithFeed: a validator following a feed fails closed before the first sync and
// once the feed goes stale, and sees a revocation of a cached token on the next poll.
func TestValidateWithFeed(t *testing.T) {
	ti := newTestIssuer(t)
	b := newFakeBroker(t)
	clock := newClock()
	f := newTestFeed(t, b, clock)
	v, _ := newValidator(t, ti, clock, func(c *Config) {
		c.NoRevocationFeed, c.Revocations, c.Feed = false, nil, f
	})
	ctx := context.Background()
	tok := ti.token(ti.es, clock.Now(), func(_, c map[string]any) { c["jti"] = "jti-live" })

	if _, err := v.Validate(ctx, tok, Requirements{}); !errors.Is(err, ErrRevocationStale) {
		t.Fatalf("before the first sync: got %v, want %v", err, ErrRevocationStale)
	}
	if err := f.Poll(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Validate(ctx, tok, Requirements{}); err != nil {
		t.Fatalf("after sync: got %v, want valid", err)
	}
	clock.Advance(DefaultStaleness)
	if _, err := v.Validate(ctx, tok, Requirements{}); err != nil {
		t.Fatalf("at the staleness bound: got %v, want valid", err)
	}
	clock.Advance(time.Second)
	_, err := v.Validate(ctx, tok, Requirements{})
	if !errors.Is(err, ErrRevocationStale) {
		t.Fatalf("stale: got %v, want %v", err, ErrRevocationStale)
	}
	if got, want := HTTPStatus(err), http.StatusServiceUnavailable; got != want {
		t.Errorf("HTTPStatus(stale): got %d, want %d", got, want)
	}
	b.revoke("token", "jti-live", clock.Now().Add(time.Hour))
	if err := f.Poll(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Validate(ctx, tok, Requirements{}); !errors.Is(err, ErrRevoked) {
		t.Fatalf("revoked through the feed: got %v, want %v", err, ErrRevoked)
	}
}

func TestFeedRunOnce(t *testing.T) {
	b := newFakeBroker(t)
	f := newTestFeed(t, b, newClock())
	runFeed(t, f)
	if err := f.Run(context.Background()); err == nil {
		t.Fatalf("second Run: got nil, want an error")
	}
}

func TestBackoff(t *testing.T) {
	min, max := 100*time.Millisecond, time.Second
	for failures, wantMax := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 4: 800 * time.Millisecond, 10: time.Second} {
		for range 50 {
			d := backoff(failures, min, max)
			if d < wantMax/2 || d > wantMax {
				t.Fatalf("backoff(%d): got %v, want within [%v, %v]", failures, d, wantMax/2, wantMax)
			}
		}
	}
}
