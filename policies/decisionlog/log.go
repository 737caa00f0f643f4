package decisionlog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mandate-dev/mandate/broker"
	"github.com/mandate-dev/mandate/internal/db"
	"github.com/mandate-dev/mandate/policies"
)

// Defaults of Options.
const (
	DefaultBatchSize     = 500
	DefaultFlushInterval = 10 * time.Millisecond
	DefaultQueueSize     = 65536
	DefaultBlockTimeout  = 100 * time.Millisecond
	DefaultMaxInputBytes = 64 << 10
)

// Rows per INSERT statement. modernc's SQLite binds each parameter by
// looking its name up in a list, which makes a statement's binding quadratic
// in its parameters: ten rows (160 parameters) a statement is its sweet
// spot. PostgreSQL pays a round trip per statement instead, so it takes
// more rows at once (1600 parameters, far under its 65535).
const (
	rowsPerInsertSQLite   = 10
	rowsPerInsertPostgres = 100
)

// Options tune a Log. The zero value is sensible.
type Options struct {
	Clock  func() time.Time
	Logger *slog.Logger
	// BatchSize is the most decisions written in one transaction (default 500).
	BatchSize int
	// FlushInterval is the longest a recorded decision waits for its batch
	// to be written (default 10ms).
	FlushInterval time.Duration
	// QueueSize bounds the decisions waiting to be written (default 65536).
	QueueSize int
	// BlockTimeout is how long RecordDecision waits for room in a full queue
	// before it drops the decision, counts it and logs it (default 100ms).
	// A full queue means the database cannot keep up; waiting slows the
	// token endpoint down rather than losing audit records silently.
	BlockTimeout time.Duration
	// MaxInputBytes bounds the stored policy input (default 64 KiB); a
	// larger input is not stored, and that decision cannot be replayed.
	MaxInputBytes int
}

// Log is the decision log: it records every token request's decision in the
// background, and answers queries, retention and replays over what it
// recorded. It is safe for concurrent use.
type Log struct {
	d            *db.DB
	clock        func() time.Time
	log          *slog.Logger
	batchSize    int
	interval     time.Duration
	blockTimeout time.Duration
	maxInput     int

	queue   chan *row
	mu      sync.RWMutex // held for reading while enqueuing, for writing by Close
	closed  bool
	stop    chan struct{}
	stopped chan struct{}
	once    sync.Once

	giveUp bool // the writer's own: the database was down at shutdown

	recorded, written, dropped, failed, blocked atomic.Uint64
	lastDropLog                                 atomic.Int64 // unix nanos of the last drop warning
}

var _ broker.DecisionRecorder = (*Log)(nil)

// row is one decision ready to store, or a Flush marker (flushed != nil).
type row struct {
	at                                       int64 // unix ms
	clientID, subject, subjectIssuer, actors string
	grantID, grantType, requested, audiences string
	reasons, issued, bundleVersion, input    string
	code                                     string // the OAuth error code
	allowed                                  bool
	evalUS                                   int64
	flushed                                  chan struct{}
	flushErr                                 error
}

// New starts a Log over d, which must be migrated. Close stops it.
func New(d *db.DB, opts Options) *Log {
	l := &Log{
		d: d, clock: opts.Clock, log: opts.Logger, batchSize: opts.BatchSize, interval: opts.FlushInterval,
		blockTimeout: opts.BlockTimeout, maxInput: opts.MaxInputBytes,
		stop: make(chan struct{}), stopped: make(chan struct{}),
	}
	if l.clock == nil {
		l.clock = time.Now
	}
	if l.log == nil {
		l.log = slog.Default()
	}
	if l.batchSize <= 0 {
		l.batchSize = DefaultBatchSize
	}
	if l.interval <= 0 {
		l.interval = DefaultFlushInterval
	}
	if l.blockTimeout <= 0 {
		l.blockTimeout = DefaultBlockTimeout
	}
	if l.maxInput <= 0 {
		l.maxInput = DefaultMaxInputBytes
	}
	qs := opts.QueueSize
	if qs <= 0 {
		qs = DefaultQueueSize
	}
	l.queue = make(chan *row, qs)
	go l.run()
	return l
}

