package decisionlog

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/mandate-dev/mandate/broker"
	"github.com/mandate-dev/mandate/policies"
)

// Simulation limits.
const (
	// DefaultSimulateLimit is the number of decisions replayed when limit is 0.
	DefaultSimulateLimit = 1000
	// MaxSimulateLimit is the most decisions one simulation replays.
	MaxSimulateLimit = 10000
	// MaxReportedChanges is the most changes a Report lists; the counts
	// cover them all.
	MaxReportedChanges = 1000
)

// Kinds of Change.
const (
	ChangeAllowToDeny    = "allow_to_deny"
	ChangeDenyToAllow    = "deny_to_allow"
	ChangeScopesNarrowed = "scopes_narrowed" // fewer scopes would be issued
	ChangeScopesWidened  = "scopes_widened"  // more scopes would be issued
	ChangeScopesChanged  = "scopes_changed"  // some scopes added, others removed
)

// Change is one recorded decision that the candidate bundle would decide
// differently.
type Change struct {
	DecisionID int64     `json:"decision_id"`
	At         time.Time `json:"at"`
	ClientID   string    `json:"client_id"`
	Subject    string    `json:"subject"`
	// Kind is one of the Change* constants.
	Kind             string   `json:"kind"`
	RecordedVersion  string   `json:"recorded_version"`
	RecordedAllowed  bool     `json:"recorded_allowed"`
	CandidateAllowed bool     `json:"candidate_allowed"`
	RecordedScopes   []string `json:"recorded_scopes"`
	CandidateScopes  []string `json:"candidate_scopes"`
	// AddedScopes and RemovedScopes compare the candidate's scopes with the
	// recorded ones, for an allow that stays an allow.
	AddedScopes      []string `json:"added_scopes,omitempty"`
	RemovedScopes    []string `json:"removed_scopes,omitempty"`
	RecordedReasons  []string `json:"recorded_reasons"`
	CandidateReasons []string `json:"candidate_reasons"`
	// CandidateError is the candidate's evaluation error (a deny).
	CandidateError string `json:"candidate_error,omitempty"`
}

// Report is the outcome of a simulation.
type Report struct {
	Candidate       string    `json:"candidate"`
	CandidateSHA256 string    `json:"candidate_sha256"`
	Since           time.Time `json:"since"`
	// Replayed decisions were evaluated against the candidate.
	Replayed int `json:"replayed"`
	// Skipped decisions have no stored input (no policy ran, or the input
	// was too large to store) or one that no longer decodes.
	Skipped   int `json:"skipped"`
	Unchanged int `json:"unchanged"`
	// The changes, by kind.
	AllowToDeny    int `json:"allow_to_deny"`
	DenyToAllow    int `json:"deny_to_allow"`
	ScopesNarrowed int `json:"scopes_narrowed"`
	ScopesWidened  int `json:"scopes_widened"`
	ScopesChanged  int `json:"scopes_changed"`
	// Errors counts the candidate's evaluation errors (each also a deny).
	Errors int `json:"errors"`
	// Truncated is set when more decisions were recorded since Since than
	// the limit let the simulation replay (the newest were replayed).
	Truncated bool `json:"truncated"`
	// Changes lists the changes, newest first, at most MaxReportedChanges.
	Changes []Change `json:"changes"`
	// ChangesTruncated is set when there were more changes than listed.
	ChangesTruncated bool `json:"changes_truncated"`
}

// Changed is the number of decisions that would change.
func (r Report) Changed() int {
	return r.AllowToDeny + r.DenyToAllow + r.ScopesNarrowed + r.ScopesWidened + r.ScopesChanged
}

