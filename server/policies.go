package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/mandate-dev/mandate/internal/db"
	"github.com/mandate-dev/mandate/policies"
	"github.com/mandate-dev/mandate/policies/decisionlog"
	"github.com/mandate-dev/mandate/policies/registry"
)

// Body limits of the policy admin API. A bundle holds at most
// policies.MaxBundleBytes of source; JSON escaping of quotes and newlines
// makes its body larger, hence twice that.
const (
	policiesMaxBundleBody = 2 * policies.MaxBundleBytes
	policiesMaxEvalBody   = 1 << 20
)

// A simulation answers within the server's write timeout (15s by default):
// the candidate's tests get a few seconds, the replay a few more.
const (
	policiesSimulateTestsTimeout = 4 * time.Second
	policiesSimulateTimeout      = 9 * time.Second
)

// policiesMaxSince is the furthest back a simulation or a decision query may look.
const policiesMaxSince = 400 * 24 * time.Hour

// policiesAdminActor is who the admin API records as author and activator:
// the admin key does not say which person holds it.
const policiesAdminActor = "admin"

// RegisterPolicyAdmin mounts the policy lifecycle and the decision log on the
// admin group g (mounted at /admin/v1 behind the admin key). eng is this
// node's engine: eval uses its active bundle when no version is named, and
// an activation made here reaches it at once (through reg's Syncer for eng,
// or directly when there is none).
//
//	POST /policies                     push {"version"?, "files": {path: source}}: compile, test, store (201)
//	GET  /policies                     the stored bundles and the active one
//	GET  /policies/:version            one bundle, with files and test report
//	POST /policies/:version/activate   make it active on every node
//	POST /policies/rollback            re-activate the bundle active before
//	POST /policies/eval                decide {"version"?, "input": {...}}
//	POST /policies/simulate            replay recorded decisions against {"files"} or {"version"}
//	GET  /decisions                    the decision log (?client_id=&subject=&result=&since=&until=&limit=&before=&include_input=)
//
// A bundle that does not compile, or fails its tests, is refused with 400
// invalid_policy, its problems located (file, line, col) and its failing
// tests named.
func RegisterPolicyAdmin(g *echo.Group, reg *registry.Registry, eng *policies.Engine, log *decisionlog.Log) {
	if g == nil || reg == nil || eng == nil || log == nil {
		panic("server: RegisterPolicyAdmin needs a group, a registry, an engine and a decision log")
	}
	a := &policiesAPI{reg: reg, eng: eng, log: log}
	// Static routes first: echo prefers them to /policies/:version.
	g.POST("/policies", a.push)
	g.GET("/policies", a.list)
	g.POST("/policies/rollback", a.rollback)
	g.POST("/policies/eval", a.eval)
	g.POST("/policies/simulate", a.simulate)
	g.GET("/policies/:version", a.get)
	g.POST("/policies/:version/activate", a.activate)
	g.GET("/decisions", a.decisions)
}

type policiesAPI struct {
	reg *registry.Registry
	eng *policies.Engine
	log *decisionlog.Log
}

// Wire types. Times are RFC 3339 in UTC.

type policiesWireBundle struct {
	Version   string              `json:"version"`
	Author    string              `json:"author"`
	CreatedAt string              `json:"created_at"`
	SHA256    string              `json:"sha256"`
	Active    bool                `json:"active"`
	Tests     policies.TestReport `json:"test_report"`
	Files     map[string]string   `json:"files,omitempty"`
}

type policiesWireActivation struct {
	Seq         int64  `json:"seq"`
	Version     string `json:"version"`
	ActivatedBy string `json:"activated_by"`
	At          string `json:"at"`
	Action      string `json:"action"`
}

type policiesWireDecision struct {
	ID            int64           `json:"id"`
	At            string          `json:"at"`
	ClientID      string          `json:"client_id"`
	Subject       string          `json:"subject"`
	SubjectIssuer string          `json:"subject_issuer"`
	Actors        []string        `json:"actors"`
	GrantID       string          `json:"grant_id"`
	GrantType     string          `json:"grant_type"`
	Requested     []string        `json:"requested"`
	Audiences     []string        `json:"audiences"`
	Result        string          `json:"result"` // "allow" or "deny"
	Reasons       []string        `json:"reasons"`
	Issued        []string        `json:"issued"`
	Error         string          `json:"error,omitempty"`
	BundleVersion string          `json:"bundle_version"`
	EvalUS        int64           `json:"eval_us"`
	Input         json.RawMessage `json:"input,omitempty"`
}

