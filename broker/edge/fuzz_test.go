package edge

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"
)

// The fuzz target uses fixed keys so that the valid tokens among the seeds in
// testdata/fuzz/FuzzValidate stay valid. Regenerate the seeds with
//
//	EDGE_WRITE_FUZZ_SEEDS=1 go test -run TestWriteFuzzSeeds ./broker/edge/
const fuzzIssuer = "https://broker.example.com"

func fuzzKeys(t testing.TB) (*signingKey, *signingKey) {
	t.Helper()
	d := bytes.Repeat([]byte{0x42}, 32)
	ec, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d)
	if err != nil {
		t.Fatal(err)
	}
	ed := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{0x24}, 32))
	return &signingKey{kid: "es-fuzz", alg: "ES256", priv: ec}, &signingKey{kid: "ed-fuzz", alg: "EdDSA", priv: ed}
}

func fuzzValidator(t testing.TB) *Validator {
	t.Helper()
	es, ed := fuzzKeys(t)
	set := jwk.NewSet()
	for _, k := range []*signingKey{es, ed} {
		if err := set.AddKey(k.publicJWK(t)); err != nil {
			t.Fatal(err)
		}
	}
	revoked := NewRevocationSet()
	if err := revoked.Add(KindToken, "jti-revoked", time.Time{}); err != nil {
		t.Fatal(err)
	}
	v, err := New(context.Background(), Config{
		Issuer:           fuzzIssuer,
		Audience:         testAudience,
		Keys:             set,
		Revocations:      revoked,
		NoRevocationFeed: true,
		CacheSize:        64,
		Now:              func() time.Time { return testStart },
		Logger:           discardLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// fuzzSeeds returns named seed tokens: valid ones and near misses.
func fuzzSeeds(t testing.TB) map[string]string {
	es, ed := fuzzKeys(t)
	claims := func(edit func(map[string]any)) map[string]any {
		c := map[string]any{
			"iss": fuzzIssuer, "sub": "user-1", "sub_iss": "https://idp.example.com",
			"aud": []string{testAudience}, "client_id": "agent-b", "scope": "files:read mail:read",
			"act": map[string]any{"sub": "agent-b", "act": map[string]any{"sub": "agent-a"}},
			"jti": "jti-1", "iat": testStart.Unix(), "exp": testStart.Add(5 * time.Minute).Unix(),
			"grant_id": "grant-1", "anc": []string{"jti-root"}, "depth": 1, "ctx": map[string]any{"k": "v"},
		}
		if edit != nil {
			edit(c)
		}
		return c
	}
	deep := map[string]any{"sub": "a0"}
	for i := 1; i < 40; i++ {
		deep = map[string]any{"sub": fmt.Sprintf("a%d", i), "act": deep}
	}
	return map[string]string{
		"valid_es256":   es.sign(t, es.header(), claims(nil)),
		"valid_eddsa":   ed.sign(t, ed.header(), claims(nil)),
		"revoked":       es.sign(t, es.header(), claims(func(c map[string]any) { c["jti"] = "jti-revoked" })),
		"no_scope":      es.sign(t, es.header(), claims(func(c map[string]any) { delete(c, "scope") })),
		"expired":       es.sign(t, es.header(), claims(func(c map[string]any) { c["exp"] = 1 })),
		"deep_act":      es.sign(t, es.header(), claims(func(c map[string]any) { c["act"] = deep })),
		"float_dates":   es.sign(t, es.header(), claims(func(c map[string]any) { c["exp"] = 1.9e18; c["nbf"] = -1.5 })),
		"null_claims":   es.sign(t, es.header(), map[string]any{"iss": nil, "aud": nil}),
		"alg_none":      segment(t, map[string]any{"alg": "none", "typ": "at+jwt"}) + "." + segment(t, claims(nil)) + ".",
		"crit":          es.sign(t, map[string]any{"alg": "ES256", "typ": "at+jwt", "kid": "es-fuzz", "crit": []string{"b64"}, "b64": false}, claims(nil)),
		"wrong_kid_alg": ed.sign(t, map[string]any{"alg": "ES256", "typ": "at+jwt", "kid": "ed-fuzz"}, claims(nil)),
		"dots":          "..",
		"empty_json":    "e30.e30.e30",
	}
}

// TestWriteFuzzSeeds writes the corpus files; it runs only when asked to.
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("EDGE_WRITE_FUZZ_SEEDS") == "" {
		t.Skip("set EDGE_WRITE_FUZZ_SEEDS=1 to regenerate testdata/fuzz/FuzzValidate")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzValidate")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, tok := range fuzzSeeds(t) {
		body := fmt.Sprintf("go test fuzz v1\nstring(%q)\n", tok)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestFuzzSeedsStillValid guards the committed corpus: the valid seeds must stay valid, or the
// fuzzer would only ever explore the rejection paths.
func TestFuzzSeedsStillValid(t *testing.T) {
	v := fuzzValidator(t)
	for _, name := range []string{"valid_es256", "valid_eddsa"} {
		b, err := os.ReadFile(filepath.Join("testdata", "fuzz", "FuzzValidate", name))
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.SplitN(string(b), "\n", 3)
		tok := strings.TrimSuffix(strings.TrimPrefix(lines[1], `string("`), `")`)
		if _, err := v.Validate(context.Background(), tok, Requirements{Scopes: []string{"files:read"}}); err != nil {
			t.Errorf("seed %s: got %v, want valid", name, err)
		}
	}
}

func FuzzValidate(f *testing.F) {
	for _, tok := range fuzzSeeds(f) {
		f.Add(tok)
	}
	v := fuzzValidator(f)
	f.Fuzz(func(t *testing.T, token string) {
		for range 2 { // cold, then whatever the cache makes of it
			id, err := v.Validate(context.Background(), token, Requirements{Scopes: []string{"files:read"}})
			if err == nil {
				if id == nil || id.Subject == "" || id.ClientID == "" || id.TokenID == "" || len(id.Audience) == 0 {
					t.Fatalf("valid token with an incomplete identity: %+v", id)
				}
				continue
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v is not an *Error", err)
			}
			if s := HTTPStatus(err); s != http.StatusUnauthorized && s != http.StatusForbidden {
				t.Fatalf("HTTPStatus(%v) = %d, want 401 or 403", err, s)
			}
			if ch := WWWAuthenticate(err, "r", []string{"files:read"}); strings.ContainsAny(ch, "\r\n") {
				t.Fatalf("challenge with a line break: %q", ch)
			}
		}
	})
}
