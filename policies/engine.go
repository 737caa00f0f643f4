package policies

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"runtime/debug"
	"slices"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// EntryPoint is the Rego document the broker asks for a decision.
const EntryPoint = "data.mandate.exchange.decision"

// Limits.
const (
	// DefaultTimeout bounds one decision when no other timeout is configured.
	DefaultTimeout = 50 * time.Millisecond
	// MaxBundleFiles is the most files a bundle may hold.
	MaxBundleFiles = 500
	// MaxBundleBytes is the most bytes of file content a bundle may hold.
	MaxBundleBytes = 4 << 20
)

// entryPointRef is EntryPoint as a reference, for the compiler's rule lookups.
func entryPointRef() ast.Ref { return ast.MustParseRef(EntryPoint) }

// Bundle is a compiled, versioned set of policy files, ready to decide. It is
// immutable once Compile returns it and safe for concurrent use; do not
// modify Files.
type Bundle struct {
	// Version names the bundle; every decision carries it.
	Version string
	// Files is the bundle's source: path (slash-separated, relative) to content.
	Files map[string]string
	// Digest is the hex SHA-256 of the files, independent of map order: two
	// nodes with the same Digest run the same policy.
	Digest string

	modules map[string]*ast.Module // parsed policy files (no tests)
	tests   map[string]*ast.Module // parsed *_test.rego files
	data    map[string]any         // merged data.json documents
	query   rego.PreparedEvalQuery
	// compiled is set by Compile: a Bundle made any other way cannot decide.
	compiled bool
}

// Compile parses, compiles and prepares a bundle. files maps a relative,
// slash-separated path to its content: ".rego" files hold Rego v1 policy
// ("*_test.rego" files hold its tests, which only RunTests compiles), and
// "data.json" files hold a JSON object that becomes data under the path of
// their folder (OPA's bundle layout). Any other file is refused.
//
// Parse and compile errors are returned as a wrapped *CompileError listing
// each problem with its file, line and column. A bundle that does not define
// EntryPoint is refused with ErrNoEntryPoint.
//
// Policies may not use the network: http.send and net.lookup_ip_addr are not
// available to them.
func Compile(ctx context.Context, version string, files map[string]string) (b *Bundle, err error) {
	defer func() {
		if r := recover(); r != nil {
			b, err = nil, fmt.Errorf("policies: compile %s: internal error: %v\n%s", version, r, debug.Stack())
		}
	}()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("policies: compile %s: %w", version, err)
	}
	if err := checkVersion(version); err != nil {
		return nil, fmt.Errorf("policies: compile %q: %w", version, err)
	}
	if err := checkFiles(files); err != nil {
		return nil, fmt.Errorf("policies: compile %s: %w", version, err)
	}

	b = &Bundle{
		Version: version,
		Files:   maps.Clone(files),
		Digest:  digest(files),
		modules: map[string]*ast.Module{},
		tests:   map[string]*ast.Module{},
		data:    map[string]any{},
	}
	caps := capabilities()
	popts := ast.ParserOptions{RegoVersion: ast.RegoV1, Capabilities: caps, ProcessAnnotation: true}
	var problems []error
	for _, name := range slices.Sorted(maps.Keys(files)) {
		src := files[name]
		switch fileKind(name) {
		case kindRego, kindTest:
			m, err := ast.ParseModuleWithOpts(name, src, popts)
			if err != nil {
				problems = append(problems, err)
				continue
			}
			if fileKind(name) == kindTest {
				b.tests[name] = m
			} else {
				b.modules[name] = m
			}
		case kindData:
			if err := mergeData(b.data, name, src); err != nil {
				return nil, fmt.Errorf("policies: compile %s: %w", version, err)
			}
		}
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("policies: compile %s: %w", version, newCompileError(problems...))
	}

	compiler := newCompiler(false)
	compiler.Compile(b.modules)
	if compiler.Failed() {
		return nil, fmt.Errorf("policies: compile %s: %w", version, newCompileError(compiler.Errors))
	}
	ref := entryPointRef()
	if len(compiler.GetRulesForVirtualDocument(ref)) == 0 && len(compiler.GetRulesWithPrefix(ref)) == 0 {
		return nil, fmt.Errorf("policies: compile %s: %w", version, ErrNoEntryPoint)
	}

	b.query, err = rego.New(
		rego.Query(EntryPoint),
		rego.Compiler(compiler),
		rego.Store(newStore(b.data)),
		// A builtin that fails (a malformed time, a bad regex) is an error,
		// hence a deny, rather than an undefined expression that a
		// "deny if ..." rule would read as "nothing to deny".
		rego.StrictBuiltinErrors(true),
	).PrepareForEval(ctx)
	if err != nil {
		return nil, fmt.Errorf("policies: compile %s: prepare: %w", version, err)
	}
	b.compiled = true
	return b, nil
}

