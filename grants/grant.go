package grants

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Grant statuses. Only the database knows "revoked"; "expired" is derived
// from ExpiresAt and the store's clock whenever a grant is read.
const (
	StatusActive  = "active"
	StatusRevoked = "revoked"
	StatusExpired = "expired"
)

// Event actions recorded in a grant's history.
const (
	ActionCreated  = "created"
	ActionNarrowed = "narrowed"
	ActionRevoked  = "revoked"
)

// AdminActor is the actor recorded for changes made through the admin API.
const AdminActor = "admin"

// UserActor is the actor recorded for changes a user makes to their own
// grants: "user:<issuer>|<subject>". Issuers may not contain "|" (validation
// refuses them), so the string names exactly one user.
func UserActor(issuer, subject string) string { return "user:" + issuer + "|" + subject }

// Limits enforced by validation.
const (
	MaxNameLength     = 255                  // user issuer and subject, in bytes
	MaxScopes         = 100                  // scopes per grant
	MaxScopeLength    = 256                  // bytes per scope token
	MaxResources      = 100                  // resources per grant
	MaxResourceLength = 2048                 // bytes per resource
	MaxSubAgents      = 100                  // allowed sub-agents per grant
	MaxDepthLimit     = 10                   // the largest MaxDepth a grant may set
	MaxLifetimeLimit  = 24 * time.Hour       // the largest MaxLifetime a grant may set
	MaxGrantDuration  = 365 * 24 * time.Hour // ExpiresAt at most this far ahead
	MaxReasonLength   = 1024                 // bytes of a revocation reason
	DefaultListLimit  = 100                  // List without a limit
	MaxListLimit      = 1000                 // the largest List limit
	MaxEvents         = 1000                 // Events returns at most the latest MaxEvents
)

// AnySubAgent in AllowedSubAgents lets the agent re-delegate to any client.
const AnySubAgent = "*"

// AnyResource as a grant resource covers every resource. Only the admin API
// may grant it.
const AnyResource = "*"

// Grant is one user's delegation to one client (an app or agent): what the
// client may do for the user, where, for how long, and whether it may pass the
// authority on.
type Grant struct {
	// ID is "grt_" followed by 32 base32 characters (160 random bits), set by Create.
	ID string
	// UserIssuer and UserSubject name the user who grants (the iss and sub of
	// their upstream token).
	UserIssuer  string
	UserSubject string
	// ClientID is the app or agent that receives the authority.
	ClientID string
	// Scopes the client may request for the user (RFC 6749 scope tokens), at least one.
	Scopes []string
	// Resources are the audiences or resource URIs (RFC 8707) the client may
	// reach. An entry ending in "*" is a prefix pattern; see MatchResource. An
	// empty list covers no resource at all.
	Resources []string
	// MaxDepth bounds the delegation chain under this grant (1 = the client
	// only, no re-delegation). 0 means the server's default.
	MaxDepth int
	// MaxLifetime caps the lifetime of each token issued under the grant,
	// in whole seconds. 0 means the server's default.
	MaxLifetime time.Duration
	// AllowedSubAgents are the client ids that may receive a re-delegation;
	// "*" means any client; empty means none.
	AllowedSubAgents []string
	// ExpiresAt ends the grant; no token issued under it may outlive it.
	ExpiresAt time.Time
	// Status is StatusActive, StatusRevoked or StatusExpired, as of the read.
	Status string
	// CreatedAt, UpdatedAt and RevokedAt (zero unless revoked) are set by the store.
	CreatedAt time.Time
	UpdatedAt time.Time
	RevokedAt time.Time

	version int64 // optimistic concurrency; also the seq of the latest event
}

// Clone returns a deep copy of g.
func (g *Grant) Clone() *Grant {
	if g == nil {
		return nil
	}
	c := *g
	c.Scopes = slices.Clone(g.Scopes)
	c.Resources = slices.Clone(g.Resources)
	c.AllowedSubAgents = slices.Clone(g.AllowedSubAgents)
	return &c
}

