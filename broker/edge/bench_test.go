package edge

import (
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"time"
)

// Benchmarks for the numbers that matter at an edge:
//
//	go test -bench . -benchmem -run '^$' ./broker/edge/
//
// BenchmarkRawES256Verify is the floor a cold validation is measured against: SHA-256 of the
// same token's signing input and crypto/ecdsa.VerifyASN1 with a pre-encoded signature.

// benchSetup returns a validator and a realistic delegated ES256 token (two actors, a grant,
// two ancestors, a context claim) with a revocation set of 10,000 unrelated entries.
func benchSetup(b *testing.B, disableCache bool) (*Validator, *testIssuer, string) {
	b.Helper()
	ti := newTestIssuer(b)
	clock := newClock()
	v, set := newValidator(b, ti, clock, func(c *Config) {
		c.DisableCache = disableCache
		c.Now = fixedNow // the fake clock's mutex would be a tenth of a cached validation
	})
	for i := range 10_000 {
		kind := KindToken
		if i%2 == 0 {
			kind = KindGrant
		}
		if err := set.Add(kind, fmt.Sprintf("revoked-%d", i), clock.Now().Add(time.Hour)); err != nil {
			b.Fatal(err)
		}
	}
	tok := ti.token(ti.es, clock.Now(), nil)
	if _, err := v.Validate(context.Background(), tok, benchReq); err != nil {
		b.Fatal(err)
	}
	b.Logf("token of %d bytes", len(tok))
	return v, ti, tok
}

var benchReq = Requirements{Scopes: []string{"files:read"}}

func fixedNow() time.Time { return testStart }

func BenchmarkValidateCold(b *testing.B) {
	v, _, tok := benchSetup(b, true)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := v.Validate(ctx, tok, benchReq); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkValidateColdDistinct validates a new token every iteration with the cache on, so the
// cost includes hashing, the miss and the insert (and eviction once the cache fills).
func BenchmarkValidateColdDistinct(b *testing.B) {
	v, ti, _ := benchSetup(b, false)
	toks := make([]string, 2048)
	for i := range toks {
		toks[i] = ti.token(ti.es, testStart, nil)
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		// Minting a token per iteration would dominate the measurement, so cycle through
		// pre-minted ones and start over with an empty cache after each pass.
		if i == len(toks) {
			b.StopTimer()
			v.cache = newTokenCache(DefaultCacheSize)
			i = 0
			b.StartTimer()
		}
		if _, err := v.Validate(ctx, toks[i], benchReq); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func BenchmarkValidateColdEdDSA(b *testing.B) {
	ti := newTestIssuer(b)
	clock := newClock()
	v, _ := newValidator(b, ti, clock, func(c *Config) { c.DisableCache = true })
	tok := ti.token(ti.ed, clock.Now(), nil)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Validate(ctx, tok, benchReq); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkValidateCached(b *testing.B) {
	v, _, tok := benchSetup(b, false)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := v.Validate(ctx, tok, benchReq); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkValidateCachedParallel(b *testing.B) {
	v, ti, _ := benchSetup(b, false)
	// Several tokens, as a gateway sees, spread over the cache's shards.
	toks := make([]string, 64)
	for i := range toks {
		toks[i] = ti.token(ti.es, testStart, nil)
		if _, err := v.Validate(context.Background(), toks[i], benchReq); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		i := 0
		for pb.Next() {
			if _, err := v.Validate(ctx, toks[i%len(toks)], benchReq); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
}

// BenchmarkCacheKeySHA256 is what hashing the token with SHA-256 would add to every cached
// validation, for comparison with the maphash-plus-compare lookup the cache uses.
func BenchmarkCacheKeySHA256(b *testing.B) {
	_, _, tok := benchSetup(b, true)
	b.SetBytes(int64(len(tok)))
	b.ReportAllocs()
	var sink [32]byte
	for b.Loop() {
		sink = sha256.Sum256([]byte(tok))
	}
	_ = sink
}

func BenchmarkRawES256Verify(b *testing.B) {
	ti := newTestIssuer(b)
	tok := ti.token(ti.es, testStart, nil)
	i := strings.LastIndexByte(tok, '.')
	input := tok[:i]
	raw, err := base64.RawURLEncoding.DecodeString(tok[i+1:])
	if err != nil {
		b.Fatal(err)
	}
	der := rawToDER(raw, 32)
	pub := &ti.es.priv.(*ecdsa.PrivateKey).PublicKey
	b.ReportAllocs()
	for b.Loop() {
		d := sha256.Sum256([]byte(input))
		if !ecdsa.VerifyASN1(pub, d[:], der) {
			b.Fatal("signature does not verify")
		}
	}
}
