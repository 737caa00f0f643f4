package edge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"
)

// Headers of the forward-auth protocol.
const (
	// Request headers a proxy may set to name a route's requirements, besides the query
	// parameters "aud" and "scope".
	HeaderAudience = "X-Mandate-Audience"
	HeaderScope    = "X-Mandate-Scope"

	// Response headers of a 200, for the proxy to copy onto the upstream request.
	HeaderSubject       = "X-Mandate-Subject"
	HeaderSubjectIssuer = "X-Mandate-Subject-Issuer"
	HeaderClientID      = "X-Mandate-Client-Id"
	HeaderActor         = "X-Mandate-Actor"
	HeaderGrantID       = "X-Mandate-Grant-Id"
	HeaderTokenID       = "X-Mandate-Token-Id"
	// HeaderScope doubles as the response header carrying the token's scopes.
)

type ctxKey struct{}

// NewContext returns a copy of ctx that carries id.
func NewContext(ctx context.Context, id *Identity) context.Context {
	return context.WithValue(ctx, ctxKey{}, id)
}

// FromContext returns the Identity the middleware stored in ctx.
func FromContext(ctx context.Context) (*Identity, bool) {
	id, ok := ctx.Value(ctxKey{}).(*Identity)
	return id, ok && id != nil
}

// BearerToken extracts the token of an RFC 6750 §2.1 "Authorization: Bearer" header. It
// returns ErrNoToken when the request has no bearer credentials and ErrMalformed when the header
// is ambiguous. Tokens in query strings or form bodies (RFC 6750 §2.2, §2.3) are not accepted:
// they end up in logs.
func BearerToken(r *http.Request) (string, error) {
	vals := r.Header.Values("Authorization")
	if len(vals) == 0 {
		return "", newError(ErrNoToken, "no Authorization header")
	}
	if len(vals) > 1 {
		return "", newError(ErrMalformed, "more than one Authorization header")
	}
	scheme, rest, _ := strings.Cut(strings.TrimSpace(vals[0]), " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return "", newError(ErrNoToken, "Authorization scheme is not Bearer")
	}
	tok := strings.TrimLeft(rest, " ")
	if tok == "" || strings.ContainsAny(tok, " \t,") {
		return "", newError(ErrMalformed, "malformed Bearer credentials")
	}
	return tok, nil
}

func (v *Validator) validateRequest(r *http.Request, req Requirements) (*Identity, error) {
	tok, err := BearerToken(r)
	if err != nil {
		return nil, err
	}
	return v.Validate(r.Context(), tok, req)
}

// deny writes the challenge headers of err onto h and returns the status.
func (v *Validator) deny(h http.Header, err error, scopes []string) int {
	status := HTTPStatus(err)
	h.Set("Cache-Control", "no-store")
	switch status {
	case http.StatusUnauthorized, http.StatusForbidden:
		h.Set("WWW-Authenticate", WWWAuthenticate(err, v.realm, scopes))
	case http.StatusServiceUnavailable:
		h.Set("Retry-After", "1")
	}
	return status
}

func (v *Validator) logDenial(r *http.Request, err error) {
	// err never contains the token; see Error.
	v.log.LogAttrs(r.Context(), levelFor(err), "edge: request denied",
		slog.String("method", r.Method), slog.String("path", r.URL.Path), slog.String("error", err.Error()))
}

// levelFor logs what an operator must act on (stale revocation data) at Warn and the clients'
// failures at Debug, where a flood of bad tokens cannot drown the logs.
func levelFor(err error) slog.Level {
	if errors.Is(err, ErrRevocationStale) {
		return slog.LevelWarn
	}
	return slog.LevelDebug
}

// Middleware returns net/http middleware that requires a valid bearer token meeting req. It
// stores the Identity in the request context (FromContext) and answers failures itself: 401 or
// 403 with an RFC 6750 WWW-Authenticate challenge, or 503 when revocation data is stale.
func (v *Validator) Middleware(req Requirements) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			id, err := v.validateRequest(r, req)
			if err != nil {
				v.logDenial(r, err)
				status := v.deny(w.Header(), err, req.Scopes)
				http.Error(w, http.StatusText(status), status)
				return
			}
			next.ServeHTTP(w, r.WithContext(NewContext(r.Context(), id)))
		})
	}
}

