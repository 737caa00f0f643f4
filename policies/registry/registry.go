package registry

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"
	"unicode"

	"github.com/mandate-dev/mandate/internal/db"
	"github.com/mandate-dev/mandate/policies"
)

// Channel is the PostgreSQL NOTIFY channel an activation is announced on; the
// payload is the activation's seq. A node that LISTENs on it calls
// Syncer.Poll when a notification arrives (Syncer.Listen does both).
const Channel = "mandate_policy"

// SystemActor is the activated_by of the activation a node records by itself
// when it starts on a database where nothing was activated yet.
const SystemActor = "system"

// Activation actions, the values of Activation.Action.
const (
	ActionActivate  = "activate"
	ActionRollback  = "rollback"
	ActionBootstrap = "bootstrap"
)

// advisoryLockKey serializes activations on PostgreSQL (pg_advisory_xact_lock),
// so that two concurrent rollbacks cannot both read the same history. SQLite
// serializes writers already (transactions are IMMEDIATE).
const advisoryLockKey int64 = 0x6d616e64_706f6c69 // "mandpoli"

// maxVersionLen bounds a pushed version name.
const maxVersionLen = 128

// Options tune a Registry. The zero value is sensible.
type Options struct {
	Clock  func() time.Time
	Logger *slog.Logger
	// CacheSize bounds the compiled bundles kept in memory (default 8): the
	// active one and the few a rollback or a simulation is likely to need.
	CacheSize int
}

// Registry stores policy bundles and the history of their activations. It
// is safe for concurrent use; several nodes share one through the database.
type Registry struct {
	d         *db.DB
	clock     func() time.Time
	log       *slog.Logger
	cacheSize int

	mu      sync.Mutex
	cache   map[string]*cached // version -> compiled bundle
	lru     []string           // versions in cache, least recently used first
	syncers []*Syncer
}

type cached struct {
	b      *policies.Bundle
	tested bool // its tests passed in this process
}

// Record is one stored bundle.
type Record struct {
	Version string `json:"version"`
	// Files maps each path to its source. List leaves it nil.
	Files     map[string]string `json:"files,omitempty"`
	Author    string            `json:"author"`
	CreatedAt time.Time         `json:"created_at"`
	// SHA256 is the engine's digest of the files (policies.Bundle.Digest).
	SHA256 string `json:"sha256"`
	// Tests is the report of the tests run at push. List leaves Results nil.
	Tests policies.TestReport `json:"test_report"`
}

// Activation is one row of the activation history.
type Activation struct {
	Seq         int64     `json:"seq"`
	Version     string    `json:"version"`
	ActivatedBy string    `json:"activated_by"`
	At          time.Time `json:"at"`
	// Action is ActionActivate, ActionRollback or ActionBootstrap.
	Action string `json:"action"`
	// Bundle is the compiled bundle, set by Activate and Rollback.
	Bundle *policies.Bundle `json:"-"`
}

// New returns a Registry over d, which must be migrated.
func New(d *db.DB, opts Options) *Registry {
	r := &Registry{d: d, clock: opts.Clock, log: opts.Logger, cacheSize: opts.CacheSize, cache: map[string]*cached{}}
	if r.clock == nil {
		r.clock = time.Now
	}
	if r.log == nil {
		r.log = slog.Default()
	}
	if r.cacheSize <= 0 {
		r.cacheSize = 8
	}
	return r
}

// CheckVersion reports whether v may name a pushed bundle: 1 to 128
// characters from [A-Za-z0-9._:+-], starting with a letter or a digit, so
// that it is safe in a URL path, a log line and a shell.
func CheckVersion(v string) error {
	if v == "" || len(v) > maxVersionLen {
		return fmt.Errorf("%w: %q must be 1 to %d characters", ErrInvalidVersion, v, maxVersionLen)
	}
	for i, c := range v {
		ok := c < unicode.MaxASCII && (unicode.IsLetter(c) || unicode.IsDigit(c))
		if i > 0 && !ok {
			ok = c == '.' || c == '_' || c == ':' || c == '+' || c == '-'
		}
		if !ok {
			return fmt.Errorf("%w: %q: use letters, digits and . _ : + - (starting with a letter or digit)", ErrInvalidVersion, v)
		}
	}
	return nil
}

