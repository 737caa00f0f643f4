package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mandate-dev/mandate/internal/db"
	"github.com/mandate-dev/mandate/policies"
)

// SyncerOptions tune a Syncer.
type SyncerOptions struct {
	Logger *slog.Logger
	// RetryInterval is how long Listen waits before reconnecting (default 1s).
	RetryInterval time.Duration
}

// Syncer keeps one engine running the bundle the registry says is active. A
// node has one: Start at boot, then Poll on a timer (and Listen on
// PostgreSQL, which polls as soon as another node activates something).
// Activations made through the same Registry reach the engine at once.
//
// The engine swaps bundles atomically (policies.Engine.Activate), so a
// request is decided entirely by the old bundle or entirely by the new one.
type Syncer struct {
	reg   *Registry
	eng   *policies.Engine
	log   *slog.Logger
	retry time.Duration

	pollMu    sync.Mutex // one Poll at a time
	failedSeq int64      // an activation that could not be loaded; not retried

	mu      sync.Mutex
	seq     int64 // the activation the engine runs
	version string
}

// NewSyncer returns a Syncer for eng and attaches it to reg, so that reg's
// Activate and Rollback apply to eng at once.
func NewSyncer(reg *Registry, eng *policies.Engine, opts SyncerOptions) *Syncer {
	s := &Syncer{reg: reg, eng: eng, log: opts.Logger, retry: opts.RetryInterval}
	if s.log == nil {
		s.log = reg.log
	}
	if s.retry <= 0 {
		s.retry = time.Second
	}
	reg.attach(s)
	return s
}

// Start loads the active bundle into the engine. When nothing was ever
// activated, fallback (the default bundle or the --policies folder, already
// compiled and tested by the caller) is stored and recorded as the first
// activation, by SystemActor; if another node records its own first at the
// same moment, that one wins here too.
//
// An error means the engine was left as it was: the caller should not serve,
// since this node would not decide as the others do.
func (s *Syncer) Start(ctx context.Context, fallback *policies.Bundle) error {
	act, err := s.reg.Active(ctx)
	if errors.Is(err, ErrNoActivation) {
		if fallback == nil {
			return errors.New("registry: start: no activation is recorded and no fallback bundle was given")
		}
		report, terr := policies.RunTests(ctx, fallback)
		if terr != nil {
			return fmt.Errorf("registry: start: test %s: %w", fallback.Version, terr)
		}
		if !report.OK() {
			return fmt.Errorf("registry: start: %w", failedTests(fallback.Version, report))
		}
		var recorded bool
		act, recorded, err = s.reg.bootstrap(ctx, fallback, report)
		if err != nil {
			return fmt.Errorf("registry: start: record %s as the first activation: %w", fallback.Version, err)
		}
		if recorded {
			// Stored from this very bundle: no need to compile it again.
			s.reg.cachePut(fallback, true)
		}
	} else if err != nil {
		return fmt.Errorf("registry: start: %w", err)
	}
	b, err := s.reg.Bundle(ctx, act.Version)
	if err != nil {
		return fmt.Errorf("registry: start: load active bundle %s (activation %d): %w", act.Version, act.Seq, err)
	}
	s.apply(act.Seq, b)
	s.log.InfoContext(ctx, "policy bundle loaded", "version", act.Version, "seq", act.Seq, "activated_by", act.ActivatedBy)
	if fallback != nil && fallback.Digest != b.Digest {
		// Say so: an operator who changed the policies folder expects it to run.
		s.log.WarnContext(ctx, "the start-up policy bundle is not used: the registry's active bundle wins; push and activate it to deploy it",
			"startup_version", fallback.Version, "active_version", b.Version)
	}
	return nil
}

// Poll checks for an activation newer than the one the engine runs, made by
// any node, and if there is one swaps the engine to its bundle. It reports
// whether it swapped. It costs one small query when nothing changed, so it
// can run every few hundred milliseconds.
//
// An activation whose bundle cannot be compiled here (a newer engine refusing
// it, say) is reported once and then skipped, leaving the engine on its
// current bundle; database errors are retried by the next Poll.
func (s *Syncer) Poll(ctx context.Context) (bool, error) {
	s.pollMu.Lock()
	defer s.pollMu.Unlock()
	seq, version, err := s.reg.latest(ctx)
	if err != nil {
		return false, fmt.Errorf("registry: poll: %w", err)
	}
	if seq == 0 || seq <= s.Seq() || seq == s.failedSeq {
		return false, nil
	}
	b, err := s.reg.Bundle(ctx, version)
	if err != nil {
		if ctx.Err() == nil && !errors.Is(err, db.ErrUnavailable) {
			s.failedSeq = seq
			s.log.ErrorContext(ctx, "activated policy bundle cannot be loaded; this node keeps its current bundle",
				"version", version, "seq", seq, "current", s.Version(), "err", err)
		}
		return false, fmt.Errorf("registry: poll: load %s (activation %d): %w", version, seq, err)
	}
	return s.apply(seq, b), nil
}

// apply swaps the engine to b if seq is newer than what it runs: activations
// arrive from Poll and from this process's Activate, in either order.
func (s *Syncer) apply(seq int64, b *policies.Bundle) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if seq <= s.seq || b == nil {
		return false
	}
	prev := s.eng.Activate(b)
	s.seq, s.version = seq, b.Version
	if prev == nil || prev.Version != b.Version {
		prevVersion := ""
		if prev != nil {
			prevVersion = prev.Version
		}
		s.log.Info("policy bundle swapped", "version", b.Version, "previous", prevVersion, "seq", seq)
	}
	return true
}

// Seq is the activation the engine runs (0 before Start).
func (s *Syncer) Seq() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seq
}

// Version is the bundle version the engine runs, as the Syncer set it.
func (s *Syncer) Version() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.version
}

// Listen polls whenever another node announces an activation on Channel,
// until ctx is done; it reconnects after errors and polls after every
// (re)connection to catch up on what it missed. On SQLite, a single-node
// store, it returns nil at once: the timer's Poll is enough.
func (s *Syncer) Listen(ctx context.Context) error {
	if s.reg.d.Dialect() != db.Postgres {
		return nil
	}
	for {
		err := s.listenOnce(ctx)
		if ctx.Err() != nil {
			return nil
		}
		s.log.WarnContext(ctx, "policy activation listener lost its connection; reconnecting", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(s.retry):
		}
	}
}

func (s *Syncer) listenOnce(ctx context.Context) error {
	pc, err := s.reg.d.Pool().Acquire(ctx)
	if err != nil {
		return fmt.Errorf("acquire connection: %w", err)
	}
	// The connection leaves the pool: a LISTENing connection handed to
	// another query would swallow this channel's notifications.
	conn := pc.Hijack()
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{Channel}.Sanitize()); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	if _, err := s.Poll(ctx); err != nil {
		s.log.WarnContext(ctx, "policy poll failed", "err", err)
	}
	for {
		if _, err := conn.WaitForNotification(ctx); err != nil {
			return fmt.Errorf("wait for notification: %w", err)
		}
		if _, err := s.Poll(ctx); err != nil && ctx.Err() == nil {
			s.log.WarnContext(ctx, "policy poll failed", "err", err)
		}
	}
}
