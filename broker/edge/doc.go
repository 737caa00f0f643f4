// Package edge validates mandate access tokens where requests arrive: in a resource server, a
// gateway, or the broker's own /validate endpoint. It imports no other mandate package, so a
// resource server depends on this package alone.
//
// A mandate access token is an RFC 9068 JWT ("typ": "at+jwt") signed with ES256 or EdDSA. Its
// claims name the user ("sub", "sub_iss"), the client holding it ("client_id"), the delegation
// chain ("act", current actor outermost), the grant it was issued under ("grant_id") and the
// tokens it derives from ("anc"), so that an edge can refuse a token whose grant or ancestor
// was revoked without asking the broker.
//
// # Validating in a resource server
//
// A Validator checks signature, issuer, audience, lifetime, scopes and revocation. It fetches
// the issuer's JWKS once at start-up and again when a token names an unknown key. A Feed
// follows the broker's revocation feed; the Validator fails closed with ErrRevocationStale when
// the feed falls silent:
//
//	feed, err := edge.NewFeed(edge.FeedConfig{Issuer: "https://mandate.example.com"})
//	if err != nil {
//		return err
//	}
//	go feed.Run(ctx) // until ctx is done; reconnects and catches up by itself
//
//	v, err := edge.New(ctx, edge.Config{
//		Issuer:   "https://mandate.example.com",
//		Audience: "https://files.example.com",
//		Feed:     feed, // its revocation set is used
//	})
//	if err != nil {
//		return err
//	}
//
//	mux := http.NewServeMux()
//	read := v.Middleware(edge.Requirements{Scopes: []string{"files:read"}})
//	mux.Handle("GET /files/{id}", read(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
//		id, _ := edge.FromContext(r.Context())
//		fmt.Fprintf(w, "hello %s, acting through %v\n", id.Subject, id.Actors)
//	})))
//
// With echo, use v.EchoMiddleware(req) the same way; the Identity is in the request context.
//
// Calling Validate directly gives the error, which wraps one of the sentinels (ErrExpired,
// ErrInsufficientScope, ErrRevoked, ...); HTTPStatus and WWWAuthenticate turn it into the
// RFC 6750 answer:
//
//	id, err := v.Validate(ctx, token, edge.Requirements{Scopes: []string{"mail:send"}})
//	if err != nil {
//		w.Header().Set("WWW-Authenticate", edge.WWWAuthenticate(err, "mail", []string{"mail:send"}))
//		w.WriteHeader(edge.HTTPStatus(err)) // 401, 403, or 503 when revocations are stale
//		return
//	}
//
// # Forward auth for a proxy
//
// ForwardAuthHandler serves nginx auth_request, Envoy ext_authz and Traefik forwardAuth. The
// route's audience and scopes come from the query ("?aud=...&scope=files:read") or the
// X-Mandate-Audience and X-Mandate-Scope headers; the identity goes back in X-Mandate-*
// headers. A gateway that fronts many resources sets AnyAudience and names the audience per
// route:
//
//	v, err := edge.New(ctx, edge.Config{Issuer: issuer, AnyAudience: true, Feed: feed})
//	...
//	http.Handle("/validate", v.ForwardAuthHandler())
//
// # Inside the broker
//
// The broker knows its own keys and its own revocations, so it passes a fixed key set and feeds
// a RevocationSet directly, and says so:
//
//	set := edge.NewRevocationSet()
//	v, err := edge.New(ctx, edge.Config{
//		Issuer:           issuer,
//		AnyAudience:      true,
//		Keys:             publicKeys, // jwk.Set
//		Revocations:      set,
//		NoRevocationFeed: true, // set is fed in-process
//	})
//	...
//	set.Add(edge.KindGrant, grantID, grantExpiry) // on revocation
//
// # Performance
//
// A validated token is cached (bounded, CLOCK eviction) by its exact bytes, so a repeat
// validation costs a hash, a map lookup and the per-call checks: expiry, revocation of the
// token, its grant and its ancestors, audience and scopes. Revocation therefore applies to
// cached tokens at once. A cold validation parses the JWS itself and calls crypto/ecdsa or
// crypto/ed25519 directly with keys extracted from the JWKS, so it costs little more than the
// signature check.
//
// The Identity returned is shared with the cache: treat it as read-only.
package edge
