package clients_test

import (
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ory/fosite"

	"github.com/mandate-dev/mandate/broker/clients"
	"github.com/mandate-dev/mandate/internal/db"
	"github.com/mandate-dev/mandate/internal/db/dbtest"
)

// TestStoreContract runs the store's contract on every backend.
func TestStoreContract(t *testing.T) {
	for _, d := range dbtest.Backends() {
		t.Run(string(d), func(t *testing.T) {
			t.Run("CreateGet", func(t *testing.T) { testCreateGet(t, dbtest.Open(t, d)) })
			t.Run("CreateDuplicate", func(t *testing.T) { testCreateDuplicate(t, dbtest.Open(t, d)) })
			t.Run("List", func(t *testing.T) { testList(t, dbtest.Open(t, d)) })
			t.Run("Update", func(t *testing.T) { testUpdate(t, dbtest.Open(t, d)) })
			t.Run("RotateSecret", func(t *testing.T) { testRotateSecret(t, dbtest.Open(t, d)) })
			t.Run("Disable", func(t *testing.T) { testDisable(t, dbtest.Open(t, d)) })
			t.Run("Delete", func(t *testing.T) { testDelete(t, dbtest.Open(t, d)) })
			t.Run("NotFound", func(t *testing.T) { testNotFound(t, dbtest.Open(t, d)) })
			t.Run("CacheTTL", func(t *testing.T) { testCacheTTL(t, dbtest.Open(t, d)) })
			t.Run("ReadYourWrites", func(t *testing.T) { testReadYourWrites(t, dbtest.Open(t, d)) })
			t.Run("CacheBound", func(t *testing.T) { testCacheBound(t, dbtest.Open(t, d)) })
			t.Run("CachedGetSkipsDatabase", func(t *testing.T) { testCachedGetSkipsDatabase(t, dbtest.Open(t, d)) })
			t.Run("JTIReplay", func(t *testing.T) { testJTIReplay(t, dbtest.Open(t, d)) })
			t.Run("JTIConcurrent", func(t *testing.T) { testJTIConcurrent(t, dbtest.Open(t, d)) })
			t.Run("JTISweep", func(t *testing.T) { testJTISweep(t, dbtest.Open(t, d)) })
		})
	}
}

