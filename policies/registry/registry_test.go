package registry_test

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mandate-dev/mandate/internal/db"
	"github.com/mandate-dev/mandate/internal/db/dbtest"
	"github.com/mandate-dev/mandate/policies"
	"github.com/mandate-dev/mandate/policies/registry"
)

var testNow = time.Date(2026, 3, 10, 10, 0, 0, 0, time.UTC)

func clock() time.Time { return testNow }

// bundleFiles is a small, valid bundle; marker makes bundles differ.
func bundleFiles(marker string) map[string]string {
	return map[string]string{
		"policy.rego": `package mandate.exchange

decision := {"allow": true, "reasons": [], "scopes": ["mail:read"]} if {
	input.client.id != "blocked"
} else := {"allow": false, "reasons": ["client blocked"]}

marker := "` + marker + `"
`,
		"policy_test.rego": `package mandate.exchange_test

import data.mandate.exchange

test_allows_a_client if {
	exchange.decision.allow with input as {"client": {"id": "agent"}}
}

test_denies_blocked if {
	not exchange.decision.allow with input as {"client": {"id": "blocked"}}
}
`,
	}
}

func eachBackend(t *testing.T, fn func(t *testing.T, d *db.DB)) {
	for _, dialect := range dbtest.Backends() {
		t.Run(string(dialect), func(t *testing.T) {
			fn(t, dbtest.Open(t, dialect))
		})
	}
}

func newRegistry(d *db.DB) *registry.Registry {
	return registry.New(d, registry.Options{Clock: clock})
}

func mustPush(t *testing.T, reg *registry.Registry, files map[string]string, version string) *registry.Record {
	t.Helper()
	rec, err := reg.Push(context.Background(), files, "alice", version)
	if err != nil {
		t.Fatalf("push %s: %v", version, err)
	}
	return rec
}

func TestPushGetList(t *testing.T) {
	eachBackend(t, func(t *testing.T, d *db.DB) {
		ctx := context.Background()
		reg := newRegistry(d)
		files := bundleFiles("one")
		rec := mustPush(t, reg, files, "")
		if ok, _ := regexp.MatchString(`^v1-[0-9a-f]{8}$`, rec.Version); !ok {
			t.Errorf("generated version = %q, want v1-<8 hex>", rec.Version)
		}
		if got, want := rec.SHA256, registry.Digest(files); got != want {
			t.Errorf("sha256 = %s, want %s", got, want)
		}
		if !strings.HasSuffix(rec.Version, rec.SHA256[:8]) {
			t.Errorf("version %s does not end with the digest's prefix %s", rec.Version, rec.SHA256[:8])
		}
		if rec.Tests.Passed != 2 || !rec.Tests.OK() {
			t.Errorf("test report = %+v, want 2 passed", rec.Tests)
		}

		got, err := reg.Get(ctx, rec.Version)
		if err != nil {
			t.Fatal(err)
		}
		if got.Author != "alice" || !got.CreatedAt.Equal(testNow) || got.Files["policy.rego"] != files["policy.rego"] || len(got.Tests.Results) != 2 {
			t.Errorf("get = %+v", got)
		}

		second := mustPush(t, reg, bundleFiles("two"), "release-2026.03.10+1")
		if second.Version != "release-2026.03.10+1" {
			t.Errorf("version = %q", second.Version)
		}
		third := mustPush(t, reg, bundleFiles("three"), "")
		if !strings.HasPrefix(third.Version, "v3-") {
			t.Errorf("third generated version = %q, want v3-...", third.Version)
		}

		list, err := reg.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != 3 {
			t.Fatalf("list has %d bundles, want 3", len(list))
		}
		for _, r := range list {
			if r.Files != nil || r.Tests.Results != nil || r.Tests.Passed != 2 {
				t.Errorf("list entry %s carries files or results, or lost its counts: %+v", r.Version, r)
			}
		}

		if _, err := reg.Get(ctx, "nope"); !errors.Is(err, registry.ErrNotFound) {
			t.Errorf("get unknown: %v, want ErrNotFound", err)
		}
		if _, err := reg.Active(ctx); !errors.Is(err, registry.ErrNoActivation) {
			t.Errorf("active before any activation: %v, want ErrNoActivation", err)
		}
	})
}