// RecordDecision queues a decision for the background writer; it implements
// broker.DecisionRecorder. It does no I/O: it converts the audit record
// (dropping anything that looks like a token) on the caller's goroutine, so
// the caller may reuse a afterwards, and hands it to the writer. Only when
// the queue is full does it wait, at most BlockTimeout; then the decision is
// dropped, counted in Stats().Dropped and logged.
func (l *Log) RecordDecision(ctx context.Context, a *broker.Audit) {
	if a == nil {
		return
	}
	r := l.convert(ctx, a)
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		l.drop(ctx, "the decision log is closed")
		return
	}
	select {
	case l.queue <- r:
		l.recorded.Add(1)
		return
	default:
	}
	l.blocked.Add(1)
	t := time.NewTimer(l.blockTimeout)
	defer t.Stop()
	select {
	case l.queue <- r:
		l.recorded.Add(1)
	case <-t.C:
		l.drop(ctx, "the queue stayed full: the database is not keeping up")
	}
}

func (l *Log) drop(ctx context.Context, why string) {
	n := l.dropped.Add(1)
	// One warning every 10 seconds at most: a struggling database must not
	// also flood the log.
	now := time.Now().UnixNano()
	last := l.lastDropLog.Load()
	if now-last >= int64(10*time.Second) && l.lastDropLog.CompareAndSwap(last, now) {
		l.log.WarnContext(ctx, "decision log dropped decisions", "reason", why, "dropped_total", n)
	}
}

// convert builds the stored row. Every string is cleared of tokens.
func (l *Log) convert(ctx context.Context, a *broker.Audit) *row {
	r := &row{
		at:            l.clock().UnixMilli(),
		clientID:      clean(a.ClientID),
		subject:       clean(a.Subject),
		subjectIssuer: clean(a.SubjectIssuer),
		actors:        jsonList(a.Actors),
		grantID:       clean(a.GrantID),
		grantType:     clean(a.GrantType),
		requested:     jsonList(a.Requested),
		audiences:     jsonList(a.Audiences),
		allowed:       a.Allowed,
		reasons:       jsonList(a.Reasons),
		issued:        jsonList(a.Issued),
		code:          clean(a.Error),
		bundleVersion: clean(a.BundleVersion),
		evalUS:        a.EvalDuration.Microseconds(),
	}
	if pin, typed := a.Input.(*policies.Input); a.Input != nil && (!typed || pin != nil) {
		var (
			in  []byte
			err error
		)
		if typed {
			in, err = pin.MarshalJSON() // skips json.Marshal's second pass over the output
		} else {
			in, err = json.Marshal(a.Input)
		}
		if err == nil {
			in, err = sanitizeJSON(in)
		}
		switch {
		case err != nil:
			l.log.DebugContext(ctx, "decision log: policy input not stored", "client_id", r.clientID, "err", err)
		case len(in) > l.maxInput:
			l.log.DebugContext(ctx, "decision log: policy input not stored: too large", "client_id", r.clientID, "bytes", len(in))
		default:
			r.input = string(in)
		}
	}
	return r
}

// clean makes s safe to store: no token, valid UTF-8, no NUL (PostgreSQL
// refuses both in TEXT, and a row it refuses must not be retried forever).
// The JSON columns need no such care: encoding/json escapes both.
func clean(s string) string {
	s = redactString(s)
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	if strings.IndexByte(s, 0) >= 0 {
		s = strings.ReplaceAll(s, "\x00", "")
	}
	return s
}

func jsonList(ss []string) string {
	if len(ss) == 0 {
		return "[]"
	}
	b, err := json.Marshal(redactList(ss))
	if err != nil { // cannot happen: strings always encode
		return "[]"
	}
	return string(b)
}

// run is the background writer: one transaction per batch of at most
// BatchSize decisions, at least every FlushInterval while any wait.
func (l *Log) run() {
	defer close(l.stopped)
	batch := make([]*row, 0, l.batchSize)
	tick := time.NewTicker(l.interval)
	defer tick.Stop()
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := l.write(batch)
		clear(batch)
		batch = batch[:0]
		return err
	}
	take := func(r *row) {
		if r.flushed != nil {
			r.flushErr = flush()
			close(r.flushed)
			return
		}
		batch = append(batch, r)
		if len(batch) >= l.batchSize {
			_ = flush()
		}
	}
	for {
		select {
		case r := <-l.queue:
			take(r)
		case <-tick.C:
			_ = flush()
		case <-l.stop:
			for {
				select {
				case r := <-l.queue:
					take(r)
				default:
					_ = flush()
					return
				}
			}
		}
	}
}

