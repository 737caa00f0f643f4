package edge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
)

// Defaults and bounds of Config.
const (
	DefaultLeeway         = 30 * time.Second
	MaxLeeway             = 5 * time.Minute
	DefaultMaxTokenSize   = 16 << 10
	DefaultCacheSize      = 100_000
	DefaultStaleness      = 30 * time.Second
	DefaultJWKSMinRefresh = 10 * time.Second
	DefaultJWKSRefresh    = 5 * time.Minute
)

const (
	defaultJWKSClientTimeout = 10 * time.Second
	maxActorChain            = 32
	maxNumericDate           = 253402300799 // 9999-12-31T23:59:59Z
	jwksPath                 = "/jwks.json"
)

// Config configures a Validator. Issuer, Audience (or AnyAudience) and a revocation source (or
// NoRevocationFeed) are required; every other zero value means the documented default, never
// "skip this check".
type Config struct {
	// Issuer is the broker's issuer URL; "iss" must equal it exactly.
	Issuer string
	// Audience must be one of the token's "aud" values (RFC 9068 §4: "The resource server
	// MUST validate that the aud claim contains a resource indicator value corresponding to
	// an identifier the resource server expects for itself").
	Audience string
	// AnyAudience accepts any audience; it must be set explicitly when Audience is empty, for
	// a gateway that names the audience per route through Requirements.Audience.
	AnyAudience bool
	// Algorithms is the JWS "alg" allow-list. Default: ES256 and EdDSA. Supported: ES256,
	// ES384, ES512, EdDSA, RS256, RS384, RS512, PS256, PS384, PS512. "none" and HS* are
	// refused.
	Algorithms []jwa.SignatureAlgorithm

	// JWKSURL is where the issuer publishes its keys. Default: Issuer + "/jwks.json".
	JWKSURL string
	// Keys, when set, is a fixed key set used instead of fetching JWKSURL (tests, air-gapped
	// deployments, the broker's own keys). Private keys are reduced to their public halves.
	Keys jwk.Set
	// HTTPClient fetches the JWKS. Default: a client with a 10s timeout.
	HTTPClient *http.Client
	// JWKSMinRefreshInterval bounds how often a token with an unknown "kid" may trigger a
	// JWKS fetch. Default 10s.
	JWKSMinRefreshInterval time.Duration
	// JWKSRefreshInterval is how old the keys may grow before a validation refreshes them in
	// the background, so that withdrawn keys stop being trusted. Default 5m.
	JWKSRefreshInterval time.Duration

	// Leeway tolerates clock skew on exp, nbf and iat. Default 30s; at most 5m.
	Leeway time.Duration
	// MaxTokenSize bounds the token in bytes. Default 16 KiB.
	MaxTokenSize int
	// CacheSize bounds the verified-token cache, in tokens. Default 100,000.
	CacheSize int
	// DisableCache turns the verified-token cache off: every validation verifies a signature.
	DisableCache bool

	// Revocations is the revocation set consulted on every validation, cached tokens included.
	// When nil and Feed is a *Feed, the Feed's set is used.
	Revocations *RevocationSet
	// Feed reports when Revocations was last synchronised with the broker. Once that is older
	// than Staleness, or before the first sync, validation fails with ErrRevocationStale.
	Feed FeedStatus
	// NoRevocationFeed declares that no Feed watches Revocations: the set is fed in-process
	// (the broker's own /validate), or, when Revocations is nil too, revocation is not checked
	// at all. It must be said explicitly; a missing Feed is otherwise an error.
	NoRevocationFeed bool
	// Staleness is how long the feed may go without syncing. Default 30s.
	Staleness time.Duration

	// Realm is the realm of WWW-Authenticate challenges written by the middlewares and the
	// forward-auth handler; omitted when empty.
	Realm string
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Logger receives JWKS refresh failures and, at debug level, rejections. Tokens are never
	// logged. Default slog.Default().
	Logger *slog.Logger
}

// FeedStatus reports when a revocation set was last synchronised. *Feed implements it.
type FeedStatus interface {
	LastSync() time.Time
}

