package policies

import (
	"encoding/json"
	"time"
)

// InputVersion is the version of the input document described by [Input]. It
// is sent as input.version so that a policy can refuse an input shape it was
// not written for.
const InputVersion = "mandate.policy/v1"

// Subject kinds, the values of [SubjectInput].Kind.
const (
	// SubjectUpstream is a user token from a trusted upstream identity provider.
	SubjectUpstream = "upstream"
	// SubjectMandate is a token mandate issued earlier (a re-exchange or a re-delegation).
	SubjectMandate = "mandate"
	// SubjectClient is a client acting for itself (client_credentials): there is no user.
	SubjectClient = "client"
)

// Client types, the values of [ClientInput].Type.
const (
	ClientTypeApp   = "app"
	ClientTypeAgent = "agent"
)

// Input is the document the broker gives the policy for one exchange, as
// input in Rego. Its JSON form is the contract documented in docs/policy.md;
// every array is present (empty, never null) and grant is null when the broker
// found no grant.
type Input struct {
	// Version is always InputVersion; Decide refuses any other value.
	Version string `json:"version"`
	// Client is the authenticated client asking for the token.
	Client ClientInput `json:"client"`
	// Subject is whose authority is exchanged: the subject_token.
	Subject SubjectInput `json:"subject"`
	// Actor is the actor_token, when one was presented.
	Actor *ActorInput `json:"actor,omitempty"`
	// Chain is the act chain the new token would carry, outermost (the
	// current actor) first. It is empty for impersonation.
	Chain []ChainLink `json:"actor_chain"`
	// Grant is the user's delegation grant that covers this request, or nil
	// when none was found.
	Grant *GrantInput `json:"grant"`
	// Request is what the client asked for.
	Request RequestInput `json:"request"`
	// Meta is request metadata, including the decision time.
	Meta MetaInput `json:"meta"`
}

// ClientInput describes the authenticated client.
type ClientInput struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	// Type is ClientTypeApp or ClientTypeAgent.
	Type string `json:"type"`
	// FirstParty is set for clients the operator registered as its own.
	FirstParty bool `json:"first_party"`
	// MayImpersonate is set for clients registered to receive tokens without an act chain.
	MayImpersonate bool `json:"may_impersonate"`
	// Scopes and Audiences are what the client is registered for.
	Scopes    []string `json:"scopes"`
	Audiences []string `json:"audiences"`
}

// SubjectInput describes the verified subject_token.
type SubjectInput struct {
	Issuer  string `json:"issuer"`
	Subject string `json:"subject"`
	// Kind is SubjectUpstream, SubjectMandate or SubjectClient.
	Kind string `json:"kind"`
	// ClientID is the holder (client_id claim) of a mandate-issued subject token.
	ClientID string   `json:"client_id"`
	Scopes   []string `json:"scopes"`
	// Depth is the delegation depth of the subject token, 0 for upstream tokens.
	Depth int `json:"depth"`
	// GrantID is the grant a mandate-issued subject token was issued under.
	GrantID string `json:"grant_id"`
	// Claims are the verified claims of the token.
	Claims map[string]any `json:"claims"`
}

// ActorInput describes the verified actor_token.
type ActorInput struct {
	Issuer   string         `json:"issuer"`
	Subject  string         `json:"subject"`
	ClientID string         `json:"client_id"`
	Claims   map[string]any `json:"claims"`
}

// ChainLink is one hop of an act chain (RFC 8693 §4.1).
type ChainLink struct {
	Sub string `json:"sub"`
	Iss string `json:"iss,omitempty"`
}

// GrantInput describes the delegation grant covering the request.
type GrantInput struct {
	ID        string   `json:"id"`
	Scopes    []string `json:"scopes"`
	Resources []string `json:"resources"`
	// MaxDepth is the deepest delegation the grant allows; 0 means the server maximum.
	MaxDepth int `json:"max_depth"`
	// MaxLifetimeSeconds caps the lifetime of tokens issued under the grant; 0 means no cap of its own.
	MaxLifetimeSeconds int64 `json:"max_lifetime_seconds"`
	// AllowedSubAgents are the client IDs the grant's agent may re-delegate to; "*" means any.
	AllowedSubAgents []string `json:"allowed_sub_agents"`
	// ExpiresAt is the grant's expiry in Unix seconds; 0 means it does not expire.
	ExpiresAt int64 `json:"expires_at"`
}

