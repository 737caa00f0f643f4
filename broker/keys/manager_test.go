package keys_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mandate-dev/mandate/broker/keys"
	"github.com/mandate-dev/mandate/internal/db"
	"github.com/mandate-dev/mandate/internal/db/dbtest"
)

func TestNewManagerRejectsBadConfig(t *testing.T) {
	d := dbtest.Open(t, db.SQLite)
	kek := testKEK(t)
	tests := []struct {
		name    string
		d       *db.DB
		kek     []byte
		opts    keys.Options
		wantErr string
	}{
		{"no KEK", d, nil, keys.Options{}, "KEK must be exactly 32 bytes (AES-256), got 0"},
		{"AES-128 KEK", d, kek[:16], keys.Options{}, "KEK must be exactly 32 bytes (AES-256), got 16"},
		{"31-byte KEK", d, kek[:31], keys.Options{}, "got 31"},
		{"33-byte KEK", d, append(kek, 0), keys.Options{}, "got 33"},
		{"RS256", d, kek, keys.Options{Alg: "RS256"}, `unsupported signing algorithm "RS256"`},
		{"none", d, kek, keys.Options{Alg: "none"}, `unsupported signing algorithm "none"`},
		{"negative lifetime", d, kek, keys.Options{MaxTokenLifetime: -time.Second}, "must not be negative"},
		{"negative delay", d, kek, keys.Options{PublishDelay: -time.Second}, "must not be negative"},
		{"nil database", nil, kek, keys.Options{}, "nil database"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := keys.NewManager(context.Background(), tt.d, tt.kek, tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("NewManager: err = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
	if got := count(t, newManager(t, d, kek, keys.Options{})); got[keys.StateActive] != 1 || len(got) != 1 {
		t.Errorf("after refused starts and one good one, keys = %v, want one active", got)
	}
}

func TestFirstStartCreatesOneActiveKey(t *testing.T) {
	eachBackend(t, func(t *testing.T, d *db.DB) {
		for _, alg := range algs {
			t.Run(alg, func(t *testing.T) {
				freshKeys(t, d)
				clk := newClock()
				m := newManager(t, d, testKEK(t), keys.Options{Alg: alg, Clock: clk.Now})
				infos, err := m.List(context.Background())
				if err != nil {
					t.Fatalf("List: %v", err)
				}
				if len(infos) != 1 {
					t.Fatalf("List = %d keys, want 1", len(infos))
				}
				want := keys.KeyInfo{
					KID: m.Active().KID, Alg: alg, State: keys.StateActive, Published: true,
					CreatedAt: clk.Now(), ActivatedAt: clk.Now(),
				}
				if got := infos[0]; got != want {
					t.Errorf("List()[0] = %+v, want %+v", got, want)
				}
				if got, want := jwksKIDs(t, m), []string{m.Active().KID}; !slices.Equal(got, want) {
					t.Errorf("JWKS kids = %v, want %v", got, want)
				}
				if pk, ok := m.PublicKey(m.Active().KID); !ok || pk.Alg != alg {
					t.Errorf("PublicKey(active) = %+v, %v; want alg %s", pk, ok, alg)
				}
				if _, ok := m.PublicKey("no-such-kid"); ok {
					t.Errorf("PublicKey(unknown) found a key")
				}
			})
		}
	})
}

func TestSecondNodeLoadsTheSameKey(t *testing.T) {
	eachBackend(t, func(t *testing.T, d *db.DB) {
		kek := testKEK(t)
		m1 := newManager(t, d, kek, keys.Options{})
		// The second node prefers EdDSA, which applies to keys it creates, not to the one it finds.
		m2 := newManager(t, otherHandle(t, d), kek, keys.Options{Alg: keys.EdDSA})
		if got, want := m2.Active().KID, m1.Active().KID; got != want {
			t.Errorf("node 2 active = %s, want node 1's %s", got, want)
		}
		if got, want := m2.Active().Alg, keys.ES256; got != want {
			t.Errorf("node 2 active alg = %s, want %s", got, want)
		}
		if got := count(t, m2); got[keys.StateActive] != 1 || len(got) != 1 {
			t.Errorf("keys = %v, want one active", got)
		}
		if got, want := string(m2.JWKS()), string(m1.JWKS()); got != want {
			t.Errorf("node 2 JWKS = %s, want node 1's %s", got, want)
		}
	})
}

func TestWrongKEK(t *testing.T) {
	eachBackend(t, func(t *testing.T, d *db.DB) {
		m := newManager(t, d, testKEK(t), keys.Options{})
		_, err := keys.NewManager(context.Background(), otherHandle(t, d), testKEK(t), keys.Options{Logger: quiet})
		if !errors.Is(err, keys.ErrDecrypt) {
			t.Fatalf("NewManager with another KEK: err = %v, want ErrDecrypt", err)
		}
		for _, want := range []string{m.Active().KID, "wrong MANDATE_KEK?"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("err = %q, want it to contain %q", err, want)
			}
		}
		if got := count(t, m); got[keys.StateActive] != 1 || len(got) != 1 {
			t.Errorf("after the failed start keys = %v, want the one active key only", got)
		}
	})
}

// TestTamperedRows alters stored keys the ways an attacker with write access to
// the database, or a botched restore, could, and expects every one refused.
func TestTamperedRows(t *testing.T) {
	ctx := context.Background()
	getBlob := func(t *testing.T, d *db.DB, kid string) []byte {
		var b []byte
		if err := d.QueryRow(ctx, `SELECT private_enc FROM signing_keys WHERE kid = $1`, kid).Scan(&b); err != nil {
			t.Fatalf("read private_enc: %v", err)
		}
		return b
	}
	exec := func(t *testing.T, d *db.DB, q string, args ...any) {
		if n, err := d.Exec(ctx, q, args...); err != nil || n != 1 {
			t.Fatalf("%s: %d rows, %v", q, n, err)
		}
	}
	tests := []struct {
		name string
		// tamper changes the database and returns the kid the error must name.
		tamper    func(t *testing.T, d *db.DB, active, next string) string
		wantErr   string
		isDecrypt bool
	}{
		{
			name: "flipped ciphertext byte",
			tamper: func(t *testing.T, d *db.DB, active, next string) string {
				b := getBlob(t, d, active)
				b[len(b)/2] ^= 0x01
				exec(t, d, `UPDATE signing_keys SET private_enc = $1 WHERE kid = $2`, b, active)
				return active
			},
			wantErr: "wrong MANDATE_KEK?", isDecrypt: true,
		},
		{
			name: "truncated ciphertext",
			tamper: func(t *testing.T, d *db.DB, active, next string) string {
				exec(t, d, `UPDATE signing_keys SET private_enc = $1 WHERE kid = $2`, getBlob(t, d, next)[:20], next)
				return next
			},
			wantErr: "wrong MANDATE_KEK?", isDecrypt: true,
		},
		{
			name: "ciphertext moved onto another kid",
			tamper: func(t *testing.T, d *db.DB, active, next string) string {
				exec(t, d, `UPDATE signing_keys SET private_enc = $1 WHERE kid = $2`, getBlob(t, d, active), next)
				return next
			},
			wantErr: "wrong MANDATE_KEK?", isDecrypt: true,
		},
		{
			name: "kid renamed",
			tamper: func(t *testing.T, d *db.DB, active, next string) string {
				exec(t, d, `UPDATE signing_keys SET kid = $1 WHERE kid = $2`, "renamed", next)
				return "renamed"
			},
			wantErr: "wrong MANDATE_KEK?", isDecrypt: true,
		},
		{
			name: "public key swapped",
			tamper: func(t *testing.T, d *db.DB, active, next string) string {
				var pub string
				if err := d.QueryRow(ctx, `SELECT public_jwk FROM signing_keys WHERE kid = $1`, active).Scan(&pub); err != nil {
					t.Fatal(err)
				}
				exec(t, d, `UPDATE signing_keys SET public_jwk = $1 WHERE kid = $2`, pub, next)
				return next
			},
			wantErr: "stored public key does not match its private key",
		},
		{
			name: "alg relabelled",
			tamper: func(t *testing.T, d *db.DB, active, next string) string {
				exec(t, d, `UPDATE signing_keys SET alg = $1 WHERE kid = $2`, keys.EdDSA, active)
				return active
			},
			wantErr: `stored alg "EdDSA" but the key is ES256`,
		},
	}
	for _, dialect := range dbtest.Backends() {
		t.Run(string(dialect), func(t *testing.T) {
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					d := dbtest.Open(t, dialect)
					kek := testKEK(t)
					m := newManager(t, d, kek, keys.Options{})
					if err := m.Rotate(ctx); err != nil {
						t.Fatalf("Rotate: %v", err)
					}
					active := m.Active().KID
					var next string
					for kid, st := range states(t, m) {
						if st == keys.StateNext {
							next = kid
						}
					}
					jwks := string(m.JWKS())
					kid := tt.tamper(t, d, active, next)

					_, startErr := keys.NewManager(ctx, otherHandle(t, d), kek, keys.Options{Logger: quiet})
					reloadErr := m.Reload(ctx)
					for name, err := range map[string]error{"NewManager": startErr, "Reload": reloadErr} {
						if err == nil {
							t.Errorf("%s after tampering succeeded, want an error", name)
							continue
						}
						if !strings.Contains(err.Error(), `"`+kid+`"`) || !strings.Contains(err.Error(), tt.wantErr) {
							t.Errorf("%s: err = %q, want one naming %q and containing %q", name, err, kid, tt.wantErr)
						}
						if got := errors.Is(err, keys.ErrDecrypt); got != tt.isDecrypt {
							t.Errorf("%s: errors.Is(err, ErrDecrypt) = %v, want %v", name, got, tt.isDecrypt)
						}
					}
					// A failed Reload keeps serving what was loaded before.
					if got := m.Active().KID; got != active {
						t.Errorf("after failed Reload Active = %s, want %s", got, active)
					}
					if got := string(m.JWKS()); got != jwks {
						t.Errorf("after failed Reload JWKS changed:\n got %s\nwant %s", got, jwks)
					}
				})
			}
		})
	}
}

