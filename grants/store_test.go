package grants_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mandate-dev/mandate/grants"
	"github.com/mandate-dev/mandate/internal/db"
	"github.com/mandate-dev/mandate/internal/db/dbtest"
)

const (
	iss = "https://login.example.com"
	sub = "alice"
)

var alice = grants.UserActor(iss, sub)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type revokeCall struct {
	kind, id, reason string
	keepUntil        time.Time
}

// recordingRevoker stands in for the broker's ledger.
type recordingRevoker struct {
	mu    sync.Mutex
	calls []revokeCall
	fail  error
}

func (r *recordingRevoker) Revoke(_ context.Context, kind, id, reason string, keepUntil time.Time) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, revokeCall{kind, id, reason, keepUntil})
	return r.fail
}

func (r *recordingRevoker) setFail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fail = err
}

func (r *recordingRevoker) Calls() []revokeCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.calls)
}

type env struct {
	d     *db.DB
	store *grants.Store
	clock *fakeClock
	rev   *recordingRevoker
}

func newEnv(t *testing.T, dialect db.Dialect, opts grants.Options) *env {
	t.Helper()
	e := &env{
		d:     dbtest.Open(t, dialect),
		clock: &fakeClock{t: time.Unix(time.Now().Unix(), 0).UTC()},
		rev:   &recordingRevoker{},
	}
	opts.Clock = e.clock.Now
	opts.Logger = slog.New(slog.DiscardHandler)
	if opts.MaxLifetime == 0 {
		opts.MaxLifetime = 15 * time.Minute
	}
	e.store = grants.NewStore(e.d, e.rev, opts)
	return e
}

func eachBackend(t *testing.T, fn func(t *testing.T, dialect db.Dialect)) {
	for _, d := range dbtest.Backends() {
		t.Run(string(d), func(t *testing.T) { fn(t, d) })
	}
}

func (e *env) grant(client string) *grants.Grant {
	return &grants.Grant{
		UserIssuer:       iss,
		UserSubject:      sub,
		ClientID:         client,
		Scopes:           []string{"mail.read", "mail.search", "mail.send"},
		Resources:        []string{"https://api.example.com/mail/*", "contacts-api"},
		MaxDepth:         3,
		MaxLifetime:      10 * time.Minute,
		AllowedSubAgents: []string{"summarizer", "translator"},
		ExpiresAt:        e.clock.Now().Add(30 * 24 * time.Hour),
	}
}

func (e *env) mustCreate(t *testing.T, g *grants.Grant, actor string) *grants.Grant {
	t.Helper()
	out, err := e.store.Create(context.Background(), g, actor)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	return out
}

