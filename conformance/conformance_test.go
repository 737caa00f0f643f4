package conformance

import (
	"context"
	"testing"

	"github.com/mandate-dev/mandate/internal/db/dbtest"
)

// TestConformance runs the whole suite against mandate started in-process, over
// real loopback HTTP, on every storage backend. Every case must pass: a FAIL
// is a difference between mandate and the semantics docs/exchange.md promises.
func TestConformance(t *testing.T) {
	for _, dialect := range dbtest.Backends() {
		t.Run(string(dialect), func(t *testing.T) {
			target, idp := setupNode(t, dialect)
			rep := Run(context.Background(), target, idp, Filter{})
			for _, r := range rep.Results {
				switch r.Status {
				case Fail:
					t.Errorf("FAIL %s (%s, %s): %s", r.Name, r.Group, r.Spec, r.Why)
				case Skip:
					t.Errorf("SKIP %s: every case must run against mandate in setup mode: %s", r.Name, r.Why)
				}
			}
			if len(rep.Results) == 0 {
				t.Fatal("no case ran")
			}
			t.Log(rep.Summary())
			if err := target.Cleanup(context.Background()); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		})
	}
}
