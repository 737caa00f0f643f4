package keys

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
)

// The JWS algorithms (RFC 7518 §3.4, RFC 8037 §3.1) mandate signs with.
const (
	ES256 = "ES256" // ECDSA P-256 with SHA-256, the default
	EdDSA = "EdDSA" // Ed25519
)

// es256Size is the byte length of each of r and s in an ES256 signature
// (RFC 7518 §3.4: "the R and S values ... as octet sequences of 32 octets").
const es256Size = 32

// SigningKey is one key mandate signs tokens with. Treat it as read-only: it is
// shared by every goroutine that signs.
type SigningKey struct {
	// KID names the key in the JWS header and in the JWKS.
	KID string
	// Alg is ES256 or EdDSA.
	Alg string
	// Signer holds the private key. It is an *ecdsa.PrivateKey or an
	// ed25519.PrivateKey today; anything implementing crypto.Signer with the same
	// public key type (a KMS, an HSM) would do.
	Signer crypto.Signer
	// Public is Signer's public key.
	Public crypto.PublicKey

	headers []cachedHeader
}

// cachedHeader is a JWS protected header prepared once per key, in JSON and in
// base64url, so the hot path neither marshals nor re-encodes it.
type cachedHeader struct {
	typ  string
	json []byte
	b64  []byte
}

// cachedTypes are the typ values whose headers are prepared when a key is loaded:
// RFC 9068 access tokens, generic JWTs, and no typ at all.
var cachedTypes = []string{"at+jwt", "JWT", ""}

// NewSigningKey wraps signer as a SigningKey named kid, choosing the algorithm
// from its public key: ES256 for ECDSA P-256, EdDSA for Ed25519. Other keys are
// refused.
func NewSigningKey(kid string, signer crypto.Signer) (*SigningKey, error) {
	k, err := newSigningKey(kid, signer)
	if err != nil {
		return nil, fmt.Errorf("keys: %w", err)
	}
	return k, nil
}

func newSigningKey(kid string, signer crypto.Signer) (*SigningKey, error) {
	if kid == "" {
		return nil, errors.New("signing key without a kid")
	}
	if signer == nil {
		return nil, fmt.Errorf("signing key %q: nil signer", kid)
	}
	pub := signer.Public()
	alg, err := algOf(pub)
	if err != nil {
		return nil, fmt.Errorf("signing key %q: %w", kid, err)
	}
	k := &SigningKey{KID: kid, Alg: alg, Signer: signer, Public: pub}
	k.headers = make([]cachedHeader, 0, len(cachedTypes))
	for _, typ := range cachedTypes {
		h := k.buildHeader(typ)
		k.headers = append(k.headers, cachedHeader{typ: typ, json: h, b64: base64.RawURLEncoding.AppendEncode(nil, h)})
	}
	return k, nil
}

// algOf names the JWS algorithm for a public key mandate can sign with.
func algOf(pub crypto.PublicKey) (string, error) {
	switch p := pub.(type) {
	case *ecdsa.PublicKey:
		if p.Curve != elliptic.P256() {
			return "", fmt.Errorf("ECDSA key on %s, want P-256", p.Curve.Params().Name)
		}
		return ES256, nil
	case ed25519.PublicKey:
		if len(p) != ed25519.PublicKeySize {
			return "", fmt.Errorf("Ed25519 public key of %d bytes", len(p))
		}
		return EdDSA, nil
	default:
		return "", fmt.Errorf("unsupported key type %T: want ECDSA P-256 or Ed25519", pub)
	}
}

// jwsHeader is the protected header mandate writes; the field order is the JSON order.
type jwsHeader struct {
	Alg string `json:"alg"`
	Kid string `json:"kid"`
	Typ string `json:"typ,omitempty"`
}

func (k *SigningKey) buildHeader(typ string) []byte {
	b, err := json.Marshal(jwsHeader{Alg: k.Alg, Kid: k.KID, Typ: typ})
	if err != nil {
		panic("keys: marshal JWS header: " + err.Error()) // three strings cannot fail to marshal
	}
	return b
}

// HeaderFor returns the JWS protected header for a token of the given typ, e.g.
// {"alg":"ES256","kid":"...","typ":"at+jwt"}; an empty typ leaves typ out. The
// headers for "at+jwt", "JWT" and "" are built once per key and returned shared:
// callers must not modify the slice. Other typ values are built on each call.
func (k *SigningKey) HeaderFor(typ string) []byte {
	for i := range k.headers {
		if k.headers[i].typ == typ {
			return k.headers[i].json
		}
	}
	return k.buildHeader(typ)
}

