package broker

import (
	"context"
	"errors"
	"slices"
	"strings"

	"github.com/ory/fosite"

	"github.com/mandate-dev/mandate/broker/clients"
	"github.com/mandate-dev/mandate/policies"
)

// ClientCredentialsHandler implements RFC 6749 §4.4: a client's token for itself.
// Agents use it to obtain the actor token that identifies them in an exchange.
type ClientCredentialsHandler struct{ b *Broker }

var _ fosite.TokenEndpointHandler = (*ClientCredentialsHandler)(nil)

// CanSkipClientAuth implements fosite.TokenEndpointHandler.
func (h *ClientCredentialsHandler) CanSkipClientAuth(context.Context, fosite.AccessRequester) bool {
	return false
}

// CanHandleTokenEndpointRequest implements fosite.TokenEndpointHandler.
func (h *ClientCredentialsHandler) CanHandleTokenEndpointRequest(_ context.Context, ar fosite.AccessRequester) bool {
	return ar.GetGrantTypes().ExactOne(GrantTypeClientCredentials)
}

// HandleTokenEndpointRequest implements fosite.TokenEndpointHandler.
func (h *ClientCredentialsHandler) HandleTokenEndpointRequest(ctx context.Context, ar fosite.AccessRequester) error {
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
	audit := &Audit{ClientID: client.ID, Subject: client.ID, SubjectIssuer: b.cfg.Issuer, GrantType: GrantTypeClientCredentials}
	sess.Audit = audit
	if !slices.Contains(client.GrantTypes, GrantTypeClientCredentials) {
		return errUnauthorizedClient("client %q is not registered for the client_credentials grant", client.ID)
	}
	form := ar.GetRequestForm()
	requested, err := parseScope(form.Get("scope"))
	if err != nil {
		return err
	}
	var targets []string
	for _, a := range form["audience"] {
		targets = append(targets, strings.Fields(a)...)
	}
	targets = append(targets, form["resource"]...)
	slices.Sort(targets)
	targets = slices.Compact(targets)
	audit.Requested, audit.Audiences = requested, targets
	scopes := requested
	if len(scopes) == 0 {
		scopes = slices.Clone(client.Scopes)
	}
	for _, s := range scopes {
		if !slices.Contains(client.Scopes, s) {
			return errInvalidScope("scope %q is not registered for client %q", s, client.ID)
		}
	}
	for _, t := range targets {
		if !slices.Contains(client.Audiences, t) {
			return errInvalidTarget("target %q is not one client %q may request", t, client.ID)
		}
	}
	if len(targets) == 0 {
		// With no audience requested the token names the broker itself: it is
		// good as an actor token here, and nowhere else.
		targets = []string{b.cfg.Issuer}
	}
	now := b.clock()
	exp := now.Add(b.cfg.AccessTokenLifetime)
	in := &policies.Input{
		Version: policies.InputVersion,
		Client:  clientInput(client),
		Subject: policies.SubjectInput{Issuer: b.cfg.Issuer, Subject: client.ID, Kind: policies.SubjectClient, ClientID: client.ID, Scopes: client.Scopes},
		Request: policies.RequestInput{GrantType: GrantTypeClientCredentials, Scopes: scopes, Audiences: targets, RequestedTokenType: TokenTypeAccessToken},
		Meta:    metaInput(ctx, now),
	}
	audit.Input = in
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
	sess.Subject = client.ID
	sess.issue = &issuance{
		claims: Claims{
			Issuer: b.cfg.Issuer, Subject: client.ID, Audience: targets, ClientID: client.ID,
			Scope: strings.Join(scopes, " "), IssuedAt: now.Unix(), Expiry: exp.Unix(), Ctx: dec.Claims,
		},
		tokenType:     TokenTypeAccessToken,
		requestScopes: requested,
	}
	audit.Allowed, audit.Issued = true, scopes
	return nil
}

// PopulateTokenEndpointResponse implements fosite.TokenEndpointHandler.
func (h *ClientCredentialsHandler) PopulateTokenEndpointResponse(ctx context.Context, ar fosite.AccessRequester, resp fosite.AccessResponder) error {
	if !h.CanHandleTokenEndpointRequest(ctx, ar) {
		return fosite.ErrUnknownRequest
	}
	return h.b.populate(ctx, ar, resp)
}