// EchoMiddleware is Middleware for echo. It stores the Identity in the request context
// (FromContext(c.Request().Context())) and, on failure, sets the challenge headers and returns
// an *echo.HTTPError with the status, for the application's error handler to render.
func (v *Validator) EchoMiddleware(req Requirements) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			r := c.Request()
			id, err := v.validateRequest(r, req)
			if err != nil {
				v.logDenial(r, err)
				status := v.deny(c.Response().Header(), err, req.Scopes)
				return echo.NewHTTPError(status, http.StatusText(status)).SetInternal(err)
			}
			c.SetRequest(r.WithContext(NewContext(r.Context(), id)))
			return next(c)
		}
	}
}

// ForwardAuthHandler returns the handler of a forward-auth endpoint (GET /validate) for nginx
// auth_request, Envoy ext_authz (HTTP service) and Traefik forwardAuth. It validates the
// request's bearer token against the Config and the route's requirements, taken from the query
// parameters "aud" and "scope" (space-separated) and the headers X-Mandate-Audience and
// X-Mandate-Scope. Requirements from all sources add up: a value injected by a client can only
// make the check stricter.
//
// It answers 200 with the identity headers (X-Mandate-Subject, -Subject-Issuer, -Client-Id,
// -Scope, -Actor: the chain, current actor first, comma-separated; -Grant-Id, -Token-Id; every
// one always present, possibly empty, so that a proxy that copies them overwrites anything a
// client sent), 401 or 403 with WWW-Authenticate, or 503 with Retry-After when revocation data
// is stale. Any method is accepted, since proxies forward the original one.
func (v *Validator) ForwardAuthHandler() http.Handler { return v.ForwardAuthHandlerWith(nil) }

// Foreign verifies a bearer token that the Validator's issuer did not mint, for a forward-auth
// endpoint that also accepts other issuers' tokens (the broker's own /validate accepts users'
// tokens of its trusted upstream issuers). It is asked only about tokens the Validator refused,
// so the Validator's own tokens never pay for it. ok=false means the token is not one it knows
// (the Validator's refusal stands); otherwise it returns the token's identity, or an *Error.
// The identity then meets the same route requirements and revocation set as the Validator's own.
type Foreign func(ctx context.Context, token string) (id *Identity, ok bool, err error)

// ForwardAuthHandlerWith is ForwardAuthHandler with a verifier for foreign tokens (nil: none).
func (v *Validator) ForwardAuthHandlerWith(foreign Foreign) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		auds, scopes := forwardRequirements(r)
		req := Requirements{Scopes: scopes}
		if len(auds) > 0 {
			req.Audience = auds[0]
		}
		tok, err := BearerToken(r)
		var id *Identity
		if err == nil {
			id, err = v.Validate(r.Context(), tok, req)
			if err != nil && foreign != nil {
				if fid, ok, ferr := foreign(r.Context(), tok); ok {
					if id, err = fid, ferr; err == nil {
						id, err = v.authorize(fid, v.now(), req)
					}
				}
			}
		}
		if err == nil {
			for _, a := range auds[min(1, len(auds)):] {
				if !id.HasAudience(a) {
					err = newError(ErrAudience, fmt.Sprintf("aud lacks %q", truncate(a)))
					break
				}
			}
		}
		if err != nil {
			v.logDenial(r, err)
			w.WriteHeader(v.deny(h, err, scopes))
			return
		}
		h.Set("Cache-Control", "no-store")
		h.Set(HeaderSubject, headerSafe(id.Subject))
		h.Set(HeaderSubjectIssuer, headerSafe(id.SubjectIssuer))
		h.Set(HeaderClientID, headerSafe(id.ClientID))
		h.Set(HeaderScope, headerSafe(strings.Join(id.Scopes, " ")))
		h.Set(HeaderActor, headerSafe(strings.Join(id.Actors, ",")))
		h.Set(HeaderGrantID, headerSafe(id.GrantID))
		h.Set(HeaderTokenID, headerSafe(id.TokenID))
		w.WriteHeader(http.StatusOK)
	})
}

// forwardRequirements collects the route's audiences and scopes from query and headers,
// de-duplicated.
func forwardRequirements(r *http.Request) (auds, scopes []string) {
	q := r.URL.Query()
	for _, a := range append(q["aud"], r.Header.Values(HeaderAudience)...) {
		if a = strings.TrimSpace(a); a != "" && !contains(auds, a) {
			auds = append(auds, a)
		}
	}
	for _, list := range append(q["scope"], r.Header.Values(HeaderScope)...) {
		for _, s := range strings.Fields(list) {
			if !contains(scopes, s) {
				scopes = append(scopes, s)
			}
		}
	}
	return auds, scopes
}

// headerSafe drops control characters, which no identity value should hold and which must not
// reach a header.
func headerSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
}
