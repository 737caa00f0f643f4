package keys

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// KEKSize is the length in bytes of a key-encryption key: an AES-256 key.
const KEKSize = 32

// kekHint tells an operator what a KEK looks like. It never quotes the value given.
const kekHint = "want 32 random bytes as base64 (44 characters) or hex (64 characters), e.g. from `openssl rand -base64 32`"

// ErrDecrypt is wrapped by the error returned when a stored signing key cannot be
// decrypted: the KEK is not the one the key was sealed under, or the row was altered.
var ErrDecrypt = errors.New("cannot decrypt signing key")

// ParseKEK decodes a key-encryption key as an operator supplies it (MANDATE_KEK):
// 32 bytes encoded as standard or URL-safe base64, padded or not, or as 64 hex
// digits. Surrounding whitespace is ignored. Errors describe what is expected and
// never echo the input, which is a secret.
func ParseKEK(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, fmt.Errorf("keys: KEK is empty: %s", kekHint)
	}
	// 64 characters could also be base64 (of 48 bytes); hex wins because 48 bytes
	// would be rejected anyway.
	if len(s) == 2*KEKSize {
		if b, err := hex.DecodeString(s); err == nil {
			return b, nil
		}
	}
	for _, enc := range []*base64.Encoding{
		base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding,
	} {
		b, err := enc.DecodeString(s)
		if err != nil {
			continue
		}
		if len(b) != KEKSize {
			return nil, fmt.Errorf("keys: KEK decodes to %d bytes: %s", len(b), kekHint)
		}
		return b, nil
	}
	return nil, fmt.Errorf("keys: KEK is neither base64 nor hex: %s", kekHint)
}

// GenerateKEK returns a new random key-encryption key, base64-encoded, for an
// operator to store as MANDATE_KEK.
func GenerateKEK() string {
	b := make([]byte, KEKSize)
	rand.Read(b) // never fails since Go 1.24: the runtime crashes instead
	return base64.StdEncoding.EncodeToString(b)
}

// sealer encrypts private keys at rest with AES-256-GCM under the KEK. A sealed
// blob is nonce(12) || ciphertext || tag(16), with the kid as additional
// authenticated data so that one row's ciphertext cannot be moved onto another kid.
type sealer struct {
	aead cipher.AEAD // NewGCMWithRandomNonce: Seal prepends a fresh random nonce
}

func newSealer(kek []byte) (sealer, error) {
	if len(kek) != KEKSize {
		return sealer{}, fmt.Errorf("KEK must be exactly %d bytes (AES-256), got %d", KEKSize, len(kek))
	}
	block, err := aes.NewCipher(kek)
	if err != nil {
		return sealer{}, fmt.Errorf("KEK: %w", err)
	}
	aead, err := cipher.NewGCMWithRandomNonce(block)
	if err != nil {
		return sealer{}, fmt.Errorf("KEK: %w", err)
	}
	return sealer{aead: aead}, nil
}

func (s sealer) seal(kid string, plaintext []byte) []byte {
	return s.aead.Seal(nil, nil, plaintext, []byte(kid))
}

func (s sealer) open(kid string, blob []byte) ([]byte, error) {
	pt, err := s.aead.Open(nil, nil, blob, []byte(kid))
	if err != nil {
		// GCM does not say why; a wrong KEK is by far the likeliest cause.
		return nil, fmt.Errorf("%w %q: wrong MANDATE_KEK? (or the stored key was altered)", ErrDecrypt, kid)
	}
	return pt, nil
}
