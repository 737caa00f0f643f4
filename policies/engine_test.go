package policies

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestCompileReportsProblemsWithLocation(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		want  []string // prefixes of the problems, in order
	}{
		{
			name:  "parse error",
			files: map[string]string{"p.rego": "package mandate.exchange\n\ndecision := {\"allow\": true, \"reasons\": []}\n\nallow if {\n\tx := := 1\n}\n"},
			want:  []string{"p.rego:6:"},
		},
		{
			name: "parse errors in two files, sorted by file",
			files: map[string]string{
				"b.rego": "package mandate.exchange\n\ndecision := {\"allow\": true, \"reasons\": []}\nx := ]\n",
				"a.rego": "package mandate.exchange\nallow if {\n",
			},
			want: []string{"a.rego:3:0: rego_parse_error: unexpected eof token", "b.rego:4:"},
		},
		{
			name:  "undefined function",
			files: map[string]string{"p.rego": "package mandate.exchange\n\ndecision := {\"allow\": no_such_func(1), \"reasons\": []}\n"},
			want:  []string{"p.rego:3:23: rego_type_error: undefined function no_such_func"},
		},
		{
			name: "unsafe variable",
			files: map[string]string{"p.rego": "package mandate.exchange\n\ndecision := {\"allow\": true, \"reasons\": []}\n\n" +
				"deny contains x if {\n\ty > 1\n}\n"},
			want: []string{"p.rego:5:15: rego_unsafe_var_error: var x is unsafe"},
		},
		{
			name: "type error",
			files: map[string]string{"p.rego": "package mandate.exchange\n\n" +
				"decision := {\"allow\": true, \"reasons\": [], \"n\": upper(42)}\n"},
			want: []string{"p.rego:3:"},
		},
		{
			name:  "rego v0 syntax",
			files: map[string]string{"p.rego": "package mandate.exchange\n\ndecision = {\"allow\": true, \"reasons\": []} { true }\n"},
			want:  []string{"p.rego:3:"},
		},
		{
			name: "no network builtins",
			files: map[string]string{"p.rego": "package mandate.exchange\n\n" +
				"decision := {\"allow\": r.status_code == 200, \"reasons\": []} if {\n\tr := http.send({\"method\": \"GET\", \"url\": \"https://example.com\"})\n}\n"},
			want: []string{"p.rego:4:7: rego_type_error: undefined function http.send"},
		},
		{
			name: "parse error in a test file",
			files: map[string]string{
				"p.rego":      "package mandate.exchange\n\ndecision := {\"allow\": true, \"reasons\": []}\n",
				"p_test.rego": "package mandate.exchange_test\n\ntest_x if {\n",
			},
			want: []string{"p_test.rego:4:0: rego_parse_error: unexpected eof token"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Compile(context.Background(), "v1", tt.files)
			var ce *CompileError
			if !errors.As(err, &ce) {
				t.Fatalf("Compile error = %v, want a *CompileError", err)
			}
			if !strings.HasPrefix(err.Error(), "policies: compile v1: ") {
				t.Errorf("error = %q, want it to start with %q", err, "policies: compile v1: ")
			}
			if len(ce.Problems) < len(tt.want) {
				t.Fatalf("got %d problems %v, want at least %d", len(ce.Problems), ce.Problems, len(tt.want))
			}
			for i, want := range tt.want {
				if got := ce.Problems[i].String(); !strings.HasPrefix(got, want) {
					t.Errorf("problem %d = %q, want prefix %q", i, got, want)
				}
				if !strings.Contains(err.Error(), ce.Problems[i].String()) {
					t.Errorf("error %q does not list problem %q", err, ce.Problems[i])
				}
			}
		})
	}
}

