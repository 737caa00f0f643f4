package edge

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	_ "crypto/sha256" // registers crypto.SHA256 for ES256, RS256, PS256
	_ "crypto/sha512" // registers crypto.SHA384 and crypto.SHA512
	"encoding/base64"
	"fmt"
	"io"
	"strings"

	"github.com/lestrrat-go/jwx/v2/jwa"
)

// The token path parses the JWS compact serialization itself and calls the stdlib verifiers
// with keys extracted once from the JWKS: jwx's generic jwt.Parse costs several times the
// signature check, and a verified token must cost little more than its signature. jwx still
// fetches and parses the JWKS.

// b64 is strict unpadded base64url (RFC 7515 §2): non-canonical trailing bits are refused, so a
// token has exactly one spelling.
var b64 = base64.RawURLEncoding.Strict()

type keyFamily uint8

const (
	familyEC keyFamily = iota + 1
	familyEd25519
	familyRSA
)

// algorithm describes one JWS signature algorithm this package can verify (RFC 7518 §3).
type algorithm struct {
	name   jwa.SignatureAlgorithm
	family keyFamily
	hash   crypto.Hash    // zero for EdDSA, which signs the message itself
	curve  elliptic.Curve // ES*: the curve the key must be on
	size   int            // ES*: byte length of each of R and S
	pss    bool           // PS*: RSASSA-PSS rather than PKCS #1 v1.5
}

// lookupAlgorithm returns the verifier description of a supported asymmetric algorithm.
// "none" and the HS* family are deliberately absent: an edge must never accept an unsigned
// token, nor one MACed with a key it would have to share with every resource server.
func lookupAlgorithm(name jwa.SignatureAlgorithm) (algorithm, bool) {
	switch name {
	case jwa.ES256:
		return algorithm{name: name, family: familyEC, hash: crypto.SHA256, curve: elliptic.P256(), size: 32}, true
	case jwa.ES384:
		return algorithm{name: name, family: familyEC, hash: crypto.SHA384, curve: elliptic.P384(), size: 48}, true
	case jwa.ES512:
		return algorithm{name: name, family: familyEC, hash: crypto.SHA512, curve: elliptic.P521(), size: 66}, true
	case jwa.EdDSA:
		return algorithm{name: name, family: familyEd25519}, true
	case jwa.RS256:
		return algorithm{name: name, family: familyRSA, hash: crypto.SHA256}, true
	case jwa.RS384:
		return algorithm{name: name, family: familyRSA, hash: crypto.SHA384}, true
	case jwa.RS512:
		return algorithm{name: name, family: familyRSA, hash: crypto.SHA512}, true
	case jwa.PS256:
		return algorithm{name: name, family: familyRSA, hash: crypto.SHA256, pss: true}, true
	case jwa.PS384:
		return algorithm{name: name, family: familyRSA, hash: crypto.SHA384, pss: true}, true
	case jwa.PS512:
		return algorithm{name: name, family: familyRSA, hash: crypto.SHA512, pss: true}, true
	}
	return algorithm{}, false
}

// compact holds the three segments of a JWS compact serialization, still encoded.
type compact struct {
	signingInput string // BASE64URL(header) "." BASE64URL(payload)
	header       string
	payload      string
	signature    string
}

// splitCompact splits a JWS compact serialization. RFC 7515 §7.1: three base64url segments
// separated by exactly two periods.
func splitCompact(token string) (compact, error) {
	i := strings.IndexByte(token, '.')
	if i < 0 {
		return compact{}, newError(ErrMalformed, "not a JWS compact serialization")
	}
	j := strings.IndexByte(token[i+1:], '.')
	if j < 0 {
		return compact{}, newError(ErrMalformed, "not a JWS compact serialization")
	}
	j += i + 1
	if strings.IndexByte(token[j+1:], '.') >= 0 {
		return compact{}, newError(ErrMalformed, "JWE or too many segments")
	}
	c := compact{signingInput: token[:j], header: token[:i], payload: token[i+1 : j], signature: token[j+1:]}
	if c.header == "" || c.payload == "" || c.signature == "" {
		return compact{}, newError(ErrMalformed, "empty JWS segment")
	}
	return c, nil
}

// joseHeader is the part of the protected header the validator reads.
type joseHeader struct {
	alg jwa.SignatureAlgorithm
	typ string
	kid string
}

