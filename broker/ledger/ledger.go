// Package ledger keeps mandate's record of what it issued and what it revoked.
//
// Revocations are the security-critical half: Revoke returns only once the
// revocation is durable in the database, then applies it to an in-memory set that
// the exchange and introspection paths consult without a database round trip.
// Other nodes pick revocations up through Sync (called on a timer and on a
// PostgreSQL NOTIFY), and edges follow them through the feed (Changes).
//
// Issued-token records are the audit half: Record queues them and a background
// writer stores them in batches, so the exchange hot path never waits on a write.
//
//	l, err := ledger.Open(ctx, d, ledger.Options{})
//	defer l.Close()
//	l.Record(ledger.TokenRecord{JTI: jti, ...})
//	err = l.Revoke(ctx, ledger.KindGrant, grantID, "user revoked", keepUntil)
//	if reason, revoked := l.Revoked(jti, grantID, ancestors); revoked { ... }
package ledger

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mandate-dev/mandate/internal/db"
	"github.com/mandate-dev/mandate/internal/notify"
)

// Revocation kinds.
const (
	KindToken = "token" // a token id (jti); its descendants carry it in their ancestors
	KindGrant = "grant" // a delegation grant id; every token issued under it carries it
)

// Entry is one revocation as the feed publishes it.
type Entry struct {
	Kind      string `json:"kind"`
	ID        string `json:"id"`
	ExpiresAt int64  `json:"expires_at"` // unix seconds; the entry can be dropped after this
}

// TokenRecord is the audit record of one issued token.
type TokenRecord struct {
	JTI           string
	ClientID      string
	Subject       string
	SubjectIssuer string
	GrantID       string
	ParentJTI     string
	Ancestors     []string
	Actors        []string
	Scope         string
	Audience      []string
	Depth         int
	IssuedAt      time.Time
	ExpiresAt     time.Time
}

// Options tune a Ledger. The zero value is sensible.
type Options struct {
	Clock  func() time.Time
	Logger *slog.Logger
	// BatchSize and FlushInterval bound the issued-token writer's batches
	// (defaults 512 records, 10ms).
	BatchSize     int
	FlushInterval time.Duration
	// QueueSize bounds records waiting to be written (default 65536); past it
	// Record blocks, which applies backpressure rather than dropping records.
	QueueSize int
}

// Ledger is safe for concurrent use.
type Ledger struct {
	d     *db.DB
	clock func() time.Time
	log   *slog.Logger

	mu      sync.RWMutex
	tokens  map[string]int64 // jti -> keep until (unix)
	grants  map[string]int64 // grant id -> keep until (unix)
	dbSeq   int64            // highest database seq applied
	epoch   string           // identifies this node's in-memory log; a change resets followers
	feed    []Entry          // this node's feed log, in the order entries were applied
	changed chan struct{}    // closed and replaced whenever log_ grows

	queue     chan TokenRecord
	flushes   chan chan struct{}
	batchSize int
	interval  time.Duration
	done      chan struct{}
	stopped   chan struct{}
	closeOnce sync.Once
}

// Open loads every live revocation and starts the issued-token writer.
func Open(ctx context.Context, d *db.DB, opts Options) (*Ledger, error) {
	l := &Ledger{
		d:         d,
		clock:     opts.Clock,
		log:       opts.Logger,
		tokens:    map[string]int64{},
		grants:    map[string]int64{},
		changed:   make(chan struct{}),
		batchSize: opts.BatchSize,
		interval:  opts.FlushInterval,
		done:      make(chan struct{}),
		stopped:   make(chan struct{}),
	}
	if l.clock == nil {
		l.clock = time.Now
	}
	if l.log == nil {
		l.log = slog.Default()
	}
	if l.batchSize <= 0 {
		l.batchSize = 512
	}
	if l.interval <= 0 {
		l.interval = 10 * time.Millisecond
	}
	qs := opts.QueueSize
	if qs <= 0 {
		qs = 65536
	}
	l.queue = make(chan TokenRecord, qs)
	l.flushes = make(chan chan struct{})
	l.epoch = newEpoch()
	if err := l.Sync(ctx); err != nil {
		return nil, err
	}
	go l.writer()
	return l, nil
}

