package app

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/lestrrat-go/jwx/v2/jwk"

	"github.com/mandate-dev/mandate/broker"
	"github.com/mandate-dev/mandate/broker/edge"
	"github.com/mandate-dev/mandate/broker/ledger"
)

// edgeValidator serves the broker's own GET /validate with the same package
// gateways import: keys come from the key manager (rebuilt when the published set
// changes) and revocations from the ledger, in-process — no database round trip
// per request.
type edgeValidator struct {
	a       *App
	revs    *edge.RevocationSet
	mu      sync.Mutex
	jwks    []byte
	handler atomic.Pointer[http.Handler]
	v       atomic.Pointer[edge.Validator]
	seen    atomic.Pointer[byte] // data pointer of the JWKS the validator was built from
	// base holds the cache counters of validators replaced by a rebuild.
	baseHits, baseMisses atomic.Uint64
}

func newEdgeValidator(ctx context.Context, a *App) (*edgeValidator, error) {
	e := &edgeValidator{a: a, revs: edge.NewRevocationSet()}
	if err := e.refresh(ctx); err != nil {
		return nil, err
	}
	return e, nil
}

// refresh rebuilds the validator when the published key set changed.
func (e *edgeValidator) refresh(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	cur := e.a.Keys.JWKS()
	if e.v.Load() != nil && bytes.Equal(cur, e.jwks) {
		e.seen.Store(unsafe.SliceData(cur))
		return nil
	}
	set, err := jwk.Parse(cur)
	if err != nil {
		return fmt.Errorf("edge: parse own JWKS: %w", err)
	}
	v, err := edge.New(ctx, edge.Config{
		Issuer:           e.a.Config.Issuer,
		AnyAudience:      true, // gateways name the audience per route (?aud=)
		Keys:             set,
		Revocations:      e.revs,
		NoRevocationFeed: true, // fed in-process from the ledger below
		Leeway:           e.a.Config.Tokens.Leeway,
		CacheSize:        20000, // ~5 KB an entry: bounded at ~100 MB
		Realm:            "mandate",
		Logger:           e.a.Log,
	})
	if err != nil {
		return fmt.Errorf("edge: %w", err)
	}
	h := v.ForwardAuthHandler()
	if old := e.v.Load(); old != nil {
		hits, misses := old.CacheStats()
		e.baseHits.Add(hits)
		e.baseMisses.Add(misses)
	}
	e.v.Store(v)
	e.handler.Store(&h)
	e.jwks = append([]byte(nil), cur...)
	e.seen.Store(unsafe.SliceData(cur))
	return nil
}

// ServeHTTP implements GET /validate.
func (e *edgeValidator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// The key manager rebuilds its JWKS slice only when the key set changes, so a
	// pointer comparison tells, for free, whether a rotation happened on this node.
	if unsafe.SliceData(e.a.Keys.JWKS()) != e.seen.Load() {
		if err := e.refresh(r.Context()); err != nil {
			e.a.Log.Warn("edge validator refresh failed", "err", err)
		}
	}
	// Users' own tokens of the trusted upstream issuers validate here too (the
	// gateway in front of an API users call directly); mandate's tokens go to
	// the edge validator.
	if tok, err := edge.BearerToken(r); err == nil {
		if iss, err := broker.PeekIssuer(tok); err == nil && iss != e.a.Config.Issuer && e.a.Broker.Upstream().Trusted(iss) {
			e.serveUpstream(w, r, tok)
			return
		}
	}
	(*e.handler.Load()).ServeHTTP(w, r)
}

