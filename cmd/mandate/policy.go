package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/mandate-dev/mandate/policies"
	"github.com/mandate-dev/mandate/policies/registry"
)

func init() { extraCommands = append(extraCommands, newPolicyCmd, newAuditCmd) }

// policyAPIError is an error answer of the policy admin API: the usual
// error and error_description, and for a refused bundle its problems and
// failing tests.
type policyAPIError struct {
	apiError
	Problems    []registry.Problem    `json:"problems"`
	FailedTests []registry.FailedTest `json:"failed_tests"`
}

func (e *policyAPIError) Error() string { return e.apiError.Error() }

// policyCall calls the admin API like adminCall, keeping the whole error answer
// (a refused bundle's problems and failing tests).
func policyCall(ctx context.Context, g *globals, method, path string, body, out any) error {
	if g.adminKey == "" {
		return errors.New("no admin key: set MANDATE_ADMIN_KEY or pass --admin-key")
	}
	if ctx == nil {
		ctx = context.Background()
	}
	err := g.callCtx(ctx, method, "/admin/v1"+path, "Bearer "+g.adminKey, body, out)
	var ae *apiError
	if errors.As(err, &ae) {
		pe := &policyAPIError{apiError: *ae}
		_ = json.Unmarshal(ae.Body, pe)
		return pe
	}
	return err
}

// policyPrintRefusal prints a refused bundle's problems as file:line:col:
// message, under dir so that an editor can jump to them.
func policyPrintRefusal(w io.Writer, dir string, err error) {
	var pe *policyAPIError
	if !errors.As(err, &pe) {
		return
	}
	for _, p := range pe.Problems {
		if p.File != "" && dir != "" {
			p.File = filepath.Join(dir, p.File)
		}
		fmt.Fprintln(w, p.String())
	}
	for _, t := range pe.FailedTests {
		fmt.Fprintf(w, "%s: %s (%s)\n", strings.ToUpper(t.Outcome), t.Name, policyJoin(dir, t.Location))
		if t.Error != "" {
			fmt.Fprintf(w, "    %s\n", t.Error)
		}
	}
}

// policyJoin puts a "file:line:col" location under dir.
func policyJoin(dir, loc string) string {
	if dir == "" || loc == "" {
		return loc
	}
	return filepath.Join(dir, loc)
}

func policyEncodeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// errPolicyTestsFailed ends `policy test` with a non-zero exit.
var errPolicyTestsFailed = errors.New("policy tests failed")

func newPolicyCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Test, push, simulate, activate and roll back policy bundles",
		Long: `A bundle is a folder of Rego policies (package mandate.exchange, entry point
data.mandate.exchange.decision) with their tests (*_test.rego) and data.json files.
The lifecycle: policy test DIR (locally) -> policy push DIR -> policy simulate
--version V -> policy activate V -> policy rollback. See docs/policy-lifecycle.md.`,
	}
	cmd.AddCommand(newPolicyTestCmd(g), newPolicyPushCmd(g), newPolicyListCmd(g), newPolicyGetCmd(g),
		newPolicyActivateCmd(g), newPolicyRollbackCmd(g), newPolicyEvalCmd(g), newPolicySimulateCmd(g))
	return cmd
}

func newPolicyTestCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "test DIR",
		Short: "Compile a bundle folder and run its tests, locally (no server needed)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return policyTest(cmd.Context(), args[0], g.json, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
}