func newEpoch() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Close flushes queued records and stops the writer.
func (l *Ledger) Close() {
	l.closeOnce.Do(func() {
		close(l.done)
		<-l.stopped
	})
}

// Revoke records a revocation durably, then applies it locally. keepUntil is
// how long the revocation matters: the latest expiry of any token it affects.
// Revoking something already revoked is not an error; a later keepUntil extends it.
func (l *Ledger) Revoke(ctx context.Context, kind, id, reason string, keepUntil time.Time) error {
	if kind != KindToken && kind != KindGrant {
		return fmt.Errorf("ledger: revoke: unknown kind %q", kind)
	}
	if id == "" {
		return errors.New("ledger: revoke: empty id")
	}
	now := l.clock().Unix()
	until := keepUntil.Unix()
	if until < now {
		until = now
	}
	if len(reason) > 500 {
		reason = reason[:500]
	}
	_, err := l.d.Exec(ctx, `INSERT INTO revocations (kind, id, reason, revoked_at, expires_at)
		VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (kind, id) DO UPDATE SET expires_at = excluded.expires_at
		WHERE revocations.expires_at < excluded.expires_at`, kind, id, reason, now, until)
	if err != nil {
		return fmt.Errorf("ledger: revoke %s %s: %w", kind, id, err)
	}
	l.apply([]Entry{{Kind: kind, ID: id, ExpiresAt: until}}, 0)
	// Wake the other nodes now rather than at their next poll. The row is already
	// durable, so a lost notification only delays them until that poll.
	if err := notify.Notify(ctx, l.d, notify.Revocations, kind+":"+id); err != nil {
		l.log.Warn("ledger: notify other nodes of a revocation", "err", err)
	}
	return nil
}

// Revoked reports whether a token is revoked: its own id, its grant, or any ancestor.
// It never touches the database.
func (l *Ledger) Revoked(jti, grantID string, ancestors []string) (string, bool) {
	now := l.clock().Unix()
	l.mu.RLock()
	defer l.mu.RUnlock()
	if until, ok := l.tokens[jti]; ok && until >= now {
		return "token revoked", true
	}
	if grantID != "" {
		if until, ok := l.grants[grantID]; ok && until >= now {
			return "grant revoked", true
		}
	}
	for _, a := range ancestors {
		if until, ok := l.tokens[a]; ok && until >= now {
			return "a parent token was revoked", true
		}
	}
	return "", false
}

// GrantRevoked reports whether a grant id is in the revocation set.
func (l *Ledger) GrantRevoked(id string) bool {
	now := l.clock().Unix()
	l.mu.RLock()
	defer l.mu.RUnlock()
	until, ok := l.grants[id]
	return ok && until >= now
}

