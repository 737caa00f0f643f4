// Package conformance is a black-box test suite for OAuth 2.0 Token Exchange
// (RFC 8693) servers and for mandate's delegation guarantees. It talks to the
// server under test only over HTTP.
//
// The suite plays the upstream identity provider itself: an IdP serves a JWKS
// on a loopback port and mints user tokens, good ones and deliberately bad
// ones (alg none, HS256 keyed with the public JWKS, expired, wrong issuer or
// audience, unknown kid, bad signature, garbage, ...). The server must trust
// that IdP before the run, so the IdP starts first:
//
//	idp, err := conformance.NewIdP("127.0.0.1:9999")
//	// ... configure and start the server trusting idp.URL() / idp.JWKSURL() ...
//	defer idp.Close()
//
// A Target describes the server: its issuer (endpoints come from its RFC 8414
// metadata), the aud it requires on the IdP's tokens, and the clients that
// play the suite's roles (agent_a, agent_b, ...). Any server is described by a
// YAML file:
//
//	target, err := conformance.LoadTarget("target.yaml")
//
// mandate can instead be set up by the suite, which registers its clients
// through the admin API and creates the users' grants through the users' own
// grants API:
//
//	target, err := conformance.SetupMandate(ctx, "http://127.0.0.1:8080", adminKey, idp)
//	defer target.Cleanup(ctx)
//
// Then one runner executes the cases:
//
//	report := conformance.Run(ctx, target, idp, conformance.Filter{})
//	report.WriteTable(os.Stdout) // ends with "N passed, N failed[, N skipped]"
//	if !report.OK() { ... }
//
// The cases are data: YAML files embedded from cases/, one per group (rfc8414,
// rfc7517, rfc6749-client-auth, rfc8693, rfc8707, rfc9068, rfc7662, rfc7009,
// mandate-guarantees). A case names the clause it checks, sends one request or
// several steps (placeholders such as {{user_token:alice:mail:read}},
// {{token_from:t1}} and {{bad_token:alg_none}} fill the forms), and states
// what the answer must be: status, error code, headers, fields, and checks on
// the body and on the issued JWT ("act.act.sub == {{client:agent_a}}",
// "scope subset $t1.scope", "exp <= $t1.exp"; see Check). Cases that need a
// role, endpoint or feature the target lacks are skipped, with the reason.
// docs/conformance.md describes the formats and how to add a case.
package conformance
