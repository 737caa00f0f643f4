package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/mandate-dev/mandate/grants"
	"github.com/mandate-dev/mandate/internal/db"
)

// UserAuthenticator verifies a user's own upstream access token (Authorization: Bearer) and returns who they are.
// An error that wraps ErrUserAuthUnavailable means the token could not be
// checked right now (503); any other error means it is not valid (401).
type UserAuthenticator interface {
	AuthenticateUser(ctx context.Context, bearer string) (issuer, subject string, err error)
}

// ErrUserAuthUnavailable is wrapped by a UserAuthenticator's error when it
// cannot decide (for instance, the issuer's keys cannot be fetched), so that
// the user is told to retry instead of that their token is bad.
var ErrUserAuthUnavailable = errors.New("server: user authentication unavailable")

// grantsMaxBody bounds a grant request body.
const grantsMaxBody = 64 << 10

// grantsMaxBearer bounds the user's access token; real ones are a few KiB.
const grantsMaxBearer = 16 << 10

// RegisterUserGrants mounts the users' own grant API on g (the caller mounts
// g at /v1). Every route authenticates the caller by their upstream access
// token through auth; users see and change only their own grants, and another
// user's grant answers 404 exactly like a missing one.
//
//	GET    /grants             the caller's grants (?status=active|revoked|expired&limit=N)
//	POST   /grants             create a grant from the caller to a client
//	GET    /grants/:id         one grant
//	PATCH  /grants/:id         narrow it
//	DELETE /grants/:id         revoke it (?reason=...), 204
//	GET    /grants/:id/events  its history
func RegisterUserGrants(g *echo.Group, s *grants.Store, auth UserAuthenticator) {
	if g == nil || s == nil || auth == nil {
		panic("server: RegisterUserGrants needs a group, a store and an authenticator")
	}
	api := &grantsAPI{store: s}
	as := func(h func(c echo.Context, who grantsCaller) error) echo.HandlerFunc {
		return func(c echo.Context) error {
			who, err := grantsAuthenticate(c, auth)
			if err != nil {
				return grantsFail(c, err)
			}
			return h(c, who)
		}
	}
	g.GET("/grants", as(api.list))
	g.POST("/grants", as(api.createForSelf))
	g.GET("/grants/:id", as(api.get))
	g.PATCH("/grants/:id", as(api.narrow))
	g.DELETE("/grants/:id", as(api.revoke))
	g.GET("/grants/:id/events", as(api.events))
}

// RegisterAdminGrants mounts the admin grant API on g (the caller mounts g at
// /admin/v1 behind its admin-key middleware). Changes are recorded with the
// actor "admin".
//
//	GET    /grants             ?client_id=&user_issuer=&user_subject=&status=&limit=
//	POST   /grants             create, naming user_issuer and user_subject in the body
//	GET    /grants/:id
//	PATCH  /grants/:id
//	DELETE /grants/:id         ?reason=..., 204
//	GET    /grants/:id/events
func RegisterAdminGrants(g *echo.Group, s *grants.Store) {
	if g == nil || s == nil {
		panic("server: RegisterAdminGrants needs a group and a store")
	}
	api := &grantsAPI{store: s}
	admin := func(h func(c echo.Context, who grantsCaller) error) echo.HandlerFunc {
		return func(c echo.Context) error { return h(c, grantsCaller{admin: true}) }
	}
	g.GET("/grants", admin(api.list))
	g.POST("/grants", admin(api.createAsAdmin))
	g.GET("/grants/:id", admin(api.get))
	g.PATCH("/grants/:id", admin(api.narrow))
	g.DELETE("/grants/:id", admin(api.revoke))
	g.GET("/grants/:id/events", admin(api.events))
}

// grantsCaller is who is asking: an admin, or one authenticated user.
type grantsCaller struct {
	admin    bool
	iss, sub string
}

func (w grantsCaller) actor() string {
	if w.admin {
		return grants.AdminActor
	}
	return grants.UserActor(w.iss, w.sub)
}