// Simulate replays the decisions recorded since since (newest first, at most
// limit; 0 means DefaultSimulateLimit) against candidate and reports each one
// that would change: an allow that becomes a deny, a deny that becomes an
// allow, or different scopes. A recorded input replays at its recorded time
// (the policy's clock is meta.time), so the comparison is with what the
// candidate would have decided then.
//
// The broker's own invariants are not replayed: a deny→allow means the
// candidate policy would allow; attenuation and consent still apply.
// Candidate scopes are the requested scopes narrowed by the candidate's
// decision, as the broker narrows them.
func (l *Log) Simulate(ctx context.Context, candidate *policies.Bundle, since time.Time, limit int) (Report, error) {
	if l == nil {
		return Report{}, errNoLog
	}
	if candidate == nil {
		return Report{}, errors.New("decisionlog: simulate: no candidate bundle")
	}
	switch {
	case limit == 0:
		limit = DefaultSimulateLimit
	case limit < 0 || limit > MaxSimulateLimit:
		return Report{}, fmt.Errorf("decisionlog: simulate: limit %d is not between 1 and %d", limit, MaxSimulateLimit)
	}
	rep := Report{Candidate: candidate.Version, CandidateSHA256: candidate.Digest, Since: since, Changes: []Change{}}
	var before int64
	seen := 0
	for seen < limit {
		want := min(500, limit-seen)
		page, err := l.Query(ctx, Filter{Since: since, BeforeID: before, Limit: want, IncludeInput: true})
		if err != nil {
			return Report{}, fmt.Errorf("decisionlog: simulate: %w", err)
		}
		for i := range page {
			if err := ctx.Err(); err != nil {
				return Report{}, fmt.Errorf("decisionlog: simulate: %w", err)
			}
			rep.replay(ctx, candidate, &page[i])
		}
		seen += len(page)
		if len(page) < want {
			return rep, nil // every decision in the window was replayed
		}
		before = page[len(page)-1].ID
	}
	// The limit was reached: are there older decisions in the window?
	more, err := l.Query(ctx, Filter{Since: since, BeforeID: before, Limit: 1})
	if err != nil {
		return Report{}, fmt.Errorf("decisionlog: simulate: %w", err)
	}
	rep.Truncated = len(more) > 0
	return rep, nil
}

func (rep *Report) replay(ctx context.Context, candidate *policies.Bundle, e *Entry) {
	if len(e.Input) == 0 {
		rep.Skipped++
		return
	}
	var in policies.Input
	dec := json.NewDecoder(bytes.NewReader(e.Input))
	dec.UseNumber() // claims keep their exact numbers
	if err := dec.Decode(&in); err != nil {
		rep.Skipped++
		return
	}
	rep.Replayed++

	c := Change{
		DecisionID: e.ID, At: e.At, ClientID: e.ClientID, Subject: e.Subject, RecordedVersion: e.BundleVersion,
		RecordedAllowed: e.Allowed, RecordedScopes: e.Issued, RecordedReasons: e.Reasons, CandidateReasons: []string{},
	}
	d, err := candidate.Decide(ctx, &in)
	switch {
	case err != nil:
		rep.Errors++
		c.CandidateError = err.Error()
	case d.Allow:
		c.CandidateAllowed = true
		c.CandidateScopes = in.Request.Scopes
		if d.Scopes != nil {
			c.CandidateScopes = intersect(in.Request.Scopes, d.Scopes)
			// The exchange refuses a token the policy left without scopes.
			if len(c.CandidateScopes) == 0 && len(in.Request.Scopes) > 0 && in.Request.GrantType == broker.GrantTypeTokenExchange {
				c.CandidateAllowed = false
				c.CandidateReasons = append(slices.Clone(d.Reasons), "the policy left none of the requested scopes")
			}
		}
		if c.CandidateAllowed {
			c.CandidateReasons = d.Reasons
		}
	default:
		c.CandidateReasons = d.Reasons
	}
	if c.CandidateScopes == nil {
		c.CandidateScopes = []string{}
	}
	if c.CandidateReasons == nil {
		c.CandidateReasons = []string{}
	}

	switch {
	case e.Allowed && !c.CandidateAllowed:
		c.Kind = ChangeAllowToDeny
		rep.AllowToDeny++
	case !e.Allowed && c.CandidateAllowed:
		c.Kind = ChangeDenyToAllow
		rep.DenyToAllow++
	case e.Allowed:
		c.AddedScopes = difference(c.CandidateScopes, e.Issued)
		c.RemovedScopes = difference(e.Issued, c.CandidateScopes)
		switch {
		case len(c.AddedScopes) == 0 && len(c.RemovedScopes) == 0:
			rep.Unchanged++
			return
		case len(c.AddedScopes) == 0:
			c.Kind = ChangeScopesNarrowed
			rep.ScopesNarrowed++
		case len(c.RemovedScopes) == 0:
			c.Kind = ChangeScopesWidened
			rep.ScopesWidened++
		default:
			c.Kind = ChangeScopesChanged
			rep.ScopesChanged++
		}
	default:
		rep.Unchanged++
		return
	}
	if len(rep.Changes) < MaxReportedChanges {
		rep.Changes = append(rep.Changes, c)
	} else {
		rep.ChangesTruncated = true
	}
}

// intersect keeps the elements of a that are in b, in a's order.
func intersect(a, b []string) []string {
	out := []string{}
	for _, s := range a {
		if slices.Contains(b, s) && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// difference is the elements of a not in b, in a's order.
func difference(a, b []string) []string {
	var out []string
	for _, s := range a {
		if !slices.Contains(b, s) && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}
