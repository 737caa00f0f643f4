// Package policies decides token exchanges with OPA Rego policies.
//
// A security team writes a bundle: Rego v1 files in package mandate.exchange
// that define the entry point data.mandate.exchange.decision, their tests in
// *_test.rego files, and optional data.json files. The broker builds one
// [Input] per request and asks the active bundle for a [Decision]:
//
//	files, err := policies.LoadDir("/etc/mandate/policy")
//	b, err := policies.Compile(ctx, "v42", files) // parse, compile, prepare: once
//	report, err := policies.RunTests(ctx, b)      // as `opa test` would
//	if err == nil && report.OK() {
//		engine.Activate(b) // atomic: decisions in flight finish on the old bundle
//	}
//
//	d, err := engine.Decide(ctx, &policies.Input{Version: policies.InputVersion, ...})
//	if err != nil || !d.Allow {
//		// deny: no token
//	}
//
// Everything fails closed. Decide returns an error, and the broker denies, when
// no bundle is active, the evaluation runs past its timeout (50ms unless
// configured), the policy errs (builtin errors included), the entry point is
// undefined, or its value is not exactly a decision object: allow and
// reasons, optionally scopes, max_lifetime_seconds and claims, with the right
// types, and claims that do not set reserved JWT claims.
//
// The default bundle ([DefaultFiles], [DefaultBundle]) is embedded: it
// requires a user's grant (or a first-party client) for every request, keeps
// scopes, audiences and resources within the grant, bounds delegation depth,
// restricts re-delegation to the sub-agents the grant names and impersonation
// to registered first-party clients, and caps the lifetime of tokens with
// sensitive scopes. docs/policy.md documents the input and output contract.
package policies