func testCreateGet(t *testing.T, d *db.DB) {
	ctx := context.Background()
	clock := newClock()
	s := newStore(t, d, clock)
	c := &clients.Client{
		Name: "Travel agent", Type: clients.TypeAgent, AuthMethod: clients.AuthClientSecretPost,
		Scopes: []string{"calendar.read", "mail.send"}, Audiences: []string{"https://calendar.example.com"},
		MayImpersonate: true, FirstParty: true,
	}
	secret, err := s.Create(ctx, c)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if !strings.HasPrefix(secret, clients.SecretPrefix) || len(secret) != len(clients.SecretPrefix)+43 {
		t.Fatalf("secret: got %q, want %s and 43 base64url characters", secret, clients.SecretPrefix)
	}
	if !strings.HasPrefix(c.ID, "agt_") {
		t.Fatalf("id: got %q, want a generated agt_ id", c.ID)
	}
	got, err := s.Get(ctx, c.ID)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if got.Name != c.Name || got.Type != clients.TypeAgent || got.AuthMethod != clients.AuthClientSecretPost ||
		!slices.Equal(got.Scopes, c.Scopes) || !slices.Equal(got.Audiences, c.Audiences) ||
		!slices.Equal(got.GrantTypes, []string{clients.GrantTokenExchange}) ||
		!got.MayImpersonate || !got.FirstParty || got.Disabled {
		t.Fatalf("Get: got %+v, want %+v", got, c)
	}
	if !got.CreatedAt.Equal(clock.Now()) || !got.UpdatedAt.Equal(clock.Now()) {
		t.Fatalf("timestamps: got %v/%v, want %v", got.CreatedAt, got.UpdatedAt, clock.Now())
	}
	if err := newHasher().Compare(ctx, got.SecretHash, []byte(secret)); err != nil {
		t.Fatalf("stored hash does not match the returned secret: %v", err)
	}
	if strings.Contains(string(got.SecretHash), secret) {
		t.Fatalf("secret stored in clear")
	}
	// The copy Get returns is the caller's own.
	got.Scopes[0] = "tampered"
	again, _ := s.Get(ctx, c.ID)
	if again.Scopes[0] != "calendar.read" {
		t.Fatalf("mutating a returned client changed the cache: %v", again.Scopes)
	}
	b, _ := json.Marshal(got)
	hashJSON, _ := json.Marshal(got.SecretHash)
	if strings.Contains(string(b), "secret_hash") || strings.Contains(string(b), strings.Trim(string(hashJSON), `"`)) {
		t.Fatalf("client JSON carries the secret hash: %s", b)
	}

	// private_key_jwt: no secret, JWKS kept in normalised form, booleans false.
	testKeys(t)
	k := &clients.Client{ID: "signer-1", Name: "Signer", Type: clients.TypeApp, AuthMethod: clients.AuthPrivateKeyJWT,
		JWKS: jwksOf(t, map[string]crypto.Signer{"k1": ecP256}, "")}
	secret, err = s.Create(ctx, k)
	if err != nil || secret != "" {
		t.Fatalf("Create private_key_jwt: got %q, %v; want no secret", secret, err)
	}
	got, err = s.Get(ctx, "signer-1")
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if got.SecretHash != nil || got.MayImpersonate || got.FirstParty || got.Disabled || !strings.Contains(string(got.JWKS), `"use":"sig"`) {
		t.Fatalf("private_key_jwt client: got %+v", got)
	}
	if !slices.Equal(got.GrantTypes, []string{clients.GrantTokenExchange, clients.GrantClientCredentials}) {
		t.Fatalf("app grant types: got %v", got.GrantTypes)
	}

	// A hash supplied by the caller is ignored: secrets are server-generated.
	h := &clients.Client{ID: "own-hash", Name: "x", Type: clients.TypeApp, SecretHash: []byte("attacker-chosen")}
	secret, err = s.Create(ctx, h)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	got, _ = s.Get(ctx, "own-hash")
	if newHasher().Compare(ctx, got.SecretHash, []byte(secret)) != nil {
		t.Fatalf("caller-supplied SecretHash was stored")
	}

	// Validation errors come back as *ValidationError and nothing is written.
	_, err = s.Create(ctx, &clients.Client{ID: "bad", Name: "", Type: clients.TypeApp})
	checkField(t, err, "name")
	if _, err := s.Get(ctx, "bad"); !errors.Is(err, clients.ErrNotFound) {
		t.Fatalf("invalid client was stored: %v", err)
	}
}

func testCreateDuplicate(t *testing.T, d *db.DB) {
	ctx := context.Background()
	s := newStore(t, d, nil)
	if _, err := s.Create(ctx, &clients.Client{ID: "dup", Name: "A", Type: clients.TypeApp}); err != nil {
		t.Fatalf("Create: %v", err)
	}
	_, err := s.Create(ctx, &clients.Client{ID: "dup", Name: "B", Type: clients.TypeAgent})
	if !errors.Is(err, clients.ErrExists) || !errors.Is(err, db.ErrConflict) {
		t.Fatalf("duplicate: got %v, want ErrExists wrapping db.ErrConflict", err)
	}
	got, _ := s.Get(ctx, "dup")
	if got.Name != "A" {
		t.Fatalf("duplicate create changed the client: %+v", got)
	}
}

func testList(t *testing.T, d *db.DB) {
	ctx := context.Background()
	s := newStore(t, d, nil)
	list, err := s.List(ctx)
	if err != nil || len(list) != 0 || list == nil {
		t.Fatalf("empty List: got %v, %v; want empty non-nil", list, err)
	}
	for _, id := range []string{"c", "a", "b"} {
		if _, err := s.Create(ctx, &clients.Client{ID: id, Name: id, Type: clients.TypeApp, Scopes: []string{"s-" + id}}); err != nil {
			t.Fatalf("Create %s: %v", id, err)
		}
	}
	list, err = s.List(ctx)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	var ids []string
	for _, c := range list {
		ids = append(ids, c.ID)
		if !slices.Equal(c.Scopes, []string{"s-" + c.ID}) {
			t.Errorf("List %s: scopes %v", c.ID, c.Scopes)
		}
	}
	if !slices.Equal(ids, []string{"a", "b", "c"}) {
		t.Fatalf("List: got %v, want [a b c]", ids)
	}
}

