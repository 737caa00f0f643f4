package edge

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
)

// validateCase is one token and what Validate must say about it.
type validateCase struct {
	name    string
	token   func(ti *testIssuer, now time.Time) string
	req     Requirements
	revoke  []RevocationEntry
	wantErr error // nil: valid
}

func validateCases() []validateCase {
	edit := func(f func(h, c map[string]any)) func(*testIssuer, time.Time) string {
		return func(ti *testIssuer, now time.Time) string { return ti.token(ti.es, now, f) }
	}
	return []validateCase{
		{name: "valid ES256", token: edit(nil)},
		{name: "valid EdDSA", token: func(ti *testIssuer, now time.Time) string { return ti.token(ti.ed, now, nil) }},
		{name: "aud as a string", token: edit(func(_, c map[string]any) { c["aud"] = testAudience })},
		{name: "typ application/AT+JWT", token: edit(func(h, _ map[string]any) { h["typ"] = "application/AT+JWT" })},
		{name: "required scopes present", token: edit(nil), req: Requirements{Scopes: []string{"files:read", "mail:read"}}},
		{name: "required extra audience present", token: edit(nil), req: Requirements{Audience: "https://files.example.com"}},
		{name: "expired within leeway", token: edit(func(_, c map[string]any) { c["exp"] = testStart.Add(-10 * time.Second).Unix() })},
		{name: "nbf within leeway", token: edit(func(_, c map[string]any) { c["nbf"] = testStart.Add(20 * time.Second).Unix() })},
		{name: "client token without act or sub_iss", token: edit(func(_, c map[string]any) {
			delete(c, "act")
			delete(c, "sub_iss")
			delete(c, "grant_id")
			delete(c, "anc")
			c["sub"] = "agent-b"
		})},

		{name: "expired", wantErr: ErrExpired, token: edit(func(_, c map[string]any) { c["exp"] = testStart.Add(-31 * time.Second).Unix() })},
		{name: "nbf in the future", wantErr: ErrNotYetValid, token: edit(func(_, c map[string]any) { c["nbf"] = testStart.Add(time.Minute).Unix() })},
		{name: "iat in the future", wantErr: ErrNotYetValid, token: edit(func(_, c map[string]any) { c["iat"] = testStart.Add(time.Minute).Unix() })},
		{name: "wrong issuer", wantErr: ErrIssuer, token: edit(func(_, c map[string]any) { c["iss"] = "https://evil.example.com" })},
		{name: "issuer with trailing slash", wantErr: ErrIssuer, token: func(ti *testIssuer, now time.Time) string {
			return ti.token(ti.es, now, func(_, c map[string]any) { c["iss"] = ti.url + "/" })
		}},
		{name: "wrong audience", wantErr: ErrAudience, token: edit(func(_, c map[string]any) { c["aud"] = []string{"https://other.example.com"} })},
		{name: "required extra audience missing", wantErr: ErrAudience, token: edit(nil), req: Requirements{Audience: "https://mail.example.com"}},
		{name: "scope missing", wantErr: ErrInsufficientScope, token: edit(nil), req: Requirements{Scopes: []string{"files:read", "files:write"}}},
		{name: "no scope claim", wantErr: ErrInsufficientScope, token: edit(func(_, c map[string]any) { delete(c, "scope") }), req: Requirements{Scopes: []string{"files:read"}}},
		{name: "alg none, empty signature", wantErr: ErrMalformed, token: func(ti *testIssuer, now time.Time) string {
			return unsigned(ti, now, "none", "")
		}},
		{name: "alg none, with signature", wantErr: ErrSignature, token: func(ti *testIssuer, now time.Time) string {
			return unsigned(ti, now, "none", "c2ln")
		}},
		{name: "HS256 keyed with the public key", wantErr: ErrSignature, token: hs256WithPublicKey},
		{name: "alg not allowed (ES384)", wantErr: ErrSignature, token: edit(func(h, _ map[string]any) { h["alg"] = "ES384" })},
		{name: "alg does not fit the key", wantErr: ErrSignature, token: edit(func(h, _ map[string]any) { h["alg"] = "EdDSA" })},
		{name: "typ JWT", wantErr: ErrMalformed, token: edit(func(h, _ map[string]any) { h["typ"] = "JWT" })},
		{name: "typ missing", wantErr: ErrMalformed, token: edit(func(h, _ map[string]any) { delete(h, "typ") })},
		{name: "typ not a string", wantErr: ErrMalformed, token: edit(func(h, _ map[string]any) { h["typ"] = 7 })},
		{name: "crit header", wantErr: ErrMalformed, token: edit(func(h, _ map[string]any) { h["crit"] = []string{"exp"}; h["exp"] = 1 })},
		{name: "kid missing", wantErr: ErrUnknownKey, token: edit(func(h, _ map[string]any) { delete(h, "kid") })},
		{name: "kid unknown", wantErr: ErrUnknownKey, token: edit(func(h, _ map[string]any) { h["kid"] = "nope" })},
		{name: "signature tampered", wantErr: ErrSignature, token: func(ti *testIssuer, now time.Time) string {
			tok := ti.token(ti.es, now, nil)
			i := strings.LastIndexByte(tok, '.') + 5
			return tok[:i] + flip(tok[i]) + tok[i+1:]
		}},
		{name: "payload tampered", wantErr: ErrSignature, token: func(ti *testIssuer, now time.Time) string {
			tok := ti.token(ti.es, now, nil)
			parts := strings.Split(tok, ".")
			c := ti.claims(now)
			c["scope"] = "files:read files:write admin"
			return parts[0] + "." + segment(ti.t, c) + "." + parts[2]
		}},
		{name: "signature from another key", wantErr: ErrSignature, token: func(ti *testIssuer, now time.Time) string {
			other := newES256Key(ti.t, "es-1")
			return ti.token(other, now, nil)
		}},
		{name: "jti missing", wantErr: ErrMalformed, token: edit(func(_, c map[string]any) { delete(c, "jti") })},
		{name: "exp missing", wantErr: ErrMalformed, token: edit(func(_, c map[string]any) { delete(c, "exp") })},
		{name: "exp a string", wantErr: ErrMalformed, token: edit(func(_, c map[string]any) { c["exp"] = "tomorrow" })},
		{name: "iat missing", wantErr: ErrMalformed, token: edit(func(_, c map[string]any) { delete(c, "iat") })},
		{name: "sub missing", wantErr: ErrMalformed, token: edit(func(_, c map[string]any) { delete(c, "sub") })},
		{name: "client_id missing", wantErr: ErrMalformed, token: edit(func(_, c map[string]any) { delete(c, "client_id") })},
		{name: "aud missing", wantErr: ErrMalformed, token: edit(func(_, c map[string]any) { delete(c, "aud") })},
		{name: "aud with a number", wantErr: ErrMalformed, token: edit(func(_, c map[string]any) { c["aud"] = []any{testAudience, 1} })},
		{name: "act not an object", wantErr: ErrMalformed, token: edit(func(_, c map[string]any) { c["act"] = "agent-b" })},
		{name: "act without sub", wantErr: ErrMalformed, token: edit(func(_, c map[string]any) { c["act"] = map[string]any{"act": map[string]any{"sub": "a"}} })},
		{name: "anc not strings", wantErr: ErrMalformed, token: edit(func(_, c map[string]any) { c["anc"] = []any{1} })},
		{name: "depth negative", wantErr: ErrMalformed, token: edit(func(_, c map[string]any) { c["depth"] = -1 })},
		{name: "payload not an object", wantErr: ErrMalformed, token: func(ti *testIssuer, now time.Time) string {
			h := segment(ti.t, ti.es.header())
			return ti.es.signInput(ti.t, h+"."+base64.RawURLEncoding.EncodeToString([]byte(`[1,2]`)))
		}},
		{name: "oversized", wantErr: ErrMalformed, token: edit(func(_, c map[string]any) { c["ctx"] = strings.Repeat("x", 17<<10) })},
		{name: "garbage", wantErr: ErrMalformed, token: func(*testIssuer, time.Time) string { return "not a token" }},
		{name: "four segments", wantErr: ErrMalformed, token: func(ti *testIssuer, now time.Time) string { return ti.token(ti.es, now, nil) + ".x" }},
		{name: "padded base64", wantErr: ErrMalformed, token: func(ti *testIssuer, now time.Time) string {
			tok := ti.token(ti.es, now, nil)
			i := strings.IndexByte(tok, '.')
			return tok[:i] + "=" + tok[i:]
		}},

		{name: "jti revoked", wantErr: ErrRevoked, token: edit(func(_, c map[string]any) { c["jti"] = "jti-revoked" }),
			revoke: []RevocationEntry{{Kind: KindToken, ID: "jti-revoked"}}},
		{name: "grant revoked", wantErr: ErrRevoked, token: edit(nil),
			revoke: []RevocationEntry{{Kind: KindGrant, ID: "grant-1"}}},
		{name: "ancestor revoked", wantErr: ErrRevoked, token: edit(nil),
			revoke: []RevocationEntry{{Kind: KindToken, ID: "jti-parent"}}},
		{name: "grant id revoked as a token id does not match", token: edit(nil),
			revoke: []RevocationEntry{{Kind: KindToken, ID: "grant-1"}}},
	}
}

