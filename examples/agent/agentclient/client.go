package agentclient

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jwt"
	"golang.org/x/oauth2"
)

// RFC 8693 and RFC 7523 identifiers.
const (
	GrantTypeTokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange"
	TokenTypeAccessToken   = "urn:ietf:params:oauth:token-type:access_token"
	ClientAssertionType    = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
)

const (
	defaultAssertionLifetime = time.Minute
	defaultHTTPTimeout       = 15 * time.Second
	maxResponseBytes         = 1 << 20
)

// Config configures a Client.
type Config struct {
	// Issuer is mandate's issuer URL (its base URL), e.g. http://127.0.0.1:8080.
	// The endpoints are discovered from its RFC 8414 metadata.
	Issuer string
	// ClientID is the agent's registered client id.
	ClientID string
	// Key is the agent's private ES256 key; its public half is registered at
	// mandate and its kid names it in every assertion.
	Key jwk.Key
	// HTTPClient makes the calls. Default: a client with a 15 s timeout.
	HTTPClient *http.Client
	// AssertionLifetime is the exp of each client assertion. Default 1 minute:
	// an assertion is used once, right away.
	AssertionLifetime time.Duration
}

// Metadata is the part of mandate's RFC 8414 authorization server metadata the
// client uses.
type Metadata struct {
	Issuer                string   `json:"issuer"`
	TokenEndpoint         string   `json:"token_endpoint"`
	IntrospectionEndpoint string   `json:"introspection_endpoint"`
	RevocationEndpoint    string   `json:"revocation_endpoint"`
	JWKSURI               string   `json:"jwks_uri"`
	GrantTypes            []string `json:"grant_types_supported"`
	AuthMethods           []string `json:"token_endpoint_auth_methods_supported"`
}

// Client talks to mandate's token and introspection endpoints as one agent,
// authenticating every request with a fresh private_key_jwt assertion. It is
// safe for concurrent use.
type Client struct {
	id       string
	key      jwk.Key
	http     *http.Client
	lifetime time.Duration
	meta     Metadata
}

// New discovers mandate's endpoints and returns a Client for cfg.ClientID.
func New(ctx context.Context, cfg Config) (*Client, error) {
	if cfg.Issuer == "" || cfg.ClientID == "" || cfg.Key == nil {
		return nil, errors.New("agentclient: Issuer, ClientID and Key are required")
	}
	if _, ok := cfg.Key.(jwk.ECDSAPrivateKey); !ok {
		return nil, errors.New("agentclient: Key must be an EC private key (ES256)")
	}
	c := &Client{id: cfg.ClientID, key: cfg.Key, http: cfg.HTTPClient, lifetime: cfg.AssertionLifetime}
	if c.http == nil {
		c.http = &http.Client{Timeout: defaultHTTPTimeout}
	}
	if c.lifetime <= 0 {
		c.lifetime = defaultAssertionLifetime
	}
	meta, err := Discover(ctx, c.http, cfg.Issuer)
	if err != nil {
		return nil, err
	}
	if !slices.Contains(meta.AuthMethods, "private_key_jwt") {
		return nil, fmt.Errorf("agentclient: %s does not support private_key_jwt client authentication", cfg.Issuer)
	}
	if !slices.Contains(meta.GrantTypes, GrantTypeTokenExchange) {
		return nil, fmt.Errorf("agentclient: %s does not support token exchange", cfg.Issuer)
	}
	c.meta = *meta
	return c, nil
}

// Discover reads the RFC 8414 metadata of issuer.
func Discover(ctx context.Context, hc *http.Client, issuer string) (*Metadata, error) {
	issuer = strings.TrimRight(issuer, "/")
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, issuer+"/.well-known/oauth-authorization-server", nil)
	if err != nil {
		return nil, fmt.Errorf("agentclient: discovery: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	res, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("agentclient: discovery: %w", err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, maxResponseBytes))
	if err != nil {
		return nil, fmt.Errorf("agentclient: discovery: %w", err)
	}
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("agentclient: discovery: %s answered %s", issuer, res.Status)
	}
	var m Metadata
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, fmt.Errorf("agentclient: discovery: %w", err)
	}
	// RFC 8414 §3.3: the issuer in the metadata must be the one we asked.
	if m.Issuer != issuer {
		return nil, fmt.Errorf("agentclient: discovery: metadata names issuer %q, want %q", m.Issuer, issuer)
	}
	if m.TokenEndpoint == "" {
		return nil, errors.New("agentclient: discovery: no token_endpoint")
	}
	return &m, nil
}

