package clients

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"unicode"

	"github.com/go-jose/go-jose/v3"
)

// Members that carry private or symmetric key material (RFC 7518 §6.2.2, §6.3.2, §6.4;
// RFC 8037 §2). A client registers public keys only.
var privateMembers = []string{"d", "p", "q", "dp", "dq", "qi", "oth", "k"}

// Signing algorithms accepted for an RSA key. fosite verifies RS* and PS* assertions
// against RSA keys; RS256 is the default when the key names no alg.
var rsaAlgs = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}

// normalizeJWKS checks a client's JWK Set and returns it in canonical form: public
// members only, every key with its "kid", "use":"sig" and the "alg" the key will be
// verified with, and the one algorithm every key shares.
//
// fosite's private_key_jwt authentication (client_authentication.go) pins each client
// to a single assertion algorithm (GetTokenEndpointAuthSigningAlgorithm) and verifies
// only RS*, PS* and ES* signatures, so a set must not mix algorithms and Ed25519 keys
// are refused here rather than failing later at the token endpoint.
func normalizeJWKS(raw json.RawMessage) (json.RawMessage, string, error) {
	if len(raw) > MaxJWKSBytes {
		return nil, "", invalid("jwks", "is larger than %d bytes", MaxJWKSBytes)
	}
	var set map[string]json.RawMessage
	if err := json.Unmarshal(raw, &set); err != nil || set == nil {
		return nil, "", invalid("jwks", `must be a JWK Set: a JSON object {"keys":[...]} (RFC 7517 §5)`)
	}
	var keys []json.RawMessage
	if err := json.Unmarshal(set["keys"], &keys); err != nil || keys == nil {
		return nil, "", invalid("jwks", `must have a "keys" array (RFC 7517 §5)`)
	}
	if len(keys) == 0 {
		return nil, "", invalid("jwks", "must contain at least one public signing key")
	}
	if len(keys) > MaxJWKSKeys {
		return nil, "", invalid("jwks", "at most %d keys, got %d", MaxJWKSKeys, len(keys))
	}

	out := jose.JSONWebKeySet{Keys: make([]jose.JSONWebKey, 0, len(keys))}
	setAlg := ""
	for i, rk := range keys {
		k, err := normalizeJWK(i, rk)
		if err != nil {
			return nil, "", err
		}
		for _, prev := range out.Keys {
			if prev.KeyID == k.KeyID {
				return nil, "", invalid("jwks", "key %d: kid %q is used by another key in the set", i, k.KeyID)
			}
		}
		if setAlg == "" {
			setAlg = k.Algorithm
		} else if k.Algorithm != setAlg {
			return nil, "", invalid("jwks", "key %d (kid %q) is for %s but key 0 is for %s: all keys of a client must use one algorithm, because the token endpoint pins each client to a single assertion algorithm", i, k.KeyID, k.Algorithm, setAlg)
		}
		out.Keys = append(out.Keys, k)
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil, "", invalid("jwks", "cannot be re-encoded: %v", err)
	}
	return b, setAlg, nil
}