func TestStoreCreateGetList(t *testing.T) {
	eachBackend(t, func(t *testing.T, dialect db.Dialect) {
		ctx := context.Background()
		e := newEnv(t, dialect, grants.Options{})
		in := e.grant("mail-agent")
		g := e.mustCreate(t, in, alice)
		if !grants.ValidID(g.ID) || g.Status != grants.StatusActive || g.CreatedAt.IsZero() {
			t.Fatalf("created grant: %+v", g)
		}
		got, err := e.store.Get(ctx, g.ID)
		if err != nil {
			t.Fatalf("Get: %v", err)
		}
		if got.ClientID != "mail-agent" || !slices.Equal(got.Scopes, in.Scopes) || !slices.Equal(got.Resources, in.Resources) ||
			got.MaxDepth != 3 || got.MaxLifetime != 10*time.Minute || !slices.Equal(got.AllowedSubAgents, in.AllowedSubAgents) ||
			!got.ExpiresAt.Equal(in.ExpiresAt) || !got.CreatedAt.Equal(g.CreatedAt) || !got.RevokedAt.IsZero() {
			t.Fatalf("Get: got %+v, want %+v", got, g)
		}

		// A second active grant to the same client is refused, naming the first.
		_, err = e.store.Create(ctx, e.grant("mail-agent"), alice)
		var exists *grants.ExistsError
		if !errors.Is(err, grants.ErrExists) || !errors.As(err, &exists) || exists.GrantID != g.ID {
			t.Fatalf("second Create: got %v, want ErrExists naming %s", err, g.ID)
		}
		// Another client is fine; another user (by admin) too.
		g2 := e.mustCreate(t, e.grant("calendar-agent"), alice)
		bob := e.grant("mail-agent")
		bob.UserSubject = "bob"
		e.mustCreate(t, bob, grants.AdminActor)

		list, err := e.store.ListByUser(ctx, iss, sub)
		if err != nil {
			t.Fatalf("ListByUser: %v", err)
		}
		if len(list) != 2 {
			t.Fatalf("ListByUser: got %d grants, want 2", len(list))
		}
		list, err = e.store.List(ctx, grants.Filter{ClientID: "mail-agent"})
		if err != nil || len(list) != 2 {
			t.Fatalf("List by client: got %d, %v; want 2", len(list), err)
		}
		list, err = e.store.List(ctx, grants.Filter{UserSubject: sub, Limit: 1})
		if err != nil || len(list) != 1 {
			t.Fatalf("List limit 1: got %d, %v", len(list), err)
		}
		if err := e.store.Revoke(ctx, g2.ID, alice, ""); err != nil {
			t.Fatal(err)
		}
		for status, want := range map[string]int{grants.StatusActive: 2, grants.StatusRevoked: 1, grants.StatusExpired: 0, "": 3} {
			list, err = e.store.List(ctx, grants.Filter{Status: status})
			if err != nil || len(list) != want {
				t.Errorf("List status %q: got %d, %v; want %d", status, len(list), err, want)
			}
		}
		for _, f := range []grants.Filter{{Status: "gone"}, {Limit: -1}, {Limit: grants.MaxListLimit + 1}, {ClientID: "a b"}, {UserSubject: "a\x00"}} {
			var verr *grants.ValidationError
			if _, err := e.store.List(ctx, f); !errors.As(err, &verr) {
				t.Errorf("List(%+v): got %v, want a ValidationError", f, err)
			}
		}

		if _, err := e.store.Get(ctx, "grt_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"); !errors.Is(err, grants.ErrNotFound) {
			t.Errorf("Get missing: got %v, want ErrNotFound", err)
		}
		if _, err := e.store.Get(ctx, "'; DROP TABLE grants; --"); !errors.Is(err, grants.ErrNotFound) {
			t.Errorf("Get bad id: got %v, want ErrNotFound", err)
		}
	})
}

func TestStoreCreateRefusals(t *testing.T) {
	eachBackend(t, func(t *testing.T, dialect db.Dialect) {
		ctx := context.Background()
		e := newEnv(t, dialect, grants.Options{Clients: clientSet{"mail-agent": true}})
		bad := e.grant("mail-agent")
		bad.Scopes = []string{"mail read"}
		var verr *grants.ValidationError
		if _, err := e.store.Create(ctx, bad, alice); !errors.As(err, &verr) || verr.Field != "scopes" {
			t.Fatalf("bad scope: got %v", err)
		}
		if _, err := e.store.Create(ctx, e.grant("unknown-agent"), alice); !errors.As(err, &verr) || verr.Field != "client_id" {
			t.Fatalf("unknown client: got %v", err)
		}
		// A user creates grants only for themselves.
		other := e.grant("mail-agent")
		other.UserSubject = "bob"
		if _, err := e.store.Create(ctx, other, alice); !errors.As(err, &verr) {
			t.Fatalf("grant for another user: got %v", err)
		}
		star := e.grant("mail-agent")
		star.Resources = []string{"*"}
		if _, err := e.store.Create(ctx, star, alice); !errors.As(err, &verr) || verr.Field != "resources" {
			t.Fatalf(`user granting "*": got %v`, err)
		}
		if _, err := e.store.Create(ctx, e.grant("mail-agent"), "root"); err == nil {
			t.Fatal("bad actor accepted")
		}
		// Nothing was stored by any refusal.
		if list, err := e.store.List(ctx, grants.Filter{}); err != nil || len(list) != 0 {
			t.Fatalf("after refusals: %d grants, %v", len(list), err)
		}
		var n int64
		if err := e.d.QueryRow(ctx, `SELECT COUNT(*) FROM grant_events`).Scan(&n); err != nil || n != 0 {
			t.Fatalf("after refusals: %d events, %v", n, err)
		}
		if _, err := e.store.Create(ctx, star, grants.AdminActor); err != nil {
			t.Fatalf(`admin granting "*": %v`, err)
		}
	})
}

type clientSet map[string]bool

func (c clientSet) ClientExists(_ context.Context, id string) (bool, error) { return c[id], nil }