// unsigned builds a token with the given alg and raw signature segment.
func unsigned(ti *testIssuer, now time.Time, alg, sig string) string {
	h := map[string]any{"alg": alg, "typ": "at+jwt", "kid": ti.es.kid}
	return segment(ti.t, h) + "." + segment(ti.t, ti.claims(now)) + "." + sig
}

// hs256WithPublicKey is the classic algorithm-confusion forgery: HMAC keyed with the issuer's
// public key, which an attacker can download.
func hs256WithPublicKey(ti *testIssuer, now time.Time) string {
	pub, err := json.Marshal(ti.es.publicJWK(ti.t))
	if err != nil {
		ti.t.Fatal(err)
	}
	h := map[string]any{"alg": "HS256", "typ": "at+jwt", "kid": ti.es.kid}
	input := segment(ti.t, h) + "." + segment(ti.t, ti.claims(now))
	mac := hmac.New(sha256.New, pub)
	mac.Write([]byte(input))
	return input + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

func flip(c byte) string {
	if c == 'A' {
		return "B"
	}
	return "A"
}

// TestValidate runs every case through a cached validator twice (cold, then the cache path)
// and through an uncached one.
func TestValidate(t *testing.T) {
	ti := newTestIssuer(t)
	for _, mode := range []struct {
		name    string
		noCache bool
	}{{"cached", false}, {"uncached", true}} {
		t.Run(mode.name, func(t *testing.T) {
			for _, tc := range validateCases() {
				t.Run(tc.name, func(t *testing.T) {
					clock := newClock()
					v, set := newValidator(t, ti, clock, func(c *Config) { c.DisableCache = mode.noCache })
					for _, e := range tc.revoke {
						if err := set.Add(e.Kind, e.ID, e.ExpiresAt); err != nil {
							t.Fatal(err)
						}
					}
					tok := tc.token(ti, clock.Now())
					for attempt := 1; attempt <= 2; attempt++ {
						id, err := v.Validate(context.Background(), tok, tc.req)
						if tc.wantErr == nil {
							if err != nil {
								t.Fatalf("attempt %d: got error %v, want none", attempt, err)
							}
							if id == nil {
								t.Fatalf("attempt %d: got nil identity", attempt)
							}
							continue
						}
						if !errors.Is(err, tc.wantErr) {
							t.Fatalf("attempt %d: got error %v, want %v", attempt, err, tc.wantErr)
						}
						if id != nil {
							t.Fatalf("attempt %d: got identity with error", attempt)
						}
					}
				})
			}
		})
	}
}

func TestValidateIdentity(t *testing.T) {
	ti := newTestIssuer(t)
	clock := newClock()
	v, _ := newValidator(t, ti, clock, nil)
	tok := ti.token(ti.es, clock.Now(), func(_, c map[string]any) { c["jti"] = "jti-x" })
	id, err := v.Validate(context.Background(), tok, Requirements{})
	if err != nil {
		t.Fatal(err)
	}
	want := Identity{
		Issuer:        ti.url,
		Subject:       "user-1",
		SubjectIssuer: "https://idp.example.com",
		ClientID:      "agent-b",
		Scopes:        []string{"files:read", "mail:read"},
		Audience:      []string{"https://api.example.com", "https://files.example.com"},
		Actors:        []string{"agent-b", "agent-a"},
		GrantID:       "grant-1",
		TokenID:       "jti-x",
		Ancestors:     []string{"jti-root", "jti-parent"},
		Depth:         2,
		IssuedAt:      testStart,
		ExpiresAt:     testStart.Add(5 * time.Minute),
	}
	got := *id
	got.Act, got.Claims = nil, nil
	got.IssuedAt, got.ExpiresAt = got.IssuedAt.UTC(), got.ExpiresAt.UTC()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("identity:\n got %+v\nwant %+v", got, want)
	}
	if got, want := id.Act["sub"], "agent-b"; got != want {
		t.Errorf("Act[sub]: got %v, want %v", got, want)
	}
	if got, want := id.Claims["ctx"], map[string]any{"tenant": "acme"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Claims[ctx]: got %v, want %v", got, want)
	}
	if got, want := id.Claims["may_act"], map[string]any{"sub": "agent-c"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Claims[may_act]: got %v, want %v", got, want)
	}
	again, err := v.Validate(context.Background(), tok, Requirements{})
	if err != nil {
		t.Fatal(err)
	}
	if again != id {
		t.Errorf("second validation: got a fresh identity, want the cached one")
	}
}

