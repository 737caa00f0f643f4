package broker

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/ory/fosite"

	"github.com/mandate-dev/mandate/broker/ledger"
)

// Introspect serves POST /oauth2/introspect (RFC 7662). The caller authenticates
// as a registered client. An invalid, expired, revoked or foreign token is simply
// {"active": false}: RFC 7662 §2.2 gives no reason, so that introspection leaks nothing.
func (b *Broker) Introspect(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if err := b.formRequest(r); err != nil {
		b.writeError(ctx, w, r, nil, err)
		return
	}
	if _, err := b.AuthenticateClient(ctx, r); err != nil {
		b.writeError(ctx, w, r, nil, err)
		return
	}
	tok := r.PostForm.Get("token")
	if tok == "" {
		b.writeError(ctx, w, r, nil, errInvalidRequest("token is required"))
		return
	}
	writeJSON(w, http.StatusOK, b.introspect(tok))
}

func (b *Broker) introspect(raw string) map[string]any {
	inactive := map[string]any{"active": false}
	t, err := b.ownToken(raw, b.clock(), 0)
	if err != nil {
		return inactive
	}
	c := t.claims
	if _, revoked := b.ledger.Revoked(c.JTI, c.GrantID, c.Ancestors); revoked {
		return inactive
	}
	m := make(map[string]any, len(t.m)+2)
	for k, v := range t.m {
		m[k] = v
	}
	m["active"] = true
	m["token_type"] = "Bearer"
	return m
}

// IntrospectClaims verifies a mandate token and returns its claims if it is active.
func (b *Broker) IntrospectClaims(raw string) (*Claims, bool) {
	c, err := parseOwnToken(raw, b.cfg.Issuer, b.keys, b.clock(), 0)
	if err != nil {
		return nil, false
	}
	if _, revoked := b.ledger.Revoked(c.JTI, c.GrantID, c.Ancestors); revoked {
		return nil, false
	}
	return c, true
}

// Revoke serves POST /oauth2/revoke (RFC 7009). The holder of a token, or any
// client in its actor chain, may revoke it; revoking a token revokes every token
// derived from it, because descendants carry its id among their ancestors. The
// answer is 200 only once the revocation is durable.
func (b *Broker) Revoke(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if err := b.formRequest(r); err != nil {
		b.writeError(ctx, w, r, nil, err)
		return
	}
	client, err := b.AuthenticateClient(ctx, r)
	if err != nil {
		b.writeError(ctx, w, r, nil, err)
		return
	}
	tok := r.PostForm.Get("token")
	if tok == "" {
		b.writeError(ctx, w, r, nil, errInvalidRequest("token is required"))
		return
	}
	// RFC 7009 §2.1: token_type_hint is only a hint; mandate has access tokens only.
	c, err := parseOwnToken(tok, b.cfg.Issuer, b.keys, b.clock(), 0)
	if err != nil {
		// RFC 7009 §2.2: an invalid token is not an error.
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusOK)
		return
	}
	if c.ClientID != client.ID && !slices.Contains(c.Act.Chain(), client.ID) {
		b.writeError(ctx, w, r, nil, errUnauthorizedClient("the token was not issued to client %q", client.ID))
		return
	}
	if err := b.RevokeToken(ctx, c, "revoked by client "+client.ID); err != nil {
		b.writeError(ctx, w, r, nil, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
}

// RevokeToken durably revokes a verified token and, through its id, its descendants.
func (b *Broker) RevokeToken(ctx context.Context, c *Claims, reason string) error {
	// Descendants never outlive their parent, so the revocation matters until it expires.
	until := time.Unix(c.Expiry, 0).Add(b.cfg.Leeway)
	if err := b.ledger.Revoke(ctx, ledger.KindToken, c.JTI, reason, until); err != nil {
		b.log.Error("revocation failed", "jti", c.JTI, "err", err)
		return errUnavailable("the revocation could not be stored; retry")
	}
	return nil
}

// ParseToken verifies a mandate token (signature, iss, times) without checking revocation.
func (b *Broker) ParseToken(raw string) (*Claims, error) {
	return parseOwnToken(raw, b.cfg.Issuer, b.keys, b.clock(), b.cfg.Leeway)
}

func (b *Broker) formRequest(r *http.Request) error {
	if r.Method != http.MethodPost {
		return errInvalidRequest("this endpoint accepts POST only")
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(strings.ToLower(strings.TrimSpace(ct)), "application/x-www-form-urlencoded") {
		return errInvalidRequest("the request must be application/x-www-form-urlencoded")
	}
	if err := r.ParseForm(); err != nil {
		return errInvalidRequest("the request body is not a valid form")
	}
	for k, v := range r.PostForm {
		if len(v) > 1 {
			return errInvalidRequest("parameter %q is included more than once", truncate(k, 40))
		}
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// IsOAuthError reports whether err is an RFC 6749 error and returns it.
func IsOAuthError(err error) (*fosite.RFC6749Error, bool) {
	var rfc *fosite.RFC6749Error
	ok := errors.As(err, &rfc)
	return rfc, ok
}

// AuthenticateUser verifies a user's own upstream access token (for the grants API).
func (b *Broker) AuthenticateUser(ctx context.Context, raw string) (issuer, subject string, err error) {
	t, err := b.upstream.Verify(ctx, raw)
	if err != nil {
		return "", "", err
	}
	return t.Issuer, t.Subject, nil
}

// Upstream returns the verifier of the trusted upstream issuers' tokens.
func (b *Broker) Upstream() *Upstream { return b.upstream }

// PeekIssuer reads a JWT's iss without verifying anything, to route it to the
// right verifier. Never trust what it returns.
func PeekIssuer(raw string) (string, error) { return peekIssuer(raw) }
