package conformance

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// Status is the outcome of one case.
type Status string

// Outcomes.
const (
	Pass Status = "PASS"
	Fail Status = "FAIL"
	Skip Status = "SKIP"
)

// Result is one case's outcome and, unless it passed, why.
type Result struct {
	Name   string `json:"name"`
	Group  string `json:"group"`
	Spec   string `json:"spec"`
	Status Status `json:"status"`
	Why    string `json:"why,omitempty"`
}

// Report is the outcome of a run.
type Report struct {
	Target  string   `json:"target"`
	Results []Result `json:"results"`
	Passed  int      `json:"passed"`
	Failed  int      `json:"failed"`
	Skipped int      `json:"skipped"`
}

func (r *Report) add(res Result) {
	r.Results = append(r.Results, res)
	switch res.Status {
	case Pass:
		r.Passed++
	case Fail:
		r.Failed++
	case Skip:
		r.Skipped++
	}
}

// OK reports whether no case failed.
func (r Report) OK() bool { return r.Failed == 0 }

// Summary is the closing line: "N passed, N failed" and ", N skipped" when some were.
func (r Report) Summary() string {
	s := fmt.Sprintf("%d passed, %d failed", r.Passed, r.Failed)
	if r.Skipped > 0 {
		s += fmt.Sprintf(", %d skipped", r.Skipped)
	}
	return s
}

// WriteTable writes one row per case (case, spec, result, why) and the summary line.
func (r Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CASE\tGROUP\tSPEC\tRESULT\tWHY")
	for _, res := range r.Results {
		why := strings.ReplaceAll(res.Why, "\n", " ")
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", res.Name, res.Group, res.Spec, res.Status, why)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("conformance: write report: %w", err)
	}
	_, err := fmt.Fprintln(w, r.Summary())
	if err != nil {
		return fmt.Errorf("conformance: write report: %w", err)
	}
	return nil
}

// WriteJSON writes the report as one JSON object.
func (r Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("conformance: write report: %w", err)
	}
	return nil
}