// TestCachedTokenTimeChecks: a cached token must still expire with the clock.
func TestCachedTokenTimeChecks(t *testing.T) {
	ti := newTestIssuer(t)
	clock := newClock()
	v, _ := newValidator(t, ti, clock, nil)
	tok := ti.token(ti.es, clock.Now(), nil)
	if _, err := v.Validate(context.Background(), tok, Requirements{}); err != nil {
		t.Fatal(err)
	}
	if got, want := v.cache.len(), 1; got != want {
		t.Fatalf("cache entries: got %d, want %d", got, want)
	}
	clock.Advance(5*time.Minute + 29*time.Second)
	if _, err := v.Validate(context.Background(), tok, Requirements{}); err != nil {
		t.Fatalf("within leeway: got %v, want valid", err)
	}
	clock.Advance(time.Second)
	if _, err := v.Validate(context.Background(), tok, Requirements{}); !errors.Is(err, ErrExpired) {
		t.Fatalf("after exp+leeway: got %v, want %v", err, ErrExpired)
	}
}

// TestRevokeCachedToken: revocation applies to a token already in the cache, at once.
func TestRevokeCachedToken(t *testing.T) {
	ti := newTestIssuer(t)
	for _, tc := range []struct {
		kind RevocationKind
		id   string
	}{
		{KindToken, "jti-cached"},
		{KindGrant, "grant-1"},
		{KindToken, "jti-root"},
	} {
		t.Run(string(tc.kind)+" "+tc.id, func(t *testing.T) {
			clock := newClock()
			v, set := newValidator(t, ti, clock, nil)
			tok := ti.token(ti.es, clock.Now(), func(_, c map[string]any) { c["jti"] = "jti-cached" })
			if _, err := v.Validate(context.Background(), tok, Requirements{}); err != nil {
				t.Fatal(err)
			}
			if err := set.Add(tc.kind, tc.id, clock.Now().Add(10*time.Minute)); err != nil {
				t.Fatal(err)
			}
			if _, err := v.Validate(context.Background(), tok, Requirements{}); !errors.Is(err, ErrRevoked) {
				t.Fatalf("got %v, want %v", err, ErrRevoked)
			}
			if got, want := v.cache.len(), 1; got != want {
				t.Errorf("cache entries: got %d, want %d (revocation must act on the cached entry)", got, want)
			}
		})
	}
}

