package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/mandate-dev/mandate/broker/clients"
	"github.com/mandate-dev/mandate/internal/db"
)

// clientAdminMaxBody bounds a client registration or patch body. The largest
// legitimate body, ten 8192-bit RSA keys, is about 15 KiB.
const clientAdminMaxBody = 64 << 10

// RegisterClientAdmin mounts the client registry's admin endpoints on g (the caller
// mounts g at /admin/v1 behind the admin-key middleware). docs/admin-api.md
// describes them with examples.
//
//	POST   /clients                    register; 201 with the client and its client_secret, shown once
//	GET    /clients                    {"clients": [...]}
//	GET    /clients/:id                one client
//	PATCH  /clients/:id                change name, grant_types, scopes, audiences, jwks, flags
//	POST   /clients/:id/rotate-secret  200 {"client_id", "client_secret"}; the old secret stops working
//	POST   /clients/:id/disable        200 with the client; it can no longer authenticate
//	POST   /clients/:id/enable         200 with the client
//	DELETE /clients/:id                204
//
// Errors are {"error", "error_description"}: 400 invalid_request (the description
// names the field), 404 not_found, 409 conflict, 413 and 415 invalid_request,
// 503 temporarily_unavailable. No response ever carries a secret hash.
func RegisterClientAdmin(g *echo.Group, s *clients.Store) {
	a := &clientAdmin{store: s}
	g.POST("/clients", a.create)
	g.GET("/clients", a.list)
	g.GET("/clients/:id", a.get)
	g.PATCH("/clients/:id", a.update)
	g.POST("/clients/:id/rotate-secret", a.rotateSecret)
	g.POST("/clients/:id/disable", func(c echo.Context) error { return a.setDisabled(c, true) })
	g.POST("/clients/:id/enable", func(c echo.Context) error { return a.setDisabled(c, false) })
	g.DELETE("/clients/:id", a.delete)
}

type clientAdmin struct {
	store *clients.Store
}

// clientAdminClient is a client on the wire. The hash of the secret has no field
// here, so it cannot leak through any response.
type clientAdminClient struct {
	ClientID                string          `json:"client_id"`
	ClientSecret            string          `json:"client_secret,omitempty"`
	Name                    string          `json:"name"`
	Type                    string          `json:"type"`
	TokenEndpointAuthMethod string          `json:"token_endpoint_auth_method"`
	JWKS                    json.RawMessage `json:"jwks,omitempty"`
	GrantTypes              []string        `json:"grant_types"`
	Scopes                  []string        `json:"scopes"`
	Audiences               []string        `json:"audiences"`
	MayImpersonate          bool            `json:"may_impersonate"`
	FirstParty              bool            `json:"first_party"`
	Disabled                bool            `json:"disabled"`
	CreatedAt               string          `json:"created_at"`
	UpdatedAt               string          `json:"updated_at"`
}

func clientAdminWire(c *clients.Client, secret string) clientAdminClient {
	nonNil := func(s []string) []string {
		if s == nil {
			return []string{}
		}
		return s
	}
	return clientAdminClient{
		ClientID: c.ID, ClientSecret: secret, Name: c.Name, Type: c.Type, TokenEndpointAuthMethod: c.AuthMethod,
		JWKS: c.JWKS, GrantTypes: nonNil(c.GrantTypes), Scopes: nonNil(c.Scopes), Audiences: nonNil(c.Audiences),
		MayImpersonate: c.MayImpersonate, FirstParty: c.FirstParty, Disabled: c.Disabled,
		CreatedAt: c.CreatedAt.UTC().Format(time.RFC3339), UpdatedAt: c.UpdatedAt.UTC().Format(time.RFC3339),
	}
}

// clientAdminCreate is the body of POST /clients.
type clientAdminCreate struct {
	ClientID                string          `json:"client_id"`
	Name                    string          `json:"name"`
	Type                    string          `json:"type"`
	TokenEndpointAuthMethod string          `json:"token_endpoint_auth_method"`
	JWKS                    json.RawMessage `json:"jwks"`
	GrantTypes              []string        `json:"grant_types"`
	Scopes                  []string        `json:"scopes"`
	Audiences               []string        `json:"audiences"`
	MayImpersonate          bool            `json:"may_impersonate"`
	FirstParty              bool            `json:"first_party"`
	Disabled                bool            `json:"disabled"`
}

