package conformance

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// IdP is the upstream identity provider the suite plays: it holds an ES256 key,
// publishes its JWKS on a loopback HTTP server, and mints user tokens, good and
// deliberately bad. The server under test must trust it (issuer URL(), keys at
// JWKSURL()) before the suite runs.
type IdP struct {
	url   string
	srv   *http.Server
	ln    net.Listener
	done  chan struct{}
	key   *ecdsa.PrivateKey
	kid   string
	rogue *ecdsa.PrivateKey // a key nobody trusts, for bad signatures and unknown kids
	jwks  []byte
	clock func() time.Time

	mu  sync.Mutex
	seq int
}

// IdPOption adjusts NewIdP.
type IdPOption func(*IdP)

// WithIdPKey makes the IdP sign with key (a P-256 key) instead of a fresh one,
// with a kid derived from it: a server that cached the IdP's keys from an
// earlier run then knows them at once.
func WithIdPKey(key *ecdsa.PrivateKey) IdPOption { return func(i *IdP) { i.key = key } }

// NewIdP starts the suite's IdP on addr (host:port; "127.0.0.1:0" picks a free
// port). Its issuer is "http://" + the address it listens on.
func NewIdP(addr string, opts ...IdPOption) (*IdP, error) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	i := &IdP{clock: time.Now, done: make(chan struct{})}
	for _, o := range opts {
		o(i)
	}
	if i.key == nil {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("conformance: idp key: %w", err)
		}
		i.key = k
		i.kid = "conformance-" + strings.ToLower(rand.Text()[:12])
	} else {
		if i.key.Curve != elliptic.P256() {
			return nil, errors.New("conformance: idp key: want a P-256 key")
		}
		i.kid = "conformance-" + keyThumbprint(&i.key.PublicKey)[:16]
	}
	rogue, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("conformance: idp key: %w", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("conformance: idp listen on %s: %w", addr, err)
	}
	i.url, i.ln, i.rogue = "http://"+ln.Addr().String(), ln, rogue
	i.jwks, err = json.Marshal(map[string]any{"keys": []any{ecPublicJWK(&i.key.PublicKey, i.kid)}})
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("conformance: idp jwks: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /jwks.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/jwk-set+json")
		w.Write(i.jwks)
	})
	disco := func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{
			"issuer": i.url, "jwks_uri": i.JWKSURL(),
			"id_token_signing_alg_values_supported": []string{"ES256"},
			"response_types_supported":              []string{"code"},
			"subject_types_supported":               []string{"public"},
		})
	}
	mux.HandleFunc("GET /.well-known/openid-configuration", disco)
	mux.HandleFunc("GET /.well-known/oauth-authorization-server", disco)
	i.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		defer close(i.done)
		i.srv.Serve(ln) //nolint:errcheck // Serve always returns ErrServerClosed after Close.
	}()
	return i, nil
}

// URL is the IdP's issuer (the iss of its tokens).
func (i *IdP) URL() string { return i.url }

// JWKSURL is where its public keys are served.
func (i *IdP) JWKSURL() string { return i.url + "/jwks.json" }

// JWKS returns the exact bytes served at JWKSURL.
func (i *IdP) JWKS() []byte { return slices.Clone(i.jwks) }

// KeyID is the kid of its signing key.
func (i *IdP) KeyID() string { return i.kid }

// Close stops the HTTP server.
func (i *IdP) Close() error {
	err := i.srv.Close()
	<-i.done
	return err
}

// UserToken describes a user token to mint.
type UserToken struct {
	// Subject is the user (sub); required.
	Subject string
	// Scope is the space-separated scope claim.
	Scope string
	// Audience is the aud: the audience the server under test expects; required.
	Audience string
	// TTL is the lifetime (default 1h).
	TTL time.Duration
	// Claims are extra claims; they override the standard ones, so a case can
	// set any claim it needs.
	Claims map[string]any
}

// Mint signs a valid user token with the IdP's key.
func (i *IdP) Mint(u UserToken) (string, error) {
	hdr, claims, err := i.claims(u)
	if err != nil {
		return "", err
	}
	return signES256(i.key, hdr, claims)
}