// Retry pacing of a batch the database refused.
const (
	retryFirst = 50 * time.Millisecond
	retryMax   = 2 * time.Second
	// permanentAttempts is how often a batch is tried when the error does
	// not look like an outage, before its rows are tried one by one.
	permanentAttempts = 3
)

// write stores a batch. While the database is unreachable it keeps trying,
// backing off up to retryMax: decisions wait in the queue, and only when the
// queue is full does RecordDecision start dropping (and counting). Any other
// error is retried a few times, then the rows are stored one by one, so that
// one row the database refuses cannot take its batch, or the writer, down
// with it. Once Close was called a batch is tried once, and after a failure
// the rest of the queue is counted as failed without trying: a shutdown
// with the database down must not wait on every batch. Lost decisions are
// counted in Stats().Failed.
func (l *Log) write(batch []*row) error {
	if l.giveUp {
		l.failed.Add(uint64(len(batch)))
		return fmt.Errorf("decisionlog: write %d decisions: the database was unreachable at shutdown", len(batch))
	}
	ctx := context.Background()
	backoff := retryFirst
	for attempt := 1; ; attempt++ {
		err := l.insert(ctx, batch)
		if err == nil {
			l.written.Add(uint64(len(batch)))
			if attempt > 1 {
				l.log.Info("decision log: writing again", "attempts", attempt)
			}
			return nil
		}
		outage := errors.Is(err, db.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded)
		stopping := l.stopping()
		switch {
		case stopping && outage:
			l.giveUp = true
			l.failed.Add(uint64(len(batch)))
			l.log.Error("decision log: the database is unreachable at shutdown; queued decisions are lost", "err", err)
			return fmt.Errorf("decisionlog: write %d decisions: %w", len(batch), err)
		case stopping || !outage && attempt >= permanentAttempts:
			return l.writeEach(ctx, batch, err)
		}
		if attempt == 1 {
			l.log.Warn("decision log: write failed; retrying", "decisions", len(batch), "err", err)
		}
		select {
		case <-time.After(backoff):
		case <-l.stop:
		}
		backoff = min(2*backoff, retryMax)
	}
}

// writeEach stores the rows of a refused batch one by one, counting those
// the database still refuses.
func (l *Log) writeEach(ctx context.Context, batch []*row, batchErr error) error {
	var lost int
	var last error
	for _, r := range batch {
		if err := l.insert(ctx, []*row{r}); err != nil {
			lost++
			last = err
			continue
		}
		l.written.Add(1)
	}
	if lost == 0 {
		return nil
	}
	l.failed.Add(uint64(lost))
	l.log.Error("decision log: decisions lost to a database error", "decisions", lost, "err", last, "batch_err", batchErr)
	return fmt.Errorf("decisionlog: write %d decisions: %w", lost, last)
}

func (l *Log) stopping() bool {
	select {
	case <-l.stop:
		return true
	default:
		return false
	}
}

func (l *Log) insert(ctx context.Context, batch []*row) error {
	per := rowsPerInsertSQLite
	if l.d.Dialect() == db.Postgres {
		per = rowsPerInsertPostgres
	}
	// Prepare the statements outside the transaction (see db.Prepare).
	l.d.Prepare(ctx, insertSQL(min(len(batch), per)))
	if rest := len(batch) % per; rest != 0 && len(batch) > per {
		l.d.Prepare(ctx, insertSQL(rest))
	}
	return l.d.InTx(ctx, func(q db.Querier) error {
		args := make([]any, 0, per*insertColumns)
		for len(batch) > 0 {
			n := min(len(batch), per)
			args = args[:0]
			for _, r := range batch[:n] {
				args = append(args, r.at, r.clientID, r.subject, r.subjectIssuer, r.actors, r.grantID, r.grantType,
					r.requested, r.audiences, r.allowed, r.reasons, r.issued, r.code, r.bundleVersion, r.evalUS, r.input)
			}
			if _, err := q.Exec(ctx, insertSQL(n), args...); err != nil {
				return err
			}
			batch = batch[n:]
		}
		return nil
	})
}

const insertColumns = 16

var insertStatements = sync.OnceValue(func() []string {
	out := make([]string, rowsPerInsertPostgres+1)
	for n := 1; n <= rowsPerInsertPostgres; n++ {
		var b strings.Builder
		b.WriteString(`INSERT INTO decisions (at, client_id, subject, subject_issuer, actors, grant_id, grant_type,
			requested, audiences, allowed, reasons, issued, error, bundle_version, eval_us, input) VALUES `)
		p := 1
		for i := range n {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteByte('(')
			for c := range insertColumns {
				if c > 0 {
					b.WriteString(", ")
				}
				fmt.Fprintf(&b, "$%d", p)
				p++
			}
			b.WriteByte(')')
		}
		out[n] = b.String()
	}
	return out
})