// policyTest runs a folder's tests as the server does at push, printing
// PASS/FAIL lines and a summary; an error means the bundle would be refused.
func policyTest(ctx context.Context, dir string, asJSON bool, stdout, stderr io.Writer) error {
	if ctx == nil {
		ctx = context.Background()
	}
	files, err := policies.LoadDir(dir)
	if err != nil {
		return err
	}
	compileFailed := func(err error) error {
		var ce *policies.CompileError
		if !errors.As(err, &ce) {
			return err
		}
		for _, p := range ce.Problems {
			fmt.Fprintf(stderr, "%s:%d:%d: %s: %s\n", filepath.Join(dir, p.File), p.Row, p.Col, p.Code, p.Message)
		}
		return fmt.Errorf("%s does not compile: %d problems", dir, len(ce.Problems))
	}
	b, err := policies.Compile(ctx, "local", files)
	if err != nil {
		return compileFailed(err)
	}
	rep, err := policies.RunTests(ctx, b)
	if err != nil {
		return compileFailed(err)
	}
	if asJSON {
		if err := policyEncodeJSON(stdout, rep); err != nil {
			return err
		}
	} else {
		for _, r := range rep.Results {
			name := registry.TestName(r)
			d := r.Duration.Round(time.Microsecond)
			switch r.Outcome {
			case policies.TestPass:
				fmt.Fprintf(stdout, "PASS: %s (%s)\n", name, d)
			case policies.TestSkip:
				fmt.Fprintf(stdout, "SKIP: %s\n", name)
			case policies.TestFail:
				fmt.Fprintf(stdout, "FAIL: %s (%s)\n    at %s\n", name, d, policyJoin(dir, r.Location))
			case policies.TestError:
				fmt.Fprintf(stdout, "ERROR: %s (%s)\n    at %s\n    %s\n", name, d, policyJoin(dir, r.Location), r.Error)
			}
			if r.Outcome != policies.TestPass && r.Output != "" {
				for line := range strings.Lines(r.Output) {
					fmt.Fprintf(stdout, "    | %s", line)
				}
				if !strings.HasSuffix(r.Output, "\n") {
					fmt.Fprintln(stdout)
				}
			}
		}
		summary := fmt.Sprintf("%d passed, %d failed", rep.Passed, rep.Failed)
		if rep.Errored > 0 {
			summary += fmt.Sprintf(", %d errored", rep.Errored)
		}
		if rep.Skipped > 0 {
			summary += fmt.Sprintf(", %d skipped", rep.Skipped)
		}
		fmt.Fprintln(stdout, summary)
	}
	if !rep.OK() {
		if rep.Passed == 0 && rep.Failed == 0 && rep.Errored == 0 {
			return fmt.Errorf("%w: %s has no tests; a bundle must carry tests (rules named test_* in *_test.rego files)", errPolicyTestsFailed, dir)
		}
		return errPolicyTestsFailed
	}
	return nil
}

func newPolicyPushCmd(g *globals) *cobra.Command {
	var version string
	cmd := &cobra.Command{
		Use:   "push DIR",
		Short: "Upload a bundle folder: the server compiles it, runs its tests and stores it (it does not activate it)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := args[0]
			files, err := policies.LoadDir(dir)
			if err != nil {
				return err
			}
			var out map[string]any
			err = policyCall(cmd.Context(), g, http.MethodPost, "/policies", map[string]any{"version": version, "files": files}, &out)
			if err != nil {
				policyPrintRefusal(cmd.ErrOrStderr(), dir, err)
				return err
			}
			if g.json {
				return policyEncodeJSON(cmd.OutOrStdout(), out)
			}
			rep, _ := out["test_report"].(map[string]any)
			fmt.Fprintf(cmd.OutOrStdout(), "pushed %v (sha256 %v, %v tests passed); activate it with: mandate policy activate %v\n",
				out["version"], policyShort(out["sha256"]), rep["passed"], out["version"])
			return nil
		},
	}
	cmd.Flags().StringVar(&version, "version", "", "version name (default: generated, v<N>-<sha>)")
	return cmd
}

func policyShort(v any) string {
	s := fmt.Sprint(v)
	if len(s) > 12 {
		return s[:12]
	}
	return s
}

func newPolicyListCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the stored bundles; * marks the active one",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out struct {
				Active *struct {
					Version string `json:"version"`
					Seq     int64  `json:"seq"`
				} `json:"active"`
				Bundles []struct {
					Version   string `json:"version"`
					Author    string `json:"author"`
					CreatedAt string `json:"created_at"`
					SHA256    string `json:"sha256"`
					Active    bool   `json:"active"`
					Tests     struct {
						Passed int `json:"passed"`
					} `json:"test_report"`
				} `json:"bundles"`
			}
			var raw json.RawMessage
			if err := policyCall(cmd.Context(), g, http.MethodGet, "/policies", nil, &raw); err != nil {
				return err
			}
			if g.json {
				return policyEncodeJSON(cmd.OutOrStdout(), raw)
			}
			if err := json.Unmarshal(raw, &out); err != nil {
				return fmt.Errorf("unexpected answer from server: %w", err)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "\tVERSION\tAUTHOR\tCREATED\tTESTS\tSHA256")
			for _, b := range out.Bundles {
				mark := ""
				if b.Active {
					mark = "*"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d passed\t%s\n", mark, b.Version, b.Author, b.CreatedAt, b.Tests.Passed, policyShort(b.SHA256))
			}
			return tw.Flush()
		},
	}
}

func newPolicyGetCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "get VERSION",
		Short: "Show a stored bundle: its files and test report (JSON)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var raw json.RawMessage
			if err := policyCall(cmd.Context(), g, http.MethodGet, "/policies/"+url.PathEscape(args[0]), nil, &raw); err != nil {
				return err
			}
			return policyEncodeJSON(cmd.OutOrStdout(), raw)
		},
	}
}

type policyActivation struct {
	Seq         int64  `json:"seq"`
	Version     string `json:"version"`
	ActivatedBy string `json:"activated_by"`
	At          string `json:"at"`
	Action      string `json:"action"`
}

func newPolicyActivateCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "activate VERSION",
		Short: "Make a stored bundle the active one on every node",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var out policyActivation
			if err := policyCall(cmd.Context(), g, http.MethodPost, "/policies/"+url.PathEscape(args[0])+"/activate", nil, &out); err != nil {
				policyPrintRefusal(cmd.ErrOrStderr(), "", err)
				return err
			}
			if g.json {
				return policyEncodeJSON(cmd.OutOrStdout(), out)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "activated %s (activation %d)\n", out.Version, out.Seq)
			return nil
		},
	}
}

func newPolicyRollbackCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "rollback",
		Short: "Re-activate the bundle that was active before the current one",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out policyActivation
			if err := policyCall(cmd.Context(), g, http.MethodPost, "/policies/rollback", nil, &out); err != nil {
				return err
			}
			if g.json {
				return policyEncodeJSON(cmd.OutOrStdout(), out)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "rolled back to %s (activation %d)\n", out.Version, out.Seq)
			return nil
		},
	}
}

func newPolicyEvalCmd(g *globals) *cobra.Command {
	var input, version string
	cmd := &cobra.Command{
		Use:   "eval --input FILE",
		Short: "Decide a policy input document by hand, with the active bundle or --version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if input == "" {
				return errors.New("--input FILE is required (a JSON policy input; - reads standard input)")
			}
			var (
				doc []byte
				err error
			)
			if input == "-" {
				doc, err = io.ReadAll(io.LimitReader(cmd.InOrStdin(), 1<<20))
			} else {
				doc, err = os.ReadFile(input)
			}
			if err != nil {
				return err
			}
			if !json.Valid(doc) {
				return fmt.Errorf("%s is not JSON", input)
			}
			var out struct {
				BundleVersion      string         `json:"bundle_version"`
				Allow              bool           `json:"allow"`
				Reasons            []string       `json:"reasons"`
				Scopes             []string       `json:"scopes"`
				MaxLifetimeSeconds int64          `json:"max_lifetime_seconds"`
				Claims             map[string]any `json:"claims"`
				EvalUS             int64          `json:"eval_us"`
				Error              string         `json:"error"`
			}
			var raw json.RawMessage
			body := map[string]any{"version": version, "input": json.RawMessage(doc)}
			if err := policyCall(cmd.Context(), g, http.MethodPost, "/policies/eval", body, &raw); err != nil {
				return err
			}
			if g.json {
				return policyEncodeJSON(cmd.OutOrStdout(), raw)
			}
			if err := json.Unmarshal(raw, &out); err != nil {
				return fmt.Errorf("unexpected answer from server: %w", err)
			}
			w := cmd.OutOrStdout()
			result := "deny"
			if out.Allow {
				result = "allow"
			}
			fmt.Fprintf(w, "%s (bundle %s, %dµs)\n", result, out.BundleVersion, out.EvalUS)
			if out.Error != "" {
				fmt.Fprintf(w, "error: %s\n", out.Error)
			}
			for _, r := range out.Reasons {
				fmt.Fprintf(w, "reason: %s\n", r)
			}
			if out.Scopes != nil {
				fmt.Fprintf(w, "scopes narrowed to: %s\n", strings.Join(out.Scopes, " "))
			}
			if out.MaxLifetimeSeconds > 0 {
				fmt.Fprintf(w, "lifetime capped at: %ds\n", out.MaxLifetimeSeconds)
			}
			if len(out.Claims) > 0 {
				c, _ := json.Marshal(out.Claims)
				fmt.Fprintf(w, "claims: %s\n", c)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&input, "input", "", "JSON file holding the policy input (- for standard input)")
	cmd.Flags().StringVar(&version, "version", "", "a stored bundle version (default: the node's active bundle)")
	return cmd
}

