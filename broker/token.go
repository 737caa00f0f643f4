package broker

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"
)

// Token types of RFC 8693 §3 that mandate accepts and issues.
const (
	TokenTypeAccessToken = "urn:ietf:params:oauth:token-type:access_token"
	TokenTypeJWT         = "urn:ietf:params:oauth:token-type:jwt"
	TokenTypeIDToken     = "urn:ietf:params:oauth:token-type:id_token"

	GrantTypeTokenExchange     = "urn:ietf:params:oauth:grant-type:token-exchange"
	GrantTypeClientCredentials = "client_credentials"

	// JWTTypeAccessToken is the typ header of RFC 9068 access tokens.
	JWTTypeAccessToken = "at+jwt"
	// MaxTokenSize bounds any token mandate parses.
	MaxTokenSize = 16 << 10
)

// Actor is one link of the delegation chain (RFC 8693 §4.1): the outermost is the
// current actor and each nested act the one before it.
type Actor struct {
	Sub string `json:"sub"`
	Iss string `json:"iss,omitempty"`
	Act *Actor `json:"act,omitempty"`
}

// Chain returns the actors from the current one inward.
func (a *Actor) Chain() []string {
	var out []string
	for cur := a; cur != nil; cur = cur.Act {
		out = append(out, cur.Sub)
	}
	return out
}

// Depth is the number of links in the chain.
func (a *Actor) Depth() int {
	n := 0
	for cur := a; cur != nil; cur = cur.Act {
		n++
	}
	return n
}

// Audience is the aud claim: a string or an array of strings on the wire.
type Audience []string

// UnmarshalJSON accepts both forms of RFC 7519 §4.1.3.
func (a *Audience) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*a = Audience{s}
		return nil
	}
	var ss []string
	if err := json.Unmarshal(b, &ss); err != nil {
		return errors.New("aud must be a string or an array of strings")
	}
	*a = ss
	return nil
}

// Contains reports whether v is one of the audiences.
func (a Audience) Contains(v string) bool {
	for _, x := range a {
		if x == v {
			return true
		}
	}
	return false
}

// Claims are the claims of a mandate access token (RFC 9068 plus RFC 8693's act
// and may_act, plus mandate's delegation bookkeeping).
type Claims struct {
	Issuer        string         `json:"iss"`
	Subject       string         `json:"sub"`
	SubjectIssuer string         `json:"sub_iss,omitempty"` // the user's upstream issuer
	Audience      Audience       `json:"aud"`
	ClientID      string         `json:"client_id"`
	Scope         string         `json:"scope,omitempty"`
	Act           *Actor         `json:"act,omitempty"`
	MayAct        *Actor         `json:"may_act,omitempty"`
	JTI           string         `json:"jti"`
	IssuedAt      int64          `json:"iat"`
	NotBefore     int64          `json:"nbf,omitempty"`
	Expiry        int64          `json:"exp"`
	GrantID       string         `json:"grant_id,omitempty"`
	Ancestors     []string       `json:"anc,omitempty"` // ancestor token ids, root first
	Depth         int            `json:"depth"`
	Ctx           map[string]any `json:"ctx,omitempty"` // context claims a policy added
}

// Scopes splits the scope claim.
func (c *Claims) Scopes() []string { return strings.Fields(c.Scope) }

// ToMap returns the claims as a generic map (for introspection and policy input).
func (c *Claims) ToMap() map[string]any {
	b, _ := json.Marshal(c)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return m
}

// NewTokenID returns a random token id with 130 bits of entropy.
func NewTokenID() string { return rand.Text() }

// Signer signs compact JWS for the active key.
type Signer interface {
	// SignToken returns the compact JWS of payload with typ at+jwt.
	SignToken(payload []byte) (string, error)
}

// VerifyKeys finds a published public key of mandate's own by kid.
type VerifyKeys interface {
	VerificationKey(kid string) (alg string, pub crypto.PublicKey, ok bool)
}

var b64 = base64.RawURLEncoding

type jwsHeader struct {
	Alg string `json:"alg"`
	Kid string `json:"kid"`
	Typ string `json:"typ"`
}

// errToken describes why a token was refused; it is safe to show to the client.
type errToken struct{ msg string }

func (e *errToken) Error() string { return e.msg }

func tokenErr(format string, args ...any) error { return &errToken{fmt.Sprintf(format, args...)} }