func (w grantsCaller) sees(g *grants.Grant) bool {
	return w.admin || g.UserIssuer == w.iss && g.UserSubject == w.sub
}

type grantsAPI struct {
	store *grants.Store
}

// Wire types. Times are RFC 3339 in UTC; lifetimes are whole seconds.

type grantAPIGrant struct {
	GrantID            string   `json:"grant_id"`
	UserIssuer         string   `json:"user_issuer"`
	UserSubject        string   `json:"user_subject"`
	ClientID           string   `json:"client_id"`
	Scopes             []string `json:"scopes"`
	Resources          []string `json:"resources"`
	MaxDepth           int      `json:"max_depth"`
	MaxLifetimeSeconds int64    `json:"max_lifetime_seconds"`
	AllowedSubAgents   []string `json:"allowed_sub_agents"`
	ExpiresAt          string   `json:"expires_at"`
	Status             string   `json:"status"`
	CreatedAt          string   `json:"created_at"`
	UpdatedAt          string   `json:"updated_at"`
	RevokedAt          string   `json:"revoked_at,omitempty"`
}

// grantAPICreate is a user's POST /grants body; the user comes from the token.
type grantAPICreate struct {
	ClientID           string   `json:"client_id"`
	Scopes             []string `json:"scopes"`
	Resources          []string `json:"resources"`
	MaxDepth           int      `json:"max_depth"`
	MaxLifetimeSeconds int64    `json:"max_lifetime_seconds"`
	AllowedSubAgents   []string `json:"allowed_sub_agents"`
	ExpiresAt          string   `json:"expires_at"`
}

// grantAPIAdminCreate is the admin's POST /grants body, which names the user.
type grantAPIAdminCreate struct {
	UserIssuer  string `json:"user_issuer"`
	UserSubject string `json:"user_subject"`
	grantAPICreate
}

// grantAPINarrow is a PATCH body: absent (or null) fields stay as they are.
type grantAPINarrow struct {
	Scopes             *[]string `json:"scopes"`
	Resources          *[]string `json:"resources"`
	AllowedSubAgents   *[]string `json:"allowed_sub_agents"`
	MaxDepth           *int      `json:"max_depth"`
	MaxLifetimeSeconds *int64    `json:"max_lifetime_seconds"`
	ExpiresAt          *string   `json:"expires_at"`
}

type grantAPIEvent struct {
	Seq    int64           `json:"seq"`
	At     string          `json:"at"`
	Actor  string          `json:"actor"`
	Action string          `json:"action"`
	Detail json.RawMessage `json:"detail"`
}

func grantAPIFrom(g *grants.Grant) grantAPIGrant {
	out := grantAPIGrant{
		GrantID:            g.ID,
		UserIssuer:         g.UserIssuer,
		UserSubject:        g.UserSubject,
		ClientID:           g.ClientID,
		Scopes:             grantsNonNil(g.Scopes),
		Resources:          grantsNonNil(g.Resources),
		MaxDepth:           g.MaxDepth,
		MaxLifetimeSeconds: int64(g.MaxLifetime / time.Second),
		AllowedSubAgents:   grantsNonNil(g.AllowedSubAgents),
		ExpiresAt:          grantsTime(g.ExpiresAt),
		Status:             g.Status,
		CreatedAt:          grantsTime(g.CreatedAt),
		UpdatedAt:          grantsTime(g.UpdatedAt),
	}
	if !g.RevokedAt.IsZero() {
		out.RevokedAt = grantsTime(g.RevokedAt)
	}
	return out
}

func grantsNonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func grantsTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// grant converts a create body for the given user.
func (r *grantAPICreate) grant(iss, sub string) (*grants.Grant, error) {
	life, err := grantsLifetime(r.MaxLifetimeSeconds)
	if err != nil {
		return nil, err
	}
	if r.ExpiresAt == "" {
		return nil, &grants.ValidationError{Field: "expires_at", Message: "is required (RFC 3339, e.g. 2030-01-02T15:04:05Z)"}
	}
	exp, err := grantsParseTime(r.ExpiresAt)
	if err != nil {
		return nil, err
	}
	return &grants.Grant{
		UserIssuer:       iss,
		UserSubject:      sub,
		ClientID:         r.ClientID,
		Scopes:           r.Scopes,
		Resources:        r.Resources,
		MaxDepth:         r.MaxDepth,
		MaxLifetime:      life,
		AllowedSubAgents: r.AllowedSubAgents,
		ExpiresAt:        exp,
	}, nil
}

