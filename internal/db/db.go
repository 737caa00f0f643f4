// Package db is mandate's thin storage layer: one handle over either PostgreSQL
// (through pgx v5's pgxpool, the production store) or embedded SQLite (pure Go,
// the zero-setup default), with versioned migrations for both.
//
// Stores write their SQL once, in PostgreSQL's placeholder style ($1, $2, ...),
// using portable types only (TEXT, BIGINT, BOOLEAN/INTEGER, BLOB/BYTEA); the
// SQLite backend rewrites placeholders to SQLite's numbered form (?1, ?2, ...).
//
//	d, err := db.Open(ctx, "sqlite:/var/lib/mandate/mandate.db")
//	// or db.Open(ctx, "postgres://mandate@127.0.0.1:5432/mandate")
//	if err != nil { ... }
//	defer d.Close()
//	if err := d.Migrate(ctx); err != nil { ... }
//	var name string
//	err = d.QueryRow(ctx, `SELECT name FROM clients WHERE id = $1`, id).Scan(&name)
//	if errors.Is(err, db.ErrNotFound) { ... }
package db

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// Dialect names the SQL backend behind a DB.
type Dialect string

// The supported backends.
const (
	SQLite   Dialect = "sqlite"
	Postgres Dialect = "postgres"
)

var (
	// ErrNotFound is returned by Row.Scan when the query matched no row.
	ErrNotFound = errors.New("db: not found")
	// ErrConflict is returned when a write violates a unique or primary key constraint.
	ErrConflict = errors.New("db: conflict")
	// ErrUnavailable wraps errors that mean the database cannot be reached right now
	// (connection refused, pool closed, timeout); callers map it to 503.
	ErrUnavailable = errors.New("db: unavailable")
)

// Querier is what a store needs to run statements, inside or outside a transaction.
type Querier interface {
	Exec(ctx context.Context, query string, args ...any) (int64, error)
	QueryRow(ctx context.Context, query string, args ...any) Row
	Query(ctx context.Context, query string, args ...any) (Rows, error)
}

// Row is one result row; Scan returns ErrNotFound when there was none.
type Row interface {
	Scan(dest ...any) error
}

// Rows is a result set; callers must Close it.
type Rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
	Close()
}

// DB is a handle on one database, safe for concurrent use.
type DB struct {
	dialect Dialect
	dsn     string
	sql     *sql.DB       // SQLite
	pool    *pgxpool.Pool // PostgreSQL
	rewrite sync.Map      // SQLite: query -> rewritten query
	stmts   sync.Map      // SQLite: rewritten query -> *sql.Stmt (prepared once per connection)
	nstmts  atomic.Int32
}

// maxCachedStatements bounds the SQLite prepared-statement cache; the queries
// are the program's own constant strings, so the bound is never reached in practice.
const maxCachedStatements = 512

// cached returns q's prepared statement if one is cached. Transactions use only
// this: preparing takes a connection from the pool, and a transaction that
// waited for one while holding SQLite's write lock could deadlock with the
// transactions queued behind it for that lock.
func (d *DB) cached(q string) *sql.Stmt {
	if v, ok := d.stmts.Load(q); ok {
		return v.(*sql.Stmt)
	}
	return nil
}

// Prepare caches query as a prepared statement on SQLite (a no-op on
// PostgreSQL, whose pgx caches statements itself), so that transactions, which
// never prepare, can reuse it. Call it outside any transaction.
func (d *DB) Prepare(ctx context.Context, query string) {
	if d.sql != nil {
		d.prepared(ctx, d.q(query))
	}
}

// prepared returns the cached prepared statement for q (already rewritten), or
// nil when it cannot be cached. SQLite parses every statement it runs; reusing a
// prepared one skips the parse, which dominates small writes.
func (d *DB) prepared(ctx context.Context, q string) *sql.Stmt {
	if v, ok := d.stmts.Load(q); ok {
		return v.(*sql.Stmt)
	}
	if d.nstmts.Load() >= maxCachedStatements {
		return nil
	}
	st, err := d.sql.PrepareContext(ctx, q)
	if err != nil {
		return nil // the caller runs the statement unprepared and gets the error there
	}
	if prev, loaded := d.stmts.LoadOrStore(q, st); loaded {
		st.Close()
		return prev.(*sql.Stmt)
	}
	d.nstmts.Add(1)
	return st
}

