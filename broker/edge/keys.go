package edge

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
)

const (
	// maxJWKSBytes bounds a JWKS response; a broker publishes a handful of keys.
	maxJWKSBytes = 1 << 20
	// minRSABits refuses keys too short to trust (RFC 7518 §3.3: "A key of size 2048 bits or
	// larger MUST be used with these algorithms").
	minRSABits = 2048
)

// verifyKey is one public key of the issuer's JWKS, extracted once so that a validation calls
// the stdlib verifier directly.
type verifyKey struct {
	kid string
	alg jwa.SignatureAlgorithm // the JWK's "alg"; empty when the JWK does not pin one
	ec  *ecdsa.PublicKey
	ed  ed25519.PublicKey
	rsa *rsa.PublicKey
	// removed is set when a JWKS refresh no longer publishes this key, so that cached tokens it
	// signed stop validating at once rather than at their expiry.
	removed atomic.Bool
}

// accepts reports whether the key may verify a signature made with alg. RFC 7517 §4.4: when a
// JWK carries "alg", it is the algorithm intended for use with the key; the key type must fit
// the algorithm in any case, so that an RSA or EC key is never used as the wrong kind.
func (k *verifyKey) accepts(alg algorithm) bool {
	if k.alg != "" && k.alg != alg.name {
		return false
	}
	switch alg.family {
	case familyEC:
		return k.ec != nil && k.ec.Curve == alg.curve
	case familyEd25519:
		return k.ed != nil
	case familyRSA:
		return k.rsa != nil
	}
	return false
}

func (k *verifyKey) sameAs(o *verifyKey) bool {
	if k.kid != o.kid || k.alg != o.alg {
		return false
	}
	switch {
	case k.ec != nil:
		return o.ec != nil && k.ec.Equal(o.ec)
	case k.ed != nil:
		return o.ed != nil && k.ed.Equal(o.ed)
	case k.rsa != nil:
		return o.rsa != nil && k.rsa.Equal(o.rsa)
	}
	return false
}

// keyStore holds the issuer's verification keys by "kid". A remote store refetches the JWKS
// when a token names an unknown kid (key rotation), at most once per minInterval whatever the
// kids, so that tokens with made-up kids cannot turn the edge into a load generator against
// the issuer; and in the background once the keys are older than maxAge, so that a key the
// issuer withdrew stops being trusted.
type keyStore struct {
	keys atomic.Pointer[map[string]*verifyKey]

	// Remote only.
	url         string
	client      *http.Client
	minInterval time.Duration
	maxAge      time.Duration
	now         func() time.Time
	log         *slog.Logger

	mu          sync.Mutex
	lastAttempt time.Time // start of the last fetch, successful or not
	lastSuccess time.Time
	inflight    *refreshCall
}

// refreshCall is one JWKS fetch that concurrent callers wait on together.
type refreshCall struct {
	done chan struct{}
	err  error
}

func newStaticKeyStore(set jwk.Set, log *slog.Logger) (*keyStore, error) {
	keys, err := extractKeys(set, log)
	if err != nil {
		return nil, err
	}
	s := &keyStore{}
	s.keys.Store(&keys)
	return s, nil
}

func newRemoteKeyStore(url string, client *http.Client, minInterval, maxAge time.Duration, now func() time.Time, log *slog.Logger) *keyStore {
	s := &keyStore{url: url, client: client, minInterval: minInterval, maxAge: maxAge, now: now, log: log}
	empty := map[string]*verifyKey{}
	s.keys.Store(&empty)
	return s
}

// get returns the key named kid, refreshing a remote set once if the kid is unknown and the
// refresh budget allows.
func (s *keyStore) get(ctx context.Context, kid string) (*verifyKey, error) {
	if k := (*s.keys.Load())[kid]; k != nil {
		if s.url != "" {
			s.maybeRefreshInBackground()
		}
		return k, nil
	}
	if s.url == "" {
		return nil, newError(ErrUnknownKey, fmt.Sprintf("kid %q not in the configured key set", truncate(kid)))
	}
	call, err := s.startRefresh()
	if err != nil {
		return nil, wrapError(ErrUnknownKey, fmt.Sprintf("kid %q", truncate(kid)), err)
	}
	select {
	case <-call.done:
	case <-ctx.Done():
		return nil, wrapError(ErrUnknownKey, fmt.Sprintf("kid %q: waiting for JWKS refresh", truncate(kid)), ctx.Err())
	}
	if k := (*s.keys.Load())[kid]; k != nil {
		return k, nil
	}
	if call.err != nil {
		return nil, wrapError(ErrUnknownKey, fmt.Sprintf("kid %q: JWKS refresh failed", truncate(kid)), call.err)
	}
	return nil, newError(ErrUnknownKey, fmt.Sprintf("kid %q not in the issuer's JWKS", truncate(kid)))
}

var errRefreshLimited = errors.New("JWKS refresh rate limit reached")

// startRefresh joins the running fetch, or starts one if the last attempt is at least
// minInterval old. The fetch runs detached from any one caller's context, so a caller that
// gives up does not fail the refresh for the others.
func (s *keyStore) startRefresh() (*refreshCall, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inflight != nil {
		return s.inflight, nil
	}
	now := s.now()
	if !s.lastAttempt.IsZero() && now.Sub(s.lastAttempt) < s.minInterval {
		return nil, errRefreshLimited
	}
	s.lastAttempt = now
	call := &refreshCall{done: make(chan struct{})}
	s.inflight = call
	go s.runRefresh(call)
	return call, nil
}

