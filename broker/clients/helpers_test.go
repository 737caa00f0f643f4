package clients_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v3"

	"github.com/mandate-dev/mandate/broker/clients"
	"github.com/mandate-dev/mandate/internal/db"
)

// testPepper is a fixed SecretHasher key for tests.
var testPepper = []byte("0123456789abcdef0123456789abcdef")

func newHasher() *clients.SecretHasher { return &clients.SecretHasher{Key: testPepper} }

// fakeClock is an injectable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: time.Unix(1_800_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newStore(t testing.TB, d *db.DB, clock *fakeClock) *clients.Store {
	t.Helper()
	opts := clients.StoreOptions{}
	if clock != nil {
		opts.Clock = clock.Now
	}
	s, err := clients.NewStore(d, newHasher(), opts)
	if err != nil {
		t.Fatalf("NewStore: %v", err)
	}
	return s
}

// jwksOf returns a JWK Set with the public halves of keys, each under its kid.
func jwksOf(t testing.TB, keys map[string]crypto.Signer, alg string) json.RawMessage {
	t.Helper()
	set := jose.JSONWebKeySet{}
	for kid, k := range keys {
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: k.Public(), KeyID: kid, Algorithm: alg})
	}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatalf("marshal JWKS: %v", err)
	}
	return b
}

var (
	keysOnce sync.Once
	ecP256   *ecdsa.PrivateKey
	ecP384   *ecdsa.PrivateKey
	ecP521   *ecdsa.PrivateKey
	rsa2048  *rsa.PrivateKey
	edKey    ed25519.PrivateKey
)

// testKeys generates the test keys once per test binary (RSA is slow).
func testKeys(t testing.TB) {
	t.Helper()
	keysOnce.Do(func() {
		var err error
		must := func(e error) {
			if e != nil && err == nil {
				err = e
			}
		}
		ecP256, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		var e error
		ecP384, e = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		must(e)
		ecP521, e = ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
		must(e)
		rsa2048, e = rsa.GenerateKey(rand.Reader, 2048)
		must(e)
		_, edKey, e = ed25519.GenerateKey(rand.Reader)
		must(e)
		if err != nil {
			panic(err)
		}
	})
}

func mustP256(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// rsaN is the base64url modulus of the shared 2048-bit test key.
func rsaN(t testing.TB) string {
	testKeys(t)
	return base64.RawURLEncoding.EncodeToString(rsa2048.N.Bytes())
}

// oneKey is one public JWK as JSON.
func oneKey(t testing.TB, kid string, k crypto.Signer) string {
	t.Helper()
	b, err := json.Marshal(jose.JSONWebKey{Key: k.Public(), KeyID: kid})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// privateJWKS is a JWK Set holding a private key, which registration must refuse.
func privateJWKS(t testing.TB, k crypto.Signer) string {
	t.Helper()
	b, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: k, KeyID: "k"}}})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func elevenKeys(t testing.TB) string {
	t.Helper()
	parts := make([]string, 11)
	for i := range parts {
		parts[i] = oneKey(t, fmt.Sprintf("k%d", i), mustP256(t))
	}
	return `{"keys":[` + strings.Join(parts, ",") + `]}`
}
