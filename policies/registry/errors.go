package registry

import (
	"errors"
	"fmt"
	"strings"

	"github.com/mandate-dev/mandate/policies"
)

// Errors a caller tests with errors.Is.
var (
	// ErrNotFound means no bundle of that version is stored.
	ErrNotFound = errors.New("registry: bundle not found")
	// ErrConflict means a bundle of that version is already stored; versions
	// are immutable, so push under a new one.
	ErrConflict = errors.New("registry: bundle version already exists")
	// ErrNoActivation means no activation is recorded yet.
	ErrNoActivation = errors.New("registry: no bundle has been activated")
	// ErrNothingToRollBack means the history holds no earlier bundle to go back to.
	ErrNothingToRollBack = errors.New("registry: no earlier activation to roll back to")
	// ErrInvalidVersion means a version name is empty, too long or holds a
	// character outside [A-Za-z0-9._:+-].
	ErrInvalidVersion = errors.New("registry: invalid version")
)

// Problem is one reason a bundle was refused, located in a bundle file when
// the engine knows where: File is empty, and Line and Col are 0, otherwise.
type Problem struct {
	File    string `json:"file"`
	Line    int    `json:"line"`
	Col     int    `json:"col"`
	Code    string `json:"code,omitempty"` // OPA's error code, e.g. rego_parse_error
	Message string `json:"message"`
}

// String is "file:line:col: message", the form editors jump to.
func (p Problem) String() string {
	if p.File == "" {
		return p.Message
	}
	return fmt.Sprintf("%s:%d:%d: %s", p.File, p.Line, p.Col, p.Message)
}

// FailedTest is one Rego test that failed or errored.
type FailedTest struct {
	// Name is the fully qualified rule, e.g. "data.mandate.exchange_test.test_deny_expired".
	Name string `json:"name"`
	// Location is "file:line:col" of the test.
	Location string `json:"location"`
	// Outcome is "fail" or "error".
	Outcome string `json:"outcome"`
	// Error is the evaluation error of a test that errored.
	Error string `json:"error,omitempty"`
	// Output is what the test printed with print().
	Output string `json:"output,omitempty"`
}

// InvalidBundleError is why Push refused a bundle: it was over a limit, did
// not compile, did not define the entry point, carried no test, or failed one.
// Nothing was stored. It wraps the engine's error (errors.Is works with
// policies.ErrBundleLimit, policies.ErrNoEntryPoint, ...).
type InvalidBundleError struct {
	Version string
	// Problems are the compile errors, each located, or one unlocated problem
	// for a bundle refused as a whole (a limit, a missing entry point).
	Problems []Problem
	// FailedTests are the tests that failed or errored.
	FailedTests []FailedTest
	// Report is the test report, when the tests ran.
	Report *policies.TestReport
	err    error
}

func (e *InvalidBundleError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "registry: bundle %s refused", e.Version)
	switch {
	case len(e.Problems) > 0:
		for _, p := range e.Problems {
			b.WriteString("\n\t")
			b.WriteString(p.String())
		}
	case len(e.FailedTests) > 0:
		fmt.Fprintf(&b, ": %d failing tests", len(e.FailedTests))
		for _, t := range e.FailedTests {
			fmt.Fprintf(&b, "\n\t%s: %s %s", t.Location, strings.ToUpper(t.Outcome), t.Name)
			if t.Error != "" {
				b.WriteString(": " + t.Error)
			}
		}
	case e.err != nil:
		b.WriteString(": " + e.err.Error())
	}
	return b.String()
}

// Unwrap returns the engine's error.
func (e *InvalidBundleError) Unwrap() error { return e.err }

// Summary is one line for an error_description.
func (e *InvalidBundleError) Summary() string {
	more := ""
	if len(e.Problems) > 1 {
		more = fmt.Sprintf(" (and %d more problems)", len(e.Problems)-1)
	}
	switch {
	case len(e.Problems) > 0 && e.Problems[0].File != "":
		return "the bundle does not compile: " + e.Problems[0].String() + more
	case len(e.Problems) > 0:
		return "the bundle is refused: " + e.Problems[0].Message + more
	case len(e.FailedTests) > 0:
		return fmt.Sprintf("%d of the bundle's tests failed, the first %s (%s)", len(e.FailedTests), e.FailedTests[0].Name, e.FailedTests[0].Location)
	case e.Report != nil && e.Report.Passed == 0:
		return "the bundle has no passing test: a bundle must carry tests (rules named test_* in *_test.rego files)"
	case e.err != nil:
		return strings.TrimPrefix(e.err.Error(), "policies: ")
	}
	return "the bundle is invalid"
}

// invalid builds an InvalidBundleError from an error of policies.Compile or
// policies.RunTests.
func invalid(version string, err error) *InvalidBundleError {
	e := &InvalidBundleError{Version: version, err: err}
	var ce *policies.CompileError
	if errors.As(err, &ce) {
		for _, p := range ce.Problems {
			e.Problems = append(e.Problems, Problem{File: p.File, Line: p.Row, Col: p.Col, Code: p.Code, Message: p.Message})
		}
		return e
	}
	e.Problems = []Problem{{Code: problemCode(err), Message: strings.TrimPrefix(err.Error(), "policies: ")}}
	return e
}

func problemCode(err error) string {
	switch {
	case errors.Is(err, policies.ErrBundleLimit):
		return "bundle_limit"
	case errors.Is(err, policies.ErrBundleFile):
		return "bundle_file"
	case errors.Is(err, policies.ErrNoEntryPoint):
		return "no_entry_point"
	}
	return "invalid_bundle"
}

// failedTests refuses a bundle whose report is not OK.
func failedTests(version string, rep policies.TestReport) *InvalidBundleError {
	e := &InvalidBundleError{Version: version, Report: &rep}
	for _, r := range rep.Results {
		if r.Outcome != policies.TestFail && r.Outcome != policies.TestError {
			continue
		}
		e.FailedTests = append(e.FailedTests, FailedTest{
			Name: testName(r), Location: r.Location, Outcome: string(r.Outcome), Error: r.Error, Output: r.Output,
		})
	}
	if len(e.FailedTests) == 0 {
		e.err = fmt.Errorf("no test passed (%d skipped): a bundle must carry tests", rep.Skipped)
	} else {
		e.err = fmt.Errorf("%d tests failed, %d errored", rep.Failed, rep.Errored)
	}
	return e
}

// testName is the fully qualified name of a test, as opa test prints it.
func testName(r policies.TestResult) string {
	if r.Package == "" {
		return r.Name
	}
	if strings.HasPrefix(r.Package, "data.") {
		return r.Package + "." + r.Name
	}
	return "data." + r.Package + "." + r.Name
}

// TestName is the fully qualified name of a test result, e.g.
// "data.mandate.exchange_test.test_allow", as opa test prints it.
func TestName(r policies.TestResult) string { return testName(r) }