func TestRotatePublishesBeforeSigning(t *testing.T) {
	eachBackend(t, func(t *testing.T, d *db.DB) {
		ctx := context.Background()
		clk := newClock()
		m := newManager(t, d, testKEK(t), keys.Options{Clock: clk.Now})
		old := m.Active().KID

		clk.Advance(time.Hour)
		if err := m.Rotate(ctx); err != nil {
			t.Fatalf("first Rotate: %v", err)
		}
		var next string
		for kid, st := range states(t, m) {
			if kid != old {
				next = kid
				if st != keys.StateNext {
					t.Errorf("new key %s state = %s, want next", kid, st)
				}
			}
		}
		if next == "" {
			t.Fatalf("first Rotate created no key: %v", states(t, m))
		}
		if got := m.Active().KID; got != old {
			t.Errorf("after first Rotate Active = %s, want still %s", got, old)
		}
		if got, want := jwksKIDs(t, m), sorted(old, next); !slices.Equal(got, want) {
			t.Errorf("after first Rotate JWKS kids = %v, want %v", got, want)
		}
		if _, ok := m.PublicKey(next); !ok {
			t.Errorf("PublicKey(next) not found")
		}

		clk.Advance(time.Minute)
		rotatedAt := clk.Now()
		if err := m.Rotate(ctx); err != nil {
			t.Fatalf("second Rotate: %v", err)
		}
		if got := m.Active().KID; got != next {
			t.Errorf("after second Rotate Active = %s, want %s", got, next)
		}
		if got, want := jwksKIDs(t, m), sorted(old, next); !slices.Equal(got, want) {
			t.Errorf("after second Rotate JWKS kids = %v, want %v", got, want)
		}
		infos, err := m.List(ctx)
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		for _, k := range infos {
			switch k.KID {
			case old:
				want := rotatedAt.Add(keys.DefaultMaxTokenLifetime + keys.RetireGrace)
				if k.State != keys.StateRetired || !k.RetiredAt.Equal(rotatedAt) || !k.ExpiresAt.Equal(want) || !k.Published {
					t.Errorf("old key = %+v, want retired at %v, expiring %v, published", k, rotatedAt, want)
				}
			case next:
				if k.State != keys.StateActive || !k.ActivatedAt.Equal(rotatedAt) {
					t.Errorf("new key = %+v, want active since %v", k, rotatedAt)
				}
			}
		}
	})
}