// clientAdminPatch is the body of PATCH /clients/:id: absent fields stay as they are.
type clientAdminPatch struct {
	Name           *string          `json:"name"`
	JWKS           *json.RawMessage `json:"jwks"`
	GrantTypes     *[]string        `json:"grant_types"`
	Scopes         *[]string        `json:"scopes"`
	Audiences      *[]string        `json:"audiences"`
	MayImpersonate *bool            `json:"may_impersonate"`
	FirstParty     *bool            `json:"first_party"`
	Disabled       *bool            `json:"disabled"`
}

// clientAdminFieldTypes names every accepted body field and its JSON type, for
// error messages.
var clientAdminFieldTypes = map[string]string{
	"client_id": "a string", "name": "a string", "type": "a string", "token_endpoint_auth_method": "a string",
	"jwks": "a JWK Set object", "grant_types": "an array of strings", "scopes": "an array of strings",
	"audiences": "an array of strings", "may_impersonate": "a boolean", "first_party": "a boolean", "disabled": "a boolean",
}

// clientAdminRefused explains fields a body must not carry.
var (
	clientAdminRefusedOnCreate = map[string]string{
		"client_secret": "is generated by the server and returned once; it cannot be chosen",
		"created_at":    "is set by the server",
		"updated_at":    "is set by the server",
	}
	clientAdminRefusedOnPatch = map[string]string{
		"client_id":                  "cannot be changed; register a new client",
		"type":                       "cannot be changed; register a new client",
		"token_endpoint_auth_method": "cannot be changed; register a new client",
		"client_secret":              "cannot be set; use POST /clients/{id}/rotate-secret",
		"created_at":                 "is set by the server",
		"updated_at":                 "is set by the server",
	}
)

func (a *clientAdmin) create(c echo.Context) error {
	var req clientAdminCreate
	if err := clientAdminDecode(c, &req, clientAdminRefusedOnCreate, false); err != nil {
		return clientAdminFail(c, err)
	}
	cl := &clients.Client{
		ID: req.ClientID, Name: req.Name, Type: req.Type, AuthMethod: req.TokenEndpointAuthMethod,
		JWKS: req.JWKS, GrantTypes: req.GrantTypes, Scopes: req.Scopes, Audiences: req.Audiences,
		MayImpersonate: req.MayImpersonate, FirstParty: req.FirstParty, Disabled: req.Disabled,
	}
	ctx := c.Request().Context()
	secret, err := a.store.Create(ctx, cl)
	if err != nil {
		return clientAdminFail(c, err)
	}
	slog.InfoContext(ctx, "clients: registered", "client_id", cl.ID, "type", cl.Type,
		"auth_method", cl.AuthMethod, "may_impersonate", cl.MayImpersonate, "first_party", cl.FirstParty)
	c.Response().Header().Set(echo.HeaderLocation, strings.TrimSuffix(c.Request().URL.Path, "/")+"/"+cl.ID)
	return clientAdminJSON(c, http.StatusCreated, clientAdminWire(cl, secret))
}

func (a *clientAdmin) list(c echo.Context) error {
	list, err := a.store.List(c.Request().Context())
	if err != nil {
		return clientAdminFail(c, err)
	}
	out := make([]clientAdminClient, 0, len(list))
	for _, cl := range list {
		out = append(out, clientAdminWire(cl, ""))
	}
	return clientAdminJSON(c, http.StatusOK, map[string]any{"clients": out})
}

func (a *clientAdmin) get(c echo.Context) error {
	cl, err := a.store.Get(c.Request().Context(), clientAdminID(c))
	if err != nil {
		return clientAdminFail(c, err)
	}
	return clientAdminJSON(c, http.StatusOK, clientAdminWire(cl, ""))
}