func TestPushDuplicateVersion(t *testing.T) {
	eachBackend(t, func(t *testing.T, d *db.DB) {
		reg := newRegistry(d)
		mustPush(t, reg, bundleFiles("one"), "v1")
		_, err := reg.Push(context.Background(), bundleFiles("two"), "bob", "v1")
		if !errors.Is(err, registry.ErrConflict) {
			t.Fatalf("duplicate push: %v, want ErrConflict", err)
		}
		got, err := reg.Get(context.Background(), "v1")
		if err != nil || got.Author != "alice" {
			t.Errorf("the first v1 was changed: %+v, %v", got, err)
		}
	})
}

func TestPushRefusesInvalidVersionsAndAuthors(t *testing.T) {
	eachBackend(t, func(t *testing.T, d *db.DB) {
		reg := newRegistry(d)
		for _, v := range []string{"-v1", "v 1", "v1/../x", "v1?", strings.Repeat("v", 129), "vé"} {
			if _, err := reg.Push(context.Background(), bundleFiles("x"), "alice", v); !errors.Is(err, registry.ErrInvalidVersion) {
				t.Errorf("push version %q: %v, want ErrInvalidVersion", v, err)
			}
		}
		if _, err := reg.Push(context.Background(), bundleFiles("x"), "", "v1"); err == nil {
			t.Error("push without author: no error")
		}
	})
}