func (s *keyStore) maybeRefreshInBackground() {
	s.mu.Lock()
	stale := s.inflight == nil && s.now().Sub(s.lastSuccess) >= s.maxAge
	s.mu.Unlock()
	if stale {
		_, _ = s.startRefresh() // rate limited or joined: either is fine here
	}
}

func (s *keyStore) runRefresh(call *refreshCall) {
	ctx, cancel := context.WithTimeout(context.Background(), fetchTimeout(s.client))
	defer cancel()
	call.err = s.refresh(ctx)
	s.mu.Lock()
	s.inflight = nil
	s.mu.Unlock()
	close(call.done)
}

// fetchTimeout bounds a detached JWKS fetch by the client's own timeout, or 10s.
func fetchTimeout(c *http.Client) time.Duration {
	if c.Timeout > 0 {
		return c.Timeout
	}
	return 10 * time.Second
}

// refresh fetches the JWKS and swaps in its keys. Keys that disappeared, or whose material
// changed under the same kid, are marked removed; on error the old keys stay.
func (s *keyStore) refresh(ctx context.Context) error {
	set, err := s.fetch(ctx)
	if err != nil {
		s.log.Warn("edge: JWKS refresh failed", "url", s.url, "error", err)
		return err
	}
	fresh, err := extractKeys(set, s.log)
	if err != nil {
		s.log.Warn("edge: JWKS refresh failed", "url", s.url, "error", err)
		return err
	}
	old := *s.keys.Load()
	for kid, k := range fresh {
		if prev, ok := old[kid]; ok && prev.sameAs(k) {
			fresh[kid] = prev // keep the pointer: cached tokens refer to it
		}
	}
	s.keys.Store(&fresh)
	for kid, prev := range old {
		if fresh[kid] != prev {
			prev.removed.Store(true)
		}
	}
	s.mu.Lock()
	s.lastSuccess = s.now()
	s.mu.Unlock()
	s.log.Debug("edge: JWKS refreshed", "url", s.url, "keys", len(fresh))
	return nil
}

func (s *keyStore) fetch(ctx context.Context) (jwk.Set, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return nil, fmt.Errorf("edge: JWKS request: %w", err)
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("edge: fetch JWKS: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("edge: fetch JWKS: status %d", resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return nil, fmt.Errorf("edge: read JWKS: %w", err)
	}
	if len(body) > maxJWKSBytes {
		return nil, fmt.Errorf("edge: JWKS larger than %d bytes", maxJWKSBytes)
	}
	set, err := jwk.Parse(body)
	if err != nil {
		return nil, fmt.Errorf("edge: parse JWKS: %w", err)
	}
	return set, nil
}

// extractKeys turns a JWK set into verification keys by kid. Keys without a kid, keys not for
// signatures, unsupported key types and kids listed twice are skipped: a token names its key by
// kid, and an ambiguous kid must match nothing.
func extractKeys(set jwk.Set, log *slog.Logger) (map[string]*verifyKey, error) {
	keys := make(map[string]*verifyKey, set.Len())
	dup := map[string]bool{}
	for i := 0; i < set.Len(); i++ {
		jk, _ := set.Key(i)
		k, err := toVerifyKey(jk)
		if err != nil {
			log.Warn("edge: skipping JWK", "kid", truncate(jk.KeyID()), "error", err)
			continue
		}
		if _, seen := keys[k.kid]; seen || dup[k.kid] {
			dup[k.kid] = true
			delete(keys, k.kid)
			log.Warn("edge: skipping JWK with duplicate kid", "kid", truncate(k.kid))
			continue
		}
		keys[k.kid] = k
	}
	if len(keys) == 0 {
		return nil, errors.New("edge: JWKS has no usable signature key")
	}
	return keys, nil
}

func toVerifyKey(jk jwk.Key) (*verifyKey, error) {
	if jk.KeyID() == "" {
		return nil, errors.New("no kid")
	}
	if use := jk.KeyUsage(); use != "" && use != string(jwk.ForSignature) {
		return nil, fmt.Errorf("use %q is not sig", use)
	}
	k := &verifyKey{kid: jk.KeyID()}
	if a := jk.Algorithm(); a != nil && a.String() != "" {
		alg, ok := lookupAlgorithm(jwa.SignatureAlgorithm(a.String()))
		if !ok {
			return nil, fmt.Errorf("unsupported alg %q", a.String())
		}
		k.alg = alg.name
	}
	var raw any
	if err := jk.Raw(&raw); err != nil {
		return nil, fmt.Errorf("decode key: %w", err)
	}
	switch key := raw.(type) {
	case *ecdsa.PublicKey:
		k.ec = key
	case *ecdsa.PrivateKey:
		k.ec = &key.PublicKey
	case ed25519.PublicKey:
		if len(key) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("Ed25519 key of %d bytes", len(key))
		}
		k.ed = key
	case ed25519.PrivateKey:
		k.ed = key.Public().(ed25519.PublicKey)
	case *rsa.PublicKey:
		k.rsa = key
	case *rsa.PrivateKey:
		k.rsa = &key.PublicKey
	default:
		return nil, fmt.Errorf("unsupported key type %T", raw)
	}
	if k.rsa != nil && k.rsa.N.BitLen() < minRSABits {
		return nil, fmt.Errorf("RSA key of %d bits", k.rsa.N.BitLen())
	}
	if k.alg != "" {
		alg, _ := lookupAlgorithm(k.alg)
		if !k.accepts(alg) {
			return nil, fmt.Errorf("key type does not fit alg %q", k.alg)
		}
	}
	return k, nil
}

// truncate shortens attacker-supplied values before they reach an error or a log line.
func truncate(s string) string {
	const max = 64
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}