// ID returns the client id.
func (c *Client) ID() string { return c.id }

// Metadata returns the discovered server metadata.
func (c *Client) Metadata() Metadata { return c.meta }

// assertion signs a fresh RFC 7523 §3 client assertion: iss = sub = the client
// id, aud = the token endpoint (mandate checks that on every endpoint), a short
// exp and a unique jti, which mandate records to refuse a replay.
func (c *Client) assertion() (string, error) {
	now := time.Now()
	tok, err := jwt.NewBuilder().
		Issuer(c.id).Subject(c.id).Audience([]string{c.meta.TokenEndpoint}).
		IssuedAt(now).Expiration(now.Add(c.lifetime)).JwtID(rand.Text()).
		Build()
	if err != nil {
		return "", fmt.Errorf("agentclient: build assertion: %w", err)
	}
	signed, err := jwt.Sign(tok, jwt.WithKey(jwa.ES256, c.key)) // the key's kid goes into the header
	if err != nil {
		return "", fmt.Errorf("agentclient: sign assertion: %w", err)
	}
	return string(signed), nil
}

// post sends form to endpoint with client authentication and returns the status
// and the body.
func (c *Client) post(ctx context.Context, endpoint string, form url.Values) (*http.Response, []byte, error) {
	a, err := c.assertion()
	if err != nil {
		return nil, nil, err
	}
	form = cloneValues(form)
	form.Set("client_id", c.id)
	form.Set("client_assertion_type", ClientAssertionType)
	form.Set("client_assertion", a)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, nil, fmt.Errorf("agentclient: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	res, err := c.http.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("agentclient: POST %s: %w", endpoint, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, maxResponseBytes))
	if err != nil {
		return nil, nil, fmt.Errorf("agentclient: POST %s: read: %w", endpoint, err)
	}
	return res, body, nil
}

func cloneValues(v url.Values) url.Values {
	out := make(url.Values, len(v)+3)
	for k, vs := range v {
		out[k] = slices.Clone(vs)
	}
	return out
}

// ExchangeRequest is one RFC 8693 token exchange.
type ExchangeRequest struct {
	// SubjectToken is whose authority the new token carries: a user's token, or
	// a mandate token this client holds or was handed as the next hop.
	SubjectToken string
	// Scopes asks for these scopes only. Empty: everything allowed.
	Scopes []string
	// Audiences names where the token goes; a registered agent here is the next
	// hop of a re-delegation.
	Audiences []string
	// Resources names the APIs the token is for (RFC 8707 resource indicators).
	Resources []string
}

// Exchange runs a token exchange and returns the issued token. Its Extra
// holds "issued_token_type" and "scope" (the granted scopes: the response's,
// or the requested ones when the response leaves scope out, RFC 8693 §2.2.1).
// A refusal is an *oauth2.RetrieveError with the RFC 6749 error code.
func (c *Client) Exchange(ctx context.Context, r ExchangeRequest) (*oauth2.Token, error) {
	if r.SubjectToken == "" {
		return nil, errors.New("agentclient: exchange: no subject token")
	}
	form := url.Values{
		"grant_type":         {GrantTypeTokenExchange},
		"subject_token":      {r.SubjectToken},
		"subject_token_type": {TokenTypeAccessToken},
	}
	if len(r.Scopes) > 0 {
		form.Set("scope", strings.Join(r.Scopes, " "))
	}
	for _, a := range r.Audiences {
		form.Add("audience", a)
	}
	for _, res := range r.Resources {
		form.Add("resource", res)
	}
	res, body, err := c.post(ctx, c.meta.TokenEndpoint, form)
	if err != nil {
		return nil, err
	}
	if res.StatusCode != http.StatusOK {
		return nil, retrieveError(res, body)
	}
	var tr struct {
		AccessToken     string `json:"access_token"`
		IssuedTokenType string `json:"issued_token_type"`
		TokenType       string `json:"token_type"`
		ExpiresIn       int64  `json:"expires_in"`
		Scope           string `json:"scope"`
	}
	if err := json.Unmarshal(body, &tr); err != nil {
		return nil, fmt.Errorf("agentclient: exchange: decode response: %w", err)
	}
	// RFC 8693 §2.2.1: access_token, issued_token_type and token_type are required.
	if tr.AccessToken == "" || tr.IssuedTokenType == "" || !strings.EqualFold(tr.TokenType, "Bearer") {
		return nil, fmt.Errorf("agentclient: exchange: incomplete response (token_type %q, issued_token_type %q)", tr.TokenType, tr.IssuedTokenType)
	}
	scope := tr.Scope
	if scope == "" {
		scope = strings.Join(r.Scopes, " ")
	}
	tok := &oauth2.Token{AccessToken: tr.AccessToken, TokenType: "Bearer", ExpiresIn: tr.ExpiresIn}
	if tr.ExpiresIn > 0 {
		tok.Expiry = time.Now().Add(time.Duration(tr.ExpiresIn) * time.Second)
	}
	return tok.WithExtra(map[string]any{"issued_token_type": tr.IssuedTokenType, "scope": scope}), nil
}

// retrieveError turns an RFC 6749 §5.2 error response into the oauth2 package's
// error type, so callers can read ErrorCode with errors.As.
func retrieveError(res *http.Response, body []byte) error {
	e := &oauth2.RetrieveError{Response: res, Body: body}
	if ct, _, _ := mime.ParseMediaType(res.Header.Get("Content-Type")); ct == "application/json" {
		var eb struct {
			Error       string `json:"error"`
			Description string `json:"error_description"`
			URI         string `json:"error_uri"`
		}
		if json.Unmarshal(body, &eb) == nil {
			e.ErrorCode, e.ErrorDescription, e.ErrorURI = eb.Error, eb.Description, eb.URI
		}
	}
	return e
}

// ErrorCode returns the RFC 6749 error code of a token endpoint refusal
// ("invalid_grant", "invalid_scope", ...), or "" when err is something else.
func ErrorCode(err error) string {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		return re.ErrorCode
	}
	return ""
}