// serveUpstream validates a user token of a trusted upstream issuer: signature
// against the issuer's JWKS, iss, exp/nbf, the route's audiences and scopes.
// Such tokens carry no grant or chain, and mandate cannot revoke them.
func (e *edgeValidator) serveUpstream(w http.ResponseWriter, r *http.Request, tok string) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	auds, scopes := routeRequirements(r)
	deny := func(err *edge.Error) {
		status := edge.HTTPStatus(err)
		if status == http.StatusServiceUnavailable {
			h.Set("Retry-After", "1")
		} else {
			h.Set("WWW-Authenticate", edge.WWWAuthenticate(err, "mandate", scopes))
		}
		w.WriteHeader(status)
	}
	ut, err := e.a.Broker.Upstream().Verify(r.Context(), tok)
	if err != nil {
		if errors.Is(err, broker.ErrUpstreamUnavailable) {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		deny(&edge.Error{Kind: edge.ErrSignature, Detail: err.Error()})
		return
	}
	for _, a := range auds {
		if !slices.Contains(ut.Audience, a) {
			deny(&edge.Error{Kind: edge.ErrAudience, Detail: "aud lacks " + a})
			return
		}
	}
	for _, s := range scopes {
		if !slices.Contains(ut.Scopes, s) {
			deny(&edge.Error{Kind: edge.ErrInsufficientScope, Detail: "scope lacks " + s})
			return
		}
	}
	client, _ := ut.Claims["client_id"].(string)
	if client == "" {
		client, _ = ut.Claims["azp"].(string)
	}
	jti, _ := ut.Claims["jti"].(string)
	set := func(k, v string) {
		h.Set(k, strings.Map(func(r rune) rune {
			if r < 0x20 || r == 0x7f {
				return -1
			}
			return r
		}, v))
	}
	// Every identity header is set, possibly empty, so a proxy that copies them
	// overwrites anything a client sent.
	set(edge.HeaderSubject, ut.Subject)
	set(edge.HeaderSubjectIssuer, ut.Issuer)
	set(edge.HeaderClientID, client)
	set(edge.HeaderScope, strings.Join(ut.Scopes, " "))
	set(edge.HeaderActor, "")
	set(edge.HeaderGrantID, "")
	set(edge.HeaderTokenID, jti)
	w.WriteHeader(http.StatusOK)
}

// routeRequirements reads the route's audiences and scopes the way the edge
// forward-auth handler does: query aud/scope and the X-Mandate-* headers, adding up.
func routeRequirements(r *http.Request) (auds, scopes []string) {
	q := r.URL.Query()
	for _, a := range append(q["aud"], r.Header.Values(edge.HeaderAudience)...) {
		if a = strings.TrimSpace(a); a != "" && !slices.Contains(auds, a) {
			auds = append(auds, a)
		}
	}
	for _, list := range append(q["scope"], r.Header.Values(edge.HeaderScope)...) {
		for _, s := range strings.Fields(list) {
			if !slices.Contains(scopes, s) {
				scopes = append(scopes, s)
			}
		}
	}
	return auds, scopes
}

// follow copies the ledger's revocations into the validator's set as they happen.
func (e *edgeValidator) follow(ctx context.Context) {
	cursor := ""
	for ctx.Err() == nil {
		entries, next, reset := e.a.Ledger.Changes(ctx, cursor, 30*time.Second)
		conv := make([]edge.RevocationEntry, 0, len(entries))
		for _, en := range entries {
			kind := edge.KindToken
			if en.Kind == ledger.KindGrant {
				kind = edge.KindGrant
			}
			conv = append(conv, edge.RevocationEntry{Kind: kind, ID: en.ID, ExpiresAt: time.Unix(en.ExpiresAt, 0)})
		}
		if reset {
			if err := e.revs.Replace(conv); err != nil {
				e.a.Log.Error("edge: revocation snapshot", "err", err)
			}
		} else {
			for _, c := range conv {
				if err := e.revs.Add(c.Kind, c.ID, c.ExpiresAt); err != nil {
					e.a.Log.Error("edge: revocation", "err", err)
				}
			}
		}
		cursor = next
	}
}

// cacheStats sums the verified-token cache counters over every validator this
// node has built.
func (e *edgeValidator) cacheStats() (hits, misses uint64) {
	h, m := e.v.Load().CacheStats()
	return e.baseHits.Load() + h, e.baseMisses.Load() + m
}
