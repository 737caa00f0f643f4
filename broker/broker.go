// Package broker is mandate's exchange core: the fosite provider, the RFC 8693
// token-exchange and client-credentials grant handlers, client authentication,
// token minting, introspection and revocation, and the delegation chain.
//
// The broker enforces DESIGN.md's invariants itself (attenuation, holder binding,
// the kept chain, consent, default deny) and asks a policy Decider on every token
// request; the policy can only narrow what the invariants already allow.
package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/ory/fosite"

	"github.com/mandate-dev/mandate/broker/clients"
	"github.com/mandate-dev/mandate/broker/ledger"
	"github.com/mandate-dev/mandate/internal/db"
	"github.com/mandate-dev/mandate/policies"
)

// Config is what the broker needs to know about itself.
type Config struct {
	// Issuer is mandate's own iss, e.g. "https://mandate.example.com".
	Issuer string
	// AccessTokenLifetime is the default lifetime of issued tokens (default 10m).
	AccessTokenLifetime time.Duration
	// MaxTokenLifetime caps every token whatever else allows (default 1h).
	MaxTokenLifetime time.Duration
	// MaxDepth is the server's maximum delegation depth (default 5).
	MaxDepth int
	// Leeway is the clock skew allowed when checking token times (default 30s).
	Leeway time.Duration
}

// Grant is the part of a user's delegation grant the exchange needs.
type Grant struct {
	ID               string
	Scopes           []string
	Resources        []string
	MaxDepth         int
	MaxLifetime      time.Duration
	AllowedSubAgents []string
	ExpiresAt        time.Time
}

// ErrGrantNotFound is what a GrantLookup returns when no active grant matches.
var ErrGrantNotFound = errors.New("broker: no active grant")

// GrantLookup finds users' delegation grants (implemented over the grants store).
type GrantLookup interface {
	// FindActive returns the active grant from the user to the client, or ErrGrantNotFound.
	FindActive(ctx context.Context, userIssuer, userSubject, clientID string) (*Grant, error)
	// ActiveByID returns the grant if it is still active, or ErrGrantNotFound.
	ActiveByID(ctx context.Context, id string) (*Grant, error)
}

// Decider decides a token request (implemented by the policy engine).
type Decider interface {
	Decide(ctx context.Context, in *policies.Input) (policies.Decision, error)
}

// DecisionRecorder keeps the decision log; Record must not block the request.
type DecisionRecorder interface {
	RecordDecision(ctx context.Context, a *Audit)
}

// ClientDirectory is the client registry as the broker uses it.
type ClientDirectory interface {
	fosite.ClientManager
	Get(ctx context.Context, id string) (*clients.Client, error)
}

// Deps are the broker's collaborators, wired explicitly by cmd/mandate.
type Deps struct {
	Clients   ClientDirectory
	Hasher    fosite.Hasher
	Keys      KeySource
	Upstream  *Upstream
	Ledger    *ledger.Ledger
	Grants    GrantLookup // nil: no grants; only first-party clients may act for users
	Decider   Decider     // required: no decider means every request is denied
	Decisions DecisionRecorder
	Logger    *slog.Logger
	Clock     func() time.Time
}

// KeySource signs with the active key and finds published keys for verification.
type KeySource interface {
	Signer
	VerifyKeys
}

// Broker serves the token, introspection and revocation endpoints.
type Broker struct {
	cfg       Config
	provider  *fosite.Fosite
	clients   ClientDirectory
	keys      KeySource
	upstream  *Upstream
	ledger    *ledger.Ledger
	grants    GrantLookup
	decider   Decider
	decisions DecisionRecorder
	log       *slog.Logger
	clock     func() time.Time
	own       *verifiedCache[*ownToken]
}