func TestKeyRotation(t *testing.T) {
	ti := newTestIssuer(t)
	clock := newClock()
	v, _ := newValidator(t, ti, clock, nil)
	fetches := ti.fetches.Load()

	next := newES256Key(t, "es-2")
	tok := ti.token(next, clock.Now(), nil)
	// The key is not published yet; the refresh right after New is rate limited.
	if _, err := v.Validate(context.Background(), tok, Requirements{}); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("before publication: got %v, want %v", err, ErrUnknownKey)
	}
	if got := ti.fetches.Load(); got != fetches {
		t.Fatalf("JWKS fetches within the refresh interval: got %d, want %d", got, fetches)
	}

	ti.publish(ti.es, ti.ed, next)
	clock.Advance(DefaultJWKSMinRefresh)
	if _, err := v.Validate(context.Background(), tok, Requirements{}); err != nil {
		t.Fatalf("after rotation: got %v, want valid", err)
	}
	if got, want := ti.fetches.Load(), fetches+1; got != want {
		t.Fatalf("JWKS fetches: got %d, want %d", got, want)
	}
	// The old key still validates.
	if _, err := v.Validate(context.Background(), ti.token(ti.es, clock.Now(), nil), Requirements{}); err != nil {
		t.Fatalf("old key: got %v, want valid", err)
	}
}