type policiesWireEval struct {
	BundleVersion      string         `json:"bundle_version"`
	Allow              bool           `json:"allow"`
	Reasons            []string       `json:"reasons"`
	Scopes             []string       `json:"scopes"` // null: the decision does not narrow scopes
	MaxLifetimeSeconds int64          `json:"max_lifetime_seconds,omitempty"`
	Claims             map[string]any `json:"claims,omitempty"`
	EvalUS             int64          `json:"eval_us"`
	// Error is why the decision could not be made; the broker denies then.
	Error string `json:"error,omitempty"`
}

type policiesPushBody struct {
	Version string            `json:"version"`
	Files   map[string]string `json:"files"`
}

type policiesEvalBody struct {
	Version string          `json:"version"`
	Input   *policies.Input `json:"input"`
}

type policiesSimulateBody struct {
	Version string            `json:"version"`
	Files   map[string]string `json:"files"`
	Since   string            `json:"since"`
	Limit   int               `json:"limit"`
}

func policiesTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func policiesBundleWire(r *registry.Record, active string) policiesWireBundle {
	return policiesWireBundle{
		Version: r.Version, Author: r.Author, CreatedAt: policiesTime(r.CreatedAt), SHA256: r.SHA256,
		Active: r.Version == active, Tests: r.Tests, Files: r.Files,
	}
}

func policiesActivationWire(a *registry.Activation) policiesWireActivation {
	return policiesWireActivation{Seq: a.Seq, Version: a.Version, ActivatedBy: a.ActivatedBy, At: policiesTime(a.At), Action: a.Action}
}

// activeVersion is the registry's latest activation, nil when none.
func (a *policiesAPI) activeVersion(ctx context.Context) (*registry.Activation, error) {
	act, err := a.reg.Active(ctx)
	if errors.Is(err, registry.ErrNoActivation) {
		return nil, nil
	}
	return act, err
}

func (a *policiesAPI) push(c echo.Context) error {
	var body policiesPushBody
	if err := policiesDecode(c, &body, policiesMaxBundleBody); err != nil {
		return policiesFail(c, err)
	}
	if len(body.Files) == 0 {
		return policiesFail(c, policiesBad("files is required: an object of path to Rego source, e.g. {\"exchange.rego\": \"package mandate.exchange ...\"}"))
	}
	rec, err := a.reg.Push(c.Request().Context(), body.Files, policiesAdminActor, body.Version)
	if err != nil {
		return policiesFail(c, err)
	}
	out := policiesBundleWire(rec, "")
	out.Files = nil // the caller sent them
	c.Response().Header().Set(echo.HeaderLocation, strings.TrimSuffix(c.Request().URL.Path, "/")+"/"+url.PathEscape(rec.Version))
	return policiesJSON(c, http.StatusCreated, out)
}

func (a *policiesAPI) list(c echo.Context) error {
	ctx := c.Request().Context()
	recs, err := a.reg.List(ctx)
	if err != nil {
		return policiesFail(c, err)
	}
	act, err := a.activeVersion(ctx)
	if err != nil {
		return policiesFail(c, err)
	}
	history, err := a.reg.Activations(ctx, 20)
	if err != nil {
		return policiesFail(c, err)
	}
	active := ""
	var wireAct *policiesWireActivation
	if act != nil {
		active = act.Version
		w := policiesActivationWire(act)
		wireAct = &w
	}
	bundles := make([]policiesWireBundle, 0, len(recs))
	for i := range recs {
		bundles = append(bundles, policiesBundleWire(&recs[i], active))
	}
	acts := make([]policiesWireActivation, 0, len(history))
	for i := range history {
		acts = append(acts, policiesActivationWire(&history[i]))
	}
	node := map[string]string{"version": "", "sha256": ""}
	if b := a.eng.Active(); b != nil {
		node["version"], node["sha256"] = b.Version, b.Digest
	}
	return policiesJSON(c, http.StatusOK, map[string]any{
		"active": wireAct, "node": node, "bundles": bundles, "activations": acts,
	})
}

// version reads the :version path parameter. Versions never hold '%', so
// unescaping is safe whether or not the router already did.
func policiesVersion(c echo.Context) (string, error) {
	v, err := url.PathUnescape(c.Param("version"))
	if err != nil {
		return "", policiesBad("the version in the path is not valid URL escaping")
	}
	return v, nil
}

func (a *policiesAPI) get(c echo.Context) error {
	ctx := c.Request().Context()
	v, err := policiesVersion(c)
	if err != nil {
		return policiesFail(c, err)
	}
	rec, err := a.reg.Get(ctx, v)
	if err != nil {
		return policiesFail(c, err)
	}
	act, err := a.activeVersion(ctx)
	if err != nil {
		return policiesFail(c, err)
	}
	active := ""
	if act != nil {
		active = act.Version
	}
	return policiesJSON(c, http.StatusOK, policiesBundleWire(rec, active))
}

