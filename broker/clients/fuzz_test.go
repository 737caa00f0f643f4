package clients_test

import (
	"crypto"
	"encoding/json"
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/mandate-dev/mandate/broker/clients"
)

// FuzzValidate feeds registrations decoded from arbitrary JSON through Validate. It
// must never panic, must fail only with a *ValidationError, and whatever it accepts
// must be stable: validating the result again accepts it unchanged.
func FuzzValidate(f *testing.F) {
	testKeys(f)
	es := string(jwksOf(f, map[string]crypto.Signer{"k": ecP256}, ""))
	rs := string(jwksOf(f, map[string]crypto.Signer{"k": rsa2048}, "PS384"))
	for _, seed := range []string{
		`{"name":"a","type":"agent"}`,
		`{"client_id":"x","name":"a","type":"app","token_endpoint_auth_method":"client_secret_post","scopes":["a","b"],"audiences":["https://x"]}`,
		`{"name":"a","type":"agent","token_endpoint_auth_method":"private_key_jwt","jwks":` + es + `}`,
		`{"name":"a","type":"agent","token_endpoint_auth_method":"private_key_jwt","jwks":` + rs + `}`,
		`{"name":"a","type":"agent","token_endpoint_auth_method":"private_key_jwt","jwks":{"keys":[{"kty":"EC","crv":"P-256","kid":"k","x":"","y":""}]}}`,
		`{"name":"a","type":"agent","token_endpoint_auth_method":"private_key_jwt","jwks":{"keys":[{"kty":"RSA","kid":"k","n":"AQAB","e":"AQAB","x5c":["AAAA"]}]}}`,
		`{"name":"\u0000","type":"agent","grant_types":["x"],"scopes":[" "],"audiences":["a:b#c"]}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var c clients.Client
		if json.Unmarshal(data, &c) != nil {
			return
		}
		err := c.Validate()
		if err != nil {
			var ve *clients.ValidationError
			if !errors.As(err, &ve) || ve.Field == "" || ve.Message == "" {
				t.Fatalf("Validate returned %T %v, want a *ValidationError with field and message", err, err)
			}
			return
		}
		first, _ := json.Marshal(&c)
		if err := c.Validate(); err != nil {
			t.Fatalf("accepted registration fails a second Validate: %v\n%s", err, first)
		}
		if second, _ := json.Marshal(&c); string(second) != string(first) {
			t.Fatalf("Validate is not idempotent:\n%s\n%s", first, second)
		}
		if !clients.ValidID(c.ID) {
			t.Fatalf("accepted invalid id %q", c.ID)
		}
	})
}

// FuzzValidID checks the hand-written ValidID against the documented pattern.
func FuzzValidID(f *testing.F) {
	pattern := regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)
	for _, seed := range []string{"", "a", "-a", "a-", "agt_x", "a b", "a\n", "é", strings.Repeat("a", 128), strings.Repeat("a", 129), "a.b_c-d"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, id string) {
		if got, want := clients.ValidID(id), pattern.MatchString(id); got != want {
			t.Fatalf("ValidID(%q) = %v, want %v", id, got, want)
		}
	})
}
