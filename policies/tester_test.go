package policies

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func TestRunTestsReportsEachTest(t *testing.T) {
	b, err := Compile(context.Background(), "tests-1", map[string]string{
		"exchange.rego": `package mandate.exchange

decision := {"allow": allow, "reasons": []}

default allow := false

allow if input.client.id in data.mandate.trusted
`,
		"mandate/data.json": `{"trusted": ["agent-mail"]}`,
		"exchange_test.rego": `package mandate.exchange_test

import data.mandate.exchange

test_trusted_client_allowed if {
	exchange.decision.allow with input as {"client": {"id": "agent-mail"}}
}

test_wrong_expectation if {
	exchange.decision.allow with input as {"client": {"id": "stranger"}}
}

test_builtin_error if {
	time.parse_rfc3339_ns("not a time") > 0
}

test_prints if {
	print("hello from", "rego")
}

todo_test_later if {
	false
}
`,
	})
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	report, err := RunTests(context.Background(), b)
	if err != nil {
		t.Fatalf("RunTests: %v", err)
	}
	type row struct {
		name     string
		outcome  TestOutcome
		location string
	}
	want := []row{
		{"test_trusted_client_allowed", TestPass, "exchange_test.rego:5:1"},
		{"test_wrong_expectation", TestFail, "exchange_test.rego:9:1"},
		{"test_builtin_error", TestError, "exchange_test.rego:13:1"},
		{"test_prints", TestPass, "exchange_test.rego:17:1"},
		{"todo_test_later", TestSkip, "exchange_test.rego:21:1"},
	}
	if len(report.Results) != len(want) {
		t.Fatalf("got %d results %+v, want %d", len(report.Results), report.Results, len(want))
	}
	for i, w := range want {
		got := report.Results[i]
		if got.Name != w.name || got.Outcome != w.outcome || got.Location != w.location || got.Package != "data.mandate.exchange_test" {
			t.Errorf("result %d = %s %s %s %s, want data.mandate.exchange_test %s %s %s",
				i, got.Package, got.Name, got.Outcome, got.Location, w.name, w.outcome, w.location)
		}
	}
	if got := report.Results[2].Error; !strings.Contains(got, "time.parse_rfc3339_ns") {
		t.Errorf("error of the erroring test = %q, want the builtin named", got)
	}
	if got := report.Results[3].Output; !strings.Contains(got, "hello from rego") {
		t.Errorf("output of the printing test = %q, want its print()", got)
	}
	if report.Passed != 2 || report.Failed != 1 || report.Errored != 1 || report.Skipped != 1 {
		t.Errorf("counts passed %d failed %d errored %d skipped %d, want 2 1 1 1", report.Passed, report.Failed, report.Errored, report.Skipped)
	}
	if report.OK() {
		t.Errorf("OK() with a failing test")
	}
	if report.BundleVersion != "tests-1" {
		t.Errorf("BundleVersion = %q, want tests-1", report.BundleVersion)
	}
}

func TestRunTestsOK(t *testing.T) {
	tests := []struct {
		name  string
		tests string
		ok    bool
	}{
		{"all pass", "package t\n\ntest_a if true\n\ntest_b if 1 < 2\n", true},
		{"no tests", "package t\n\nx := 1\n", false},
		{"only skipped", "package t\n\ntodo_test_a if true\n", false},
		{"one fails", "package t\n\ntest_a if true\n\ntest_b if false\n", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := Compile(context.Background(), "v1", map[string]string{
				"p.rego":      "package mandate.exchange\n\ndecision := {\"allow\": true, \"reasons\": []}\n",
				"p_test.rego": tt.tests,
			})
			if err != nil {
				t.Fatal(err)
			}
			report, err := RunTests(context.Background(), b)
			if err != nil {
				t.Fatal(err)
			}
			if report.OK() != tt.ok {
				t.Errorf("OK() = %v, want %v (report %+v)", report.OK(), tt.ok, report)
			}
		})
	}
}

func TestRunTestsTimesOutLoopingTest(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the per-test timeout")
	}
	b, err := Compile(context.Background(), "v1", map[string]string{
		"p.rego": "package mandate.exchange\n\ndecision := {\"allow\": true, \"reasons\": []}\n",
		"p_test.rego": `package t

test_loops if {
	some x in numbers.range(1, 100000000)
	some y in numbers.range(1, 100000000)
	x * y == -1
}
`,
	})
	if err != nil {
		t.Fatal(err)
	}
	report, err := RunTests(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	if len(report.Results) != 1 || report.Results[0].Outcome != TestError {
		t.Errorf("results %+v, want one erroring test", report.Results)
	}
}

func TestRunTestsCompileError(t *testing.T) {
	b, err := Compile(context.Background(), "v1", map[string]string{
		"p.rego":      "package mandate.exchange\n\ndecision := {\"allow\": true, \"reasons\": []}\n",
		"p_test.rego": "package t\n\ntest_a if {\n\tundefined_function(1)\n}\n",
	})
	if err != nil {
		t.Fatalf("Compile: %v (test files are only parsed there)", err)
	}
	_, err = RunTests(context.Background(), b)
	var ce *CompileError
	if !errors.As(err, &ce) {
		t.Fatalf("RunTests error = %v, want a *CompileError", err)
	}
	if got, want := ce.Problems[0].String(), "p_test.rego:4:2: rego_type_error: undefined function undefined_function"; got != want {
		t.Errorf("problem = %q, want %q", got, want)
	}
}

func TestRunTestsNilBundle(t *testing.T) {
	if _, err := RunTests(context.Background(), nil); !errors.Is(err, ErrNoBundle) {
		t.Errorf("RunTests(nil) error = %v, want %v", err, ErrNoBundle)
	}
}
