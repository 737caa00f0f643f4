package agentclient

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
)

// maxKeyFile bounds a key file read from disk.
const maxKeyFile = 64 << 10

// GenerateKey returns a new ES256 (EC P-256) private key as a JWK. Its "kid" is
// the key's RFC 7638 thumbprint, so the same key always has the same kid.
func GenerateKey() (jwk.Key, error) {
	raw, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("agentclient: generate key: %w", err)
	}
	key, err := jwk.FromRaw(raw)
	if err != nil {
		return nil, fmt.Errorf("agentclient: generate key: %w", err)
	}
	tp, err := key.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("agentclient: key thumbprint: %w", err)
	}
	for k, v := range map[string]any{
		jwk.KeyIDKey:     base64.RawURLEncoding.EncodeToString(tp),
		jwk.AlgorithmKey: jwa.ES256,
		jwk.KeyUsageKey:  "sig",
	} {
		if err := key.Set(k, v); err != nil {
			return nil, fmt.Errorf("agentclient: set %s: %w", k, err)
		}
	}
	return key, nil
}

// LoadOrCreateKey reads the private JWK at path, or generates one and writes it
// there (mode 0600, parent folders 0700) when the file does not exist. created
// reports which happened. The key must be an EC P-256 private key with a kid.
func LoadOrCreateKey(path string) (key jwk.Key, created bool, err error) {
	b, err := readBounded(path)
	switch {
	case err == nil:
		key, err := parsePrivateKey(b)
		if err != nil {
			return nil, false, fmt.Errorf("agentclient: key %s: %w", path, err)
		}
		return key, false, nil
	case !errors.Is(err, os.ErrNotExist):
		return nil, false, fmt.Errorf("agentclient: read key: %w", err)
	}
	key, err = GenerateKey()
	if err != nil {
		return nil, false, err
	}
	out, err := json.Marshal(key)
	if err != nil {
		return nil, false, fmt.Errorf("agentclient: encode key: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, false, fmt.Errorf("agentclient: key folder: %w", err)
	}
	// O_EXCL: two agents starting at once must not overwrite each other's key.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, false, fmt.Errorf("agentclient: write key: %w", err)
	}
	if _, err := f.Write(append(out, '\n')); err != nil {
		f.Close()
		return nil, false, fmt.Errorf("agentclient: write key %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return nil, false, fmt.Errorf("agentclient: write key %s: %w", path, err)
	}
	return key, true, nil
}

func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxKeyFile {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, maxKeyFile)
	}
	return b, nil
}

func parsePrivateKey(b []byte) (jwk.Key, error) {
	key, err := jwk.ParseKey(b)
	if err != nil {
		return nil, fmt.Errorf("not a JWK: %w", err)
	}
	ec, ok := key.(jwk.ECDSAPrivateKey)
	if !ok {
		return nil, errors.New("not an EC private key")
	}
	if ec.Crv() != jwa.P256 {
		return nil, fmt.Errorf("curve %s, want P-256 (ES256)", ec.Crv())
	}
	if key.KeyID() == "" {
		return nil, errors.New("no kid")
	}
	return key, nil
}

// PublicJWKS returns the JSON JWK Set holding the public half of key: what the
// client registers at mandate (the "jwks" of a private_key_jwt client).
func PublicJWKS(key jwk.Key) (json.RawMessage, error) {
	pub, err := key.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("agentclient: public key: %w", err)
	}
	set := jwk.NewSet()
	if err := set.AddKey(pub); err != nil {
		return nil, fmt.Errorf("agentclient: public key: %w", err)
	}
	b, err := json.Marshal(set)
	if err != nil {
		return nil, fmt.Errorf("agentclient: encode JWKS: %w", err)
	}
	return b, nil
}