func TestStoreSQLLookingStrings(t *testing.T) {
	eachBackend(t, func(t *testing.T, dialect db.Dialect) {
		ctx := context.Background()
		e := newEnv(t, dialect, grants.Options{})
		g := e.grant("mail-agent")
		g.UserIssuer = "https://login.example.com/'); DROP TABLE grants; --"
		g.UserSubject = `Robert'); DROP TABLE grant_events;-- "x" $1 ?1`
		g.Scopes = []string{"read'--", "x;DELETE", "$1", "?1"}
		g.Resources = []string{"urn:x:'or'1'='1", "https://api.example.com/q?x='%20OR%201=1--"}
		actor := grants.UserActor(g.UserIssuer, g.UserSubject)
		created := e.mustCreate(t, g, actor)
		got, err := e.store.FindActive(ctx, g.UserIssuer, g.UserSubject, g.ClientID)
		if err != nil {
			t.Fatalf("FindActive: %v", err)
		}
		if got.ID != created.ID || got.UserIssuer != g.UserIssuer || got.UserSubject != g.UserSubject ||
			!slices.Equal(got.Scopes, g.Scopes) || !slices.Equal(got.Resources, g.Resources) {
			t.Fatalf("round trip: got %+v, want %+v", got, g)
		}
		evs, err := e.store.Events(ctx, created.ID)
		if err != nil || len(evs) != 1 || evs[0].Actor != actor {
			t.Fatalf("events: %+v, %v", evs, err)
		}
	})
}

