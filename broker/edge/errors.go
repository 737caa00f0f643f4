package edge

import (
	"errors"
	"net/http"
	"strings"
)

// Sentinel errors. Every error returned by Validate wraps exactly one of them, so callers
// branch with errors.Is and map to the wire with HTTPStatus and WWWAuthenticate.
var (
	// ErrNoToken means the request carried no bearer token at all. RFC 6750 §3.1 asks that
	// such a challenge carry no error code.
	ErrNoToken = errors.New("no bearer token")
	// ErrMalformed means the token is not a well-formed RFC 9068 access token: bad JWS
	// compact form, bad base64url or JSON, a wrong "typ", a "crit" header, or a missing or
	// mistyped required claim.
	ErrMalformed = errors.New("malformed token")
	// ErrSignature means the signature does not verify, or the algorithm is not allowed.
	ErrSignature = errors.New("invalid token signature")
	// ErrUnknownKey means no key of the issuer's JWKS has the token's "kid", even after a
	// (rate-limited) refresh.
	ErrUnknownKey = errors.New("unknown signing key")
	// ErrExpired means "exp" has passed, leeway included.
	ErrExpired = errors.New("token expired")
	// ErrNotYetValid means "nbf" or "iat" lies in the future, leeway included.
	ErrNotYetValid = errors.New("token not yet valid")
	// ErrIssuer means "iss" is not the configured issuer.
	ErrIssuer = errors.New("untrusted token issuer")
	// ErrAudience means "aud" lacks a required audience.
	ErrAudience = errors.New("token audience not accepted")
	// ErrInsufficientScope means the token is valid but lacks a required scope (HTTP 403).
	ErrInsufficientScope = errors.New("insufficient scope")
	// ErrRevoked means the token, its grant or one of its ancestors was revoked.
	ErrRevoked = errors.New("token revoked")
	// ErrRevocationStale means the revocation feed has not synchronised within the configured
	// staleness, so revocation cannot be ruled out: the validator fails closed (HTTP 503).
	ErrRevocationStale = errors.New("revocation data stale")
	// ErrUnavailable means what the token needs to be checked against (an issuer's keys)
	// cannot be reached right now: the validator fails closed (HTTP 503).
	ErrUnavailable = errors.New("verification unavailable")
)

// Error is the error type returned by Validate. Kind is one of the package's sentinels; Detail
// says which check failed and never contains the token. Err, when set, is the underlying cause.
type Error struct {
	Kind   error
	Detail string
	Err    error
}

// Error formats the kind, the detail and the cause.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("edge: ")
	b.WriteString(e.Kind.Error())
	if e.Detail != "" {
		b.WriteString(": ")
		b.WriteString(e.Detail)
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap lets errors.Is match both the sentinel and the cause.
func (e *Error) Unwrap() []error {
	if e.Err != nil {
		return []error{e.Kind, e.Err}
	}
	return []error{e.Kind}
}

func newError(kind error, detail string) error { return &Error{Kind: kind, Detail: detail} }

func wrapError(kind error, detail string, cause error) error {
	return &Error{Kind: kind, Detail: detail, Err: cause}
}

// HTTPStatus maps a Validate error to the status a resource server or forward-auth endpoint
// answers with: 200 for nil, 403 for ErrInsufficientScope (RFC 6750 §3.1), 503 for
// ErrRevocationStale, and 401 for everything else, unknown errors included, so that an
// unexpected failure denies rather than grants.
func HTTPStatus(err error) int {
	switch {
	case err == nil:
		return http.StatusOK
	case errors.Is(err, ErrInsufficientScope):
		return http.StatusForbidden
	case errors.Is(err, ErrRevocationStale), errors.Is(err, ErrUnavailable):
		return http.StatusServiceUnavailable
	default:
		return http.StatusUnauthorized
	}
}

// WWWAuthenticate builds the RFC 6750 §3 challenge for err, e.g.
//
//	Bearer realm="api", error="invalid_token", error_description="The access token expired"
//
// realm is omitted when empty; scopes, the scopes the resource requires, are listed in the
// "scope" attribute when given. The description is a fixed text per error kind: no claim value
// or token byte ever reaches the header.
func WWWAuthenticate(err error, realm string, scopes []string) string {
	var params []string
	if realm != "" {
		params = append(params, `realm="`+quotedSafe(realm)+`"`)
	}
	// RFC 6750 §3.1: "If the request lacks any authentication information (e.g., the client
	// was unaware that authentication is necessary ...), the resource server SHOULD NOT
	// include an error code or other error information."
	if err != nil && !errors.Is(err, ErrNoToken) {
		code := "invalid_token"
		if errors.Is(err, ErrInsufficientScope) {
			code = "insufficient_scope"
		}
		params = append(params, `error="`+code+`"`, `error_description="`+describe(err)+`"`)
	}
	if len(scopes) > 0 {
		var clean []string
		for _, s := range scopes {
			if s = scopeSafe(s); s != "" {
				clean = append(clean, s)
			}
		}
		if len(clean) > 0 {
			params = append(params, `scope="`+strings.Join(clean, " ")+`"`)
		}
	}
	if len(params) == 0 {
		return "Bearer"
	}
	return "Bearer " + strings.Join(params, ", ")
}

// describe returns the human description for the error's kind.
func describe(err error) string {
	switch {
	case errors.Is(err, ErrMalformed):
		return "The access token is malformed"
	case errors.Is(err, ErrSignature):
		return "The access token signature is invalid"
	case errors.Is(err, ErrUnknownKey):
		return "The access token was signed with an unknown key"
	case errors.Is(err, ErrExpired):
		return "The access token expired"
	case errors.Is(err, ErrNotYetValid):
		return "The access token is not valid yet"
	case errors.Is(err, ErrIssuer):
		return "The access token was issued by an untrusted issuer"
	case errors.Is(err, ErrAudience):
		return "The access token is not intended for this resource"
	case errors.Is(err, ErrInsufficientScope):
		return "The request requires higher privileges than provided by the access token"
	case errors.Is(err, ErrRevoked):
		return "The access token has been revoked"
	case errors.Is(err, ErrRevocationStale):
		return "The revocation status of the access token cannot be checked"
	default:
		return "The access token is invalid"
	}
}

// quotedSafe keeps the characters RFC 6750 §3 allows inside error_description and realm
// quoted strings: %x20-21 / %x23-5B / %x5D-7E.
func quotedSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 0x20 && r <= 0x7e && r != '"' && r != '\\' {
			return r
		}
		return -1
	}, s)
}

// scopeSafe keeps the characters RFC 6749 §3.3 allows in a scope token: %x21 / %x23-5B / %x5D-7E.
func scopeSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 0x21 && r <= 0x7e && r != '"' && r != '\\' {
			return r
		}
		return -1
	}, s)
}
