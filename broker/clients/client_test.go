package clients_test

import (
	"crypto"
	"encoding/base64"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/mandate-dev/mandate/broker/clients"
)

func validAgent() *clients.Client {
	return &clients.Client{Name: "Travel agent", Type: clients.TypeAgent}
}

func TestValidateDefaults(t *testing.T) {
	c := validAgent()
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	if !strings.HasPrefix(c.ID, "agt_") || len(c.ID) != 4+26 || !clients.ValidID(c.ID) {
		t.Errorf("generated id: got %q, want agt_ and 26 base32 characters", c.ID)
	}
	if c.ID != strings.ToLower(c.ID) {
		t.Errorf("generated id %q is not lowercase", c.ID)
	}
	if got, want := c.GrantTypes, []string{clients.GrantTokenExchange}; !slices.Equal(got, want) {
		t.Errorf("agent grant types: got %v, want %v", got, want)
	}
	if got, want := c.AuthMethod, clients.AuthClientSecretBasic; got != want {
		t.Errorf("auth method: got %q, want %q", got, want)
	}
	if c.Scopes == nil || c.Audiences == nil {
		t.Errorf("scopes/audiences: got nil, want empty slices")
	}

	app := &clients.Client{Name: "Calendar", Type: clients.TypeApp}
	if err := app.Validate(); err != nil {
		t.Fatalf("Validate app: %v", err)
	}
	if !strings.HasPrefix(app.ID, "app_") {
		t.Errorf("app id: got %q, want app_ prefix", app.ID)
	}
	if got, want := app.GrantTypes, []string{clients.GrantTokenExchange, clients.GrantClientCredentials}; !slices.Equal(got, want) {
		t.Errorf("app grant types: got %v, want %v", got, want)
	}
	other := validAgent()
	other.Validate()
	if other.ID == c.ID {
		t.Errorf("two generated ids are equal: %q", c.ID)
	}
}

func TestValidate(t *testing.T) {
	testKeys(t)
	es256 := jwksOf(t, map[string]crypto.Signer{"k1": ecP256}, "")
	many := func(n int, f func(i int) string) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = f(i)
		}
		return out
	}
	tests := []struct {
		name      string
		mutate    func(c *clients.Client)
		wantField string // "" means valid
	}{
		{"minimal agent", func(c *clients.Client) {}, ""},
		{"missing type", func(c *clients.Client) { c.Type = "" }, "type"},
		{"unknown type", func(c *clients.Client) { c.Type = "robot" }, "type"},
		{"given id", func(c *clients.Client) { c.ID = "my-agent.v2_prod" }, ""},
		{"id 128 chars", func(c *clients.Client) { c.ID = strings.Repeat("a", 128) }, ""},
		{"id 129 chars", func(c *clients.Client) { c.ID = strings.Repeat("a", 129) }, "client_id"},
		{"id leading dash", func(c *clients.Client) { c.ID = "-agent" }, "client_id"},
		{"id with space", func(c *clients.Client) { c.ID = "my agent" }, "client_id"},
		{"id with slash", func(c *clients.Client) { c.ID = "a/b" }, "client_id"},
		{"id non-ascii", func(c *clients.Client) { c.ID = "agént" }, "client_id"},
		{"id sql", func(c *clients.Client) { c.ID = "x'; DROP TABLE clients; --" }, "client_id"},
		{"id trailing newline", func(c *clients.Client) { c.ID = "agent\n" }, "client_id"},
		{"empty name", func(c *clients.Client) { c.Name = "" }, "name"},
		{"blank name", func(c *clients.Client) { c.Name = "   " }, "name"},
		{"name 200 runes", func(c *clients.Client) { c.Name = strings.Repeat("é", 200) }, ""},
		{"name 201 runes", func(c *clients.Client) { c.Name = strings.Repeat("a", 201) }, "name"},
		{"name control char", func(c *clients.Client) { c.Name = "a\x00b" }, "name"},
		{"name invalid utf8", func(c *clients.Client) { c.Name = "a\xffb" }, "name"},
		{"name sql", func(c *clients.Client) { c.Name = "Robert'); DROP TABLE clients;--" }, ""},
		{"auth post", func(c *clients.Client) { c.AuthMethod = clients.AuthClientSecretPost }, ""},
		{"auth none", func(c *clients.Client) { c.AuthMethod = "none" }, "token_endpoint_auth_method"},
		{"auth client_secret_jwt", func(c *clients.Client) { c.AuthMethod = "client_secret_jwt" }, "token_endpoint_auth_method"},
		{"grant both", func(c *clients.Client) {
			c.GrantTypes = []string{clients.GrantClientCredentials, clients.GrantTokenExchange}
		}, ""},
		{"grant authorization_code", func(c *clients.Client) { c.GrantTypes = []string{"authorization_code"} }, "grant_types"},
		{"grant duplicate", func(c *clients.Client) {
			c.GrantTypes = []string{clients.GrantTokenExchange, clients.GrantTokenExchange}
		}, "grant_types"},
		{"scopes ok", func(c *clients.Client) { c.Scopes = []string{"calendar.read", "mail:send", "a!#[]~"} }, ""},
		{"scope with space", func(c *clients.Client) { c.Scopes = []string{"a b"} }, "scopes"},
		{"scope with quote", func(c *clients.Client) { c.Scopes = []string{`a"b`} }, "scopes"},
		{"scope with backslash", func(c *clients.Client) { c.Scopes = []string{`a\b`} }, "scopes"},
		{"scope empty", func(c *clients.Client) { c.Scopes = []string{""} }, "scopes"},
		{"scope non-ascii", func(c *clients.Client) { c.Scopes = []string{"café"} }, "scopes"},
		{"scope DEL", func(c *clients.Client) { c.Scopes = []string{"a\x7f"} }, "scopes"},
		{"scope duplicate", func(c *clients.Client) { c.Scopes = []string{"a", "a"} }, "scopes"},
		{"scope too long", func(c *clients.Client) { c.Scopes = []string{strings.Repeat("s", 257)} }, "scopes"},
		{"100 scopes", func(c *clients.Client) {
			c.Scopes = many(100, func(i int) string { return "s" + strings.Repeat("x", i) })
		}, ""},
		{"101 scopes", func(c *clients.Client) {
			c.Scopes = many(101, func(i int) string { return "s" + strings.Repeat("x", i) })
		}, "scopes"},
		{"audiences ok", func(c *clients.Client) {
			c.Audiences = []string{"https://api.example.com/v1", "urn:example:calendar", "agt_peer", "spiffe://example.org/ns/x"}
		}, ""},
		{"audience with space", func(c *clients.Client) { c.Audiences = []string{"my api"} }, "audiences"},
		{"audience fragment", func(c *clients.Client) { c.Audiences = []string{"https://api.example.com/#x"} }, "audiences"},
		{"audience no host", func(c *clients.Client) { c.Audiences = []string{"https:///path"} }, "audiences"},
		{"audience bad scheme", func(c *clients.Client) { c.Audiences = []string{"1http://x"} }, "audiences"},
		{"audience empty", func(c *clients.Client) { c.Audiences = []string{""} }, "audiences"},
		{"audience duplicate", func(c *clients.Client) { c.Audiences = []string{"x", "x"} }, "audiences"},
		{"101 audiences", func(c *clients.Client) {
			c.Audiences = many(101, func(i int) string { return "a" + strings.Repeat("x", i) })
		}, "audiences"},
		{"secret client with jwks", func(c *clients.Client) { c.JWKS = es256 }, "jwks"},
		{"secret client with null jwks", func(c *clients.Client) { c.JWKS = json.RawMessage("null") }, ""},
		{"private_key_jwt without jwks", func(c *clients.Client) { c.AuthMethod = clients.AuthPrivateKeyJWT }, "jwks"},
		{"private_key_jwt with jwks", func(c *clients.Client) { c.AuthMethod = clients.AuthPrivateKeyJWT; c.JWKS = es256 }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validAgent()
			tt.mutate(c)
			err := c.Validate()
			checkField(t, err, tt.wantField)
		})
	}
}