func ptr[T any](v T) *T { return &v }

func testUpdate(t *testing.T, d *db.DB) {
	ctx := context.Background()
	clock := newClock()
	s := newStore(t, d, clock)
	c := &clients.Client{ID: "u1", Name: "Old", Type: clients.TypeAgent, Scopes: []string{"a"}}
	secret, err := s.Create(ctx, c)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	s.Get(ctx, "u1") // warm the cache: the update must invalidate it
	clock.Add(time.Minute)
	got, err := s.Update(ctx, "u1", clients.Patch{
		Name:           ptr("New"),
		Scopes:         ptr([]string{"a", "b"}),
		Audiences:      ptr([]string{"https://api.example.com"}),
		GrantTypes:     ptr([]string{clients.GrantClientCredentials}),
		MayImpersonate: ptr(true),
		FirstParty:     ptr(true),
	})
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	if got.Name != "New" || !slices.Equal(got.Scopes, []string{"a", "b"}) || !got.MayImpersonate || !got.FirstParty ||
		!slices.Equal(got.GrantTypes, []string{clients.GrantClientCredentials}) {
		t.Fatalf("Update: got %+v", got)
	}
	if !got.UpdatedAt.Equal(clock.Now()) || got.CreatedAt.Equal(got.UpdatedAt) {
		t.Fatalf("Update timestamps: created %v updated %v, now %v", got.CreatedAt, got.UpdatedAt, clock.Now())
	}
	cached, _ := s.Get(ctx, "u1")
	if cached.Name != "New" {
		t.Fatalf("Get after local Update: got %q, want New (local writes invalidate at once)", cached.Name)
	}
	if newHasher().Compare(ctx, cached.SecretHash, []byte(secret)) != nil {
		t.Fatalf("Update lost the secret hash")
	}

	// A patch that leaves the client invalid changes nothing.
	_, err = s.Update(ctx, "u1", clients.Patch{Name: ptr("Newer"), Scopes: ptr([]string{"bad scope"})})
	checkField(t, err, "scopes")
	_, err = s.Update(ctx, "u1", clients.Patch{JWKS: ptr(jwksOf(t, map[string]crypto.Signer{"k": mustP256(t)}, ""))})
	checkField(t, err, "jwks")
	after, _ := s.Get(ctx, "u1")
	if after.Name != "New" {
		t.Fatalf("failed Update changed the client: %+v", after)
	}

	// Empty grant types fall back to the type's default; disabling through a patch.
	got, err = s.Update(ctx, "u1", clients.Patch{GrantTypes: ptr([]string{}), Disabled: ptr(true)})
	if err != nil || !slices.Equal(got.GrantTypes, []string{clients.GrantTokenExchange}) || !got.Disabled {
		t.Fatalf("Update defaults: got %+v, %v", got, err)
	}

	// Replacing a private_key_jwt client's keys.
	testKeys(t)
	k := &clients.Client{ID: "u2", Name: "Signer", Type: clients.TypeAgent, AuthMethod: clients.AuthPrivateKeyJWT,
		JWKS: jwksOf(t, map[string]crypto.Signer{"old": ecP256}, "")}
	if _, err := s.Create(ctx, k); err != nil {
		t.Fatalf("Create: %v", err)
	}
	got, err = s.Update(ctx, "u2", clients.Patch{JWKS: ptr(jwksOf(t, map[string]crypto.Signer{"new": rsa2048}, ""))})
	if err != nil || !strings.Contains(string(got.JWKS), `"kid":"new"`) || !strings.Contains(string(got.JWKS), `"RS256"`) {
		t.Fatalf("Update JWKS: got %s, %v", got.JWKS, err)
	}
	_, err = s.Update(ctx, "u2", clients.Patch{JWKS: ptr(json.RawMessage(`null`))})
	checkField(t, err, "jwks")

	if _, err := s.Update(ctx, "nope", clients.Patch{Name: ptr("x")}); !errors.Is(err, clients.ErrNotFound) {
		t.Fatalf("Update unknown: got %v, want ErrNotFound", err)
	}
}