func (a *policiesAPI) activate(c echo.Context) error {
	v, err := policiesVersion(c)
	if err != nil {
		return policiesFail(c, err)
	}
	act, err := a.reg.Activate(c.Request().Context(), v, policiesAdminActor)
	if err != nil {
		return policiesFail(c, err)
	}
	a.applyLocally(act)
	return policiesJSON(c, http.StatusOK, policiesActivationWire(act))
}

func (a *policiesAPI) rollback(c echo.Context) error {
	act, err := a.reg.Rollback(c.Request().Context(), policiesAdminActor)
	if err != nil {
		return policiesFail(c, err)
	}
	a.applyLocally(act)
	return policiesJSON(c, http.StatusOK, policiesActivationWire(act))
}

// applyLocally runs an activation on this node's engine when no Syncer
// does: with one, the registry has applied it already, in seq order.
func (a *policiesAPI) applyLocally(act *registry.Activation) {
	if !a.reg.Syncs(a.eng) && act.Bundle != nil {
		a.eng.Activate(act.Bundle)
	}
}

func (a *policiesAPI) eval(c echo.Context) error {
	ctx := c.Request().Context()
	var body policiesEvalBody
	if err := policiesDecode(c, &body, policiesMaxEvalBody); err != nil {
		return policiesFail(c, err)
	}
	if body.Input == nil {
		return policiesFail(c, policiesBad("input is required: the policy input document (see docs/policy-lifecycle.md)"))
	}
	if body.Input.Version == "" {
		body.Input.Version = policies.InputVersion
	}
	b := a.eng.Active()
	if body.Version != "" {
		var err error
		if b, err = a.reg.Bundle(ctx, body.Version); err != nil {
			return policiesFail(c, err)
		}
	}
	if b == nil {
		c.Response().Header().Set("Retry-After", "1")
		return APIError(c, http.StatusServiceUnavailable, "temporarily_unavailable", "this node has no active policy bundle; name a version")
	}
	d, err := b.Decide(ctx, body.Input)
	if errors.Is(err, policies.ErrInvalidInput) {
		return APIError(c, http.StatusBadRequest, "invalid_request", strings.TrimPrefix(err.Error(), "policies: "))
	}
	out := policiesWireEval{BundleVersion: b.Version, Allow: d.Allow, Reasons: d.Reasons, Scopes: d.Scopes, Claims: d.Claims,
		MaxLifetimeSeconds: int64(d.MaxLifetime / time.Second), EvalUS: d.EvalDuration.Microseconds()}
	if err != nil {
		if ctx.Err() != nil {
			return policiesFail(c, ctx.Err())
		}
		out.Allow, out.Error = false, strings.TrimPrefix(err.Error(), "policies: ")
	}
	if out.Reasons == nil {
		out.Reasons = []string{}
	}
	return policiesJSON(c, http.StatusOK, out)
}

func (a *policiesAPI) simulate(c echo.Context) error {
	ctx := c.Request().Context()
	var body policiesSimulateBody
	if err := policiesDecode(c, &body, policiesMaxBundleBody); err != nil {
		return policiesFail(c, err)
	}
	since := time.Now().Add(-24 * time.Hour)
	if body.Since != "" {
		var err error
		if since, err = policiesParseSince("since", body.Since); err != nil {
			return policiesFail(c, err)
		}
	}
	if body.Limit < 0 || body.Limit > decisionlog.MaxSimulateLimit {
		return policiesFail(c, policiesBad("limit must be between 1 and %d (0: %d)", decisionlog.MaxSimulateLimit, decisionlog.DefaultSimulateLimit))
	}
	var (
		candidate *policies.Bundle
		report    *policies.TestReport
	)
	switch {
	case len(body.Files) > 0 && body.Version != "":
		return policiesFail(c, policiesBad("send either files (a candidate bundle) or version (a pushed bundle), not both"))
	case len(body.Files) > 0:
		files := body.Files
		name := "candidate-" + registry.Digest(files)[:8]
		b, err := policies.Compile(ctx, name, files)
		if err != nil {
			if ctx.Err() != nil {
				return policiesFail(c, ctx.Err())
			}
			return policiesInvalid(c, &registry.InvalidBundleError{Version: name, Problems: policiesProblems(err)})
		}
		// The tests are reported, not required: a simulation is how a
		// team sees what a change does before fixing its tests.
		tctx, cancel := context.WithTimeout(ctx, policiesSimulateTestsTimeout)
		rep, err := policies.RunTests(tctx, b)
		cancel()
		if err == nil {
			report = &rep
		}
		candidate = b
	case body.Version != "":
		b, err := a.reg.Bundle(ctx, body.Version)
		if err != nil {
			return policiesFail(c, err)
		}
		candidate = b
	default:
		return policiesFail(c, policiesBad("files (a candidate bundle) or version (a pushed bundle) is required"))
	}
	sctx, cancel := context.WithTimeout(ctx, policiesSimulateTimeout)
	defer cancel()
	rep, err := a.log.Simulate(sctx, candidate, since, body.Limit)
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		return APIError(c, http.StatusServiceUnavailable, "temporarily_unavailable",
			fmt.Sprintf("the simulation took longer than %s; lower limit or since", policiesSimulateTimeout))
	}
	if err != nil {
		return policiesFail(c, err)
	}
	return policiesJSON(c, http.StatusOK, map[string]any{"report": rep, "changed": rep.Changed(), "test_report": report})
}