// Push compiles files, runs their tests and, only when both succeed, stores
// the bundle under version. An empty version is generated as "v<N>-<sha>",
// N counting the stored bundles and sha the first 8 hex digits of the digest.
//
// A refused bundle yields an *InvalidBundleError listing every compile
// problem (file:line:col) or every failing test; a bundle must carry at least
// one passing test. A version already stored yields ErrConflict. Push never
// changes what is active: Activate does.
func (r *Registry) Push(ctx context.Context, files map[string]string, author, version string) (*Record, error) {
	if err := checkAuthor(author); err != nil {
		return nil, fmt.Errorf("registry: push: %w", err)
	}
	name := version
	if name == "" {
		name = "(new version)"
	}
	// The engine checks the limits too; checking first spares the hashing
	// and the version lookup for a bundle that cannot be stored anyway.
	if err := checkLimits(files); err != nil {
		return nil, invalid(name, err)
	}
	if version != "" {
		if err := CheckVersion(version); err != nil {
			return nil, fmt.Errorf("registry: push: %w", err)
		}
		exists, err := r.exists(ctx, version)
		if err != nil {
			return nil, fmt.Errorf("registry: push %s: %w", version, err)
		}
		if exists {
			return nil, fmt.Errorf("registry: push %s: %w", version, ErrConflict)
		}
	} else {
		var err error
		if version, err = r.nextVersion(ctx, files); err != nil {
			return nil, fmt.Errorf("registry: push: %w", err)
		}
	}

	b, err := policies.Compile(ctx, version, files)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("registry: push %s: %w", version, ctx.Err())
		}
		return nil, invalid(version, err)
	}
	report, err := policies.RunTests(ctx, b)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("registry: push %s: %w", version, ctx.Err())
		}
		return nil, invalid(version, err)
	}
	if !report.OK() {
		return nil, failedTests(version, report)
	}
	if err := smokeTest(ctx, b, r.clock()); err != nil {
		var bad *InvalidBundleError
		if errors.As(err, &bad) {
			bad.Report = &report
			return nil, bad
		}
		return nil, fmt.Errorf("registry: push %s: %w", version, err)
	}

	rec := &Record{Version: version, Files: b.Files, Author: author, CreatedAt: r.clock().Truncate(time.Second), SHA256: b.Digest, Tests: report}
	filesJSON, err := json.Marshal(b.Files)
	if err != nil {
		return nil, fmt.Errorf("registry: push %s: encode files: %w", version, err)
	}
	reportJSON, err := json.Marshal(report)
	if err != nil {
		return nil, fmt.Errorf("registry: push %s: encode test report: %w", version, err)
	}
	_, err = r.d.Exec(ctx, `INSERT INTO policy_bundles (version, files, author, created_at, test_report, sha256)
		VALUES ($1, $2, $3, $4, $5, $6)`, version, string(filesJSON), author, rec.CreatedAt.Unix(), string(reportJSON), b.Digest)
	if errors.Is(err, db.ErrConflict) {
		return nil, fmt.Errorf("registry: push %s: %w", version, ErrConflict)
	}
	if err != nil {
		return nil, fmt.Errorf("registry: push %s: store: %w", version, err)
	}
	r.cachePut(b, true)
	r.log.InfoContext(ctx, "policy bundle pushed", "version", version, "author", author, "sha256", b.Digest,
		"files", len(files), "tests_passed", report.Passed)
	return rec, nil
}

func checkAuthor(a string) error {
	if a == "" || len(a) > 256 {
		return errors.New("author must be 1 to 256 characters")
	}
	for _, c := range a {
		if !unicode.IsPrint(c) {
			return fmt.Errorf("author holds %q", c)
		}
	}
	return nil
}

func checkLimits(files map[string]string) error {
	if len(files) > policies.MaxBundleFiles {
		return fmt.Errorf("%w: %d files, at most %d", policies.ErrBundleLimit, len(files), policies.MaxBundleFiles)
	}
	total := 0
	for name, src := range files {
		total += len(name) + len(src)
	}
	if total > policies.MaxBundleBytes {
		return fmt.Errorf("%w: %d bytes, at most %d", policies.ErrBundleLimit, total, policies.MaxBundleBytes)
	}
	return nil
}