// Decide evaluates in against this bundle, whether or not it is active, with
// DefaultTimeout (or ctx's deadline, when sooner). It is how a candidate
// bundle is tried before activation. An error means deny.
func (b *Bundle) Decide(ctx context.Context, in *Input) (Decision, error) {
	return b.decide(ctx, in, DefaultTimeout)
}

func (b *Bundle) decide(ctx context.Context, in *Input, timeout time.Duration) (d Decision, err error) {
	if b == nil || !b.compiled {
		return Decision{}, fmt.Errorf("policies: decide: %w", ErrNoBundle)
	}
	defer func() {
		// OPA should not panic, but a panic must not take the broker down
		// nor let a request through: it becomes an error, hence a deny.
		if r := recover(); r != nil {
			d, err = Decision{}, fmt.Errorf("policies: decide (bundle %s): internal error: %v", b.Version, r)
		}
	}()
	if in == nil {
		return Decision{}, fmt.Errorf("policies: decide (bundle %s): %w: nil input", b.Version, ErrInvalidInput)
	}
	if in.Version != InputVersion {
		return Decision{}, fmt.Errorf("policies: decide (bundle %s): %w: version %q, want %q", b.Version, ErrInvalidInput, in.Version, InputVersion)
	}
	now, err := in.Meta.clock()
	if err != nil {
		return Decision{}, fmt.Errorf("policies: decide (bundle %s): %w: %w", b.Version, ErrInvalidInput, err)
	}
	input, err := in.astValue()
	if err != nil {
		return Decision{}, fmt.Errorf("policies: decide (bundle %s): %w: %w", b.Version, ErrInvalidInput, err)
	}
	if timeout <= 0 {
		timeout = DefaultTimeout
	}

	// The query stops at its next step once stop is cancelled: at the
	// timeout, or when ctx is done. A timer and context.AfterFunc cost less
	// than a derived context and the watcher goroutine rego.Eval starts when
	// it is given no cancel of its own.
	stop := topdown.NewCancel()
	timer := time.AfterFunc(timeout, stop.Cancel)
	defer timer.Stop()
	if ctx.Done() != nil {
		defer context.AfterFunc(ctx, stop.Cancel)()
	}

	opts := [...]rego.EvalOption{
		rego.EvalParsedInput(input),
		rego.EvalExternalCancel(stop),
		rego.EvalMetrics(metrics.NoOp()), // no per-decision metrics map
		rego.EvalGenerateJSON(termValue), // no conversion of the result to map[string]any
		rego.EvalTime(now),
	}
	start := time.Now()
	rs, err := b.query.Eval(ctx, opts[:]...)
	elapsed := time.Since(start)
	if err != nil {
		if topdown.IsCancel(err) || stop.Cancelled() {
			if cerr := ctx.Err(); cerr != nil && !errors.Is(cerr, context.DeadlineExceeded) {
				return Decision{}, fmt.Errorf("policies: decide (bundle %s): %w", b.Version, cerr)
			}
			return Decision{}, fmt.Errorf("policies: decide (bundle %s): %w after %s", b.Version, ErrTimeout, elapsed.Round(time.Microsecond))
		}
		return Decision{}, fmt.Errorf("policies: decide (bundle %s): eval: %w", b.Version, err)
	}
	if len(rs) == 0 || len(rs[0].Expressions) == 0 {
		return Decision{}, fmt.Errorf("policies: decide (bundle %s): %w", b.Version, ErrUndefined)
	}
	if len(rs) > 1 {
		return Decision{}, fmt.Errorf("policies: decide (bundle %s): %w: %d results", b.Version, ErrInvalidDecision, len(rs))
	}
	v, ok := rs[0].Expressions[0].Value.(ast.Value)
	if !ok {
		return Decision{}, fmt.Errorf("policies: decide (bundle %s): %w: result is %T", b.Version, ErrInvalidDecision, rs[0].Expressions[0].Value)
	}
	d, err = parseDecision(v)
	if err != nil {
		return Decision{}, fmt.Errorf("policies: decide (bundle %s): %w", b.Version, err)
	}
	d.BundleVersion = b.Version
	d.EvalDuration = elapsed
	return d, nil
}

