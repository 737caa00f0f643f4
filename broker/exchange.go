package broker

import (
	"context"
	"errors"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/ory/fosite"

	"github.com/mandate-dev/mandate/broker/clients"
	"github.com/mandate-dev/mandate/grants"
	"github.com/mandate-dev/mandate/policies"
)

// ExchangeHandler implements the RFC 8693 token-exchange grant on fosite.
type ExchangeHandler struct{ b *Broker }

var _ fosite.TokenEndpointHandler = (*ExchangeHandler)(nil)

// CanSkipClientAuth implements fosite.TokenEndpointHandler: every exchange needs
// an authenticated client, because holder binding is decided by who asks.
func (h *ExchangeHandler) CanSkipClientAuth(context.Context, fosite.AccessRequester) bool {
	return false
}

// CanHandleTokenEndpointRequest implements fosite.TokenEndpointHandler.
func (h *ExchangeHandler) CanHandleTokenEndpointRequest(_ context.Context, ar fosite.AccessRequester) bool {
	return ar.GetGrantTypes().ExactOne(GrantTypeTokenExchange)
}

// subjectInfo is a verified subject token, whichever issuer it came from.
type subjectInfo struct {
	kind     string // policies.SubjectUpstream, SubjectMandate or SubjectClient
	issuer   string // the user's issuer (upstream iss, or sub_iss of a mandate token)
	subject  string
	scopes   []string
	expiry   time.Time
	claims   map[string]any
	mandate  *Claims // set for mandate tokens
	upstream *UpstreamToken
}