// nextVersion generates "v<N>-<sha>" for a push without a version.
func (r *Registry) nextVersion(ctx context.Context, files map[string]string) (string, error) {
	var n int64
	if err := r.d.QueryRow(ctx, `SELECT COUNT(*) FROM policy_bundles`).Scan(&n); err != nil {
		return "", fmt.Errorf("count bundles: %w", err)
	}
	sha := Digest(files)[:8]
	for range 16 {
		n++
		v := fmt.Sprintf("v%d-%s", n, sha)
		exists, err := r.exists(ctx, v)
		if err != nil {
			return "", err
		}
		if !exists {
			return v, nil
		}
	}
	return "", fmt.Errorf("no free version after v%d-%s: %w", n, sha, ErrConflict)
}

// Digest is the engine's digest of files (policies.Bundle.Digest), computed
// without compiling: the hex SHA-256 over each path and content in path
// order, each length-prefixed.
func Digest(files map[string]string) string {
	h := sha256.New()
	var n [8]byte
	for _, name := range slices.Sorted(maps.Keys(files)) {
		for _, s := range []string{name, files[name]} {
			binary.BigEndian.PutUint64(n[:], uint64(len(s)))
			h.Write(n[:])
			h.Write([]byte(s))
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}

func (r *Registry) exists(ctx context.Context, version string) (bool, error) {
	var one int
	err := r.d.QueryRow(ctx, `SELECT 1 FROM policy_bundles WHERE version = $1`, version).Scan(&one)
	switch {
	case errors.Is(err, db.ErrNotFound):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("look up %s: %w", version, err)
	}
	return true, nil
}

// List returns every stored bundle, newest first, without files or test
// results (the test counts are kept).
func (r *Registry) List(ctx context.Context) ([]Record, error) {
	rows, err := r.d.Query(ctx, `SELECT version, author, created_at, test_report, sha256
		FROM policy_bundles ORDER BY created_at DESC, version DESC`)
	if err != nil {
		return nil, fmt.Errorf("registry: list: %w", err)
	}
	defer rows.Close()
	out := []Record{}
	for rows.Next() {
		var (
			rec    Record
			at     int64
			report string
		)
		if err := rows.Scan(&rec.Version, &rec.Author, &at, &report, &rec.SHA256); err != nil {
			return nil, fmt.Errorf("registry: list: %w", err)
		}
		rec.CreatedAt = time.Unix(at, 0)
		if err := json.Unmarshal([]byte(report), &rec.Tests); err != nil {
			return nil, fmt.Errorf("registry: list: %s: decode test report: %w", rec.Version, err)
		}
		rec.Tests.Results = nil
		out = append(out, rec)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("registry: list: %w", err)
	}
	return out, nil
}

// Get returns one stored bundle with its files and test report, or ErrNotFound.
func (r *Registry) Get(ctx context.Context, version string) (*Record, error) {
	var (
		rec           = Record{Version: version}
		at            int64
		files, report string
	)
	err := r.d.QueryRow(ctx, `SELECT files, author, created_at, test_report, sha256 FROM policy_bundles WHERE version = $1`,
		version).Scan(&files, &rec.Author, &at, &report, &rec.SHA256)
	if errors.Is(err, db.ErrNotFound) {
		return nil, fmt.Errorf("registry: get %s: %w", version, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("registry: get %s: %w", version, err)
	}
	rec.CreatedAt = time.Unix(at, 0)
	if err := json.Unmarshal([]byte(files), &rec.Files); err != nil {
		return nil, fmt.Errorf("registry: get %s: decode files: %w", version, err)
	}
	if err := json.Unmarshal([]byte(report), &rec.Tests); err != nil {
		return nil, fmt.Errorf("registry: get %s: decode test report: %w", version, err)
	}
	return &rec, nil
}

// Bundle returns the compiled bundle of a stored version, from the cache or
// compiled from the database, or ErrNotFound. It checks the compiled digest
// against the stored one, so a node never runs files other than those pushed.
func (r *Registry) Bundle(ctx context.Context, version string) (*policies.Bundle, error) {
	if c := r.cacheGet(version); c != nil {
		return c.b, nil
	}
	rec, err := r.Get(ctx, version)
	if err != nil {
		return nil, err
	}
	b, err := policies.Compile(ctx, version, rec.Files)
	if err != nil {
		return nil, fmt.Errorf("registry: compile stored bundle %s: %w", version, err)
	}
	if b.Digest != rec.SHA256 {
		return nil, fmt.Errorf("registry: stored bundle %s: digest %s does not match the stored %s", version, b.Digest, rec.SHA256)
	}
	r.cachePut(b, false)
	return b, nil
}

// ensureTested runs b's tests once per process before b is activated: the
// push ran them, but a node may run a newer engine than the one that did.
func (r *Registry) ensureTested(ctx context.Context, b *policies.Bundle) error {
	r.mu.Lock()
	c := r.cache[b.Version]
	done := c != nil && c.b == b && c.tested
	r.mu.Unlock()
	if done {
		return nil
	}
	report, err := policies.RunTests(ctx, b)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return invalid(b.Version, err)
	}
	if !report.OK() {
		return failedTests(b.Version, report)
	}
	r.cachePut(b, true)
	return nil
}

// Activate makes a stored version the active bundle of every node: it appends
// an activation (announced on Channel on PostgreSQL) and applies it at once
// to the engines of this process's Syncers; other nodes pick it up when they
// Poll. The returned Activation carries the compiled bundle. The bundle's
// tests are run again first (once per process); a bundle that fails them is
// refused with an *InvalidBundleError.
func (r *Registry) Activate(ctx context.Context, version, by string) (*Activation, error) {
	if err := checkAuthor(by); err != nil {
		return nil, fmt.Errorf("registry: activate %s: activated by: %w", version, err)
	}
	b, err := r.Bundle(ctx, version)
	if err != nil {
		return nil, err
	}
	if err := r.ensureTested(ctx, b); err != nil {
		return nil, fmt.Errorf("registry: activate %s: %w", version, err)
	}
	act, err := r.appendActivation(ctx, version, by, ActionActivate, 0)
	if err != nil {
		return nil, fmt.Errorf("registry: activate %s: %w", version, err)
	}
	act.Bundle = b
	r.applyLocal(act)
	r.log.InfoContext(ctx, "policy bundle activated", "version", version, "by", by, "seq", act.Seq)
	return act, nil
}

// errHistoryMoved means another activation landed while a rollback was
// being prepared; the rollback starts over.
var errHistoryMoved = errors.New("registry: activation history moved")

// Rollback re-activates the bundle that was active before the current one.
// Rollbacks walk back through the history: after activating v1, v2, v3, a
// rollback activates v2 and a second one v1. It returns ErrNothingToRollBack
// when there is no earlier bundle.
func (r *Registry) Rollback(ctx context.Context, by string) (*Activation, error) {
	if err := checkAuthor(by); err != nil {
		return nil, fmt.Errorf("registry: rollback: activated by: %w", err)
	}
	for range 5 {
		target, latest, err := r.rollbackTarget(ctx)
		if err != nil {
			return nil, fmt.Errorf("registry: rollback: %w", err)
		}
		// Compile and test outside the transaction: on SQLite it holds the
		// one write lock, which the decision log needs too.
		b, err := r.Bundle(ctx, target)
		if err != nil {
			return nil, fmt.Errorf("registry: rollback to %s: %w", target, err)
		}
		if err := r.ensureTested(ctx, b); err != nil {
			return nil, fmt.Errorf("registry: rollback to %s: %w", target, err)
		}
		act, err := r.appendActivation(ctx, target, by, ActionRollback, latest)
		if errors.Is(err, errHistoryMoved) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("registry: rollback to %s: %w", target, err)
		}
		act.Bundle = b
		r.applyLocal(act)
		r.log.InfoContext(ctx, "policy bundle rolled back", "version", target, "by", by, "seq", act.Seq)
		return act, nil
	}
	return nil, fmt.Errorf("registry: rollback: the activation history kept changing; retry: %w", ErrConflict)
}

// rollbackTarget replays the history as a stack (an activation pushes, a
// rollback pops) and returns the version under the top, with the latest seq.
func (r *Registry) rollbackTarget(ctx context.Context) (target string, latest int64, err error) {
	rows, err := r.d.Query(ctx, `SELECT seq, version, action FROM policy_activations ORDER BY seq`)
	if err != nil {
		return "", 0, err
	}
	defer rows.Close()
	var stack []string
	for rows.Next() {
		var version, action string
		if err := rows.Scan(&latest, &version, &action); err != nil {
			return "", 0, err
		}
		if action == ActionRollback && len(stack) > 0 {
			stack = stack[:len(stack)-1]
		}
		if len(stack) == 0 || stack[len(stack)-1] != version {
			stack = append(stack, version)
		}
	}
	if err := rows.Err(); err != nil {
		return "", 0, err
	}
	if len(stack) == 0 {
		return "", 0, ErrNoActivation
	}
	if len(stack) < 2 {
		return "", 0, fmt.Errorf("%w: %s is the only bundle in the history", ErrNothingToRollBack, stack[0])
	}
	return stack[len(stack)-2], latest, nil
}

// appendActivation records an activation. With ifLatest > 0 it fails with
// errHistoryMoved unless ifLatest is still the latest seq.
func (r *Registry) appendActivation(ctx context.Context, version, by, action string, ifLatest int64) (*Activation, error) {
	act := &Activation{Version: version, ActivatedBy: by, At: r.clock().Truncate(time.Second), Action: action}
	err := r.d.InTx(ctx, func(q db.Querier) error {
		if err := r.lock(ctx, q); err != nil {
			return err
		}
		if ifLatest > 0 {
			var latest int64
			if err := q.QueryRow(ctx, `SELECT COALESCE(MAX(seq), 0) FROM policy_activations`).Scan(&latest); err != nil {
				return err
			}
			if latest != ifLatest {
				return errHistoryMoved
			}
		}
		return r.insertActivation(ctx, q, act)
	})
	if err != nil {
		return nil, err
	}
	return act, nil
}

func (r *Registry) insertActivation(ctx context.Context, q db.Querier, act *Activation) error {
	err := q.QueryRow(ctx, `INSERT INTO policy_activations (version, activated_by, at, action) VALUES ($1, $2, $3, $4) RETURNING seq`,
		act.Version, act.ActivatedBy, act.At.Unix(), act.Action).Scan(&act.Seq)
	if err != nil {
		return fmt.Errorf("record activation: %w", err)
	}
	if r.d.Dialect() == db.Postgres {
		// Delivered at commit, to every node LISTENing on Channel.
		if _, err := q.Exec(ctx, `SELECT pg_notify($1, $2)`, Channel, strconv.FormatInt(act.Seq, 10)); err != nil {
			return fmt.Errorf("notify activation: %w", err)
		}
	}
	return nil
}

// lock serializes activation writers on PostgreSQL for the transaction.
func (r *Registry) lock(ctx context.Context, q db.Querier) error {
	if r.d.Dialect() != db.Postgres {
		return nil
	}
	if _, err := q.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, advisoryLockKey); err != nil {
		return fmt.Errorf("lock activations: %w", err)
	}
	return nil
}

