package clients

import (
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Client types.
const (
	// TypeApp is an application acting for users, typically through a grant.
	TypeApp = "app"
	// TypeAgent is an AI agent; agents exchange tokens and re-delegate to sub-agents.
	TypeAgent = "agent"
)

// Token endpoint authentication methods (RFC 7591 §2, OpenID Connect Core §9).
const (
	AuthClientSecretBasic = "client_secret_basic"
	AuthClientSecretPost  = "client_secret_post"
	AuthPrivateKeyJWT     = "private_key_jwt"
)

// Grant types a client may be registered for.
const (
	GrantClientCredentials = "client_credentials"
	GrantTokenExchange     = "urn:ietf:params:oauth:grant-type:token-exchange"
)

// Registration limits. They bound what one client can make the broker store, copy
// into tokens and verify per request.
const (
	MaxIDLen       = 128      // bytes of a client id
	MaxNameLen     = 200      // characters (runes) of a name
	MaxScopes      = 100      // scopes per client
	MaxScopeLen    = 256      // bytes per scope; scopes are copied into every token
	MaxAudiences   = 100      // audiences per client
	MaxAudienceLen = 2048     // bytes per audience
	MaxJWKSKeys    = 10       // keys per JWK Set
	MaxJWKSBytes   = 64 << 10 // bytes of a JWK Set as submitted
)

const (
	minRSABits      = 2048
	maxRSABits      = 8192 // bounds the cost of one assertion verification
	maxKeyIDLen     = 256
	generatedIDBits = 128
)

// Client is a registered app or agent: who may ask the broker for tokens,
// how it authenticates, and the most it may ever be given.
//
// Clients returned by the Store are copies; changing one changes nothing stored.
type Client struct {
	// ID is the OAuth client_id.
	ID string `json:"client_id"`
	// Name is a human-readable label shown to users and in audit logs.
	Name string `json:"name"`
	// Type is TypeApp or TypeAgent.
	Type string `json:"type"`
	// AuthMethod is how the client authenticates at the token endpoint.
	AuthMethod string `json:"token_endpoint_auth_method"`
	// SecretHash is the keyed hash of the client secret (secret methods only).
	// It never leaves the server.
	SecretHash []byte `json:"-"`
	// JWKS holds the public keys that verify the client's private_key_jwt
	// assertions, normalised by Validate; empty for secret methods.
	JWKS json.RawMessage `json:"jwks,omitempty"`
	// GrantTypes are the grants the client may use at the token endpoint.
	GrantTypes []string `json:"grant_types"`
	// Scopes is the most the client may ever hold; every token is narrowed to it.
	Scopes []string `json:"scopes"`
	// Audiences are the resources the client's tokens may name.
	Audiences []string `json:"audiences"`
	// MayImpersonate allows tokens without an act claim (impersonation) for this client.
	MayImpersonate bool `json:"may_impersonate"`
	// FirstParty lets policy skip the user-grant requirement for this client.
	FirstParty bool `json:"first_party"`
	// Disabled clients cannot authenticate; they stay registered.
	Disabled bool `json:"disabled"`
	// CreatedAt and UpdatedAt have one-second resolution.
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Clone returns a deep copy of c.
func (c *Client) Clone() *Client {
	if c == nil {
		return nil
	}
	cp := *c
	cp.SecretHash = slices.Clone(c.SecretHash)
	cp.JWKS = slices.Clone(c.JWKS)
	cp.GrantTypes = slices.Clone(c.GrantTypes)
	cp.Scopes = slices.Clone(c.Scopes)
	cp.Audiences = slices.Clone(c.Audiences)
	return &cp
}

// UsesSecret reports whether the client authenticates with a client secret.
func (c *Client) UsesSecret() bool {
	return c.AuthMethod == AuthClientSecretBasic || c.AuthMethod == AuthClientSecretPost
}

// ValidationError says which field of a client registration is unacceptable and why.
// Field is the field's JSON name (client_id, name, type, token_endpoint_auth_method,
// grant_types, scopes, audiences, jwks).
type ValidationError struct {
	Field   string
	Message string
}

// Error implements error.
func (e *ValidationError) Error() string {
	return "clients: invalid " + e.Field + ": " + e.Message
}

func invalid(field, format string, args ...any) *ValidationError {
	return &ValidationError{Field: field, Message: fmt.Sprintf(format, args...)}
}

// ValidID reports whether id is an acceptable client id, matching
// ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$. Lookups of other ids never reach the database.
// (Hand-written rather than a regexp: it runs on every token request.)
func ValidID(id string) bool {
	if len(id) == 0 || len(id) > MaxIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case (c == '.' || c == '_' || c == '-') && i > 0:
		default:
			return false
		}
	}
	return true
}

// NewID returns a fresh random client id for a client of the given type:
// "agt_" or "app_" followed by 128 random bits in lowercase base32.
func NewID(typ string) string {
	prefix := "app_"
	if typ == TypeAgent {
		prefix = "agt_"
	}
	var b [generatedIDBits / 8]byte
	rand.Read(b[:]) // never fails (crypto/rand, Go ≥ 1.24)
	return prefix + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
}

