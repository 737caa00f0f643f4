package grants

import (
	"errors"
	"fmt"
)

// Errors a caller tests with errors.Is. Every method wraps them with the
// operation and the grant id, so the message says what failed.
var (
	// ErrNotFound means there is no such grant, or (from FindActive and
	// ActiveByID) no usable one. A user's request for another user's grant
	// also gets ErrNotFound, so that grant ids leak nothing.
	ErrNotFound = errors.New("grants: not found")

	// ErrExists means the user already has an active grant to that client.
	// The error is an *ExistsError naming the existing grant: narrow or
	// revoke that one instead of creating a second.
	ErrExists = errors.New("grants: an active grant to this client already exists")

	// ErrNotActive means the grant exists but is revoked or expired, so it
	// cannot be narrowed or used. From ActiveByID the error matches both
	// ErrNotActive and ErrNotFound.
	ErrNotActive = errors.New("grants: grant is not active")

	// ErrNotPublished means Revoke recorded the revocation in the database
	// but the Revoker failed to make it durable everywhere. The revocation is
	// not acknowledged: call Revoke again (it is idempotent) until it returns nil.
	ErrNotPublished = errors.New("grants: revocation recorded but not yet published")
)

// ValidationError reports one field of a grant, narrowing or filter that is
// not acceptable. Field uses the JSON (wire) name, e.g. "scopes" or
// "expires_at", so that the HTTP layer can show it as is; it is empty when the
// problem is the request as a whole.
type ValidationError struct {
	Field   string
	Message string
}

func (e *ValidationError) Error() string {
	if e.Field == "" {
		return "invalid request: " + e.Message
	}
	return "invalid " + e.Field + ": " + e.Message
}

func invalid(field, format string, args ...any) *ValidationError {
	return &ValidationError{Field: field, Message: fmt.Sprintf(format, args...)}
}

// ExistsError is returned (wrapped) by Create when the user already has an
// active grant to the client. It matches ErrExists.
type ExistsError struct {
	// GrantID is the active grant, or empty if it could not be looked up
	// (it was revoked between the conflict and the lookup).
	GrantID string
}

func (e *ExistsError) Error() string {
	if e.GrantID == "" {
		return ErrExists.Error() + "; narrow or revoke it"
	}
	return ErrExists.Error() + " (" + e.GrantID + "); narrow or revoke it"
}

// Is makes errors.Is(err, ErrExists) true.
func (e *ExistsError) Is(target error) bool { return target == ErrExists }
