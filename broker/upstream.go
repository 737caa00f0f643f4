package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jwt"
)

// TrustedIssuer is an upstream identity provider whose user tokens mandate accepts
// as subject tokens (and, for the grants API, as user credentials).
type TrustedIssuer struct {
	// Issuer is the exact iss value of its tokens.
	Issuer string `yaml:"issuer" json:"issuer"`
	// JWKSURI is where its public keys are fetched from (https, or http on loopback).
	JWKSURI string `yaml:"jwks_uri" json:"jwks_uri,omitempty"`
	// JWKS is an inline public key set, instead of JWKSURI.
	JWKS string `yaml:"jwks" json:"jwks,omitempty"`
	// Audience is the aud its tokens must carry to be usable at mandate (required).
	Audience string `yaml:"audience" json:"audience"`
	// Algorithms allowed for its signatures (default RS256, ES256). none and HS* are never allowed.
	Algorithms []string `yaml:"algorithms" json:"algorithms,omitempty"`
	// ScopeClaim names the claim holding the user's scopes (default "scope"; "scp" arrays are also read).
	ScopeClaim string `yaml:"scope_claim" json:"scope_claim,omitempty"`
}

// UpstreamToken is a verified user token of a trusted issuer.
type UpstreamToken struct {
	Issuer   string
	Subject  string
	Scopes   []string
	Audience []string
	Expiry   time.Time
	Claims   map[string]any
}

var allowedUpstreamAlgs = map[string]bool{
	"RS256": true, "RS384": true, "RS512": true,
	"PS256": true, "PS384": true, "PS512": true,
	"ES256": true, "ES384": true, "ES512": true,
	"EdDSA": true,
}

// Upstream verifies tokens of the trusted upstream issuers. JWKS are fetched only
// from the configured issuers' URIs, cached, and refreshed when a token names an
// unknown kid, at most once per RefreshInterval per issuer.
type Upstream struct {
	issuers map[string]*upstreamIssuer
	cache   *jwk.Cache
	clock   func() time.Time
	leeway  time.Duration
	minGap  time.Duration
	tokens  *verifiedCache[*UpstreamToken]
}

type upstreamIssuer struct {
	cfg    TrustedIssuer
	static jwk.Set
	algs   map[string]bool

	mu          sync.Mutex
	lastRefresh time.Time
}

// UpstreamOptions tune NewUpstream.
type UpstreamOptions struct {
	HTTPClient *http.Client
	Clock      func() time.Time
	Leeway     time.Duration // clock skew allowed on exp/nbf/iat (default 30s)
	// RefreshInterval bounds JWKS refreshes triggered by unknown kids (default 10s).
	RefreshInterval time.Duration
}

// NewUpstream validates the issuer list and prepares the JWKS cache. It does not
// fetch: keys are fetched on first use, so a slow IdP never blocks start-up.
func NewUpstream(ctx context.Context, issuers []TrustedIssuer, opts UpstreamOptions) (*Upstream, error) {
	u := &Upstream{issuers: map[string]*upstreamIssuer{}, clock: opts.Clock, leeway: opts.Leeway, minGap: opts.RefreshInterval,
		tokens: newVerifiedCache[*UpstreamToken](50000)}
	if u.clock == nil {
		u.clock = time.Now
	}
	if u.leeway <= 0 {
		u.leeway = 30 * time.Second
	}
	if u.minGap <= 0 {
		u.minGap = 10 * time.Second
	}
	hc := opts.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	for i, ti := range issuers {
		if err := ti.validate(); err != nil {
			return nil, fmt.Errorf("upstream_issuers[%d]: %w", i, err)
		}
		if _, dup := u.issuers[ti.Issuer]; dup {
			return nil, fmt.Errorf("upstream_issuers[%d]: issuer %q listed twice", i, ti.Issuer)
		}
		ui := &upstreamIssuer{cfg: ti, algs: map[string]bool{}}
		algs := ti.Algorithms
		if len(algs) == 0 {
			algs = []string{"RS256", "ES256"}
		}
		for _, a := range algs {
			ui.algs[a] = true
		}
		if ti.JWKS != "" {
			set, err := jwk.Parse([]byte(ti.JWKS))
			if err != nil {
				return nil, fmt.Errorf("upstream_issuers[%d].jwks: %w", i, err)
			}
			if err := checkPublicSet(set); err != nil {
				return nil, fmt.Errorf("upstream_issuers[%d].jwks: %w", i, err)
			}
			ui.static = set
		} else {
			if u.cache == nil {
				u.cache = jwk.NewCache(ctx)
			}
			if err := u.cache.Register(ti.JWKSURI, jwk.WithHTTPClient(hc), jwk.WithMinRefreshInterval(15*time.Minute)); err != nil {
				return nil, fmt.Errorf("upstream_issuers[%d].jwks_uri: %w", i, err)
			}
		}
		u.issuers[ti.Issuer] = ui
	}
	return u, nil
}

