package keys_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"testing"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"

	"github.com/mandate-dev/mandate/broker/keys"
	"github.com/mandate-dev/mandate/internal/db"
)

var algs = []string{keys.ES256, keys.EdDSA}

// claims is a payload shaped like a delegated access token.
var claims = []byte(`{"iss":"https://mandate.example","sub":"user-8f2c","aud":["https://api.example/mail"],` +
	`"client_id":"agent-calendar","scope":"mail.read calendar.write","act":{"sub":"agent-calendar","act":{"sub":"agent-root"}},` +
	`"jti":"01JC6ZK3Q2X9W7V4T8R5N1M0PA","iat":1800000000,"exp":1800000300,"grant_id":"g-51b7",` +
	`"ancestors":["01JC6ZJX0F4D2B8C6A9E7G5H3K","01JC6ZJT9S7Q5O3M1K8I6G4E2C"]}`)

// verifyStdlib checks a compact JWS with the standard library only.
func verifyStdlib(pub *keys.PublicKey, token string) error {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return fmt.Errorf("%d parts, want 3", len(parts))
	}
	input := []byte(parts[0] + "." + parts[1])
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return fmt.Errorf("signature: %w", err)
	}
	switch pub.Alg {
	case keys.ES256:
		if len(sig) != 64 {
			return fmt.Errorf("ES256 signature of %d bytes, want 64 (R || S)", len(sig))
		}
		h := sha256.Sum256(input)
		r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
		if !ecdsa.Verify(pub.Key.(*ecdsa.PublicKey), h[:], r, s) {
			return errors.New("ES256 signature does not verify")
		}
	case keys.EdDSA:
		if !ed25519.Verify(pub.Key.(ed25519.PublicKey), input, sig) {
			return errors.New("EdDSA signature does not verify")
		}
	default:
		return fmt.Errorf("alg %q", pub.Alg)
	}
	return nil
}

func TestSignJWSVerifies(t *testing.T) {
	eachBackend(t, func(t *testing.T, d *db.DB) {
		for _, alg := range algs {
			t.Run(alg, func(t *testing.T) {
				freshKeys(t, d)
				m := newManager(t, d, testKEK(t), keys.Options{Alg: alg})
				k := m.Active()
				if k.Alg != alg {
					t.Fatalf("Active().Alg = %q, want %q", k.Alg, alg)
				}
				set, err := jwk.Parse(m.JWKS())
				if err != nil {
					t.Fatalf("parse JWKS: %v", err)
				}
				pub, ok := m.PublicKey(k.KID)
				if !ok {
					t.Fatalf("PublicKey(%s) not found", k.KID)
				}
				for _, typ := range []string{"at+jwt", "JWT", "", "token-introspection+jwt"} {
					t.Run("typ="+typ, func(t *testing.T) {
						header := k.HeaderFor(typ)
						token, err := k.SignJWS(header, claims)
						if err != nil {
							t.Fatalf("SignJWS: %v", err)
						}
						got, err := jws.Verify([]byte(token), jws.WithKey(jwa.SignatureAlgorithm(alg), k.Public))
						if err != nil {
							t.Fatalf("jws.Verify with key: %v", err)
						}
						if !bytes.Equal(got, claims) {
							t.Errorf("jws.Verify payload = %s, want %s", got, claims)
						}
						if _, err := jws.Verify([]byte(token), jws.WithKeySet(set, jws.WithRequireKid(true))); err != nil {
							t.Errorf("jws.Verify with the JWKS: %v", err)
						}
						if err := verifyStdlib(pub, token); err != nil {
							t.Errorf("stdlib verify: %v", err)
						}

						msg, err := jws.Parse([]byte(token))
						if err != nil {
							t.Fatalf("jws.Parse: %v", err)
						}
						h := msg.Signatures()[0].ProtectedHeaders()
						if h.Algorithm() != jwa.SignatureAlgorithm(alg) || h.KeyID() != k.KID || h.Type() != typ {
							t.Errorf("header = alg %q kid %q typ %q, want %q %q %q", h.Algorithm(), h.KeyID(), h.Type(), alg, k.KID, typ)
						}

						// A flipped payload byte must not verify: the checks above mean something.
						i := strings.IndexByte(token, '.') + 5
						bad := token[:i] + string(token[i]^1) + token[i+1:]
						if err := verifyStdlib(pub, bad); err == nil {
							t.Errorf("stdlib verify accepted a tampered token")
						}
					})
				}
			})
		}
	})
}

func TestHeaderFor(t *testing.T) {
	eachBackend(t, func(t *testing.T, d *db.DB) {
		m := newManager(t, d, testKEK(t), keys.Options{})
		k := m.Active()
		tests := []struct {
			typ  string
			want string
		}{
			{"at+jwt", `{"alg":"ES256","kid":"` + k.KID + `","typ":"at+jwt"}`},
			{"JWT", `{"alg":"ES256","kid":"` + k.KID + `","typ":"JWT"}`},
			{"", `{"alg":"ES256","kid":"` + k.KID + `"}`},
			{`odd"typ`, `{"alg":"ES256","kid":"` + k.KID + `","typ":"odd\"typ"}`},
		}
		for _, tt := range tests {
			if got := string(k.HeaderFor(tt.typ)); got != tt.want {
				t.Errorf("HeaderFor(%q) = %s, want %s", tt.typ, got, tt.want)
			}
			if !json.Valid(k.HeaderFor(tt.typ)) {
				t.Errorf("HeaderFor(%q) is not valid JSON", tt.typ)
			}
		}
	})
}

func TestNewSigningKey(t *testing.T) {
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	tests := []struct {
		name    string
		kid     string
		signer  crypto.Signer
		wantAlg string
		wantErr string
	}{
		{"P-256", "k1", p256, keys.ES256, ""},
		{"Ed25519", "k2", ed, keys.EdDSA, ""},
		{"P-384", "k3", p384, "", "want P-256"},
		{"RSA", "k4", rsaKey, "", "unsupported key type"},
		{"no kid", "", p256, "", "without a kid"},
		{"nil signer", "k5", nil, "", "nil signer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := keys.NewSigningKey(tt.kid, tt.signer)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("NewSigningKey: err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("NewSigningKey: %v", err)
			}
			if k.Alg != tt.wantAlg {
				t.Errorf("Alg = %s, want %s", k.Alg, tt.wantAlg)
			}
			token, err := k.SignJWS(k.HeaderFor("at+jwt"), claims)
			if err != nil {
				t.Fatalf("SignJWS: %v", err)
			}
			if err := verifyStdlib(&keys.PublicKey{KID: k.KID, Alg: k.Alg, Key: k.Public}, token); err != nil {
				t.Errorf("verify: %v", err)
			}
		})
	}
}