// parseHeader decodes the protected header into a map first so that member names match
// exactly (encoding/json matches struct fields case-insensitively, which would let "ALG" stand
// in for "alg"). Of duplicate members the last wins, as with encoding/json.
func parseHeader(seg string) (joseHeader, error) {
	raw, err := b64.DecodeString(seg)
	if err != nil {
		return joseHeader{}, wrapError(ErrMalformed, "header is not base64url", err)
	}
	m, err := parseJSONObject(raw)
	if err != nil {
		return joseHeader{}, wrapError(ErrMalformed, "header is not a JSON object", err)
	}
	// RFC 7515 §4.1.11: "If any of the listed extension Header Parameters are not understood
	// and supported by the recipient, then the JWS is invalid." This validator supports none,
	// which also refuses RFC 7797 unencoded payloads ("b64" must be listed in "crit").
	if _, ok := m["crit"]; ok {
		return joseHeader{}, newError(ErrMalformed, `header has "crit" extensions`)
	}
	if _, ok := m["b64"]; ok {
		return joseHeader{}, newError(ErrMalformed, `header has "b64"`)
	}
	var h joseHeader
	alg, ok := m["alg"].(string)
	if !ok || alg == "" {
		return joseHeader{}, newError(ErrMalformed, `header "alg" missing`)
	}
	h.alg = jwa.SignatureAlgorithm(alg)
	if h.typ, err = optionalString(m, "typ"); err != nil {
		return joseHeader{}, err
	}
	if h.kid, err = optionalString(m, "kid"); err != nil {
		return joseHeader{}, err
	}
	return h, nil
}

// accessTokenType reports whether typ marks an RFC 9068 access token. RFC 9068 §4: "Resource
// servers MUST verify that the typ header value is "at+jwt" or "application/at+jwt" and reject
// tokens carrying any other value." Media types compare case-insensitively (RFC 2045 §2).
func accessTokenType(typ string) bool {
	if len(typ) > len("application/") && strings.EqualFold(typ[:len("application/")], "application/") {
		typ = typ[len("application/"):]
	}
	return strings.EqualFold(typ, "at+jwt")
}

// verifySignature checks sig over the signing input with key under alg.
func verifySignature(alg algorithm, key *verifyKey, signingInput string, sig []byte) bool {
	switch alg.family {
	case familyEd25519:
		// RFC 8037 §3.1: Ed25519 signs the JWS signing input itself.
		return ed25519.Verify(key.ed, []byte(signingInput), sig)
	case familyEC:
		// RFC 7518 §3.4: the signature is R || S, each exactly the curve's byte length; the
		// stdlib wants ASN.1 DER.
		if len(sig) != 2*alg.size {
			return false
		}
		return ecdsa.VerifyASN1(key.ec, digest(alg.hash, signingInput), rawToDER(sig, alg.size))
	case familyRSA:
		d := digest(alg.hash, signingInput)
		if alg.pss {
			// RFC 7518 §3.5: "The size of the salt value is the same size as the hash
			// function output."
			return rsa.VerifyPSS(key.rsa, alg.hash, d, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash}) == nil
		}
		return rsa.VerifyPKCS1v15(key.rsa, alg.hash, d, sig) == nil
	}
	return false
}

func digest(h crypto.Hash, s string) []byte {
	w := h.New()
	_, _ = io.WriteString(w, s) // hash writers never fail
	return w.Sum(nil)
}

// rawToDER converts a JWS R || S ECDSA signature into the ASN.1 DER SEQUENCE of two INTEGERs
// that crypto/ecdsa verifies.
func rawToDER(sig []byte, size int) []byte {
	r := derInt(sig[:size])
	s := derInt(sig[size:])
	body := 2 + len(r) + 2 + len(s)
	out := make([]byte, 0, body+3)
	out = append(out, 0x30)
	if body < 0x80 {
		out = append(out, byte(body))
	} else {
		out = append(out, 0x81, byte(body)) // at most 2*(2+67) bytes for P-521
	}
	out = append(out, 0x02, byte(len(r)))
	out = append(out, r...)
	out = append(out, 0x02, byte(len(s)))
	return append(out, s...)
}

// derInt returns the minimal two's-complement encoding of the unsigned big-endian b.
func derInt(b []byte) []byte {
	for len(b) > 1 && b[0] == 0 {
		b = b[1:]
	}
	if b[0]&0x80 != 0 {
		return append([]byte{0}, b...)
	}
	return b
}

func optionalString(m map[string]any, name string) (string, error) {
	v, ok := m[name]
	if !ok || v == nil {
		return "", nil
	}
	s, ok := v.(string)
	if !ok {
		return "", newError(ErrMalformed, fmt.Sprintf("%q is not a string", name))
	}
	return s, nil
}

func requiredString(m map[string]any, name string) (string, error) {
	s, err := optionalString(m, name)
	if err != nil {
		return "", err
	}
	if s == "" {
		return "", newError(ErrMalformed, fmt.Sprintf("%q missing", name))
	}
	return s, nil
}
