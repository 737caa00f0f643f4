package main

import (
	"bytes"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestDemo plays the whole demo, as `make demo` does, so that `make test` keeps
// it honest: every step must behave as promised, no whole token may be printed,
// and the data folder must be gone afterwards.
func TestDemo(t *testing.T) {
	root := t.TempDir()
	var out bytes.Buffer
	err := run(t.Context(), &out, options{TempRoot: root, Timeout: 45 * time.Second})
	t.Logf("demo output:\n%s", out.String())
	if err != nil {
		t.Fatalf("demo: %v", err)
	}
	if strings.Contains(out.String(), "✘") || !strings.Contains(out.String(), "✔ all 19 steps behaved as promised") {
		t.Errorf("demo output does not report every step as passed")
	}
	if m := regexp.MustCompile(`eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+`).FindString(out.String()); m != "" {
		t.Errorf("demo output holds a whole token: %.40s…", m)
	}
	left, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		t.Errorf("demo left %d entries in its temporary root, e.g. %s", len(left), left[0].Name())
	}
}