func TestCompileRefusesBundles(t *testing.T) {
	ok := "package mandate.exchange\n\ndecision := {\"allow\": true, \"reasons\": []}\n"
	many := map[string]string{}
	for i := range MaxBundleFiles + 1 {
		many[fmt.Sprintf("p%d.rego", i)] = "package mandate.exchange\n"
	}
	tests := []struct {
		name    string
		version string
		files   map[string]string
		want    error
	}{
		{"no entry point", "v1", map[string]string{"p.rego": "package mandate.other\n\ndecision := {\"allow\": true, \"reasons\": []}\n"}, ErrNoEntryPoint},
		{"entry point only in tests", "v1", map[string]string{
			"p.rego":      "package mandate.other\n\nx := 1\n",
			"p_test.rego": "package mandate.exchange\n\ndecision := {\"allow\": true, \"reasons\": []}\n",
		}, ErrNoEntryPoint},
		{"no files", "v1", map[string]string{}, ErrBundleFile},
		{"too many files", "v1", many, ErrBundleLimit},
		{"too many bytes", "v1", map[string]string{"p.rego": ok + "# " + strings.Repeat("x", MaxBundleBytes) + "\n"}, ErrBundleLimit},
		{"not rego", "v1", map[string]string{"p.rego": ok, "notes.txt": "hi"}, ErrBundleFile},
		{"json not named data.json", "v1", map[string]string{"p.rego": ok, "clients.json": "{}"}, ErrBundleFile},
		{"absolute path", "v1", map[string]string{"/etc/p.rego": ok}, ErrBundleFile},
		{"parent path", "v1", map[string]string{"../p.rego": ok}, ErrBundleFile},
		{"unclean path", "v1", map[string]string{"a//p.rego": ok}, ErrBundleFile},
		{"backslash path", "v1", map[string]string{`a\p.rego`: ok}, ErrBundleFile},
		{"data not an object", "v1", map[string]string{"p.rego": ok, "data.json": "[1]"}, ErrBundleFile},
		{"data not json", "v1", map[string]string{"p.rego": ok, "data.json": "{"}, ErrBundleFile},
		{"data with trailing content", "v1", map[string]string{"p.rego": ok, "data.json": "{} {}"}, ErrBundleFile},
		{"data set twice", "v1", map[string]string{"p.rego": ok, "data.json": `{"a": {"b": 1}}`, "a/data.json": `{"b": 2}`}, ErrBundleFile},
		{"empty version", "", map[string]string{"p.rego": ok}, ErrBundleFile},
		{"version with a newline", "v\n1", map[string]string{"p.rego": ok}, ErrBundleFile},
		{"version too long", strings.Repeat("v", 129), map[string]string{"p.rego": ok}, ErrBundleFile},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := Compile(context.Background(), tt.version, tt.files)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Compile error = %v, want %v", err, tt.want)
			}
			if b != nil {
				t.Errorf("Compile returned a bundle with an error")
			}
		})
	}
}

func TestCompileAcceptsEntryPointForms(t *testing.T) {
	tests := map[string]map[string]string{
		"complete rule":    {"p.rego": "package mandate.exchange\n\ndecision := {\"allow\": true, \"reasons\": []}\n"},
		"rule in a folder": {"a/b/p.rego": "package mandate.exchange\n\ndecision := {\"allow\": true, \"reasons\": []}\n"},
		"ref head rules":   {"p.rego": "package mandate.exchange\n\ndecision.allow := true\n\ndecision.reasons := []\n"},
		"package decision": {"p.rego": "package mandate.exchange.decision\n\nallow := true\n\nreasons := []\n"},
	}
	for name, files := range tests {
		t.Run(name, func(t *testing.T) {
			b, err := Compile(context.Background(), "v1", files)
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			d, err := b.Decide(context.Background(), aliceInput())
			if err != nil || !d.Allow {
				t.Errorf("Decide = %+v, %v; want allow", d, err)
			}
		})
	}
}

func TestBundleDigest(t *testing.T) {
	files := map[string]string{"p.rego": "package mandate.exchange\n\ndecision := {\"allow\": true, \"reasons\": []}\n"}
	a, err := Compile(context.Background(), "a", files)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Compile(context.Background(), "b", files)
	if err != nil {
		t.Fatal(err)
	}
	if a.Digest != b.Digest || len(a.Digest) != 64 {
		t.Errorf("digests %q and %q, want the same 64 hex digits for the same files", a.Digest, b.Digest)
	}
	files["q.rego"] = "package other\n"
	c, err := Compile(context.Background(), "c", files)
	if err != nil {
		t.Fatal(err)
	}
	if c.Digest == a.Digest {
		t.Errorf("digest did not change with the files")
	}
	if _, ok := a.Files["q.rego"]; ok {
		t.Errorf("Compile kept the caller's map: a later change shows in Bundle.Files")
	}
}