func TestRotateSwitchesAlgorithm(t *testing.T) {
	eachBackend(t, func(t *testing.T, d *db.DB) {
		kek := testKEK(t)
		newManager(t, d, kek, keys.Options{Alg: keys.ES256})
		m := newManager(t, otherHandle(t, d), kek, keys.Options{Alg: keys.EdDSA})
		for range 2 {
			if err := m.Rotate(context.Background()); err != nil {
				t.Fatalf("Rotate: %v", err)
			}
		}
		if got := m.Active().Alg; got != keys.EdDSA {
			t.Errorf("Active().Alg = %s, want EdDSA after rotation", got)
		}
		if got := len(jwksKIDs(t, m)); got != 2 {
			t.Errorf("JWKS has %d keys, want the ES256 and EdDSA keys", got)
		}
	})
}

func TestRotateWaitsForPublishDelay(t *testing.T) {
	tests := []struct {
		name         string
		delay, wait  time.Duration
		wantPromoted bool
	}{
		{"no delay", 0, 0, true},
		{"before the delay", 10 * time.Minute, 10*time.Minute - time.Second, false},
		{"at the delay", 10 * time.Minute, 10 * time.Minute, true},
		{"long after", 10 * time.Minute, 24 * time.Hour, true},
	}
	eachBackend(t, func(t *testing.T, d *db.DB) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				ctx := context.Background()
				freshKeys(t, d)
				clk := newClock()
				m := newManager(t, d, testKEK(t), keys.Options{Clock: clk.Now, PublishDelay: tt.delay})
				old := m.Active().KID
				if err := m.Rotate(ctx); err != nil {
					t.Fatalf("first Rotate: %v", err)
				}
				clk.Advance(tt.wait)
				if err := m.Rotate(ctx); err != nil {
					t.Fatalf("second Rotate: %v", err)
				}
				if got := m.Active().KID != old; got != tt.wantPromoted {
					t.Errorf("after waiting %v of %v: promoted = %v, want %v", tt.wait, tt.delay, got, tt.wantPromoted)
				}
				want := map[keys.State]int{keys.StateActive: 1, keys.StateNext: 1}
				if tt.wantPromoted {
					want = map[keys.State]int{keys.StateActive: 1, keys.StateRetired: 1}
				}
				if got := count(t, m); !mapsEqual(got, want) {
					t.Errorf("keys = %v, want %v", got, want)
				}
			})
		}
	})
}