func (r *grantAPINarrow) narrowing() (grants.Narrowing, error) {
	n := grants.Narrowing{Scopes: r.Scopes, Resources: r.Resources, AllowedSubAgents: r.AllowedSubAgents, MaxDepth: r.MaxDepth}
	if r.MaxLifetimeSeconds != nil {
		life, err := grantsLifetime(*r.MaxLifetimeSeconds)
		if err != nil {
			return n, err
		}
		n.MaxLifetime = &life
	}
	if r.ExpiresAt != nil {
		exp, err := grantsParseTime(*r.ExpiresAt)
		if err != nil {
			return n, err
		}
		n.ExpiresAt = &exp
	}
	return n, nil
}

// grantsLifetime converts seconds to a duration, range-checking first so
// that a huge number cannot overflow into a small one.
func grantsLifetime(sec int64) (time.Duration, error) {
	if limit := int64(grants.MaxLifetimeLimit / time.Second); sec < 0 || sec > limit {
		return 0, &grants.ValidationError{Field: "max_lifetime_seconds", Message: fmt.Sprintf("must be between 0 (server default) and %d", limit)}
	}
	return time.Duration(sec) * time.Second, nil
}

func grantsParseTime(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, &grants.ValidationError{Field: "expires_at", Message: "is not an RFC 3339 time (e.g. 2030-01-02T15:04:05Z)"}
	}
	return t, nil
}

func (a *grantsAPI) list(c echo.Context, who grantsCaller) error {
	f := grants.Filter{Status: c.QueryParam("status")}
	if l := c.QueryParam("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil {
			return grantsFail(c, &grants.ValidationError{Field: "limit", Message: "must be a number"})
		}
		f.Limit = n
	}
	if who.admin {
		f.ClientID, f.UserIssuer, f.UserSubject = c.QueryParam("client_id"), c.QueryParam("user_issuer"), c.QueryParam("user_subject")
	} else {
		f.ClientID = c.QueryParam("client_id")
		f.UserIssuer, f.UserSubject = who.iss, who.sub
	}
	list, err := a.store.List(c.Request().Context(), f)
	if err != nil {
		return grantsFail(c, err)
	}
	out := make([]grantAPIGrant, 0, len(list))
	for _, g := range list {
		out = append(out, grantAPIFrom(g))
	}
	return grantsJSON(c, http.StatusOK, map[string]any{"grants": out})
}

func (a *grantsAPI) createForSelf(c echo.Context, who grantsCaller) error {
	var body grantAPICreate
	if err := grantsDecode(c, &body); err != nil {
		return grantsFail(c, err)
	}
	g, err := body.grant(who.iss, who.sub)
	if err != nil {
		return grantsFail(c, err)
	}
	return a.create(c, who, g)
}

func (a *grantsAPI) createAsAdmin(c echo.Context, who grantsCaller) error {
	var body grantAPIAdminCreate
	if err := grantsDecode(c, &body); err != nil {
		return grantsFail(c, err)
	}
	g, err := body.grant(body.UserIssuer, body.UserSubject)
	if err != nil {
		return grantsFail(c, err)
	}
	return a.create(c, who, g)
}

func (a *grantsAPI) create(c echo.Context, who grantsCaller, g *grants.Grant) error {
	created, err := a.store.Create(c.Request().Context(), g, who.actor())
	if err != nil {
		return grantsFail(c, err)
	}
	c.Response().Header().Set(echo.HeaderLocation, strings.TrimSuffix(c.Request().URL.Path, "/")+"/"+created.ID)
	return grantsJSON(c, http.StatusCreated, grantAPIFrom(created))
}