// Active returns the latest activation (without its Bundle), or ErrNoActivation.
func (r *Registry) Active(ctx context.Context) (*Activation, error) {
	acts, err := r.Activations(ctx, 1)
	if err != nil {
		return nil, err
	}
	if len(acts) == 0 {
		return nil, fmt.Errorf("registry: active: %w", ErrNoActivation)
	}
	return &acts[0], nil
}

// Activations returns the activation history, newest first, at most limit
// rows (1 to 1000; 0 means 100).
func (r *Registry) Activations(ctx context.Context, limit int) ([]Activation, error) {
	if limit <= 0 {
		limit = 100
	}
	limit = min(limit, 1000)
	rows, err := r.d.Query(ctx, `SELECT seq, version, activated_by, at, action FROM policy_activations
		ORDER BY seq DESC LIMIT $1`, limit)
	if err != nil {
		return nil, fmt.Errorf("registry: activations: %w", err)
	}
	defer rows.Close()
	out := []Activation{}
	for rows.Next() {
		var (
			a  Activation
			at int64
		)
		if err := rows.Scan(&a.Seq, &a.Version, &a.ActivatedBy, &at, &a.Action); err != nil {
			return nil, fmt.Errorf("registry: activations: %w", err)
		}
		a.At = time.Unix(at, 0)
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("registry: activations: %w", err)
	}
	return out, nil
}

