package broker

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"
)

// testKeys is a one-key KeySource for unit tests.
type testKeys struct {
	kid string
	key *ecdsa.PrivateKey
}

func newTestKeys(t testing.TB) *testKeys {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &testKeys{kid: "k1", key: k}
}

func (k *testKeys) SignToken(payload []byte) (string, error) {
	h, _ := json.Marshal(jwsHeader{Alg: "ES256", Kid: k.kid, Typ: JWTTypeAccessToken})
	return k.signRaw(h, payload)
}

func (k *testKeys) signRaw(h, payload []byte) (string, error) {
	in := b64.EncodeToString(h) + "." + b64.EncodeToString(payload)
	d := sha256.Sum256([]byte(in))
	r, s, err := ecdsa.Sign(rand.Reader, k.key, d[:])
	if err != nil {
		return "", err
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return in + "." + b64.EncodeToString(sig), nil
}

func (k *testKeys) VerificationKey(kid string) (string, crypto.PublicKey, bool) {
	if kid != k.kid {
		return "", nil, false
	}
	return "ES256", &k.key.PublicKey, true
}

const testIssuer = "https://mandate.test"

func mint(t testing.TB, k *testKeys, c Claims) string {
	t.Helper()
	b, _ := json.Marshal(c)
	tok, err := k.SignToken(b)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestParseOwnToken(t *testing.T) {
	k := newTestKeys(t)
	now := time.Unix(1_800_000_000, 0)
	good := Claims{Issuer: testIssuer, Subject: "alice", ClientID: "a", JTI: "j1", IssuedAt: now.Unix(), Expiry: now.Add(time.Minute).Unix(), Audience: Audience{"x"}}
	mut := func(f func(*Claims)) string { c := good; f(&c); return mint(t, k, c) }
	hdr := func(h string) string {
		tok, _ := k.signRaw([]byte(h), []byte(`{"iss":"`+testIssuer+`","sub":"a","client_id":"a","jti":"j","exp":1900000000}`))
		return tok
	}
	cases := []struct {
		name, tok, wantErr string
	}{
		{"valid", mint(t, k, good), ""},
		{"expired", mut(func(c *Claims) { c.Expiry = now.Add(-time.Hour).Unix() }), "expired"},
		{"expired within leeway", mut(func(c *Claims) { c.Expiry = now.Add(-10 * time.Second).Unix() }), ""},
		{"not yet valid", mut(func(c *Claims) { c.NotBefore = now.Add(time.Hour).Unix() }), "not valid yet"},
		{"issued in the future", mut(func(c *Claims) { c.IssuedAt = now.Add(time.Hour).Unix() }), "future"},
		{"no exp", mut(func(c *Claims) { c.Expiry = 0 }), "no exp"},
		{"wrong issuer", mut(func(c *Claims) { c.Issuer = "https://evil" }), "issuer"},
		{"no jti", mut(func(c *Claims) { c.JTI = "" }), "lacks"},
		{"wrong typ", hdr(`{"alg":"ES256","kid":"k1","typ":"JWT"}`), "typ"},
		{"alg none", hdr(`{"alg":"none","kid":"k1","typ":"at+jwt"}`), "alg"},
		{"HS256", hdr(`{"alg":"HS256","kid":"k1","typ":"at+jwt"}`), "alg"},
		{"unknown kid", hdr(`{"alg":"ES256","kid":"zz","typ":"at+jwt"}`), "unknown key"},
		{"garbage", "a.b.c", "header"},
		{"two parts", "a.b", "compact"},
		{"four parts", "a.b.c.d", "compact"},
		{"huge", strings.Repeat("a", MaxTokenSize+1), "larger"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := parseOwnToken(c.tok, testIssuer, k, now, 30*time.Second)
			switch {
			case c.wantErr == "" && err != nil:
				t.Fatalf("got %v, want no error", err)
			case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
				t.Fatalf("got %v, want error containing %q", err, c.wantErr)
			}
		})
	}
	// A flipped signature byte fails.
	tok := mint(t, k, good)
	b := []byte(tok)
	b[len(b)-3] ^= 1
	if _, err := parseOwnToken(string(b), testIssuer, k, now, 0); err == nil {
		t.Fatal("tampered signature accepted")
	}
}

func TestParseExchangeParams(t *testing.T) {
	base := func(kv ...string) url.Values {
		v := url.Values{"subject_token": {"t"}, "subject_token_type": {TokenTypeAccessToken}}
		for i := 0; i+1 < len(kv); i += 2 {
			v.Add(kv[i], kv[i+1])
		}
		return v
	}
	cases := []struct {
		name string
		form url.Values
		code string
	}{
		{"minimal", base(), ""},
		{"no subject", url.Values{"subject_token_type": {TokenTypeAccessToken}}, "invalid_request"},
		{"jwt type", base("requested_token_type", TokenTypeJWT), ""},
		{"id_token requested", base("requested_token_type", TokenTypeIDToken), "invalid_request"},
		{"actor without type", base("actor_token", "x"), "invalid_request"},
		{"resource relative", base("resource", "/x"), "invalid_target"},
		{"resource with fragment", base("resource", "https://a/#f"), "invalid_target"},
		{"multiple resources", base("resource", "https://a/", "resource", "https://b/"), ""},
		{"scope bad char", base("scope", "a\\b"), "invalid_scope"},
		{"too many targets", func() url.Values {
			v := base()
			for i := 0; i < 21; i++ {
				v.Add("audience", "a"+string(rune('a'+i)))
			}
			return v
		}(), "invalid_request"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := parseExchangeParams(c.form)
			got := ""
			if rfc, ok := IsOAuthError(err); ok {
				got = rfc.ErrorField
			} else if err != nil {
				t.Fatalf("non-OAuth error: %v", err)
			}
			if got != c.code {
				t.Fatalf("got %q (%v), want %q", got, err, c.code)
			}
		})
	}
}