// HandleTokenEndpointRequest validates the exchange and decides the token; it
// enforces DESIGN.md's invariants itself, then asks the policy, which can only narrow.
func (h *ExchangeHandler) HandleTokenEndpointRequest(ctx context.Context, ar fosite.AccessRequester) error {
	if !h.CanHandleTokenEndpointRequest(ctx, ar) {
		return fosite.ErrUnknownRequest
	}
	b := h.b
	sess, ok := ar.GetSession().(*Session)
	if !ok {
		return errors.New("broker: session is not *broker.Session")
	}
	client, ok := clients.ClientFrom(ar.GetClient())
	if !ok {
		return errors.New("broker: client is not a mandate client")
	}
	audit := &Audit{ClientID: client.ID, GrantType: GrantTypeTokenExchange}
	sess.Audit = audit
	if !slices.Contains(client.GrantTypes, GrantTypeTokenExchange) {
		return errUnauthorizedClient("client %q is not registered for the token-exchange grant", client.ID)
	}
	form := ar.GetRequestForm()
	p, err := parseExchangeParams(form)
	if err != nil {
		return err
	}
	audit.Requested, audit.Audiences = p.scopes, p.targets()
	now := b.clock()

	// RFC 8693 §2.1: subject_token REQUIRED, the identity of the party on behalf
	// of whom the request is being made.
	subj, err := b.verifySubject(ctx, p.subjectToken, p.subjectTokenType, now)
	if err != nil {
		return err
	}
	audit.Subject, audit.SubjectIssuer = subj.subject, subj.issuer

	// RFC 8693 §2.1: actor_token OPTIONAL, the identity of the acting party. It
	// must be the authenticated client's own: an actor from another context would
	// splice two delegation chains together.
	var actor *policies.ActorInput
	if p.actorToken != "" {
		actor, err = b.verifyActor(ctx, p.actorToken, p.actorTokenType, client.ID, now)
		if err != nil {
			return err
		}
	}

	// Holder binding and the chain (DESIGN.md invariants 2 and 3).
	var (
		act       *Actor
		depth     int
		grantID   string
		ancestors []string
		parentJTI string
		nextHop   bool
	)
	switch subj.kind {
	case policies.SubjectUpstream:
		// A user token from the upstream issuer is meant for the broker only; the
		// client acts for the user, never as the user unless registered for it.
		depth = 1
		if p.actorToken == "" && client.MayImpersonate {
			act = nil
		} else {
			act = &Actor{Sub: client.ID}
		}
	case policies.SubjectMandate, policies.SubjectClient:
		c := subj.mandate
		if reason, revoked := b.ledger.Revoked(c.JTI, c.GrantID, c.Ancestors); revoked {
			return errInvalidRequest("subject_token is no longer valid: %s", reason)
		}
		switch {
		case c.ClientID == client.ID:
			// The holder re-exchanges its own token (to narrow it): same hop.
			act, depth = c.Act, c.Depth
			if act == nil && subj.kind == policies.SubjectMandate && !client.MayImpersonate {
				act = &Actor{Sub: client.ID}
			}
		case (c.MayAct != nil && c.MayAct.Sub == client.ID) || c.Audience.Contains(client.ID):
			// The next hop the token names exchanges it for its own: nest the chain.
			prev := c.Act
			if prev == nil {
				prev = &Actor{Sub: c.ClientID}
			}
			act = &Actor{Sub: client.ID, Act: prev}
			depth = c.Depth + 1
			nextHop = true
		default:
			return errInvalidRequest("subject_token was issued to another client and does not name %q as its next hop (may_act or aud)", client.ID)
		}
		grantID, parentJTI = c.GrantID, c.JTI
		ancestors = append(slices.Clone(c.Ancestors), c.JTI)
	}

	// Consent (invariant 4): acting for a user needs an active grant covering the request.
	var grant *Grant
	if subj.kind != policies.SubjectClient {
		switch {
		case grantID != "":
			if b.ledger.GrantRevoked(grantID) {
				return errInvalidGrant("the grant %s this token was issued under has been revoked", grantID)
			}
			grant, err = b.grants.ActiveByID(ctx, grantID)
			if err != nil {
				return grantLookupError(err, "the grant %s this token was issued under is no longer active", grantID)
			}
		case b.grants != nil:
			grant, err = b.grants.FindActive(ctx, subj.issuer, subj.subject, client.ID)
			if err != nil && !errors.Is(err, ErrGrantNotFound) {
				return grantLookupError(err, "")
			}
			if grant != nil && b.ledger.GrantRevoked(grant.ID) {
				grant = nil
			}
		}
		if grant == nil && !client.FirstParty {
			return errInvalidGrant("no active grant from user %q to client %q covers this request; the user must grant it first", subj.subject, client.ID)
		}
		if grant != nil {
			grantID = grant.ID
			if !grant.ExpiresAt.IsZero() && !now.Before(grant.ExpiresAt) {
				return errInvalidGrant("the grant %s has expired", grant.ID)
			}
			if nextHop && !allowsSubAgent(grant.AllowedSubAgents, client.ID) {
				return errInvalidGrant("grant %s does not allow re-delegation to %q", grant.ID, client.ID)
			}
		}
	}

	// Depth (invariant 1): at most the grant's and the server's maximum.
	maxDepth := b.cfg.MaxDepth
	if grant != nil && grant.MaxDepth > 0 && grant.MaxDepth < maxDepth {
		maxDepth = grant.MaxDepth
	}
	if depth > maxDepth {
		return errInvalidRequest("delegation depth %d exceeds the maximum of %d", depth, maxDepth)
	}

	// Attenuation (invariant 1): scopes ⊆ subject ∩ grant ∩ client.
	available := intersect(subj.scopes, client.Scopes)
	if grant != nil {
		available = intersect(available, grant.Scopes)
	}
	scopes := p.scopes
	if len(scopes) == 0 {
		scopes = available
		if len(scopes) == 0 {
			return errInvalidScope("no scope is available: the subject token, the grant and client %q share none", client.ID)
		}
	} else {
		for _, s := range scopes {
			if !slices.Contains(available, s) {
				return errInvalidScope("scope %q exceeds what the subject token, the grant or client %q allow", s, client.ID)
			}
		}
	}

	// Audiences and resources (RFC 8707, invariant 1): each must be one the client
	// is registered for, or a sub-agent the grant lets it re-delegate to; and covered by the grant.
	targets := p.targets()
	if len(targets) == 0 {
		targets = defaultTargets(subj, client)
		if len(targets) == 0 {
			return errInvalidTarget("no audience or resource was requested and client %q has no single default", client.ID)
		}
	}
	var mayAct *Actor
	for _, t := range targets {
		if slices.Contains(client.Audiences, t) {
			if grant != nil && !grantCoversResource(grant, t) {
				return errInvalidTarget("target %q is not covered by grant %s", t, grant.ID)
			}
			continue
		}
		// A registered agent named as the audience is the next hop (re-delegation).
		if t != client.ID && b.isAgent(ctx, t) && (grant == nil && client.FirstParty || grant != nil && allowsSubAgent(grant.AllowedSubAgents, t)) {
			if mayAct == nil {
				mayAct = &Actor{Sub: t}
			}
			continue
		}
		return errInvalidTarget("target %q is not one client %q may request", t, client.ID)
	}
	if mayAct != nil && len(targets) > 1 {
		return errInvalidTarget("a token for a next hop (%q) must name that hop as its only audience", mayAct.Sub)
	}
	if mayAct != nil && depth+1 > maxDepth {
		return errInvalidRequest("re-delegation to %q would exceed the maximum delegation depth of %d", mayAct.Sub, maxDepth)
	}

	// Lifetime (invariant 1): never past the parent, the grant or the server's cap.
	exp := now.Add(b.cfg.AccessTokenLifetime)
	exp = minTime(exp, now.Add(b.cfg.MaxTokenLifetime))
	exp = minTime(exp, subj.expiry)
	if grant != nil {
		if !grant.ExpiresAt.IsZero() {
			exp = minTime(exp, grant.ExpiresAt)
		}
		if grant.MaxLifetime > 0 {
			exp = minTime(exp, now.Add(grant.MaxLifetime))
		}
	}

	// The policy decides; it can only narrow (invariant 5: no decision, no token).
	in := &policies.Input{
		Version: policies.InputVersion,
		Client:  clientInput(client),
		Subject: policies.SubjectInput{
			Issuer: subj.issuer, Subject: subj.subject, Kind: subj.kind, Scopes: subj.scopes, Claims: subj.claims,
		},
		Actor:   actor,
		Chain:   chainLinks(act),
		Grant:   grantInput(grant),
		Request: policies.RequestInput{GrantType: GrantTypeTokenExchange, Scopes: scopes, Audiences: p.audiences, Resources: p.resources, RequestedTokenType: p.requestedType, Delegation: act != nil, Depth: depth},
		Meta:    metaInput(ctx, now),
	}
	if subj.mandate != nil {
		in.Subject.ClientID, in.Subject.Depth, in.Subject.GrantID = subj.mandate.ClientID, subj.mandate.Depth, subj.mandate.GrantID
	}
	if len(p.audiences) == 0 && len(p.resources) == 0 {
		in.Request.Audiences = targets
	}
	audit.Actors, audit.GrantID, audit.Input = act.Chain(), grantID, in
	dec, err := b.applyPolicy(ctx, in, audit, client.ID)
	if err != nil {
		return err
	}
	if scopes, err = narrowScopes(scopes, dec); err != nil {
		return err
	}
	if dec.MaxLifetime > 0 {
		exp = minTime(exp, now.Add(dec.MaxLifetime))
	}
	if !exp.After(now) {
		return errInvalidGrant("no lifetime is left: the subject token or the grant expires now")
	}

	userIss := subj.issuer
	if subj.kind == policies.SubjectClient {
		userIss = ""
	}
	sess.Subject = subj.subject
	sess.SetExpiresAt(fosite.AccessToken, exp)
	sess.issue = &issuance{
		claims: Claims{
			Issuer: b.cfg.Issuer, Subject: subj.subject, SubjectIssuer: userIss, Audience: targets,
			ClientID: client.ID, Scope: strings.Join(scopes, " "), Act: act, MayAct: mayAct,
			IssuedAt: now.Unix(), Expiry: exp.Unix(), GrantID: grantID, Ancestors: ancestors, Depth: depth,
			Ctx: dec.Claims,
		},
		tokenType:     p.requestedType,
		requestScopes: p.scopes,
		parentJTI:     parentJTI,
	}
	audit.Allowed, audit.Issued = true, scopes
	return nil
}

