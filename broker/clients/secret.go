package clients

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"sync"

	"github.com/ory/fosite"
)

// SecretPrefix starts every client secret, so that secret scanners and humans
// can recognise a leaked one.
const SecretPrefix = "mnd_cs_"

// secretBytes is the entropy of a client secret: 256 bits.
const secretBytes = 32

// MinPepperLen is the shortest SecretHasher key accepted.
const MinPepperLen = 32

var (
	errSecretMismatch = errors.New("clients: client secret does not match")
	errNoPepper       = fmt.Errorf("clients: secret hasher key must be at least %d bytes", MinPepperLen)
)

// NewSecret returns a fresh client secret: SecretPrefix followed by 256 random bits
// in unpadded base64url, which needs no escaping in HTTP Basic or form bodies.
func NewSecret() string {
	var b [secretBytes]byte
	rand.Read(b[:]) // never fails (crypto/rand, Go ≥ 1.24)
	return SecretPrefix + base64.RawURLEncoding.EncodeToString(b[:])
}

// SecretHasher hashes client secrets as HMAC-SHA256(Key, secret). It implements
// fosite.Hasher, so fosite's client authentication compares secrets with it.
//
// A keyed fast hash is enough because secrets are server-generated with 256 bits of
// entropy: there is nothing to brute-force, and bcrypt would cost milliseconds on
// every token request. The key (a pepper, derived by the server from its key-encryption
// key) means a leaked clients table alone does not let anyone test secrets.
type SecretHasher struct {
	// Key is the pepper, at least MinPepperLen bytes. It must not change, and the
	// SecretHasher must not be copied, after first use.
	Key []byte

	// pool keeps keyed HMAC states: hmac.New costs more than hashing a secret.
	pool sync.Pool
}

func (h *SecretHasher) mac() hash.Hash {
	if m, ok := h.pool.Get().(hash.Hash); ok {
		m.Reset()
		return m
	}
	return hmac.New(sha256.New, h.Key)
}

var _ fosite.Hasher = (*SecretHasher)(nil)

// Hash returns HMAC-SHA256(Key, data).
func (h *SecretHasher) Hash(_ context.Context, data []byte) ([]byte, error) {
	if len(h.Key) < MinPepperLen {
		return nil, errNoPepper
	}
	m := h.mac()
	defer h.pool.Put(m)
	m.Write(data)
	return m.Sum(nil), nil
}

// Compare returns nil when hashed is HMAC-SHA256(Key, data). The comparison takes the
// same time wherever the values differ. An empty hash (a client without a secret)
// or an empty secret never matches.
func (h *SecretHasher) Compare(_ context.Context, hashed, data []byte) error {
	if len(h.Key) < MinPepperLen {
		return errNoPepper
	}
	if len(hashed) != sha256.Size || len(data) == 0 {
		return errSecretMismatch
	}
	m := h.mac()
	defer h.pool.Put(m)
	m.Write(data)
	var sum [sha256.Size]byte
	if !hmac.Equal(m.Sum(sum[:0]), hashed) {
		return errSecretMismatch
	}
	return nil
}
