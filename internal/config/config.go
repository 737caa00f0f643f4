// Package config loads mandate's server configuration: one YAML file, then
// MANDATE_* environment variables, then command-line flags, each overriding the
// one before. Every key is documented in docs/configuration.md; Validate names the
// offending key in every error.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/mandate-dev/mandate/broker"
)

// Config is the whole server configuration.
type Config struct {
	// Listen is the HTTP listen address.
	Listen string `yaml:"listen"`
	// Issuer is mandate's issuer URL (iss of its tokens); defaults to http://<listen>.
	Issuer string `yaml:"issuer"`
	// DataDir holds the embedded database, dev keys and the dev admin key file.
	DataDir string `yaml:"data_dir"`
	// DatabaseURL selects the store: postgres://... or sqlite:PATH (default sqlite:<data_dir>/mandate.db).
	DatabaseURL string `yaml:"database_url"`
	// Dev enables the dev upstream issuer and generated secrets; never in production.
	Dev bool `yaml:"dev"`
	// KEKFile is a file holding the key-encryption key (MANDATE_KEK takes precedence).
	KEKFile string `yaml:"kek_file"`

	Tokens      Tokens                 `yaml:"tokens"`
	Delegation  Delegation             `yaml:"delegation"`
	Upstream    []broker.TrustedIssuer `yaml:"upstream_issuers"`
	Policies    Policies               `yaml:"policies"`
	HTTP        HTTP                   `yaml:"http"`
	Log         Log                    `yaml:"log"`
	Database    Database               `yaml:"database"`
	Revocations Revocations            `yaml:"revocations"`
}

// Tokens configures issued tokens.
type Tokens struct {
	AccessTokenLifetime time.Duration `yaml:"access_token_lifetime"`
	MaxLifetime         time.Duration `yaml:"max_lifetime"`
	SigningAlg          string        `yaml:"signing_alg"`
	Leeway              time.Duration `yaml:"leeway"`
	// KeyRotationInterval rotates signing keys automatically (0 = only by `mandate keys rotate`).
	KeyRotationInterval time.Duration `yaml:"key_rotation_interval"`
}

// Delegation configures the chain.
type Delegation struct {
	MaxDepth int `yaml:"max_depth"`
}

// Policies configures the policy engine.
type Policies struct {
	// Dir loads a bundle from a folder at start (teams that keep policies in git).
	Dir         string        `yaml:"dir"`
	EvalTimeout time.Duration `yaml:"eval_timeout"`
	// DecisionRetention is how long the decision log is kept.
	DecisionRetention time.Duration `yaml:"decision_retention"`
}

// HTTP configures the listener.
type HTTP struct {
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout"`
	ReadTimeout       time.Duration `yaml:"read_timeout"`
	WriteTimeout      time.Duration `yaml:"write_timeout"`
	IdleTimeout       time.Duration `yaml:"idle_timeout"`
	MaxBodyBytes      int64         `yaml:"max_body_bytes"`
	// RateLimit is the per-client token-endpoint limit in requests per second (0 = off).
	RateLimit float64 `yaml:"rate_limit"`
	RateBurst int     `yaml:"rate_burst"`
	// MaxInFlight bounds concurrent requests; past it the server answers 503 with Retry-After.
	MaxInFlight int `yaml:"max_in_flight"`
}

// Log configures logging.
type Log struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// Database tunes the store.
type Database struct {
	MaxConns       int32         `yaml:"max_conns"`
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// QueryTimeout bounds each request's database work, so an outage fails fast.
	QueryTimeout time.Duration `yaml:"query_timeout"`
}

// Revocations tunes cross-node revocation sync.
type Revocations struct {
	SyncInterval time.Duration `yaml:"sync_interval"`
}

// Default returns the defaults every key starts from.
func Default() Config {
	return Config{
		Listen:  "127.0.0.1:8080",
		DataDir: "./data",
		Tokens: Tokens{
			AccessTokenLifetime: 10 * time.Minute,
			MaxLifetime:         time.Hour,
			SigningAlg:          "ES256",
			Leeway:              30 * time.Second,
		},
		Delegation: Delegation{MaxDepth: 5},
		Policies:   Policies{EvalTimeout: 250 * time.Millisecond, DecisionRetention: 30 * 24 * time.Hour},
		HTTP: HTTP{
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       10 * time.Second,
			WriteTimeout:      15 * time.Second,
			IdleTimeout:       120 * time.Second,
			MaxBodyBytes:      64 << 10,
			MaxInFlight:       256,
		},
		Log:         Log{Level: "info", Format: "text"},
		Database:    Database{MaxConns: 16, ConnectTimeout: 5 * time.Second, QueryTimeout: 3 * time.Second},
		Revocations: Revocations{SyncInterval: 500 * time.Millisecond},
	}
}