// Validate checks c as a complete registration and normalises it in place:
// it generates an ID when c.ID is empty, fills in the default grant types
// (token exchange for agents, token exchange and client credentials for apps),
// the default auth method (client_secret_basic, as RFC 7591 §2 says), and
// rewrites the JWKS into its canonical public form with "use":"sig" on every key.
// Errors are *ValidationError.
func (c *Client) Validate() error {
	switch c.Type {
	case TypeApp, TypeAgent:
	case "":
		return invalid("type", "is required: %q or %q", TypeApp, TypeAgent)
	default:
		return invalid("type", "must be %q or %q", TypeApp, TypeAgent)
	}
	if c.ID == "" {
		c.ID = NewID(c.Type)
	}
	if !ValidID(c.ID) {
		return invalid("client_id", "must be 1 to %d characters from A-Z a-z 0-9 . _ -, starting with a letter or digit", MaxIDLen)
	}
	if err := validateName(c.Name); err != nil {
		return err
	}

	if c.AuthMethod == "" {
		c.AuthMethod = AuthClientSecretBasic
	}
	switch c.AuthMethod {
	case AuthClientSecretBasic, AuthClientSecretPost, AuthPrivateKeyJWT:
	default:
		return invalid("token_endpoint_auth_method", "must be %s, %s or %s", AuthClientSecretBasic, AuthClientSecretPost, AuthPrivateKeyJWT)
	}

	if len(c.GrantTypes) == 0 {
		if c.Type == TypeAgent {
			c.GrantTypes = []string{GrantTokenExchange}
		} else {
			c.GrantTypes = []string{GrantTokenExchange, GrantClientCredentials}
		}
	}
	for i, g := range c.GrantTypes {
		if g != GrantClientCredentials && g != GrantTokenExchange {
			return invalid("grant_types", "%q is not supported: use %s or %s", g, GrantTokenExchange, GrantClientCredentials)
		}
		if slices.Contains(c.GrantTypes[:i], g) {
			return invalid("grant_types", "%q is listed twice", g)
		}
	}

	if c.Scopes == nil {
		c.Scopes = []string{}
	}
	if err := validateScopes(c.Scopes); err != nil {
		return err
	}
	if c.Audiences == nil {
		c.Audiences = []string{}
	}
	if err := validateAudiences(c.Audiences); err != nil {
		return err
	}

	if isJSONAbsent(c.JWKS) {
		c.JWKS = nil
	}
	if c.AuthMethod == AuthPrivateKeyJWT {
		if c.JWKS == nil {
			return invalid("jwks", "is required for private_key_jwt: a JWK Set with at least one public signing key")
		}
		norm, _, err := normalizeJWKS(c.JWKS)
		if err != nil {
			return err
		}
		c.JWKS = norm
	} else if c.JWKS != nil {
		return invalid("jwks", "is only accepted with token_endpoint_auth_method %s; %s clients authenticate with their secret", AuthPrivateKeyJWT, c.AuthMethod)
	}
	return nil
}

func isJSONAbsent(raw json.RawMessage) bool {
	s := strings.TrimSpace(string(raw))
	return s == "" || s == "null"
}

func validateName(name string) error {
	if !utf8.ValidString(name) {
		return invalid("name", "must be valid UTF-8")
	}
	n := utf8.RuneCountInString(name)
	if n == 0 || strings.TrimSpace(name) == "" {
		return invalid("name", "is required")
	}
	if n > MaxNameLen {
		return invalid("name", "must be at most %d characters, got %d", MaxNameLen, n)
	}
	for _, r := range name {
		if unicode.IsControl(r) {
			return invalid("name", "must not contain control characters")
		}
	}
	return nil
}

// validateScopes checks RFC 6749 §3.3:
//
//	scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
func validateScopes(scopes []string) error {
	if len(scopes) > MaxScopes {
		return invalid("scopes", "at most %d scopes, got %d", MaxScopes, len(scopes))
	}
	for i, s := range scopes {
		if s == "" {
			return invalid("scopes", "scope %d is empty", i)
		}
		if len(s) > MaxScopeLen {
			return invalid("scopes", "scope %d is longer than %d bytes", i, MaxScopeLen)
		}
		for j := 0; j < len(s); j++ {
			if c := s[j]; c < 0x21 || c == 0x22 || c == 0x5C || c > 0x7E {
				return invalid("scopes", "scope %q is not an RFC 6749 scope-token (printable ASCII except space, \" and \\)", s)
			}
		}
		if slices.Contains(scopes[:i], s) {
			return invalid("scopes", "scope %q is listed twice", s)
		}
	}
	return nil
}

// validateAudiences accepts absolute URIs (RFC 8707 §2: no fragment) and plain
// identifiers (such as another client's id) made of visible ASCII.
func validateAudiences(auds []string) error {
	if len(auds) > MaxAudiences {
		return invalid("audiences", "at most %d audiences, got %d", MaxAudiences, len(auds))
	}
	for i, a := range auds {
		if a == "" {
			return invalid("audiences", "audience %d is empty", i)
		}
		if len(a) > MaxAudienceLen {
			return invalid("audiences", "audience %d is longer than %d bytes", i, MaxAudienceLen)
		}
		for j := 0; j < len(a); j++ {
			if c := a[j]; c < 0x21 || c > 0x7E {
				return invalid("audiences", "audience %q must be an absolute URI or an identifier of visible ASCII characters without spaces", a)
			}
		}
		if strings.Contains(a, ":") {
			u, err := url.Parse(a)
			if err != nil || u.Scheme == "" {
				return invalid("audiences", "audience %q contains ':' but is not an absolute URI", a)
			}
			if u.Fragment != "" || strings.Contains(a, "#") {
				return invalid("audiences", "audience %q must not contain a fragment (RFC 8707 §2)", a)
			}
			if (u.Scheme == "http" || u.Scheme == "https") && u.Host == "" {
				return invalid("audiences", "audience %q has no host", a)
			}
		}
		if slices.Contains(auds[:i], a) {
			return invalid("audiences", "audience %q is listed twice", a)
		}
	}
	return nil
}

// asValidation reports whether err is a *ValidationError.
func asValidation(err error) bool {
	var ve *ValidationError
	return errors.As(err, &ve)
}
