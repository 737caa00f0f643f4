package clients

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/go-jose/go-jose/v3"
	"github.com/ory/fosite"

	"github.com/mandate-dev/mandate/internal/db"
)

var (
	_ fosite.ClientManager       = (*Store)(nil)
	_ fosite.Client              = (*fositeClient)(nil)
	_ fosite.OpenIDConnectClient = (*fositeClient)(nil)
)

// fositeClient is the read-only view of a Client that fosite authenticates against.
// It is built once per cache fill, so the JWKS is parsed once, not per request.
type fositeClient struct {
	c        *Client
	jwks     *jose.JSONWebKeySet
	alg      string
	grants   fosite.Arguments
	scopes   fosite.Arguments
	audience fosite.Arguments
}

func (s *Store) newFositeClient(c *Client) *fositeClient {
	fc := &fositeClient{
		c:        c,
		grants:   fosite.Arguments(c.GrantTypes),
		scopes:   fosite.Arguments(c.Scopes),
		audience: fosite.Arguments(c.Audiences),
	}
	if c.AuthMethod == AuthPrivateKeyJWT {
		set, alg, err := parseJWKS(c.JWKS)
		if err != nil {
			// Only a row written around Validate gets here; the client then cannot
			// authenticate, which is the safe failure.
			s.log.Warn("clients: stored JWKS is unusable; client cannot authenticate", "client_id", c.ID, "error", err)
		} else {
			fc.jwks, fc.alg = set, alg
		}
	}
	return fc
}