// Options tune Open. The zero value is sensible.
type Options struct {
	// MaxConns bounds the connection pool (PostgreSQL default 16, SQLite default 8).
	MaxConns int32
	// ConnectTimeout bounds each attempt to reach PostgreSQL (default 5s).
	ConnectTimeout time.Duration
}

// Open connects to the database named by dsn: "postgres://..." or "postgresql://..."
// for PostgreSQL, "sqlite:PATH" or "file:PATH" for SQLite. It does not migrate.
func Open(ctx context.Context, dsn string, opts Options) (*DB, error) {
	switch {
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		return openPostgres(ctx, dsn, opts)
	case strings.HasPrefix(dsn, "sqlite:"):
		return openSQLite(ctx, strings.TrimPrefix(dsn, "sqlite:"), opts)
	case strings.HasPrefix(dsn, "file:"):
		return openSQLite(ctx, strings.TrimPrefix(dsn, "file:"), opts)
	default:
		return nil, fmt.Errorf("db: unsupported database URL %q: want postgres://... or sqlite:PATH", redactDSN(dsn))
	}
}

func openPostgres(ctx context.Context, dsn string, opts Options) (*DB, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("db: parse PostgreSQL URL: %w", err)
	}
	cfg.MaxConns = 16
	if opts.MaxConns > 0 {
		cfg.MaxConns = opts.MaxConns
	}
	cfg.ConnConfig.ConnectTimeout = 5 * time.Second
	if opts.ConnectTimeout > 0 {
		cfg.ConnConfig.ConnectTimeout = opts.ConnectTimeout
	}
	cfg.HealthCheckPeriod = 5 * time.Second
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("db: open PostgreSQL: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, cfg.ConnConfig.ConnectTimeout)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("db: reach PostgreSQL: %w", errors.Join(ErrUnavailable, err))
	}
	return &DB{dialect: Postgres, dsn: dsn, pool: pool}, nil
}

func openSQLite(ctx context.Context, path string, opts Options) (*DB, error) {
	if path == "" {
		return nil, errors.New("db: sqlite: empty path")
	}
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	// WAL lets readers run beside the one writer; IMMEDIATE transactions take the
	// write lock up front so two writers queue on busy_timeout instead of
	// failing with SQLITE_BUSY at commit.
	dsn := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)" +
		"&_pragma=synchronous(NORMAL)&_pragma=foreign_keys(1)&_txlock=immediate"
	sdb, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("db: open SQLite %s: %w", path, err)
	}
	n := 8
	if opts.MaxConns > 0 {
		n = int(opts.MaxConns)
	}
	sdb.SetMaxOpenConns(n)
	sdb.SetMaxIdleConns(n)
	if err := sdb.PingContext(ctx); err != nil {
		sdb.Close()
		return nil, fmt.Errorf("db: open SQLite %s: %w", path, err)
	}
	return &DB{dialect: SQLite, dsn: "sqlite:" + path, sql: sdb}, nil
}

// Dialect reports the backend.
func (d *DB) Dialect() Dialect { return d.dialect }

// Pool returns the PostgreSQL pool (nil for SQLite), for LISTEN/NOTIFY and advisory locks.
func (d *DB) Pool() *pgxpool.Pool { return d.pool }

// SQL returns the SQLite handle (nil for PostgreSQL).
func (d *DB) SQL() *sql.DB { return d.sql }

// Close releases every connection.
func (d *DB) Close() {
	if d.pool != nil {
		d.pool.Close()
	}
	if d.sql != nil {
		d.stmts.Range(func(_, v any) bool { v.(*sql.Stmt).Close(); return true })
		d.sql.Close()
	}
}

// Ping checks the database answers.
func (d *DB) Ping(ctx context.Context) error {
	var err error
	if d.pool != nil {
		err = d.pool.Ping(ctx)
	} else {
		err = d.sql.PingContext(ctx)
	}
	return mapErr(err)
}

// Exec runs a statement and returns the number of rows it affected.
func (d *DB) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	if d.pool != nil {
		tag, err := d.pool.Exec(ctx, query, args...)
		return tag.RowsAffected(), mapErr(err)
	}
	q := d.q(query)
	var res sql.Result
	var err error
	if st := d.prepared(ctx, q); st != nil {
		res, err = st.ExecContext(ctx, args...)
	} else {
		res, err = d.sql.ExecContext(ctx, q, args...)
	}
	if err != nil {
		return 0, mapErr(err)
	}
	n, _ := res.RowsAffected()
	return n, nil
}

