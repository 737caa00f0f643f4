// Package dbtest opens throwaway databases for contract tests that run against
// every storage backend.
package dbtest

import (
	"context"

	"fmt"
	"github.com/mandate-dev/mandate/internal/db"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestDatabaseURLEnv names the environment variable that points the PostgreSQL
// half of the test suites at a database. CI always sets it.
const TestDatabaseURLEnv = "MANDATE_TEST_DATABASE_URL"

var schemaSeq atomic.Int64

// Backends returns the backends a contract test runs against: SQLite always,
// PostgreSQL when MANDATE_TEST_DATABASE_URL is set.
func Backends() []db.Dialect {
	if os.Getenv(TestDatabaseURLEnv) != "" {
		return []db.Dialect{db.SQLite, db.Postgres}
	}
	if os.Getenv("MANDATE_REQUIRE_POSTGRES") != "" {
		panic("dbtest: MANDATE_REQUIRE_POSTGRES is set but " + TestDatabaseURLEnv + " is empty")
	}
	return []db.Dialect{db.SQLite}
}

// Open opens a fresh, migrated database of the given dialect for one test and
// closes it at cleanup. SQLite lives in t.TempDir(); PostgreSQL gets a schema of its
// own in the database named by MANDATE_TEST_DATABASE_URL, dropped at cleanup. Without
// that variable, asking for PostgreSQL skips the test with a clear message.
func Open(t testing.TB, dialect db.Dialect) *db.DB {
	t.Helper()
	ctx := context.Background()
	switch dialect {
	case db.Postgres:
		d, err := db.Open(ctx, SchemaURL(t), db.Options{MaxConns: 8})
		if err != nil {
			t.Fatalf("open test schema: %v", err)
		}
		t.Cleanup(d.Close) // runs before SchemaURL's cleanup drops the schema
		if err := d.Migrate(ctx); err != nil {
			t.Fatalf("migrate: %v", err)
		}
		return d
	default:
		d, err := db.Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "mandate.db"), db.Options{})
		if err != nil {
			t.Fatalf("open test SQLite: %v", err)
		}
		t.Cleanup(d.Close)
		if err := d.Migrate(ctx); err != nil {
			t.Fatalf("migrate: %v", err)
		}
		return d
	}
}

// WithSearchPath returns a PostgreSQL URL whose connections use the given schema.
func WithSearchPath(dsn, schema string) string {
	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	return dsn + sep + "search_path=" + schema
}

// SchemaURL creates an empty PostgreSQL schema for one test and returns a URL
// whose connections use it (the caller migrates); the schema is dropped at cleanup.
func SchemaURL(t testing.TB) string {
	t.Helper()
	ctx := context.Background()
	base := os.Getenv(TestDatabaseURLEnv)
	if base == "" {
		t.Skipf("PostgreSQL tests need %s; CI always sets it", TestDatabaseURLEnv)
	}
	schema := fmt.Sprintf("t_%d_%d_%d", os.Getpid(), time.Now().UnixNano()%1e9, schemaSeq.Add(1))
	admin, err := db.Open(ctx, base, db.Options{MaxConns: 2})
	if err != nil {
		t.Fatalf("open test PostgreSQL: %v", err)
	}
	if _, err := admin.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		admin.Close()
		t.Fatalf("create schema: %v", err)
	}
	t.Cleanup(func() {
		admin.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE") //nolint:errcheck
		admin.Close()
	})
	return WithSearchPath(base, schema)
}
