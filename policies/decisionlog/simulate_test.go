package decisionlog_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/mandate-dev/mandate/broker"
	"github.com/mandate-dev/mandate/internal/db"
	"github.com/mandate-dev/mandate/policies"
	"github.com/mandate-dev/mandate/policies/decisionlog"
)

// candidate compiles a bundle: clients in deny are denied; allowed requests
// get scopes narrowed to allow (all requested scopes when allow is nil).
func candidate(t *testing.T, src string) *policies.Bundle {
	t.Helper()
	b, err := policies.Compile(context.Background(), "candidate", map[string]string{"policy.rego": src})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

const candidateSrc = `package mandate.exchange

denied := {"agent-revoked"}

decision := {"allow": false, "reasons": ["agent-revoked is retired"]} if {
	input.client.id in denied
} else := {"allow": true, "reasons": [], "scopes": ["mail:read"]} if {
	input.client.id == "agent-narrow"
} else := {"allow": true, "reasons": [], "scopes": []} if {
	input.client.id == "agent-empty"
} else := {"allow": false, "reasons": ["expired"]} if {
	input.meta.unix > 1900000000
} else := {"allow": true, "reasons": []}
`

func TestSimulate(t *testing.T) {
	eachBackend(t, func(t *testing.T, d *db.DB) {
		ctx := context.Background()
		clk := &testClock{}
		l := openLog(t, d, decisionlog.Options{Clock: clk.now})

		record := func(a *broker.Audit) { l.RecordDecision(ctx, a) }
		// Before the window: never replayed.
		record(audit("agent-revoked", "old", true, "mail:read"))
		// In the window, newest last:
		record(audit("agent-revoked", "alice", true, "mail:read"))              // allow -> deny
		record(audit("agent-ok", "bob", false, "mail:read"))                    // deny -> allow
		record(audit("agent-narrow", "carol", true, "mail:read", "mail:write")) // narrowed
		widened := audit("agent-ok", "dave", true, "mail:read", "mail:write")
		widened.Issued = []string{"mail:read"}
		record(widened) // widened (the recorded bundle had narrowed)
		changed := audit("agent-narrow", "erin", true, "mail:read", "mail:write")
		changed.Issued = []string{"mail:write"}
		record(changed)                                             // one scope added, one removed
		record(audit("agent-empty", "frank", true, "mail:read"))    // left without scopes: deny
		record(audit("agent-ok", "grace", true, "mail:read"))       // unchanged
		record(audit("agent-revoked", "heidi", false, "mail:read")) // unchanged deny
		noInput := audit("agent-ok", "ivan", false)
		noInput.Input = nil
		record(noInput) // no policy ran: skipped
		typedNil := audit("agent-ok", "judy", false)
		typedNil.Input = (*policies.Input)(nil)
		record(typedNil) // skipped too
		flush(t, l)

		since := testStart.Add(time.Second) // the clock ticks once per decision
		rep, err := l.Simulate(ctx, candidate(t, candidateSrc), since, 0)
		if err != nil {
			t.Fatal(err)
		}
		want := decisionlog.Report{
			Candidate: "candidate", Replayed: 8, Skipped: 2, Unchanged: 2, AllowToDeny: 2, DenyToAllow: 1,
			ScopesNarrowed: 1, ScopesWidened: 1, ScopesChanged: 1,
		}
		if rep.Candidate != want.Candidate || rep.Replayed != want.Replayed || rep.Skipped != want.Skipped ||
			rep.Unchanged != want.Unchanged || rep.AllowToDeny != want.AllowToDeny || rep.DenyToAllow != want.DenyToAllow ||
			rep.ScopesNarrowed != want.ScopesNarrowed || rep.ScopesWidened != want.ScopesWidened || rep.ScopesChanged != want.ScopesChanged ||
			rep.Errors != 0 || rep.Truncated || rep.Changed() != 6 || len(rep.Changes) != 6 {
			t.Fatalf("report = %+v", rep)
		}
		bySubject := map[string]decisionlog.Change{}
		for _, c := range rep.Changes {
			bySubject[c.Subject] = c
		}
		check := func(subject, kind string, added, removed []string) decisionlog.Change {
			t.Helper()
			c, ok := bySubject[subject]
			if !ok || c.Kind != kind || !slices.Equal(c.AddedScopes, added) || !slices.Equal(c.RemovedScopes, removed) {
				t.Errorf("%s: change = %+v, want %s +%v -%v", subject, c, kind, added, removed)
			}
			return c
		}
		if c := check("alice", decisionlog.ChangeAllowToDeny, nil, nil); !slices.Equal(c.CandidateReasons, []string{"agent-revoked is retired"}) || c.RecordedVersion != "v1" {
			t.Errorf("alice: %+v", c)
		}
		if c := check("bob", decisionlog.ChangeDenyToAllow, nil, nil); !slices.Equal(c.CandidateScopes, []string{"mail:read"}) {
			t.Errorf("bob: %+v", c)
		}
		check("carol", decisionlog.ChangeScopesNarrowed, nil, []string{"mail:write"})
		check("dave", decisionlog.ChangeScopesWidened, []string{"mail:write"}, nil)
		check("erin", decisionlog.ChangeScopesChanged, []string{"mail:read"}, []string{"mail:write"})
		if c := check("frank", decisionlog.ChangeAllowToDeny, nil, nil); !slices.Contains(c.CandidateReasons, "the policy left none of the requested scopes") {
			t.Errorf("frank: %+v", c)
		}

		// Replays use the recorded time: a candidate that denies after a date
		// in the future of the records changes nothing.
		for _, c := range rep.Changes {
			if slices.Contains(c.CandidateReasons, "expired") {
				t.Errorf("a decision was replayed at the current time: %+v", c)
			}
		}

		// A limit replays the newest and says the report is truncated.
		rep, err = l.Simulate(ctx, candidate(t, candidateSrc), since, 3)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Replayed+rep.Skipped != 3 || rep.Skipped != 2 || !rep.Truncated {
			t.Errorf("limited report = %+v", rep)
		}
		// A candidate that errors counts as a deny, with its error.
		rep, err = l.Simulate(ctx, candidate(t, "package mandate.exchange\n\ndecision := {\"allow\": true}\n"), since, 0)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Errors != 8 || rep.AllowToDeny != 6 || rep.Changes[0].CandidateError == "" {
			t.Errorf("erroring candidate: %+v", rep)
		}
		if _, err := l.Simulate(ctx, nil, since, 0); err == nil {
			t.Error("no candidate: no error")
		}
		if _, err := l.Simulate(ctx, candidate(t, candidateSrc), since, decisionlog.MaxSimulateLimit+1); err == nil {
			t.Error("limit over the maximum: no error")
		}
	})
}