// New composes the fosite provider with mandate's grant handlers.
func New(cfg Config, d Deps) (*Broker, error) {
	if cfg.Issuer == "" {
		return nil, errors.New("broker: issuer is required")
	}
	if d.Clients == nil || d.Keys == nil || d.Upstream == nil || d.Ledger == nil || d.Hasher == nil {
		return nil, errors.New("broker: clients, hasher, keys, upstream and ledger are required")
	}
	if cfg.AccessTokenLifetime <= 0 {
		cfg.AccessTokenLifetime = 10 * time.Minute
	}
	if cfg.MaxTokenLifetime <= 0 {
		cfg.MaxTokenLifetime = time.Hour
	}
	if cfg.AccessTokenLifetime > cfg.MaxTokenLifetime {
		cfg.AccessTokenLifetime = cfg.MaxTokenLifetime
	}
	if cfg.MaxDepth <= 0 {
		cfg.MaxDepth = 5
	}
	if cfg.Leeway <= 0 {
		cfg.Leeway = 30 * time.Second
	}
	b := &Broker{
		cfg: cfg, clients: d.Clients, keys: d.Keys, upstream: d.Upstream, ledger: d.Ledger,
		grants: d.Grants, decider: d.Decider, decisions: d.Decisions, log: d.Logger, clock: d.Clock,
		own: newVerifiedCache[*ownToken](50000),
	}
	if b.log == nil {
		b.log = slog.Default()
	}
	if b.clock == nil {
		b.clock = time.Now
	}
	fcfg := &fosite.Config{
		// private_key_jwt assertions must name the token endpoint as their audience (RFC 7523 §3).
		TokenURL: strings.TrimRight(cfg.Issuer, "/") + "/oauth2/token",
		// Client secrets are 256-bit random values, so a keyed fast hash is safe
		// and keeps bcrypt off the hot path.
		ClientSecretsHasher: d.Hasher,
		// Never leak internals into error responses.
		SendDebugMessagesToClients: false,
		AccessTokenLifespan:        cfg.AccessTokenLifetime,
	}
	fcfg.TokenEndpointHandlers = fosite.TokenEndpointHandlers{
		&ExchangeHandler{b: b},
		&ClientCredentialsHandler{b: b},
	}
	b.provider = fosite.NewOAuth2Provider(d.Clients, fcfg)
	return b, nil
}

// Issuer returns the broker's issuer URL.
func (b *Broker) Issuer() string { return b.cfg.Issuer }

// Config returns the effective configuration.
func (b *Broker) Config() Config { return b.cfg }

func (b *Broker) decide(ctx context.Context, in *policies.Input) (policies.Decision, error) {
	if b.decider == nil {
		return policies.Decision{}, errors.New("no policy is configured")
	}
	return b.decider.Decide(ctx, in)
}

func (b *Broker) isAgent(ctx context.Context, id string) bool {
	c, err := b.clients.Get(ctx, id)
	return err == nil && !c.Disabled && c.Type == "agent"
}

func grantLookupError(err error, format string, args ...any) error {
	if errors.Is(err, db.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) {
		return errUnavailable("the grant store is unreachable; retry shortly")
	}
	if errors.Is(err, ErrGrantNotFound) && format != "" {
		return errInvalidGrant(format, args...)
	}
	return fmt.Errorf("broker: grant lookup: %w", err)
}

// populate mints the decided token, records it, and fills the response.
func (b *Broker) populate(ctx context.Context, ar fosite.AccessRequester, resp fosite.AccessResponder) error {
	sess, ok := ar.GetSession().(*Session)
	if !ok || sess.issue == nil {
		return errors.New("broker: no token was decided for this request")
	}
	is := sess.issue
	is.claims.JTI = NewTokenID()
	payload, err := json.Marshal(&is.claims)
	if err != nil {
		return fmt.Errorf("broker: encode claims: %w", err)
	}
	tok, err := b.keys.SignToken(payload)
	if err != nil {
		return fmt.Errorf("broker: sign token: %w", err)
	}
	c := &is.claims
	b.ledger.Record(ledger.TokenRecord{
		JTI: c.JTI, ClientID: c.ClientID, Subject: c.Subject, SubjectIssuer: c.SubjectIssuer, GrantID: c.GrantID,
		ParentJTI: is.parentJTI, Ancestors: c.Ancestors, Actors: c.Act.Chain(), Scope: c.Scope, Audience: c.Audience,
		Depth: c.Depth, IssuedAt: time.Unix(c.IssuedAt, 0), ExpiresAt: time.Unix(c.Expiry, 0),
	})
	resp.SetAccessToken(tok)
	resp.SetTokenType("Bearer")
	resp.SetExpiresIn(time.Unix(c.Expiry, 0).Sub(b.clock()))
	if ar.GetGrantTypes().ExactOne(GrantTypeTokenExchange) {
		// RFC 8693 §2.2.1: issued_token_type is REQUIRED.
		resp.SetExtra("issued_token_type", is.tokenType)
	}
	// RFC 8693 §2.2.1: scope is OPTIONAL if identical to the requested scope, REQUIRED otherwise.
	if scopes := c.Scopes(); len(is.requestScopes) == 0 || !sameSet(scopes, is.requestScopes) {
		resp.SetExtra("scope", c.Scope)
	}
	return nil
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}