func (a *clientAdmin) update(c echo.Context) error {
	var req clientAdminPatch
	if err := clientAdminDecode(c, &req, clientAdminRefusedOnPatch, true); err != nil {
		return clientAdminFail(c, err)
	}
	id := clientAdminID(c)
	ctx := c.Request().Context()
	cl, err := a.store.Update(ctx, id, clients.Patch{
		Name: req.Name, JWKS: req.JWKS, GrantTypes: req.GrantTypes, Scopes: req.Scopes, Audiences: req.Audiences,
		MayImpersonate: req.MayImpersonate, FirstParty: req.FirstParty, Disabled: req.Disabled,
	})
	if err != nil {
		return clientAdminFail(c, err)
	}
	slog.InfoContext(ctx, "clients: updated", "client_id", cl.ID, "disabled", cl.Disabled,
		"may_impersonate", cl.MayImpersonate, "first_party", cl.FirstParty)
	return clientAdminJSON(c, http.StatusOK, clientAdminWire(cl, ""))
}

func (a *clientAdmin) rotateSecret(c echo.Context) error {
	id := clientAdminID(c)
	ctx := c.Request().Context()
	secret, err := a.store.RotateSecret(ctx, id)
	if err != nil {
		return clientAdminFail(c, err)
	}
	slog.InfoContext(ctx, "clients: secret rotated", "client_id", id)
	return clientAdminJSON(c, http.StatusOK, map[string]string{"client_id": id, "client_secret": secret})
}

func (a *clientAdmin) setDisabled(c echo.Context, disabled bool) error {
	id := clientAdminID(c)
	ctx := c.Request().Context()
	if err := a.store.SetDisabled(ctx, id, disabled); err != nil {
		return clientAdminFail(c, err)
	}
	slog.InfoContext(ctx, "clients: disabled changed", "client_id", id, "disabled", disabled)
	cl, err := a.store.Get(ctx, id)
	if err != nil {
		return clientAdminFail(c, err)
	}
	return clientAdminJSON(c, http.StatusOK, clientAdminWire(cl, ""))
}

func (a *clientAdmin) delete(c echo.Context) error {
	id := clientAdminID(c)
	ctx := c.Request().Context()
	if err := a.store.Delete(ctx, id); err != nil {
		return clientAdminFail(c, err)
	}
	slog.InfoContext(ctx, "clients: deleted", "client_id", id)
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.NoContent(http.StatusNoContent)
}

// clientAdminID is the :id path parameter, unescaped exactly once. echo routes on
// URL.RawPath when the request set one (the parameter is then still escaped) and on
// the already unescaped URL.Path otherwise. An id that is not a valid client id
// answers 404 from the store without a database round trip.
func clientAdminID(c echo.Context) string {
	id := c.Param("id")
	if c.Request().URL.RawPath == "" {
		return id
	}
	u, err := url.PathUnescape(id)
	if err != nil {
		return "" // not a valid id: 404
	}
	return u
}

func clientAdminJSON(c echo.Context, status int, v any) error {
	// Responses can carry a client secret; nothing on the way may keep a copy.
	c.Response().Header().Set("Cache-Control", "no-store")
	c.Response().Header().Set("Pragma", "no-cache")
	return c.JSON(status, v)
}

// clientAdminError is a response decided before the store is asked.
type clientAdminError struct {
	status int
	desc   string
}

func (e *clientAdminError) Error() string { return e.desc }

func clientAdminBad(format string, args ...any) error {
	return &clientAdminError{status: http.StatusBadRequest, desc: fmt.Sprintf(format, args...)}
}

