package clients_test

import (
	"context"
	"crypto"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v3"
	josejwt "github.com/go-jose/go-jose/v3/jwt"
	"github.com/ory/fosite"

	"github.com/mandate-dev/mandate/broker/clients"
	"github.com/mandate-dev/mandate/internal/db/dbtest"
)

const tokenURL = "https://mandate.example/oauth2/token"

// assertion signs an RFC 7523 client assertion for clientID.
func assertion(t *testing.T, clientID, kid string, alg jose.SignatureAlgorithm, key crypto.Signer, jti string) string {
	t.Helper()
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: jose.JSONWebKey{Key: key, KeyID: kid}}, nil)
	if err != nil {
		t.Fatalf("signer: %v", err)
	}
	now := time.Now()
	s, err := josejwt.Signed(sig).Claims(josejwt.Claims{
		Issuer: clientID, Subject: clientID, Audience: josejwt.Audience{tokenURL}, ID: jti,
		IssuedAt: josejwt.NewNumericDate(now), Expiry: josejwt.NewNumericDate(now.Add(time.Minute)),
	}).CompactSerialize()
	if err != nil {
		t.Fatalf("sign assertion: %v", err)
	}
	return s
}

func tokenRequest(form url.Values, basicID, basicSecret string) (*http.Request, url.Values) {
	r := httptest.NewRequest(http.MethodPost, tokenURL, strings.NewReader(form.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if basicID != "" {
		r.SetBasicAuth(url.QueryEscape(basicID), url.QueryEscape(basicSecret))
	}
	return r, form
}

// TestFositeClientAuthentication drives fosite's own client authentication against
// the Store: the path the token endpoint takes.
func TestFositeClientAuthentication(t *testing.T) {
	testKeys(t)
	for _, d := range dbtest.Backends() {
		t.Run(string(d), func(t *testing.T) {
			ctx := context.Background()
			hasher := newHasher()
			s, err := clients.NewStore(dbtest.Open(t, d), hasher, clients.StoreOptions{})
			if err != nil {
				t.Fatal(err)
			}
			f := &fosite.Fosite{Store: s, Config: &fosite.Config{ClientSecretsHasher: hasher, TokenURL: tokenURL}}

			basic := &clients.Client{ID: "basic", Name: "B", Type: clients.TypeApp, AuthMethod: clients.AuthClientSecretBasic}
			basicSecret, err := s.Create(ctx, basic)
			if err != nil {
				t.Fatal(err)
			}
			post := &clients.Client{ID: "post", Name: "P", Type: clients.TypeApp, AuthMethod: clients.AuthClientSecretPost}
			postSecret, err := s.Create(ctx, post)
			if err != nil {
				t.Fatal(err)
			}
			es := &clients.Client{ID: "es", Name: "E", Type: clients.TypeAgent, AuthMethod: clients.AuthPrivateKeyJWT,
				JWKS: jwksOf(t, map[string]crypto.Signer{"k1": ecP256}, "")}
			rs := &clients.Client{ID: "rs", Name: "R", Type: clients.TypeAgent, AuthMethod: clients.AuthPrivateKeyJWT,
				JWKS: jwksOf(t, map[string]crypto.Signer{"r1": rsa2048}, "PS256")}
			for _, c := range []*clients.Client{es, rs} {
				if _, err := s.Create(ctx, c); err != nil {
					t.Fatal(err)
				}
			}
			jwtForm := func(a string) url.Values {
				return url.Values{"grant_type": {"client_credentials"},
					"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"},
					"client_assertion":      {a}}
			}
			secretForm := func(id, secret string) url.Values {
				return url.Values{"grant_type": {"client_credentials"}, "client_id": {id}, "client_secret": {secret}}
			}
			grant := url.Values{"grant_type": {"client_credentials"}}

			tests := []struct {
				name    string
				req     func() (*http.Request, url.Values)
				wantID  string // "" means refused
				wantErr *fosite.RFC6749Error
			}{
				{"basic", func() (*http.Request, url.Values) { return tokenRequest(grant, "basic", basicSecret) }, "basic", nil},
				{"basic wrong secret", func() (*http.Request, url.Values) { return tokenRequest(grant, "basic", basicSecret+"x") }, "", fosite.ErrInvalidClient},
				{"basic other client's secret", func() (*http.Request, url.Values) { return tokenRequest(grant, "basic", postSecret) }, "", fosite.ErrInvalidClient},
				{"basic client via post", func() (*http.Request, url.Values) { return tokenRequest(secretForm("basic", basicSecret), "", "") }, "", fosite.ErrInvalidClient},
				{"post", func() (*http.Request, url.Values) { return tokenRequest(secretForm("post", postSecret), "", "") }, "post", nil},
				{"unknown client", func() (*http.Request, url.Values) { return tokenRequest(grant, "ghost", basicSecret) }, "", fosite.ErrInvalidClient},
				{"private_key_jwt client with empty secret", func() (*http.Request, url.Values) {
					return tokenRequest(url.Values{"grant_type": {"client_credentials"}, "client_id": {"es"}}, "", "")
				}, "", fosite.ErrInvalidClient},
				{"ES256 assertion", func() (*http.Request, url.Values) {
					return tokenRequest(jwtForm(assertion(t, "es", "k1", jose.ES256, ecP256, "j-es")), "", "")
				}, "es", nil},
				{"ES256 replay", func() (*http.Request, url.Values) {
					return tokenRequest(jwtForm(assertion(t, "es", "k1", jose.ES256, ecP256, "j-es")), "", "")
				}, "", fosite.ErrJTIKnown},
				{"PS256 assertion", func() (*http.Request, url.Values) {
					return tokenRequest(jwtForm(assertion(t, "rs", "r1", jose.PS256, rsa2048, "j-rs")), "", "")
				}, "rs", nil},
				{"RS256 assertion for a PS256 client", func() (*http.Request, url.Values) {
					return tokenRequest(jwtForm(assertion(t, "rs", "r1", jose.RS256, rsa2048, "j-rs2")), "", "")
				}, "", fosite.ErrInvalidClient},
				{"assertion signed by another key", func() (*http.Request, url.Values) {
					return tokenRequest(jwtForm(assertion(t, "es", "k1", jose.ES256, mustP256(t), "j-forged")), "", "")
				}, "", fosite.ErrInvalidClient},
				{"assertion for a secret client", func() (*http.Request, url.Values) {
					return tokenRequest(jwtForm(assertion(t, "basic", "k1", jose.ES256, ecP256, "j-b")), "", "")
				}, "", fosite.ErrInvalidClient},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					r, form := tt.req()
					fc, err := f.AuthenticateClient(ctx, r, form)
					if tt.wantID == "" {
						if err == nil {
							t.Fatalf("authenticated %s, want refusal", fc.GetID())
						}
						if !errors.Is(err, tt.wantErr) {
							t.Fatalf("got %v, want %v", err, tt.wantErr)
						}
						return
					}
					if err != nil {
						t.Fatalf("AuthenticateClient: %v (%s)", err, fosite.ErrorToRFC6749Error(err).GetDescription())
					}
					c, ok := clients.ClientFrom(fc)
					if !ok || c.ID != tt.wantID {
						t.Fatalf("ClientFrom: got %+v, %v; want %s", c, ok, tt.wantID)
					}
				})
			}

			// Disabling takes effect at once on this node.
			if err := s.SetDisabled(ctx, "basic", true); err != nil {
				t.Fatal(err)
			}
			r, form := tokenRequest(grant, "basic", basicSecret)
			if _, err := f.AuthenticateClient(ctx, r, form); !errors.Is(err, fosite.ErrInvalidClient) {
				t.Fatalf("disabled client: got %v, want invalid_client", err)
			}

			// Concurrent uses of one assertion: exactly one authenticates.
			a := assertion(t, "es", "k1", jose.ES256, ecP256, "j-race")
			var wg sync.WaitGroup
			var mu sync.Mutex
			ok := 0
			for range 10 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					r, form := tokenRequest(jwtForm(a), "", "")
					if _, err := f.AuthenticateClient(ctx, r, form); err == nil {
						mu.Lock()
						ok++
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			if ok != 1 {
				t.Fatalf("concurrent replays: %d authenticated, want 1", ok)
			}
		})
	}
}