// termValue hands the result to parseDecision as an ast.Value, skipping
// rego's conversion of every result to map[string]any.
func termValue(t *ast.Term, _ *rego.EvalContext) (any, error) {
	return t.Value, nil
}

// clock is the time the policy's time.now_ns() reads: the request's own time,
// so that a recorded decision replays the same way.
func (m *MetaInput) clock() (time.Time, error) {
	if m.Time != "" {
		t, err := time.Parse(time.RFC3339Nano, m.Time)
		if err != nil {
			return time.Time{}, fmt.Errorf("meta.time: %w", err)
		}
		return t, nil
	}
	if m.Unix != 0 {
		return time.Unix(m.Unix, 0), nil
	}
	return time.Now(), nil
}

// EngineConfig configures an Engine.
type EngineConfig struct {
	// Timeout bounds each decision. Zero or less means DefaultTimeout.
	Timeout time.Duration
}

// Engine decides exchanges with the active bundle. Activate swaps bundles
// atomically: a decision runs entirely against the bundle that was active
// when it started. The zero value has no bundle and uses DefaultTimeout.
type Engine struct {
	active  atomic.Pointer[Bundle]
	timeout time.Duration
}

// NewEngine returns an Engine with no active bundle: until Activate is
// called, every decision fails with ErrNoBundle.
func NewEngine(cfg EngineConfig) *Engine {
	return &Engine{timeout: cfg.Timeout}
}

// Timeout is the per-decision timeout in force.
func (e *Engine) Timeout() time.Duration {
	if e.timeout <= 0 {
		return DefaultTimeout
	}
	return e.timeout
}

// Activate makes b, a bundle from Compile, the active bundle and returns the
// one it replaces (nil if none), which a caller keeps to roll back.
// Activating nil deactivates: every decision then fails closed with
// ErrNoBundle. Activate does not run the bundle's tests; the caller runs
// RunTests first.
func (e *Engine) Activate(b *Bundle) (previous *Bundle) {
	return e.active.Swap(b)
}

// Active returns the active bundle, or nil.
func (e *Engine) Active() *Bundle {
	return e.active.Load()
}

// Decide evaluates in against the active bundle. Any error (no bundle, a
// timeout, an evaluation error, an undefined or malformed decision) means the
// exchange is denied.
func (e *Engine) Decide(ctx context.Context, in *Input) (Decision, error) {
	return e.active.Load().decide(ctx, in, e.Timeout())
}

// newCompiler returns the compiler every bundle is built with: Rego v1, the
// restricted capabilities, print() kept only for tests.
func newCompiler(print bool) *ast.Compiler {
	return ast.NewCompiler().
		WithCapabilities(capabilities()).
		WithDefaultRegoVersion(ast.RegoV1).
		WithEnablePrintStatements(print)
}

// capabilities are OPA's, less the builtins that reach the network: a
// decision on the token path must not wait on, or leak to, another host.
func capabilities() *ast.Capabilities {
	c := ast.CapabilitiesForThisVersion()
	c.Builtins = slices.DeleteFunc(c.Builtins, func(b *ast.Builtin) bool {
		return b.Name == "http.send" || b.Name == "net.lookup_ip_addr"
	})
	c.AllowNet = []string{} // no remote JSON schemas either
	return c
}

func newStore(data map[string]any) storage.Store {
	return inmem.NewFromObjectWithOpts(data, inmem.OptRoundTripOnWrite(false))
}

// digest hashes the files in path order, each as length-prefixed path and content.
func digest(files map[string]string) string {
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