// freshKeys empties signing_keys so that subtests can share one database.
func freshKeys(t *testing.T, d *db.DB) {
	t.Helper()
	if _, err := d.Exec(context.Background(), `DELETE FROM signing_keys`); err != nil {
		t.Fatalf("empty signing_keys: %v", err)
	}
}

func mapsEqual(a, b map[keys.State]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestRotateNow(t *testing.T) {
	tests := []struct {
		name string
		// publishFirst runs a plain Rotate first, leaving a next key that is not yet
		// old enough to be promoted by Rotate.
		publishFirst bool
	}{
		{"no next key", false},
		{"young next key", true},
	}
	eachBackend(t, func(t *testing.T, d *db.DB) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				ctx := context.Background()
				freshKeys(t, d)
				m := newManager(t, d, testKEK(t), keys.Options{PublishDelay: time.Hour})
				old := m.Active().KID
				var next string
				if tt.publishFirst {
					if err := m.Rotate(ctx); err != nil {
						t.Fatalf("Rotate: %v", err)
					}
					for kid, st := range states(t, m) {
						if st == keys.StateNext {
							next = kid
						}
					}
				}
				if err := m.RotateNow(ctx); err != nil {
					t.Fatalf("RotateNow: %v", err)
				}
				got := m.Active().KID
				if got == old {
					t.Fatalf("after RotateNow Active = %s, still the old key", got)
				}
				if next != "" && got != next {
					t.Errorf("after RotateNow Active = %s, want the published next key %s", got, next)
				}
				want := map[string]keys.State{old: keys.StateRetired, got: keys.StateActive}
				if st := states(t, m); !mapsEqualS(st, want) {
					t.Errorf("keys = %v, want %v", st, want)
				}
				if got, want := jwksKIDs(t, m), sorted(old, got); !slices.Equal(got, want) {
					t.Errorf("JWKS kids = %v, want %v", got, want)
				}
			})
		}
	})
}