func normalizeJWK(i int, raw json.RawMessage) (jose.JSONWebKey, error) {
	var zero jose.JSONWebKey
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil || m == nil {
		return zero, invalid("jwks", "key %d is not a JSON object", i)
	}
	str := func(name string) (string, bool, error) {
		v, ok := m[name]
		if !ok {
			return "", false, nil
		}
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return "", true, invalid("jwks", "key %d: %q must be a string", i, name)
		}
		return s, true, nil
	}

	// Case-insensitively, so that no JSON decoder anywhere can be talked into
	// reading private material that this check missed.
	for name := range m {
		if slices.Contains(privateMembers, strings.ToLower(name)) {
			return zero, invalid("jwks", "key %d contains private or symmetric key material (%q): register only the public key", i, name)
		}
	}

	kid, ok, err := str("kid")
	if err != nil {
		return zero, err
	}
	if !ok || kid == "" {
		return zero, invalid("jwks", `key %d has no "kid": every key needs one so that assertions can name it`, i)
	}
	if len(kid) > maxKeyIDLen || strings.ContainsFunc(kid, unicode.IsControl) {
		return zero, invalid("jwks", "key %d: kid must be at most %d bytes without control characters", i, maxKeyIDLen)
	}
	use, hasUse, err := str("use")
	if err != nil {
		return zero, err
	}
	if hasUse && use != "sig" {
		return zero, invalid("jwks", `key %d (kid %q): "use" must be "sig" or absent, got %q`, i, kid, use)
	}
	if v, ok := m["key_ops"]; ok {
		var ops []string
		if err := json.Unmarshal(v, &ops); err != nil {
			return zero, invalid("jwks", `key %d (kid %q): "key_ops" must be an array of strings`, i, kid)
		}
		for _, op := range ops {
			if op != "verify" {
				return zero, invalid("jwks", `key %d (kid %q): "key_ops" may only contain "verify", got %q`, i, kid, op)
			}
		}
	}
	alg, _, err := str("alg")
	if err != nil {
		return zero, err
	}
	kty, _, err := str("kty")
	if err != nil {
		return zero, err
	}
	crv, _, err := str("crv")
	if err != nil {
		return zero, err
	}

	switch kty {
	case "EC", "RSA":
	case "OKP":
		if crv == "Ed25519" {
			return zero, invalid("jwks", "key %d (kid %q): Ed25519 keys are not supported for private_key_jwt: the token endpoint verifies client assertions signed with ES256, ES384, RS* or PS* only (EdDSA assertions are refused); register an EC P-256 key", i, kid)
		}
		return zero, invalid("jwks", "key %d (kid %q): OKP curve %q is not supported; use EC P-256, P-384 or RSA", i, kid, crv)
	case "oct":
		return zero, invalid("jwks", "key %d (kid %q): symmetric (oct) keys are not accepted; register a public EC or RSA key", i, kid)
	case "":
		return zero, invalid("jwks", `key %d (kid %q) has no "kty"`, i, kid)
	default:
		return zero, invalid("jwks", "key %d (kid %q): key type %q is not supported; use EC P-256, P-384 or RSA", i, kid, kty)
	}

	var parsed jose.JSONWebKey
	if err := parsed.UnmarshalJSON(raw); err != nil {
		return zero, invalid("jwks", "key %d (kid %q) is not a valid JWK: %s", i, kid, strings.TrimPrefix(err.Error(), "go-jose/go-jose: "))
	}

	switch pub := parsed.Key.(type) {
	case *ecdsa.PublicKey:
		want := ""
		switch pub.Curve {
		case elliptic.P256():
			want = "ES256"
		case elliptic.P384():
			want = "ES384"
		default:
			return zero, invalid("jwks", "key %d (kid %q): curve %s is not supported; use P-256 or P-384", i, kid, pub.Curve.Params().Name)
		}
		if alg != "" && alg != want {
			return zero, invalid("jwks", "key %d (kid %q): alg %q does not fit a %s key; use %s", i, kid, alg, pub.Curve.Params().Name, want)
		}
		alg = want
	case *rsa.PublicKey:
		if bits := pub.N.BitLen(); bits < minRSABits || bits > maxRSABits {
			return zero, invalid("jwks", "key %d (kid %q): RSA modulus is %d bits; it must be %d to %d bits", i, kid, bits, minRSABits, maxRSABits)
		}
		if err := checkRSAExponent(m["e"]); err != nil {
			return zero, invalid("jwks", "key %d (kid %q): %s", i, kid, err)
		}
		if alg == "" {
			alg = "RS256"
		} else if !slices.Contains(rsaAlgs, alg) {
			return zero, invalid("jwks", "key %d (kid %q): alg %q does not fit an RSA key; use one of %s", i, kid, alg, strings.Join(rsaAlgs, ", "))
		}
	case ed25519.PublicKey:
		return zero, invalid("jwks", "key %d (kid %q): Ed25519 keys are not supported for private_key_jwt", i, kid)
	default:
		return zero, invalid("jwks", "key %d (kid %q) is not a public EC or RSA key", i, kid)
	}
	return jose.JSONWebKey{Key: parsed.Key, KeyID: kid, Algorithm: alg, Use: "sig"}, nil
}

// checkRSAExponent refuses exponents that are even, below 3 or too wide for an int32:
// go-jose would silently truncate a wide one.
func checkRSAExponent(raw json.RawMessage) error {
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return fmt.Errorf(`"e" must be a base64url string`)
	}
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil {
		return fmt.Errorf(`"e" is not base64url`)
	}
	b = bytes.TrimLeft(b, "\x00")
	if len(b) == 0 || len(b) > 4 {
		return fmt.Errorf("RSA public exponent is out of range")
	}
	var e uint64
	for _, c := range b {
		e = e<<8 | uint64(c)
	}
	if e < 3 || e%2 == 0 || e > 1<<31-1 {
		return fmt.Errorf("RSA public exponent %d is not acceptable", e)
	}
	return nil
}

// parseJWKS turns a stored, normalised JWKS into go-jose's form for fosite,
// re-checking it (rows may have been written by other tools).
func parseJWKS(raw json.RawMessage) (*jose.JSONWebKeySet, string, error) {
	norm, alg, err := normalizeJWKS(raw)
	if err != nil {
		return nil, "", err
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(norm, &set); err != nil {
		return nil, "", fmt.Errorf("clients: parse normalised JWKS: %w", err)
	}
	return &set, alg, nil
}