// PopulateTokenEndpointResponse implements fosite.TokenEndpointHandler: it mints
// the decided token and writes the RFC 8693 §2.2.1 response.
func (h *ExchangeHandler) PopulateTokenEndpointResponse(ctx context.Context, ar fosite.AccessRequester, resp fosite.AccessResponder) error {
	if !h.CanHandleTokenEndpointRequest(ctx, ar) {
		return fosite.ErrUnknownRequest
	}
	return h.b.populate(ctx, ar, resp)
}

type exchangeParams struct {
	subjectToken, subjectTokenType string
	actorToken, actorTokenType     string
	requestedType                  string
	scopes, audiences, resources   []string
}

func (p *exchangeParams) targets() []string {
	out := append(slices.Clone(p.audiences), p.resources...)
	slices.Sort(out)
	return slices.Compact(out)
}

// parseExchangeParams checks the RFC 8693 §2.1 parameters up front and refuses
// what mandate does not support by name.
func parseExchangeParams(form url.Values) (*exchangeParams, error) {
	p := &exchangeParams{
		subjectToken:     form.Get("subject_token"),
		subjectTokenType: form.Get("subject_token_type"),
		actorToken:       form.Get("actor_token"),
		actorTokenType:   form.Get("actor_token_type"),
		requestedType:    form.Get("requested_token_type"),
	}
	if p.subjectToken == "" {
		return nil, errInvalidRequest("subject_token is required")
	}
	if p.subjectTokenType == "" {
		return nil, errInvalidRequest("subject_token_type is required")
	}
	if !acceptedInputType(p.subjectTokenType) {
		return nil, errInvalidRequest("subject_token_type %q is not supported; use %s or %s", p.subjectTokenType, TokenTypeAccessToken, TokenTypeJWT)
	}
	// RFC 8693 §2.1: actor_token_type is REQUIRED when actor_token is present and
	// MUST NOT be included otherwise.
	switch {
	case p.actorToken != "" && p.actorTokenType == "":
		return nil, errInvalidRequest("actor_token_type is required with actor_token")
	case p.actorToken == "" && p.actorTokenType != "":
		return nil, errInvalidRequest("actor_token_type must not be sent without actor_token")
	case p.actorToken != "" && !acceptedInputType(p.actorTokenType):
		return nil, errInvalidRequest("actor_token_type %q is not supported; use %s or %s", p.actorTokenType, TokenTypeAccessToken, TokenTypeJWT)
	}
	switch p.requestedType {
	case "":
		p.requestedType = TokenTypeAccessToken
	case TokenTypeAccessToken, TokenTypeJWT:
	default:
		return nil, errInvalidRequest("requested_token_type %q is not supported; mandate issues %s and %s", p.requestedType, TokenTypeAccessToken, TokenTypeJWT)
	}
	var err error
	if p.scopes, err = parseScope(form.Get("scope")); err != nil {
		return nil, err
	}
	for _, a := range form["audience"] {
		for _, v := range strings.Fields(a) {
			if len(v) > 512 {
				return nil, errInvalidRequest("audience is too long")
			}
			p.audiences = append(p.audiences, v)
		}
	}
	// RFC 8707 §2: resource is an absolute URI without a fragment.
	for _, r := range form["resource"] {
		u, err := url.Parse(r)
		if err != nil || !u.IsAbs() || u.Fragment != "" || len(r) > 512 {
			return nil, errInvalidTarget("resource %q must be an absolute URI without a fragment (RFC 8707)", truncate(r, 80))
		}
		p.resources = append(p.resources, r)
	}
	if len(p.audiences)+len(p.resources) > 20 {
		return nil, errInvalidRequest("too many audiences and resources (at most 20)")
	}
	return p, nil
}