// parseOwnToken verifies a token mandate issued: size, typ, alg, signature, iss,
// exp and nbf. Revocation and holder binding are the caller's to check.
func parseOwnToken(raw, issuer string, keys VerifyKeys, now time.Time, leeway time.Duration) (*Claims, error) {
	if len(raw) > MaxTokenSize {
		return nil, tokenErr("token is larger than %d bytes", MaxTokenSize)
	}
	h, p, s, ok := splitJWS(raw)
	if !ok {
		return nil, tokenErr("token is not a compact JWS")
	}
	hb, err := b64.DecodeString(h)
	if err != nil {
		return nil, tokenErr("token header is not base64url")
	}
	var hdr jwsHeader
	if err := json.Unmarshal(hb, &hdr); err != nil {
		return nil, tokenErr("token header is not JSON")
	}
	if !strings.EqualFold(strings.TrimPrefix(strings.ToLower(hdr.Typ), "application/"), JWTTypeAccessToken) {
		return nil, tokenErr("token typ is %q, want %q", hdr.Typ, JWTTypeAccessToken)
	}
	alg, pub, ok := keys.VerificationKey(hdr.Kid)
	if !ok {
		return nil, tokenErr("token is signed with an unknown key")
	}
	if hdr.Alg != alg {
		return nil, tokenErr("token alg %q does not match its key", hdr.Alg)
	}
	sig, err := b64.DecodeString(s)
	if err != nil {
		return nil, tokenErr("token signature is not base64url")
	}
	signed := raw[:len(h)+1+len(p)]
	if !verifySig(alg, pub, signed, sig) {
		return nil, tokenErr("token signature is invalid")
	}
	pb, err := b64.DecodeString(p)
	if err != nil {
		return nil, tokenErr("token payload is not base64url")
	}
	var c Claims
	if err := json.Unmarshal(pb, &c); err != nil {
		return nil, tokenErr("token claims are malformed")
	}
	if c.Issuer != issuer {
		return nil, tokenErr("token issuer is not this server")
	}
	if err := checkTimes(c.Expiry, c.NotBefore, c.IssuedAt, now, leeway); err != nil {
		return nil, err
	}
	if c.JTI == "" || c.Subject == "" || c.ClientID == "" {
		return nil, tokenErr("token lacks jti, sub or client_id")
	}
	return &c, nil
}

func checkTimes(exp, nbf, iat int64, now time.Time, leeway time.Duration) error {
	n := now.Unix()
	l := int64(leeway / time.Second)
	if exp == 0 {
		return tokenErr("token has no exp")
	}
	if n > exp+l {
		return tokenErr("token expired")
	}
	if nbf != 0 && n+l < nbf {
		return tokenErr("token is not valid yet")
	}
	if iat != 0 && n+l < iat {
		return tokenErr("token was issued in the future")
	}
	return nil
}

func splitJWS(raw string) (h, p, s string, ok bool) {
	i := strings.IndexByte(raw, '.')
	if i < 0 {
		return "", "", "", false
	}
	j := strings.IndexByte(raw[i+1:], '.')
	if j < 0 {
		return "", "", "", false
	}
	j += i + 1
	if strings.IndexByte(raw[j+1:], '.') >= 0 {
		return "", "", "", false
	}
	return raw[:i], raw[i+1 : j], raw[j+1:], i > 0 && j > i+1 && j < len(raw)-1
}

func verifySig(alg string, pub crypto.PublicKey, signed string, sig []byte) bool {
	switch alg {
	case "ES256":
		k, ok := pub.(*ecdsa.PublicKey)
		if !ok || len(sig) != 64 {
			return false
		}
		d := sha256.Sum256([]byte(signed))
		r := new(big.Int).SetBytes(sig[:32])
		s := new(big.Int).SetBytes(sig[32:])
		return ecdsa.Verify(k, d[:], r, s)
	case "EdDSA":
		k, ok := pub.(ed25519.PublicKey)
		if !ok {
			return false
		}
		return ed25519.Verify(k, []byte(signed), sig)
	}
	return false
}

// peekIssuer reads the iss claim of a JWT without verifying it, to route the
// token to the right verifier. Nothing read here is trusted.
func peekIssuer(raw string) (string, error) {
	var c struct {
		Iss string `json:"iss"`
	}
	if err := peekClaims(raw, &c); err != nil {
		return "", err
	}
	if c.Iss == "" {
		return "", tokenErr("token has no iss")
	}
	return c.Iss, nil
}

// peekClaims decodes a JWT's claims into v without verifying anything.
func peekClaims(raw string, v any) error {
	if len(raw) > MaxTokenSize {
		return tokenErr("token is larger than %d bytes", MaxTokenSize)
	}
	_, p, _, ok := splitJWS(raw)
	if !ok {
		return tokenErr("token is not a compact JWS")
	}
	pb, err := b64.DecodeString(p)
	if err != nil {
		return tokenErr("token payload is not base64url")
	}
	if err := json.Unmarshal(pb, v); err != nil {
		return tokenErr("token claims are malformed")
	}
	return nil
}

// ownToken is a verified mandate token and its claims as a generic map (for
// introspection and the policy input). Shared through the cache: read-only.
type ownToken struct {
	claims *Claims
	m      map[string]any
}

// ownToken verifies a token mandate issued, through the verified-token cache.
// A hit re-checks the times; revocation and holder binding stay the caller's.
func (b *Broker) ownToken(raw string, now time.Time, leeway time.Duration) (*ownToken, error) {
	if t, ok := b.own.get(raw, now); ok {
		c := t.claims
		if err := checkTimes(c.Expiry, c.NotBefore, c.IssuedAt, now, leeway); err != nil {
			return nil, err
		}
		return t, nil
	}
	c, err := parseOwnToken(raw, b.cfg.Issuer, b.keys, now, leeway)
	if err != nil {
		return nil, err
	}
	t := &ownToken{claims: c, m: c.ToMap()}
	b.own.put(raw, t, c.Expiry+int64(b.cfg.Leeway/time.Second), now)
	return t, nil
}