// SignJWS signs payload under header and returns the JWS compact serialization
// (RFC 7515 §7.1): base64url(header) "." base64url(payload) "." base64url(signature).
// header should come from HeaderFor, whose base64url form is cached; any other
// header is signed as given, so it must name this key's alg and kid.
//
// ES256 signatures are the 64-byte R || S of RFC 7518 §3.4, not ASN.1 DER.
func (k *SigningKey) SignJWS(header, payload []byte) (string, error) {
	enc := base64.RawURLEncoding
	var h64 []byte
	for i := range k.headers {
		if bytes.Equal(header, k.headers[i].json) {
			h64 = k.headers[i].b64
			break
		}
	}
	hlen := len(h64)
	if h64 == nil {
		hlen = enc.EncodedLen(len(header))
	}
	// Both algorithms produce 64-byte signatures.
	buf := make([]byte, 0, hlen+1+enc.EncodedLen(len(payload))+1+enc.EncodedLen(2*es256Size))
	if h64 != nil {
		buf = append(buf, h64...)
	} else {
		buf = enc.AppendEncode(buf, header)
	}
	buf = append(buf, '.')
	buf = enc.AppendEncode(buf, payload)
	sig, err := k.sign(buf)
	if err != nil {
		return "", fmt.Errorf("keys: sign with %s: %w", k.KID, err)
	}
	buf = append(buf, '.')
	buf = enc.AppendEncode(buf, sig)
	return string(buf), nil
}

// sign returns the JWS signature over the signing input.
func (k *SigningKey) sign(input []byte) ([]byte, error) {
	switch k.Alg {
	case ES256:
		digest := sha256.Sum256(input)
		// crypto.Signer gives ASN.1 DER for ECDSA (what ecdsa.Sign also computes
		// internally before converting to big.Int); JWS wants fixed-width R || S.
		der, err := k.Signer.Sign(rand.Reader, digest[:], crypto.SHA256)
		if err != nil {
			return nil, err
		}
		return derToFixed(der, es256Size)
	case EdDSA:
		sig, err := k.Signer.Sign(rand.Reader, input, crypto.Hash(0))
		if err != nil {
			return nil, err
		}
		if len(sig) != ed25519.SignatureSize {
			return nil, fmt.Errorf("Ed25519 signature of %d bytes", len(sig))
		}
		return sig, nil
	default:
		return nil, fmt.Errorf("unsupported algorithm %q", k.Alg)
	}
}

var errBadDER = errors.New("malformed ECDSA signature")

// derToFixed converts an ECDSA signature from ASN.1 DER, SEQUENCE { INTEGER r,
// INTEGER s } (RFC 3279 §2.2.3), to r || s with each left-padded to size bytes.
// Its input is our own signer's output, but it is strict all the same.
func derToFixed(der []byte, size int) ([]byte, error) {
	if len(der) < 2 || der[0] != 0x30 {
		return nil, errBadDER
	}
	n, in, ok := derLength(der[1:])
	if !ok || n != len(in) {
		return nil, errBadDER
	}
	out := make([]byte, 2*size)
	for i := range 2 {
		if len(in) < 2 || in[0] != 0x02 {
			return nil, errBadDER
		}
		n, rest, ok := derLength(in[1:])
		if !ok || n == 0 || n > len(rest) {
			return nil, errBadDER
		}
		v := rest[:n]
		if v[0]&0x80 != 0 {
			return nil, errBadDER // negative
		}
		if len(v) > 1 && v[0] == 0 && v[1]&0x80 == 0 {
			return nil, errBadDER // not minimal
		}
		if v[0] == 0 {
			v = v[1:]
		}
		if len(v) > size {
			return nil, errBadDER
		}
		copy(out[(i+1)*size-len(v):(i+1)*size], v)
		in = rest[n:]
	}
	if len(in) != 0 {
		return nil, errBadDER
	}
	return out, nil
}

// derLength reads a DER definite length of at most 255 (enough for P-256 and P-384).
func derLength(b []byte) (n int, rest []byte, ok bool) {
	switch {
	case len(b) == 0:
		return 0, nil, false
	case b[0] < 0x80:
		return int(b[0]), b[1:], true
	case b[0] == 0x81 && len(b) >= 2 && b[1] >= 0x80:
		return int(b[1]), b[2:], true
	default:
		return 0, nil, false
	}
}
