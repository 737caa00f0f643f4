package app

import (
	"context"
	"errors"
	"fmt"
	"net/http"
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
	a    *App
	revs *edge.RevocationSet
	mu   sync.Mutex // serializes rebuilds
	cur  atomic.Pointer[edgeState]
	// base holds the cache counters of validators replaced by a rebuild.
	baseHits, baseMisses atomic.Uint64
}

// edgeState is one validator built from one published key set.
type edgeState struct {
	v    *edge.Validator
	h    http.Handler
	jwks *byte // data pointer of the JWKS slice it was built from
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
	old := e.cur.Load()
	if old != nil && old.jwks == unsafe.SliceData(cur) {
		return nil // another request rebuilt it already
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
	if old != nil {
		hits, misses := old.v.CacheStats()
		e.baseHits.Add(hits)
		e.baseMisses.Add(misses)
	}
	e.cur.Store(&edgeState{v: v, h: v.ForwardAuthHandlerWith(e.upstreamIdentity), jwks: unsafe.SliceData(cur)})
	return nil
}

// ServeHTTP implements GET /validate.
func (e *edgeValidator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// The key manager rebuilds its JWKS slice only when the key set changes, so a
	// pointer comparison tells, for free, whether a rotation happened on this node.
	if unsafe.SliceData(e.a.Keys.JWKS()) != e.cur.Load().jwks {
		if err := e.refresh(r.Context()); err != nil {
			e.a.Log.Warn("edge validator refresh failed", "err", err)
		}
	}
	e.cur.Load().h.ServeHTTP(w, r)
}

// upstreamIdentity is the /validate verifier of users' own tokens of the
// trusted upstream issuers (for APIs users call directly): signature against the
// issuer's JWKS, iss and times, through the broker's verified-token cache. Such
// tokens carry no chain or grant, and mandate cannot revoke them. The edge
// handler asks only about tokens it refused itself.
func (e *edgeValidator) upstreamIdentity(ctx context.Context, tok string) (*edge.Identity, bool, error) {
	iss, err := broker.PeekIssuer(tok)
	up := e.a.Broker.Upstream()
	if err != nil || iss == e.a.Config.Issuer || !up.Trusted(iss) {
		return nil, false, nil
	}
	ut, err := up.Verify(ctx, tok)
	if errors.Is(err, broker.ErrUpstreamUnavailable) {
		return nil, true, &edge.Error{Kind: edge.ErrUnavailable, Detail: "the issuer's keys are unreachable"}
	}
	if err != nil {
		return nil, true, &edge.Error{Kind: edge.ErrSignature, Detail: err.Error()}
	}
	client, _ := ut.Claims["client_id"].(string)
	if client == "" {
		client, _ = ut.Claims["azp"].(string)
	}
	jti, _ := ut.Claims["jti"].(string)
	return &edge.Identity{
		Issuer: iss, Subject: ut.Subject, SubjectIssuer: iss, ClientID: client, Scopes: ut.Scopes,
		Audience: ut.Audience, TokenID: jti, ExpiresAt: ut.Expiry, Claims: ut.Claims,
	}, true, nil
}

// cacheStats sums the verified-token cache counters over every validator this
// node has built.
func (e *edgeValidator) cacheStats() (hits, misses uint64) {
	h, m := e.cur.Load().v.CacheStats()
	return e.baseHits.Load() + h, e.baseMisses.Load() + m
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