func TestStoreNarrow(t *testing.T) {
	ptr := func(v []string) *[]string { return &v }
	intp := func(v int) *int { return &v }
	durp := func(v time.Duration) *time.Duration { return &v }
	tests := []struct {
		name  string
		base  func(g *grants.Grant)
		n     func(now time.Time) grants.Narrowing
		field string // "" means the narrowing is accepted; "-" means refused with no field
		check func(t *testing.T, g *grants.Grant)
	}{
		{name: "drop a scope", n: func(time.Time) grants.Narrowing { return grants.Narrowing{Scopes: ptr([]string{"mail.read"})} },
			check: func(t *testing.T, g *grants.Grant) {
				if !slices.Equal(g.Scopes, []string{"mail.read"}) {
					t.Errorf("scopes: got %q", g.Scopes)
				}
			}},
		{name: "add a scope", n: func(time.Time) grants.Narrowing {
			return grants.Narrowing{Scopes: ptr([]string{"mail.read", "mail.delete"})}
		}, field: "scopes"},
		{name: "no scopes", n: func(time.Time) grants.Narrowing { return grants.Narrowing{Scopes: ptr(nil)} }, field: "scopes"},
		{name: "same scopes", n: func(time.Time) grants.Narrowing {
			return grants.Narrowing{Scopes: ptr([]string{"mail.read", "mail.search", "mail.send"})}
		}, field: "-"},
		{name: "empty narrowing", n: func(time.Time) grants.Narrowing { return grants.Narrowing{} }, field: "-"},
		{name: "sub-pattern", n: func(time.Time) grants.Narrowing {
			return grants.Narrowing{Resources: ptr([]string{"https://api.example.com/mail/inbox/*", "https://api.example.com/mail/sent"})}
		}},
		{name: "drop resources", n: func(time.Time) grants.Narrowing { return grants.Narrowing{Resources: ptr([]string{})} }},
		{name: "wider pattern", n: func(time.Time) grants.Narrowing {
			return grants.Narrowing{Resources: ptr([]string{"https://api.example.com/*"})}
		}, field: "resources"},
		{name: "new resource", n: func(time.Time) grants.Narrowing { return grants.Narrowing{Resources: ptr([]string{"calendar-api"})} }, field: "resources"},
		{name: "traversal", n: func(time.Time) grants.Narrowing {
			return grants.Narrowing{Resources: ptr([]string{"https://api.example.com/mail/../admin"})}
		}, field: "resources"},
		{name: "star resource", n: func(time.Time) grants.Narrowing { return grants.Narrowing{Resources: ptr([]string{"*"})} }, field: "resources"},
		{name: "drop sub-agent", n: func(time.Time) grants.Narrowing {
			return grants.Narrowing{AllowedSubAgents: ptr([]string{"summarizer"})}
		}},
		{name: "add sub-agent", n: func(time.Time) grants.Narrowing {
			return grants.Narrowing{AllowedSubAgents: ptr([]string{"summarizer", "mallory"})}
		}, field: "allowed_sub_agents"},
		{name: "any sub-agent", n: func(time.Time) grants.Narrowing { return grants.Narrowing{AllowedSubAgents: ptr([]string{"*"})} }, field: "allowed_sub_agents"},
		{name: "from any to one", base: func(g *grants.Grant) { g.AllowedSubAgents = []string{"*"} },
			n: func(time.Time) grants.Narrowing { return grants.Narrowing{AllowedSubAgents: ptr([]string{"mallory"})} }},
		{name: "lower depth", n: func(time.Time) grants.Narrowing { return grants.Narrowing{MaxDepth: intp(1)} }},
		{name: "raise depth", n: func(time.Time) grants.Narrowing { return grants.Narrowing{MaxDepth: intp(4)} }, field: "max_depth"},
		{name: "depth to default", n: func(time.Time) grants.Narrowing { return grants.Narrowing{MaxDepth: intp(0)} }, field: "max_depth"},
		{name: "depth from default", base: func(g *grants.Grant) { g.MaxDepth = 0 },
			n: func(time.Time) grants.Narrowing { return grants.Narrowing{MaxDepth: intp(5)} }},
		{name: "depth 11 from default", base: func(g *grants.Grant) { g.MaxDepth = 0 },
			n: func(time.Time) grants.Narrowing { return grants.Narrowing{MaxDepth: intp(11)} }, field: "max_depth"},
		{name: "lower lifetime", n: func(time.Time) grants.Narrowing { return grants.Narrowing{MaxLifetime: durp(time.Minute)} },
			check: func(t *testing.T, g *grants.Grant) {
				if g.MaxLifetime != time.Minute {
					t.Errorf("lifetime: got %v", g.MaxLifetime)
				}
			}},
		{name: "raise lifetime", n: func(time.Time) grants.Narrowing { return grants.Narrowing{MaxLifetime: durp(time.Hour)} }, field: "max_lifetime_seconds"},
		{name: "lifetime to default", n: func(time.Time) grants.Narrowing { return grants.Narrowing{MaxLifetime: durp(0)} }, field: "max_lifetime_seconds"},
		{name: "lifetime from default", base: func(g *grants.Grant) { g.MaxLifetime = 0 },
			n: func(time.Time) grants.Narrowing { return grants.Narrowing{MaxLifetime: durp(time.Hour)} }},
		{name: "earlier expiry", n: func(now time.Time) grants.Narrowing {
			e := now.Add(time.Hour)
			return grants.Narrowing{ExpiresAt: &e}
		}},
		{name: "later expiry", n: func(now time.Time) grants.Narrowing {
			e := now.Add(60 * 24 * time.Hour)
			return grants.Narrowing{ExpiresAt: &e}
		}, field: "expires_at"},
		{name: "past expiry", n: func(now time.Time) grants.Narrowing {
			e := now.Add(-time.Hour)
			return grants.Narrowing{ExpiresAt: &e}
		}, field: "expires_at"},
		{name: "one bad field refuses all", n: func(time.Time) grants.Narrowing {
			return grants.Narrowing{Scopes: ptr([]string{"mail.read"}), MaxDepth: intp(9)}
		}, field: "max_depth"},
	}
	eachBackend(t, func(t *testing.T, dialect db.Dialect) {
		ctx := context.Background()
		e := newEnv(t, dialect, grants.Options{})
		for i, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				g := e.grant(fmt.Sprintf("agent-%d", i))
				if tt.base != nil {
					tt.base(g)
				}
				g = e.mustCreate(t, g, alice)
				got, err := e.store.Narrow(ctx, g.ID, tt.n(e.clock.Now()), alice)
				if tt.field == "" {
					if err != nil {
						t.Fatalf("Narrow: %v", err)
					}
					if tt.check != nil {
						tt.check(t, got)
					}
					stored, _ := e.store.Get(ctx, g.ID)
					if !slices.Equal(stored.Scopes, got.Scopes) || !slices.Equal(stored.Resources, got.Resources) ||
						stored.MaxDepth != got.MaxDepth || !stored.ExpiresAt.Equal(got.ExpiresAt) {
						t.Fatalf("stored %+v, returned %+v", stored, got)
					}
					evs, err := e.store.Events(ctx, g.ID)
					if err != nil || len(evs) != 2 || evs[1].Action != grants.ActionNarrowed || evs[1].Seq != 2 || evs[1].Actor != alice {
						t.Fatalf("events: %+v, %v", evs, err)
					}
					return
				}
				var verr *grants.ValidationError
				if !errors.As(err, &verr) {
					t.Fatalf("Narrow: got %v, want a ValidationError", err)
				}
				if want := tt.field; want != "-" && verr.Field != want {
					t.Fatalf("Narrow: got field %q (%v), want %q", verr.Field, err, want)
				}
				stored, _ := e.store.Get(ctx, g.ID)
				if !slices.Equal(stored.Scopes, g.Scopes) || stored.MaxDepth != g.MaxDepth || !stored.ExpiresAt.Equal(g.ExpiresAt) {
					t.Fatalf("refused narrowing changed the grant: %+v", stored)
				}
				if evs, _ := e.store.Events(ctx, g.ID); len(evs) != 1 {
					t.Fatalf("refused narrowing recorded an event: %+v", evs)
				}
			})
		}
	})
}

