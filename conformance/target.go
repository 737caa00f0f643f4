package conformance

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"go.yaml.in/yaml/v3"
)

// Roles the cases refer to. A target maps each role it can play to a
// registered client; cases that need a role the target lacks are skipped.
const (
	// RoleAgentA is the agent the users delegate to.
	RoleAgentA = "agent_a"
	// RoleAgentB is a sub-agent A may re-delegate to.
	RoleAgentB = "agent_b"
	// RoleAgentC is an agent unrelated to A's chains (it may hold grants of its own).
	RoleAgentC = "agent_c"
	// RoleAgentD is a second sub-agent, for chains deeper than two.
	RoleAgentD = "agent_d"
	// RoleApp is an application registered for client_credentials only.
	RoleApp = "app"
	// RolePrivateKeyJWT is a client authenticating with private_key_jwt (RFC 7523).
	RolePrivateKeyJWT = "pkjwt"
	// RoleImpersonator is a client registered to impersonate users (no act).
	RoleImpersonator = "impersonator"
	// RoleUnvetted is a client registered for impersonation that the policy
	// must still refuse (mandate: not first-party).
	RoleUnvetted = "unvetted"
)

// KnownRoles lists every role a case may name.
var KnownRoles = []string{RoleAgentA, RoleAgentB, RoleAgentC, RoleAgentD, RoleApp, RolePrivateKeyJWT, RoleImpersonator, RoleUnvetted}

// Features a target may declare; cases that require one the target lacks are skipped.
const (
	// FeatureMandate: the target is mandate, set up by SetupMandate: its grant
	// fixture, admin and user grants APIs and default policy are in place.
	FeatureMandate = "mandate"
	// FeatureNextHopAudience: re-delegation works by naming the next agent in
	// audience; the issued token carries may_act, and that agent exchanges it.
	FeatureNextHopAudience = "next_hop_audience"
	// FeatureStrictErrors: every token endpoint error carries error_description
	// and Cache-Control: no-store (mandate documents both).
	FeatureStrictErrors = "strict_errors"
)

// KnownFeatures lists every feature a target may declare.
var KnownFeatures = []string{FeatureMandate, FeatureNextHopAudience, FeatureStrictErrors}

// Target is the server under test and what the suite knows about it.
type Target struct {
	// Issuer is the server's issuer identifier (RFC 8414 §2).
	Issuer string `yaml:"issuer" json:"issuer"`
	// MetadataURL defaults to the RFC 8414 §3.1 well-known URL of Issuer.
	MetadataURL string `yaml:"metadata_url" json:"metadata_url,omitempty"`
	// Endpoints default to the metadata's.
	TokenEndpoint         string `yaml:"token_endpoint" json:"token_endpoint,omitempty"`
	IntrospectionEndpoint string `yaml:"introspection_endpoint" json:"introspection_endpoint,omitempty"`
	RevocationEndpoint    string `yaml:"revocation_endpoint" json:"revocation_endpoint,omitempty"`
	JWKSURI               string `yaml:"jwks_uri" json:"jwks_uri,omitempty"`
	// IdP says where the suite's IdP listens and what its tokens must carry.
	IdP IdPConfig `yaml:"idp" json:"idp"`
	// Features the server has (see KnownFeatures).
	Features []string `yaml:"features" json:"features,omitempty"`
	// Clients maps roles (see KnownRoles) to registered clients.
	Clients map[string]*Client `yaml:"clients" json:"clients"`

	// Mandate is set by SetupMandate: how to reach mandate's own APIs.
	Mandate *MandateSetup `yaml:"-" json:"-"`
}

// IdPConfig is the suite's IdP as the server under test trusts it.
type IdPConfig struct {
	// Addr is where the IdP listens (host:port); its issuer is http://Addr and
	// its keys http://Addr/jwks.json. The server must trust exactly that.
	Addr string `yaml:"addr" json:"addr"`
	// Audience is the aud the server requires on user tokens of that issuer.
	Audience string `yaml:"audience" json:"audience"`
}