// Requirements are what one route needs of a token, on top of the Validator's Config. They can
// only narrow what the Config accepts.
type Requirements struct {
	// Audience, when set, must also be one of the token's "aud" values.
	Audience string
	// Scopes must all be present in the token's "scope" claim.
	Scopes []string
}

// Identity is what a valid token says. It is shared with the verified-token cache and with
// concurrent callers: treat it, and the slices and maps it holds, as read-only.
type Identity struct {
	Issuer string
	// Subject is the user on whose behalf the token acts; for a client_credentials token,
	// the client id.
	Subject string
	// SubjectIssuer is the user's upstream issuer ("sub_iss"); empty for client tokens.
	SubjectIssuer string
	// ClientID is the client that holds the token.
	ClientID string
	Scopes   []string
	Audience []string
	// Actors is the delegation chain from "act", the current actor first; empty for
	// impersonation and client tokens.
	Actors []string
	// Act is the raw "act" claim; nil when absent.
	Act       map[string]any
	GrantID   string
	TokenID   string
	Ancestors []string // ancestor token ids, root first
	Depth     int
	IssuedAt  time.Time
	ExpiresAt time.Time
	// Claims holds every claim of the token, as decoded by encoding/json.
	Claims map[string]any
}

// HasScope reports whether the token carries scope s.
func (id *Identity) HasScope(s string) bool { return contains(id.Scopes, s) }

// HasAudience reports whether aud is one of the token's audiences.
func (id *Identity) HasAudience(aud string) bool { return contains(id.Audience, aud) }

// Validator validates mandate access tokens. It is safe for concurrent use.
type Validator struct {
	issuer       string
	audience     string // "" only with AnyAudience
	algs         []algorithm
	keys         *keyStore
	leeway       time.Duration
	maxTokenSize int
	cache        *tokenCache
	revocations  *RevocationSet
	feed         FeedStatus
	staleness    time.Duration
	realm        string
	now          func() time.Time
	log          *slog.Logger

	hits, misses atomic.Uint64 // verified-token cache, for metrics
}

// CacheStats reports how many validations the verified-token cache answered
// (hits) and how many verified a signature (misses), since New.
func (v *Validator) CacheStats() (hits, misses uint64) {
	return v.hits.Load(), v.misses.Load()
}