func mapsEqualS(a, b map[string]keys.State) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestRetiredKeyPublishedUntilExpiry(t *testing.T) {
	eachBackend(t, func(t *testing.T, d *db.DB) {
		ctx := context.Background()
		clk := newClock()
		kek := testKEK(t)
		const lifetime = 30 * time.Minute
		m := newManager(t, d, kek, keys.Options{Clock: clk.Now, MaxTokenLifetime: lifetime})
		old := m.Active().KID
		for range 2 {
			if err := m.Rotate(ctx); err != nil {
				t.Fatalf("Rotate: %v", err)
			}
		}
		cur := m.Active().KID

		clk.Advance(lifetime + keys.RetireGrace - time.Second)
		if got, want := jwksKIDs(t, m), sorted(old, cur); !slices.Equal(got, want) {
			t.Errorf("1s before expiry JWKS kids = %v, want %v", got, want)
		}
		if _, ok := m.PublicKey(old); !ok {
			t.Errorf("1s before expiry PublicKey(old) not found")
		}
		if n, err := m.Prune(ctx); err != nil || n != 0 {
			t.Errorf("1s before expiry Prune = %d, %v; want 0, nil", n, err)
		}

		clk.Advance(time.Second)
		// No Reload: the snapshot drops the key on its own.
		if got, want := jwksKIDs(t, m), []string{cur}; !slices.Equal(got, want) {
			t.Errorf("at expiry JWKS kids = %v, want %v", got, want)
		}
		if _, ok := m.PublicKey(old); ok {
			t.Errorf("at expiry PublicKey(old) still found")
		}
		// A node starting now does not publish it either.
		m2 := newManager(t, otherHandle(t, d), kek, keys.Options{Clock: clk.Now})
		if got, want := jwksKIDs(t, m2), []string{cur}; !slices.Equal(got, want) {
			t.Errorf("node started at expiry: JWKS kids = %v, want %v", got, want)
		}
		infos, err := m.List(ctx)
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		for _, k := range infos {
			if k.KID == old && (k.State != keys.StateRetired || k.Published) {
				t.Errorf("expired key in List = %+v, want retired and unpublished", k)
			}
		}

		if n, err := m.Prune(ctx); err != nil || n != 1 {
			t.Errorf("at expiry Prune = %d, %v; want 1, nil", n, err)
		}
		if got, want := states(t, m), map[string]keys.State{cur: keys.StateActive}; !mapsEqualS(got, want) {
			t.Errorf("after Prune keys = %v, want %v", got, want)
		}
		if err := m.Reload(ctx); err != nil {
			t.Fatalf("Reload after Prune: %v", err)
		}
	})
}

func TestReloadFollowsAnotherNode(t *testing.T) {
	eachBackend(t, func(t *testing.T, d *db.DB) {
		ctx := context.Background()
		kek := testKEK(t)
		m1 := newManager(t, d, kek, keys.Options{})
		m2 := newManager(t, otherHandle(t, d), kek, keys.Options{})
		old := m1.Active().KID

		if err := m1.Rotate(ctx); err != nil {
			t.Fatalf("node 1 Rotate: %v", err)
		}
		if got, want := len(jwksKIDs(t, m2)), 1; got != want {
			t.Errorf("node 2 before Reload publishes %d keys, want %d", got, want)
		}
		if err := m2.Reload(ctx); err != nil {
			t.Fatalf("node 2 Reload: %v", err)
		}
		if got, want := jwksKIDs(t, m2), jwksKIDs(t, m1); !slices.Equal(got, want) {
			t.Errorf("node 2 JWKS kids after Reload = %v, want node 1's %v", got, want)
		}

		if err := m1.Rotate(ctx); err != nil {
			t.Fatalf("node 1 second Rotate: %v", err)
		}
		if got := m2.Active().KID; got != old {
			t.Errorf("node 2 before Reload signs with %s, want still %s", got, old)
		}
		if err := m2.Reload(ctx); err != nil {
			t.Fatalf("node 2 Reload: %v", err)
		}
		if got, want := m2.Active().KID, m1.Active().KID; got != want {
			t.Errorf("node 2 after Reload signs with %s, want node 1's %s", got, want)
		}
		if _, ok := m2.PublicKey(old); !ok {
			t.Errorf("node 2 no longer publishes the retired key %s", old)
		}
	})
}

func TestJWKSRebuiltOnlyWhenKeysChange(t *testing.T) {
	eachBackend(t, func(t *testing.T, d *db.DB) {
		ctx := context.Background()
		m := newManager(t, d, testKEK(t), keys.Options{})
		before := m.JWKS()
		if err := m.Reload(ctx); err != nil {
			t.Fatalf("Reload: %v", err)
		}
		if after := m.JWKS(); &after[0] != &before[0] {
			t.Errorf("JWKS rebuilt by a Reload that changed nothing")
		}
		if err := m.Rotate(ctx); err != nil {
			t.Fatalf("Rotate: %v", err)
		}
		if after := m.JWKS(); string(after) == string(before) {
			t.Errorf("JWKS unchanged after Rotate published a key")
		}
	})
}

