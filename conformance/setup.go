package conformance

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"
)

// The resources of the suite's fixture. Clients are registered for them and
// grants name them; a server under test configured from a file must register
// its clients for the same ones (see docs/conformance.md).
const (
	ResourceMail     = "https://api.example.com/mail"
	ResourceCalendar = "https://api.example.com/calendar"
	ResourceReports  = "https://api.example.com/reports"
	ResourceAPIs     = "https://api.example.com/*"
)

// FixtureClient is one client of the fixture SetupMandate registers.
type FixtureClient struct {
	Role           string
	Type           string // agent or app
	AuthMethod     string
	GrantTypes     []string
	Scopes         []string
	Audiences      []string
	FirstParty     bool
	MayImpersonate bool
}

// FixtureGrant is one user's grant to one role's client.
type FixtureGrant struct {
	User        string
	Role        string
	Scopes      []string
	Resources   []string
	SubAgents   []string // roles
	MaxDepth    int
	MaxLifetime time.Duration
	// ExpiresIn is how long after setup the grant expires (default 24h).
	ExpiresIn time.Duration
}

const (
	grantTokenExchange     = "urn:ietf:params:oauth:grant-type:token-exchange"
	grantClientCredentials = "client_credentials"
)

var agentGrants = []string{grantTokenExchange, grantClientCredentials}

// FixtureClients are the clients SetupMandate registers, one per role.
var FixtureClients = []FixtureClient{
	{Role: RoleAgentA, Type: "agent", AuthMethod: "client_secret_basic", GrantTypes: agentGrants,
		Scopes: []string{"mail:read", "mail:write", "calendar:read"}, Audiences: []string{ResourceMail, ResourceCalendar}},
	{Role: RoleAgentB, Type: "agent", AuthMethod: "client_secret_basic", GrantTypes: agentGrants,
		Scopes: []string{"mail:read", "calendar:read"}, Audiences: []string{ResourceMail, ResourceCalendar}},
	{Role: RoleAgentC, Type: "agent", AuthMethod: "client_secret_basic", GrantTypes: agentGrants,
		Scopes: []string{"mail:read"}, Audiences: []string{ResourceMail}},
	{Role: RoleAgentD, Type: "agent", AuthMethod: "client_secret_basic", GrantTypes: agentGrants,
		Scopes: []string{"mail:read", "calendar:read"}, Audiences: []string{ResourceMail, ResourceCalendar}},
	{Role: RoleApp, Type: "app", AuthMethod: "client_secret_post", GrantTypes: []string{grantClientCredentials},
		Scopes: []string{"reports:read"}, Audiences: []string{ResourceReports}},
	{Role: RolePrivateKeyJWT, Type: "app", AuthMethod: "private_key_jwt", GrantTypes: []string{grantClientCredentials},
		Scopes: []string{"reports:read"}, Audiences: []string{ResourceReports}},
	{Role: RoleImpersonator, Type: "agent", AuthMethod: "client_secret_basic", GrantTypes: agentGrants,
		Scopes: []string{"mail:read"}, Audiences: []string{ResourceMail}, FirstParty: true, MayImpersonate: true},
	{Role: RoleUnvetted, Type: "agent", AuthMethod: "client_secret_basic", GrantTypes: agentGrants,
		Scopes: []string{"mail:read"}, Audiences: []string{ResourceMail}, MayImpersonate: true},
}

// FixtureGrants are the grants SetupMandate creates through the users' own
// grants API. Each user exists for a story: alice is the everyday user, bob's
// grant allows no re-delegation (max depth 1) and tokens of at most 2 minutes,
// carol's allows depth 2 and mail:write, erin's grant is revoked during the
// run, frank's expires 5 minutes after setup (sooner than a token would), gina
// narrows hers during the run, and zoe has granted nothing.
var FixtureGrants = []FixtureGrant{
	{User: "alice", Role: RoleAgentA, Scopes: []string{"mail:read", "calendar:read"}, Resources: []string{ResourceAPIs},
		SubAgents: []string{RoleAgentB, RoleAgentD}, MaxDepth: 3},
	{User: "alice", Role: RoleAgentC, Scopes: []string{"mail:read"}, Resources: []string{ResourceMail}},
	{User: "alice", Role: RoleUnvetted, Scopes: []string{"mail:read"}, Resources: []string{ResourceMail}},
	{User: "bob", Role: RoleAgentA, Scopes: []string{"mail:read"}, Resources: []string{ResourceMail},
		SubAgents: []string{RoleAgentB}, MaxDepth: 1, MaxLifetime: 120 * time.Second},
	{User: "carol", Role: RoleAgentA, Scopes: []string{"mail:read", "mail:write"}, Resources: []string{ResourceMail},
		SubAgents: []string{RoleAgentB, RoleAgentD}, MaxDepth: 2},
	{User: "erin", Role: RoleAgentA, Scopes: []string{"mail:read"}, Resources: []string{ResourceMail},
		SubAgents: []string{RoleAgentB}, MaxDepth: 3},
	{User: "frank", Role: RoleAgentA, Scopes: []string{"mail:read"}, Resources: []string{ResourceMail},
		ExpiresIn: 5 * time.Minute},
	{User: "gina", Role: RoleAgentA, Scopes: []string{"mail:read", "calendar:read"}, Resources: []string{ResourceAPIs},
		SubAgents: []string{RoleAgentB}, MaxDepth: 3},
}

