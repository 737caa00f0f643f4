package agentclient_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mandate-dev/mandate/examples/agent/agentclient"
)

func TestLoadOrCreateKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys", "agent.jwk.json")
	k1, created, err := agentclient.LoadOrCreateKey(path)
	if err != nil || !created {
		t.Fatalf("first call: created %v, err %v; want a new key", created, err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode: got %v, want 0600", fi.Mode().Perm())
	}
	k2, created, err := agentclient.LoadOrCreateKey(path)
	if err != nil || created {
		t.Fatalf("second call: created %v, err %v; want the stored key", created, err)
	}
	if k1.KeyID() == "" || k1.KeyID() != k2.KeyID() {
		t.Errorf("kid: got %q then %q, want the same non-empty kid", k1.KeyID(), k2.KeyID())
	}

	// The public JWKS holds no private member.
	jwks, err := agentclient.PublicJWKS(k1)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(jwks), `"d"`) || !strings.Contains(string(jwks), k1.KeyID()) {
		t.Errorf("public JWKS: got %s", jwks)
	}

	// A public key where the private one belongs is refused.
	pub := filepath.Join(t.TempDir(), "pub.jwk.json")
	if err := os.WriteFile(pub, []byte(strings.TrimSuffix(strings.TrimPrefix(string(jwks), `{"keys":[`), `]}`)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := agentclient.LoadOrCreateKey(pub); err == nil || !strings.Contains(err.Error(), "not an EC private key") {
		t.Errorf("public key file: got %v, want a refusal", err)
	}
}

func TestActorChain(t *testing.T) {
	for _, c := range []struct {
		name   string
		claims map[string]any
		want   []string
	}{
		{"none", map[string]any{}, nil},
		{"one hop", map[string]any{"act": map[string]any{"sub": "a"}}, []string{"a"}},
		{"two hops", map[string]any{"act": map[string]any{"sub": "b", "act": map[string]any{"sub": "a"}}}, []string{"b", "a"}},
		{"not an object", map[string]any{"act": "a"}, nil},
	} {
		if got := agentclient.ActorChain(c.claims); !slices.Equal(got, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, got, c.want)
		}
	}
}

func TestShort(t *testing.T) {
	tok := "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"
	if got := agentclient.Short(tok); got != "eyJhbGciOiJF…" {
		t.Errorf("got %q", got)
	}
	if got := agentclient.Short("secret"); strings.Contains(got, "secret") {
		t.Errorf("a short token leaks: %q", got)
	}
}
