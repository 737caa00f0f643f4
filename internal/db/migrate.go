package db

import (
	"context"
	"embed"
	"fmt"
	"io/fs"

	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

//go:embed migrations
var migrations embed.FS

// Migrate applies every pending migration for the backend. On PostgreSQL it holds
// a session advisory lock so that nodes starting together migrate one at a time.
func (d *DB) Migrate(ctx context.Context) error {
	p, closeFn, err := d.provider()
	if err != nil {
		return err
	}
	defer closeFn()
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("db: migrate %s: %w", d.dialect, err)
	}
	return nil
}

// MigrationStatus describes one migration and whether it has been applied.
type MigrationStatus struct {
	Version int64  `json:"version"`
	Name    string `json:"name"`
	Applied bool   `json:"applied"`
}

// Status lists the migrations and which are applied.
func (d *DB) Status(ctx context.Context) ([]MigrationStatus, error) {
	p, closeFn, err := d.provider()
	if err != nil {
		return nil, err
	}
	defer closeFn()
	st, err := p.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("db: migration status: %w", err)
	}
	out := make([]MigrationStatus, 0, len(st))
	for _, s := range st {
		out = append(out, MigrationStatus{Version: s.Source.Version, Name: s.Source.Path, Applied: s.State == goose.StateApplied})
	}
	return out, nil
}

func (d *DB) provider() (*goose.Provider, func(), error) {
	sub, err := fs.Sub(migrations, "migrations/"+string(d.dialect))
	if err != nil {
		return nil, nil, fmt.Errorf("db: migrations for %s: %w", d.dialect, err)
	}
	switch d.dialect {
	case Postgres:
		sdb := stdlib.OpenDBFromPool(d.pool)
		locker, err := newPGLocker()
		if err != nil {
			sdb.Close()
			return nil, nil, err
		}
		p, err := goose.NewProvider(goose.DialectPostgres, sdb, sub, goose.WithSessionLocker(locker))
		if err != nil {
			sdb.Close()
			return nil, nil, fmt.Errorf("db: migrations: %w", err)
		}
		return p, func() { sdb.Close() }, nil
	default:
		p, err := goose.NewProvider(goose.DialectSQLite3, d.sql, sub)
		if err != nil {
			return nil, nil, fmt.Errorf("db: migrations: %w", err)
		}
		return p, func() {}, nil
	}
}

func newPGLocker() (lock.SessionLocker, error) {
	l, err := lock.NewPostgresSessionLocker()
	if err != nil {
		return nil, fmt.Errorf("db: migration lock: %w", err)
	}
	return l, nil
}