// Covers reports whether an active grant covers a request for the given
// scopes and resources: every scope is one of the grant's scopes, and every
// resource is matched by one of the grant's resources (see MatchResource).
// When it does not, reason says why, naming the first scope or resource that
// is not covered, in words fit for an error_description.
//
// Covers looks only at Status, scopes and resources. It does not read a clock:
// FindActive and ActiveByID return only unexpired grants, and the broker caps
// every token's expiry at ExpiresAt and its lifetime at MaxLifetime.
func (g *Grant) Covers(scopes, resources []string) (ok bool, reason string) {
	if g == nil {
		return false, "no grant"
	}
	if g.Status != StatusActive {
		return false, fmt.Sprintf("grant %s is %s", g.ID, g.Status)
	}
	for _, s := range scopes {
		if !slices.Contains(g.Scopes, s) {
			return false, fmt.Sprintf("scope %q is not granted", s)
		}
	}
	for _, r := range resources {
		if !g.coversResource(r) {
			return false, fmt.Sprintf("resource %q is not granted", r)
		}
	}
	return true, ""
}

func (g *Grant) coversResource(r string) bool {
	for _, p := range g.Resources {
		if MatchResource(p, r) {
			return true
		}
	}
	return false
}

// AllowsSubAgent reports whether the grant lets its client re-delegate to clientID.
func (g *Grant) AllowsSubAgent(clientID string) bool {
	if g == nil || clientID == "" {
		return false
	}
	return slices.Contains(g.AllowedSubAgents, AnySubAgent) || slices.Contains(g.AllowedSubAgents, clientID)
}

// MatchResource reports whether the grant resource pattern covers the
// requested resource: an exact match, or, when pattern ends in "*", a resource
// that starts with the rest of pattern. The pattern "*" alone matches every
// resource.
//
// A prefix match is refused when the part of resource past the prefix could
// climb out of it once a server normalizes the path: ".." anywhere, an
// encoded dot, slash or backslash (%2e, %2f, %5c), a backslash, a "*", or any
// byte outside printable ASCII. A pattern whose prefix has no ':' (an
// identifier pattern such as "mail-*") never covers a URI. So
// "https://api.example.com/mail/*" covers
// "https://api.example.com/mail/inbox" but not
// "https://api.example.com/mail/../admin".
func MatchResource(pattern, resource string) bool {
	if pattern == "" || resource == "" {
		return false
	}
	if pattern == AnyResource {
		return true
	}
	prefix, isPattern := strings.CutSuffix(pattern, "*")
	if !isPattern {
		return pattern == resource
	}
	return prefixMatch(prefix, resource)
}

// prefixMatch reports whether s extends prefix without escaping it. An
// identifier prefix (no ':') matches only identifiers, so that "h*" does not
// cover "https://...".
func prefixMatch(prefix, s string) bool {
	rest, ok := strings.CutPrefix(s, prefix)
	if !ok || escapesPrefix(rest) {
		return false
	}
	return strings.Contains(prefix, ":") || !strings.Contains(rest, ":")
}

// escapesPrefix reports whether rest, the part of a resource past a pattern's
// prefix, might resolve outside that prefix (or is not a plain suffix at all).
func escapesPrefix(rest string) bool {
	for i := 0; i < len(rest); i++ {
		if c := rest[i]; c <= 0x20 || c >= 0x7f || c == '\\' || c == '*' {
			return true
		}
	}
	if strings.Contains(rest, "..") {
		return true
	}
	l := strings.ToLower(rest)
	return strings.Contains(l, "%2e") || strings.Contains(l, "%2f") || strings.Contains(l, "%5c")
}

// resourceCovers reports whether the old grant resource covers the new one,
// for narrowing: the new entry may be a pattern itself, and then it must be a
// pattern inside the old one.
func resourceCovers(old, next string) bool {
	if old == next || old == AnyResource {
		return true
	}
	nextPrefix, nextIsPattern := strings.CutSuffix(next, "*")
	if !nextIsPattern {
		return MatchResource(old, next)
	}
	oldPrefix, oldIsPattern := strings.CutSuffix(old, "*")
	if !oldIsPattern {
		return false
	}
	return prefixMatch(oldPrefix, nextPrefix)
}