func TestStoreNarrowEventDetail(t *testing.T) {
	eachBackend(t, func(t *testing.T, dialect db.Dialect) {
		ctx := context.Background()
		e := newEnv(t, dialect, grants.Options{})
		g := e.mustCreate(t, e.grant("mail-agent"), alice)
		scopes := []string{"mail.read"}
		depth := 2
		if _, err := e.store.Narrow(ctx, g.ID, grants.Narrowing{Scopes: &scopes, MaxDepth: &depth}, grants.AdminActor); err != nil {
			t.Fatal(err)
		}
		evs, err := e.store.Events(ctx, g.ID)
		if err != nil || len(evs) != 2 {
			t.Fatalf("events: %+v, %v", evs, err)
		}
		var created map[string]any
		if err := json.Unmarshal(evs[0].Detail, &created); err != nil || created["client_id"] != "mail-agent" {
			t.Fatalf("created detail: %s, %v", evs[0].Detail, err)
		}
		var detail map[string]struct{ From, To any }
		if err := json.Unmarshal(evs[1].Detail, &detail); err != nil {
			t.Fatalf("narrowed detail: %s: %v", evs[1].Detail, err)
		}
		if len(detail) != 2 || detail["max_depth"].From != 3.0 || detail["max_depth"].To != 2.0 {
			t.Fatalf("narrowed detail: %s", evs[1].Detail)
		}
		if evs[1].Actor != grants.AdminActor {
			t.Fatalf("actor: got %q", evs[1].Actor)
		}
	})
}

func TestStoreRevoke(t *testing.T) {
	eachBackend(t, func(t *testing.T, dialect db.Dialect) {
		ctx := context.Background()
		e := newEnv(t, dialect, grants.Options{MaxLifetime: 20 * time.Minute})
		g := e.mustCreate(t, e.grant("mail-agent"), alice)
		if _, err := e.store.FindActive(ctx, iss, sub, "mail-agent"); err != nil {
			t.Fatalf("FindActive before revoke: %v", err)
		}
		if _, err := e.store.ActiveByID(ctx, g.ID); err != nil {
			t.Fatalf("ActiveByID before revoke: %v", err)
		}
		now := e.clock.Now()
		if err := e.store.Revoke(ctx, g.ID, alice, "agent retired"); err != nil {
			t.Fatalf("Revoke: %v", err)
		}
		calls := e.rev.Calls()
		want := revokeCall{"grant", g.ID, "agent retired", now.Add(25 * time.Minute)}
		if len(calls) != 1 || calls[0].kind != want.kind || calls[0].id != want.id || calls[0].reason != want.reason || !calls[0].keepUntil.Equal(want.keepUntil) {
			t.Fatalf("Revoker calls: got %+v, want [%+v]", calls, want)
		}
		// The cache answered before; it must not answer now.
		if _, err := e.store.FindActive(ctx, iss, sub, "mail-agent"); !errors.Is(err, grants.ErrNotFound) {
			t.Fatalf("FindActive after revoke: got %v, want ErrNotFound", err)
		}
		_, err := e.store.ActiveByID(ctx, g.ID)
		if !errors.Is(err, grants.ErrNotFound) || !errors.Is(err, grants.ErrNotActive) {
			t.Fatalf("ActiveByID after revoke: got %v, want ErrNotFound and ErrNotActive", err)
		}
		got, err := e.store.Get(ctx, g.ID)
		if err != nil || got.Status != grants.StatusRevoked || !got.RevokedAt.Equal(now) {
			t.Fatalf("Get after revoke: %+v, %v", got, err)
		}
		// Idempotent: no new event, but the Revoker is called again.
		if err := e.store.Revoke(ctx, g.ID, grants.AdminActor, "again"); err != nil {
			t.Fatalf("second Revoke: %v", err)
		}
		if n := len(e.rev.Calls()); n != 2 {
			t.Fatalf("Revoker calls after second Revoke: %d, want 2", n)
		}
		evs, err := e.store.Events(ctx, g.ID)
		if err != nil || len(evs) != 2 || evs[1].Action != grants.ActionRevoked || string(evs[1].Detail) != `{"reason":"agent retired"}` {
			t.Fatalf("events: %+v, %v", evs, err)
		}
		scopes := []string{"mail.read"}
		if _, err := e.store.Narrow(ctx, g.ID, grants.Narrowing{Scopes: &scopes}, alice); !errors.Is(err, grants.ErrNotActive) {
			t.Fatalf("Narrow revoked: got %v, want ErrNotActive", err)
		}
		// The slot is free again.
		e.mustCreate(t, e.grant("mail-agent"), alice)
		if err := e.store.Revoke(ctx, "grt_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", grants.AdminActor, ""); !errors.Is(err, grants.ErrNotFound) {
			t.Fatalf("Revoke missing: got %v, want ErrNotFound", err)
		}
		if err := e.store.Revoke(ctx, g.ID, alice, "bad\x00reason"); err == nil {
			t.Fatal("Revoke accepted a NUL in the reason")
		}
	})
}

