package keys

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"

	"github.com/mandate-dev/mandate/internal/db"
	"github.com/mandate-dev/mandate/internal/db/dbtest"
)

// TestRotateRefusesWhileLocked holds the key lock the way a rotating node does
// and checks that Rotate steps aside instead of racing it.
func TestRotateRefusesWhileLocked(t *testing.T) {
	ctx := context.Background()
	d := dbtest.Open(t, db.Postgres) // skips without MANDATE_TEST_DATABASE_URL
	kek := make([]byte, KEKSize)
	m, err := NewManager(ctx, d, kek, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatalf("NewManager: %v", err)
	}
	tx, err := d.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, advisoryLockKey); err != nil {
		t.Fatal(err)
	}
	for name, rotate := range map[string]func(context.Context) error{"Rotate": m.Rotate, "RotateNow": m.RotateNow} {
		if err := rotate(ctx); !errors.Is(err, ErrRotationInProgress) {
			t.Errorf("%s while another node holds the lock: err = %v, want ErrRotationInProgress", name, err)
		}
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.Rotate(ctx); err != nil {
		t.Errorf("Rotate after the lock was released: %v", err)
	}
}