func (i *IdP) claims(u UserToken) (map[string]any, map[string]any, error) {
	if u.Subject == "" {
		return nil, nil, errors.New("conformance: user token needs a subject")
	}
	if u.Audience == "" {
		return nil, nil, errors.New("conformance: user token needs an audience (the aud the server under test expects)")
	}
	if u.TTL <= 0 {
		u.TTL = time.Hour
	}
	now := i.clock()
	i.mu.Lock()
	i.seq++
	jti := fmt.Sprintf("cf-%d-%s", i.seq, strings.ToLower(rand.Text()[:8]))
	i.mu.Unlock()
	claims := map[string]any{
		"iss": i.url, "sub": u.Subject, "aud": u.Audience,
		"iat": now.Unix(), "exp": now.Add(u.TTL).Unix(), "jti": jti,
	}
	if u.Scope != "" {
		claims["scope"] = u.Scope
	}
	maps.Copy(claims, u.Claims)
	hdr := map[string]any{"alg": "ES256", "typ": "JWT", "kid": i.kid}
	return hdr, claims, nil
}

// BadKinds are the deliberately bad user tokens MintBad makes, each one a way
// an upstream token must be refused.
var BadKinds = []string{
	"alg_none",        // alg "none", no signature
	"hs256",           // HS256 with a random secret
	"hs256_jwks",      // HS256 keyed with the IdP's public JWKS bytes: algorithm confusion
	"expired",         // exp an hour ago
	"not_yet_valid",   // nbf an hour ahead
	"wrong_issuer",    // signed by the IdP's key, iss an issuer nobody trusts
	"wrong_audience",  // aud another server
	"unknown_kid",     // signed by an unknown key, with a kid the JWKS lacks
	"bad_signature",   // the IdP's kid, signed by another key
	"tampered",        // a valid token whose payload was changed after signing
	"no_exp",          // signed, but without exp
	"no_sub",          // signed, but without sub
	"garbage",         // not a JWT at all
	"truncated",       // header and payload only
	"empty_signature", // the IdP's kid and ES256 with an empty signature
	"oversized",       // validly signed, but 20 KiB long
}

// MintBad mints one of BadKinds for the user token u.
func (i *IdP) MintBad(kind string, u UserToken) (string, error) {
	hdr, claims, err := i.claims(u)
	if err != nil {
		return "", err
	}
	now := i.clock()
	switch kind {
	case "alg_none":
		return unsigned(map[string]any{"alg": "none", "typ": "JWT"}, claims)
	case "hs256":
		secret := make([]byte, 32)
		rand.Read(secret)
		return signHS256(secret, map[string]any{"alg": "HS256", "typ": "JWT", "kid": i.kid}, claims)
	case "hs256_jwks":
		return signHS256(i.jwks, map[string]any{"alg": "HS256", "typ": "JWT", "kid": i.kid}, claims)
	case "expired":
		claims["iat"], claims["exp"] = now.Add(-2*time.Hour).Unix(), now.Add(-time.Hour).Unix()
	case "not_yet_valid":
		claims["nbf"], claims["exp"] = now.Add(time.Hour).Unix(), now.Add(2*time.Hour).Unix()
	case "wrong_issuer":
		claims["iss"] = "https://untrusted-idp.example.com"
	case "wrong_audience":
		claims["aud"] = "https://another-server.example.com"
	case "unknown_kid":
		hdr["kid"] = "unknown-" + strings.ToLower(rand.Text()[:8])
		return signES256(i.rogue, hdr, claims)
	case "bad_signature":
		return signES256(i.rogue, hdr, claims)
	case "tampered":
		tok, err := signES256(i.key, hdr, claims)
		if err != nil {
			return "", err
		}
		parts := strings.Split(tok, ".")
		claims["scope"] = "admin mail:read mail:write calendar:read"
		claims["sub"] = "root"
		p, err := b64JSON(claims)
		if err != nil {
			return "", err
		}
		return parts[0] + "." + p + "." + parts[2], nil
	case "oversized":
		claims["padding"] = strings.Repeat("x", 20<<10)
	case "no_exp":
		delete(claims, "exp")
	case "no_sub":
		delete(claims, "sub")
	case "garbage":
		return "this-is-not-a-jwt." + strings.ToLower(rand.Text()), nil
	case "truncated":
		tok, err := signES256(i.key, hdr, claims)
		if err != nil {
			return "", err
		}
		return tok[:strings.LastIndexByte(tok, '.')], nil
	case "empty_signature":
		tok, err := signES256(i.key, hdr, claims)
		if err != nil {
			return "", err
		}
		return tok[:strings.LastIndexByte(tok, '.')+1], nil
	default:
		return "", fmt.Errorf("conformance: unknown bad token kind %q (known: %s)", kind, strings.Join(BadKinds, ", "))
	}
	return signES256(i.key, hdr, claims)
}

