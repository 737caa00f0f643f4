package app

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/lestrrat-go/jwx/v2/jwk"

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
	(*e.handler.Load()).ServeHTTP(w, r)
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