// visible loads grant id if the caller may see it; otherwise ErrNotFound.
func (a *grantsAPI) visible(c echo.Context, who grantsCaller) (*grants.Grant, error) {
	g, err := a.store.Get(c.Request().Context(), c.Param("id"))
	if err != nil {
		return nil, err
	}
	if !who.sees(g) {
		return nil, grants.ErrNotFound
	}
	return g, nil
}

func (a *grantsAPI) get(c echo.Context, who grantsCaller) error {
	g, err := a.visible(c, who)
	if err != nil {
		return grantsFail(c, err)
	}
	return grantsJSON(c, http.StatusOK, grantAPIFrom(g))
}

func (a *grantsAPI) narrow(c echo.Context, who grantsCaller) error {
	var body grantAPINarrow
	if err := grantsDecode(c, &body); err != nil {
		return grantsFail(c, err)
	}
	n, err := body.narrowing()
	if err != nil {
		return grantsFail(c, err)
	}
	// The store checks ownership too: a user's actor only reaches their own grants.
	g, err := a.store.Narrow(c.Request().Context(), c.Param("id"), n, who.actor())
	if err != nil {
		return grantsFail(c, err)
	}
	return grantsJSON(c, http.StatusOK, grantAPIFrom(g))
}

func (a *grantsAPI) revoke(c echo.Context, who grantsCaller) error {
	if err := a.store.Revoke(c.Request().Context(), c.Param("id"), who.actor(), c.QueryParam("reason")); err != nil {
		return grantsFail(c, err)
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.NoContent(http.StatusNoContent)
}

func (a *grantsAPI) events(c echo.Context, who grantsCaller) error {
	g, err := a.visible(c, who)
	if err != nil {
		return grantsFail(c, err)
	}
	evs, err := a.store.Events(c.Request().Context(), g.ID)
	if err != nil {
		return grantsFail(c, err)
	}
	out := make([]grantAPIEvent, 0, len(evs))
	for _, e := range evs {
		out = append(out, grantAPIEvent{Seq: e.Seq, At: grantsTime(e.At), Actor: e.Actor, Action: e.Action, Detail: e.Detail})
	}
	return grantsJSON(c, http.StatusOK, map[string]any{"grant_id": g.ID, "events": out})
}

// grantsAuthenticate reads the caller's bearer token (RFC 6750 §2.1) and asks auth who it is.
func grantsAuthenticate(c echo.Context, auth UserAuthenticator) (grantsCaller, error) {
	vals := c.Request().Header.Values(echo.HeaderAuthorization)
	if len(vals) > 1 {
		return grantsCaller{}, &grantsHTTPError{status: http.StatusBadRequest, code: "invalid_request",
			desc: "send one Authorization header", wwwAuth: "invalid_request"}
	}
	var scheme, tok string
	if len(vals) == 1 {
		scheme, tok, _ = strings.Cut(vals[0], " ")
	}
	// RFC 6750 §3.1: "If the request lacks any authentication information
	// (e.g., the client was unaware that authentication is necessary or
	// attempted using an unsupported authentication method), the resource
	// server SHOULD NOT include an error code or other error information."
	if !strings.EqualFold(scheme, "Bearer") {
		return grantsCaller{}, &grantsHTTPError{status: http.StatusUnauthorized, code: "unauthorized",
			desc: "the grants API needs Authorization: Bearer <your access token>", wwwAuth: "-"}
	}
	tok = strings.TrimLeft(tok, " ")
	if !grantsB64Token(tok) {
		return grantsCaller{}, grantsInvalidToken
	}
	ctx := c.Request().Context()
	iss, sub, err := auth.AuthenticateUser(ctx, tok)
	switch {
	case errors.Is(err, ErrUserAuthUnavailable):
		return grantsCaller{}, fmt.Errorf("grants API: authenticate user: %w", errors.Join(db.ErrUnavailable, err))
	case err != nil:
		slog.DebugContext(ctx, "grants API: user token refused", slog.Any("err", err))
		return grantsCaller{}, grantsInvalidToken
	case iss == "" || sub == "":
		return grantsCaller{}, grantsInvalidToken
	}
	return grantsCaller{iss: iss, sub: sub}, nil
}

var grantsInvalidToken = &grantsHTTPError{status: http.StatusUnauthorized, code: "invalid_token",
	desc: "the access token is not valid (malformed, expired, or not from a trusted issuer)", wwwAuth: "invalid_token"}

// grantsB64Token checks RFC 6750 §2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
func grantsB64Token(s string) bool {
	if s == "" || len(s) > grantsMaxBearer {
		return false
	}
	i := 0
	for ; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.IndexByte("-._~+/", c) >= 0) {
			break
		}
	}
	if i == 0 {
		return false
	}
	for ; i < len(s); i++ {
		if s[i] != '=' {
			return false
		}
	}
	return true
}