// SetupOption adjusts SetupMandate.
type SetupOption func(*setupOptions)

type setupOptions struct {
	audience string
	hc       *http.Client
}

// WithUserAudience sets the aud of user tokens, the audience of mandate's
// upstream_issuers entry for the IdP (default: mandate's issuer).
func WithUserAudience(aud string) SetupOption { return func(o *setupOptions) { o.audience = aud } }

// WithHTTPClient sets the HTTP client used for setup.
func WithHTTPClient(hc *http.Client) SetupOption { return func(o *setupOptions) { o.hc = hc } }

// SetupMandate prepares a mandate node for the suite: it registers
// FixtureClients through the admin API (with ids unique to this run) and
// creates FixtureGrants through the users' grants API, authenticated by user
// tokens the IdP mints. mandate must already trust idp (upstream_issuers:
// issuer idp.URL(), jwks_uri idp.JWKSURL(), the user audience).
func SetupMandate(ctx context.Context, baseURL, adminKey string, idp *IdP, opts ...SetupOption) (*Target, error) {
	o := setupOptions{hc: newHTTPClient()}
	for _, f := range opts {
		f(&o)
	}
	if idp == nil {
		return nil, errors.New("conformance: setup: an IdP is required (users create their grants with its tokens)")
	}
	if adminKey == "" {
		return nil, errors.New("conformance: setup: the admin key is required")
	}
	base := strings.TrimRight(baseURL, "/")
	mdURL, err := MetadataURLFor(base)
	if err != nil {
		return nil, err
	}
	md, err := fetchJSON(ctx, o.hc, mdURL)
	if err != nil {
		return nil, fmt.Errorf("conformance: setup: %w", err)
	}
	issuer, _ := md["issuer"].(string)
	if issuer == "" {
		return nil, fmt.Errorf("conformance: setup: the metadata at %s names no issuer", mdURL)
	}
	if o.audience == "" {
		o.audience = issuer
	}
	t := &Target{
		Issuer:   issuer,
		IdP:      IdPConfig{Addr: strings.TrimPrefix(idp.URL(), "http://"), Audience: o.audience},
		Features: []string{FeatureMandate, FeatureNextHopAudience, FeatureStrictErrors},
		Clients:  map[string]*Client{},
		Mandate:  &MandateSetup{URL: base, AdminKey: adminKey, Grants: map[string]string{}, GrantExpiry: map[string]int64{}},
	}
	api := &mandateAPI{hc: o.hc, base: base}
	run := strings.ToLower(rand.Text()[:6])
	for _, fc := range FixtureClients {
		c, err := api.registerClient(ctx, adminKey, fc, "cf-"+strings.ReplaceAll(fc.Role, "_", "-")+"-"+run)
		if err != nil {
			return nil, fmt.Errorf("conformance: setup: register %s: %w", fc.Role, err)
		}
		t.Clients[fc.Role] = c
		t.Mandate.ClientIDs = append(t.Mandate.ClientIDs, c.ID)
	}
	for _, fg := range FixtureGrants {
		tok, err := idp.Mint(UserToken{Subject: fg.User, Scope: "openid", Audience: o.audience, TTL: 5 * time.Minute})
		if err != nil {
			return nil, err
		}
		subs := make([]string, 0, len(fg.SubAgents))
		for _, r := range fg.SubAgents {
			subs = append(subs, t.Clients[r].ID)
		}
		life := fg.ExpiresIn
		if life <= 0 {
			life = 24 * time.Hour
		}
		expires := time.Now().Add(life).UTC().Truncate(time.Second)
		body := map[string]any{
			"client_id": t.Clients[fg.Role].ID, "scopes": fg.Scopes, "resources": fg.Resources,
			"allowed_sub_agents": subs, "max_depth": fg.MaxDepth,
			"max_lifetime_seconds": int64(fg.MaxLifetime / time.Second),
			"expires_at":           expires.Format(time.RFC3339),
		}
		var out struct {
			GrantID string `json:"grant_id"`
		}
		if err := api.call(ctx, http.MethodPost, "/v1/grants", "Bearer "+tok, body, http.StatusCreated, &out); err != nil {
			var se *statusError
			if errors.As(err, &se) && se.status == http.StatusUnauthorized {
				return nil, fmt.Errorf("conformance: setup: mandate refused the IdP's user token: does its upstream_issuers trust issuer %s, jwks_uri %s, audience %s? (mandate refetches an issuer's keys at most every 10 s, so a new IdP key right after another run needs a short wait or a kept key): %w",
					idp.URL(), idp.JWKSURL(), o.audience, err)
			}
			return nil, fmt.Errorf("conformance: setup: grant from %s to %s: %w", fg.User, fg.Role, err)
		}
		t.Mandate.Grants[fg.User+"/"+fg.Role] = out.GrantID
		t.Mandate.GrantExpiry[fg.User+"/"+fg.Role] = expires.Unix()
	}
	if err := t.Validate(); err != nil {
		return nil, fmt.Errorf("conformance: setup: %w", err)
	}
	if err := t.Resolve(ctx, o.hc); err != nil {
		return nil, err
	}
	return t, nil
}