// GetClient implements fosite.ClientManager for the token endpoint. It answers from
// the cache when it can. Unknown and disabled clients give fosite.ErrNotFound, which
// fosite turns into invalid_client. The fosite.Client it returns also implements
// fosite.OpenIDConnectClient; ClientFrom recovers the Client behind it.
func (s *Store) GetClient(ctx context.Context, id string) (fosite.Client, error) {
	fc, err := s.lookup(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return nil, fosite.ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	if fc.c.Disabled {
		return nil, fosite.ErrNotFound.WithDebug("the client is disabled")
	}
	return fc, nil
}

// ClientFrom returns a copy of the Client behind a fosite.Client that GetClient returned.
func ClientFrom(fc fosite.Client) (*Client, bool) {
	c, ok := fc.(*fositeClient)
	if !ok || c == nil {
		return nil, false
	}
	return c.c.Clone(), true
}

// GetID implements fosite.Client.
func (f *fositeClient) GetID() string { return f.c.ID }

// GetHashedSecret implements fosite.Client: the HMAC of the secret, nil for private_key_jwt.
func (f *fositeClient) GetHashedSecret() []byte { return f.c.SecretHash }

// GetRedirectURIs implements fosite.Client; mandate clients have no redirect flows.
func (f *fositeClient) GetRedirectURIs() []string { return nil }

// GetGrantTypes implements fosite.Client.
func (f *fositeClient) GetGrantTypes() fosite.Arguments { return f.grants }

// GetResponseTypes implements fosite.Client; mandate has no authorization endpoint.
func (f *fositeClient) GetResponseTypes() fosite.Arguments { return fosite.Arguments{} }

// GetScopes implements fosite.Client.
func (f *fositeClient) GetScopes() fosite.Arguments { return f.scopes }

// IsPublic implements fosite.Client: every mandate client authenticates.
func (f *fositeClient) IsPublic() bool { return false }

// GetAudience implements fosite.Client.
func (f *fositeClient) GetAudience() fosite.Arguments { return f.audience }

// GetRequestURIs implements fosite.OpenIDConnectClient.
func (f *fositeClient) GetRequestURIs() []string { return nil }

// GetJSONWebKeys implements fosite.OpenIDConnectClient: the registered public keys,
// nil for secret clients.
func (f *fositeClient) GetJSONWebKeys() *jose.JSONWebKeySet { return f.jwks }

// GetJSONWebKeysURI implements fosite.OpenIDConnectClient. Keys are registered by
// value only: the broker fetches JWKS from configured issuers, never from clients.
func (f *fositeClient) GetJSONWebKeysURI() string { return "" }

// GetRequestObjectSigningAlgorithm implements fosite.OpenIDConnectClient.
func (f *fositeClient) GetRequestObjectSigningAlgorithm() string { return "" }

// GetTokenEndpointAuthMethod implements fosite.OpenIDConnectClient.
func (f *fositeClient) GetTokenEndpointAuthMethod() string { return f.c.AuthMethod }

// GetTokenEndpointAuthSigningAlgorithm implements fosite.OpenIDConnectClient: the one
// algorithm the client's assertions must use, taken from its keys (ES256 for P-256,
// ES384 for P-384, the key's RS*/PS* alg or RS256 for RSA). fosite compares it with
// the assertion's alg header before verifying. EdDSA is never returned: fosite's
// private_key_jwt verifies RS*, PS* and ES* only, so Ed25519 keys are refused at
// registration.
func (f *fositeClient) GetTokenEndpointAuthSigningAlgorithm() string { return f.alg }

// maxRawJTI is the longest jti stored as-is; longer ones, and any that PostgreSQL
// could not store as TEXT, are stored as a SHA-256 digest.
const maxRawJTI = 255

const jtiDigestPrefix = "sha256:"

func jtiKey(jti string) string {
	if len(jti) <= maxRawJTI && utf8.ValidString(jti) && !strings.ContainsRune(jti, 0) &&
		!strings.HasPrefix(jti, jtiDigestPrefix) {
		return jti
	}
	sum := sha256.Sum256([]byte(jti))
	return jtiDigestPrefix + hex.EncodeToString(sum[:])
}

// jtiSweepEvery spaces out the opportunistic deletion of expired jtis.
const jtiSweepEvery = 60 // seconds

// ClientAssertionJWTValid implements fosite.ClientManager: fosite.ErrJTIKnown when
// a private_key_jwt assertion with this jti was already accepted and has not expired,
// nil when the jti is new. A database error is returned as is, and fosite refuses the
// assertion on any error.
func (s *Store) ClientAssertionJWTValid(ctx context.Context, jti string) error {
	var exp int64
	err := s.db.QueryRow(ctx, `SELECT expires_at FROM client_assertion_jtis WHERE jti = $1`, jtiKey(jti)).Scan(&exp)
	if errors.Is(err, db.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("clients: check assertion jti: %w", err)
	}
	if exp > s.clock().Unix() {
		return fosite.ErrJTIKnown
	}
	return nil
}

// SetClientAssertionJWT implements fosite.ClientManager: it records that an assertion
// with this jti was used, until exp. RFC 7523 §3 ("The JWT MAY contain a jti claim
// ... The authorization server MAY ensure that JWTs are not replayed") — mandate
// always does. The insert is the replay check that counts: of concurrent uses of one
// jti, exactly one records it and the others get fosite.ErrJTIKnown, even if all of
// them passed ClientAssertionJWTValid. An expired record of the same jti is replaced.
// At most once a minute it also deletes expired jtis.
func (s *Store) SetClientAssertionJWT(ctx context.Context, jti string, exp time.Time) error {
	now := s.clock().Unix()
	if last := s.lastJTISweep.Load(); now-last >= jtiSweepEvery && s.lastJTISweep.CompareAndSwap(last, now) {
		if _, err := s.db.Exec(ctx, `DELETE FROM client_assertion_jtis WHERE expires_at <= $1`, now); err != nil {
			s.log.WarnContext(ctx, "clients: delete expired assertion jtis", "error", err)
		}
	}
	n, err := s.db.Exec(ctx, `INSERT INTO client_assertion_jtis (jti, expires_at) VALUES ($1, $2)
		ON CONFLICT (jti) DO UPDATE SET expires_at = excluded.expires_at
		WHERE client_assertion_jtis.expires_at <= $3`, jtiKey(jti), exp.Unix(), now)
	if errors.Is(err, db.ErrConflict) || (err == nil && n == 0) {
		return fosite.ErrJTIKnown.WithHint("Claim 'jti' from 'client_assertion' MUST only be used once.")
	}
	if err != nil {
		return fmt.Errorf("clients: record assertion jti: %w", err)
	}
	return nil
}