// insertSQL is the INSERT of n rows (1 <= n <= rowsPerInsertPostgres).
func insertSQL(n int) string { return insertStatements()[n] }

// Flush waits until every decision recorded before the call is written (or
// lost after retries, which it reports). Tests and graceful shutdown use it;
// the request path never does.
func (l *Log) Flush(ctx context.Context) error {
	m := &row{flushed: make(chan struct{})}
	l.mu.RLock()
	if l.closed {
		l.mu.RUnlock()
		return nil // Close wrote everything
	}
	select {
	case l.queue <- m:
	case <-ctx.Done():
		l.mu.RUnlock()
		return fmt.Errorf("decisionlog: flush: %w", ctx.Err())
	}
	l.mu.RUnlock()
	select {
	case <-m.flushed:
		return m.flushErr
	case <-ctx.Done():
		return fmt.Errorf("decisionlog: flush: %w", ctx.Err())
	}
}

// Close writes the decisions still queued and stops the writer. Decisions
// recorded after Close are dropped and counted.
func (l *Log) Close() {
	l.once.Do(func() {
		l.mu.Lock()
		l.closed = true
		l.mu.Unlock()
		close(l.stop)
		<-l.stopped
	})
}

// Stats are the decision log's counters since New.
type Stats struct {
	// Recorded decisions were accepted into the queue.
	Recorded uint64 `json:"recorded"`
	// Written decisions are stored.
	Written uint64 `json:"written"`
	// Dropped decisions were refused: the queue stayed full past
	// BlockTimeout, or the log was closed.
	Dropped uint64 `json:"dropped"`
	// Failed decisions were accepted but lost to write errors after retries.
	Failed uint64 `json:"failed"`
	// Blocked counts the RecordDecision calls that had to wait for room.
	Blocked uint64 `json:"blocked"`
	// Queued is the number of decisions waiting now.
	Queued int `json:"queued"`
}

// Stats returns the counters.
func (l *Log) Stats() Stats {
	return Stats{
		Recorded: l.recorded.Load(), Written: l.written.Load(), Dropped: l.dropped.Load(),
		Failed: l.failed.Load(), Blocked: l.blocked.Load(), Queued: len(l.queue),
	}
}

var (
	descRecorded = prometheus.NewDesc("mandate_decision_log_recorded_total", "Decisions accepted into the decision log queue.", nil, nil)
	descWritten  = prometheus.NewDesc("mandate_decision_log_written_total", "Decisions stored in the decision log.", nil, nil)
	descDropped  = prometheus.NewDesc("mandate_decision_log_dropped_total", "Decisions not logged because the queue stayed full or the log was closed.", nil, nil)
	descFailed   = prometheus.NewDesc("mandate_decision_log_failed_total", "Decisions lost to database errors after retries.", nil, nil)
	descBlocked  = prometheus.NewDesc("mandate_decision_log_blocked_total", "Token requests that waited for room in the decision log queue.", nil, nil)
	descQueued   = prometheus.NewDesc("mandate_decision_log_queued", "Decisions waiting to be written.", nil, nil)
)

var _ prometheus.Collector = (*Log)(nil)

// Describe implements prometheus.Collector.
func (l *Log) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRecorded, descWritten, descDropped, descFailed, descBlocked, descQueued} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (l *Log) Collect(ch chan<- prometheus.Metric) {
	s := l.Stats()
	ch <- prometheus.MustNewConstMetric(descRecorded, prometheus.CounterValue, float64(s.Recorded))
	ch <- prometheus.MustNewConstMetric(descWritten, prometheus.CounterValue, float64(s.Written))
	ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, float64(s.Dropped))
	ch <- prometheus.MustNewConstMetric(descFailed, prometheus.CounterValue, float64(s.Failed))
	ch <- prometheus.MustNewConstMetric(descBlocked, prometheus.CounterValue, float64(s.Blocked))
	ch <- prometheus.MustNewConstMetric(descQueued, prometheus.GaugeValue, float64(s.Queued))
}

// errNoLog is returned by the query methods of a nil Log.
var errNoLog = errors.New("decisionlog: no decision log")