func TestActorChain(t *testing.T) {
	a := &Actor{Sub: "c", Act: &Actor{Sub: "b", Act: &Actor{Sub: "a"}}}
	if got := strings.Join(a.Chain(), ","); got != "c,b,a" {
		t.Fatalf("chain: got %q, want c,b,a", got)
	}
	if got := a.Depth(); got != 3 {
		t.Fatalf("depth: got %d, want 3", got)
	}
	var nilActor *Actor
	if nilActor.Chain() != nil || nilActor.Depth() != 0 {
		t.Fatal("nil actor has a chain")
	}
}

func TestAudienceJSON(t *testing.T) {
	for in, want := range map[string]int{`"a"`: 1, `["a","b"]`: 2, `[]`: 0} {
		var a Audience
		if err := json.Unmarshal([]byte(in), &a); err != nil || len(a) != want {
			t.Fatalf("%s: got %v %v, want %d entries", in, a, err, want)
		}
	}
	var a Audience
	if err := json.Unmarshal([]byte(`3`), &a); err == nil {
		t.Fatal("number accepted as aud")
	}
}

// FuzzParseOwnToken: no input panics or is accepted without a valid signature.
func FuzzParseOwnToken(f *testing.F) {
	k := newTestKeys(f)
	now := time.Unix(1_800_000_000, 0)
	f.Add(mint(f, k, Claims{Issuer: testIssuer, Subject: "s", ClientID: "c", JTI: "j", Expiry: now.Add(time.Hour).Unix()}))
	f.Add("e30.e30.")
	f.Add("..")
	f.Add("eyJhbGciOiJub25lIn0.eyJpc3MiOiJ4In0.")
	f.Fuzz(func(t *testing.T, tok string) {
		c, err := parseOwnToken(tok, testIssuer, k, now, time.Minute)
		if err == nil && c == nil {
			t.Fatal("nil claims without error")
		}
		_, _ = peekIssuer(tok)
	})
}

// FuzzParseExchangeParams: any form is answered with an OAuth error or accepted, never a panic.
func FuzzParseExchangeParams(f *testing.F) {
	f.Add("subject_token=t&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token&scope=a+b&resource=https%3A%2F%2Fx%2F")
	f.Add("scope=%22&audience=a&audience=b")
	f.Add("")
	f.Fuzz(func(t *testing.T, body string) {
		v, err := url.ParseQuery(body)
		if err != nil {
			return
		}
		_, err = parseExchangeParams(v)
		if err != nil {
			if _, ok := IsOAuthError(err); !ok {
				t.Fatalf("non-OAuth error %v", err)
			}
		}
	})
}
