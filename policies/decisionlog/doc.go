// Package decisionlog is mandate's decision log: every token request that
// reached a decision, with the bundle version that decided it and the policy
// input, so that security teams can audit what was decided and replay it
// against a candidate bundle before shipping it.
//
// The broker records through RecordDecision (broker.DecisionRecorder), which
// never does I/O on the request path: decisions are queued and written by a
// background writer, in one transaction per batch.
//
//	dl := decisionlog.New(d, decisionlog.Options{})
//	defer dl.Close()                           // writes what is still queued
//	b, _ := broker.New(cfg, broker.Deps{..., Decisions: dl})
//
//	denied := false
//	entries, err := dl.Query(ctx, decisionlog.Filter{ClientID: "agent-mail", Allowed: &denied, Since: time.Now().Add(-time.Hour)})
//	n, err := dl.Prune(ctx, time.Now().Add(-retention))
//	report, err := dl.Simulate(ctx, candidate, time.Now().Add(-24*time.Hour), 1000)
//	fmt.Println(report.AllowToDeny, "allowed requests would be denied")
//
// What is stored: who asked (client, subject and its issuer, the act chain),
// under which grant, what was asked and what was issued (scopes, audiences),
// the decision and its reasons, the bundle version and evaluation time, and
// the policy input: the verified claims of the tokens involved, never a token.
// Any string that holds a compact JWS or JWE is cleared defensively: a claim
// whose value carries a token is dropped from the input, a token inside a
// reason or a list element is replaced by "[redacted token]".
package decisionlog