func TestStoreRevokePublishFailure(t *testing.T) {
	eachBackend(t, func(t *testing.T, dialect db.Dialect) {
		ctx := context.Background()
		e := newEnv(t, dialect, grants.Options{})
		g := e.mustCreate(t, e.grant("mail-agent"), alice)
		boom := errors.New("ledger unreachable")
		e.rev.setFail(boom)
		err := e.store.Revoke(ctx, g.ID, alice, "lost phone")
		if !errors.Is(err, grants.ErrNotPublished) || !errors.Is(err, boom) {
			t.Fatalf("Revoke with failing Revoker: got %v, want ErrNotPublished wrapping the cause", err)
		}
		// Recorded, and already refused locally.
		if _, err := e.store.ActiveByID(ctx, g.ID); !errors.Is(err, grants.ErrNotActive) {
			t.Fatalf("ActiveByID after failed publish: %v", err)
		}
		e.rev.setFail(nil)
		if err := e.store.Revoke(ctx, g.ID, alice, "lost phone"); err != nil {
			t.Fatalf("retry: %v", err)
		}
		if calls := e.rev.Calls(); len(calls) != 2 || calls[1].id != g.ID {
			t.Fatalf("Revoker calls: %+v", calls)
		}
		if evs, _ := e.store.Events(ctx, g.ID); len(evs) != 2 {
			t.Fatalf("retry recorded another event: %+v", evs)
		}
	})
}

func TestStoreRepublish(t *testing.T) {
	eachBackend(t, func(t *testing.T, dialect db.Dialect) {
		ctx := context.Background()
		e := newEnv(t, dialect, grants.Options{MaxLifetime: 10 * time.Minute})
		old := e.mustCreate(t, e.grant("old-agent"), alice)
		if err := e.store.Revoke(ctx, old.ID, alice, ""); err != nil {
			t.Fatal(err)
		}
		e.clock.Advance(time.Hour) // old's revocation no longer matters
		g := e.mustCreate(t, e.grant("mail-agent"), alice)
		e.rev.setFail(errors.New("down"))
		if err := e.store.Revoke(ctx, g.ID, alice, ""); !errors.Is(err, grants.ErrNotPublished) {
			t.Fatalf("Revoke: %v", err)
		}
		e.rev.setFail(nil)
		n, err := e.store.RepublishRevocations(ctx, e.clock.Now().Add(-2*time.Hour))
		if err != nil || n != 1 {
			t.Fatalf("RepublishRevocations: %d, %v; want 1", n, err)
		}
		calls := e.rev.Calls()
		last := calls[len(calls)-1]
		if last.id != g.ID || !last.keepUntil.Equal(e.clock.Now().Add(15*time.Minute)) {
			t.Fatalf("republished %+v", last)
		}
	})
}

