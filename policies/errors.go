package policies

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
)

// Errors a caller tests with errors.Is; they come wrapped with context.
// Every error from Decide means "deny": the broker issues no token without a
// decision.
var (
	// ErrNoBundle means no bundle is active.
	ErrNoBundle = errors.New("no active bundle")
	// ErrTimeout means the evaluation was stopped at the decision timeout.
	ErrTimeout = errors.New("decision timed out")
	// ErrUndefined means the entry point produced no value for the input.
	ErrUndefined = errors.New("decision is undefined")
	// ErrInvalidDecision means the entry point produced a value that is not a
	// well-formed decision object.
	ErrInvalidDecision = errors.New("invalid decision")
	// ErrInvalidInput means the broker built an input the contract does not allow.
	ErrInvalidInput = errors.New("invalid input")
	// ErrNoEntryPoint means a bundle does not define data.mandate.exchange.decision.
	ErrNoEntryPoint = errors.New("bundle does not define " + EntryPoint)
	// ErrBundleLimit means a bundle is over MaxBundleFiles or MaxBundleBytes.
	ErrBundleLimit = errors.New("bundle over limit")
	// ErrBundleFile means a bundle holds a file it may not hold (name, type or content).
	ErrBundleFile = errors.New("bad bundle file")
)

// Problem is one parse or compile error, located in a bundle file.
type Problem struct {
	File    string `json:"file"`
	Row     int    `json:"row"`
	Col     int    `json:"col"`
	Code    string `json:"code"` // OPA's error code, e.g. rego_parse_error
	Message string `json:"message"`
}

// String is "file:line:col: code: message".
func (p Problem) String() string {
	return fmt.Sprintf("%s:%d:%d: %s: %s", p.File, p.Row, p.Col, p.Code, p.Message)
}

// CompileError is returned (wrapped) when a bundle's Rego does not parse or
// compile. It lists every problem found, sorted by file and position.
type CompileError struct {
	Problems []Problem
}

// Error lists the problems, one per line after the first.
func (e *CompileError) Error() string {
	if len(e.Problems) == 1 {
		return "1 error: " + e.Problems[0].String()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d errors:", len(e.Problems))
	for _, p := range e.Problems {
		b.WriteString("\n\t")
		b.WriteString(p.String())
	}
	return b.String()
}

// newCompileError converts OPA errors (ast.Errors, *ast.Error or anything
// else) into a CompileError.
func newCompileError(errs ...error) *CompileError {
	ce := &CompileError{}
	for _, err := range errs {
		ce.add(err)
	}
	slices.SortStableFunc(ce.Problems, func(a, b Problem) int {
		return cmp.Or(cmp.Compare(a.File, b.File), cmp.Compare(a.Row, b.Row), cmp.Compare(a.Col, b.Col))
	})
	return ce
}

func (ce *CompileError) add(err error) {
	var list ast.Errors
	if errors.As(err, &list) {
		for _, e := range list {
			ce.add(e)
		}
		return
	}
	var one *ast.Error
	if errors.As(err, &one) {
		p := Problem{Code: one.Code, Message: one.Message}
		if loc := one.Location; loc != nil {
			p.File, p.Row, p.Col = loc.File, loc.Row, loc.Col
		}
		ce.Problems = append(ce.Problems, p)
		return
	}
	ce.Problems = append(ce.Problems, Problem{Code: "error", Message: err.Error()})
}
