package edge

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"testing"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
)

// TestAlgorithmsInterop checks the hand-written verifier against tokens signed by jwx, the
// library the broker mints with, for every supported algorithm.
func TestAlgorithmsInterop(t *testing.T) {
	ti := newTestIssuer(t)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ec := func(c elliptic.Curve) crypto.Signer {
		k, err := ecdsa.GenerateKey(c, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		alg  jwa.SignatureAlgorithm
		priv crypto.Signer
	}{
		{jwa.ES256, ec(elliptic.P256())},
		{jwa.ES384, ec(elliptic.P384())},
		{jwa.ES512, ec(elliptic.P521())},
		{jwa.EdDSA, edKey},
		{jwa.RS256, rsaKey},
		{jwa.RS384, rsaKey},
		{jwa.RS512, rsaKey},
		{jwa.PS256, rsaKey},
		{jwa.PS384, rsaKey},
		{jwa.PS512, rsaKey},
	} {
		t.Run(tc.alg.String(), func(t *testing.T) {
			clock := newClock()
			k := &signingKey{kid: "k-" + tc.alg.String(), alg: tc.alg, priv: tc.priv}
			set := jwk.NewSet()
			if err := set.AddKey(k.publicJWK(t)); err != nil {
				t.Fatal(err)
			}
			v, _ := newValidator(t, ti, clock, func(c *Config) {
				c.Keys = set
				c.Algorithms = []jwa.SignatureAlgorithm{tc.alg}
			})
			payload, err := json.Marshal(ti.claims(clock.Now()))
			if err != nil {
				t.Fatal(err)
			}
			hdr := jws.NewHeaders()
			_ = hdr.Set(jws.TypeKey, "at+jwt")
			_ = hdr.Set(jws.KeyIDKey, k.kid)
			tok, err := jws.Sign(payload, jws.WithKey(tc.alg, tc.priv, jws.WithProtectedHeaders(hdr)))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := v.Validate(context.Background(), string(tok), Requirements{}); err != nil {
				t.Fatalf("jwx-signed %s: got %v, want valid", tc.alg, err)
			}
			// The same token with a signature character changed must fail.
			i := len(tok) - 10
			bad := string(tok[:i]) + flip(tok[i]) + string(tok[i+1:])
			if _, err := v.Validate(context.Background(), bad, Requirements{}); !errors.Is(err, ErrSignature) {
				t.Fatalf("tampered %s: got %v, want %v", tc.alg, err, ErrSignature)
			}
		})
	}
}

// TestKeySelection: JWKs that must not be used are skipped, and the rest still work.
func TestKeySelection(t *testing.T) {
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	es := newES256Key(t, "es")
	encKey := newES256Key(t, "enc")
	dupA, dupB := newES256Key(t, "dup"), newEd25519Key(t, "dup")
	mismatched := newEd25519Key(t, "mismatch")

	set := jwk.NewSet()
	add := func(k jwk.Key) {
		if err := set.AddKey(k); err != nil {
			t.Fatal(err)
		}
	}
	add(es.publicJWK(t))
	enc := encKey.publicJWK(t)
	_ = enc.Set(jwk.KeyUsageKey, "enc")
	add(enc)
	add(dupA.publicJWK(t))
	add(dupB.publicJWK(t))
	mm := mismatched.publicJWK(t)
	_ = mm.Set(jwk.AlgorithmKey, jwa.ES256)
	add(mm)
	rk, err := jwk.FromRaw(&small.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	_ = rk.Set(jwk.KeyIDKey, "small")
	add(rk)
	noKid, err := jwk.FromRaw(newES256Key(t, "").priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	add(noKid)

	keys, err := extractKeys(set, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(keys), 1; got != want {
		t.Fatalf("usable keys: got %d (%v), want %d", got, keys, want)
	}
	if keys["es"] == nil {
		t.Fatalf("usable keys: got %v, want only kid es", keys)
	}

	ti := newTestIssuer(t)
	clock := newClock()
	v, _ := newValidator(t, ti, clock, func(c *Config) { c.Keys = set })
	for _, k := range []*signingKey{encKey, dupA, dupB} {
		if _, err := v.Validate(context.Background(), ti.token(k, clock.Now(), nil), Requirements{}); !errors.Is(err, ErrUnknownKey) {
			t.Errorf("kid %s: got %v, want %v", k.kid, err, ErrUnknownKey)
		}
	}
}