func TestStoreOwnership(t *testing.T) {
	eachBackend(t, func(t *testing.T, dialect db.Dialect) {
		ctx := context.Background()
		e := newEnv(t, dialect, grants.Options{})
		g := e.mustCreate(t, e.grant("mail-agent"), alice)
		mallory := grants.UserActor(iss, "mallory")
		scopes := []string{"mail.read"}
		if _, err := e.store.Narrow(ctx, g.ID, grants.Narrowing{Scopes: &scopes}, mallory); !errors.Is(err, grants.ErrNotFound) {
			t.Fatalf("Narrow by another user: got %v, want ErrNotFound", err)
		}
		if err := e.store.Revoke(ctx, g.ID, mallory, ""); !errors.Is(err, grants.ErrNotFound) {
			t.Fatalf("Revoke by another user: got %v, want ErrNotFound", err)
		}
		if len(e.rev.Calls()) != 0 {
			t.Fatal("Revoker called for a refused revoke")
		}
		// Same subject at another issuer is another user.
		if err := e.store.Revoke(ctx, g.ID, grants.UserActor("https://other.example", sub), ""); !errors.Is(err, grants.ErrNotFound) {
			t.Fatalf("Revoke by same subject, other issuer: %v", err)
		}
	})
}

func TestStoreExpiry(t *testing.T) {
	eachBackend(t, func(t *testing.T, dialect db.Dialect) {
		ctx := context.Background()
		e := newEnv(t, dialect, grants.Options{})
		in := e.grant("mail-agent")
		in.ExpiresAt = e.clock.Now().Add(time.Minute)
		g := e.mustCreate(t, in, alice)
		if _, err := e.store.FindActive(ctx, iss, sub, "mail-agent"); err != nil {
			t.Fatalf("FindActive: %v", err)
		}
		e.clock.Advance(time.Minute)
		// Even a cached entry is not served past its expiry.
		if _, err := e.store.FindActive(ctx, iss, sub, "mail-agent"); !errors.Is(err, grants.ErrNotFound) {
			t.Fatalf("FindActive at expiry: got %v, want ErrNotFound", err)
		}
		if _, err := e.store.ActiveByID(ctx, g.ID); !errors.Is(err, grants.ErrNotActive) {
			t.Fatalf("ActiveByID at expiry: got %v, want ErrNotActive", err)
		}
		got, _ := e.store.Get(ctx, g.ID)
		if got.Status != grants.StatusExpired {
			t.Fatalf("status: got %q, want expired", got.Status)
		}
		if list, _ := e.store.List(ctx, grants.Filter{Status: grants.StatusExpired}); len(list) != 1 {
			t.Fatalf("expired list: %d", len(list))
		}
		scopes := []string{"mail.read"}
		if _, err := e.store.Narrow(ctx, g.ID, grants.Narrowing{Scopes: &scopes}, alice); !errors.Is(err, grants.ErrNotActive) {
			t.Fatalf("Narrow expired: got %v, want ErrNotActive", err)
		}
		// An expired grant does not block a new one.
		g2 := e.mustCreate(t, e.grant("mail-agent"), alice)
		if f, err := e.store.FindActive(ctx, iss, sub, "mail-agent"); err != nil || f.ID != g2.ID {
			t.Fatalf("FindActive after re-grant: %+v, %v", f, err)
		}
		if got, _ := e.store.Get(ctx, g.ID); got.Status != grants.StatusExpired {
			t.Fatalf("old grant status: %q", got.Status)
		}
		if list, _ := e.store.List(ctx, grants.Filter{Status: grants.StatusExpired}); len(list) != 1 {
			t.Fatalf("expired list after re-grant: %d", len(list))
		}
	})
}

