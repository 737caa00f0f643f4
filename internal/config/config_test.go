package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mandate-dev/mandate/broker"
)

func TestLoadLayers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.yaml")
	yaml := "listen: 127.0.0.1:9000\ntokens:\n  access_token_lifetime: 5m\ndelegation:\n  max_depth: 3\n"
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"MANDATE_MAX_DEPTH": "4"}
	c, err := Load(path, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Set("log.level", "debug"); err != nil { // a flag
		t.Fatal(err)
	}
	if err := c.Finish(); err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:9000" || c.Tokens.AccessTokenLifetime != 5*time.Minute || c.Delegation.MaxDepth != 4 || c.Log.Level != "debug" {
		t.Fatalf("layers: got %+v", c)
	}
	if c.Issuer != "http://127.0.0.1:9000" || !strings.HasPrefix(c.DatabaseURL, "sqlite:") {
		t.Fatalf("derived: issuer %q database %q", c.Issuer, c.DatabaseURL)
	}
}

func TestLoadRejectsUnknownKeys(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.yaml")
	_ = os.WriteFile(path, []byte("tokens:\n  acess_token_lifetime: 5m\n"), 0o600)
	if _, err := Load(path, func(string) string { return "" }); err == nil || !strings.Contains(err.Error(), "acess_token_lifetime") {
		t.Fatalf("got %v, want an error naming the unknown key", err)
	}
	if _, err := Load("", func(k string) string {
		if k == "MANDATE_MAX_DEPTH" {
			return "many"
		}
		return ""
	}); err == nil || !strings.Contains(err.Error(), "MANDATE_MAX_DEPTH") {
		t.Fatalf("got %v, want an error naming the variable", err)
	}
}

func TestValidateNamesTheKey(t *testing.T) {
	cases := []struct {
		key string
		mut func(*Config)
	}{
		{"listen", func(c *Config) { c.Listen = "nope" }},
		{"issuer", func(c *Config) { c.Issuer = "ftp://x" }},
		{"issuer", func(c *Config) { c.Issuer = "http://mandate.example.com" }},
		{"database_url", func(c *Config) { c.DatabaseURL = "mysql://x" }},
		{"tokens.access_token_lifetime", func(c *Config) { c.Tokens.AccessTokenLifetime = time.Second }},
		{"tokens.max_lifetime", func(c *Config) { c.Tokens.MaxLifetime = time.Minute }},
		{"tokens.signing_alg", func(c *Config) { c.Tokens.SigningAlg = "HS256" }},
		{"delegation.max_depth", func(c *Config) { c.Delegation.MaxDepth = 0 }},
		{"policies.eval_timeout", func(c *Config) { c.Policies.EvalTimeout = 0 }},
		{"http.max_body_bytes", func(c *Config) { c.HTTP.MaxBodyBytes = 1 }},
		{"log.level", func(c *Config) { c.Log.Level = "loud" }},
		{"upstream_issuers[0].audience", func(c *Config) { c.Upstream = append(c.Upstream, upstream("https://idp", "")) }},
	}
	for _, tc := range cases {
		t.Run(tc.key, func(t *testing.T) {
			c := Default()
			tc.mut(&c)
			err := c.Finish()
			if err == nil || !strings.Contains(err.Error(), tc.key) {
				t.Fatalf("got %v, want an error naming %s", err, tc.key)
			}
		})
	}
}

func upstream(iss, aud string) broker.TrustedIssuer {
	return broker.TrustedIssuer{Issuer: iss, Audience: aud, JWKSURI: iss + "/jwks"}
}