func TestAdapter(t *testing.T) {
	testKeys(t)
	ctx := context.Background()
	s := newStore(t, dbtest.Open(t, "sqlite"), nil)
	c := &clients.Client{ID: "a1", Name: "A", Type: clients.TypeAgent, AuthMethod: clients.AuthPrivateKeyJWT,
		JWKS:   jwksOf(t, map[string]crypto.Signer{"k": ecP384}, ""),
		Scopes: []string{"s1"}, Audiences: []string{"https://r.example"}}
	if _, err := s.Create(ctx, c); err != nil {
		t.Fatal(err)
	}
	fc, err := s.GetClient(ctx, "a1")
	if err != nil {
		t.Fatal(err)
	}
	oc, ok := fc.(fosite.OpenIDConnectClient)
	if !ok {
		t.Fatal("adapter is not a fosite.OpenIDConnectClient")
	}
	if got := oc.GetTokenEndpointAuthMethod(); got != clients.AuthPrivateKeyJWT {
		t.Errorf("auth method: got %q", got)
	}
	if got := oc.GetTokenEndpointAuthSigningAlgorithm(); got != "ES384" {
		t.Errorf("signing alg: got %q, want ES384", got)
	}
	if set := oc.GetJSONWebKeys(); set == nil || len(set.Keys) != 1 || set.Keys[0].Use != "sig" || set.Keys[0].KeyID != "k" {
		t.Errorf("JWKS: got %+v", set)
	}
	if fc.IsPublic() || fc.GetHashedSecret() != nil || oc.GetJSONWebKeysURI() != "" {
		t.Errorf("adapter: public %v, hash %v, jwks_uri %q", fc.IsPublic(), fc.GetHashedSecret(), oc.GetJSONWebKeysURI())
	}
	if !fc.GetGrantTypes().Has(clients.GrantTokenExchange) || !fc.GetScopes().Has("s1") || !fc.GetAudience().Has("https://r.example") {
		t.Errorf("adapter lists: grants %v scopes %v audience %v", fc.GetGrantTypes(), fc.GetScopes(), fc.GetAudience())
	}
	if _, ok := clients.ClientFrom(&fosite.DefaultClient{ID: "x"}); ok {
		t.Errorf("ClientFrom accepted a foreign fosite.Client")
	}
}