func testRotateSecret(t *testing.T, d *db.DB) {
	ctx := context.Background()
	s := newStore(t, d, nil)
	h := newHasher()
	c := &clients.Client{ID: "r1", Name: "R", Type: clients.TypeApp}
	old, err := s.Create(ctx, c)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	fc, err := s.GetClient(ctx, "r1") // cached now
	if err != nil || h.Compare(ctx, fc.GetHashedSecret(), []byte(old)) != nil {
		t.Fatalf("old secret before rotation: %v", err)
	}
	fresh, err := s.RotateSecret(ctx, "r1")
	if err != nil {
		t.Fatalf("RotateSecret: %v", err)
	}
	if fresh == old || !strings.HasPrefix(fresh, clients.SecretPrefix) {
		t.Fatalf("RotateSecret: got %q, want a new secret", fresh)
	}
	fc, err = s.GetClient(ctx, "r1")
	if err != nil {
		t.Fatalf("GetClient: %v", err)
	}
	if h.Compare(ctx, fc.GetHashedSecret(), []byte(old)) == nil {
		t.Fatalf("old secret still works after rotation")
	}
	if h.Compare(ctx, fc.GetHashedSecret(), []byte(fresh)) != nil {
		t.Fatalf("new secret does not work")
	}

	testKeys(t)
	k := &clients.Client{ID: "r2", Name: "K", Type: clients.TypeAgent, AuthMethod: clients.AuthPrivateKeyJWT,
		JWKS: jwksOf(t, map[string]crypto.Signer{"k": ecP256}, "")}
	if _, err := s.Create(ctx, k); err != nil {
		t.Fatalf("Create: %v", err)
	}
	_, err = s.RotateSecret(ctx, "r2")
	checkField(t, err, "token_endpoint_auth_method")
	if _, err := s.RotateSecret(ctx, "nope"); !errors.Is(err, clients.ErrNotFound) {
		t.Fatalf("RotateSecret unknown: got %v, want ErrNotFound", err)
	}
}

func testDisable(t *testing.T, d *db.DB) {
	ctx := context.Background()
	s := newStore(t, d, nil)
	if _, err := s.Create(ctx, &clients.Client{ID: "d1", Name: "D", Type: clients.TypeAgent}); err != nil {
		t.Fatalf("Create: %v", err)
	}
	if _, err := s.GetClient(ctx, "d1"); err != nil {
		t.Fatalf("GetClient: %v", err)
	}
	if err := s.SetDisabled(ctx, "d1", true); err != nil {
		t.Fatalf("SetDisabled: %v", err)
	}
	if _, err := s.GetClient(ctx, "d1"); !errors.Is(err, fosite.ErrNotFound) {
		t.Fatalf("GetClient disabled: got %v, want fosite.ErrNotFound", err)
	}
	got, err := s.Get(ctx, "d1")
	if err != nil || !got.Disabled {
		t.Fatalf("Get disabled: got %+v, %v; want Disabled", got, err)
	}
	if err := s.SetDisabled(ctx, "d1", false); err != nil {
		t.Fatalf("SetDisabled false: %v", err)
	}
	if _, err := s.GetClient(ctx, "d1"); err != nil {
		t.Fatalf("GetClient re-enabled: %v", err)
	}
	if err := s.SetDisabled(ctx, "nope", true); !errors.Is(err, clients.ErrNotFound) {
		t.Fatalf("SetDisabled unknown: got %v, want ErrNotFound", err)
	}
}

