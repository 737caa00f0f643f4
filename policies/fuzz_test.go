package policies

import (
	"context"
	"strings"
	"testing"
	"time"
)

// FuzzCompile feeds arbitrary source to Compile, and evaluates what compiles:
// neither may panic, and what does not compile must say why.
func FuzzCompile(f *testing.F) {
	f.Add("package mandate.exchange\n\ndecision := {\"allow\": true, \"reasons\": []}\n")
	f.Add(DefaultFiles()["exchange.rego"])
	f.Add("package mandate.exchange\n\ndecision := {\"allow\": x, \"reasons\": []} if x := input.request.depth > 1\n")
	f.Add("package p\nimport rego.v1\n")
	f.Add("")
	e := NewEngine(EngineConfig{Timeout: 10 * time.Millisecond})
	f.Fuzz(func(t *testing.T, src string) {
		b, err := Compile(context.Background(), "fuzz", map[string]string{"fuzz.rego": src})
		if err != nil {
			if err.Error() == "" {
				t.Fatalf("Compile error with no message")
			}
			if strings.Contains(err.Error(), "internal error") {
				t.Fatalf("Compile recovered from a panic: %v", err)
			}
			return
		}
		e.Activate(b)
		d, err := e.Decide(context.Background(), aliceInput())
		if err != nil && d.Allow {
			t.Fatalf("Decide returned Allow with error %v", err)
		}
		if err != nil && strings.Contains(err.Error(), "internal error") {
			t.Fatalf("Decide recovered from a panic: %v", err)
		}
	})
}