// New checks cfg and returns a Validator. Unless cfg.Keys is set, it fetches the issuer's JWKS
// once with ctx and fails if that fails, so that a misconfigured edge stops at start-up rather
// than rejecting every request; later refreshes run in the background.
func New(ctx context.Context, cfg Config) (*Validator, error) {
	v := &Validator{
		issuer:       cfg.Issuer,
		audience:     cfg.Audience,
		leeway:       cfg.Leeway,
		maxTokenSize: cfg.MaxTokenSize,
		revocations:  cfg.Revocations,
		feed:         cfg.Feed,
		staleness:    cfg.Staleness,
		realm:        cfg.Realm,
		now:          cfg.Now,
		log:          cfg.Logger,
	}
	if err := checkIssuer(cfg.Issuer); err != nil {
		return nil, err
	}
	switch {
	case cfg.Audience == "" && !cfg.AnyAudience:
		return nil, errors.New("edge: config: Audience is required (or set AnyAudience explicitly)")
	case cfg.Audience != "" && cfg.AnyAudience:
		return nil, errors.New("edge: config: Audience and AnyAudience are mutually exclusive")
	}
	algs := cfg.Algorithms
	if len(algs) == 0 {
		algs = []jwa.SignatureAlgorithm{jwa.ES256, jwa.EdDSA}
	}
	for _, name := range algs {
		a, ok := lookupAlgorithm(name)
		if !ok {
			return nil, fmt.Errorf("edge: config: algorithm %q is not allowed (none and HS* never are)", name)
		}
		v.algs = append(v.algs, a)
	}
	switch {
	case v.leeway < 0:
		return nil, fmt.Errorf("edge: config: negative Leeway %s", v.leeway)
	case v.leeway == 0:
		v.leeway = DefaultLeeway
	case v.leeway > MaxLeeway:
		return nil, fmt.Errorf("edge: config: Leeway %s exceeds %s", v.leeway, MaxLeeway)
	}
	switch {
	case v.maxTokenSize < 0:
		return nil, fmt.Errorf("edge: config: negative MaxTokenSize %d", v.maxTokenSize)
	case v.maxTokenSize == 0:
		v.maxTokenSize = DefaultMaxTokenSize
	}
	if cfg.CacheSize < 0 {
		return nil, fmt.Errorf("edge: config: negative CacheSize %d (use DisableCache)", cfg.CacheSize)
	}
	if !cfg.DisableCache {
		size := cfg.CacheSize
		if size == 0 {
			size = DefaultCacheSize
		}
		v.cache = newTokenCache(size)
	}
	if err := v.configureRevocation(cfg); err != nil {
		return nil, err
	}
	if v.now == nil {
		v.now = time.Now
	}
	if v.log == nil {
		v.log = slog.Default()
	}

	if cfg.Keys != nil {
		if cfg.JWKSURL != "" {
			return nil, errors.New("edge: config: Keys and JWKSURL are mutually exclusive")
		}
		ks, err := newStaticKeyStore(cfg.Keys, v.log)
		if err != nil {
			return nil, fmt.Errorf("edge: config: Keys: %w", err)
		}
		v.keys = ks
		return v, nil
	}
	jwksURL := cfg.JWKSURL
	if jwksURL == "" {
		jwksURL = strings.TrimSuffix(cfg.Issuer, "/") + jwksPath
	}
	if u, err := url.Parse(jwksURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("edge: config: JWKSURL %q is not an http(s) URL", jwksURL)
	}
	client := cfg.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: defaultJWKSClientTimeout}
	}
	minRefresh := cfg.JWKSMinRefreshInterval
	if minRefresh <= 0 {
		minRefresh = DefaultJWKSMinRefresh
	}
	maxAge := cfg.JWKSRefreshInterval
	if maxAge <= 0 {
		maxAge = DefaultJWKSRefresh
	}
	v.keys = newRemoteKeyStore(jwksURL, client, minRefresh, maxAge, v.now, v.log)
	call, err := v.keys.startRefresh()
	if err != nil {
		return nil, fmt.Errorf("edge: initial JWKS fetch: %w", err)
	}
	select {
	case <-call.done:
	case <-ctx.Done():
		return nil, fmt.Errorf("edge: initial JWKS fetch from %s: %w", jwksURL, ctx.Err())
	}
	if call.err != nil {
		return nil, fmt.Errorf("edge: initial JWKS fetch from %s: %w", jwksURL, call.err)
	}
	return v, nil
}

func checkIssuer(iss string) error {
	if iss == "" {
		return errors.New("edge: config: Issuer is required")
	}
	u, err := url.Parse(iss)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("edge: config: Issuer %q is not an http(s) URL", iss)
	}
	return nil
}

func (v *Validator) configureRevocation(cfg Config) error {
	if cfg.NoRevocationFeed {
		if cfg.Feed != nil {
			return errors.New("edge: config: Feed and NoRevocationFeed are mutually exclusive")
		}
		return nil
	}
	if cfg.Feed == nil {
		return errors.New("edge: config: a revocation Feed is required (or set NoRevocationFeed explicitly)")
	}
	f, isFeed := cfg.Feed.(*Feed)
	switch {
	case v.revocations == nil && !isFeed:
		return errors.New("edge: config: Revocations is required with a Feed that is not a *Feed")
	case v.revocations == nil:
		v.revocations = f.Set()
	case isFeed && v.revocations != f.Set():
		// The feed would keep one set current while validations consult another.
		return errors.New("edge: config: Revocations is not the set the Feed maintains")
	}
	switch {
	case v.staleness < 0:
		return fmt.Errorf("edge: config: negative Staleness %s", v.staleness)
	case v.staleness == 0:
		v.staleness = DefaultStaleness
	}
	return nil
}