func testDelete(t *testing.T, d *db.DB) {
	ctx := context.Background()
	s := newStore(t, d, nil)
	if _, err := s.Create(ctx, &clients.Client{ID: "x1", Name: "X", Type: clients.TypeApp}); err != nil {
		t.Fatalf("Create: %v", err)
	}
	s.Get(ctx, "x1")
	if err := s.Delete(ctx, "x1"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := s.Get(ctx, "x1"); !errors.Is(err, clients.ErrNotFound) {
		t.Fatalf("Get after Delete: got %v, want ErrNotFound", err)
	}
	if _, err := s.GetClient(ctx, "x1"); !errors.Is(err, fosite.ErrNotFound) {
		t.Fatalf("GetClient after Delete: got %v, want fosite.ErrNotFound", err)
	}
	if err := s.Delete(ctx, "x1"); !errors.Is(err, clients.ErrNotFound) {
		t.Fatalf("second Delete: got %v, want ErrNotFound", err)
	}
	// The id can be registered again.
	if _, err := s.Create(ctx, &clients.Client{ID: "x1", Name: "X2", Type: clients.TypeApp}); err != nil {
		t.Fatalf("re-Create: %v", err)
	}
}

func testNotFound(t *testing.T, d *db.DB) {
	ctx := context.Background()
	s := newStore(t, d, nil)
	for _, id := range []string{"", "nope", "../etc/passwd", "a\x00b", "\xff\xfe", "x' OR '1'='1", strings.Repeat("a", 10000)} {
		_, err := s.Get(ctx, id)
		if !errors.Is(err, clients.ErrNotFound) {
			t.Errorf("Get(%q): got %v, want ErrNotFound", id, err)
		}
		if _, err := s.GetClient(ctx, id); !errors.Is(err, fosite.ErrNotFound) {
			t.Errorf("GetClient(%q): got %v, want fosite.ErrNotFound", id, err)
		}
	}
	if _, err := s.Get(ctx, "nope"); !errors.Is(err, db.ErrNotFound) {
		t.Errorf("Get(nope): got %v, want it to wrap db.ErrNotFound too", err)
	}
}

// testCacheTTL plays two broker nodes over one database.
func testCacheTTL(t *testing.T, d *db.DB) {
	ctx := context.Background()
	clock := newClock()
	a, b := newStore(t, d, clock), newStore(t, d, clock)
	if _, err := a.Create(ctx, &clients.Client{ID: "n1", Name: "Before", Type: clients.TypeAgent}); err != nil {
		t.Fatalf("Create: %v", err)
	}
	if got, _ := a.Get(ctx, "n1"); got.Name != "Before" {
		t.Fatalf("Get: %q", got.Name)
	}
	if _, err := b.Update(ctx, "n1", clients.Patch{Name: ptr("After")}); err != nil {
		t.Fatalf("Update on node b: %v", err)
	}
	if err := b.SetDisabled(ctx, "n1", true); err != nil {
		t.Fatalf("SetDisabled on node b: %v", err)
	}
	clock.Add(clients.DefaultCacheTTL - time.Second)
	if got, _ := a.Get(ctx, "n1"); got.Name != "Before" {
		t.Fatalf("within the TTL node a should still serve its cached copy, got %q", got.Name)
	}
	clock.Add(time.Second)
	if got, _ := a.Get(ctx, "n1"); got.Name != "After" {
		t.Fatalf("after the TTL node a should see node b's change, got %q", got.Name)
	}
	if _, err := a.GetClient(ctx, "n1"); !errors.Is(err, fosite.ErrNotFound) {
		t.Fatalf("after the TTL node a should see the client disabled, got %v", err)
	}

	// Invalidate brings another node's change in at once.
	if err := b.SetDisabled(ctx, "n1", false); err != nil {
		t.Fatalf("SetDisabled: %v", err)
	}
	if _, err := a.GetClient(ctx, "n1"); err == nil {
		t.Fatalf("node a saw the change before its TTL or Invalidate")
	}
	a.Invalidate("n1")
	if _, err := a.GetClient(ctx, "n1"); err != nil {
		t.Fatalf("after Invalidate: %v", err)
	}
	// Deletion on another node, then InvalidateAll.
	if err := b.Delete(ctx, "n1"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	a.InvalidateAll()
	if _, err := a.Get(ctx, "n1"); !errors.Is(err, clients.ErrNotFound) {
		t.Fatalf("after InvalidateAll: got %v, want ErrNotFound", err)
	}

	// A negative TTL turns the cache off.
	off, err := clients.NewStore(d, newHasher(), clients.StoreOptions{Clock: clock.Now, CacheTTL: -1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Create(ctx, &clients.Client{ID: "n2", Name: "One", Type: clients.TypeApp}); err != nil {
		t.Fatal(err)
	}
	off.Get(ctx, "n2")
	b.Update(ctx, "n2", clients.Patch{Name: ptr("Two")})
	if got, _ := off.Get(ctx, "n2"); got.Name != "Two" {
		t.Fatalf("uncached store served a stale copy: %q", got.Name)
	}
}

// testReadYourWrites races cache fills against local writes: once Update returns,
// Get on the same Store must never serve the old version, even if a concurrent
// lookup read the old row just before the write.
func testReadYourWrites(t *testing.T, d *db.DB) {
	ctx := context.Background()
	s := newStore(t, d, nil)
	if _, err := s.Create(ctx, &clients.Client{ID: "ryw", Name: "v0", Type: clients.TypeAgent}); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
					s.Get(ctx, "ryw")
				}
			}
		}()
	}
	for i := 1; i <= 30; i++ {
		want := fmt.Sprintf("v%d", i)
		if _, err := s.Update(ctx, "ryw", clients.Patch{Name: &want}); err != nil {
			t.Fatal(err)
		}
		if got, err := s.Get(ctx, "ryw"); err != nil || got.Name != want {
			close(stop)
			wg.Wait()
			t.Fatalf("Get right after Update: got %q, %v; want %q", got.Name, err, want)
		}
	}
	close(stop)
	wg.Wait()
}

