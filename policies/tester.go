package policies

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/tester"
)

// TestTimeout bounds each Rego test.
const TestTimeout = 5 * time.Second

// TestOutcome is how one Rego test ended.
type TestOutcome string

// Test outcomes.
const (
	TestPass  TestOutcome = "pass"
	TestFail  TestOutcome = "fail"  // the test's body was false or undefined
	TestError TestOutcome = "error" // evaluation failed: a builtin error, a conflict, a timeout
	TestSkip  TestOutcome = "skip"  // the test is named todo_test_*
)

// TestResult is one Rego test.
type TestResult struct {
	// Package is the test's package, e.g. "data.mandate.exchange_test".
	Package string      `json:"package"`
	Name    string      `json:"name"`
	Outcome TestOutcome `json:"outcome"`
	// Error is the evaluation error, for TestError.
	Error string `json:"error,omitempty"`
	// Output is what the test printed with print().
	Output   string        `json:"output,omitempty"`
	Duration time.Duration `json:"duration"`
	// Location is where the test is defined: "file:line:col".
	Location string `json:"location"`
}

// TestReport is the outcome of a bundle's tests, sorted by location.
type TestReport struct {
	BundleVersion string        `json:"bundle_version"`
	Results       []TestResult  `json:"results"`
	Passed        int           `json:"passed"`
	Failed        int           `json:"failed"`
	Errored       int           `json:"errored"`
	Skipped       int           `json:"skipped"`
	Duration      time.Duration `json:"duration"`
}

// OK reports whether at least one test passed and none failed or errored:
// the condition for activating a bundle.
func (r TestReport) OK() bool {
	return r.Passed > 0 && r.Failed == 0 && r.Errored == 0
}

// RunTests runs the bundle's Rego tests (rules named test_*, normally in
// *_test.rego files), as `opa test` would, against the bundle's policy files
// and data. Tests are compiled with the policies here, not in Compile, so a
// test that does not compile is reported by RunTests as a *CompileError. A
// failing test is not an error: it is in the report, and the report is not OK.
//
// Builtin errors count as test errors, matching decisions, where a builtin
// error is an evaluation error.
func RunTests(ctx context.Context, b *Bundle) (TestReport, error) {
	if b == nil || !b.compiled {
		return TestReport{}, fmt.Errorf("policies: test: %w", ErrNoBundle)
	}
	report := TestReport{BundleVersion: b.Version, Results: []TestResult{}}
	modules := maps.Clone(b.modules)
	maps.Copy(modules, b.tests)

	start := time.Now()
	runner := tester.NewRunner().
		SetCompiler(newCompiler(true)).
		SetStore(newStore(b.data)).
		SetModules(modules).
		SetTimeout(TestTimeout).
		CapturePrintOutput(true).
		RaiseBuiltinErrors(true)
	ch, err := runner.RunTests(ctx, nil)
	if err != nil {
		return TestReport{}, fmt.Errorf("policies: test %s: %w", b.Version, newCompileError(err))
	}
	var results []*tester.Result
	for r := range ch {
		results = append(results, r)
	}
	report.Duration = time.Since(start)
	slices.SortFunc(results, func(a, b *tester.Result) int {
		var la, lb ast.Location
		if a.Location != nil {
			la = *a.Location
		}
		if b.Location != nil {
			lb = *b.Location
		}
		return cmp.Or(cmp.Compare(la.File, lb.File), cmp.Compare(la.Row, lb.Row), cmp.Compare(la.Col, lb.Col), cmp.Compare(a.Name, b.Name))
	})
	for _, r := range results {
		report.add(r)
	}
	if err := ctx.Err(); err != nil {
		return report, fmt.Errorf("policies: test %s: %w", b.Version, err)
	}
	return report, nil
}

func (r *TestReport) add(t *tester.Result) {
	res := TestResult{
		Package:  t.Package,
		Name:     t.Name,
		Output:   string(t.Output),
		Duration: t.Duration,
		Location: location(t.Location),
	}
	switch {
	case t.Skip:
		res.Outcome = TestSkip
		r.Skipped++
	case t.Error != nil:
		res.Outcome = TestError
		res.Error = t.Error.Error()
		r.Errored++
	case t.Fail:
		res.Outcome = TestFail
		r.Failed++
	default:
		res.Outcome = TestPass
		r.Passed++
	}
	r.Results = append(r.Results, res)
}

func location(l *ast.Location) string {
	if l == nil {
		return ""
	}
	return fmt.Sprintf("%s:%d:%d", l.File, l.Row, l.Col)
}