// RefreshKeys fetches the issuer's JWKS now, subject to the same rate limit as an unknown kid.
// It is a no-op for a fixed key set.
func (v *Validator) RefreshKeys(ctx context.Context) error {
	if v.keys.url == "" {
		return nil
	}
	call, err := v.keys.startRefresh()
	if err != nil {
		return fmt.Errorf("edge: refresh keys: %w", err)
	}
	select {
	case <-call.done:
		return call.err
	case <-ctx.Done():
		return fmt.Errorf("edge: refresh keys: %w", ctx.Err())
	}
}

// Validate checks token against the Config and req and returns its Identity. The checks, in
// order: size, JWS compact form, "alg" allow-list, "typ" (at+jwt), signing key by "kid",
// signature, "iss", "exp"/"nbf"/"iat" with leeway, then per call: revocation freshness,
// revocation of "jti", "grant_id" and every "anc", audience, scopes. The first group is cached
// per token; the second runs on every call, so a revocation applies to cached tokens at once.
//
// Every error wraps one of the package's sentinels (see HTTPStatus).
func (v *Validator) Validate(ctx context.Context, token string, req Requirements) (*Identity, error) {
	if token == "" {
		return nil, newError(ErrMalformed, "empty token")
	}
	if len(token) > v.maxTokenSize {
		return nil, newError(ErrMalformed, fmt.Sprintf("token of %d bytes exceeds %d", len(token), v.maxTokenSize))
	}
	now := v.now()
	if v.cache != nil {
		if e := v.cache.get(token); e != nil && !e.key.removed.Load() {
			// The token was verified before; only time can have changed what it says.
			if !now.Before(e.deadline) {
				return nil, newError(ErrExpired, "exp has passed")
			}
			if now.Before(e.notBefore) {
				return nil, newError(ErrNotYetValid, "nbf or iat in the future")
			}
			v.hits.Add(1)
			return v.authorize(e.id, now, req)
		}
	}
	v.misses.Add(1)
	e, err := v.verify(ctx, token, now)
	if err != nil {
		return nil, err
	}
	if v.cache != nil {
		e.token = strings.Clone(token) // do not pin a caller's larger buffer
		v.cache.put(e, now)
	}
	return v.authorize(e.id, now, req)
}

// verify runs the per-token checks: everything that depends on the token alone and the clock.
func (v *Validator) verify(ctx context.Context, token string, now time.Time) (*cacheEntry, error) {
	c, err := splitCompact(token)
	if err != nil {
		return nil, err
	}
	h, err := parseHeader(c.header)
	if err != nil {
		return nil, err
	}
	alg, ok := v.allowed(h.alg)
	if !ok {
		// RFC 8725 §3.1: "Libraries MUST enable the caller to specify a supported set of
		// algorithms and MUST NOT use any other algorithms when performing cryptographic
		// operations."
		return nil, newError(ErrSignature, fmt.Sprintf("alg %q not allowed", truncate(string(h.alg))))
	}
	if !accessTokenType(h.typ) {
		if h.typ == "" {
			return nil, newError(ErrMalformed, "typ missing, want at+jwt")
		}
		return nil, newError(ErrMalformed, fmt.Sprintf("typ %q is not at+jwt", truncate(h.typ)))
	}
	if h.kid == "" {
		// mandate always names its key; guessing among keys would multiply verification cost.
		return nil, newError(ErrUnknownKey, "no kid in header")
	}
	key, err := v.keys.get(ctx, h.kid)
	if err != nil {
		return nil, err
	}
	if !key.accepts(alg) {
		return nil, newError(ErrSignature, fmt.Sprintf("key %q does not fit alg %q", truncate(h.kid), alg.name))
	}
	sig, err := b64.DecodeString(c.signature)
	if err != nil {
		return nil, wrapError(ErrMalformed, "signature is not base64url", err)
	}
	if !verifySignature(alg, key, c.signingInput, sig) {
		return nil, newError(ErrSignature, "signature does not verify")
	}

	// Only authenticated bytes are JSON-decoded from here on.
	payload, err := b64.DecodeString(c.payload)
	if err != nil {
		return nil, wrapError(ErrMalformed, "payload is not base64url", err)
	}
	claims, err := parseJSONObject(payload)
	if err != nil {
		return nil, wrapError(ErrMalformed, "payload is not a JSON object", err)
	}
	id, err := identityFrom(claims)
	if err != nil {
		return nil, err
	}
	// RFC 9068 §4: "The issuer identifier for the authorization server ... MUST exactly match
	// the value of the iss claim."
	if id.Issuer != v.issuer {
		return nil, newError(ErrIssuer, fmt.Sprintf("iss %q", truncate(id.Issuer)))
	}
	e := &cacheEntry{id: id, key: key, deadline: id.ExpiresAt.Add(v.leeway)}
	// RFC 7519 §4.1.4: "the current date/time MUST be before the expiration date/time listed
	// in the exp claim" (with "some small leeway ... to account for clock skew").
	if !now.Before(e.deadline) {
		return nil, newError(ErrExpired, "exp has passed")
	}
	// RFC 7519 §4.1.5: "the current date/time MUST be after or equal to the not-before
	// date/time listed in the nbf claim". A token issued in the future is refused alike.
	notBefore := id.IssuedAt
	if nbf, ok, err := numericDate(claims, "nbf"); err != nil {
		return nil, err
	} else if ok && nbf.After(notBefore) {
		notBefore = nbf
	}
	e.notBefore = notBefore.Add(-v.leeway)
	if now.Before(e.notBefore) {
		return nil, newError(ErrNotYetValid, "nbf or iat in the future")
	}
	return e, nil
}