// multiValued are the token request parameters RFC 8693 and RFC 8707 let repeat.
var multiValued = map[string]bool{"audience": true, "resource": true}

// Token serves POST /oauth2/token.
func (b *Broker) Token(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	start := time.Now()
	sess := NewSession()
	ar, err := b.tokenRequest(ctx, r, sess)
	if err == nil {
		var resp fosite.AccessResponder
		resp, err = b.provider.NewAccessResponse(ctx, ar)
		if err == nil {
			b.provider.WriteAccessResponse(ctx, w, ar, resp)
			b.record(ctx, sess, start, "")
			return
		}
	}
	if sess.Audit != nil && sess.Audit.Allowed {
		sess.Audit.Allowed = false
		sess.Audit.Reasons = append(sess.Audit.Reasons, "token could not be issued")
	}
	code := b.writeError(ctx, w, r, ar, err)
	b.record(ctx, sess, start, code)
}

func (b *Broker) record(ctx context.Context, sess *Session, start time.Time, code string) {
	if b.decisions == nil {
		return
	}
	a := sess.Audit
	if a == nil {
		// Refused before a handler ran (bad form, client authentication): still
		// counted, with what is known.
		a = &Audit{GrantType: "unknown", Reasons: []string{code}}
	}
	a.Error, a.Duration = code, time.Since(start)
	b.decisions.RecordDecision(ctx, a)
}