// Load reads the YAML file (when path is not empty) over the defaults, then the
// environment. Unknown YAML keys are errors, so a typo never silently means a default.
func Load(path string, env func(string) string) (Config, error) {
	c := Default()
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return c, fmt.Errorf("config: %w", err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true)
		// An empty document decodes as io.EOF: no keys, all defaults.
		if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
			return c, fmt.Errorf("config: %s: %w", path, err)
		}
	}
	if env == nil {
		env = os.Getenv
	}
	if err := c.applyEnv(env); err != nil {
		return c, err
	}
	return c, nil
}

// Env lists the environment variables Load reads, with the key each sets.
var Env = map[string]string{
	"MANDATE_LISTEN":                "listen",
	"MANDATE_ISSUER":                "issuer",
	"MANDATE_DATA_DIR":              "data_dir",
	"MANDATE_DATABASE_URL":          "database_url",
	"MANDATE_DEV":                   "dev",
	"MANDATE_KEK_FILE":              "kek_file",
	"MANDATE_ACCESS_TOKEN_LIFETIME": "tokens.access_token_lifetime",
	"MANDATE_MAX_TOKEN_LIFETIME":    "tokens.max_lifetime",
	"MANDATE_SIGNING_ALG":           "tokens.signing_alg",
	"MANDATE_MAX_DEPTH":             "delegation.max_depth",
	"MANDATE_POLICIES_DIR":          "policies.dir",
	"MANDATE_LOG_LEVEL":             "log.level",
	"MANDATE_LOG_FORMAT":            "log.format",
	"MANDATE_RATE_LIMIT":            "http.rate_limit",
}

func (c *Config) applyEnv(env func(string) string) error {
	for name, key := range Env {
		v := env(name)
		if v == "" {
			continue
		}
		if err := c.Set(key, v); err != nil {
			return fmt.Errorf("config: %s: %w", name, err)
		}
	}
	return nil
}

// Set sets one key from a string (environment variables and flags use it).
func (c *Config) Set(key, v string) error {
	var err error
	switch key {
	case "listen":
		c.Listen = v
	case "issuer":
		c.Issuer = v
	case "data_dir":
		c.DataDir = v
	case "database_url":
		c.DatabaseURL = v
	case "dev":
		c.Dev, err = strconv.ParseBool(v)
	case "kek_file":
		c.KEKFile = v
	case "tokens.access_token_lifetime":
		c.Tokens.AccessTokenLifetime, err = time.ParseDuration(v)
	case "tokens.max_lifetime":
		c.Tokens.MaxLifetime, err = time.ParseDuration(v)
	case "tokens.signing_alg":
		c.Tokens.SigningAlg = v
	case "delegation.max_depth":
		c.Delegation.MaxDepth, err = strconv.Atoi(v)
	case "policies.dir":
		c.Policies.Dir = v
	case "log.level":
		c.Log.Level = v
	case "log.format":
		c.Log.Format = v
	case "http.rate_limit":
		c.HTTP.RateLimit, err = strconv.ParseFloat(v, 64)
	default:
		return fmt.Errorf("unknown key %q", key)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", key, err)
	}
	return nil
}

// Finish fills derived defaults (issuer, database URL) and validates.
func (c *Config) Finish() error {
	if c.Issuer == "" {
		c.Issuer = "http://" + c.Listen
	}
	c.Issuer = strings.TrimRight(c.Issuer, "/")
	if c.DatabaseURL == "" {
		c.DatabaseURL = "sqlite:" + filepath.Join(c.DataDir, "mandate.db")
	}
	return c.Validate()
}