// testCacheBound checks that a full cache keeps its live entries and serves
// further clients from the database, and that expired entries make room.
func testCacheBound(t *testing.T, d *db.DB) {
	ctx := context.Background()
	clock := newClock()
	s, err := clients.NewStore(d, newHasher(), clients.StoreOptions{Clock: clock.Now, CacheMaxEntries: 2})
	if err != nil {
		t.Fatal(err)
	}
	other := newStore(t, d, clock)
	for _, id := range []string{"a", "b", "c"} {
		if _, err := s.Create(ctx, &clients.Client{ID: id, Name: "v1", Type: clients.TypeApp}); err != nil {
			t.Fatal(err)
		}
		s.Get(ctx, id)
	}
	for _, id := range []string{"a", "b", "c"} {
		if _, err := other.Update(ctx, id, clients.Patch{Name: ptr("v2")}); err != nil {
			t.Fatal(err)
		}
	}
	for id, want := range map[string]string{"a": "v1", "b": "v1", "c": "v2"} {
		if got, _ := s.Get(ctx, id); got.Name != want {
			t.Errorf("full cache, %s: got %q, want %q", id, got.Name, want)
		}
	}
	clock.Add(clients.DefaultCacheTTL)
	s.Get(ctx, "c") // the expired a and b make room for c
	other.Update(ctx, "c", clients.Patch{Name: ptr("v3")})
	if got, _ := s.Get(ctx, "c"); got.Name != "v2" {
		t.Errorf("after expiry c should be cached: got %q, want v2", got.Name)
	}
}

func testCachedGetSkipsDatabase(t *testing.T, d *db.DB) {
	ctx := context.Background()
	s := newStore(t, d, newClock())
	if _, err := s.Create(ctx, &clients.Client{ID: "hot", Name: "Hot", Type: clients.TypeAgent}); err != nil {
		t.Fatalf("Create: %v", err)
	}
	if _, err := s.Create(ctx, &clients.Client{ID: "cold", Name: "Cold", Type: clients.TypeAgent}); err != nil {
		t.Fatalf("Create: %v", err)
	}
	if _, err := s.GetClient(ctx, "hot"); err != nil {
		t.Fatalf("GetClient: %v", err)
	}
	d.Close() // from here on, any database access fails
	if _, err := s.GetClient(ctx, "hot"); err != nil {
		t.Fatalf("cached GetClient touched the database: %v", err)
	}
	if _, err := s.Get(ctx, "hot"); err != nil {
		t.Fatalf("cached Get touched the database: %v", err)
	}
	if _, err := s.Get(ctx, "cold"); err == nil || errors.Is(err, clients.ErrNotFound) {
		t.Fatalf("uncached Get with the database closed: got %v, want a database error", err)
	}
}