func (ti TrustedIssuer) validate() error {
	if ti.Issuer == "" {
		return errors.New("issuer: required")
	}
	if ti.Audience == "" {
		return errors.New("audience: required (the aud that user tokens carry for mandate)")
	}
	if (ti.JWKSURI == "") == (ti.JWKS == "") {
		return errors.New("jwks_uri or jwks: exactly one is required")
	}
	if ti.JWKSURI != "" && !strings.HasPrefix(ti.JWKSURI, "https://") && !isLoopbackHTTP(ti.JWKSURI) {
		return fmt.Errorf("jwks_uri: %q must be https (http only on loopback)", ti.JWKSURI)
	}
	for _, a := range ti.Algorithms {
		if !allowedUpstreamAlgs[a] {
			return fmt.Errorf("algorithms: %q is not allowed (asymmetric algorithms only: RS*, PS*, ES*, EdDSA)", a)
		}
	}
	return nil
}

func isLoopbackHTTP(u string) bool {
	for _, p := range []string{"http://127.", "http://localhost:", "http://localhost/", "http://[::1]"} {
		if strings.HasPrefix(u, p) {
			return true
		}
	}
	return false
}

func checkPublicSet(set jwk.Set) error {
	for i := 0; i < set.Len(); i++ {
		k, _ := set.Key(i)
		switch k.KeyType() {
		case "oct":
			return errors.New("symmetric keys are not accepted")
		}
		if pk, err := k.PublicKey(); err == nil {
			// A private key in a trust anchor is a misconfiguration; refuse it.
			if b1, _ := json.Marshal(pk); b1 != nil {
				if b2, _ := json.Marshal(k); string(b1) != string(b2) {
					return errors.New("key set contains private key material")
				}
			}
		}
	}
	return nil
}

// Trusted reports whether iss is a configured upstream issuer.
func (u *Upstream) Trusted(iss string) bool {
	_, ok := u.issuers[iss]
	return ok
}

