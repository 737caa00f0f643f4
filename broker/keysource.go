package broker

import (
	"crypto"
	"errors"

	"github.com/mandate-dev/mandate/broker/keys"
)

// ManagerKeys adapts a *keys.Manager to the broker's KeySource.
type ManagerKeys struct{ M *keys.Manager }

var _ KeySource = ManagerKeys{}

// SignToken signs payload as an RFC 9068 access token with the active key.
func (k ManagerKeys) SignToken(payload []byte) (string, error) {
	sk := k.M.Active()
	if sk == nil {
		return "", errors.New("broker: no active signing key")
	}
	return sk.SignJWS(sk.HeaderFor(JWTTypeAccessToken), payload)
}

// VerificationKey returns a published key by kid.
func (k ManagerKeys) VerificationKey(kid string) (string, crypto.PublicKey, bool) {
	pk, ok := k.M.PublicKey(kid)
	if !ok {
		return "", nil, false
	}
	return pk.Alg, pk.Key, true
}

// JWKS returns the published key set.
func (k ManagerKeys) JWKS() []byte { return k.M.JWKS() }