// TestRejectedPushes pushes bad bundles to a registry whose nodes run a good
// one: each is refused with its problems, nothing is stored, and what runs
// does not change.
func TestRejectedPushes(t *testing.T) {
	huge := map[string]string{}
	for i := range policies.MaxBundleFiles + 1 {
		huge[fmt.Sprintf("p%d.rego", i)] = "package x\n"
	}
	withFile := func(name, src string) map[string]string {
		f := bundleFiles("bad")
		f[name] = src
		return f
	}
	cases := []struct {
		name  string
		files map[string]string
		check func(t *testing.T, bad *registry.InvalidBundleError)
	}{
		{"syntax error", withFile("policy.rego", "package mandate.exchange\n\ndecision := {\"allow\": true,\n\tinput.client.id ==\n}\n"), func(t *testing.T, bad *registry.InvalidBundleError) {
			if len(bad.Problems) == 0 {
				t.Fatal("no problems")
			}
			p := bad.Problems[0]
			if p.File != "policy.rego" || p.Line < 3 || p.Col < 1 || p.Code != "rego_parse_error" {
				t.Errorf("problem = %+v, want a rego_parse_error located in policy.rego", p)
			}
			if s := p.String(); !regexp.MustCompile(`^policy\.rego:\d+:\d+: `).MatchString(s) {
				t.Errorf("problem string %q is not file:line:col: message", s)
			}
		}},
		{"compile error", withFile("policy.rego", "package mandate.exchange\n\ndecision := {\"allow\": allowed, \"reasons\": []}\n"), func(t *testing.T, bad *registry.InvalidBundleError) {
			if len(bad.Problems) == 0 || bad.Problems[0].File != "policy.rego" || bad.Problems[0].Line != 3 {
				t.Errorf("problems = %+v, want an unsafe var at policy.rego:3", bad.Problems)
			}
		}},
		{"failing test", withFile("more_test.rego", "package mandate.exchange_test\n\nimport data.mandate.exchange\n\ntest_expects_deny if {\n\tnot exchange.decision.allow with input as {\"client\": {\"id\": \"agent\"}}\n}\n"), func(t *testing.T, bad *registry.InvalidBundleError) {
			if len(bad.FailedTests) != 1 {
				t.Fatalf("failed tests = %+v, want 1", bad.FailedTests)
			}
			ft := bad.FailedTests[0]
			if ft.Name != "data.mandate.exchange_test.test_expects_deny" || ft.Location != "more_test.rego:5:1" || ft.Outcome != "fail" {
				t.Errorf("failed test = %+v", ft)
			}
			if bad.Report == nil || bad.Report.Passed != 2 || bad.Report.Failed != 1 {
				t.Errorf("report = %+v", bad.Report)
			}
			if !strings.Contains(bad.Summary(), "test_expects_deny") {
				t.Errorf("summary %q does not name the test", bad.Summary())
			}
		}},
		{"test that does not compile", withFile("more_test.rego", "package mandate.exchange_test\n\ntest_x if {\n\tundefined_fn(1)\n}\n"), func(t *testing.T, bad *registry.InvalidBundleError) {
			if len(bad.Problems) == 0 || bad.Problems[0].File != "more_test.rego" {
				t.Errorf("problems = %+v, want one in more_test.rego", bad.Problems)
			}
		}},
		{"missing entry point", map[string]string{
			"policy.rego":      "package mandate.other\n\ndecision := {\"allow\": true, \"reasons\": []}\n",
			"policy_test.rego": "package mandate.other_test\n\nimport data.mandate.other\n\ntest_x if other.decision.allow\n",
		}, func(t *testing.T, bad *registry.InvalidBundleError) {
			if !errors.Is(bad, policies.ErrNoEntryPoint) || bad.Problems[0].Code != "no_entry_point" {
				t.Errorf("error = %v, want ErrNoEntryPoint", bad)
			}
		}},
		{"wrong output types", map[string]string{
			"policy.rego":      "package mandate.exchange\n\ndecision := {\"allow\": \"yes\", \"reasons\": []}\n",
			"policy_test.rego": "package mandate.exchange_test\n\nimport data.mandate.exchange\n\ntest_defined if exchange.decision\n",
		}, func(t *testing.T, bad *registry.InvalidBundleError) {
			if !errors.Is(bad, policies.ErrInvalidDecision) || len(bad.Problems) == 0 || bad.Problems[0].Code != "invalid_decision" ||
				!strings.Contains(bad.Problems[0].Message, "want a boolean") {
				t.Errorf("error = %v (problems %+v), want an invalid decision", bad, bad.Problems)
			}
		}},
		{"reserved claim", map[string]string{
			"policy.rego":      "package mandate.exchange\n\ndecision := {\"allow\": true, \"reasons\": [], \"claims\": {\"sub\": \"root\"}}\n",
			"policy_test.rego": "package mandate.exchange_test\n\nimport data.mandate.exchange\n\ntest_allows if exchange.decision.allow\n",
		}, func(t *testing.T, bad *registry.InvalidBundleError) {
			if !errors.Is(bad, policies.ErrInvalidDecision) || !strings.Contains(bad.Error(), "reserved claim") {
				t.Errorf("error = %v, want a refused reserved claim", bad)
			}
		}},
		{"no tests", map[string]string{"policy.rego": bundleFiles("x")["policy.rego"]}, func(t *testing.T, bad *registry.InvalidBundleError) {
			if !strings.Contains(bad.Summary(), "must carry tests") {
				t.Errorf("summary = %q, want a word about tests", bad.Summary())
			}
		}},
		{"too many files", huge, func(t *testing.T, bad *registry.InvalidBundleError) {
			if !errors.Is(bad, policies.ErrBundleLimit) {
				t.Errorf("error = %v, want ErrBundleLimit", bad)
			}
		}},
		{"too many bytes", withFile("big.rego", "package big\n\n# "+strings.Repeat("x", policies.MaxBundleBytes)+"\n"), func(t *testing.T, bad *registry.InvalidBundleError) {
			if !errors.Is(bad, policies.ErrBundleLimit) {
				t.Errorf("error = %v, want ErrBundleLimit", bad)
			}
		}},
		{"a file that is not a policy", withFile("notes.txt", "hello"), func(t *testing.T, bad *registry.InvalidBundleError) {
			if !errors.Is(bad, policies.ErrBundleFile) {
				t.Errorf("error = %v, want ErrBundleFile", bad)
			}
		}},
	}
	eachBackend(t, func(t *testing.T, d *db.DB) {
		ctx := context.Background()
		reg := newRegistry(d)
		eng := policies.NewEngine(policies.EngineConfig{})
		good := mustPush(t, reg, bundleFiles("good"), "good")
		syncer := registry.NewSyncer(reg, eng, registry.SyncerOptions{})
		if _, err := reg.Activate(ctx, good.Version, "alice"); err != nil {
			t.Fatal(err)
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				for _, version := range []string{"", "bad-" + strings.ReplaceAll(tc.name, " ", "-")} {
					_, err := reg.Push(ctx, tc.files, "mallory", version)
					var bad *registry.InvalidBundleError
					if !errors.As(err, &bad) {
						t.Fatalf("push (version %q): %v, want an InvalidBundleError", version, err)
					}
					tc.check(t, bad)
				}
				list, err := reg.List(ctx)
				if err != nil || len(list) != 1 {
					t.Errorf("after a refused push the registry holds %d bundles (%v), want 1", len(list), err)
				}
				if act, err := reg.Active(ctx); err != nil || act.Version != "good" {
					t.Errorf("active = %+v, %v; want good", act, err)
				}
				if changed, err := syncer.Poll(ctx); changed || err != nil {
					t.Errorf("poll after a refused push: changed %v, %v", changed, err)
				}
				if v := eng.Active().Version; v != "good" {
					t.Errorf("engine runs %s, want good", v)
				}
			})
		}
	})
}

