package clients_test

import (
	"context"
	"strings"
	"testing"

	"github.com/mandate-dev/mandate/broker/clients"
	"github.com/mandate-dev/mandate/internal/db/dbtest"
)

func TestSecretHasher(t *testing.T) {
	ctx := context.Background()
	h := newHasher()
	secret := clients.NewSecret()
	if clients.NewSecret() == secret {
		t.Fatal("two secrets are equal")
	}
	if !strings.HasPrefix(secret, clients.SecretPrefix) || strings.ContainsAny(secret, "+/=%") {
		t.Fatalf("secret %q: want prefix %s and URL-safe characters", secret, clients.SecretPrefix)
	}
	hash, err := h.Hash(ctx, []byte(secret))
	if err != nil || len(hash) != 32 {
		t.Fatalf("Hash: got %d bytes, %v", len(hash), err)
	}
	if err := h.Compare(ctx, hash, []byte(secret)); err != nil {
		t.Fatalf("Compare: %v", err)
	}
	other := &clients.SecretHasher{Key: []byte(strings.Repeat("k", 32))}
	for _, tt := range []struct {
		name       string
		h          *clients.SecretHasher
		hash, data []byte
	}{
		{"wrong secret", h, hash, []byte(secret + "x")},
		{"other pepper", other, hash, []byte(secret)},
		{"empty hash", h, nil, []byte(secret)},
		{"empty secret", h, hash, nil},
		{"empty secret against the hash of empty", h, mustHash(t, h, nil), nil},
		{"truncated hash", h, hash[:16], []byte(secret)},
		{"short pepper", &clients.SecretHasher{Key: []byte("short")}, hash, []byte(secret)},
	} {
		if err := tt.h.Compare(ctx, tt.hash, tt.data); err == nil {
			t.Errorf("%s: Compare matched", tt.name)
		}
	}
	if _, err := (&clients.SecretHasher{}).Hash(ctx, []byte("x")); err == nil {
		t.Error("Hash with no pepper succeeded")
	}
	if _, err := clients.NewStore(dbtest.Open(t, "sqlite"), &clients.SecretHasher{Key: []byte("short")}, clients.StoreOptions{}); err == nil {
		t.Error("NewStore accepted a short pepper")
	}
	if _, err := clients.NewStore(nil, h, clients.StoreOptions{}); err == nil {
		t.Error("NewStore accepted a nil database")
	}
}

func mustHash(t *testing.T, h *clients.SecretHasher, data []byte) []byte {
	t.Helper()
	b, err := h.Hash(context.Background(), data)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