// latest returns the latest activation's seq and version (0, "" when none):
// the one cheap query a Poll makes.
func (r *Registry) latest(ctx context.Context) (int64, string, error) {
	var (
		seq     int64
		version string
	)
	err := r.d.QueryRow(ctx, `SELECT seq, version FROM policy_activations ORDER BY seq DESC LIMIT 1`).Scan(&seq, &version)
	if errors.Is(err, db.ErrNotFound) {
		return 0, "", nil
	}
	return seq, version, err
}

// bootstrap records b as the first activation when none is recorded yet, and
// returns the latest activation either way: another node starting at the
// same time may have recorded its own first. recorded reports whether b's
// activation is the one recorded here.
func (r *Registry) bootstrap(ctx context.Context, b *policies.Bundle, report policies.TestReport) (act *Activation, recorded bool, err error) {
	filesJSON, err := json.Marshal(b.Files)
	if err != nil {
		return nil, false, fmt.Errorf("encode files: %w", err)
	}
	reportJSON, err := json.Marshal(report)
	if err != nil {
		return nil, false, fmt.Errorf("encode test report: %w", err)
	}
	err = r.d.InTx(ctx, func(q db.Querier) error {
		act, recorded = nil, false
		if err := r.lock(ctx, q); err != nil {
			return err
		}
		var (
			a  Activation
			at int64
		)
		err := q.QueryRow(ctx, `SELECT seq, version, activated_by, at, action FROM policy_activations ORDER BY seq DESC LIMIT 1`).
			Scan(&a.Seq, &a.Version, &a.ActivatedBy, &at, &a.Action)
		if err == nil {
			a.At = time.Unix(at, 0)
			act = &a
			return nil
		}
		if !errors.Is(err, db.ErrNotFound) {
			return err
		}
		now := r.clock().Truncate(time.Second)
		if _, err := q.Exec(ctx, `INSERT INTO policy_bundles (version, files, author, created_at, test_report, sha256)
			VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (version) DO NOTHING`,
			b.Version, string(filesJSON), SystemActor, now.Unix(), string(reportJSON), b.Digest); err != nil {
			return fmt.Errorf("store bundle: %w", err)
		}
		var sha string
		if err := q.QueryRow(ctx, `SELECT sha256 FROM policy_bundles WHERE version = $1`, b.Version).Scan(&sha); err != nil {
			return fmt.Errorf("read back bundle: %w", err)
		}
		if sha != b.Digest {
			return fmt.Errorf("a different bundle is stored as %s (sha256 %s, this node's is %s): %w", b.Version, sha, b.Digest, ErrConflict)
		}
		act = &Activation{Version: b.Version, ActivatedBy: SystemActor, At: now, Action: ActionBootstrap}
		recorded = true
		return r.insertActivation(ctx, q, act)
	})
	if err != nil {
		return nil, false, err
	}
	return act, recorded, nil
}