// QueryRow runs a query expected to return at most one row.
func (d *DB) QueryRow(ctx context.Context, query string, args ...any) Row {
	if d.pool != nil {
		return pgRow{d.pool.QueryRow(ctx, query, args...)}
	}
	q := d.q(query)
	if st := d.prepared(ctx, q); st != nil {
		return sqlRow{st.QueryRowContext(ctx, args...)}
	}
	return sqlRow{d.sql.QueryRowContext(ctx, q, args...)}
}

// Query runs a query returning rows.
func (d *DB) Query(ctx context.Context, query string, args ...any) (Rows, error) {
	if d.pool != nil {
		rows, err := d.pool.Query(ctx, query, args...)
		if err != nil {
			return nil, mapErr(err)
		}
		return &pgRows{rows}, nil
	}
	q := d.q(query)
	var rows *sql.Rows
	var err error
	if st := d.prepared(ctx, q); st != nil {
		rows, err = st.QueryContext(ctx, args...)
	} else {
		rows, err = d.sql.QueryContext(ctx, q, args...)
	}
	if err != nil {
		return nil, mapErr(err)
	}
	return &sqlRows{rows}, nil
}

// InTx runs fn in a transaction, committing when fn returns nil and rolling back otherwise.
func (d *DB) InTx(ctx context.Context, fn func(q Querier) error) error {
	if d.pool != nil {
		tx, err := d.pool.Begin(ctx)
		if err != nil {
			return fmt.Errorf("db: begin: %w", mapErr(err))
		}
		defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // no-op after commit
		if err := fn(pgTx{tx}); err != nil {
			return err
		}
		if err := tx.Commit(ctx); err != nil {
			return fmt.Errorf("db: commit: %w", mapErr(err))
		}
		return nil
	}
	tx, err := d.sql.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("db: begin: %w", mapErr(err))
	}
	defer tx.Rollback() //nolint:errcheck // no-op after commit
	if err := fn(sqlTx{d: d, tx: tx}); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("db: commit: %w", mapErr(err))
	}
	return nil
}

// q rewrites $N placeholders to SQLite's ?N, caching the result.
func (d *DB) q(query string) string {
	if v, ok := d.rewrite.Load(query); ok {
		return v.(string)
	}
	s := rewritePlaceholders(query)
	d.rewrite.Store(query, s)
	return s
}

// rewritePlaceholders turns $N into SQLite's parameters: a plain ? when the
// numbers appear exactly as 1, 2, 3, ... (SQLite then binds by position with no
// name lookup, which matters for statements with hundreds of parameters), and
// the numbered ?N form otherwise (reordered or repeated parameters).
func rewritePlaceholders(query string) string {
	var plain, numbered strings.Builder
	plain.Grow(len(query))
	numbered.Grow(len(query))
	next, inOrder := 1, true
	for i := 0; i < len(query); i++ {
		c := query[i]
		if c == '$' && i+1 < len(query) && query[i+1] >= '0' && query[i+1] <= '9' {
			j := i + 1
			for j < len(query) && query[j] >= '0' && query[j] <= '9' {
				j++
			}
			if n, err := strconv.Atoi(query[i+1 : j]); err != nil || n != next {
				inOrder = false
			}
			next++
			plain.WriteByte('?')
			numbered.WriteByte('?')
			numbered.WriteString(query[i+1 : j])
			i = j - 1
			continue
		}
		plain.WriteByte(c)
		numbered.WriteByte(c)
	}
	if inOrder {
		return plain.String()
	}
	return numbered.String()
}

type pgRow struct{ r pgx.Row }

func (r pgRow) Scan(dest ...any) error { return mapErr(r.r.Scan(dest...)) }

type pgRows struct{ r pgx.Rows }

func (r *pgRows) Next() bool             { return r.r.Next() }
func (r *pgRows) Scan(dest ...any) error { return mapErr(r.r.Scan(dest...)) }
func (r *pgRows) Err() error             { return mapErr(r.r.Err()) }
func (r *pgRows) Close()                 { r.r.Close() }

type pgTx struct{ tx pgx.Tx }

