package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mandate-dev/mandate/internal/app/apptest"
	"github.com/mandate-dev/mandate/internal/config"
	"github.com/mandate-dev/mandate/internal/loadgen"
)

// startBenchNode starts a dev-mode mandate in-process on a loopback port, on
// SQLite, the way internal/app's end-to-end tests do, and returns the globals
// a CLI command would have for it.
func startBenchNode(t *testing.T) *globals {
	t.Helper()
	n := apptest.Start(t, apptest.Options{Dev: true, Configure: func(cfg *config.Config, _ string) {
		// A busy test machine can starve a policy evaluation past its deadline;
		// these tests count requests, not deadlines.
		cfg.Policies.EvalTimeout = 5 * time.Second
	}})
	return &globals{url: n.URL, adminKey: n.AdminKey}
}

func smallBench(state string) *benchOpts {
	return &benchOpts{agents: 3, users: 12, state: state, userTTL: time.Hour}
}

// consistentReport checks what holds whatever the timing: every request is a
// success or an error, and the histograms add up.
func consistentReport(t *testing.T, r *loadgen.Report) {
	t.Helper()
	if r.Requests == 0 {
		t.Fatalf("%s: no request was made", r.Scenario)
	}
	if r.Requests != r.Successes+r.Errors {
		t.Errorf("%s: requests %d != successes %d + errors %d", r.Scenario, r.Requests, r.Successes, r.Errors)
	}
	var n uint64
	for _, c := range r.StatusCodes {
		n += c
	}
	if n != r.Requests {
		t.Errorf("%s: status histogram sums to %d, want %d", r.Scenario, n, r.Requests)
	}
}

