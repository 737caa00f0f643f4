package edge

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
)

// testStart is the fake clock's epoch; tokens are minted relative to it.
var testStart = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// fakeClock is an injectable clock for Config.Now and FeedConfig.Now.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: testStart} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// signingKey is a test key: its private half signs, its public half goes in the JWKS.
type signingKey struct {
	kid  string
	alg  jwa.SignatureAlgorithm
	priv crypto.Signer
}

func newES256Key(t testing.TB, kid string) *signingKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &signingKey{kid: kid, alg: jwa.ES256, priv: k}
}

func newEd25519Key(t testing.TB, kid string) *signingKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &signingKey{kid: kid, alg: jwa.EdDSA, priv: k}
}

// publicJWK returns the key's public JWK with kid, alg and use.
func (k *signingKey) publicJWK(t testing.TB) jwk.Key {
	t.Helper()
	pub, err := jwk.FromRaw(k.priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	for name, v := range map[string]any{jwk.KeyIDKey: k.kid, jwk.AlgorithmKey: k.alg, jwk.KeyUsageKey: "sig"} {
		if err := pub.Set(name, v); err != nil {
			t.Fatal(err)
		}
	}
	return pub
}

// sign builds a JWS compact token by hand, so that tests control every header byte.
func (k *signingKey) sign(t testing.TB, header, claims map[string]any) string {
	t.Helper()
	return k.signInput(t, segment(t, header)+"."+segment(t, claims))
}

// signInput signs an arbitrary JWS signing input and returns the compact token.
func (k *signingKey) signInput(t testing.TB, input string) string {
	t.Helper()
	var sig []byte
	switch priv := k.priv.(type) {
	case *ecdsa.PrivateKey:
		d := sha256.Sum256([]byte(input))
		r, s, err := ecdsa.Sign(rand.Reader, priv, d[:])
		if err != nil {
			t.Fatal(err)
		}
		sig = make([]byte, 64)
		r.FillBytes(sig[:32])
		s.FillBytes(sig[32:])
	case ed25519.PrivateKey:
		sig = ed25519.Sign(priv, []byte(input))
	default:
		t.Fatalf("sign: unsupported key %T", priv)
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// header returns the protected header mandate writes for k.
func (k *signingKey) header() map[string]any {
	return map[string]any{"alg": string(k.alg), "typ": "at+jwt", "kid": k.kid}
}

func segment(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// testIssuer is a broker stand-in: it serves a JWKS over a real HTTP server and mints tokens.
type testIssuer struct {
	t       testing.TB
	srv     *httptest.Server
	url     string
	es      *signingKey
	ed      *signingKey
	fetches atomic.Int32

	mu   sync.Mutex
	jwks []byte
	down bool
	seq  int
}

func newTestIssuer(t testing.TB) *testIssuer {
	t.Helper()
	ti := &testIssuer{t: t, es: newES256Key(t, "es-1"), ed: newEd25519Key(t, "ed-1")}
	ti.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/jwks.json" {
			http.NotFound(w, r)
			return
		}
		ti.fetches.Add(1)
		ti.mu.Lock()
		body, down := ti.jwks, ti.down
		ti.mu.Unlock()
		if down {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/jwk-set+json")
		_, _ = w.Write(body)
	}))
	t.Cleanup(ti.srv.Close)
	ti.url = ti.srv.URL
	ti.publish(ti.es, ti.ed)
	return ti
}

// publish replaces the JWKS with the public halves of keys.
func (ti *testIssuer) publish(keys ...*signingKey) {
	ti.t.Helper()
	set := jwk.NewSet()
	for _, k := range keys {
		if err := set.AddKey(k.publicJWK(ti.t)); err != nil {
			ti.t.Fatal(err)
		}
	}
	b, err := json.Marshal(set)
	if err != nil {
		ti.t.Fatal(err)
	}
	ti.mu.Lock()
	ti.jwks = b
	ti.mu.Unlock()
}

func (ti *testIssuer) setDown(down bool) {
	ti.mu.Lock()
	ti.down = down
	ti.mu.Unlock()
}

// claims returns a delegated token's claims as mandate mints them, issued at now.
func (ti *testIssuer) claims(now time.Time) map[string]any {
	ti.mu.Lock()
	ti.seq++
	n := ti.seq
	ti.mu.Unlock()
	return map[string]any{
		"iss":       ti.url,
		"sub":       "user-1",
		"sub_iss":   "https://idp.example.com",
		"aud":       []string{"https://api.example.com", "https://files.example.com"},
		"client_id": "agent-b",
		"scope":     "files:read mail:read",
		"act":       map[string]any{"sub": "agent-b", "act": map[string]any{"sub": "agent-a"}},
		"may_act":   map[string]any{"sub": "agent-c"},
		"jti":       fmt.Sprintf("jti-%d", n),
		"iat":       now.Unix(),
		"exp":       now.Add(5 * time.Minute).Unix(),
		"grant_id":  "grant-1",
		"anc":       []string{"jti-root", "jti-parent"},
		"depth":     2,
		"ctx":       map[string]any{"tenant": "acme"},
	}
}

// token mints a token with k, letting edit change the claims and header first.
func (ti *testIssuer) token(k *signingKey, now time.Time, edit func(h, c map[string]any)) string {
	ti.t.Helper()
	h, c := k.header(), ti.claims(now)
	if edit != nil {
		edit(h, c)
	}
	return k.sign(ti.t, h, c)
}

const testAudience = "https://api.example.com"

// newValidator returns a validator for ti with the fake clock and an in-process revocation set.
func newValidator(t testing.TB, ti *testIssuer, clock *fakeClock, edit func(*Config)) (*Validator, *RevocationSet) {
	t.Helper()
	set := NewRevocationSet()
	cfg := Config{
		Issuer:           ti.url,
		Audience:         testAudience,
		Revocations:      set,
		NoRevocationFeed: true,
		Now:              clock.Now,
		Realm:            "test",
		Logger:           discardLogger(),
	}
	if edit != nil {
		edit(&cfg)
	}
	v, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return v, set
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// waitFor polls cond until it holds or the test times out; it asserts an outcome, not a
// duration.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