func testJTIReplay(t *testing.T, d *db.DB) {
	ctx := context.Background()
	clock := newClock()
	s := newStore(t, d, clock)
	jtis := []string{"jti-1", strings.Repeat("long", 1000), "nul\x00byte", "bad\xffutf8", "sha256:abc"}
	for _, jti := range jtis {
		if err := s.ClientAssertionJWTValid(ctx, jti); err != nil {
			t.Fatalf("fresh jti %.20q: got %v, want nil", jti, err)
		}
		exp := clock.Now().Add(5 * time.Minute)
		if err := s.SetClientAssertionJWT(ctx, jti, exp); err != nil {
			t.Fatalf("SetClientAssertionJWT %.20q: %v", jti, err)
		}
		if err := s.ClientAssertionJWTValid(ctx, jti); !errors.Is(err, fosite.ErrJTIKnown) {
			t.Fatalf("used jti %.20q: got %v, want ErrJTIKnown", jti, err)
		}
		if err := s.SetClientAssertionJWT(ctx, jti, exp); !errors.Is(err, fosite.ErrJTIKnown) {
			t.Fatalf("replayed jti %.20q: got %v, want ErrJTIKnown", jti, err)
		}
	}
	// Once the assertion has expired its jti is no longer a replay (the assertion
	// itself is refused for its exp), and recording it again works.
	clock.Add(5*time.Minute + time.Second)
	if err := s.ClientAssertionJWTValid(ctx, "jti-1"); err != nil {
		t.Fatalf("expired jti: got %v, want nil", err)
	}
	if err := s.SetClientAssertionJWT(ctx, "jti-1", clock.Now().Add(time.Minute)); err != nil {
		t.Fatalf("re-recording an expired jti: %v", err)
	}
	if err := s.ClientAssertionJWTValid(ctx, "jti-1"); !errors.Is(err, fosite.ErrJTIKnown) {
		t.Fatalf("re-recorded jti: got %v, want ErrJTIKnown", err)
	}
	// Distinct long jtis do not collide.
	a, b := strings.Repeat("x", 300)+"a", strings.Repeat("x", 300)+"b"
	if err := s.SetClientAssertionJWT(ctx, a, clock.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := s.ClientAssertionJWTValid(ctx, b); err != nil {
		t.Fatalf("a distinct long jti is known: %v", err)
	}
}

func testJTIConcurrent(t *testing.T, d *db.DB) {
	ctx := context.Background()
	clock := newClock()
	// Two nodes, so the race is between stores too, not only goroutines.
	nodes := []*clients.Store{newStore(t, d, clock), newStore(t, d, clock)}
	for round := range 5 {
		jti := fmt.Sprintf("race-%d", round)
		exp := clock.Now().Add(time.Minute)
		var wg sync.WaitGroup
		errs := make([]error, 10)
		start := make(chan struct{})
		for i := range errs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				s := nodes[i%2]
				// Even rounds race the inserts alone; odd rounds run fosite's
				// check-then-record sequence.
				if round%2 == 1 {
					if err := s.ClientAssertionJWTValid(ctx, jti); err != nil {
						errs[i] = err
						return
					}
				}
				errs[i] = s.SetClientAssertionJWT(ctx, jti, exp)
			}()
		}
		close(start)
		wg.Wait()
		ok := 0
		for i, err := range errs {
			switch {
			case err == nil:
				ok++
			case errors.Is(err, fosite.ErrJTIKnown):
			default:
				t.Errorf("round %d goroutine %d: got %v, want nil or ErrJTIKnown", round, i, err)
			}
		}
		if ok != 1 {
			t.Fatalf("round %d: %d of 10 concurrent uses of one jti succeeded, want exactly 1", round, ok)
		}
	}
}

func testJTISweep(t *testing.T, d *db.DB) {
	ctx := context.Background()
	clock := newClock()
	s := newStore(t, d, clock)
	for i := range 5 {
		if err := s.SetClientAssertionJWT(ctx, fmt.Sprintf("old-%d", i), clock.Now().Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	clock.Add(2 * time.Minute)
	if err := s.SetClientAssertionJWT(ctx, "new", clock.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	var n int64
	if err := d.QueryRow(ctx, `SELECT COUNT(*) FROM client_assertion_jtis`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("after the sweep: %d jtis stored, want 1", n)
	}
}
