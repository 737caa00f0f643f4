package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/mandate-dev/mandate/internal/loadgen"
)

func init() { extraCommands = append(extraCommands, newBenchCmd) }

// The bench fixture: what setup registers and what the scenarios ask for.
const (
	benchAgentPrefix = "bench-agent-"
	benchUserPrefix  = "bench-user-"
	benchAudience    = "https://api.bench.example"
	benchScope       = "mail:read"
	// benchSetupWorkers bounds setup's concurrent admin calls.
	benchSetupWorkers = 8
	// benchStateVersion is the state file's format version.
	benchStateVersion = 1
)

// benchScopes are the scopes the agents are registered for, the users' tokens
// carry and the grants allow.
var benchScopes = []string{"mail:read", "files:read"}

// Scenario names.
const (
	scenarioExchange          = "exchange"
	scenarioClientCredentials = "client-credentials"
	scenarioValidate          = "validate"
	scenarioCustom            = "custom"
)

var benchScenarios = []string{scenarioExchange, scenarioClientCredentials, scenarioValidate, scenarioCustom}

// benchOpts are the flags of `mandate bench` and `mandate bench setup`.
type benchOpts struct {
	agents, users int
	state         string
	userTTL       time.Duration
	allowRemote   bool

	scenarios   []string
	concurrency int
	duration    time.Duration
	warmup      time.Duration
	rate        int
	maxRequests uint64
	timeout     time.Duration
	pool        int

	target string
	form   string
	basic  string
}

func (o *benchOpts) setupFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.IntVar(&o.agents, "agents", 50, "agents to register (ids "+benchAgentPrefix+"<i>)")
	f.IntVar(&o.users, "users", 1000, "users to mint tokens for and grant (subjects "+benchUserPrefix+"<j>, user j → agent j % agents)")
	f.StringVar(&o.state, "state", "", "file keeping the agents' secrets between runs (written 0600; without it, existing agents get a new secret)")
	f.DurationVar(&o.userTTL, "user-ttl", time.Hour, "lifetime of the minted user tokens (at most 24h; raised to cover the run)")
	f.BoolVar(&o.allowRemote, "allow-remote", false, "allow a target that is not a loopback address")
}