func TestDecideParsesDecisions(t *testing.T) {
	tests := []struct {
		name     string
		decision string // Rego term for decision
		want     Decision
	}{
		{
			name:     "allow",
			decision: `{"allow": true, "reasons": []}`,
			want:     Decision{Allow: true, Reasons: []string{}},
		},
		{
			name:     "deny with reasons",
			decision: `{"allow": false, "reasons": ["no", "never"]}`,
			want:     Decision{Allow: false, Reasons: []string{"no", "never"}},
		},
		{
			name:     "reasons as a set",
			decision: `{"allow": false, "reasons": {"b", "a"}}`,
			want:     Decision{Allow: false, Reasons: []string{"a", "b"}},
		},
		{
			name:     "narrowed scopes, lifetime, claims",
			decision: `{"allow": true, "reasons": [], "scopes": ["mail:read"], "max_lifetime_seconds": 300, "claims": {"tenant": "acme", "risk": {"score": 3, "tags": {"x"}}}}`,
			want: Decision{
				Allow: true, Reasons: []string{}, Scopes: []string{"mail:read"}, MaxLifetime: 5 * time.Minute,
				Claims: map[string]any{"tenant": "acme", "risk": map[string]any{"score": jsonNumber("3"), "tags": []any{"x"}}},
			},
		},
		{
			name:     "narrowed to no scope",
			decision: `{"allow": true, "reasons": [], "scopes": []}`,
			want:     Decision{Allow: true, Reasons: []string{}, Scopes: []string{}},
		},
		{
			name:     "whole lifetime written as a float",
			decision: `{"allow": true, "reasons": [], "max_lifetime_seconds": 60.0}`,
			want:     Decision{Allow: true, Reasons: []string{}, MaxLifetime: time.Minute},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := mustCompile(t, "package mandate.exchange\n\ndecision := "+tt.decision+"\n")
			got, err := b.Decide(context.Background(), aliceInput())
			if err != nil {
				t.Fatalf("Decide: %v", err)
			}
			if got.BundleVersion != "test-1" {
				t.Errorf("BundleVersion = %q, want %q", got.BundleVersion, "test-1")
			}
			if got.EvalDuration <= 0 {
				t.Errorf("EvalDuration = %v, want > 0", got.EvalDuration)
			}
			got.BundleVersion, got.EvalDuration = "", 0
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Decide = %#v, want %#v", got, tt.want)
			}
		})
	}
}

func TestDecideRefusesMalformedDecisions(t *testing.T) {
	tests := []struct {
		name   string
		policy string // rules after the package line
		want   error
		detail string
	}{
		{"undefined", `decision := {"allow": true, "reasons": []} if input.version == "nope"`, ErrUndefined, ""},
		{"not an object", `decision := true`, ErrInvalidDecision, "want an object"},
		{"allow missing", `decision := {"reasons": []}`, ErrInvalidDecision, "allow is missing"},
		{"reasons missing", `decision := {"allow": false}`, ErrInvalidDecision, "reasons is missing"},
		{"allow a string", `decision := {"allow": "true", "reasons": []}`, ErrInvalidDecision, "allow is string"},
		{"allow a number", `decision := {"allow": 1, "reasons": []}`, ErrInvalidDecision, "allow is number"},
		{"reasons a string", `decision := {"allow": false, "reasons": "no"}`, ErrInvalidDecision, "reasons"},
		{"reasons with a number", `decision := {"allow": false, "reasons": ["no", 1]}`, ErrInvalidDecision, "reasons"},
		{"scopes a string", `decision := {"allow": true, "reasons": [], "scopes": "mail:read"}`, ErrInvalidDecision, "scopes"},
		{"scopes with an object", `decision := {"allow": true, "reasons": [], "scopes": [{}]}`, ErrInvalidDecision, "scopes"},
		{"scope with a space", `decision := {"allow": true, "reasons": [], "scopes": ["mail:read mail:write"]}`, ErrInvalidDecision, "not a valid scope token"},
		{"empty scope", `decision := {"allow": true, "reasons": [], "scopes": [""]}`, ErrInvalidDecision, "not a valid scope token"},
		{"negative lifetime", `decision := {"allow": true, "reasons": [], "max_lifetime_seconds": -1}`, ErrInvalidDecision, "max_lifetime_seconds"},
		{"zero lifetime", `decision := {"allow": true, "reasons": [], "max_lifetime_seconds": 0}`, ErrInvalidDecision, "max_lifetime_seconds"},
		{"fractional lifetime", `decision := {"allow": true, "reasons": [], "max_lifetime_seconds": 1.5}`, ErrInvalidDecision, "max_lifetime_seconds"},
		{"huge lifetime", `decision := {"allow": true, "reasons": [], "max_lifetime_seconds": 1e300}`, ErrInvalidDecision, "max_lifetime_seconds"},
		{"lifetime a string", `decision := {"allow": true, "reasons": [], "max_lifetime_seconds": "300"}`, ErrInvalidDecision, "max_lifetime_seconds"},
		{"claims an array", `decision := {"allow": true, "reasons": [], "claims": []}`, ErrInvalidDecision, "claims"},
		{"claims with a number key", `decision := {"allow": true, "reasons": [], "claims": {1: "x"}}`, ErrInvalidDecision, "claims"},
		{"unknown key", `decision := {"allow": true, "reasons": [], "max_lifetime": 300}`, ErrInvalidDecision, `unknown key "max_lifetime"`},
		{"conflicting outputs", "decision := {\"allow\": true, \"reasons\": []}\n\ndecision := {\"allow\": false, \"reasons\": []} if input.version", nil, "eval"},
		{"builtin error", `decision := {"allow": true, "reasons": [], "claims": {"t": time.parse_rfc3339_ns(input.meta.client_ip)}}`, nil, "eval"},
	}
	for _, claim := range ReservedClaims() {
		tests = append(tests, struct {
			name   string
			policy string
			want   error
			detail string
		}{"reserved claim " + claim, fmt.Sprintf(`decision := {"allow": true, "reasons": [], "claims": {"tenant": "acme", %q: "x"}}`, claim), ErrInvalidDecision, "reserved claim"})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := mustCompile(t, "package mandate.exchange\n\n"+tt.policy+"\n")
			d, err := b.Decide(context.Background(), aliceInput())
			if err == nil {
				t.Fatalf("Decide = %+v, want an error", d)
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("Decide error = %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.detail) {
				t.Errorf("Decide error = %q, want it to mention %q", err, tt.detail)
			}
			if d.Allow {
				t.Errorf("Decide returned Allow with an error")
			}
		})
	}
}

