package db_test

import (
	"context"
	"errors"
	"github.com/mandate-dev/mandate/internal/db"
	"github.com/mandate-dev/mandate/internal/db/dbtest"
	"testing"
)

func TestContract(t *testing.T) {
	for _, dialect := range dbtest.Backends() {
		t.Run(string(dialect), func(t *testing.T) {
			ctx := context.Background()
			d := dbtest.Open(t, dialect)
			if _, err := d.Exec(ctx, `INSERT INTO settings (key, value, updated_at) VALUES ($1, $2, $3)`, "k", "v", 1); err != nil {
				t.Fatalf("insert: %v", err)
			}
			_, err := d.Exec(ctx, `INSERT INTO settings (key, value, updated_at) VALUES ($1, $2, $3)`, "k", "v2", 2)
			if !errors.Is(err, db.ErrConflict) {
				t.Fatalf("duplicate insert: got %v, want ErrConflict", err)
			}
			var v string
			if err := d.QueryRow(ctx, `SELECT value FROM settings WHERE key = $1`, "k").Scan(&v); err != nil || v != "v" {
				t.Fatalf("select: got %q, %v; want v", v, err)
			}
			if err := d.QueryRow(ctx, `SELECT value FROM settings WHERE key = $1`, "nope").Scan(&v); !errors.Is(err, db.ErrNotFound) {
				t.Fatalf("select missing: got %v, want ErrNotFound", err)
			}
			boom := errors.New("boom")
			err = d.InTx(ctx, func(q db.Querier) error {
				if _, err := q.Exec(ctx, `UPDATE settings SET value = $2 WHERE key = $1`, "k", "changed"); err != nil {
					return err
				}
				return boom
			})
			if !errors.Is(err, boom) {
				t.Fatalf("tx: got %v, want boom", err)
			}
			if err := d.QueryRow(ctx, `SELECT value FROM settings WHERE key = $1`, "k").Scan(&v); err != nil || v != "v" {
				t.Fatalf("after rollback: got %q, %v; want v", v, err)
			}
			// Placeholders out of order must bind by number on both backends.
			if _, err := d.Exec(ctx, `UPDATE settings SET updated_at = $2, value = $1 WHERE key = $3`, "x", 9, "k"); err != nil {
				t.Fatalf("update: %v", err)
			}
			var at int64
			if err := d.QueryRow(ctx, `SELECT value, updated_at FROM settings WHERE key = $1`, "k").Scan(&v, &at); err != nil || v != "x" || at != 9 {
				t.Fatalf("reordered placeholders: got %q %d %v", v, at, err)
			}
			rows, err := d.Query(ctx, `SELECT key FROM settings ORDER BY key`)
			if err != nil {
				t.Fatalf("query: %v", err)
			}
			n := 0
			for rows.Next() {
				n++
			}
			rows.Close()
			if n != 1 {
				t.Fatalf("rows: got %d, want 1", n)
			}
		})
	}
}

func TestRedact(t *testing.T) {
	got := db.Redact("postgres://user:secret@host:5432/db")
	if want := "postgres://user:xxxxx@host:5432/db"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}
