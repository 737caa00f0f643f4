package broker

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/ory/fosite"
)

// oauthError builds an RFC 6749 §5.2 / RFC 8693 §2.2.2 error whose description a
// developer can act on. A new value each time: fosite's sentinels must not be
// mutated (their Wrap and WithTrace change the shared value).
func oauthError(code string, status int, format string, args ...any) *fosite.RFC6749Error {
	return &fosite.RFC6749Error{
		ErrorField:       code,
		DescriptionField: fmt.Sprintf(format, args...),
		CodeField:        status,
	}
}

func errInvalidRequest(format string, args ...any) error {
	return oauthError("invalid_request", http.StatusBadRequest, format, args...)
}

func errInvalidGrant(format string, args ...any) error {
	return oauthError("invalid_grant", http.StatusBadRequest, format, args...)
}

func errInvalidScope(format string, args ...any) error {
	return oauthError("invalid_scope", http.StatusBadRequest, format, args...)
}

// errInvalidTarget is RFC 8693 §2.2.2's invalid_target, which fosite lacks.
func errInvalidTarget(format string, args ...any) error {
	return oauthError("invalid_target", http.StatusBadRequest, format, args...)
}

func errUnauthorizedClient(format string, args ...any) error {
	return oauthError("unauthorized_client", http.StatusBadRequest, format, args...)
}

func errUnsupportedGrantType(format string, args ...any) error {
	return oauthError("unsupported_grant_type", http.StatusBadRequest, format, args...)
}

// errUnavailable is for a dependency that is down (database, upstream JWKS): the
// client may retry, and nothing was issued.
func errUnavailable(format string, args ...any) error {
	return oauthError("temporarily_unavailable", http.StatusServiceUnavailable, format, args...)
}

// subjectTokenError maps a subject or actor token failure to invalid_request
// (RFC 8693 §2.2.2), or to temporarily_unavailable when the issuer's keys could
// not be fetched.
func tokenParamError(param string, err error) error {
	if errors.Is(err, ErrUpstreamUnavailable) {
		return errUnavailable("%s cannot be verified right now: its issuer's keys are unreachable", param)
	}
	var te *errToken
	if errors.As(err, &te) {
		return errInvalidRequest("%s is invalid: %s", param, te.msg)
	}
	return errInvalidRequest("%s is invalid", param)
}