func TestDecideStopsSlowPolicies(t *testing.T) {
	tests := map[string]string{
		"nested iteration": `decision := {"allow": true, "reasons": []} if {
	some x in numbers.range(1, 100000000)
	some y in numbers.range(1, 100000000)
	x * y == -1
}`,
		"huge range": `decision := {"allow": count(numbers.range(1, 1000000000000)) > 0, "reasons": []}`,
		"walk of a big document": `big := [[i, j] | some i in numbers.range(1, 3000); some j in numbers.range(1, 3000)]

decision := {"allow": count([p | walk(big, [p, _])]) == 0, "reasons": []}`,
	}
	for name, policy := range tests {
		t.Run(name, func(t *testing.T) {
			b := mustCompile(t, "package mandate.exchange\n\n"+policy+"\n")
			e := NewEngine(EngineConfig{Timeout: 20 * time.Millisecond})
			e.Activate(b)
			d, err := e.Decide(context.Background(), aliceInput())
			if !errors.Is(err, ErrTimeout) {
				t.Fatalf("Decide = %+v, %v; want %v", d, err, ErrTimeout)
			}
		})
	}
}

func TestDecideFollowsContext(t *testing.T) {
	b := mustCompile(t, `package mandate.exchange

decision := {"allow": true, "reasons": []} if {
	some x in numbers.range(1, 100000000)
	some y in numbers.range(1, 100000000)
	x * y == -1
}
`)
	e := NewEngine(EngineConfig{Timeout: time.Minute})
	e.Activate(b)

	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(10*time.Millisecond, cancel)
	if _, err := e.Decide(ctx, aliceInput()); !errors.Is(err, context.Canceled) {
		t.Errorf("Decide with a cancelled context: error %v, want %v", err, context.Canceled)
	}

	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if _, err := e.Decide(ctx, aliceInput()); !errors.Is(err, ErrTimeout) {
		t.Errorf("Decide past the context's deadline: error %v, want %v", err, ErrTimeout)
	}
}