// TestUnknownKidRefreshBounded: a burst of garbage kids costs the issuer one fetch per interval.
func TestUnknownKidRefreshBounded(t *testing.T) {
	ti := newTestIssuer(t)
	clock := newClock()
	v, _ := newValidator(t, ti, clock, nil)
	clock.Advance(DefaultJWKSMinRefresh)
	before := ti.fetches.Load()

	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok := ti.token(ti.es, clock.Now(), func(h, _ map[string]any) { h["kid"] = fmt.Sprintf("garbage-%d", i) })
			if _, err := v.Validate(context.Background(), tok, Requirements{}); !errors.Is(err, ErrUnknownKey) {
				t.Errorf("kid garbage-%d: got %v, want %v", i, err, ErrUnknownKey)
			}
		}()
	}
	wg.Wait()
	if got, want := ti.fetches.Load()-before, int32(1); got != want {
		t.Errorf("JWKS fetches for 50 unknown kids: got %d, want %d", got, want)
	}
	clock.Advance(DefaultJWKSMinRefresh - time.Second)
	tok := ti.token(ti.es, clock.Now(), func(h, _ map[string]any) { h["kid"] = "garbage-late" })
	if _, err := v.Validate(context.Background(), tok, Requirements{}); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("got %v, want %v", err, ErrUnknownKey)
	}
	if got, want := ti.fetches.Load()-before, int32(1); got != want {
		t.Errorf("JWKS fetches within the interval: got %d, want %d", got, want)
	}
}