// TokenSource returns an oauth2.TokenSource that exchanges r.SubjectToken on
// first use and again when the delegated token is about to expire. Use it with
// oauth2.NewClient to call the resource. ctx bounds every exchange it makes.
func (c *Client) TokenSource(ctx context.Context, r ExchangeRequest) oauth2.TokenSource {
	return oauth2.ReuseTokenSource(nil, exchangeSource{ctx: ctx, c: c, r: r})
}

type exchangeSource struct {
	ctx context.Context
	c   *Client
	r   ExchangeRequest
}

func (s exchangeSource) Token() (*oauth2.Token, error) { return s.c.Exchange(s.ctx, s.r) }

// Introspection is an RFC 7662 answer.
type Introspection struct {
	Active bool
	// Claims holds every member of the answer (sub, client_id, scope, act, ...).
	Claims map[string]any
}

// Introspect asks mandate whether token is active (RFC 7662).
func (c *Client) Introspect(ctx context.Context, token string) (*Introspection, error) {
	if c.meta.IntrospectionEndpoint == "" {
		return nil, errors.New("agentclient: the server has no introspection_endpoint")
	}
	res, body, err := c.post(ctx, c.meta.IntrospectionEndpoint, url.Values{"token": {token}, "token_type_hint": {"access_token"}})
	if err != nil {
		return nil, err
	}
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("agentclient: introspect: %w", retrieveError(res, body))
	}
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, fmt.Errorf("agentclient: introspect: decode response: %w", err)
	}
	active, _ := m["active"].(bool)
	return &Introspection{Active: active, Claims: m}, nil
}

// Revoke revokes token at mandate (RFC 7009): the holder, or any client in the
// token's actor chain, may; every token derived from it dies with it.
func (c *Client) Revoke(ctx context.Context, token string) error {
	if c.meta.RevocationEndpoint == "" {
		return errors.New("agentclient: the server has no revocation_endpoint")
	}
	res, body, err := c.post(ctx, c.meta.RevocationEndpoint, url.Values{"token": {token}, "token_type_hint": {"access_token"}})
	if err != nil {
		return err
	}
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("agentclient: revoke: %w", retrieveError(res, body))
	}
	return nil
}