// authorize runs the per-call checks on a verified identity.
func (v *Validator) authorize(id *Identity, now time.Time, req Requirements) (*Identity, error) {
	if v.feed != nil {
		last := v.feed.LastSync()
		if last.IsZero() {
			return nil, newError(ErrRevocationStale, "revocation feed has not synced yet")
		}
		if age := now.Sub(last); age > v.staleness {
			return nil, newError(ErrRevocationStale, fmt.Sprintf("revocation feed last synced %s ago", age.Round(time.Millisecond)))
		}
	}
	if v.revocations != nil {
		if what, revoked := v.revocations.check(id); revoked {
			return nil, newError(ErrRevoked, what+" revoked")
		}
	}
	if v.audience != "" && !id.HasAudience(v.audience) {
		return nil, newError(ErrAudience, fmt.Sprintf("aud lacks %q", v.audience))
	}
	if req.Audience != "" && !id.HasAudience(req.Audience) {
		return nil, newError(ErrAudience, fmt.Sprintf("aud lacks %q", truncate(req.Audience)))
	}
	for _, s := range req.Scopes {
		if !id.HasScope(s) {
			return nil, newError(ErrInsufficientScope, fmt.Sprintf("scope %q missing", truncate(s)))
		}
	}
	return id, nil
}

func (v *Validator) allowed(name jwa.SignatureAlgorithm) (algorithm, bool) {
	for _, a := range v.algs {
		if a.name == name {
			return a, true
		}
	}
	return algorithm{}, false
}