// Cleanup revokes the grants and deletes the clients SetupMandate created.
// It does nothing for targets that were not set up.
func (t *Target) Cleanup(ctx context.Context) error {
	if t.Mandate == nil {
		return nil
	}
	api := &mandateAPI{hc: newHTTPClient(), base: t.Mandate.URL}
	var errs []error
	auth := "Bearer " + t.Mandate.AdminKey
	for key, id := range t.Mandate.Grants {
		// A grant revoked by a case answers 204 again or 409; either is fine.
		err := api.call(ctx, http.MethodDelete, "/admin/v1/grants/"+url.PathEscape(id)+"?reason=conformance+cleanup", auth, nil, http.StatusNoContent, nil)
		var se *statusError
		if err != nil && !(errors.As(err, &se) && (se.status == http.StatusConflict || se.status == http.StatusNotFound)) {
			errs = append(errs, fmt.Errorf("revoke grant %s (%s): %w", id, key, err))
		}
	}
	for _, id := range t.Mandate.ClientIDs {
		if err := api.call(ctx, http.MethodDelete, "/admin/v1/clients/"+url.PathEscape(id), auth, nil, http.StatusNoContent, nil); err != nil {
			errs = append(errs, fmt.Errorf("delete client %s: %w", id, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("conformance: cleanup: %w", err)
	}
	return nil
}

// mandateAPI calls mandate's JSON APIs (admin and user grants).
type mandateAPI struct {
	hc   *http.Client
	base string
}

type statusError struct {
	status int
	body   string
}

func (e *statusError) Error() string { return fmt.Sprintf("HTTP %d: %s", e.status, e.body) }

func (a *mandateAPI) call(ctx context.Context, method, path, auth string, body any, want int, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("encode body: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, rd)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", auth)
	res, err := a.hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, maxBody))
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if res.StatusCode != want {
		return fmt.Errorf("%s %s: %w", method, path, &statusError{status: res.StatusCode, body: truncate(string(b), 300)})
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
		}
	}
	return nil
}

func (a *mandateAPI) registerClient(ctx context.Context, adminKey string, fc FixtureClient, id string) (*Client, error) {
	body := map[string]any{
		"client_id": id, "name": "conformance " + fc.Role, "type": fc.Type,
		"token_endpoint_auth_method": fc.AuthMethod, "grant_types": fc.GrantTypes,
		"scopes": fc.Scopes, "audiences": fc.Audiences,
		"first_party": fc.FirstParty, "may_impersonate": fc.MayImpersonate,
	}
	c := &Client{ID: id, AuthMethod: fc.AuthMethod}
	if fc.AuthMethod == "private_key_jwt" {
		priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("generate key: %w", err)
		}
		k, err := jwk.FromRaw(priv)
		if err != nil {
			return nil, fmt.Errorf("key: %w", err)
		}
		c.KeyID, c.Alg = "cf-"+strings.ToLower(rand.Text()[:8]), "ES256"
		if err := k.Set(jwk.KeyIDKey, c.KeyID); err != nil {
			return nil, fmt.Errorf("key: %w", err)
		}
		c.key = k
		body["jwks"] = map[string]any{"keys": []any{ecPublicJWK(&priv.PublicKey, c.KeyID)}}
	}
	var out struct {
		ClientID     string `json:"client_id"`
		ClientSecret string `json:"client_secret"`
	}
	if err := a.call(ctx, http.MethodPost, "/admin/v1/clients", "Bearer "+adminKey, body, http.StatusCreated, &out); err != nil {
		return nil, err
	}
	c.ID, c.Secret = out.ClientID, out.ClientSecret
	return c, nil
}