// TestKeyWithdrawn: once a refresh drops a key, tokens it signed fail even from the cache.
func TestKeyWithdrawn(t *testing.T) {
	ti := newTestIssuer(t)
	clock := newClock()
	v, _ := newValidator(t, ti, clock, nil)
	tok := ti.token(ti.es, clock.Now(), nil)
	if _, err := v.Validate(context.Background(), tok, Requirements{}); err != nil {
		t.Fatal(err)
	}
	ti.publish(ti.ed)
	clock.Advance(DefaultJWKSMinRefresh)
	if err := v.RefreshKeys(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Validate(context.Background(), tok, Requirements{}); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("got %v, want %v", err, ErrUnknownKey)
	}
	// A key replaced under the same kid is withdrawn too.
	replacement := newEd25519Key(t, "ed-1")
	edTok := ti.token(ti.ed, clock.Now(), nil)
	if _, err := v.Validate(context.Background(), edTok, Requirements{}); err != nil {
		t.Fatal(err)
	}
	ti.publish(replacement)
	clock.Advance(DefaultJWKSMinRefresh)
	if err := v.RefreshKeys(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Validate(context.Background(), edTok, Requirements{}); !errors.Is(err, ErrSignature) {
		t.Fatalf("replaced key: got %v, want %v", err, ErrSignature)
	}
}

// TestPeriodicKeyRefresh: keys older than JWKSRefreshInterval are refetched in the background.
func TestPeriodicKeyRefresh(t *testing.T) {
	ti := newTestIssuer(t)
	clock := newClock()
	v, _ := newValidator(t, ti, clock, nil)
	before := ti.fetches.Load()
	clock.Advance(DefaultJWKSRefresh)
	if _, err := v.Validate(context.Background(), ti.token(ti.es, clock.Now(), nil), Requirements{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "background JWKS refresh", func() bool { return ti.fetches.Load() == before+1 })
}

// TestJWKSOutage: a failed refresh keeps the old keys.
func TestJWKSOutage(t *testing.T) {
	ti := newTestIssuer(t)
	clock := newClock()
	v, _ := newValidator(t, ti, clock, nil)
	ti.setDown(true)
	clock.Advance(DefaultJWKSMinRefresh)
	if err := v.RefreshKeys(context.Background()); err == nil {
		t.Fatal("refresh during outage: got nil error")
	}
	if _, err := v.Validate(context.Background(), ti.token(ti.es, clock.Now(), nil), Requirements{}); err != nil {
		t.Fatalf("old keys after a failed refresh: got %v, want valid", err)
	}
	clock.Advance(DefaultJWKSMinRefresh)
	tok := ti.token(newES256Key(t, "es-9"), clock.Now(), nil)
	if _, err := v.Validate(context.Background(), tok, Requirements{}); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("unknown kid during outage: got %v, want %v", err, ErrUnknownKey)
	}
}

func TestStaticKeys(t *testing.T) {
	ti := newTestIssuer(t)
	clock := newClock()
	set := jwk.NewSet()
	// A static set may hold private keys (the broker's own); only public halves are kept.
	priv, err := jwk.FromRaw(ti.es.priv)
	if err != nil {
		t.Fatal(err)
	}
	_ = priv.Set(jwk.KeyIDKey, ti.es.kid)
	_ = set.AddKey(priv)
	before := ti.fetches.Load()
	v, _ := newValidator(t, ti, clock, func(c *Config) { c.Keys = set })
	if _, err := v.Validate(context.Background(), ti.token(ti.es, clock.Now(), nil), Requirements{}); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Validate(context.Background(), ti.token(ti.ed, clock.Now(), nil), Requirements{}); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("kid outside the static set: got %v, want %v", err, ErrUnknownKey)
	}
	if got := ti.fetches.Load(); got != before {
		t.Errorf("JWKS fetches with static keys: got %d, want %d", got-before, 0)
	}
}

func TestAnyAudience(t *testing.T) {
	ti := newTestIssuer(t)
	clock := newClock()
	v, _ := newValidator(t, ti, clock, func(c *Config) { c.Audience = ""; c.AnyAudience = true })
	tok := ti.token(ti.es, clock.Now(), func(_, c map[string]any) { c["aud"] = "https://anything.example.com" })
	if _, err := v.Validate(context.Background(), tok, Requirements{}); err != nil {
		t.Fatalf("any audience: got %v, want valid", err)
	}
	if _, err := v.Validate(context.Background(), tok, Requirements{Audience: testAudience}); !errors.Is(err, ErrAudience) {
		t.Fatalf("per-route audience: got %v, want %v", err, ErrAudience)
	}
}