// clientAdminDecode reads exactly one JSON object of at most clientAdminMaxBody bytes
// into dst. Field names are matched exactly (encoding/json alone would also take
// "NAME" for "name"), a field may appear once, unknown fields are refused, and in a
// patch a field may not be null (leave it out to keep it).
func clientAdminDecode(c echo.Context, dst any, refused map[string]string, patch bool) error {
	r := c.Request()
	mt, params, err := mime.ParseMediaType(r.Header.Get(echo.HeaderContentType))
	if err != nil || mt != echo.MIMEApplicationJSON {
		return &clientAdminError{status: http.StatusUnsupportedMediaType, desc: "Content-Type must be application/json"}
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") {
		return &clientAdminError{status: http.StatusUnsupportedMediaType, desc: "the body must be UTF-8 JSON"}
	}
	tooLarge := &clientAdminError{status: http.StatusRequestEntityTooLarge,
		desc: fmt.Sprintf("the body is larger than %d KiB", clientAdminMaxBody>>10)}
	if r.ContentLength > clientAdminMaxBody {
		return tooLarge
	}
	var (
		raw       json.RawMessage
		maxErr    *http.MaxBytesError
		syntaxErr *json.SyntaxError
	)
	dec := json.NewDecoder(http.MaxBytesReader(c.Response(), r.Body, clientAdminMaxBody))
	err = dec.Decode(&raw)
	switch {
	case err == nil:
	case errors.As(err, &maxErr):
		return tooLarge
	case errors.Is(err, io.EOF):
		return clientAdminBad("the body is empty; send a JSON object")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return clientAdminBad("malformed JSON: the body ends too early")
	case errors.As(err, &syntaxErr):
		return clientAdminBad("malformed JSON at byte %d", syntaxErr.Offset)
	default:
		return clientAdminBad("malformed JSON")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		if errors.As(err, &maxErr) {
			return tooLarge
		}
		return clientAdminBad("the body must hold exactly one JSON value")
	}

	// Walk the top-level members before binding them.
	md := json.NewDecoder(bytes.NewReader(raw))
	if tok, err := md.Token(); err != nil || tok != json.Delim('{') {
		return clientAdminBad("the body must be a JSON object")
	}
	seen := make(map[string]bool)
	for md.More() {
		tok, err := md.Token()
		if err != nil {
			return clientAdminBad("malformed JSON")
		}
		name, _ := tok.(string)
		var v json.RawMessage
		if err := md.Decode(&v); err != nil {
			return clientAdminBad("malformed JSON")
		}
		if why, ok := refused[name]; ok {
			return clientAdminBad("%s %s", name, why)
		}
		if _, ok := clientAdminFieldTypes[name]; !ok {
			return clientAdminBad("unknown field %q", clientAdminTruncate(name))
		}
		if seen[name] {
			return clientAdminBad("field %q appears more than once", name)
		}
		seen[name] = true
		if patch && string(v) == "null" {
			return clientAdminBad("%s: must not be null; leave the field out to keep its value", name)
		}
	}

	bd := json.NewDecoder(bytes.NewReader(raw))
	bd.DisallowUnknownFields()
	if err := bd.Decode(dst); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) && typeErr.Field != "" {
			field := typeErr.Field
			if i := strings.IndexAny(field, ".["); i >= 0 {
				field = field[:i]
			}
			if want, ok := clientAdminFieldTypes[field]; ok {
				return clientAdminBad("%s: must be %s", field, want)
			}
		}
		return clientAdminBad("the body does not match the client fields: %s", clientAdminTruncate(strings.TrimPrefix(err.Error(), "json: ")))
	}
	return nil
}

func clientAdminTruncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// clientAdminFail maps an error to its response; nothing bad input can cause
// becomes a 500.
func clientAdminFail(c echo.Context, err error) error {
	var (
		herr *clientAdminError
		verr *clients.ValidationError
	)
	switch {
	case errors.As(err, &herr):
		return APIError(c, herr.status, "invalid_request", herr.desc)
	case errors.As(err, &verr):
		return APIError(c, http.StatusBadRequest, "invalid_request", verr.Field+": "+verr.Message)
	case errors.Is(err, clients.ErrNotFound):
		return APIError(c, http.StatusNotFound, "not_found", "no client with this id")
	case errors.Is(err, clients.ErrExists):
		return APIError(c, http.StatusConflict, "conflict", "a client with this client_id is already registered")
	case errors.Is(err, db.ErrUnavailable), errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		slog.WarnContext(c.Request().Context(), "clients admin API: store unavailable", "err", err)
		c.Response().Header().Set("Retry-After", "1")
		return APIError(c, http.StatusServiceUnavailable, "temporarily_unavailable", "the client store is unavailable; retry")
	}
	slog.ErrorContext(c.Request().Context(), "clients admin API: request failed", "path", c.Request().URL.Path, "err", err)
	return APIError(c, http.StatusInternalServerError, "server_error", "the server could not complete the request")
}
