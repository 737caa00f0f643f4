package broker

import (
	"time"

	"github.com/ory/fosite"
)

// Session carries one token request through fosite: what the handler decided in
// HandleTokenEndpointRequest and minted in PopulateTokenEndpointResponse.
type Session struct {
	ExpiresAt map[fosite.TokenType]time.Time
	Subject   string

	// issue is the token the handler decided to issue; nil until decided.
	issue *issuance
	// Audit describes the decision for the decision log; filled on allow and deny.
	Audit *Audit
}

// NewSession returns an empty session for one request.
func NewSession() *Session { return &Session{ExpiresAt: map[fosite.TokenType]time.Time{}} }

// SetExpiresAt implements fosite.Session.
func (s *Session) SetExpiresAt(key fosite.TokenType, exp time.Time) { s.ExpiresAt[key] = exp }

// GetExpiresAt implements fosite.Session.
func (s *Session) GetExpiresAt(key fosite.TokenType) time.Time { return s.ExpiresAt[key] }

// GetUsername implements fosite.Session.
func (s *Session) GetUsername() string { return s.Subject }

// GetSubject implements fosite.Session.
func (s *Session) GetSubject() string { return s.Subject }

// Clone implements fosite.Session.
func (s *Session) Clone() fosite.Session {
	c := *s
	c.ExpiresAt = map[fosite.TokenType]time.Time{}
	for k, v := range s.ExpiresAt {
		c.ExpiresAt[k] = v
	}
	return &c
}

// issuance is a token decided and ready to mint.
type issuance struct {
	claims        Claims
	tokenType     string // issued_token_type
	requestScopes []string
	parentJTI     string
}

// Audit is what the decision log keeps about one token request (never a token).
type Audit struct {
	ClientID      string
	Subject       string
	SubjectIssuer string
	Actors        []string
	GrantID       string
	GrantType     string
	Requested     []string
	Audiences     []string
	Allowed       bool
	Reasons       []string
	Issued        []string
	BundleVersion string
	EvalDuration  time.Duration
	Input         any // the policy input, for replay; nil when no policy ran
	// Error is the OAuth error code the request ended with ("" when a token was issued).
	Error string
	// Duration is the whole token request, for metrics.
	Duration time.Duration
}
