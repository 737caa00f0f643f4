package policies

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestDefaultBundleDecisions drives the default bundle through the Go API,
// the way the broker does; exchange_test.rego covers each rule in Rego.
func TestDefaultBundleDecisions(t *testing.T) {
	tests := []struct {
		name     string
		change   func(*Input)
		allow    bool
		reason   string // one of the reasons, for a deny
		lifetime time.Duration
	}{
		{
			name:   "alice's grant covers the request",
			change: func(*Input) {},
			allow:  true,
		},
		{
			name:   "no grant",
			change: func(in *Input) { in.Grant = nil },
			reason: "no active grant from user alice to agent Mail Summarizer (agent-mail) covers this request",
		},
		{
			name:   "first-party client without grant",
			change: func(in *Input) { in.Grant, in.Client.FirstParty, in.Client.Type = nil, true, ClientTypeApp },
			allow:  true,
		},
		{
			name:   "scope outside the grant",
			change: func(in *Input) { in.Request.Scopes = []string{"mail:read", "mail:send"} },
			reason: "scope mail:send is not covered by grant grt_1",
		},
		{
			name:   "audience outside the grant",
			change: func(in *Input) { in.Request.Audiences = []string{"https://bank.example.com"} },
			reason: "audience https://bank.example.com is not covered by grant grt_1",
		},
		{
			name:   "resource under a granted prefix",
			change: func(in *Input) { in.Request.Resources = []string{"https://files.example.com/alice/notes.txt"} },
			allow:  true,
		},
		{
			name:   "resource outside the granted prefix",
			change: func(in *Input) { in.Request.Resources = []string{"https://files.example.com/bob/notes.txt"} },
			reason: "resource https://files.example.com/bob/notes.txt is not covered by grant grt_1",
		},
		{
			name: "re-delegation to an allowed sub-agent",
			change: func(in *Input) {
				in.Chain = []ChainLink{{Sub: "agent-drafter"}, {Sub: "agent-mail"}}
				in.Request.Depth = 2
			},
			allow: true,
		},
		{
			name: "re-delegation to another sub-agent",
			change: func(in *Input) {
				in.Chain = []ChainLink{{Sub: "agent-stranger"}, {Sub: "agent-mail"}}
				in.Request.Depth = 2
			},
			reason: "grant grt_1 does not allow re-delegation to sub-agent agent-stranger",
		},
		{
			name: "too deep",
			change: func(in *Input) {
				in.Grant.AllowedSubAgents = []string{"*"}
				in.Chain = []ChainLink{{Sub: "d"}, {Sub: "c"}, {Sub: "b"}, {Sub: "agent-mail"}}
				in.Request.Depth = 4
			},
			reason: "delegation depth 4 exceeds the server maximum of 3",
		},
		{
			name: "deeper than the grant allows",
			change: func(in *Input) {
				in.Grant.MaxDepth = 1
				in.Chain = []ChainLink{{Sub: "agent-drafter"}, {Sub: "agent-mail"}}
				in.Request.Depth = 2
			},
			reason: "delegation depth 2 exceeds the maximum of 1 set by grant grt_1",
		},
		{
			name: "impersonation by a registered first-party client",
			change: func(in *Input) {
				in.Client.FirstParty, in.Client.MayImpersonate = true, true
				in.Chain, in.Request.Delegation, in.Request.Depth = nil, false, 0
			},
			allow: true,
		},
		{
			name: "impersonation by a third-party client",
			change: func(in *Input) {
				in.Client.MayImpersonate = true
				in.Chain, in.Request.Delegation, in.Request.Depth = nil, false, 0
			},
			reason: "agent Mail Summarizer (agent-mail) may not impersonate user alice: impersonation is reserved for first-party clients registered for it",
		},
		{
			name:     "sensitive scope",
			change:   func(in *Input) { in.Request.Scopes = []string{"mail:read", "mail:write"} },
			allow:    true,
			lifetime: 300 * time.Second,
		},
		{
			name: "client credentials",
			change: func(in *Input) {
				in.Subject = SubjectInput{Issuer: "https://mandate.example.com", Subject: "agent-mail", Kind: SubjectClient}
				in.Grant, in.Actor, in.Chain = nil, nil, nil
				in.Request.GrantType, in.Request.Delegation, in.Request.Depth = "client_credentials", false, 0
			},
			allow: true,
		},
		{
			name:   "expired grant",
			change: func(in *Input) { in.Grant.ExpiresAt = in.Meta.Unix - 1 },
			reason: "grant grt_1 expired at 2026-03-10T09:59:59Z",
		},
	}
	e := NewEngine(EngineConfig{Timeout: time.Second})
	e.Activate(mustDefault(t))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := aliceInput()
			tt.change(in)
			d, err := e.Decide(context.Background(), in)
			if err != nil {
				t.Fatalf("Decide: %v", err)
			}
			if d.Allow != tt.allow {
				t.Fatalf("Decide = %+v, want allow %v", d, tt.allow)
			}
			if d.BundleVersion != DefaultVersion {
				t.Errorf("BundleVersion = %q, want %q", d.BundleVersion, DefaultVersion)
			}
			if tt.allow {
				if d.Reasons == nil || len(d.Reasons) != 0 {
					t.Errorf("Reasons = %#v, want [] on allow", d.Reasons)
				}
			} else if !slices.Contains(d.Reasons, tt.reason) {
				t.Errorf("Reasons = %q, want %q among them", d.Reasons, tt.reason)
			}
			if d.MaxLifetime != tt.lifetime {
				t.Errorf("MaxLifetime = %v, want %v", d.MaxLifetime, tt.lifetime)
			}
			if d.Scopes != nil || d.Claims != nil {
				t.Errorf("Scopes, Claims = %v, %v; the default bundle narrows neither", d.Scopes, d.Claims)
			}
		})
	}
}