func newBenchCmd(g *globals) *cobra.Command {
	o := &benchOpts{}
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Load-test a mandate (or a peer's token endpoint): throughput, latency percentiles, errors",
		Long: `bench registers its agents, users and grants on a dev-mode mandate (idempotent; not
measured), then drives one or more scenarios and reports throughput, latency
percentiles, the status histogram and the most frequent errors.

Scenarios (--scenario, comma-separated to run several in turn):
  exchange            RFC 8693 exchange of a random user's token by its agent
  client-credentials  a random agent's client_credentials token
  validate            GET /validate with a pool of delegated tokens (404 = the server has no /validate)
  custom              POST --form to --target (any server's token endpoint), optionally --basic id:secret

Targets must be loopback addresses unless --allow-remote is given. See docs/performance.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt)
			defer stop()
			return runBench(ctx, g, o, cmd.ErrOrStderr(), cmd.OutOrStdout())
		},
	}
	o.setupFlags(cmd)
	f := cmd.Flags()
	f.StringSliceVar(&o.scenarios, "scenario", []string{scenarioExchange}, "scenario(s): "+strings.Join(benchScenarios, ", "))
	f.IntVar(&o.concurrency, "concurrency", 32, "workers: requests in flight (closed loop) or at most in flight (open loop)")
	f.DurationVar(&o.duration, "duration", 15*time.Second, "measured time per scenario")
	f.DurationVar(&o.warmup, "warmup", 2*time.Second, "unmeasured load before each scenario")
	f.IntVar(&o.rate, "rate", 0, "open loop at this many requests per second; 0 = closed loop")
	f.Uint64Var(&o.maxRequests, "max-requests", loadgen.DefaultMaxRequests, "cap on measured requests per scenario")
	f.DurationVar(&o.timeout, "timeout", loadgen.DefaultTimeout, "per-request timeout")
	f.IntVar(&o.pool, "pool", 200, "validate: delegated tokens to obtain first (at most --users)")
	f.StringVar(&o.target, "target", "", "custom: the URL to POST to")
	f.StringVar(&o.form, "form", "", "custom: the form body, k=v&k2=v2 (URL-encoded)")
	// The env default is read at run time, so that --help never prints it.
	f.StringVar(&o.basic, "basic", "", "custom: id:secret for HTTP Basic client authentication (env MANDATE_BENCH_BASIC keeps it off the command line)")

	setup := &cobra.Command{
		Use:   "setup",
		Short: "Register the bench agents, users' grants and (with --state) keep the agents' secrets; idempotent",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt)
			defer stop()
			if err := o.checkSetup(); err != nil {
				return err
			}
			fx, err := benchSetup(ctx, g, o, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(fx.summary)
			}
			fmt.Fprintln(cmd.OutOrStdout(), fx.summary.line())
			return nil
		},
	}
	o.setupFlags(setup)
	cmd.AddCommand(setup)
	return cmd
}

func (o *benchOpts) checkSetup() error {
	switch {
	case o.agents < 1 || o.agents > 10_000:
		return fmt.Errorf("--agents %d: must be 1 to 10000", o.agents)
	case o.users < 1 || o.users > 1_000_000:
		return fmt.Errorf("--users %d: must be 1 to 1000000", o.users)
	case o.userTTL <= 0 || o.userTTL > 24*time.Hour:
		return fmt.Errorf("--user-ttl %s: must be above 0 and at most 24h", o.userTTL)
	}
	return nil
}

// runBench is `mandate bench`: setup when a scenario needs it, then each scenario in turn.
func runBench(ctx context.Context, g *globals, o *benchOpts, stderr, stdout io.Writer) error {
	scenarios := splitList(o.scenarios)
	if len(scenarios) == 0 {
		return errors.New("--scenario: name at least one of " + strings.Join(benchScenarios, ", "))
	}
	needSetup := false
	for _, s := range scenarios {
		if !slices.Contains(benchScenarios, s) {
			return fmt.Errorf("--scenario %q: want one of %s", s, strings.Join(benchScenarios, ", "))
		}
		needSetup = needSetup || s != scenarioCustom
	}
	if o.maxRequests == 0 {
		return errors.New("--max-requests must be at least 1")
	}
	lo := loadgen.Options{
		Concurrency: o.concurrency, Rate: o.rate, Duration: o.duration, Warmup: o.warmup,
		MaxRequests: o.maxRequests, Timeout: o.timeout, AllowRemote: o.allowRemote,
	}
	if err := lo.Validate(); err != nil {
		return err
	}
	var custom []loadgen.Target
	if slices.Contains(scenarios, scenarioCustom) {
		t, err := o.customTarget()
		if err != nil {
			return err
		}
		if err := loadgen.CheckTarget(ctx, t.URL, o.allowRemote); err != nil {
			return fmt.Errorf("--target: %w", err)
		}
		custom = []loadgen.Target{t}
	}

	out := benchOutput{Results: []*loadgen.Report{}}
	var fx *benchFixture
	if needSetup {
		if err := o.checkSetup(); err != nil {
			return err
		}
		// User tokens must outlive the whole run (warmups included), with room to spare.
		run := time.Duration(len(scenarios)) * (o.warmup + o.duration)
		o.userTTL = min(max(o.userTTL, run+10*time.Minute), 24*time.Hour)
		var err error
		if fx, err = benchSetup(ctx, g, o, stderr); err != nil {
			return err
		}
		out.URL, out.Setup = strings.TrimRight(g.url, "/"), &fx.summary
		fmt.Fprintln(stderr, "bench: "+fx.summary.line())
	}

	for _, s := range scenarios {
		var targets []loadgen.Target
		switch s {
		case scenarioExchange:
			targets = fx.exchangeTargets(g.url)
		case scenarioClientCredentials:
			targets = fx.clientCredentialsTargets(g.url)
		case scenarioValidate:
			var err error
			if targets, err = fx.validateTargets(ctx, g, o.pool, stderr); err != nil {
				return err
			}
			if o.warmup+o.duration > 9*time.Minute {
				fmt.Fprintln(stderr, "bench: note: delegated tokens live 10 minutes by default; a longer validate run sees them expire")
			}
		case scenarioCustom:
			targets = custom
		}
		fmt.Fprintf(stderr, "bench: %s: %s, %s after %s warmup against %s\n", s, loopShape(o), o.duration, o.warmup, targetHost(targets))
		rep, err := loadgen.Run(ctx, s, targets, lo)
		if err != nil {
			return fmt.Errorf("bench %s: %w", s, err)
		}
		out.Results = append(out.Results, rep)
		if !g.json {
			if err := rep.WriteText(stdout); err != nil {
				return err
			}
		}
		if s == scenarioValidate && rep.StatusCodes["404"] > 0 {
			fmt.Fprintln(stderr, "bench: validate: the server answered 404: it does not serve GET /validate (see docs/edge.md); those requests are counted as errors")
		}
		if rep.Interrupted {
			break
		}
	}
	if g.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	return nil
}

// benchOutput is the --json document.
type benchOutput struct {
	URL     string            `json:"url,omitempty"`
	Setup   *benchSummary     `json:"setup,omitempty"`
	Results []*loadgen.Report `json:"results"`
}

func loopShape(o *benchOpts) string {
	if o.rate > 0 {
		return fmt.Sprintf("open loop at %d req/s, at most %d in flight", o.rate, o.concurrency)
	}
	return fmt.Sprintf("closed loop, concurrency %d", o.concurrency)
}

func targetHost(ts []loadgen.Target) string {
	if len(ts) == 0 {
		return "nothing"
	}
	u, err := url.Parse(ts[0].URL)
	if err != nil {
		return "?"
	}
	return u.Scheme + "://" + u.Host + u.Path
}

// customTarget builds the custom scenario's one request.
func (o *benchOpts) customTarget() (loadgen.Target, error) {
	if o.target == "" {
		return loadgen.Target{}, errors.New("the custom scenario needs --target URL (and usually --form)")
	}
	vals, err := url.ParseQuery(o.form)
	if err != nil {
		return loadgen.Target{}, fmt.Errorf("--form: %w", err)
	}
	h := http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}
	basic := o.basic
	if basic == "" {
		basic = os.Getenv("MANDATE_BENCH_BASIC")
	}
	if basic != "" {
		id, secret, ok := strings.Cut(basic, ":")
		if !ok || id == "" {
			return loadgen.Target{}, errors.New("--basic: want client_id:client_secret")
		}
		h.Set("Authorization", basicAuth(id, secret))
	}
	return loadgen.Target{Method: http.MethodPost, URL: o.target, Header: h, Body: []byte(vals.Encode())}, nil
}

// basicAuth is client_secret_basic: RFC 6749 §2.3.1 form-encodes the id and
// secret before they are joined and base64-encoded.
func basicAuth(id, secret string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(id)+":"+url.QueryEscape(secret)))
}

// benchAgent is a registered bench agent and its secret.
type benchAgent struct {
	id, secret string
}

// benchFixture is what setup leaves: agents with secrets, and one token per user.
type benchFixture struct {
	agents  []benchAgent
	users   []string // users[j] is bench-user-j's token; its agent is agents[j % len(agents)]
	summary benchSummary
}

// benchSummary reports what setup did; it holds no secret.
type benchSummary struct {
	Issuer         string  `json:"user_issuer"`
	Agents         int     `json:"agents"`
	AgentsCreated  int     `json:"agents_created"`
	SecretsReused  int     `json:"secrets_reused"`
	SecretsRotated int     `json:"secrets_rotated"`
	Users          int     `json:"users"`
	Grants         int     `json:"grants"`
	GrantsCreated  int     `json:"grants_created"`
	Seconds        float64 `json:"seconds"`
	StateFile      string  `json:"state_file,omitempty"`
}

func (s benchSummary) line() string {
	return fmt.Sprintf("setup: %d agents (%d created, %d secrets from state, %d rotated), %d user tokens, %d grants (%d created) in %.1fs",
		s.Agents, s.AgentsCreated, s.SecretsReused, s.SecretsRotated, s.Users, s.Grants, s.GrantsCreated, s.Seconds)
}

func (fx *benchFixture) agentFor(user int) benchAgent { return fx.agents[user%len(fx.agents)] }

func tokenURL(base string) string { return strings.TrimRight(base, "/") + "/oauth2/token" }

// exchangeTargets is one token-exchange request per user, made by its agent.
func (fx *benchFixture) exchangeTargets(base string) []loadgen.Target {
	out := make([]loadgen.Target, len(fx.users))
	for j, tok := range fx.users {
		a := fx.agentFor(j)
		body := url.Values{
			"grant_type":         {grantTokenExchange},
			"subject_token":      {tok},
			"subject_token_type": {tokenTypeAccess},
			"scope":              {benchScope},
			"resource":           {benchAudience},
		}
		out[j] = loadgen.Target{
			Method: http.MethodPost, URL: tokenURL(base), Body: []byte(body.Encode()),
			Header: http.Header{"Content-Type": {"application/x-www-form-urlencoded"}, "Authorization": {basicAuth(a.id, a.secret)}},
		}
	}
	return out
}

// clientCredentialsTargets is one client_credentials request per agent.
func (fx *benchFixture) clientCredentialsTargets(base string) []loadgen.Target {
	body := []byte(url.Values{"grant_type": {"client_credentials"}, "scope": {benchScope}, "audience": {benchAudience}}.Encode())
	out := make([]loadgen.Target, len(fx.agents))
	for i, a := range fx.agents {
		out[i] = loadgen.Target{
			Method: http.MethodPost, URL: tokenURL(base), Body: body,
			Header: http.Header{"Content-Type": {"application/x-www-form-urlencoded"}, "Authorization": {basicAuth(a.id, a.secret)}},
		}
	}
	return out
}

// validateTargets exchanges the first pool users' tokens for delegated tokens
// (not measured) and builds one GET /validate per token.
func (fx *benchFixture) validateTargets(ctx context.Context, g *globals, pool int, stderr io.Writer) ([]loadgen.Target, error) {
	pool = min(max(pool, 1), len(fx.users))
	toks := make([]string, pool)
	err := parallel(ctx, pool, func(j int) error {
		a := fx.agentFor(j)
		var out struct {
			AccessToken string `json:"access_token"`
		}
		v := url.Values{
			"grant_type": {grantTokenExchange}, "subject_token": {fx.users[j]}, "subject_token_type": {tokenTypeAccess},
			"scope": {benchScope}, "resource": {benchAudience},
		}
		if err := g.form("/oauth2/token", v, a.id, a.secret, &out); err != nil {
			return fmt.Errorf("bench validate: exchange for %s%d: %w", benchUserPrefix, j, err)
		}
		if out.AccessToken == "" {
			return fmt.Errorf("bench validate: exchange for %s%d: no access_token in the answer", benchUserPrefix, j)
		}
		toks[j] = out.AccessToken
		return nil
	})
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(stderr, "bench: validate: %d delegated tokens obtained\n", pool)
	u := strings.TrimRight(g.url, "/") + "/validate?" + url.Values{"aud": {benchAudience}, "scope": {benchScope}}.Encode()
	out := make([]loadgen.Target, pool)
	for i, t := range toks {
		out[i] = loadgen.Target{Method: http.MethodGet, URL: u, Header: http.Header{"Authorization": {"Bearer " + t}}}
	}
	return out, nil
}

// benchSetup registers the agents, mints the user tokens and creates the
// grants, reusing whatever already exists, so it can run again and again.
func benchSetup(ctx context.Context, g *globals, o *benchOpts, stderr io.Writer) (*benchFixture, error) {
	start := time.Now()
	if err := loadgen.CheckTarget(ctx, g.url, o.allowRemote); err != nil {
		return nil, fmt.Errorf("--url: %w", err)
	}
	if g.adminKey == "" {
		return nil, errors.New("bench setup needs the admin key: set MANDATE_ADMIN_KEY or pass --admin-key")
	}
	st, err := loadBenchState(o.state, g.url)
	if err != nil {
		return nil, err
	}
	fx := &benchFixture{agents: make([]benchAgent, o.agents), users: make([]string, o.users)}
	sum := &fx.summary
	sum.Agents, sum.Users, sum.StateFile = o.agents, o.users, o.state

	// Agents.
	var created, reused, rotated atomic.Int64
	err = parallel(ctx, o.agents, func(i int) error {
		id := fmt.Sprintf("%s%d", benchAgentPrefix, i)
		secret, how, err := ensureBenchAgent(g, id, i, st.Agents[id])
		if err != nil {
			return err
		}
		switch how {
		case "created":
			created.Add(1)
		case "reused":
			reused.Add(1)
		case "rotated":
			rotated.Add(1)
		}
		fx.agents[i] = benchAgent{id: id, secret: secret}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sum.AgentsCreated, sum.SecretsReused, sum.SecretsRotated = int(created.Load()), int(reused.Load()), int(rotated.Load())
	if o.state != "" {
		for _, a := range fx.agents {
			st.Agents[a.id] = a.secret
		}
		if err := st.save(o.state); err != nil {
			return nil, err
		}
	}
	fmt.Fprintf(stderr, "bench: setup: %d agents ready (%d created)\n", o.agents, sum.AgentsCreated)

	// User tokens, from the dev issuer.
	var issuer atomic.Value
	err = parallel(ctx, o.users, func(j int) error {
		var out struct {
			AccessToken string `json:"access_token"`
			Issuer      string `json:"issuer"`
		}
		body := map[string]any{"sub": fmt.Sprintf("%s%d", benchUserPrefix, j), "scope": strings.Join(benchScopes, " "), "ttl_seconds": int64(o.userTTL / time.Second)}
		if err := g.adminCall("POST", "/dev/user-token", body, &out); err != nil {
			var ae *apiError
			if errors.As(err, &ae) && ae.Status == http.StatusNotFound {
				return errors.New("bench setup: the server has no dev issuer: start it with `mandate serve --dev`")
			}
			return fmt.Errorf("bench setup: user token for %s%d: %w", benchUserPrefix, j, err)
		}
		if out.AccessToken == "" || out.Issuer == "" {
			return fmt.Errorf("bench setup: user token for %s%d: unexpected answer", benchUserPrefix, j)
		}
		fx.users[j] = out.AccessToken
		issuer.CompareAndSwap(nil, out.Issuer)
		return nil
	})
	if err != nil {
		return nil, err
	}
	sum.Issuer = issuer.Load().(string)
	fmt.Fprintf(stderr, "bench: setup: %d user tokens minted\n", o.users)

	// Grants: user j → agent j % agents. List each agent's active grants once,
	// create the missing ones; a 409 (a grant made meanwhile) is one to reuse.
	have := make([]map[string]bool, o.agents)
	err = parallel(ctx, o.agents, func(i int) error {
		var err error
		have[i], err = benchGrantsOf(g, fx.agents[i].id, sum.Issuer)
		return err
	})
	if err != nil {
		return nil, err
	}
	var grantsCreated atomic.Int64
	expires := time.Now().Add(30 * 24 * time.Hour).UTC().Format(time.RFC3339)
	err = parallel(ctx, o.users, func(j int) error {
		sub, agent := fmt.Sprintf("%s%d", benchUserPrefix, j), fx.agentFor(j).id
		if have[j%o.agents][sub] {
			return nil
		}
		body := map[string]any{
			"user_issuer": sum.Issuer, "user_subject": sub, "client_id": agent,
			"scopes": benchScopes, "resources": []string{benchAudience}, "expires_at": expires,
		}
		if err := g.adminCall("POST", "/grants", body, nil); err != nil {
			var ae *apiError
			if errors.As(err, &ae) && ae.Status == http.StatusConflict {
				return nil
			}
			return fmt.Errorf("bench setup: grant %s → %s: %w", sub, agent, err)
		}
		grantsCreated.Add(1)
		return nil
	})
	if err != nil {
		return nil, err
	}
	sum.Grants, sum.GrantsCreated = o.users, int(grantsCreated.Load())
	sum.Seconds = time.Since(start).Seconds()
	return fx, nil
}

// ensureBenchAgent registers agent id, or brings an existing one back to the
// bench's settings, and returns a secret that works: the one known from the
// state file if the server accepts it, else a rotated one. how is "created",
// "reused" or "rotated".
func ensureBenchAgent(g *globals, id string, i int, known string) (secret, how string, err error) {
	grantTypes := []string{grantTokenExchange, "client_credentials"}
	var out struct {
		ClientSecret string `json:"client_secret"`
		AuthMethod   string `json:"token_endpoint_auth_method"`
	}
	body := map[string]any{
		"client_id": id, "name": fmt.Sprintf("mandate bench agent %d", i), "type": "agent",
		"token_endpoint_auth_method": "client_secret_basic", "grant_types": grantTypes,
		"scopes": benchScopes, "audiences": []string{benchAudience},
	}
	err = g.adminCall("POST", "/clients", body, &out)
	if err == nil {
		if out.ClientSecret == "" {
			return "", "", fmt.Errorf("bench setup: register %s: no client_secret in the answer", id)
		}
		return out.ClientSecret, "created", nil
	}
	var ae *apiError
	if !errors.As(err, &ae) || ae.Status != http.StatusConflict {
		return "", "", fmt.Errorf("bench setup: register %s: %w", id, err)
	}
	// It exists: make sure it can do what the scenarios ask.
	patch := map[string]any{"grant_types": grantTypes, "scopes": benchScopes, "audiences": []string{benchAudience}, "disabled": false}
	if err := g.adminCall("PATCH", "/clients/"+url.PathEscape(id), patch, &out); err != nil {
		return "", "", fmt.Errorf("bench setup: update %s: %w", id, err)
	}
	if out.AuthMethod != "client_secret_basic" {
		return "", "", fmt.Errorf("bench setup: %s exists with %s authentication; delete it (mandate client delete %s) and run again", id, out.AuthMethod, id)
	}
	if known != "" {
		// Introspecting a junk token authenticates the client and changes nothing.
		err := g.form("/oauth2/introspect", url.Values{"token": {"bench-probe"}}, id, known, nil)
		if err == nil {
			return known, "reused", nil
		}
		if !errors.As(err, &ae) || ae.Status != http.StatusUnauthorized {
			return "", "", fmt.Errorf("bench setup: check %s's secret: %w", id, err)
		}
	}
	var rot struct {
		ClientSecret string `json:"client_secret"`
	}
	if err := g.adminCall("POST", "/clients/"+url.PathEscape(id)+"/rotate-secret", nil, &rot); err != nil {
		return "", "", fmt.Errorf("bench setup: rotate %s's secret: %w", id, err)
	}
	if rot.ClientSecret == "" {
		return "", "", fmt.Errorf("bench setup: rotate %s's secret: no client_secret in the answer", id)
	}
	return rot.ClientSecret, "rotated", nil
}

// benchGrantsOf returns the bench users who hold an active grant to agent that
// covers the bench request. A bench user's grant that does not cover it is an
// error: a second grant cannot be created beside it.
func benchGrantsOf(g *globals, agent, issuer string) (map[string]bool, error) {
	var out struct {
		Grants []struct {
			GrantID     string   `json:"grant_id"`
			UserIssuer  string   `json:"user_issuer"`
			UserSubject string   `json:"user_subject"`
			Scopes      []string `json:"scopes"`
			Resources   []string `json:"resources"`
		} `json:"grants"`
	}
	q := url.Values{"client_id": {agent}, "status": {"active"}, "limit": {"1000"}, "user_issuer": {issuer}}
	if err := g.adminCall("GET", "/grants?"+q.Encode(), nil, &out); err != nil {
		return nil, fmt.Errorf("bench setup: list %s's grants: %w", agent, err)
	}
	have := map[string]bool{}
	for _, gr := range out.Grants {
		if gr.UserIssuer != issuer || !strings.HasPrefix(gr.UserSubject, benchUserPrefix) {
			continue
		}
		if !slices.Contains(gr.Scopes, benchScope) || !(slices.Contains(gr.Resources, benchAudience) || slices.Contains(gr.Resources, "*")) {
			return nil, fmt.Errorf("bench setup: grant %s (%s → %s) does not cover %s on %s; revoke it (mandate grant revoke %s) and run again",
				gr.GrantID, gr.UserSubject, agent, benchScope, benchAudience, gr.GrantID)
		}
		have[gr.UserSubject] = true
	}
	return have, nil
}

// benchState is the --state file: the agents' secrets for one server. It
// holds secrets, so it is written 0600 and refused when others can read it.
type benchState struct {
	Version int               `json:"version"`
	URL     string            `json:"url"`
	Agents  map[string]string `json:"agents"` // client_id → client_secret
}

// loadBenchState reads path (empty: no state kept). A missing file, or one for
// another server, starts empty.
func loadBenchState(path, serverURL string) (*benchState, error) {
	serverURL = strings.TrimRight(serverURL, "/")
	st := &benchState{Version: benchStateVersion, URL: serverURL, Agents: map[string]string{}}
	if path == "" {
		return st, nil
	}
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return nil, fmt.Errorf("bench: state file: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("bench: state file %s holds client secrets but is readable by others (mode %04o): chmod 600 it", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("bench: state file: %w", err)
	}
	var got benchState
	if err := json.Unmarshal(b, &got); err != nil {
		return nil, fmt.Errorf("bench: state file %s: %w", path, err)
	}
	if got.Version != benchStateVersion || got.URL != serverURL || got.Agents == nil {
		// Another server's (or format's) secrets are of no use here; they are replaced on save.
		return st, nil
	}
	return &got, nil
}

// save writes the state atomically with mode 0600.
func (st *benchState) save(path string) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("bench: state file: %w", err)
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".mandate-bench-state-*")
	if err != nil {
		return fmt.Errorf("bench: state file: %w", err)
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("bench: state file: %w", err)
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("bench: state file: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("bench: state file: %w", err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("bench: state file: %w", err)
	}
	return nil
}

// parallel runs fn(0..n-1) on benchSetupWorkers goroutines and returns the
// first error; after an error, or once ctx ends, no new call starts.
func parallel(ctx context.Context, n int, fn func(i int) error) error {
	var (
		next    atomic.Int64
		wg      sync.WaitGroup
		errOnce sync.Once
		first   error
		failed  atomic.Bool
	)
	for range min(n, benchSetupWorkers) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || failed.Load() {
					return
				}
				err := ctx.Err()
				if err == nil {
					err = fn(i)
				}
				if err != nil {
					errOnce.Do(func() { first = err })
					failed.Store(true)
					return
				}
			}
		})
	}
	wg.Wait()
	return first
}
