package policies

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
)

// DefaultVersion is the version of the embedded default bundle.
const DefaultVersion = "default-1"

//go:embed default/*.rego
var defaultFS embed.FS

// DefaultFiles returns the default bundle's files (exchange.rego and its
// tests, exchange_test.rego), keyed by their path in the bundle. The map is
// the caller's own.
func DefaultFiles() map[string]string {
	sub, err := fs.Sub(defaultFS, "default")
	if err != nil {
		panic(fmt.Sprintf("policies: embedded default bundle: %v", err)) // cannot happen: the path is a constant
	}
	files, err := LoadFS(sub)
	if err != nil {
		panic(fmt.Sprintf("policies: embedded default bundle: %v", err)) // cannot happen: the files are embedded
	}
	return files
}

// DefaultBundle compiles the default bundle.
func DefaultBundle(ctx context.Context) (*Bundle, error) {
	return Compile(ctx, DefaultVersion, DefaultFiles())
}
