// Package devissuer is the local upstream identity provider of dev mode: it mints
// user tokens that the dev configuration trusts, so the quickstart needs no outside
// IdP. It exists only when the server runs with --dev.
package devissuer

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/lestrrat-go/jwx/v2/jwt"
)

// Issuer mints dev user tokens.
type Issuer struct {
	iss      string
	audience string
	priv     jwk.Key
	pub      jwk.Set
	clock    func() time.Time
}

// Open loads the dev issuer's key from dir (creating it on first use). iss is
// the dev issuer's URL and audience the aud its tokens carry (mandate's issuer).
func Open(dir, iss, audience string) (*Issuer, error) {
	path := filepath.Join(dir, "dev-issuer-key.json")
	var key jwk.Key
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		key, err = jwk.ParseKey(b)
		if err != nil {
			return nil, fmt.Errorf("devissuer: parse %s: %w", path, err)
		}
	case errors.Is(err, os.ErrNotExist):
		raw, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("devissuer: generate key: %w", err)
		}
		key, err = jwk.FromRaw(raw)
		if err != nil {
			return nil, fmt.Errorf("devissuer: %w", err)
		}
		_ = key.Set(jwk.KeyIDKey, "dev-"+strings.ToLower(rand.Text()[:10]))
		_ = key.Set(jwk.AlgorithmKey, jwa.ES256)
		_ = key.Set(jwk.KeyUsageKey, "sig")
		out, err := json.Marshal(key)
		if err != nil {
			return nil, fmt.Errorf("devissuer: %w", err)
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("devissuer: %w", err)
		}
		if err := os.WriteFile(path, out, 0o600); err != nil {
			return nil, fmt.Errorf("devissuer: write %s: %w", path, err)
		}
	default:
		return nil, fmt.Errorf("devissuer: read %s: %w", path, err)
	}
	pubKey, err := key.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("devissuer: %w", err)
	}
	set := jwk.NewSet()
	_ = set.AddKey(pubKey)
	return &Issuer{iss: iss, audience: audience, priv: key, pub: set, clock: time.Now}, nil
}

// Issuer returns the dev issuer's iss.
func (i *Issuer) Issuer() string { return i.iss }

// Audience returns the aud of its tokens.
func (i *Issuer) Audience() string { return i.audience }

// JWKS returns the public key set as JSON.
func (i *Issuer) JWKS() string {
	b, _ := json.Marshal(i.pub)
	return string(b)
}

// UserToken describes a token to mint.
type UserToken struct {
	Subject  string
	Scopes   []string
	TTL      time.Duration
	Audience string         // default: mandate's issuer
	Claims   map[string]any // extra claims (reserved ones are refused)
}

var reserved = map[string]bool{"iss": true, "sub": true, "aud": true, "exp": true, "iat": true, "nbf": true, "jti": true, "scope": true}

// Mint signs a user token.
func (i *Issuer) Mint(u UserToken) (string, error) {
	if u.Subject == "" || len(u.Subject) > 255 {
		return "", errors.New("sub must be 1 to 255 characters")
	}
	if u.TTL <= 0 {
		u.TTL = time.Hour
	}
	if u.TTL > 24*time.Hour {
		return "", errors.New("ttl must be at most 24h")
	}
	aud := u.Audience
	if aud == "" {
		aud = i.audience
	}
	now := i.clock()
	b := jwt.NewBuilder().Issuer(i.iss).Subject(u.Subject).Audience([]string{aud}).
		IssuedAt(now).Expiration(now.Add(u.TTL)).JwtID(rand.Text()).
		Claim("scope", strings.Join(u.Scopes, " "))
	for k, v := range u.Claims {
		if reserved[k] {
			return "", fmt.Errorf("claim %q is reserved", k)
		}
		b = b.Claim(k, v)
	}
	tok, err := b.Build()
	if err != nil {
		return "", fmt.Errorf("devissuer: build: %w", err)
	}
	hdr := jws.NewHeaders()
	_ = hdr.Set(jws.TypeKey, "JWT")
	signed, err := jwt.Sign(tok, jwt.WithKey(jwa.ES256, i.priv, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		return "", fmt.Errorf("devissuer: sign: %w", err)
	}
	return string(signed), nil
}