// handles opens n of independent database handles on d.
func handles(t *testing.T, d *db.DB, n int) []*db.DB {
	out := make([]*db.DB, n)
	for i := range out {
		out[i] = otherHandle(t, d)
	}
	return out
}

func TestConcurrentStartCreatesOneKey(t *testing.T) {
	eachBackend(t, func(t *testing.T, d *db.DB) {
		kek := testKEK(t)
		hs := handles(t, d, 8)
		ms := make([]*keys.Manager, len(hs))
		errs := make([]error, len(hs))
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i, h := range hs {
			wg.Go(func() {
				<-start
				ms[i], errs[i] = keys.NewManager(context.Background(), h, kek, keys.Options{Logger: quiet})
			})
		}
		close(start)
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("node %d NewManager: %v", i, err)
			}
		}
		if got := count(t, ms[0]); got[keys.StateActive] != 1 || len(got) != 1 {
			t.Fatalf("keys = %v, want exactly one active", got)
		}
		for i, m := range ms {
			if got, want := m.Active().KID, ms[0].Active().KID; got != want {
				t.Errorf("node %d signs with %s, want %s", i, got, want)
			}
		}
	})
}

func TestConcurrentRotateStaysConsistent(t *testing.T) {
	eachBackend(t, func(t *testing.T, d *db.DB) {
		ctx := context.Background()
		kek := testKEK(t)
		newManager(t, d, kek, keys.Options{})
		var ms []*keys.Manager
		for _, h := range handles(t, d, 6) {
			ms = append(ms, newManager(t, h, kek, keys.Options{}))
		}
		inProgress := 0
		for round := range 4 {
			errs := make([]error, len(ms))
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i, m := range ms {
				wg.Go(func() {
					<-start
					errs[i] = m.Rotate(ctx)
				})
			}
			close(start)
			wg.Wait()
			for i, err := range errs {
				switch {
				case errors.Is(err, keys.ErrRotationInProgress):
					inProgress++
				case err != nil:
					t.Fatalf("round %d node %d Rotate: %v", round, i, err)
				}
			}
			got := count(t, ms[0])
			if got[keys.StateActive] != 1 || got[keys.StateNext] > 1 {
				t.Fatalf("round %d: keys = %v, want one active and at most one next", round, got)
			}
		}
		t.Logf("%d of %d Rotate calls found another node rotating", inProgress, 4*len(ms))
		var active string
		for kid, st := range states(t, ms[0]) {
			if st == keys.StateActive {
				active = kid
			}
		}
		for i, m := range ms {
			if err := m.Reload(ctx); err != nil {
				t.Fatalf("node %d Reload: %v", i, err)
			}
			if got := m.Active().KID; got != active {
				t.Errorf("node %d signs with %s, want %s", i, got, active)
			}
			if !slices.Contains(jwksKIDs(t, m), active) {
				t.Errorf("node %d does not publish the active key", i)
			}
		}
	})
}

// TestHotPathDuringRotation reads keys from many goroutines while keys rotate
// and expire; run with -race it checks the snapshot is never seen half-built.
func TestHotPathDuringRotation(t *testing.T) {
	eachBackend(t, func(t *testing.T, d *db.DB) {
		ctx := context.Background()
		clk := newClock()
		m := newManager(t, d, testKEK(t), keys.Options{Clock: clk.Now, MaxTokenLifetime: time.Minute})
		done := make(chan struct{})
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for {
					select {
					case <-done:
						return
					default:
					}
					k := m.Active()
					token, err := k.SignJWS(k.HeaderFor("at+jwt"), claims)
					if err != nil {
						t.Errorf("SignJWS: %v", err)
						return
					}
					// The key that just signed stays published in whatever snapshot is current.
					pub, ok := m.PublicKey(k.KID)
					if !ok {
						t.Errorf("PublicKey(%s) missing right after it signed", k.KID)
						return
					}
					if err := verifyStdlib(pub, token); err != nil {
						t.Errorf("verify: %v", err)
						return
					}
					if len(m.JWKS()) == 0 {
						t.Errorf("empty JWKS")
						return
					}
				}
			})
		}
		for range 6 {
			if err := m.Rotate(ctx); err != nil {
				t.Errorf("Rotate: %v", err)
			}
			clk.Advance(time.Minute) // retired keys expire while readers run
		}
		close(done)
		wg.Wait()
	})
}