func TestBenchScenariosAgainstANode(t *testing.T) {
	g := startBenchNode(t)
	ctx := context.Background()
	fx, err := benchSetup(ctx, g, smallBench(""), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if got := fx.summary; got.AgentsCreated != 3 || got.GrantsCreated != 12 || got.Users != 12 || got.Issuer != g.url+"/dev" {
		t.Fatalf("setup: got %+v", got)
	}
	lo := loadgen.Options{Concurrency: 4, Duration: time.Second}

	for name, targets := range map[string][]loadgen.Target{
		scenarioExchange:          fx.exchangeTargets(g.url),
		scenarioClientCredentials: fx.clientCredentialsTargets(g.url),
	} {
		rep, err := loadgen.Run(ctx, name, targets, lo)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		consistentReport(t, rep)
		if rep.Errors != 0 {
			t.Errorf("%s: got %d errors, want none: %+v", name, rep.Errors, rep.TopErrors)
		}
	}

	// custom: the same node's token endpoint, driven as a peer would be.
	a := fx.agents[0]
	custom := &benchOpts{target: g.url + "/oauth2/token", form: "grant_type=client_credentials&scope=mail:read", basic: a.id + ":" + a.secret}
	ct, err := custom.customTarget()
	if err != nil {
		t.Fatal(err)
	}
	rep, err := loadgen.Run(ctx, scenarioCustom, []loadgen.Target{ct}, lo)
	if err != nil {
		t.Fatal(err)
	}
	consistentReport(t, rep)
	if rep.Errors != 0 {
		t.Errorf("custom: got %d errors, want none: %+v", rep.Errors, rep.TopErrors)
	}

	// validate: whether or not this server serves /validate, the counts add up,
	// and a missing endpoint shows as 404 errors rather than as successes.
	vt, err := fx.validateTargets(ctx, g, 5, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(vt) != 5 {
		t.Fatalf("validate pool: got %d targets, want 5", len(vt))
	}
	rep, err = loadgen.Run(ctx, scenarioValidate, vt, lo)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(rep.Line())
	consistentReport(t, rep)
	if n := rep.StatusCodes["404"]; n > 0 && (rep.Successes != 0 || rep.TopErrors[0].Status != 404) {
		t.Errorf("validate: %d 404s but %d successes, top error %+v", n, rep.Successes, rep.TopErrors)
	}
}

func TestBenchSetupIsIdempotent(t *testing.T) {
	g := startBenchNode(t)
	ctx := context.Background()
	state := filepath.Join(t.TempDir(), "bench-state.json")

	first, err := benchSetup(ctx, g, smallBench(state), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(state)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("state file mode: got %04o, want 0600", fi.Mode().Perm())
	}

	again, err := benchSetup(ctx, g, smallBench(state), io.Discard)
	if err != nil {
		t.Fatalf("second setup: %v", err)
	}
	if s := again.summary; s.AgentsCreated != 0 || s.SecretsReused != 3 || s.SecretsRotated != 0 || s.GrantsCreated != 0 {
		t.Errorf("second setup with state: got %+v, want everything reused", s)
	}
	for i := range first.agents {
		if first.agents[i].secret != again.agents[i].secret {
			t.Errorf("%s: secret changed although the state file had it", first.agents[i].id)
		}
	}

	// Without the state file the secrets are rotated; the stale state is then
	// detected and rotated again, and the run still works.
	rotated, err := benchSetup(ctx, g, smallBench(""), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if s := rotated.summary; s.SecretsRotated != 3 || s.GrantsCreated != 0 {
		t.Errorf("setup without state: got %+v, want 3 rotated secrets", s)
	}
	stale, err := benchSetup(ctx, g, smallBench(state), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if s := stale.summary; s.SecretsRotated != 3 {
		t.Errorf("setup with stale state: got %+v, want 3 rotated secrets", s)
	}
	rep, err := loadgen.Run(ctx, scenarioExchange, stale.exchangeTargets(g.url), loadgen.Options{Concurrency: 2, Duration: time.Minute, MaxRequests: 40})
	if err != nil {
		t.Fatal(err)
	}
	consistentReport(t, rep)
	if rep.Errors != 0 {
		t.Errorf("exchange after re-setup: %d errors: %+v", rep.Errors, rep.TopErrors)
	}
}

func TestRunBenchJSON(t *testing.T) {
	g := startBenchNode(t)
	g.json = true
	o := smallBench("")
	o.scenarios = []string{"client-credentials"}
	o.concurrency, o.duration, o.maxRequests, o.timeout = 2, time.Minute, 30, 5*time.Second
	var out bytes.Buffer
	if err := runBench(context.Background(), g, o, io.Discard, &out); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		URL   string `json:"url"`
		Setup struct {
			Agents int `json:"agents"`
		} `json:"setup"`
		Results []struct {
			Scenario string            `json:"scenario"`
			Requests uint64            `json:"requests"`
			Errors   uint64            `json:"errors"`
			Status   map[string]uint64 `json:"status_codes"`
			Latency  map[string]any    `json:"latency_ms"`
		} `json:"results"`
	}
	if err := json.Unmarshal(out.Bytes(), &doc); err != nil {
		t.Fatalf("--json output is not JSON: %v\n%s", err, out.String())
	}
	if doc.URL != g.url || doc.Setup.Agents != 3 || len(doc.Results) != 1 {
		t.Fatalf("got %s", out.String())
	}
	r := doc.Results[0]
	if r.Scenario != "client-credentials" || r.Requests != 30 || r.Errors != 0 || r.Status["200"] != 30 || r.Latency["p99"] == nil {
		t.Errorf("got %+v", r)
	}
	for _, a := range []string{`"client_secret"`, "mnd_cs_", `"access_token"`, "eyJ"} {
		if strings.Contains(out.String(), a) {
			t.Errorf("--json output mentions %q", a)
		}
	}
}

func TestBenchRefusals(t *testing.T) {
	ctx := context.Background()
	g := &globals{url: "http://192.0.2.1:8080", adminKey: "x"}
	if _, err := benchSetup(ctx, g, smallBench(""), io.Discard); err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Errorf("remote --url: got %v, want a loopback refusal", err)
	}
	o := smallBench("")
	o.scenarios, o.concurrency, o.duration, o.maxRequests = []string{"custom"}, 1, time.Second, 1
	o.target = "http://192.0.2.1/token"
	if err := runBench(ctx, g, o, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Errorf("remote --target: got %v, want a loopback refusal", err)
	}
	o.scenarios, o.concurrency = []string{"exchange"}, 0
	if err := runBench(ctx, g, o, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "concurrency") {
		t.Errorf("--concurrency 0: got %v, want it refused before setup", err)
	}
	o.concurrency = 1
	o.scenarios = []string{"nonsense"}
	if err := runBench(ctx, g, o, io.Discard, io.Discard); err == nil {
		t.Error("unknown scenario: got no error")
	}
	for _, bad := range []*benchOpts{
		{target: ""},
		{target: "http://127.0.0.1/", form: "%zz"},
		{target: "http://127.0.0.1/", basic: "no-colon"},
	} {
		if _, err := bad.customTarget(); err == nil {
			t.Errorf("customTarget(%+v): got no error", bad)
		}
	}

	// A state file that others can read is refused, as it holds secrets.
	path := filepath.Join(t.TempDir(), "state.json")
	if err := os.WriteFile(path, []byte(`{"version":1,"url":"http://127.0.0.1:1","agents":{}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := loadBenchState(path, "http://127.0.0.1:1"); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("world-readable state: got %v", err)
	}
	// Another server's state starts empty.
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := loadBenchState(path, "http://127.0.0.1:2")
	if err != nil || len(st.Agents) != 0 || st.URL != "http://127.0.0.1:2" {
		t.Errorf("other server's state: got %+v, %v", st, err)
	}
}

func TestBasicAuthEncodesPerRFC6749(t *testing.T) {
	// RFC 6749 §2.3.1: form-encode, then join and base64.
	got := basicAuth("a b", "p:w+")
	want := "Basic YSti" + "OnAlM0F3JTJC" // base64("a+b:p%3Aw%2B")
	if got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