// errPolicyChanges ends `policy simulate --fail-on-change` with a non-zero exit.
var errPolicyChanges = errors.New("the candidate would change recorded decisions")

func newPolicySimulateCmd(g *globals) *cobra.Command {
	var (
		version, since string
		limit          int
		failOnChange   bool
	)
	cmd := &cobra.Command{
		Use:   "simulate [DIR] [--version V] [--since 24h]",
		Short: "Replay recorded decisions against a candidate bundle (a folder, or a pushed --version) and show what would change",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			body := map[string]any{"since": since, "limit": limit}
			dir := ""
			switch {
			case len(args) == 1 && version != "":
				return errors.New("give a folder or --version, not both")
			case len(args) == 1:
				dir = args[0]
				files, err := policies.LoadDir(dir)
				if err != nil {
					return err
				}
				body["files"] = files
			case version != "":
				body["version"] = version
			default:
				return errors.New("give a bundle folder, or --version of a pushed bundle")
			}
			var raw json.RawMessage
			if err := policyCall(cmd.Context(), g, http.MethodPost, "/policies/simulate", body, &raw); err != nil {
				policyPrintRefusal(cmd.ErrOrStderr(), dir, err)
				return err
			}
			var out struct {
				Changed int `json:"changed"`
				Report  struct {
					Candidate      string `json:"candidate"`
					Since          string `json:"since"`
					Replayed       int    `json:"replayed"`
					Skipped        int    `json:"skipped"`
					Unchanged      int    `json:"unchanged"`
					AllowToDeny    int    `json:"allow_to_deny"`
					DenyToAllow    int    `json:"deny_to_allow"`
					ScopesNarrowed int    `json:"scopes_narrowed"`
					ScopesWidened  int    `json:"scopes_widened"`
					ScopesChanged  int    `json:"scopes_changed"`
					Errors         int    `json:"errors"`
					Truncated      bool   `json:"truncated"`
					Changes        []struct {
						DecisionID       int64    `json:"decision_id"`
						At               string   `json:"at"`
						ClientID         string   `json:"client_id"`
						Subject          string   `json:"subject"`
						Kind             string   `json:"kind"`
						AddedScopes      []string `json:"added_scopes"`
						RemovedScopes    []string `json:"removed_scopes"`
						CandidateReasons []string `json:"candidate_reasons"`
						CandidateError   string   `json:"candidate_error"`
					} `json:"changes"`
					ChangesTruncated bool `json:"changes_truncated"`
				} `json:"report"`
				Tests *struct {
					Passed, Failed, Errored int
				} `json:"test_report"`
			}
			if err := json.Unmarshal(raw, &out); err != nil {
				return fmt.Errorf("unexpected answer from server: %w", err)
			}
			if g.json {
				if err := policyEncodeJSON(cmd.OutOrStdout(), raw); err != nil {
					return err
				}
			} else {
				w := cmd.OutOrStdout()
				r := out.Report
				fmt.Fprintf(w, "candidate %s: %d decisions replayed since %s, %d would change\n", r.Candidate, r.Replayed, r.Since, out.Changed)
				fmt.Fprintf(w, "  allow->deny %d, deny->allow %d, scopes narrowed %d, widened %d, changed %d; %d evaluation errors, %d skipped (no input)\n",
					r.AllowToDeny, r.DenyToAllow, r.ScopesNarrowed, r.ScopesWidened, r.ScopesChanged, r.Errors, r.Skipped)
				if r.Truncated {
					fmt.Fprintln(w, "  (more decisions were recorded in that window than --limit replays; the newest were replayed)")
				}
				if out.Tests != nil {
					fmt.Fprintf(w, "  the candidate's tests: %d passed, %d failed, %d errored\n", out.Tests.Passed, out.Tests.Failed, out.Tests.Errored)
				}
				if len(r.Changes) > 0 {
					tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "CHANGE\tDECISION\tAT\tCLIENT\tSUBJECT\tDETAIL")
					for _, c := range r.Changes {
						detail := strings.Join(c.CandidateReasons, "; ")
						switch {
						case c.CandidateError != "":
							detail = "error: " + c.CandidateError
						case len(c.AddedScopes)+len(c.RemovedScopes) > 0:
							detail = policyScopeDiff(c.AddedScopes, c.RemovedScopes)
						}
						fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\n", c.Kind, c.DecisionID, c.At, c.ClientID, c.Subject, detail)
					}
					if err := tw.Flush(); err != nil {
						return err
					}
					if r.ChangesTruncated {
						fmt.Fprintln(w, "(more changes than listed; see the counts above)")
					}
				}
			}
			if failOnChange && out.Changed > 0 {
				return errPolicyChanges
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&version, "version", "", "simulate a pushed bundle instead of a folder")
	f.StringVar(&since, "since", "24h", "replay decisions since this long ago (24h) or this RFC 3339 time")
	f.IntVar(&limit, "limit", 1000, "replay at most this many decisions, newest first (max 10000)")
	f.BoolVar(&failOnChange, "fail-on-change", false, "exit non-zero when any decision would change (for CI)")
	return cmd
}

