// Package notify carries cross-node signals over PostgreSQL LISTEN/NOTIFY:
// revocations, policy activations, key rotations and registry changes reach every
// node at once instead of at the next poll. A notification is only a hint to
// re-read the database (the system of record), so a lost one costs latency, not
// correctness: after every (re)connect the listener calls every handler once, so
// that each catches up on what happened while it was away.
package notify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mandate-dev/mandate/internal/db"
)

// Channels mandate uses.
const (
	Revocations = "mandate_revocation"
	Policies    = "mandate_policy"
	Keys        = "mandate_keys"
	Clients     = "mandate_clients"
	Grants      = "mandate_grants"
)

// Handler reacts to a notification; payload is "" for a catch-up after reconnect.
type Handler func(ctx context.Context, payload string)

// Listener holds one dedicated connection that LISTENs on every registered channel.
type Listener struct {
	pool        *pgxpool.Pool
	log         *slog.Logger
	mu          sync.Mutex
	handlers    map[string][]Handler
	lastConnect time.Time
}

// NewListener returns a listener for d, or nil when d is not PostgreSQL (a single
// SQLite node needs no signals).
func NewListener(d *db.DB, log *slog.Logger) *Listener {
	if d.Dialect() != db.Postgres {
		return nil
	}
	if log == nil {
		log = slog.Default()
	}
	return &Listener{pool: d.Pool(), log: log, handlers: map[string][]Handler{}}
}

// Handle registers h for channel. Call before Run.
func (l *Listener) Handle(channel string, h Handler) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.handlers[channel] = append(l.handlers[channel], h)
}

// Run listens until ctx ends, reconnecting with backoff.
func (l *Listener) Run(ctx context.Context) {
	if l == nil {
		return
	}
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := l.listen(ctx)
		if ctx.Err() != nil {
			return
		}
		l.log.Warn("notify: listener disconnected; reconnecting", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		if backoff < 5*time.Second {
			backoff *= 2
		}
	}
}

func (l *Listener) listen(ctx context.Context) error {
	pooled, err := l.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("acquire: %w", err)
	}
	// The connection is dedicated to LISTEN: never hand it back to the pool.
	conn := pooled.Hijack()
	defer conn.Close(context.WithoutCancel(ctx))
	l.mu.Lock()
	chans := make([]string, 0, len(l.handlers))
	for ch := range l.handlers {
		chans = append(chans, ch)
	}
	l.mu.Unlock()
	for _, ch := range chans {
		if _, err := conn.Exec(ctx, "LISTEN "+ch); err != nil {
			return fmt.Errorf("listen %s: %w", ch, err)
		}
	}
	l.mu.Lock()
	l.lastConnect = time.Now()
	l.mu.Unlock()
	// Catch up on whatever happened while this node was not listening.
	for _, ch := range chans {
		l.dispatch(ctx, ch, "")
	}
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			if errors.Is(err, context.Canceled) {
				return err
			}
			return fmt.Errorf("wait: %w", err)
		}
		l.dispatch(ctx, n.Channel, n.Payload)
	}
}

func (l *Listener) dispatch(ctx context.Context, ch, payload string) {
	l.mu.Lock()
	hs := append([]Handler(nil), l.handlers[ch]...)
	l.mu.Unlock()
	for _, h := range hs {
		h(ctx, payload)
	}
}

// Notify sends payload on channel when d is PostgreSQL; a no-op on SQLite.
func Notify(ctx context.Context, d *db.DB, channel, payload string) error {
	if d.Dialect() != db.Postgres {
		return nil
	}
	if _, err := d.Exec(ctx, `SELECT pg_notify($1, $2)`, channel, payload); err != nil {
		return fmt.Errorf("notify %s: %w", channel, err)
	}
	return nil
}
