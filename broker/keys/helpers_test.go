package keys_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mandate-dev/mandate/broker/keys"
	"github.com/mandate-dev/mandate/internal/db"
	"github.com/mandate-dev/mandate/internal/db/dbtest"
)

// clock is a settable clock shared by the Managers of one test.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Unix(1_800_000_000, 0).UTC()} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// testKEK returns a fresh KEK the way an operator makes one.
func testKEK(t testing.TB) []byte {
	t.Helper()
	kek, err := keys.ParseKEK(keys.GenerateKEK())
	if err != nil {
		t.Fatalf("ParseKEK(GenerateKEK()): %v", err)
	}
	return kek
}

// eachBackend runs fn against a fresh database of every backend dbtest offers.
func eachBackend(t *testing.T, fn func(t *testing.T, d *db.DB)) {
	t.Helper()
	for _, dialect := range dbtest.Backends() {
		t.Run(string(dialect), func(t *testing.T) {
			fn(t, dbtest.Open(t, dialect))
		})
	}
}

func newManager(t testing.TB, d *db.DB, kek []byte, opts keys.Options) *keys.Manager {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = quiet
	}
	m, err := keys.NewManager(context.Background(), d, kek, opts)
	if err != nil {
		t.Fatalf("NewManager: %v", err)
	}
	return m
}

// otherHandle opens a second, independent handle on the database behind d, as
// another node would.
func otherHandle(t testing.TB, d *db.DB) *db.DB {
	t.Helper()
	ctx := context.Background()
	var dsn string
	switch d.Dialect() {
	case db.Postgres:
		var schema string
		if err := d.QueryRow(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
			t.Fatalf("current_schema: %v", err)
		}
		dsn = dbtest.WithSearchPath(os.Getenv(dbtest.TestDatabaseURLEnv), schema)
	default:
		var seq int64
		var name, file string
		if err := d.QueryRow(ctx, `PRAGMA database_list`).Scan(&seq, &name, &file); err != nil {
			t.Fatalf("database_list: %v", err)
		}
		dsn = "sqlite:" + file
	}
	o, err := db.Open(ctx, dsn, db.Options{MaxConns: 4})
	if err != nil {
		t.Fatalf("open second handle: %v", err)
	}
	t.Cleanup(o.Close)
	return o
}

// jwksKIDs returns the kids in a JWKS document, checking each key's alg and use.
func jwksKIDs(t testing.TB, m *keys.Manager) []string {
	t.Helper()
	var set struct {
		Keys []struct {
			KID string `json:"kid"`
			Alg string `json:"alg"`
			Use string `json:"use"`
			D   string `json:"d"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(m.JWKS(), &set); err != nil {
		t.Fatalf("JWKS is not JSON: %v", err)
	}
	var kids []string
	for _, k := range set.Keys {
		if k.Alg != keys.ES256 && k.Alg != keys.EdDSA {
			t.Errorf("JWKS key %s: alg = %q, want ES256 or EdDSA", k.KID, k.Alg)
		}
		if k.Use != "sig" {
			t.Errorf("JWKS key %s: use = %q, want sig", k.KID, k.Use)
		}
		if k.D != "" {
			t.Fatalf("JWKS key %s carries private material", k.KID)
		}
		kids = append(kids, k.KID)
	}
	slices.Sort(kids)
	return kids
}

// states returns kid -> state from List.
func states(t testing.TB, m *keys.Manager) map[string]keys.State {
	t.Helper()
	infos, err := m.List(context.Background())
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	out := make(map[string]keys.State, len(infos))
	for _, k := range infos {
		out[k.KID] = k.State
	}
	return out
}

// count returns how many keys are in each state.
func count(t testing.TB, m *keys.Manager) map[keys.State]int {
	t.Helper()
	out := map[keys.State]int{}
	for _, s := range states(t, m) {
		out[s]++
	}
	return out
}

func sorted(s ...string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}