func (b *Broker) tokenRequest(ctx context.Context, r *http.Request, sess *Session) (fosite.AccessRequester, error) {
	if r.Method != http.MethodPost {
		return nil, errInvalidRequest("the token endpoint accepts POST only")
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(strings.ToLower(strings.TrimSpace(ct)), "application/x-www-form-urlencoded") {
		return nil, errInvalidRequest("the token request must be application/x-www-form-urlencoded")
	}
	if err := r.ParseForm(); err != nil {
		return nil, errInvalidRequest("the request body is not a valid form")
	}
	if r.URL.RawQuery != "" {
		return nil, errInvalidRequest("token request parameters belong in the body, not the URL")
	}
	// RFC 6749 §3.2: request parameters MUST NOT be included more than once.
	for k, v := range r.PostForm {
		if len(v) > 1 && !multiValued[k] {
			return nil, errInvalidRequest("parameter %q is included more than once", truncate(k, 40))
		}
	}
	switch gt := r.PostForm.Get("grant_type"); gt {
	case GrantTypeTokenExchange, GrantTypeClientCredentials:
	case "":
		return nil, errInvalidRequest("grant_type is required")
	default:
		return nil, errUnsupportedGrantType("grant_type %q is not supported; mandate supports %s and %s", truncate(gt, 80), GrantTypeTokenExchange, GrantTypeClientCredentials)
	}
	if a := r.PostForm.Get("client_assertion"); a != "" {
		if err := b.checkAssertionLifetime(a); err != nil {
			return nil, err
		}
		ar, err := b.provider.NewAccessRequest(ctx, r, sess)
		if _, ok := IsOAuthError(err); err != nil && !ok && sess.Audit == nil {
			// fosite's assertion checks return some failures as plain errors; before
			// a handler ran, any failure here is the client's authentication.
			b.log.Debug("client assertion refused", "err", err)
			return nil, oauthError("invalid_client", http.StatusUnauthorized, "client_assertion could not be verified")
		}
		return ar, err
	}
	return b.provider.NewAccessRequest(ctx, r, sess)
}

// maxAssertionLifetime bounds how far ahead a client assertion's exp may be:
// its jti is remembered until then (replay protection), so an unbounded exp
// would let a client fill the jti store and widen the replay window.
const maxAssertionLifetime = 10 * time.Minute

// checkAssertionLifetime refuses client assertions that live too long. It reads
// exp before fosite verifies the signature; it can only refuse, never accept.
func (b *Broker) checkAssertionLifetime(a string) error {
	var c struct {
		Exp json.Number `json:"exp"`
		Nbf json.Number `json:"nbf"`
		Iat json.Number `json:"iat"`
	}
	if err := peekClaims(a, &c); err != nil {
		return oauthError("invalid_client", http.StatusUnauthorized, "client_assertion is invalid: %s", err)
	}
	exp, err := c.Exp.Int64()
	if err != nil {
		return oauthError("invalid_client", http.StatusUnauthorized, "client_assertion needs a numeric exp")
	}
	now := b.clock()
	if time.Unix(exp, 0).Sub(now) > maxAssertionLifetime {
		return oauthError("invalid_client", http.StatusUnauthorized, "client_assertion exp is more than %s ahead; use short-lived assertions", maxAssertionLifetime)
	}
	// fosite checks these times without leeway and reports a failure as a plain
	// error, not an OAuth one; check them the same way first so that the client
	// gets invalid_client (RFC 7523 §3.2), not server_error.
	n := now.Unix()
	if n > exp {
		return oauthError("invalid_client", http.StatusUnauthorized, "client_assertion has expired")
	}
	if nbf, err := c.Nbf.Int64(); err == nil && nbf > n {
		return oauthError("invalid_client", http.StatusUnauthorized, "client_assertion is not valid yet (nbf)")
	}
	if iat, err := c.Iat.Int64(); err == nil && iat > n {
		return oauthError("invalid_client", http.StatusUnauthorized, "client_assertion was issued in the future (iat); check the client's clock")
	}
	return nil
}

// writeError writes an RFC 6749 §5.2 error. Unknown errors become server_error
// here, once, and are logged without any token or secret.
func (b *Broker) writeError(ctx context.Context, w http.ResponseWriter, r *http.Request, ar fosite.AccessRequester, err error) string {
	if errors.Is(err, db.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) {
		// fosite wraps a failed client lookup in invalid_client: the client is
		// not at fault, the store is unreachable.
		b.log.Warn("token request: store unavailable", "err", err)
		err = errUnavailable("a store this request needs is unreachable; retry shortly")
	}
	var rfc *fosite.RFC6749Error
	if !errors.As(err, &rfc) {
		b.log.Error("token request failed", "err", err)
		rfc = oauthError("server_error", http.StatusInternalServerError, "the server could not complete the request")
	} else if rfc.CodeField >= 500 && rfc.ErrorField == "server_error" {
		b.log.Error("token request failed", "err", err, "debug", rfc.DebugField)
	}
	if rfc.ErrorField == "jti_known" {
		// fosite's own code for a replayed client assertion; RFC 7523 §3.2 says
		// a client assertion that fails is invalid_client.
		rfc = oauthError("invalid_client", http.StatusUnauthorized, "the client_assertion was already used (its jti is known); sign a new one for every request")
	}
	if rfc.ErrorField == "invalid_client" {
		// RFC 6749 §5.2: 401 and WWW-Authenticate when the client used Basic.
		rfc = rfc.WithHint("")
		rfc.CodeField = http.StatusUnauthorized
		w.Header().Set("WWW-Authenticate", `Basic realm="mandate"`)
	}
	if rfc.ErrorField == "temporarily_unavailable" {
		w.Header().Set("Retry-After", "1")
	}
	b.provider.WriteAccessError(ctx, w, ar, rfc)
	return rfc.ErrorField
}

// AuthenticateClient authenticates the calling client the way the token endpoint
// does (for introspection and revocation).
func (b *Broker) AuthenticateClient(ctx context.Context, r *http.Request) (*clients.Client, error) {
	fc, err := b.provider.AuthenticateClient(ctx, r, r.PostForm)
	if err != nil {
		return nil, err
	}
	c, ok := clients.ClientFrom(fc)
	if !ok {
		return nil, errors.New("broker: client is not a mandate client")
	}
	return c, nil
}