// Client is a registered client playing a role.
type Client struct {
	ID string `yaml:"client_id" json:"client_id"`
	// Secret for client_secret_basic and client_secret_post.
	Secret string `yaml:"client_secret" json:"-"`
	// AuthMethod is how it authenticates: client_secret_basic (default),
	// client_secret_post or private_key_jwt.
	AuthMethod string `yaml:"auth_method" json:"auth_method"`
	// PrivateKey (PEM or JWK) or PrivateKeyFile signs private_key_jwt assertions.
	PrivateKey     string `yaml:"private_key" json:"-"`
	PrivateKeyFile string `yaml:"private_key_file" json:"-"`
	// KeyID is the kid of the assertion header (optional).
	KeyID string `yaml:"key_id" json:"key_id,omitempty"`
	// Alg of the assertions (default ES256 for EC keys, RS256 for RSA keys).
	Alg string `yaml:"alg" json:"alg,omitempty"`

	key jwk.Key
}

// MandateSetup is what SetupMandate registered.
type MandateSetup struct {
	// URL is mandate's base URL and AdminKey its admin key.
	URL      string
	AdminKey string
	// Grants maps "user/role" to the id of the grant from user to that role's client.
	Grants map[string]string
	// GrantExpiry maps "user/role" to the grant's expires_at (Unix seconds).
	GrantExpiry map[string]int64
	// ClientIDs lists the clients registered, for Cleanup.
	ClientIDs []string
}

// HasFeature reports whether the target declares f.
func (t *Target) HasFeature(f string) bool { return slices.Contains(t.Features, f) }

// LoadTarget reads a target configuration file (YAML; see docs/conformance.md).
// Unknown keys are errors, so a typo never silently skips a case.
func LoadTarget(path string) (*Target, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("conformance: target: %w", err)
	}
	var t Target
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&t); err != nil {
		return nil, fmt.Errorf("conformance: target %s: %w", path, err)
	}
	for _, c := range t.Clients {
		// A relative key file is relative to the configuration file.
		if c != nil && c.PrivateKeyFile != "" && !filepath.IsAbs(c.PrivateKeyFile) {
			c.PrivateKeyFile = filepath.Join(filepath.Dir(path), c.PrivateKeyFile)
		}
	}
	if err := t.Validate(); err != nil {
		return nil, fmt.Errorf("conformance: target %s: %w", path, err)
	}
	return &t, nil
}

// Validate checks the target and loads client keys.
func (t *Target) Validate() error {
	u, err := url.Parse(t.Issuer)
	if t.Issuer == "" || err != nil || !u.IsAbs() || u.Host == "" {
		return fmt.Errorf("issuer: %q must be an absolute URL", t.Issuer)
	}
	if t.IdP.Audience == "" {
		return errors.New("idp.audience: required (the aud the server requires on the IdP's user tokens)")
	}
	for _, f := range t.Features {
		if !slices.Contains(KnownFeatures, f) {
			return fmt.Errorf("features: unknown feature %q (known: %s)", f, strings.Join(KnownFeatures, ", "))
		}
	}
	roles := make([]string, 0, len(t.Clients))
	for role := range t.Clients {
		roles = append(roles, role)
	}
	sort.Strings(roles)
	for _, role := range roles {
		c := t.Clients[role]
		if !slices.Contains(KnownRoles, role) {
			return fmt.Errorf("clients: unknown role %q (known: %s)", role, strings.Join(KnownRoles, ", "))
		}
		if c == nil || c.ID == "" {
			return fmt.Errorf("clients.%s.client_id: required", role)
		}
		if c.AuthMethod == "" {
			c.AuthMethod = "client_secret_basic"
		}
		switch c.AuthMethod {
		case "client_secret_basic", "client_secret_post":
			if c.Secret == "" {
				return fmt.Errorf("clients.%s.client_secret: required for %s", role, c.AuthMethod)
			}
		case "private_key_jwt":
			if err := c.loadKey(); err != nil {
				return fmt.Errorf("clients.%s: %w", role, err)
			}
		default:
			return fmt.Errorf("clients.%s.auth_method: %q must be client_secret_basic, client_secret_post or private_key_jwt", role, c.AuthMethod)
		}
	}
	return nil
}