// grantsHTTPError is a response decided before reaching the store.
type grantsHTTPError struct {
	status  int
	code    string
	desc    string
	wwwAuth string // for 401/400 on auth: the RFC 6750 error code, "-" for none
}

func (e *grantsHTTPError) Error() string { return e.code + ": " + e.desc }

// grantsDecode reads exactly one JSON object of at most grantsMaxBody bytes
// into dst, refusing unknown fields.
func grantsDecode(c echo.Context, dst any) error {
	if be := decodeJSONBody(c, dst, jsonBody{limit: grantsMaxBody, lastField: true,
		tooLarge: fmt.Sprintf("the body is larger than %d KiB", grantsMaxBody>>10)}); be != nil {
		return &grantsHTTPError{status: be.status, code: "invalid_request", desc: be.desc}
	}
	return nil
}

func grantsJSON(c echo.Context, status int, v any) error {
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.JSON(status, v)
}

// grantsFail maps an error to its response; nothing that bad input can cause
// becomes a 500.
func grantsFail(c echo.Context, err error) error {
	var (
		herr   *grantsHTTPError
		verr   *grants.ValidationError
		exists *grants.ExistsError
	)
	switch {
	case errors.As(err, &herr):
		switch herr.wwwAuth {
		case "":
		case "-":
			c.Response().Header().Set(echo.HeaderWWWAuthenticate, `Bearer realm="mandate"`)
		default:
			c.Response().Header().Set(echo.HeaderWWWAuthenticate, `Bearer realm="mandate", error="`+herr.wwwAuth+`"`)
		}
		return APIError(c, herr.status, herr.code, herr.desc)
	case errors.As(err, &verr):
		desc := verr.Message
		if verr.Field != "" {
			desc = verr.Field + ": " + verr.Message
		}
		return APIError(c, http.StatusBadRequest, "invalid_request", desc)
	case errors.As(err, &exists):
		desc := "an active grant to this client already exists"
		if exists.GrantID != "" {
			desc += " (" + exists.GrantID + ")"
		}
		return APIError(c, http.StatusConflict, "conflict", desc+"; narrow it with PATCH or revoke it with DELETE")
	case errors.Is(err, grants.ErrNotActive):
		return APIError(c, http.StatusConflict, "conflict", "the grant is revoked or expired and can no longer change")
	case errors.Is(err, grants.ErrNotFound):
		return APIError(c, http.StatusNotFound, "not_found", "grant not found")
	case errors.Is(err, grants.ErrNotPublished):
		c.Response().Header().Set("Retry-After", "1")
		return APIError(c, http.StatusServiceUnavailable, "temporarily_unavailable",
			"the revocation is recorded but not yet published to every node; repeat the DELETE")
	case errors.Is(err, db.ErrUnavailable), errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		slog.WarnContext(c.Request().Context(), "grants API: unavailable", slog.Any("err", err))
		c.Response().Header().Set("Retry-After", "1")
		return APIError(c, http.StatusServiceUnavailable, "temporarily_unavailable", "the grant store is unavailable; retry")
	}
	slog.ErrorContext(c.Request().Context(), "grants API: request failed", slog.String("path", c.Request().URL.Path), slog.Any("err", err))
	return APIError(c, http.StatusInternalServerError, "server_error", "the server could not complete the request")
}