// identityFrom reads the claims of an RFC 9068 access token. RFC 9068 §2.2 makes iss, exp,
// aud, sub, client_id, iat and jti required; mandate needs jti for revocation besides.
func identityFrom(claims map[string]any) (*Identity, error) {
	id := &Identity{Claims: claims}
	var err error
	if id.Issuer, err = requiredString(claims, "iss"); err != nil {
		return nil, err
	}
	if id.Subject, err = requiredString(claims, "sub"); err != nil {
		return nil, err
	}
	if id.ClientID, err = requiredString(claims, "client_id"); err != nil {
		return nil, err
	}
	if id.TokenID, err = requiredString(claims, "jti"); err != nil {
		return nil, err
	}
	if id.SubjectIssuer, err = optionalString(claims, "sub_iss"); err != nil {
		return nil, err
	}
	if id.GrantID, err = optionalString(claims, "grant_id"); err != nil {
		return nil, err
	}
	scope, err := optionalString(claims, "scope")
	if err != nil {
		return nil, err
	}
	id.Scopes = strings.Fields(scope)
	if id.Audience, err = audience(claims); err != nil {
		return nil, err
	}
	exp, ok, err := numericDate(claims, "exp")
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, newError(ErrMalformed, `"exp" missing`)
	}
	id.ExpiresAt = exp
	iat, ok, err := numericDate(claims, "iat")
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, newError(ErrMalformed, `"iat" missing`)
	}
	id.IssuedAt = iat
	if id.Ancestors, err = stringArray(claims, "anc"); err != nil {
		return nil, err
	}
	if d, ok := claims["depth"]; ok && d != nil {
		f, isNum := d.(float64)
		if !isNum || f < 0 || f > math.MaxInt32 || f != math.Trunc(f) {
			return nil, newError(ErrMalformed, `"depth" is not a non-negative integer`)
		}
		id.Depth = int(f)
	}
	if a, ok := claims["act"]; ok && a != nil {
		act, isObj := a.(map[string]any)
		if !isObj {
			return nil, newError(ErrMalformed, `"act" is not an object`)
		}
		id.Act = act
		if id.Actors, err = actorChain(act); err != nil {
			return nil, err
		}
	}
	return id, nil
}

// actorChain flattens the nested "act" claim. RFC 8693 §4.1: "The act claim value is a JSON
// object ... the current actor ... and a nested act claim ... the prior actor", so the chain
// comes out current actor first.
func actorChain(act map[string]any) ([]string, error) {
	var chain []string
	for cur := act; cur != nil; {
		if len(chain) == maxActorChain {
			return nil, newError(ErrMalformed, fmt.Sprintf(`"act" nested deeper than %d`, maxActorChain))
		}
		sub, ok := cur["sub"].(string)
		if !ok || sub == "" {
			return nil, newError(ErrMalformed, `"act" without "sub"`)
		}
		chain = append(chain, sub)
		next, present := cur["act"]
		if !present || next == nil {
			break
		}
		if cur, ok = next.(map[string]any); !ok {
			return nil, newError(ErrMalformed, `nested "act" is not an object`)
		}
	}
	return chain, nil
}

// audience reads "aud", which RFC 7519 §4.1.3 allows as a string or an array of strings.
func audience(claims map[string]any) ([]string, error) {
	switch aud := claims["aud"].(type) {
	case string:
		if aud == "" {
			break
		}
		return []string{aud}, nil
	case []any:
		out := make([]string, 0, len(aud))
		for _, a := range aud {
			s, ok := a.(string)
			if !ok || s == "" {
				return nil, newError(ErrMalformed, `"aud" has a non-string member`)
			}
			out = append(out, s)
		}
		if len(out) > 0 {
			return out, nil
		}
	}
	return nil, newError(ErrMalformed, `"aud" missing`)
}

func stringArray(claims map[string]any, name string) ([]string, error) {
	v, ok := claims[name]
	if !ok || v == nil {
		return nil, nil
	}
	arr, ok := v.([]any)
	if !ok {
		return nil, newError(ErrMalformed, fmt.Sprintf("%q is not an array", name))
	}
	out := make([]string, 0, len(arr))
	for _, a := range arr {
		s, ok := a.(string)
		if !ok || s == "" {
			return nil, newError(ErrMalformed, fmt.Sprintf("%q has a non-string member", name))
		}
		out = append(out, s)
	}
	return out, nil
}

// numericDate reads an RFC 7519 §2 NumericDate: seconds since the epoch, possibly fractional.
func numericDate(claims map[string]any, name string) (time.Time, bool, error) {
	v, ok := claims[name]
	if !ok || v == nil {
		return time.Time{}, false, nil
	}
	f, ok := v.(float64)
	if !ok || f < 0 || f > maxNumericDate {
		return time.Time{}, false, newError(ErrMalformed, fmt.Sprintf("%q is not a NumericDate", name))
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)), true, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
