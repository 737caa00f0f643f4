package grants

import (
	"crypto/rand"
	"encoding/base32"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// clientIDPattern is the shape of every client id mandate registers.
var clientIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// ValidClientID reports whether id has the shape of a client id.
func ValidClientID(id string) bool { return clientIDPattern.MatchString(id) }

const idPrefix = "grt_"

var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// newID returns "grt_" and 160 random bits in lowercase base32.
func newID() string {
	var b [20]byte
	rand.Read(b[:]) // never returns an error; crashes the program if the OS has no randomness
	return idPrefix + idEncoding.EncodeToString(b[:])
}

// ValidID reports whether id has the shape of a grant id. Lookups of anything
// else answer ErrNotFound without reaching the database.
func ValidID(id string) bool {
	if len(id) != len(idPrefix)+32 || !strings.HasPrefix(id, idPrefix) {
		return false
	}
	for i := len(idPrefix); i < len(id); i++ {
		if c := id[i]; !(c >= 'a' && c <= 'z' || c >= '2' && c <= '7') {
			return false
		}
	}
	return true
}

// checkText refuses what cannot be stored faithfully or shown safely: invalid
// UTF-8 (PostgreSQL rejects it), NUL and other control characters.
func checkText(field, s string, maxLen int) *ValidationError {
	switch {
	case s == "":
		return invalid(field, "is required")
	case len(s) > maxLen:
		return invalid(field, "is longer than %d bytes", maxLen)
	case !utf8.ValidString(s):
		return invalid(field, "is not valid UTF-8")
	case strings.IndexFunc(s, unicode.IsControl) >= 0:
		return invalid(field, "contains a control character")
	}
	return nil
}

func checkIssuer(field, iss string) *ValidationError {
	if err := checkText(field, iss, MaxNameLength); err != nil {
		return err
	}
	// "|" separates issuer from subject in UserActor; an issuer holding one
	// would let two users share an actor string.
	if strings.Contains(iss, "|") {
		return invalid(field, `must not contain "|"`)
	}
	return nil
}

// validScopeToken implements RFC 6749 §3.3:
//
//	scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
func validScopeToken(s string) bool {
	if s == "" || len(s) > MaxScopeLength {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == 0x21 || c >= 0x23 && c <= 0x5B || c >= 0x5D && c <= 0x7E {
			continue
		}
		return false
	}
	return true
}

// normScopes validates scopes and drops duplicates, keeping the first occurrence.
func normScopes(in []string) ([]string, *ValidationError) {
	if len(in) == 0 {
		return nil, invalid("scopes", "at least one scope is required")
	}
	if len(in) > MaxScopes {
		return nil, invalid("scopes", "more than %d scopes", MaxScopes)
	}
	out := make([]string, 0, len(in))
	for _, s := range in {
		if !validScopeToken(s) {
			return nil, invalid("scopes", "%q is not an RFC 6749 scope token (1 to %d printable ASCII characters, no space, '\"' or '\\')", s, MaxScopeLength)
		}
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out, nil
}

// checkResource validates one grant resource: an absolute URI (RFC 8707
// §2: "MUST be an absolute URI ... MUST NOT include a fragment component") or
// a plain audience identifier, optionally ending in "*" to make a prefix
// pattern. admin allows the catch-all "*".
func checkResource(r string, admin bool) *ValidationError {
	if r == "" {
		return invalid("resources", "an empty resource is not allowed")
	}
	if len(r) > MaxResourceLength {
		return invalid("resources", "%.64q... is longer than %d bytes", r, MaxResourceLength)
	}
	if r == AnyResource {
		if admin {
			return nil
		}
		return invalid("resources", `"*" (every resource) may be granted only through the admin API`)
	}
	for i := 0; i < len(r); i++ {
		c := r[i]
		if c <= 0x20 || c >= 0x7f || strings.IndexByte("\"<>\\^`{|}", c) >= 0 {
			return invalid("resources", "%q contains a space, a non-ASCII character or one of \"<>\\^`{|}", r)
		}
	}
	body, isPattern := strings.CutSuffix(r, "*")
	if strings.Contains(body, "*") {
		return invalid("resources", "%q: \"*\" may only end a resource, as a prefix pattern", r)
	}
	if hasDotSegment(body) {
		return invalid("resources", "%q contains a . or .. path segment", r)
	}
	if strings.Contains(body, "#") {
		return invalid("resources", "%q has a fragment", r)
	}
	if !strings.Contains(body, ":") {
		return nil // a plain audience identifier such as "mail-api"
	}
	u, err := url.Parse(body)
	if err != nil || u.Scheme == "" {
		return invalid("resources", "%q is neither an absolute URI nor an identifier without ':'", r)
	}
	if u.User != nil {
		return invalid("resources", "%q must not carry user information", r)
	}
	auth, hierarchical := strings.CutPrefix(body, u.Scheme+"://")
	if hierarchical && u.Host == "" {
		return invalid("resources", "%q has no host", r)
	}
	if !isPattern {
		return nil
	}
	// A pattern that stops inside the authority, like "https://api.example.com*",
	// would also cover https://api.example.com.evil.example/; one that stops
	// before it, like "https:/*" or "urn:*", would cover a whole scheme.
	if hierarchical && strings.IndexByte(auth, '/') < 0 || !hierarchical && u.Opaque == "" {
		return invalid("resources", "%q: a URI pattern must end inside a path, like https://api.example.com/mail/*", r)
	}
	return nil
}

func hasDotSegment(s string) bool {
	for _, seg := range strings.FieldsFunc(s, func(r rune) bool { return r == '/' || r == '?' }) {
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}

// normResources validates resources and drops duplicates. Entries in keep
// (the grant's current resources, when narrowing) are accepted as they are.
func normResources(in []string, admin bool, keep []string) ([]string, *ValidationError) {
	if len(in) > MaxResources {
		return nil, invalid("resources", "more than %d resources", MaxResources)
	}
	out := make([]string, 0, len(in))
	for _, r := range in {
		if !slices.Contains(keep, r) {
			if err := checkResource(r, admin); err != nil {
				return nil, err
			}
		}
		if !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	return out, nil
}

func normSubAgents(in []string) ([]string, *ValidationError) {
	if len(in) > MaxSubAgents {
		return nil, invalid("allowed_sub_agents", "more than %d sub-agents", MaxSubAgents)
	}
	out := make([]string, 0, len(in))
	for _, id := range in {
		if id != AnySubAgent && !ValidClientID(id) {
			return nil, invalid("allowed_sub_agents", "%q is not a client id (or \"*\")", id)
		}
		if !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	return out, nil
}

func checkDepth(d int) *ValidationError {
	if d < 0 || d > MaxDepthLimit {
		return invalid("max_depth", "must be between 0 (server default) and %d", MaxDepthLimit)
	}
	return nil
}

func checkLifetime(l time.Duration) *ValidationError {
	if l < 0 || l > MaxLifetimeLimit {
		return invalid("max_lifetime_seconds", "must be between 0 (server default) and %d seconds", int64(MaxLifetimeLimit/time.Second))
	}
	// Stored in seconds; rounding 1.5s down would be harmless, but 0.5s would
	// become 0, the server default, which is wider.
	if l%time.Second != 0 {
		return invalid("max_lifetime_seconds", "must be a whole number of seconds")
	}
	return nil
}

// checkExpiry truncates e to the second (earlier, so never wider) and checks it
// is in the future and at most MaxGrantDuration ahead.
func checkExpiry(e, now time.Time) (time.Time, *ValidationError) {
	if e.IsZero() {
		return time.Time{}, invalid("expires_at", "is required")
	}
	e = time.Unix(e.Unix(), 0).UTC()
	if e.Unix() <= now.Unix() {
		return time.Time{}, invalid("expires_at", "must be in the future")
	}
	if e.After(now.Add(MaxGrantDuration)) {
		return time.Time{}, invalid("expires_at", "must be at most a year ahead")
	}
	return e, nil
}

// validateNew checks a grant to be created, returning its normalized copy.
func validateNew(in *Grant, now time.Time, admin bool) (*Grant, error) {
	g := in.Clone()
	if err := checkIssuer("user_issuer", g.UserIssuer); err != nil {
		return nil, err
	}
	if err := checkText("user_subject", g.UserSubject, MaxNameLength); err != nil {
		return nil, err
	}
	if !ValidClientID(g.ClientID) {
		return nil, invalid("client_id", "must match %s", clientIDPattern)
	}
	var verr *ValidationError
	if g.Scopes, verr = normScopes(g.Scopes); verr != nil {
		return nil, verr
	}
	if g.Resources, verr = normResources(g.Resources, admin, nil); verr != nil {
		return nil, verr
	}
	if g.AllowedSubAgents, verr = normSubAgents(g.AllowedSubAgents); verr != nil {
		return nil, verr
	}
	if verr = checkDepth(g.MaxDepth); verr != nil {
		return nil, verr
	}
	if verr = checkLifetime(g.MaxLifetime); verr != nil {
		return nil, verr
	}
	if g.ExpiresAt, verr = checkExpiry(g.ExpiresAt, now); verr != nil {
		return nil, verr
	}
	return g, nil
}

// parseActor checks the actor string: AdminActor, or UserActor of a valid user.
func parseActor(actor string) (admin bool, iss, sub string, err error) {
	if actor == AdminActor {
		return true, "", "", nil
	}
	rest, ok := strings.CutPrefix(actor, "user:")
	if !ok {
		return false, "", "", invalid("actor", `must be "admin" or "user:<issuer>|<subject>"`)
	}
	iss, sub, ok = strings.Cut(rest, "|")
	if !ok {
		return false, "", "", invalid("actor", `must be "admin" or "user:<issuer>|<subject>"`)
	}
	if verr := checkIssuer("user_issuer", iss); verr != nil {
		return false, "", "", verr
	}
	if verr := checkText("user_subject", sub, MaxNameLength); verr != nil {
		return false, "", "", verr
	}
	return false, iss, sub, nil
}

func checkReason(reason string) *ValidationError {
	if reason == "" {
		return nil
	}
	return checkText("reason", reason, MaxReasonLength)
}