// applyLocal hands an activation made by this process to its Syncers.
func (r *Registry) applyLocal(act *Activation) {
	r.mu.Lock()
	syncers := slices.Clone(r.syncers)
	r.mu.Unlock()
	for _, s := range syncers {
		s.apply(act.Seq, act.Bundle)
	}
}

// Syncs reports whether a Syncer of this registry keeps eng in step, in which
// case Activate and Rollback swap eng's bundle themselves.
func (r *Registry) Syncs(eng *policies.Engine) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.syncers {
		if s.eng == eng {
			return true
		}
	}
	return false
}

func (r *Registry) attach(s *Syncer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.syncers = append(r.syncers, s)
}

func (r *Registry) cacheGet(version string) *cached {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.cache[version]
	if c != nil {
		r.touch(version)
	}
	return c
}

func (r *Registry) cachePut(b *policies.Bundle, tested bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c := r.cache[b.Version]; c != nil && c.b.Digest == b.Digest {
		c.tested = c.tested || tested
		if c.b != b && tested {
			c.b = b
		}
		r.touch(b.Version)
		return
	}
	r.cache[b.Version] = &cached{b: b, tested: tested}
	r.touch(b.Version)
	for len(r.lru) > r.cacheSize {
		delete(r.cache, r.lru[0])
		r.lru = r.lru[1:]
	}
}

// touch moves version to the most recently used end; r.mu is held.
func (r *Registry) touch(version string) {
	if i := slices.Index(r.lru, version); i >= 0 {
		r.lru = slices.Delete(r.lru, i, i+1)
	}
	r.lru = append(r.lru, version)
}