func TestDecideRefusesBadInput(t *testing.T) {
	b := mustCompile(t, "package mandate.exchange\n\ndecision := {\"allow\": true, \"reasons\": []}\n")
	wrongVersion := aliceInput()
	wrongVersion.Version = "mandate.policy/v0"
	noVersion := aliceInput()
	noVersion.Version = ""
	badTime := aliceInput()
	badTime.Meta.Time = "yesterday"
	badClaims := aliceInput()
	badClaims.Subject.Claims = map[string]any{"c": make(chan int)}
	tests := map[string]*Input{
		"nil":               nil,
		"wrong version":     wrongVersion,
		"no version":        noVersion,
		"malformed time":    badTime,
		"unencodable claim": badClaims,
	}
	for name, in := range tests {
		t.Run(name, func(t *testing.T) {
			if d, err := b.Decide(context.Background(), in); !errors.Is(err, ErrInvalidInput) {
				t.Errorf("Decide = %+v, %v; want %v", d, err, ErrInvalidInput)
			}
		})
	}
}

func TestDecideClockIsTheRequestTime(t *testing.T) {
	b := mustCompile(t, `package mandate.exchange

decision := {"allow": true, "reasons": [], "claims": {"now": time.now_ns()}}
`)
	unixOnly := aliceInput()
	unixOnly.Meta.Time = ""
	tests := []struct {
		name string
		in   *Input
		want string
	}{
		{"from meta.time", aliceInput(), "1773136800000000000"},
		{"from meta.unix", unixOnly, "1773136800000000000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := b.Decide(context.Background(), tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if got := fmt.Sprint(d.Claims["now"]); got != tt.want {
				t.Errorf("time.now_ns() = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestDecideWithData(t *testing.T) {
	b, err := Compile(context.Background(), "v1", map[string]string{
		"p.rego":                   "package mandate.exchange\n\ndecision := {\"allow\": input.client.id in data.mandate.allowed, \"reasons\": [data.mandate.config.greeting]}\n",
		"mandate/data.json":        `{"allowed": ["agent-mail"]}`,
		"mandate/config/data.json": `{"greeting": "hello"}`,
	})
	if err != nil {
		t.Fatal(err)
	}
	d, err := b.Decide(context.Background(), aliceInput())
	if err != nil {
		t.Fatal(err)
	}
	if want := (Decision{Allow: true, Reasons: []string{"hello"}, BundleVersion: "v1", EvalDuration: d.EvalDuration}); !reflect.DeepEqual(d, want) {
		t.Errorf("Decide = %+v, want %+v", d, want)
	}
}

func TestEngineWithoutBundleDenies(t *testing.T) {
	for name, e := range map[string]*Engine{"new": NewEngine(EngineConfig{}), "zero": {}} {
		if d, err := e.Decide(context.Background(), aliceInput()); !errors.Is(err, ErrNoBundle) || d.Allow {
			t.Errorf("%s engine: Decide = %+v, %v; want %v", name, d, err, ErrNoBundle)
		}
		if got := e.Timeout(); got != DefaultTimeout {
			t.Errorf("%s engine: Timeout = %v, want %v", name, got, DefaultTimeout)
		}
	}
}

func TestBundleNotFromCompile(t *testing.T) {
	var b Bundle
	if d, err := b.Decide(context.Background(), aliceInput()); !errors.Is(err, ErrNoBundle) || d.Allow {
		t.Errorf("Decide of a zero Bundle = %+v, %v; want %v", d, err, ErrNoBundle)
	}
	if _, err := RunTests(context.Background(), &b); !errors.Is(err, ErrNoBundle) {
		t.Errorf("RunTests of a zero Bundle: error %v, want %v", err, ErrNoBundle)
	}
	e := NewEngine(EngineConfig{})
	e.Activate(&b)
	if _, err := e.Decide(context.Background(), aliceInput()); !errors.Is(err, ErrNoBundle) {
		t.Errorf("Decide with a zero Bundle active: error %v, want %v", err, ErrNoBundle)
	}
}

func TestEngineActivate(t *testing.T) {
	e := NewEngine(EngineConfig{Timeout: time.Second})
	one := mustCompile(t, "package mandate.exchange\n\ndecision := {\"allow\": true, \"reasons\": []}\n")
	two := mustDefault(t)
	if prev := e.Activate(one); prev != nil {
		t.Errorf("first Activate returned %v, want nil", prev)
	}
	if prev := e.Activate(two); prev != one {
		t.Errorf("Activate returned %v, want the bundle it replaced", prev)
	}
	if e.Active() != two {
		t.Errorf("Active is not the bundle activated last")
	}
	d, err := e.Decide(context.Background(), aliceInput())
	if err != nil || d.BundleVersion != DefaultVersion {
		t.Errorf("Decide = %+v, %v; want a decision of %s", d, err, DefaultVersion)
	}
	if prev := e.Activate(nil); prev != two {
		t.Errorf("Activate(nil) returned %v, want the bundle it replaced", prev)
	}
	if _, err := e.Decide(context.Background(), aliceInput()); !errors.Is(err, ErrNoBundle) {
		t.Errorf("Decide after Activate(nil): error %v, want %v", err, ErrNoBundle)
	}
}

// TestEngineActivateWhileDeciding swaps bundles under concurrent decisions:
// every decision must come whole from one bundle (run it with -race).
func TestEngineActivateWhileDeciding(t *testing.T) {
	bundles := make([]*Bundle, 3)
	for i := range bundles {
		v := fmt.Sprintf("v%d", i)
		b, err := Compile(context.Background(), v, map[string]string{"p.rego": fmt.Sprintf(
			"package mandate.exchange\n\ndecision := {\"allow\": true, \"reasons\": [%q], \"claims\": {\"v\": %q}}\n", v, v)})
		if err != nil {
			t.Fatal(err)
		}
		bundles[i] = b
	}
	e := NewEngine(EngineConfig{Timeout: 5 * time.Second})
	e.Activate(bundles[0])

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 4 {
		wg.Go(func() {
			for n := 0; ctx.Err() == nil; n++ {
				d, err := e.Decide(context.Background(), aliceInput())
				if err != nil {
					errs <- err
					return
				}
				if d.Reasons[0] != d.BundleVersion || d.Claims["v"] != d.BundleVersion {
					errs <- fmt.Errorf("decision %+v mixes bundles", d)
					return
				}
			}
		})
	}
	for i := range 300 {
		e.Activate(bundles[i%len(bundles)])
		time.Sleep(50 * time.Microsecond)
	}
	cancel()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestLoadDir(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) {
		t.Helper()
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("exchange.rego", "package mandate.exchange\n\ndecision := {\"allow\": input.client.id in data.clients.allowed, \"reasons\": []}\n")
	write("exchange_test.rego", "package mandate.exchange_test\n\ntest_ok if true\n")
	write("clients/data.json", `{"allowed": ["agent-mail"]}`)
	write("lib/util.rego", "package lib\n\nx := 1\n")
	write("README.md", "# notes")
	write("input.json", "{}")
	write(".hidden.rego", "not rego at all")
	write(".git/config.rego", "not rego at all")
	if err := os.Symlink(filepath.Join(dir, "lib", "util.rego"), filepath.Join(dir, "linked.rego")); err != nil {
		t.Fatal(err)
	}

	files, err := LoadDir(dir)
	if err != nil {
		t.Fatalf("LoadDir: %v", err)
	}
	var got []string
	for name := range files {
		got = append(got, name)
	}
	want := []string{"clients/data.json", "exchange.rego", "exchange_test.rego", "lib/util.rego", "linked.rego"}
	if !equalSets(got, want) {
		t.Errorf("LoadDir files = %v, want %v", got, want)
	}
	b, err := Compile(context.Background(), "dir-1", files)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	if d, err := b.Decide(context.Background(), aliceInput()); err != nil || !d.Allow {
		t.Errorf("Decide = %+v, %v; want allow from data.clients.allowed", d, err)
	}

	if _, err := LoadDir(filepath.Join(dir, "missing")); err == nil {
		t.Errorf("LoadDir of a missing folder: no error")
	}
	empty := t.TempDir()
	if _, err := LoadDir(empty); !errors.Is(err, ErrBundleFile) {
		t.Errorf("LoadDir of an empty folder: error %v, want %v", err, ErrBundleFile)
	}
	full := t.TempDir()
	for i := range MaxBundleFiles + 1 {
		if err := os.WriteFile(filepath.Join(full, fmt.Sprintf("p%d.rego", i)), []byte("package p\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := LoadDir(full); !errors.Is(err, ErrBundleLimit) {
		t.Errorf("LoadDir of %d files: error %v, want %v", MaxBundleFiles+1, err, ErrBundleLimit)
	}
}

func equalSets(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	seen := map[string]int{}
	for _, s := range a {
		seen[s]++
	}
	for _, s := range b {
		seen[s]--
	}
	for _, n := range seen {
		if n != 0 {
			return false
		}
	}
	return true
}
