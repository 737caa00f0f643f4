package policies

import (
	"context"
	"maps"
	"path/filepath"
	"testing"
)

// The example policies in examples/policies add deny rules to the default
// bundle. Each is tested as it is meant to be deployed: beside the default
// policy, whose own tests must still pass.
var examples = []string{"business-hours", "audience-ceilings", "actor-attestation"}

func TestExamplePolicies(t *testing.T) {
	all := DefaultFiles()
	for _, name := range examples {
		files, err := LoadDir(filepath.Join("..", "examples", "policies", name))
		if err != nil {
			t.Fatalf("LoadDir: %v", err)
		}
		if len(files) != 2 {
			t.Errorf("%s: %d files, want a policy and its tests", name, len(files))
		}
		maps.Copy(all, files)
		bundle := DefaultFiles()
		maps.Copy(bundle, files)
		t.Run(name, func(t *testing.T) { runRegoTests(t, name, bundle) })
	}
	t.Run("all together", func(t *testing.T) { runRegoTests(t, "all", all) })
}

func runRegoTests(t *testing.T, version string, files map[string]string) {
	t.Helper()
	b, err := Compile(context.Background(), version, files)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	report, err := RunTests(context.Background(), b)
	if err != nil {
		t.Fatalf("RunTests: %v", err)
	}
	for _, r := range report.Results {
		if r.Outcome != TestPass {
			t.Errorf("%s %s: %s %s", r.Location, r.Name, r.Outcome, r.Error)
		}
	}
	if !report.OK() {
		t.Errorf("report not OK: %d passed, %d failed, %d errored", report.Passed, report.Failed, report.Errored)
	}
}

func TestExampleBusinessHoursThroughGo(t *testing.T) {
	files := DefaultFiles()
	extra, err := LoadDir(filepath.Join("..", "examples", "policies", "business-hours"))
	if err != nil {
		t.Fatal(err)
	}
	maps.Copy(files, extra)
	b, err := Compile(context.Background(), "hours-1", files)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		time  string
		allow bool
	}{
		{"2026-03-10T10:00:00Z", true},  // Tuesday 11:00 in Paris
		{"2026-03-10T17:30:00Z", false}, // Tuesday 18:30 in Paris
		{"2026-03-14T10:00:00Z", false}, // Saturday
	}
	for _, tt := range tests {
		in := aliceInput()
		in.Meta.Time = tt.time
		d, err := b.Decide(context.Background(), in)
		if err != nil {
			t.Fatalf("%s: Decide: %v", tt.time, err)
		}
		if d.Allow != tt.allow {
			t.Errorf("%s: Decide = %+v, want allow %v", tt.time, d, tt.allow)
		}
	}
}