// policiesProblems lists a compile error's problems for a response.
func policiesProblems(err error) []registry.Problem {
	var ce *policies.CompileError
	if !errors.As(err, &ce) {
		return []registry.Problem{{Message: strings.TrimPrefix(err.Error(), "policies: ")}}
	}
	out := make([]registry.Problem, 0, len(ce.Problems))
	for _, p := range ce.Problems {
		out = append(out, registry.Problem{File: p.File, Line: p.Row, Col: p.Col, Code: p.Code, Message: p.Message})
	}
	return out
}

var policiesDecisionParams = map[string]bool{
	"client_id": true, "subject": true, "result": true, "since": true, "until": true, "limit": true, "before": true, "include_input": true,
}

func (a *policiesAPI) decisions(c echo.Context) error {
	q := c.QueryParams()
	for k, v := range q {
		if !policiesDecisionParams[k] {
			return policiesFail(c, policiesBad("unknown query parameter %q (want client_id, subject, result, since, until, limit, before, include_input)", policiesTruncate(k)))
		}
		if len(v) > 1 {
			return policiesFail(c, policiesBad("query parameter %s is given more than once", k))
		}
	}
	f := decisionlog.Filter{ClientID: q.Get("client_id"), Subject: q.Get("subject")}
	switch r := q.Get("result"); r {
	case "":
	case "allow":
		f.Allowed = new(bool)
		*f.Allowed = true
	case "deny":
		f.Allowed = new(bool)
	default:
		return policiesFail(c, policiesBad("result must be allow or deny"))
	}
	var err error
	if s := q.Get("since"); s != "" {
		if f.Since, err = policiesParseSince("since", s); err != nil {
			return policiesFail(c, err)
		}
	}
	if s := q.Get("until"); s != "" {
		if f.Until, err = policiesParseSince("until", s); err != nil {
			return policiesFail(c, err)
		}
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > decisionlog.MaxLimit {
			return policiesFail(c, policiesBad("limit must be a number between 1 and %d", decisionlog.MaxLimit))
		}
		f.Limit = n
	}
	if s := q.Get("before"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 1 {
			return policiesFail(c, policiesBad("before must be a decision id"))
		}
		f.BeforeID = n
	}
	switch s := q.Get("include_input"); s {
	case "", "false":
	case "true":
		f.IncludeInput = true
	default:
		return policiesFail(c, policiesBad("include_input must be true or false"))
	}
	entries, err := a.log.Query(c.Request().Context(), f)
	if err != nil {
		return policiesFail(c, err)
	}
	out := make([]policiesWireDecision, 0, len(entries))
	for _, e := range entries {
		result := "deny"
		if e.Allowed {
			result = "allow"
		}
		out = append(out, policiesWireDecision{
			ID: e.ID, At: e.At.UTC().Format(time.RFC3339Nano), ClientID: e.ClientID, Subject: e.Subject, SubjectIssuer: e.SubjectIssuer,
			Actors: e.Actors, GrantID: e.GrantID, GrantType: e.GrantType, Requested: e.Requested, Audiences: e.Audiences,
			Result: result, Reasons: e.Reasons, Issued: e.Issued, Error: e.Error, BundleVersion: e.BundleVersion,
			EvalUS: e.EvalDuration.Microseconds(), Input: e.Input,
		})
	}
	resp := map[string]any{"decisions": out}
	limit := f.Limit
	if limit == 0 {
		limit = decisionlog.DefaultLimit
	}
	if len(entries) == limit {
		resp["next_before"] = entries[len(entries)-1].ID
	}
	return policiesJSON(c, http.StatusOK, resp)
}