func TestDigestMatchesEngine(t *testing.T) {
	files := policies.DefaultFiles()
	b, err := policies.Compile(context.Background(), "x", files)
	if err != nil {
		t.Fatal(err)
	}
	if got := registry.Digest(files); got != b.Digest {
		t.Errorf("Digest = %s, engine's = %s", got, b.Digest)
	}
}

func TestActivateAndRollback(t *testing.T) {
	eachBackend(t, func(t *testing.T, d *db.DB) {
		ctx := context.Background()
		reg := newRegistry(d)
		eng := policies.NewEngine(policies.EngineConfig{})
		registry.NewSyncer(reg, eng, registry.SyncerOptions{})
		for _, v := range []string{"v1", "v2", "v3"} {
			mustPush(t, reg, bundleFiles(v), v)
		}
		if _, err := reg.Rollback(ctx, "alice"); !errors.Is(err, registry.ErrNoActivation) {
			t.Errorf("rollback with no history: %v, want ErrNoActivation", err)
		}
		if _, err := reg.Activate(ctx, "v9", "alice"); !errors.Is(err, registry.ErrNotFound) {
			t.Errorf("activate unknown: %v, want ErrNotFound", err)
		}
		var last int64
		for _, v := range []string{"v1", "v2", "v3"} {
			act, err := reg.Activate(ctx, v, "alice")
			if err != nil {
				t.Fatal(err)
			}
			if act.Seq <= last || act.Version != v || act.Bundle == nil || act.Bundle.Version != v || act.Action != registry.ActionActivate {
				t.Errorf("activation = %+v", act)
			}
			last = act.Seq
			if got := eng.Active().Version; got != v {
				t.Errorf("engine runs %s after activating %s", got, v)
			}
		}
		for _, want := range []string{"v2", "v1"} {
			act, err := reg.Rollback(ctx, "bob")
			if err != nil {
				t.Fatal(err)
			}
			if act.Version != want || act.Action != registry.ActionRollback || act.ActivatedBy != "bob" {
				t.Errorf("rollback = %+v, want %s", act, want)
			}
			if got := eng.Active().Version; got != want {
				t.Errorf("engine runs %s after rollback, want %s", got, want)
			}
		}
		if _, err := reg.Rollback(ctx, "bob"); !errors.Is(err, registry.ErrNothingToRollBack) {
			t.Errorf("rollback past the first: %v, want ErrNothingToRollBack", err)
		}
		// Activating again starts a new branch: a rollback returns to v1.
		if _, err := reg.Activate(ctx, "v3", "alice"); err != nil {
			t.Fatal(err)
		}
		if act, err := reg.Rollback(ctx, "bob"); err != nil || act.Version != "v1" {
			t.Errorf("rollback = %+v, %v; want v1", act, err)
		}
		hist, err := reg.Activations(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, a := range hist {
			got = append(got, a.Action+":"+a.Version)
		}
		want := "rollback:v1 activate:v3 rollback:v1 rollback:v2 activate:v3 activate:v2 activate:v1"
		if strings.Join(got, " ") != want {
			t.Errorf("history = %v, want %s", got, want)
		}
		act, err := reg.Active(ctx)
		if err != nil || act.Version != "v1" || !act.At.Equal(testNow) {
			t.Errorf("active = %+v, %v", act, err)
		}
	})
}

// TestActivateWithoutSyncer: Activate still returns the bundle for the
// caller to run, and Syncs says nobody swapped it.
func TestActivateWithoutSyncer(t *testing.T) {
	eachBackend(t, func(t *testing.T, d *db.DB) {
		reg := newRegistry(d)
		eng := policies.NewEngine(policies.EngineConfig{})
		mustPush(t, reg, bundleFiles("a"), "a")
		act, err := reg.Activate(context.Background(), "a", "alice")
		if err != nil {
			t.Fatal(err)
		}
		if reg.Syncs(eng) || eng.Active() != nil || act.Bundle == nil {
			t.Errorf("syncs = %v, engine = %v, bundle = %v", reg.Syncs(eng), eng.Active(), act.Bundle)
		}
		registry.NewSyncer(reg, eng, registry.SyncerOptions{})
		if !reg.Syncs(eng) {
			t.Error("Syncs = false with a Syncer attached")
		}
	})
}
