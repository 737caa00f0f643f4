package decisionlog

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Query limits.
const (
	// DefaultLimit is the number of entries a Query returns when Filter.Limit is 0.
	DefaultLimit = 100
	// MaxLimit is the most entries one Query returns.
	MaxLimit = 1000
)

// Filter selects decisions. Zero fields do not filter.
type Filter struct {
	ClientID string
	Subject  string
	// Allowed selects allowed (true) or denied (false) decisions.
	Allowed *bool
	// Since and Until bound the decision time: Since <= at < Until.
	Since, Until time.Time
	// Limit is 1 to MaxLimit; 0 means DefaultLimit.
	Limit int
	// BeforeID pages backwards: only decisions with a smaller ID. Pass the
	// ID of the last entry of the previous page.
	BeforeID int64
	// IncludeInput returns each decision's policy input (for replay), which
	// holds the verified claims of the tokens involved.
	IncludeInput bool
}

// Entry is one recorded decision.
type Entry struct {
	ID            int64     `json:"id"`
	At            time.Time `json:"at"`
	ClientID      string    `json:"client_id"`
	Subject       string    `json:"subject"`
	SubjectIssuer string    `json:"subject_issuer"`
	// Actors is the act chain of the requested token, current actor first.
	Actors    []string `json:"actors"`
	GrantID   string   `json:"grant_id"`
	GrantType string   `json:"grant_type"`
	// Requested are the scopes asked for; Audiences the audiences and resources.
	Requested []string `json:"requested"`
	Audiences []string `json:"audiences"`
	Allowed   bool     `json:"allowed"`
	Reasons   []string `json:"reasons"`
	// Issued are the scopes of the issued token (empty on deny).
	Issued []string `json:"issued"`
	// Error is the OAuth error code the request ended with, "" when a token
	// was issued: it tells a policy's deny (invalid_grant) from the broker's
	// own refusals (invalid_scope, invalid_target, ...).
	Error         string        `json:"error,omitempty"`
	BundleVersion string        `json:"bundle_version"`
	EvalDuration  time.Duration `json:"eval_duration"`
	// Input is the policy input (only with Filter.IncludeInput; nil when no
	// policy ran).
	Input json.RawMessage `json:"input,omitempty"`
}

// Query returns the decisions matching f, newest first.
func (l *Log) Query(ctx context.Context, f Filter) ([]Entry, error) {
	if l == nil {
		return nil, errNoLog
	}
	limit := f.Limit
	switch {
	case limit == 0:
		limit = DefaultLimit
	case limit < 0 || limit > MaxLimit:
		return nil, fmt.Errorf("decisionlog: query: limit %d is not between 1 and %d", limit, MaxLimit)
	}
	var (
		where []string
		args  []any
	)
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, strings.Replace(cond, "?", "$"+strconv.Itoa(len(args)), 1))
	}
	if f.ClientID != "" {
		add("client_id = ?", f.ClientID)
	}
	if f.Subject != "" {
		add("subject = ?", f.Subject)
	}
	if f.Allowed != nil {
		add("allowed = ?", *f.Allowed)
	}
	if !f.Since.IsZero() {
		add("at >= ?", f.Since.UnixMilli())
	}
	if !f.Until.IsZero() {
		add("at < ?", f.Until.UnixMilli())
	}
	if f.BeforeID > 0 {
		add("id < ?", f.BeforeID)
	}
	input := "''"
	if f.IncludeInput {
		input = "input"
	}
	q := `SELECT id, at, client_id, subject, subject_issuer, actors, grant_id, grant_type, requested, audiences,
		allowed, reasons, issued, error, bundle_version, eval_us, ` + input + ` FROM decisions`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	args = append(args, limit)
	q += " ORDER BY id DESC LIMIT $" + strconv.Itoa(len(args))

	rows, err := l.d.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("decisionlog: query: %w", err)
	}
	defer rows.Close()
	out := []Entry{}
	for rows.Next() {
		var (
			e                                                 Entry
			at, evalUS                                        int64
			actors, requested, audiences, reasons, issued, in string
		)
		if err := rows.Scan(&e.ID, &at, &e.ClientID, &e.Subject, &e.SubjectIssuer, &actors, &e.GrantID, &e.GrantType,
			&requested, &audiences, &e.Allowed, &reasons, &issued, &e.Error, &e.BundleVersion, &evalUS, &in); err != nil {
			return nil, fmt.Errorf("decisionlog: query: %w", err)
		}
		e.At = time.UnixMilli(at)
		e.EvalDuration = time.Duration(evalUS) * time.Microsecond
		for _, l := range []struct {
			dst *[]string
			src string
		}{{&e.Actors, actors}, {&e.Requested, requested}, {&e.Audiences, audiences}, {&e.Reasons, reasons}, {&e.Issued, issued}} {
			if err := json.Unmarshal([]byte(l.src), l.dst); err != nil {
				return nil, fmt.Errorf("decisionlog: query: decision %d: %w", e.ID, err)
			}
			if *l.dst == nil {
				*l.dst = []string{}
			}
		}
		if in != "" {
			e.Input = json.RawMessage(in)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("decisionlog: query: %w", err)
	}
	return out, nil
}

// pruneChunk bounds the rows one DELETE removes, so that retention never
// holds SQLite's write lock long enough to stall the writer.
const pruneChunk = 5000

// Prune deletes the decisions made before olderThan and returns how many.
// Run it periodically with now minus policies.decision_retention.
func (l *Log) Prune(ctx context.Context, olderThan time.Time) (int64, error) {
	if l == nil {
		return 0, errNoLog
	}
	var total int64
	for {
		n, err := l.d.Exec(ctx, `DELETE FROM decisions WHERE id IN
			(SELECT id FROM decisions WHERE at < $1 ORDER BY id LIMIT $2)`, olderThan.UnixMilli(), pruneChunk)
		total += n
		if err != nil {
			return total, fmt.Errorf("decisionlog: prune: %w", err)
		}
		if n < pruneChunk {
			return total, nil
		}
	}
}