func TestDefaultBundleRegoTests(t *testing.T) {
	report, err := RunTests(context.Background(), mustDefault(t))
	if err != nil {
		t.Fatalf("RunTests: %v", err)
	}
	for _, r := range report.Results {
		if r.Outcome != TestPass {
			t.Errorf("%s %s: %s %s", r.Location, r.Name, r.Outcome, r.Error)
		}
	}
	if !report.OK() || report.Passed < 40 {
		t.Errorf("report: %d passed, %d failed, %d errored; want OK with at least 40 tests", report.Passed, report.Failed, report.Errored)
	}
}

func TestDefaultFiles(t *testing.T) {
	files := DefaultFiles()
	for _, name := range []string{"exchange.rego", "exchange_test.rego"} {
		if !strings.Contains(files[name], "package mandate.exchange") {
			t.Errorf("DefaultFiles()[%q] is not the default policy", name)
		}
	}
	files["exchange.rego"] = "changed"
	if DefaultFiles()["exchange.rego"] == "changed" {
		t.Errorf("DefaultFiles returns a shared map")
	}
}

// TestDefaultBundleTestsCatchMutants changes one rule of the default policy at
// a time: its Rego tests must notice every change.
func TestDefaultBundleTestsCatchMutants(t *testing.T) {
	mutants := []struct{ from, to string }{
		{"input.request.depth > 3\n", "input.request.depth > 4\n"},
		{`[":write", ":delete"]`, `[":write"]`},
		{`strings.any_prefix_match(input.request.scopes, "admin")`, `false`},
		{`not "*" in allowed`, `true`},
		{"\tnot may_impersonate\n", ""},
		{`startswith(value, trim_suffix(pattern, "*"))`, `startswith(value, "")`},
		{"\tnot input.client.first_party == true\n", ""},
		{"expires_at <= input.meta.unix", "expires_at < input.meta.unix"},
		{"input.subject.subject != input.client.id", "false"},
		{"\tinput.subject.kind == \"client\"\n}", "\tinput.subject.kind == \"nobody\"\n}"},
		{"\tnot scope in granted\n", "\tscope == \"\"\n"},
		{"max_depth > 0\n", "max_depth >= 0\n"},
	}
	for _, m := range mutants {
		files := DefaultFiles()
		if strings.Count(files["exchange.rego"], m.from) != 1 {
			t.Errorf("mutant %q: not found once in exchange.rego", m.from)
			continue
		}
		files["exchange.rego"] = strings.Replace(files["exchange.rego"], m.from, m.to, 1)
		b, err := Compile(context.Background(), "mutant", files)
		if err != nil {
			t.Errorf("mutant %q: %v", m.from, err)
			continue
		}
		report, err := RunTests(context.Background(), b)
		if err != nil {
			t.Fatalf("RunTests: %v", err)
		}
		if report.OK() {
			t.Errorf("mutant %q -> %q: every Rego test still passes", m.from, m.to)
		}
	}
}