// Issuers lists the trusted issuers.
func (u *Upstream) Issuers() []string {
	out := make([]string, 0, len(u.issuers))
	for k := range u.issuers {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// Verify checks a user token of a trusted issuer: alg allow-list, signature, iss,
// aud, exp, nbf, iat and sub. Errors are safe to show to the client.
//
// A verified token is cached until it expires (the returned value is shared:
// treat it as read-only); a hit re-checks exp and nbf. A key the IdP withdraws
// therefore stops being trusted for new tokens at once and for already-verified
// ones when they expire.
func (u *Upstream) Verify(ctx context.Context, raw string) (*UpstreamToken, error) {
	now := u.clock()
	if t, ok := u.tokens.get(raw, now); ok {
		if nbf, ok := t.Claims["nbf"].(int64); ok && now.Add(u.leeway).Unix() < nbf {
			return nil, tokenErr("token is not valid yet")
		}
		return t, nil
	}
	iss, err := peekIssuer(raw)
	if err != nil {
		return nil, err
	}
	ui, ok := u.issuers[iss]
	if !ok {
		return nil, tokenErr("token issuer %q is not trusted", iss)
	}
	h, _, _, _ := splitJWS(raw)
	hb, err := b64.DecodeString(h)
	if err != nil {
		return nil, tokenErr("token header is not base64url")
	}
	var hdr jwsHeader
	if err := json.Unmarshal(hb, &hdr); err != nil {
		return nil, tokenErr("token header is not JSON")
	}
	if !ui.algs[hdr.Alg] {
		return nil, tokenErr("token alg %q is not allowed for issuer %q", hdr.Alg, iss)
	}
	key, err := u.key(ctx, ui, hdr.Kid)
	if err != nil {
		return nil, err
	}
	if ka := key.Algorithm().String(); ka != "" && ka != hdr.Alg {
		return nil, tokenErr("token alg %q does not match its key", hdr.Alg)
	}
	tok, err := jwt.Parse([]byte(raw),
		jwt.WithKey(jwa.SignatureAlgorithm(hdr.Alg), key),
		jwt.WithValidate(true),
		jwt.WithIssuer(iss),
		jwt.WithAudience(ui.cfg.Audience),
		jwt.WithAcceptableSkew(u.leeway),
		jwt.WithClock(jwt.ClockFunc(func() time.Time { return now })),
		jwt.WithRequiredClaim("sub"),
		jwt.WithRequiredClaim("exp"),
	)
	if err != nil {
		return nil, upstreamErr(err)
	}
	claims, err := tok.AsMap(ctx)
	if err != nil {
		return nil, tokenErr("token claims are malformed")
	}
	for k, v := range claims {
		if t, ok := v.(time.Time); ok {
			claims[k] = t.Unix()
		}
	}
	ut := &UpstreamToken{
		Issuer:   iss,
		Subject:  tok.Subject(),
		Scopes:   scopesFromClaims(claims, ui.cfg.ScopeClaim),
		Audience: tok.Audience(),
		Expiry:   tok.Expiration(),
		Claims:   claims,
	}
	u.tokens.put(raw, ut, ut.Expiry.Add(u.leeway).Unix(), now)
	return ut, nil
}

func upstreamErr(err error) error {
	switch {
	case errors.Is(err, jwt.ErrTokenExpired()):
		return tokenErr("token expired")
	case errors.Is(err, jwt.ErrTokenNotYetValid()):
		return tokenErr("token is not valid yet")
	case errors.Is(err, jwt.ErrInvalidIssuedAt()):
		return tokenErr("token was issued in the future")
	case errors.Is(err, jwt.ErrInvalidAudience()):
		return tokenErr("token audience does not name this server")
	case errors.Is(err, jwt.ErrInvalidIssuer()):
		return tokenErr("token issuer mismatch")
	case errors.Is(err, jwt.ErrRequiredClaim()):
		return tokenErr("token lacks a required claim (sub, exp)")
	}
	msg := err.Error()
	if strings.Contains(msg, "verify") || strings.Contains(msg, "signature") {
		return tokenErr("token signature is invalid")
	}
	return tokenErr("token is invalid")
}

// key finds the verification key by kid, refreshing the issuer's JWKS (rate
// limited) when the kid is unknown, for key rotation at the IdP.
func (u *Upstream) key(ctx context.Context, ui *upstreamIssuer, kid string) (jwk.Key, error) {
	if ui.static != nil {
		return lookupKey(ui.static, kid)
	}
	set, err := u.cache.Get(ctx, ui.cfg.JWKSURI)
	if err != nil {
		return nil, fmt.Errorf("%w: fetch JWKS of %s: %v", ErrUpstreamUnavailable, ui.cfg.Issuer, err)
	}
	if k, err := lookupKey(set, kid); err == nil {
		return k, nil
	}
	ui.mu.Lock()
	now := u.clock()
	if now.Sub(ui.lastRefresh) < u.minGap {
		ui.mu.Unlock()
		return nil, tokenErr("token is signed with an unknown key")
	}
	ui.lastRefresh = now
	ui.mu.Unlock()
	set, err = u.cache.Refresh(ctx, ui.cfg.JWKSURI)
	if err != nil {
		return nil, fmt.Errorf("%w: refresh JWKS of %s: %v", ErrUpstreamUnavailable, ui.cfg.Issuer, err)
	}
	return lookupKey(set, kid)
}

// ErrUpstreamUnavailable means an issuer's keys could not be fetched.
var ErrUpstreamUnavailable = errors.New("upstream issuer unavailable")

func lookupKey(set jwk.Set, kid string) (jwk.Key, error) {
	if kid == "" {
		if set.Len() == 1 {
			k, _ := set.Key(0)
			return k, nil
		}
		return nil, tokenErr("token has no kid")
	}
	k, ok := set.LookupKeyID(kid)
	if !ok {
		return nil, tokenErr("token is signed with an unknown key")
	}
	if u := k.KeyUsage(); u != "" && u != "sig" {
		return nil, tokenErr("token is signed with a key not meant for signatures")
	}
	return k, nil
}

func scopesFromClaims(claims map[string]any, name string) []string {
	if name == "" {
		name = "scope"
	}
	var out []string
	add := func(v any) {
		switch s := v.(type) {
		case string:
			out = append(out, strings.Fields(s)...)
		case []any:
			for _, x := range s {
				if str, ok := x.(string); ok && str != "" && !strings.ContainsAny(str, " \t") {
					out = append(out, str)
				}
			}
		case []string:
			out = append(out, s...)
		}
	}
	add(claims[name])
	if name == "scope" {
		add(claims["scp"])
	}
	slices.Sort(out)
	return slices.Compact(out)
}
