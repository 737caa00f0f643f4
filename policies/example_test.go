package policies_test

import (
	"context"
	"fmt"
	"maps"

	"github.com/mandate-dev/mandate/policies"
)

// A bundle is the default policy plus a rule of the security team's own: it
// is compiled, its tests run, and only then is it activated.
func Example() {
	ctx := context.Background()
	files := policies.DefaultFiles()
	maps.Copy(files, map[string]string{
		"no_payments.rego": `package mandate.exchange

deny contains "agents may not touch payments" if {
	input.client.type == "agent"
	some scope in input.request.scopes
	startswith(scope, "payments:")
}
`,
	})
	b, err := policies.Compile(ctx, "acme-7", files)
	if err != nil {
		fmt.Println(err)
		return
	}
	report, err := policies.RunTests(ctx, b)
	if err != nil || !report.OK() {
		fmt.Println("tests failed:", err, report.Failed, report.Errored)
		return
	}
	engine := policies.NewEngine(policies.EngineConfig{})
	engine.Activate(b)

	in := &policies.Input{
		Version: policies.InputVersion,
		Client:  policies.ClientInput{ID: "agent-books", Type: policies.ClientTypeAgent},
		Subject: policies.SubjectInput{Issuer: "https://idp.example.com", Subject: "alice", Kind: policies.SubjectUpstream},
		Chain:   []policies.ChainLink{{Sub: "agent-books"}},
		Grant:   &policies.GrantInput{ID: "grt_9", Scopes: []string{"books:read", "payments:write"}, Resources: []string{"https://books.example.com"}},
		Request: policies.RequestInput{Scopes: []string{"books:read", "payments:write"}, Audiences: []string{"https://books.example.com"}, Delegation: true, Depth: 1},
		Meta:    policies.MetaInput{Time: "2026-03-10T10:00:00Z", Unix: 1773136800},
	}
	d, err := engine.Decide(ctx, in)
	fmt.Println(d.Allow, d.Reasons, d.BundleVersion, err)

	in.Request.Scopes = []string{"books:read"}
	d, err = engine.Decide(ctx, in)
	fmt.Println(d.Allow, d.Reasons, err)
	// Output:
	// false [agents may not touch payments] acme-7 <nil>
	// true [] <nil>
}