func TestStoreCache(t *testing.T) {
	eachBackend(t, func(t *testing.T, dialect db.Dialect) {
		ctx := context.Background()
		e := newEnv(t, dialect, grants.Options{})
		// A miss is cached too, but a local Create invalidates it at once.
		if _, err := e.store.FindActive(ctx, iss, sub, "mail-agent"); !errors.Is(err, grants.ErrNotFound) {
			t.Fatalf("FindActive before create: %v", err)
		}
		g := e.mustCreate(t, e.grant("mail-agent"), alice)
		if _, err := e.store.FindActive(ctx, iss, sub, "mail-agent"); err != nil {
			t.Fatalf("FindActive after create: %v", err)
		}
		if _, err := e.store.ActiveByID(ctx, g.ID); err != nil {
			t.Fatalf("ActiveByID: %v", err)
		}
		// Another node revokes behind this Store's back: the cache still
		// answers within its TTL...
		if _, err := e.d.Exec(ctx, `UPDATE grants SET status = 'revoked' WHERE id = $1`, g.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := e.store.FindActive(ctx, iss, sub, "mail-agent"); err != nil {
			t.Fatalf("cached FindActive: %v", err)
		}
		if _, err := e.store.ActiveByID(ctx, g.ID); err != nil {
			t.Fatalf("cached ActiveByID: %v", err)
		}
		// ...until the TTL passes,
		e.clock.Advance(grants.DefaultCacheTTL)
		if _, err := e.store.FindActive(ctx, iss, sub, "mail-agent"); !errors.Is(err, grants.ErrNotFound) {
			t.Fatalf("FindActive after TTL: %v", err)
		}
		// ...or a listener calls Invalidate.
		if _, err := e.d.Exec(ctx, `UPDATE grants SET status = 'active' WHERE id = $1`, g.ID); err != nil {
			t.Fatal(err)
		}
		e.store.Invalidate(g.ID)
		if _, err := e.store.ActiveByID(ctx, g.ID); err != nil {
			t.Fatalf("ActiveByID: %v", err)
		}
		if _, err := e.store.FindActive(ctx, iss, sub, "mail-agent"); err != nil {
			t.Fatalf("FindActive: %v", err)
		}
		if _, err := e.d.Exec(ctx, `UPDATE grants SET status = 'revoked' WHERE id = $1`, g.ID); err != nil {
			t.Fatal(err)
		}
		e.store.Invalidate(g.ID)
		if _, err := e.store.ActiveByID(ctx, g.ID); !errors.Is(err, grants.ErrNotActive) {
			t.Fatalf("ActiveByID after Invalidate: %v", err)
		}
		if _, err := e.store.FindActive(ctx, iss, sub, "mail-agent"); !errors.Is(err, grants.ErrNotFound) {
			t.Fatalf("FindActive after Invalidate: %v", err)
		}
		// Returned grants are copies: changing one does not change the cache.
		g2 := e.mustCreate(t, e.grant("other-agent"), alice)
		a, _ := e.store.ActiveByID(ctx, g2.ID)
		a.Scopes[0] = "admin"
		b, _ := e.store.ActiveByID(ctx, g2.ID)
		if b.Scopes[0] == "admin" {
			t.Fatal("cache handed out a shared grant")
		}
		if _, err := e.store.ActiveByID(ctx, "not-an-id"); !errors.Is(err, grants.ErrNotFound) {
			t.Fatalf("ActiveByID bad id: %v", err)
		}
		if _, err := e.store.FindActive(ctx, iss, "a\x00b", "mail-agent"); !errors.Is(err, grants.ErrNotFound) {
			t.Fatalf("FindActive NUL subject: %v", err)
		}
	})
}

func TestStoreConcurrentCreate(t *testing.T) {
	eachBackend(t, func(t *testing.T, dialect db.Dialect) {
		ctx := context.Background()
		e := newEnv(t, dialect, grants.Options{})
		const n = 10
		errs := make([]error, n)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range n {
			wg.Go(func() {
				<-start
				_, errs[i] = e.store.Create(ctx, e.grant("mail-agent"), alice)
			})
		}
		close(start)
		wg.Wait()
		ok := 0
		for _, err := range errs {
			switch {
			case err == nil:
				ok++
			case errors.Is(err, grants.ErrExists):
			default:
				t.Errorf("Create: unexpected error %v", err)
			}
		}
		if ok != 1 {
			t.Fatalf("%d creates succeeded, want exactly 1", ok)
		}
		if list, _ := e.store.List(ctx, grants.Filter{}); len(list) != 1 {
			t.Fatalf("%d grants stored, want 1", len(list))
		}
	})
}

func TestStoreConcurrentNarrow(t *testing.T) {
	eachBackend(t, func(t *testing.T, dialect db.Dialect) {
		ctx := context.Background()
		e := newEnv(t, dialect, grants.Options{})
		in := e.grant("mail-agent")
		in.MaxDepth = 10
		g := e.mustCreate(t, in, alice)
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Go(func() {
				d := 9 - i
				if _, err := e.store.Narrow(ctx, g.ID, grants.Narrowing{MaxDepth: &d}, alice); err != nil {
					var verr *grants.ValidationError
					if !errors.As(err, &verr) { // raising what another narrowed first is refused
						t.Errorf("Narrow: %v", err)
					}
				}
			})
		}
		wg.Wait()
		got, _ := e.store.Get(ctx, g.ID)
		evs, err := e.store.Events(ctx, g.ID)
		if err != nil {
			t.Fatal(err)
		}
		for i, ev := range evs {
			if ev.Seq != int64(i+1) {
				t.Fatalf("event seqs not 1..n: %+v", evs)
			}
		}
		if got.MaxDepth != 2 { // the lowest always applies, whenever it runs
			t.Fatalf("depth: got %d, want 2", got.MaxDepth)
		}
	})
}