// RequestInput is what the client asked for.
type RequestInput struct {
	GrantType string   `json:"grant_type"`
	Scopes    []string `json:"scopes"`
	Audiences []string `json:"audiences"`
	// Resources are RFC 8707 resource indicators.
	Resources          []string `json:"resources"`
	RequestedTokenType string   `json:"requested_token_type"`
	// Delegation is true when the new token carries an act chain.
	Delegation bool `json:"delegation"`
	// Depth is the delegation depth of the token to be issued.
	Depth int `json:"depth"`
}

// MetaInput is request metadata.
type MetaInput struct {
	// Time is the decision time in RFC 3339. It is also the clock the policy's
	// time.now_ns() reads, so that a recorded decision replays identically.
	Time string `json:"time"`
	// Unix is the decision time in Unix seconds.
	Unix      int64  `json:"unix"`
	ClientIP  string `json:"client_ip"`
	RequestID string `json:"request_id"`
}

// Decision is the outcome of one policy evaluation. A policy can only narrow
// what the broker would issue: the broker intersects Scopes with what it
// computed and takes the smaller lifetime.
type Decision struct {
	// Allow is true when the policy allows the exchange.
	Allow bool `json:"allow"`
	// Reasons explain the decision in words a person can act on; a deny
	// usually carries at least one.
	Reasons []string `json:"reasons"`
	// Scopes narrows the issued scopes. Nil means no narrowing was asked for;
	// an empty, non-nil slice narrows to no scope at all.
	Scopes []string `json:"scopes,omitempty"`
	// MaxLifetime caps the token's lifetime; 0 means no cap.
	MaxLifetime time.Duration `json:"max_lifetime_ns,omitempty"`
	// Claims are extra context claims for the token. They never include the
	// reserved claims listed in ReservedClaims.
	Claims map[string]any `json:"claims,omitempty"`
	// BundleVersion is the version of the bundle that decided.
	BundleVersion string `json:"bundle_version"`
	// EvalDuration is how long the evaluation took.
	EvalDuration time.Duration `json:"eval_duration_ns"`
}

// MarshalJSON encodes in exactly as the policy sees it: nil slices become []
// and nil claims {}, so a logged input replays to the same decision.
func (in Input) MarshalJSON() ([]byte, error) {
	type plain Input // plain has no MarshalJSON method: no recursion.
	n := plain(in)
	n.Client.Scopes = nonNil(n.Client.Scopes)
	n.Client.Audiences = nonNil(n.Client.Audiences)
	n.Subject.Scopes = nonNil(n.Subject.Scopes)
	n.Subject.Claims = nonNilMap(n.Subject.Claims)
	if n.Actor != nil {
		a := *n.Actor
		a.Claims = nonNilMap(a.Claims)
		n.Actor = &a
	}
	if n.Chain == nil {
		n.Chain = []ChainLink{}
	}
	if n.Grant != nil {
		g := *n.Grant
		g.Scopes = nonNil(g.Scopes)
		g.Resources = nonNil(g.Resources)
		g.AllowedSubAgents = nonNil(g.AllowedSubAgents)
		n.Grant = &g
	}
	n.Request.Scopes = nonNil(n.Request.Scopes)
	n.Request.Audiences = nonNil(n.Request.Audiences)
	n.Request.Resources = nonNil(n.Request.Resources)
	return json.Marshal(n)
}

func nonNil(ss []string) []string {
	if ss == nil {
		return []string{}
	}
	return ss
}

func nonNilMap(m map[string]any) map[string]any {
	if m == nil {
		return map[string]any{}
	}
	return m
}