func acceptedInputType(t string) bool { return t == TokenTypeAccessToken || t == TokenTypeJWT }

// parseScope splits and checks a scope parameter (RFC 6749 §3.3 scope-token syntax).
func parseScope(s string) ([]string, error) {
	if len(s) > 4096 {
		return nil, errInvalidRequest("scope is too long")
	}
	var out []string
	for _, tok := range strings.Split(s, " ") {
		if tok == "" {
			continue
		}
		for i := 0; i < len(tok); i++ {
			c := tok[i]
			if c < 0x21 || c == 0x22 || c == 0x5c || c > 0x7e {
				return nil, errInvalidScope("scope %q contains a character RFC 6749 does not allow", truncate(tok, 64))
			}
		}
		if !slices.Contains(out, tok) {
			out = append(out, tok)
		}
	}
	if len(out) > 100 {
		return nil, errInvalidScope("too many scopes (at most 100)")
	}
	return out, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// verifySubject verifies the subject token with whichever issuer minted it.
func (b *Broker) verifySubject(ctx context.Context, raw, typ string, now time.Time) (*subjectInfo, error) {
	iss, err := b.issuerOf(raw, now)
	if err != nil {
		return nil, tokenParamError("subject_token", err)
	}
	if iss == b.cfg.Issuer {
		t, err := b.ownToken(raw, now, b.cfg.Leeway)
		if err != nil {
			return nil, tokenParamError("subject_token", err)
		}
		c := t.claims
		kind := policies.SubjectMandate
		userIss := c.SubjectIssuer
		if c.SubjectIssuer == "" {
			// A client_credentials token: the client is its own subject.
			kind, userIss = policies.SubjectClient, b.cfg.Issuer
		}
		return &subjectInfo{
			kind: kind, issuer: userIss, subject: c.Subject, scopes: c.Scopes(),
			expiry: time.Unix(c.Expiry, 0), claims: t.m, mandate: c,
		}, nil
	}
	if !b.upstream.Trusted(iss) {
		return nil, errInvalidRequest("subject_token is invalid: issuer %q is not trusted", truncate(iss, 100))
	}
	ut, err := b.upstream.Verify(ctx, raw)
	if err != nil {
		return nil, tokenParamError("subject_token", err)
	}
	return &subjectInfo{
		kind: policies.SubjectUpstream, issuer: ut.Issuer, subject: ut.Subject, scopes: ut.Scopes,
		expiry: ut.Expiry, claims: ut.Claims, upstream: ut,
	}, nil
}

// verifyActor verifies an actor token and checks it belongs to the authenticated client.
func (b *Broker) verifyActor(ctx context.Context, raw, typ, clientID string, now time.Time) (*policies.ActorInput, error) {
	iss, err := b.issuerOf(raw, now)
	if err != nil {
		return nil, tokenParamError("actor_token", err)
	}
	if iss == b.cfg.Issuer {
		t, err := b.ownToken(raw, now, b.cfg.Leeway)
		if err != nil {
			return nil, tokenParamError("actor_token", err)
		}
		c := t.claims
		if reason, revoked := b.ledger.Revoked(c.JTI, c.GrantID, c.Ancestors); revoked {
			return nil, errInvalidRequest("actor_token is no longer valid: %s", reason)
		}
		// Only the client's own client_credentials token identifies it as an actor.
		if c.ClientID != clientID || c.Subject != clientID || c.SubjectIssuer != "" {
			return nil, errInvalidRequest("actor_token does not identify the authenticated client %q", clientID)
		}
		return &policies.ActorInput{Issuer: iss, Subject: c.Subject, ClientID: c.ClientID, Claims: t.m}, nil
	}
	if !b.upstream.Trusted(iss) {
		return nil, errInvalidRequest("actor_token is invalid: issuer %q is not trusted", truncate(iss, 100))
	}
	ut, err := b.upstream.Verify(ctx, raw)
	if err != nil {
		return nil, tokenParamError("actor_token", err)
	}
	// A workload token of a trusted issuer: its subject (or client_id/azp) must be the client.
	owner := ut.Subject
	for _, k := range []string{"client_id", "azp"} {
		if v, ok := ut.Claims[k].(string); ok && v == clientID {
			owner = v
		}
	}
	if owner != clientID {
		return nil, errInvalidRequest("actor_token does not identify the authenticated client %q", clientID)
	}
	return &policies.ActorInput{Issuer: iss, Subject: ut.Subject, ClientID: clientID, Claims: ut.Claims}, nil
}

func defaultTargets(subj *subjectInfo, c *clients.Client) []string {
	if subj.mandate != nil {
		var out []string
		for _, a := range subj.mandate.Audience {
			if slices.Contains(c.Audiences, a) {
				out = append(out, a)
			}
		}
		if len(out) > 0 {
			return out
		}
	}
	if len(c.Audiences) == 1 {
		return []string{c.Audiences[0]}
	}
	return nil
}

func allowsSubAgent(allowed []string, id string) bool {
	return slices.Contains(allowed, "*") || slices.Contains(allowed, id)
}

func grantCoversResource(g *Grant, t string) bool {
	for _, r := range g.Resources {
		// grants.MatchResource refuses prefix matches that escape the pattern
		// ("..", encoded separators) or patterns that stop inside the host.
		if grants.MatchResource(r, t) {
			return true
		}
	}
	return false
}

func intersect(a, b []string) []string {
	out := make([]string, 0, len(a))
	for _, x := range a {
		if slices.Contains(b, x) && !slices.Contains(out, x) {
			out = append(out, x)
		}
	}
	return out
}

func minTime(a, b time.Time) time.Time {
	if b.IsZero() || a.Before(b) {
		return a
	}
	return b
}

func reasonText(r []string) string {
	if len(r) == 0 {
		return "no reason given"
	}
	return strings.Join(r, "; ")
}

func chainLinks(a *Actor) []policies.ChainLink {
	var out []policies.ChainLink
	for cur := a; cur != nil; cur = cur.Act {
		out = append(out, policies.ChainLink{Sub: cur.Sub, Iss: cur.Iss})
	}
	return out
}

func clientInput(c *clients.Client) policies.ClientInput {
	return policies.ClientInput{ID: c.ID, Name: c.Name, Type: c.Type, FirstParty: c.FirstParty, MayImpersonate: c.MayImpersonate, Scopes: c.Scopes, Audiences: c.Audiences}
}

func grantInput(g *Grant) *policies.GrantInput {
	if g == nil {
		return nil
	}
	gi := &policies.GrantInput{ID: g.ID, Scopes: g.Scopes, Resources: g.Resources, MaxDepth: g.MaxDepth, MaxLifetimeSeconds: int64(g.MaxLifetime / time.Second), AllowedSubAgents: g.AllowedSubAgents}
	if !g.ExpiresAt.IsZero() {
		gi.ExpiresAt = g.ExpiresAt.Unix()
	}
	return gi
}

func metaInput(ctx context.Context, now time.Time) policies.MetaInput {
	m := policies.MetaInput{Time: now.UTC().Format(time.RFC3339), Unix: now.Unix()}
	if ri, ok := ctx.Value(requestInfoKey{}).(RequestInfo); ok {
		m.ClientIP, m.RequestID = ri.ClientIP, ri.RequestID
	}
	return m
}

// RequestInfo is request metadata the server passes to the broker for policies and logs.
type RequestInfo struct{ ClientIP, RequestID string }

type requestInfoKey struct{}

// WithRequestInfo attaches request metadata to ctx.
func WithRequestInfo(ctx context.Context, ri RequestInfo) context.Context {
	return context.WithValue(ctx, requestInfoKey{}, ri)
}

// applyPolicy asks the policy and records its answer in the audit. Default deny:
// an error or a refusal means no token; a timeout is retryable (503), nothing
// being wrong with the request.
func (b *Broker) applyPolicy(ctx context.Context, in *policies.Input, audit *Audit, clientID string) (policies.Decision, error) {
	dec, err := b.decide(ctx, in)
	audit.BundleVersion, audit.EvalDuration = dec.BundleVersion, dec.EvalDuration
	if err != nil {
		audit.Reasons = []string{"policy error: " + err.Error()}
		b.log.Error("policy evaluation failed; denying", "client_id", clientID, "err", err)
		if errors.Is(err, policies.ErrTimeout) {
			return dec, errUnavailable("the policy did not decide in time; retry shortly")
		}
		return dec, errInvalidGrant("the policy could not be evaluated, so the request is denied")
	}
	audit.Reasons = dec.Reasons
	if !dec.Allow {
		return dec, errInvalidGrant("denied by policy: %s", reasonText(dec.Reasons))
	}
	return dec, nil
}

// narrowScopes applies the policy's scopes, which can only narrow.
func narrowScopes(scopes []string, dec policies.Decision) ([]string, error) {
	if dec.Scopes == nil {
		return scopes, nil
	}
	scopes = intersect(scopes, dec.Scopes)
	if len(scopes) == 0 {
		return nil, errInvalidScope("the policy left none of the requested scopes: %s", reasonText(dec.Reasons))
	}
	return scopes, nil
}

// issuerOf tells which issuer minted a token, to route it to its verifier. A
// token either verified-token cache knows skips decoding its claims.
func (b *Broker) issuerOf(raw string, now time.Time) (string, error) {
	if _, ok := b.own.get(raw, now); ok {
		return b.cfg.Issuer, nil
	}
	if t, ok := b.upstream.tokens.get(raw, now); ok {
		return t.Issuer, nil
	}
	return peekIssuer(raw)
}