// Validate checks every key and names the first bad one.
func (c *Config) Validate() error {
	bad := func(key, format string, args ...any) error {
		return fmt.Errorf("config: %s: %s", key, fmt.Sprintf(format, args...))
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return bad("listen", "%q is not host:port", c.Listen)
	}
	u, err := url.Parse(c.Issuer)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return bad("issuer", "%q must be an http(s) URL without query or fragment", c.Issuer)
	}
	if u.Scheme == "http" && !c.Dev && !isLoopbackHost(u.Hostname()) {
		return bad("issuer", "%q must be https outside dev mode (http is allowed on loopback)", c.Issuer)
	}
	if c.DataDir == "" {
		return bad("data_dir", "must not be empty")
	}
	if !strings.HasPrefix(c.DatabaseURL, "postgres://") && !strings.HasPrefix(c.DatabaseURL, "postgresql://") && !strings.HasPrefix(c.DatabaseURL, "sqlite:") {
		return bad("database_url", "must start with postgres:// or sqlite:")
	}
	t := c.Tokens
	if t.AccessTokenLifetime < 10*time.Second || t.AccessTokenLifetime > 24*time.Hour {
		return bad("tokens.access_token_lifetime", "%s must be between 10s and 24h", t.AccessTokenLifetime)
	}
	if t.MaxLifetime < t.AccessTokenLifetime || t.MaxLifetime > 24*time.Hour {
		return bad("tokens.max_lifetime", "%s must be at least tokens.access_token_lifetime and at most 24h", t.MaxLifetime)
	}
	if t.SigningAlg != "ES256" && t.SigningAlg != "EdDSA" {
		return bad("tokens.signing_alg", "%q must be ES256 or EdDSA", t.SigningAlg)
	}
	if t.Leeway < 0 || t.Leeway > 5*time.Minute {
		return bad("tokens.leeway", "%s must be between 0 and 5m", t.Leeway)
	}
	if t.KeyRotationInterval != 0 && t.KeyRotationInterval < time.Hour {
		return bad("tokens.key_rotation_interval", "%s must be 0 (manual) or at least 1h", t.KeyRotationInterval)
	}
	if c.Delegation.MaxDepth < 1 || c.Delegation.MaxDepth > 10 {
		return bad("delegation.max_depth", "%d must be between 1 and 10", c.Delegation.MaxDepth)
	}
	if c.Policies.EvalTimeout <= 0 || c.Policies.EvalTimeout > 5*time.Second {
		return bad("policies.eval_timeout", "%s must be between 1ms and 5s", c.Policies.EvalTimeout)
	}
	if c.Policies.DecisionRetention < time.Hour {
		return bad("policies.decision_retention", "%s must be at least 1h", c.Policies.DecisionRetention)
	}
	h := c.HTTP
	if h.MaxBodyBytes < 4<<10 || h.MaxBodyBytes > 10<<20 {
		return bad("http.max_body_bytes", "%d must be between 4096 and 10485760", h.MaxBodyBytes)
	}
	for key, d := range map[string]time.Duration{"http.read_header_timeout": h.ReadHeaderTimeout, "http.read_timeout": h.ReadTimeout, "http.write_timeout": h.WriteTimeout} {
		if d <= 0 || d > 5*time.Minute {
			return bad(key, "%s must be between 1ms and 5m", d)
		}
	}
	if h.RateLimit < 0 {
		return bad("http.rate_limit", "must not be negative")
	}
	if h.MaxInFlight < 1 {
		return bad("http.max_in_flight", "must be at least 1")
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		return bad("log.level", "%q must be debug, info, warn or error", c.Log.Level)
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		return bad("log.format", "%q must be text or json", c.Log.Format)
	}
	if c.Database.QueryTimeout <= 0 {
		return bad("database.query_timeout", "must be positive")
	}
	if c.Revocations.SyncInterval < 50*time.Millisecond || c.Revocations.SyncInterval > time.Minute {
		return bad("revocations.sync_interval", "%s must be between 50ms and 1m", c.Revocations.SyncInterval)
	}
	for i, ti := range c.Upstream {
		if ti.Issuer == "" {
			return bad(fmt.Sprintf("upstream_issuers[%d].issuer", i), "is required")
		}
		if ti.Issuer == c.Issuer {
			return bad(fmt.Sprintf("upstream_issuers[%d].issuer", i), "must differ from mandate's own issuer")
		}
		if ti.Audience == "" {
			return bad(fmt.Sprintf("upstream_issuers[%d].audience", i), "is required")
		}
		if (ti.JWKSURI == "") == (ti.JWKS == "") {
			return bad(fmt.Sprintf("upstream_issuers[%d]", i), "exactly one of jwks_uri and jwks is required")
		}
	}
	return nil
}

func isLoopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}