func TestNewConfig(t *testing.T) {
	ti := newTestIssuer(t)
	feed, err := NewFeed(FeedConfig{Issuer: ti.url})
	if err != nil {
		t.Fatal(err)
	}
	base := func() Config {
		return Config{Issuer: ti.url, Audience: testAudience, NoRevocationFeed: true, Logger: discardLogger()}
	}
	for _, tc := range []struct {
		name string
		edit func(*Config)
		ok   bool
	}{
		{"defaults", func(*Config) {}, true},
		{"with feed", func(c *Config) { c.NoRevocationFeed = false; c.Feed = feed }, true},
		{"no issuer", func(c *Config) { c.Issuer = "" }, false},
		{"relative issuer", func(c *Config) { c.Issuer = "broker.example.com" }, false},
		{"no audience", func(c *Config) { c.Audience = "" }, false},
		{"audience and any audience", func(c *Config) { c.AnyAudience = true }, false},
		{"alg none", func(c *Config) { c.Algorithms = []jwa.SignatureAlgorithm{jwa.NoSignature} }, false},
		{"alg HS256", func(c *Config) { c.Algorithms = []jwa.SignatureAlgorithm{jwa.ES256, jwa.HS256} }, false},
		{"leeway too large", func(c *Config) { c.Leeway = 6 * time.Minute }, false},
		{"negative leeway", func(c *Config) { c.Leeway = -time.Second }, false},
		{"negative cache size", func(c *Config) { c.CacheSize = -1 }, false},
		{"no feed, not declared", func(c *Config) { c.NoRevocationFeed = false }, false},
		{"feed and no feed", func(c *Config) { c.Feed = feed }, false},
		{"feed with its own set", func(c *Config) { c.NoRevocationFeed, c.Feed, c.Revocations = false, feed, feed.Set() }, true},
		{"feed with another set", func(c *Config) { c.NoRevocationFeed, c.Feed, c.Revocations = false, feed, NewRevocationSet() }, false},
		{"custom feed without a set", func(c *Config) { c.NoRevocationFeed, c.Feed = false, feedFunc(time.Now) }, false},
		{"negative staleness", func(c *Config) { c.NoRevocationFeed, c.Feed, c.Staleness = false, feed, -time.Second }, false},
		{"keys and JWKS URL", func(c *Config) { c.Keys = jwk.NewSet(); c.JWKSURL = ti.url + "/jwks.json" }, false},
		{"empty static keys", func(c *Config) { c.Keys = jwk.NewSet() }, false},
		{"JWKS not found", func(c *Config) { c.JWKSURL = ti.url + "/missing" }, false},
		{"JWKS URL not http", func(c *Config) { c.JWKSURL = "file:///etc/jwks.json" }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := base()
			tc.edit(&cfg)
			_, err := New(context.Background(), cfg)
			if got := err == nil; got != tc.ok {
				t.Fatalf("New: got error %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

// TestCacheBounded: the cache never holds much more than CacheSize tokens.
func TestCacheBounded(t *testing.T) {
	ti := newTestIssuer(t)
	clock := newClock()
	v, _ := newValidator(t, ti, clock, func(c *Config) { c.CacheSize = 8 })
	var first string
	for i := range 40 {
		tok := ti.token(ti.ed, clock.Now(), nil)
		if i == 0 {
			first = tok
		}
		if _, err := v.Validate(context.Background(), tok, Requirements{}); err != nil {
			t.Fatal(err)
		}
	}
	if got, max := v.cache.len(), 8; got > max {
		t.Fatalf("cache entries: got %d, want at most %d", got, max)
	}
	// Evicted tokens still validate, cold.
	if _, err := v.Validate(context.Background(), first, Requirements{}); err != nil {
		t.Fatal(err)
	}
}
