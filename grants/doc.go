// Package grants keeps user→agent delegation grants: a user's standing consent
// that one client (an app or agent) may act for them, with which scopes, on
// which resources, how deep it may re-delegate, how long its tokens may live,
// and until when. The token exchange needs an active grant covering the request
// before it acts for a user (design invariant 4, consent).
//
// A Store keeps grants in mandate's database (SQLite or PostgreSQL) with a
// history of every change, and publishes revocations through a Revoker:
//
//	store := grants.NewStore(d, ledger, grants.Options{MaxLifetime: 15 * time.Minute})
//
//	// A user grants the mail agent read access to their mailbox for 30 days.
//	g, err := store.Create(ctx, &grants.Grant{
//		UserIssuer:       "https://login.example.com",
//		UserSubject:      "alice",
//		ClientID:         "mail-agent",
//		Scopes:           []string{"mail.read", "mail.search"},
//		Resources:        []string{"https://api.example.com/mail/*"},
//		MaxDepth:         2,                      // the agent and one sub-agent
//		AllowedSubAgents: []string{"summarizer"}, // who may receive re-delegation
//		ExpiresAt:        time.Now().Add(30 * 24 * time.Hour),
//	}, grants.UserActor("https://login.example.com", "alice"))
//	if errors.Is(err, grants.ErrExists) {
//		// One active grant per (user, client): narrow or revoke the existing one.
//	}
//	var verr *grants.ValidationError
//	if errors.As(err, &verr) {
//		// verr.Field is the JSON name of the offending field, e.g. "scopes".
//	}
//
// The exchange asks on its hot path, served from a short-lived cache:
//
//	g, err := store.FindActive(ctx, subjectIss, subjectSub, clientID)
//	if errors.Is(err, grants.ErrNotFound) {
//		// no consent: refuse
//	}
//	if ok, reason := g.Covers(requestedScopes, requestedResources); !ok {
//		// invalid_scope or invalid_target, with reason as the description
//	}
//
// A later hop names its grant by id, from the token it presents:
//
//	g, err := store.ActiveByID(ctx, grantID) // ErrNotFound (and ErrNotActive) once revoked or expired
//
// Grants only ever narrow. The user (or an admin) may drop scopes, resources
// and sub-agents, lower the depth and lifetime, and bring the expiry forward;
// anything that would widen is a *ValidationError:
//
//	scopes := []string{"mail.read"}
//	g, err = store.Narrow(ctx, g.ID, grants.Narrowing{Scopes: &scopes}, grants.AdminActor)
//
// Revoking marks the grant revoked and records the event in one transaction,
// then hands the revocation to the Revoker (the broker's ledger), which makes
// it durable and publishes it to every node and edge, so every token derived
// under the grant is refused. Revoke returns nil only when the Revoker has
// succeeded; on ErrNotPublished call it again (it is idempotent):
//
//	err = store.Revoke(ctx, g.ID, grants.UserActor(iss, sub), "agent no longer used")
//
// Resource patterns end in "*" and match by prefix; see MatchResource for the
// rules that keep "https://api.example.com/mail/*" from covering
// "https://api.example.com/mail/../admin".
package grants