func (c *Client) loadKey() error {
	if c.key != nil {
		return nil
	}
	raw := []byte(c.PrivateKey)
	if c.PrivateKeyFile != "" {
		b, err := os.ReadFile(c.PrivateKeyFile)
		if err != nil {
			return fmt.Errorf("private_key_file: %w", err)
		}
		raw = b
	}
	if len(bytes.TrimSpace(raw)) == 0 {
		return errors.New("private_key or private_key_file: required for private_key_jwt")
	}
	var (
		k   jwk.Key
		err error
	)
	if bytes.HasPrefix(bytes.TrimSpace(raw), []byte("{")) {
		k, err = jwk.ParseKey(raw)
	} else {
		k, err = jwk.ParseKey(raw, jwk.WithPEM(true))
	}
	if err != nil {
		return fmt.Errorf("private key: %w", err)
	}
	var rawKey any
	if err := k.Raw(&rawKey); err != nil {
		return fmt.Errorf("private key: %w", err)
	}
	switch rk := rawKey.(type) {
	case *ecdsa.PrivateKey:
		if c.Alg == "" {
			c.Alg = map[int]string{256: "ES256", 384: "ES384", 521: "ES512"}[rk.Curve.Params().BitSize]
		}
	case *rsa.PrivateKey:
		if c.Alg == "" {
			c.Alg = "RS256"
		}
	default:
		return fmt.Errorf("private key: %T is not an EC or RSA private key", rawKey)
	}
	if c.KeyID == "" {
		c.KeyID = k.KeyID()
	}
	c.key = k
	return nil
}

// signAssertion signs an RFC 7523 client assertion with the client's key.
func (c *Client) signAssertion(claims map[string]any) (string, error) {
	if err := c.loadKey(); err != nil {
		return "", err
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("conformance: assertion: %w", err)
	}
	return signJWSWithKey(c.key, jwa.SignatureAlgorithm(c.Alg), c.KeyID, payload)
}

// MetadataURLFor returns the RFC 8414 §3.1 metadata URL of an issuer: the
// well-known string is inserted between the host and the issuer's path.
func MetadataURLFor(issuer string) (string, error) {
	u, err := url.Parse(issuer)
	if err != nil || !u.IsAbs() {
		return "", fmt.Errorf("conformance: issuer %q is not an absolute URL", issuer)
	}
	path := strings.TrimRight(u.Path, "/")
	u.Path = "/.well-known/oauth-authorization-server" + path
	u.RawPath = ""
	return u.String(), nil
}

// Resolve fills the endpoints the configuration left out from the server's
// RFC 8414 metadata.
func (t *Target) Resolve(ctx context.Context, hc *http.Client) error {
	if t.MetadataURL == "" {
		u, err := MetadataURLFor(t.Issuer)
		if err != nil {
			return err
		}
		t.MetadataURL = u
	}
	if t.TokenEndpoint != "" && t.JWKSURI != "" && t.IntrospectionEndpoint != "" && t.RevocationEndpoint != "" {
		return nil
	}
	md, err := fetchJSON(ctx, hc, t.MetadataURL)
	if err != nil {
		if t.TokenEndpoint != "" {
			return nil // the configuration names what it needs
		}
		return fmt.Errorf("conformance: metadata: %w (set token_endpoint and jwks_uri in the target if the server has none)", err)
	}
	fill := func(dst *string, key string) {
		if s, ok := md[key].(string); ok && *dst == "" {
			*dst = s
		}
	}
	fill(&t.TokenEndpoint, "token_endpoint")
	fill(&t.IntrospectionEndpoint, "introspection_endpoint")
	fill(&t.RevocationEndpoint, "revocation_endpoint")
	fill(&t.JWKSURI, "jwks_uri")
	if t.TokenEndpoint == "" {
		return errors.New("conformance: the metadata names no token_endpoint and the target sets none")
	}
	return nil
}

func fetchJSON(ctx context.Context, hc *http.Client, u string) (map[string]any, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	req.Header.Set("Accept", "application/json")
	res, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, maxBody))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: HTTP %d", u, res.StatusCode)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("GET %s: not a JSON object: %w", u, err)
	}
	return m, nil
}