func (t pgTx) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	tag, err := t.tx.Exec(ctx, query, args...)
	return tag.RowsAffected(), mapErr(err)
}
func (t pgTx) QueryRow(ctx context.Context, query string, args ...any) Row {
	return pgRow{t.tx.QueryRow(ctx, query, args...)}
}
func (t pgTx) Query(ctx context.Context, query string, args ...any) (Rows, error) {
	rows, err := t.tx.Query(ctx, query, args...)
	if err != nil {
		return nil, mapErr(err)
	}
	return &pgRows{rows}, nil
}

type sqlRow struct{ r *sql.Row }

func (r sqlRow) Scan(dest ...any) error { return mapErr(r.r.Scan(dest...)) }

type sqlRows struct{ r *sql.Rows }

func (r *sqlRows) Next() bool             { return r.r.Next() }
func (r *sqlRows) Scan(dest ...any) error { return mapErr(r.r.Scan(dest...)) }
func (r *sqlRows) Err() error             { return mapErr(r.r.Err()) }
func (r *sqlRows) Close()                 { r.r.Close() }

type sqlTx struct {
	d  *DB
	tx *sql.Tx
}

func (t sqlTx) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	q := t.d.q(query)
	var res sql.Result
	var err error
	if st := t.d.cached(q); st != nil {
		res, err = t.tx.StmtContext(ctx, st).ExecContext(ctx, args...)
	} else {
		res, err = t.tx.ExecContext(ctx, q, args...)
	}
	if err != nil {
		return 0, mapErr(err)
	}
	n, _ := res.RowsAffected()
	return n, nil
}
func (t sqlTx) QueryRow(ctx context.Context, query string, args ...any) Row {
	q := t.d.q(query)
	if st := t.d.cached(q); st != nil {
		return sqlRow{t.tx.StmtContext(ctx, st).QueryRowContext(ctx, args...)}
	}
	return sqlRow{t.tx.QueryRowContext(ctx, q, args...)}
}
func (t sqlTx) Query(ctx context.Context, query string, args ...any) (Rows, error) {
	q := t.d.q(query)
	var rows *sql.Rows
	var err error
	if st := t.d.cached(q); st != nil {
		rows, err = t.tx.StmtContext(ctx, st).QueryContext(ctx, args...)
	} else {
		rows, err = t.tx.QueryContext(ctx, q, args...)
	}
	if err != nil {
		return nil, mapErr(err)
	}
	return &sqlRows{rows}, nil
}

// mapErr turns backend errors into this package's sentinels, keeping the original wrapped.
func mapErr(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, sql.ErrNoRows) || errors.Is(err, pgx.ErrNoRows) {
		return ErrNotFound
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case pgErr.Code == "23505":
			return fmt.Errorf("%w: %s", ErrConflict, pgErr.ConstraintName)
		case strings.HasPrefix(pgErr.Code, "08"), pgErr.Code == "57P01", pgErr.Code == "57P02", pgErr.Code == "57P03":
			return errors.Join(ErrUnavailable, err)
		}
		return err
	}
	var sqErr *sqlite.Error
	if errors.As(err, &sqErr) {
		switch sqErr.Code() {
		case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
			return fmt.Errorf("%w: %v", ErrConflict, err)
		case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED:
			return errors.Join(ErrUnavailable, err)
		}
		return err
	}
	var connErr *pgconn.ConnectError
	var netErr net.Error
	if errors.As(err, &connErr) || pgconn.Timeout(err) || errors.Is(err, sql.ErrConnDone) ||
		strings.Contains(err.Error(), "closed pool") ||
		// The connection broke under the statement (server restarted, network
		// cut): the database is unreachable, not the request wrong.
		pgconn.SafeToRetry(err) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.As(err, &netErr) || errors.Is(err, net.ErrClosed) {
		return errors.Join(ErrUnavailable, err)
	}
	return err
}

// redactDSN hides a password in a database URL so it can appear in errors and logs.
func redactDSN(dsn string) string {
	at := strings.LastIndexByte(dsn, '@')
	scheme := strings.Index(dsn, "://")
	if at < 0 || scheme < 0 || at < scheme {
		return dsn
	}
	creds := dsn[scheme+3 : at]
	if i := strings.IndexByte(creds, ':'); i >= 0 {
		return dsn[:scheme+3] + creds[:i] + ":xxxxx" + dsn[at:]
	}
	return dsn
}

// Redact returns dsn with any password replaced, for logs.
func Redact(dsn string) string { return redactDSN(dsn) }