// Sync reads revocations this node has not seen yet. It re-reads a short window
// behind its cursor, because PostgreSQL sequence values can commit out of order.
func (l *Ledger) Sync(ctx context.Context) error {
	l.mu.RLock()
	since := l.dbSeq
	l.mu.RUnlock()
	window := l.clock().Add(-30 * time.Second).Unix()
	rows, err := l.d.Query(ctx, `SELECT seq, kind, id, expires_at FROM revocations
		WHERE (seq > $1 OR revoked_at >= $2) AND expires_at >= $3 ORDER BY seq`, since, window, l.clock().Unix())
	if err != nil {
		return fmt.Errorf("ledger: sync: %w", err)
	}
	defer rows.Close()
	var entries []Entry
	var maxSeq int64
	for rows.Next() {
		var e Entry
		var seq int64
		if err := rows.Scan(&seq, &e.Kind, &e.ID, &e.ExpiresAt); err != nil {
			return fmt.Errorf("ledger: sync: %w", err)
		}
		entries = append(entries, e)
		if seq > maxSeq {
			maxSeq = seq
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("ledger: sync: %w", err)
	}
	l.apply(entries, maxSeq)
	return nil
}

// apply adds entries to the set and, for entries that are new or extended, to the feed log.
func (l *Ledger) apply(entries []Entry, seq int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if seq > l.dbSeq {
		l.dbSeq = seq
	}
	grew := false
	for _, e := range entries {
		m := l.tokens
		if e.Kind == KindGrant {
			m = l.grants
		}
		if cur, ok := m[e.ID]; ok && cur >= e.ExpiresAt {
			continue
		}
		m[e.ID] = e.ExpiresAt
		l.feed = append(l.feed, e)
		grew = true
	}
	if grew {
		close(l.changed)
		l.changed = make(chan struct{})
	}
}

// Prune drops expired revocations from memory and the database and compacts the
// feed log (which resets followers to a fresh snapshot).
func (l *Ledger) Prune(ctx context.Context) (int64, error) {
	now := l.clock().Unix()
	n, err := l.d.Exec(ctx, `DELETE FROM revocations WHERE expires_at < $1`, now)
	if err != nil {
		return 0, fmt.Errorf("ledger: prune: %w", err)
	}
	if _, err := l.d.Exec(ctx, `DELETE FROM issued_tokens WHERE expires_at < $1`, now-86400); err != nil {
		return n, fmt.Errorf("ledger: prune issued tokens: %w", err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	pruned := 0
	for _, m := range []map[string]int64{l.tokens, l.grants} {
		for id, until := range m {
			if until < now {
				delete(m, id)
				pruned++
			}
		}
	}
	if pruned > 0 && len(l.feed) > 2*(len(l.tokens)+len(l.grants)) {
		l.feed = l.snapshotLocked(now)
		l.epoch = newEpoch()
		close(l.changed)
		l.changed = make(chan struct{})
	}
	return n, nil
}

func (l *Ledger) snapshotLocked(now int64) []Entry {
	out := make([]Entry, 0, len(l.tokens)+len(l.grants))
	for id, until := range l.tokens {
		if until >= now {
			out = append(out, Entry{Kind: KindToken, ID: id, ExpiresAt: until})
		}
	}
	for id, until := range l.grants {
		if until >= now {
			out = append(out, Entry{Kind: KindGrant, ID: id, ExpiresAt: until})
		}
	}
	return out
}

// Changes answers the revocation feed: the entries after cursor, a new cursor, and
// whether the follower must reset (take the entries as a full snapshot). An empty or
// foreign cursor gets a full snapshot. When nothing is new it waits up to wait for a
// change (long poll), returning early if ctx ends.
func (l *Ledger) Changes(ctx context.Context, cursor string, wait time.Duration) (entries []Entry, next string, reset bool) {
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		l.mu.RLock()
		epoch, pos, ok := parseCursor(cursor)
		now := l.clock().Unix()
		if !ok || epoch != l.epoch || pos > len(l.feed) {
			snap := l.snapshotLocked(now)
			next = l.epoch + "." + strconv.Itoa(len(l.feed))
			l.mu.RUnlock()
			return snap, next, true
		}
		if pos < len(l.feed) {
			entries = append([]Entry(nil), l.feed[pos:]...)
			next = l.epoch + "." + strconv.Itoa(len(l.feed))
			l.mu.RUnlock()
			return entries, next, false
		}
		changed := l.changed
		l.mu.RUnlock()
		if wait <= 0 {
			return nil, cursor, false
		}
		select {
		case <-changed:
		case <-deadline.C:
			return nil, cursor, false
		case <-ctx.Done():
			return nil, cursor, false
		}
	}
}

func parseCursor(c string) (string, int, bool) {
	epoch, pos, ok := strings.Cut(c, ".")
	if !ok {
		return "", 0, false
	}
	n, err := strconv.Atoi(pos)
	if err != nil || n < 0 {
		return "", 0, false
	}
	return epoch, n, true
}

// Record queues an issued-token record for the background writer.
func (l *Ledger) Record(rec TokenRecord) {
	select {
	case l.queue <- rec:
	case <-l.done:
	}
}

func (l *Ledger) writer() {
	defer close(l.stopped)
	batch := make([]TokenRecord, 0, l.batchSize)
	tick := time.NewTicker(l.interval)
	defer tick.Stop()
	flush := func() {
		if len(batch) == 0 {
			return
		}
		if err := l.writeBatch(context.Background(), batch); err != nil {
			l.log.Error("ledger: write issued-token records", "count", len(batch), "err", err)
		}
		batch = batch[:0]
	}
	for {
		select {
		case rec := <-l.queue:
			batch = append(batch, rec)
			if len(batch) >= l.batchSize {
				flush()
			}
		case <-tick.C:
			flush()
		case done := <-l.flushes:
			// Everything queued before the Flush call is in the queue or the batch:
			// take the queue as it stands, write it all, then answer.
			for n := len(l.queue); n > 0; n-- {
				batch = append(batch, <-l.queue)
			}
			flush()
			close(done)
		case <-l.done:
			for {
				select {
				case rec := <-l.queue:
					batch = append(batch, rec)
					if len(batch) >= l.batchSize {
						flush()
					}
				default:
					flush()
					return
				}
			}
		}
	}
}

func (l *Ledger) writeBatch(ctx context.Context, batch []TokenRecord) error {
	// While the database is unreachable the batch is retried with capped
	// backoff until it is written (records queue behind it, bounded by
	// QueueSize); once the ledger is closing, for writeCloseGrace more at most.
	// Other errors are retried a few times, then the batch is given up.
	var err error
	backoff := 100 * time.Millisecond
	var closing <-chan time.Time
	for attempt := 0; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, writeAttemptTimeout)
		// Prepare the chunk statements outside the transaction (see db.Prepare).
		for start := 0; start < len(batch); start += insertChunk {
			stmt, _ := insertStatement(batch[start:min(start+insertChunk, len(batch))])
			l.d.Prepare(actx, stmt)
		}
		err = l.d.InTx(actx, func(q db.Querier) error {
			// Multi-row INSERTs: one statement per chunk instead of one per record,
			// which is what keeps SQLite's single writer ahead of the token endpoint.
			for start := 0; start < len(batch); start += insertChunk {
				end := min(start+insertChunk, len(batch))
				stmt, args := insertStatement(batch[start:end])
				if _, err := q.Exec(actx, stmt, args...); err != nil {
					return err
				}
			}
			return nil
		})
		cancel()
		if err == nil {
			return nil
		}
		if !errors.Is(err, db.ErrUnavailable) && attempt >= 4 {
			return err
		}
		if closing == nil {
			select {
			case <-l.done:
				closing = time.After(writeCloseGrace)
			default:
			}
		}
		select {
		case <-time.After(backoff):
		case <-closing:
			return err
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

const (
	writeAttemptTimeout = 10 * time.Second
	writeCloseGrace     = 10 * time.Second
)

// insertChunk rows of 13 columns stay under SQLite's historic 999-parameter limit.
const insertChunk = 70

var insertStatements sync.Map // rows -> statement text

func insertStatement(recs []TokenRecord) (string, []any) {
	args := make([]any, 0, len(recs)*13)
	for _, r := range recs {
		anc, _ := json.Marshal(nonNil(r.Ancestors))
		act, _ := json.Marshal(nonNil(r.Actors))
		aud, _ := json.Marshal(nonNil(r.Audience))
		args = append(args, r.JTI, r.ClientID, r.Subject, r.SubjectIssuer, r.GrantID, r.ParentJTI, string(anc), string(act),
			r.Scope, string(aud), r.Depth, r.IssuedAt.Unix(), r.ExpiresAt.Unix())
	}
	if v, ok := insertStatements.Load(len(recs)); ok {
		return v.(string), args
	}
	var b strings.Builder
	b.WriteString(`INSERT INTO issued_tokens (jti, client_id, subject, subject_issuer, grant_id, parent_jti, ancestors, actors, scope, audience, depth, issued_at, expires_at) VALUES `)
	for i := range recs {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('(')
		for j := 0; j < 13; j++ {
			if j > 0 {
				b.WriteByte(',')
			}
			b.WriteString("$" + strconv.Itoa(i*13+j+1))
		}
		b.WriteByte(')')
	}
	b.WriteString(` ON CONFLICT (jti) DO NOTHING`)
	stmt := b.String()
	insertStatements.Store(len(recs), stmt)
	return stmt, args
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// Flush waits until every record queued before the call has been written.
// Tests and graceful shutdown use it; the hot path never does.
func (l *Ledger) Flush(ctx context.Context) error {
	done := make(chan struct{})
	select {
	case l.flushes <- done:
	case <-l.stopped:
		return nil // closed: Close wrote everything
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Issued returns the record of one issued token.
func (l *Ledger) Issued(ctx context.Context, jti string) (*TokenRecord, error) {
	var r TokenRecord
	var anc, act, aud string
	var iat, exp int64
	err := l.d.QueryRow(ctx, `SELECT jti, client_id, subject, subject_issuer, grant_id, parent_jti, ancestors, actors,
		scope, audience, depth, issued_at, expires_at FROM issued_tokens WHERE jti = $1`, jti).
		Scan(&r.JTI, &r.ClientID, &r.Subject, &r.SubjectIssuer, &r.GrantID, &r.ParentJTI, &anc, &act, &r.Scope, &aud, &r.Depth, &iat, &exp)
	if err != nil {
		return nil, fmt.Errorf("ledger: issued %s: %w", jti, err)
	}
	_ = json.Unmarshal([]byte(anc), &r.Ancestors)
	_ = json.Unmarshal([]byte(act), &r.Actors)
	_ = json.Unmarshal([]byte(aud), &r.Audience)
	r.IssuedAt, r.ExpiresAt = time.Unix(iat, 0), time.Unix(exp, 0)
	return &r, nil
}

// Size reports how many token and grant revocations are in force in memory.
func (l *Ledger) Size() (tokens, grants int) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return len(l.tokens), len(l.grants)
}

// Pending reports how many issued-token records wait for the writer.
func (l *Ledger) Pending() int { return len(l.queue) }

// RevokeIssuedTo revokes every unexpired token issued to a client (and so, by
// their ancestor ids, every token derived from them), for a client that is
// disabled or deleted. It first waits for queued issued-token records, so that
// tokens issued an instant ago are included. It returns how many it revoked.
func (l *Ledger) RevokeIssuedTo(ctx context.Context, clientID, reason string) (int, error) {
	fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	err := l.Flush(fctx)
	cancel()
	if err != nil {
		return 0, fmt.Errorf("ledger: revoke tokens of %s: flush: %w", clientID, err)
	}
	rows, err := l.d.Query(ctx, `SELECT jti, expires_at FROM issued_tokens WHERE client_id = $1 AND expires_at >= $2`, clientID, l.clock().Unix())
	if err != nil {
		return 0, fmt.Errorf("ledger: revoke tokens of %s: %w", clientID, err)
	}
	type tok struct {
		jti string
		exp int64
	}
	var toks []tok
	for rows.Next() {
		var t tok
		if err := rows.Scan(&t.jti, &t.exp); err != nil {
			rows.Close()
			return 0, fmt.Errorf("ledger: revoke tokens of %s: %w", clientID, err)
		}
		toks = append(toks, t)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("ledger: revoke tokens of %s: %w", clientID, err)
	}
	for i, t := range toks {
		if err := l.Revoke(ctx, KindToken, t.jti, reason, time.Unix(t.exp, 0).Add(time.Minute)); err != nil {
			return i, err
		}
	}
	return len(toks), nil
}