// Forge makes a token that claims to come from another issuer (the server
// under test) without its key: kind is "alg_none", "hs256_jwks" (HMAC keyed
// with jwks, that server's published key set) or "rogue_key" (ES256 by a key it
// never published, under kid).
func (i *IdP) Forge(kind string, claims map[string]any, jwks []byte, kid string) (string, error) {
	switch kind {
	case "alg_none":
		return unsigned(map[string]any{"alg": "none", "typ": "at+jwt"}, claims)
	case "hs256_jwks":
		return signHS256(jwks, map[string]any{"alg": "HS256", "typ": "at+jwt", "kid": kid}, claims)
	case "rogue_key":
		return signES256(i.rogue, map[string]any{"alg": "ES256", "typ": "at+jwt", "kid": kid}, claims)
	}
	return "", fmt.Errorf("conformance: unknown forgery %q (known: alg_none, hs256_jwks, rogue_key)", kind)
}

// ForgeKinds are the forgeries Forge makes.
var ForgeKinds = []string{"alg_none", "hs256_jwks", "rogue_key"}

var b64 = base64.RawURLEncoding

func b64JSON(v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("conformance: encode JWT part: %w", err)
	}
	return b64.EncodeToString(b), nil
}

func signingInput(hdr, claims map[string]any) (string, error) {
	h, err := b64JSON(hdr)
	if err != nil {
		return "", err
	}
	p, err := b64JSON(claims)
	if err != nil {
		return "", err
	}
	return h + "." + p, nil
}

func unsigned(hdr, claims map[string]any) (string, error) {
	in, err := signingInput(hdr, claims)
	if err != nil {
		return "", err
	}
	return in + ".", nil
}

func signHS256(secret []byte, hdr, claims map[string]any) (string, error) {
	in, err := signingInput(hdr, claims)
	if err != nil {
		return "", err
	}
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(in))
	return in + "." + b64.EncodeToString(m.Sum(nil)), nil
}

// signES256 signs per RFC 7518 §3.4: the signature is R || S, 32 bytes each.
func signES256(key *ecdsa.PrivateKey, hdr, claims map[string]any) (string, error) {
	in, err := signingInput(hdr, claims)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(in))
	r, s, err := ecdsa.Sign(rand.Reader, key, sum[:])
	if err != nil {
		return "", fmt.Errorf("conformance: sign: %w", err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return in + "." + b64.EncodeToString(sig), nil
}

// keyThumbprint is the RFC 7638 thumbprint of a P-256 public key, base64url.
func keyThumbprint(pub *ecdsa.PublicKey) string {
	j := ecPublicJWK(pub, "")
	// RFC 7638 §3.2: the required members, in lexicographic order, no spaces.
	canon := fmt.Sprintf(`{"crv":"P-256","kty":"EC","x":%q,"y":%q}`, j["x"], j["y"])
	sum := sha256.Sum256([]byte(canon))
	return b64.EncodeToString(sum[:])
}

// ecPublicJWK is the RFC 7517 public JWK of a P-256 key.
func ecPublicJWK(pub *ecdsa.PublicKey, kid string) map[string]any {
	ecdh, _ := pub.ECDH() // a P-256 key always converts
	raw := ecdh.Bytes()   // 0x04 || X || Y, 32 bytes each
	return map[string]any{"kty": "EC", "crv": "P-256", "x": b64.EncodeToString(raw[1:33]), "y": b64.EncodeToString(raw[33:]), "kid": kid, "alg": "ES256", "use": "sig"}
}