func policyScopeDiff(added, removed []string) string {
	var parts []string
	for _, s := range added {
		parts = append(parts, "+"+s)
	}
	for _, s := range removed {
		parts = append(parts, "-"+s)
	}
	return strings.Join(parts, " ")
}

func newAuditCmd(g *globals) *cobra.Command {
	var (
		client, subject, result, since, until string
		limit                                 int
		before                                int64
		withInput                             bool
	)
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Show the decision log: every token request's decision, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := url.Values{}
			set := func(k, v string) {
				if v != "" {
					q.Set(k, v)
				}
			}
			set("client_id", client)
			set("subject", subject)
			set("result", result)
			set("since", since)
			set("until", until)
			if limit > 0 {
				q.Set("limit", strconv.Itoa(limit))
			}
			if before > 0 {
				q.Set("before", strconv.FormatInt(before, 10))
			}
			if withInput {
				q.Set("include_input", "true")
			}
			path := "/decisions"
			if len(q) > 0 {
				path += "?" + q.Encode()
			}
			var raw json.RawMessage
			if err := policyCall(cmd.Context(), g, http.MethodGet, path, nil, &raw); err != nil {
				return err
			}
			if g.json || withInput {
				return policyEncodeJSON(cmd.OutOrStdout(), raw)
			}
			var out struct {
				Decisions []struct {
					ID            int64    `json:"id"`
					At            string   `json:"at"`
					ClientID      string   `json:"client_id"`
					Subject       string   `json:"subject"`
					Result        string   `json:"result"`
					Requested     []string `json:"requested"`
					Issued        []string `json:"issued"`
					Reasons       []string `json:"reasons"`
					Error         string   `json:"error"`
					BundleVersion string   `json:"bundle_version"`
				} `json:"decisions"`
				NextBefore int64 `json:"next_before"`
			}
			if err := json.Unmarshal(raw, &out); err != nil {
				return fmt.Errorf("unexpected answer from server: %w", err)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tTIME\tRESULT\tCLIENT\tSUBJECT\tSCOPES\tBUNDLE\tWHY")
			for _, d := range out.Decisions {
				scopes := strings.Join(d.Issued, " ")
				if d.Result != "allow" {
					scopes = strings.Join(d.Requested, " ")
				}
				why := strings.Join(d.Reasons, "; ")
				switch {
				case d.Error != "" && why != "":
					why = d.Error + ": " + why
				case d.Error != "":
					why = d.Error
				}
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.ID, d.At, d.Result, d.ClientID, d.Subject, scopes, d.BundleVersion, why)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if out.NextBefore > 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "more: mandate audit --before %d\n", out.NextBefore)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&client, "client", "", "only this client's decisions")
	f.StringVar(&subject, "subject", "", "only this subject's (user's) decisions")
	f.StringVar(&result, "result", "", "allow or deny")
	f.StringVar(&since, "since", "", "since this long ago (1h) or this RFC 3339 time")
	f.StringVar(&until, "until", "", "until this long ago or this RFC 3339 time")
	f.IntVar(&limit, "limit", 0, "at most this many (default 100, max 1000)")
	f.Int64Var(&before, "before", 0, "only decisions older than this id (paging)")
	f.BoolVar(&withInput, "input", false, "include each decision's policy input (prints JSON)")
	return cmd
}