// policiesParseSince reads a time: a Go duration back from now ("24h",
// "90m") or an RFC 3339 time.
func policiesParseSince(field, s string) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 || d > policiesMaxSince {
			return time.Time{}, policiesBad("%s must be a duration between 0 and %s", field, policiesMaxSince)
		}
		return time.Now().Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, policiesBad("%s must be a duration back from now (24h, 90m) or an RFC 3339 time", field)
	}
	return t, nil
}

func policiesTruncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

// policiesHTTPError is a response decided before reaching the registry.
type policiesHTTPError struct {
	status int
	code   string
	desc   string
}

func (e *policiesHTTPError) Error() string { return e.code + ": " + e.desc }

func policiesBad(format string, args ...any) error {
	return &policiesHTTPError{status: http.StatusBadRequest, code: "invalid_request", desc: fmt.Sprintf(format, args...)}
}

// policiesDecode reads exactly one JSON object of at most limit bytes into
// dst, refusing unknown fields anywhere (the policy input included).
// Numbers stay exact (claims may hold large integers).
func policiesDecode(c echo.Context, dst any, limit int64) error {
	if be := decodeJSONBody(c, dst, jsonBody{limit: limit, useNumber: true,
		tooLarge: fmt.Sprintf("the body is larger than %d KiB (a bundle holds at most %d KiB of source)", limit>>10, policies.MaxBundleBytes>>10)}); be != nil {
		return &policiesHTTPError{status: be.status, code: "invalid_request", desc: be.desc}
	}
	return nil
}

func policiesJSON(c echo.Context, status int, v any) error {
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.JSON(status, v)
}

// policiesInvalid answers 400 invalid_policy for a refused bundle.
func policiesInvalid(c echo.Context, bad *registry.InvalidBundleError) error {
	problems := bad.Problems
	if problems == nil {
		problems = []registry.Problem{}
	}
	failed := bad.FailedTests
	if failed == nil {
		failed = []registry.FailedTest{}
	}
	out := map[string]any{
		"error": "invalid_policy", "error_description": bad.Summary(), "version": bad.Version,
		"problems": problems, "failed_tests": failed,
	}
	if bad.Report != nil {
		out["test_report"] = bad.Report
	}
	return policiesJSON(c, http.StatusBadRequest, out)
}

// policiesFail maps an error to its response; nothing that bad input can
// cause becomes a 500.
func policiesFail(c echo.Context, err error) error {
	var (
		herr *policiesHTTPError
		bad  *registry.InvalidBundleError
	)
	ctx := c.Request().Context()
	switch {
	case errors.As(err, &herr):
		return APIError(c, herr.status, herr.code, herr.desc)
	case errors.As(err, &bad):
		return policiesInvalid(c, bad)
	case errors.Is(err, registry.ErrInvalidVersion):
		msg := err.Error()
		if i := strings.LastIndex(msg, "registry: "); i >= 0 {
			msg = msg[i+len("registry: "):]
		}
		return APIError(c, http.StatusBadRequest, "invalid_request", msg)
	case errors.Is(err, registry.ErrNotFound):
		return APIError(c, http.StatusNotFound, "not_found", "no policy bundle of that version is stored")
	case errors.Is(err, registry.ErrNothingToRollBack), errors.Is(err, registry.ErrNoActivation):
		return APIError(c, http.StatusConflict, "conflict", "there is no earlier bundle to roll back to")
	case errors.Is(err, registry.ErrConflict):
		return APIError(c, http.StatusConflict, "conflict", "a bundle of that version already exists; versions are immutable, push under a new one")
	case errors.Is(err, db.ErrUnavailable):
		slog.WarnContext(ctx, "policy API: unavailable", slog.Any("err", err))
		c.Response().Header().Set("Retry-After", "1")
		return APIError(c, http.StatusServiceUnavailable, "temporarily_unavailable", "the policy store is unavailable; retry")
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		slog.WarnContext(ctx, "policy API: out of time", slog.Any("err", err))
		c.Response().Header().Set("Retry-After", "1")
		return APIError(c, http.StatusServiceUnavailable, "temporarily_unavailable",
			"the request ran out of time (compiling and testing a large bundle takes a while, or the store is slow); retry")
	}
	slog.ErrorContext(ctx, "policy API: request failed", slog.String("path", c.Request().URL.Path), slog.Any("err", err))
	return APIError(c, http.StatusInternalServerError, "server_error", "the server could not complete the request")
}
