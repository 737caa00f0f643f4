package clients_test

import (
	"context"
	"testing"
	"time"

	"github.com/mandate-dev/mandate/broker/clients"
	"github.com/mandate-dev/mandate/internal/db/dbtest"
)

// BenchmarkAuthenticateSecret measures the client-authentication hot path of the
// token endpoint: a cached GetClient and a SecretHasher.Compare of the presented secret.
func BenchmarkAuthenticateSecret(b *testing.B) {
	ctx := context.Background()
	h := newHasher()
	s, err := clients.NewStore(dbtest.Open(b, "sqlite"), h, clients.StoreOptions{CacheTTL: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	secret, err := s.Create(ctx, &clients.Client{ID: "bench", Name: "Bench", Type: clients.TypeAgent,
		Scopes: []string{"a", "b", "c"}, Audiences: []string{"https://api.example.com"}})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := s.GetClient(ctx, "bench"); err != nil { // warm the cache
		b.Fatal(err)
	}
	presented := []byte(secret)
	auth := func() {
		fc, err := s.GetClient(ctx, "bench")
		if err != nil {
			b.Fatal(err)
		}
		if err := h.Compare(ctx, fc.GetHashedSecret(), presented); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			auth()
		}
	})
	// The two halves, for reading the figures above.
	b.Run("getclient-only", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := s.GetClient(ctx, "bench"); err != nil {
				b.Fatal(err)
			}
		}
	})
	hash, _ := h.Hash(ctx, presented)
	b.Run("compare-only", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := h.Compare(ctx, hash, presented); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				auth()
			}
		})
	})
}

// BenchmarkGetClientUncached is the same lookup with the cache off (one SQLite
// primary-key read per call), for comparison.
func BenchmarkGetClientUncached(b *testing.B) {
	ctx := context.Background()
	s, err := clients.NewStore(dbtest.Open(b, "sqlite"), newHasher(), clients.StoreOptions{CacheTTL: -1})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := s.Create(ctx, &clients.Client{ID: "bench", Name: "Bench", Type: clients.TypeAgent}); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.GetClient(ctx, "bench"); err != nil {
			b.Fatal(err)
		}
	}
}