func checkField(t *testing.T, err error, wantField string) {
	t.Helper()
	if wantField == "" {
		if err != nil {
			t.Fatalf("got %v, want valid", err)
		}
		return
	}
	var ve *clients.ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("got %v, want a *ValidationError on %s", err, wantField)
	}
	if ve.Field != wantField {
		t.Fatalf("got field %q (%v), want %q", ve.Field, ve, wantField)
	}
	if ve.Message == "" {
		t.Fatalf("ValidationError without a message")
	}
}

func TestValidateJWKS(t *testing.T) {
	testKeys(t)
	b64 := base64.RawURLEncoding.EncodeToString
	rsa1024N := b64(append([]byte{0xc3}, make([]byte, 127)...))
	tests := []struct {
		name    string
		jwks    string
		wantAlg string // "" means invalid
		wantMsg string // substring of the error message when invalid
	}{
		{"P-256", string(jwksOf(t, map[string]crypto.Signer{"k": ecP256}, "")), "ES256", ""},
		{"P-256 with alg", string(jwksOf(t, map[string]crypto.Signer{"k": ecP256}, "ES256")), "ES256", ""},
		{"P-384", string(jwksOf(t, map[string]crypto.Signer{"k": ecP384}, "")), "ES384", ""},
		{"RSA 2048", string(jwksOf(t, map[string]crypto.Signer{"k": rsa2048}, "")), "RS256", ""},
		{"RSA PS256", string(jwksOf(t, map[string]crypto.Signer{"k": rsa2048}, "PS256")), "PS256", ""},
		{"two P-256 keys", string(jwksOf(t, map[string]crypto.Signer{"a": ecP256, "b": mustP256(t)}, "")), "ES256", ""},
		{"P-521", string(jwksOf(t, map[string]crypto.Signer{"k": ecP521}, "")), "", "P-256 or P-384"},
		{"Ed25519", string(jwksOf(t, map[string]crypto.Signer{"k": edKey}, "")), "", "EdDSA"},
		{"mixed algorithms", string(jwksOf(t, map[string]crypto.Signer{"a": ecP256, "b": ecP384}, "")), "", "one algorithm"},
		{"alg mismatch", string(jwksOf(t, map[string]crypto.Signer{"k": ecP256}, "ES384")), "", "does not fit"},
		{"RSA alg ES256", string(jwksOf(t, map[string]crypto.Signer{"k": rsa2048}, "ES256")), "", "does not fit"},
		{"RSA 1024", `{"keys":[{"kty":"RSA","kid":"k","n":"` + rsa1024N + `","e":"AQAB"}]}`, "", "2048"},
		{"RSA e=1", `{"keys":[{"kty":"RSA","kid":"k","n":"` + rsaN(t) + `","e":"AQ"}]}`, "", "exponent"},
		{"RSA e even", `{"keys":[{"kty":"RSA","kid":"k","n":"` + rsaN(t) + `","e":"AQAA"}]}`, "", "exponent"},
		{"RSA e huge", `{"keys":[{"kty":"RSA","kid":"k","n":"` + rsaN(t) + `","e":"AQAAAAAB"}]}`, "", "exponent"},
		{"private EC key", privateJWKS(t, ecP256), "", "private"},
		{"private RSA key", privateJWKS(t, rsa2048), "", "private"},
		{"uppercase D", strings.Replace(string(jwksOf(t, map[string]crypto.Signer{"k": ecP256}, "")), `"kid"`, `"D":"AAAA","kid"`, 1), "", "private"},
		{"symmetric", `{"keys":[{"kty":"oct","kid":"k","k":"c2VjcmV0"}]}`, "", "private or symmetric"},
		{"oct without k", `{"keys":[{"kty":"oct","kid":"k"}]}`, "", "symmetric"},
		{"missing kid", strings.Replace(string(jwksOf(t, map[string]crypto.Signer{"k": ecP256}, "")), `"kid":"k",`, "", 1), "", "kid"},
		{"use enc", strings.Replace(string(jwksOf(t, map[string]crypto.Signer{"k": ecP256}, "")), `"kid":"k"`, `"kid":"k","use":"enc"`, 1), "", "use"},
		{"use sig", strings.Replace(string(jwksOf(t, map[string]crypto.Signer{"k": ecP256}, "")), `"kid":"k"`, `"kid":"k","use":"sig"`, 1), "ES256", ""},
		{"key_ops sign", strings.Replace(string(jwksOf(t, map[string]crypto.Signer{"k": ecP256}, "")), `"kid":"k"`, `"kid":"k","key_ops":["sign"]`, 1), "", "key_ops"},
		{"duplicate kid", `{"keys":[` + oneKey(t, "k", ecP256) + `,` + oneKey(t, "k", mustP256(t)) + `]}`, "", "kid"},
		{"11 keys", elevenKeys(t), "", "at most 10"},
		{"empty set", `{"keys":[]}`, "", "at least one"},
		{"no keys member", `{"k":[]}`, "", "keys"},
		{"keys not array", `{"keys":{}}`, "", "keys"},
		{"array", `[]`, "", "JWK Set"},
		{"string", `"x"`, "", "JWK Set"},
		{"not JSON", `{keys`, "", "JWK Set"},
		{"key not object", `{"keys":[1]}`, "", "not a JSON object"},
		{"unknown kty", `{"keys":[{"kty":"XYZ","kid":"k"}]}`, "", "not supported"},
		{"EC point off curve", `{"keys":[{"kty":"EC","kid":"k","crv":"P-256","x":"` + b64(make([]byte, 32)) + `","y":"` + b64(make([]byte, 32)) + `"}]}`, "", "not a valid JWK"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validAgent()
			c.AuthMethod = clients.AuthPrivateKeyJWT
			c.JWKS = json.RawMessage(tt.jwks)
			err := c.Validate()
			if tt.wantAlg == "" {
				checkField(t, err, "jwks")
				if !strings.Contains(err.Error(), tt.wantMsg) {
					t.Fatalf("got %q, want it to mention %q", err, tt.wantMsg)
				}
				return
			}
			if err != nil {
				t.Fatalf("got %v, want valid", err)
			}
			var set struct {
				Keys []map[string]any `json:"keys"`
			}
			if err := json.Unmarshal(c.JWKS, &set); err != nil {
				t.Fatalf("normalised JWKS: %v", err)
			}
			for _, k := range set.Keys {
				if k["use"] != "sig" || k["alg"] != tt.wantAlg || k["kid"] == "" {
					t.Errorf("normalised key: got use=%v alg=%v kid=%v, want use=sig alg=%s", k["use"], k["alg"], k["kid"], tt.wantAlg)
				}
				if _, ok := k["d"]; ok {
					t.Errorf("normalised key carries d")
				}
			}
			// Normalising twice changes nothing.
			before := string(c.JWKS)
			if err := c.Validate(); err != nil || string(c.JWKS) != before {
				t.Errorf("second Validate: err %v, JWKS changed: %v", err, string(c.JWKS) != before)
			}
		})
	}
}
