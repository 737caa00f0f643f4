// Package server is mandate's HTTP face (echo): the OAuth endpoints, the admin
// API, the users' grant API, the revocation feed, the edge validation endpoint,
// health and metrics.
package server

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/mandate-dev/mandate/broker"
	"github.com/mandate-dev/mandate/broker/ledger"
	"github.com/mandate-dev/mandate/internal/adminkey"
	"github.com/mandate-dev/mandate/internal/devissuer"
)

// JWKSSource publishes mandate's public signing keys.
type JWKSSource interface {
	JWKS() []byte
}

// Options wire the server.
type Options struct {
	Broker    *broker.Broker
	Keys      JWKSSource
	Ledger    *ledger.Ledger
	AdminKeys *adminkey.Store
	Dev       *devissuer.Issuer // nil outside dev mode
	// Ready reports whether the node can serve (database reachable, keys loaded).
	Ready func(ctx context.Context) error
	// Mount adds more routes (admin and user APIs of other packages).
	Mount        func(e *echo.Echo, admin *echo.Group, user *echo.Group)
	Logger       *slog.Logger
	MaxBodyBytes int64
	MaxInFlight  int
	// RequestTimeout bounds each request's work (database.query_timeout), so
	// that an unresponsive database fails requests fast; 0 = no bound. The
	// revocation feed's long poll and /readyz have bounds of their own.
	RequestTimeout time.Duration
	// Metrics, when set, are observed and served at /metrics.
	Metrics *Metrics
	// Validate serves GET /validate (forward auth for gateways); nil leaves it out.
	Validate http.Handler
	// RateLimit is the per-client token request rate (per second; 0 = off) and RateBurst its burst.
	RateLimit float64
	RateBurst int
}

// New builds the echo server with every route.
func New(o Options) *echo.Echo {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = 64 << 10
	}
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = errorHandler(o.Logger)
	e.Use(recoverMiddleware(o.Logger), requestID, accessLog(o.Logger), bodyLimit(o.MaxBodyBytes))
	if o.Metrics != nil {
		e.Use(o.Metrics.Middleware())
		e.GET("/metrics", echo.WrapHandler(o.Metrics.Handler()))
	}
	if o.RequestTimeout > 0 {
		e.Use(requestTimeout(o.RequestTimeout))
	}
	if o.MaxInFlight > 0 {
		e.Use(inFlightLimit(o.MaxInFlight))
	}
	var tokenLimit []echo.MiddlewareFunc
	if o.RateLimit > 0 {
		tokenLimit = append(tokenLimit, clientRateLimit(o.RateLimit, o.RateBurst))
	}

	b := o.Broker
	withInfo := func(h http.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			ctx := broker.WithRequestInfo(c.Request().Context(), broker.RequestInfo{ClientIP: c.RealIP(), RequestID: c.Response().Header().Get(echo.HeaderXRequestID)})
			h(c.Response(), c.Request().WithContext(ctx))
			return nil
		}
	}
	e.POST("/oauth2/token", withInfo(b.Token), tokenLimit...)
	e.POST("/oauth2/introspect", withInfo(b.Introspect))
	e.POST("/oauth2/revoke", withInfo(b.Revoke))
	e.GET("/.well-known/oauth-authorization-server", metadata(b.Issuer()))
	e.GET("/jwks.json", func(c echo.Context) error {
		c.Response().Header().Set("Cache-Control", "public, max-age=60")
		return c.Blob(http.StatusOK, "application/jwk-set+json", o.Keys.JWKS())
	})
	e.GET("/healthz", func(c echo.Context) error { return c.JSON(http.StatusOK, map[string]string{"status": "ok"}) })
	e.GET("/readyz", func(c echo.Context) error {
		if o.Ready != nil {
			ctx, cancel := context.WithTimeout(c.Request().Context(), 2*time.Second)
			defer cancel()
			if err := o.Ready(ctx); err != nil {
				c.Response().Header().Set("Retry-After", "1")
				return c.JSON(http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "reason": err.Error()})
			}
		}
		return c.JSON(http.StatusOK, map[string]string{"status": "ready"})
	})
	e.GET("/v1/revocations", revocationFeed(o.Ledger))
	if o.Validate != nil {
		// Proxies forward the original method; accept them all.
		e.Any("/validate", echo.WrapHandler(o.Validate))
	}

	admin := e.Group("/admin/v1", AdminAuth(o.AdminKeys))
	user := e.Group("/v1")
	if o.Dev != nil {
		e.GET("/dev/jwks.json", func(c echo.Context) error {
			return c.Blob(http.StatusOK, "application/jwk-set+json", []byte(o.Dev.JWKS()))
		})
		admin.POST("/dev/user-token", devUserToken(o.Dev))
	}
	if o.Mount != nil {
		o.Mount(e, admin, user)
	}
	return e
}

// metadata serves RFC 8414 authorization server metadata, advertising exactly what mandate supports.
func metadata(issuer string) echo.HandlerFunc {
	authMethods := []string{"client_secret_basic", "client_secret_post", "private_key_jwt"}
	m := map[string]any{
		"issuer":                                issuer,
		"token_endpoint":                        issuer + "/oauth2/token",
		"introspection_endpoint":                issuer + "/oauth2/introspect",
		"revocation_endpoint":                   issuer + "/oauth2/revoke",
		"jwks_uri":                              issuer + "/jwks.json",
		"grant_types_supported":                 []string{broker.GrantTypeClientCredentials, broker.GrantTypeTokenExchange},
		"response_types_supported":              []string{},
		"token_endpoint_auth_methods_supported": authMethods,
		"token_endpoint_auth_signing_alg_values_supported":         []string{"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512"},
		"introspection_endpoint_auth_methods_supported":            authMethods,
		"revocation_endpoint_auth_methods_supported":               authMethods,
		"introspection_endpoint_auth_signing_alg_values_supported": []string{"RS256", "ES256", "PS256"},
		"revocation_endpoint_auth_signing_alg_values_supported":    []string{"RS256", "ES256", "PS256"},
	}
	body, _ := json.Marshal(m)
	return func(c echo.Context) error {
		c.Response().Header().Set("Cache-Control", "public, max-age=300")
		return c.JSONBlob(http.StatusOK, body)
	}
}

// AdminAuth requires the admin key as a bearer token; without it, 401.
func AdminAuth(keys *adminkey.Store) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			h := c.Request().Header.Get(echo.HeaderAuthorization)
			tok, ok := strings.CutPrefix(h, "Bearer ")
			if !ok || keys == nil {
				c.Response().Header().Set("WWW-Authenticate", `Bearer realm="mandate-admin"`)
				return APIError(c, http.StatusUnauthorized, "unauthorized", "the admin API needs Authorization: Bearer <admin key>")
			}
			good, err := keys.Check(c.Request().Context(), strings.TrimSpace(tok))
			if err != nil {
				c.Response().Header().Set("Retry-After", "1")
				return APIError(c, http.StatusServiceUnavailable, "temporarily_unavailable", "the admin key could not be checked; retry")
			}
			if !good {
				c.Response().Header().Set("WWW-Authenticate", `Bearer realm="mandate-admin", error="invalid_token"`)
				return APIError(c, http.StatusUnauthorized, "unauthorized", "the admin key is not valid")
			}
			return next(c)
		}
	}
}

// APIError writes the JSON error shape every non-OAuth endpoint uses.
func APIError(c echo.Context, status int, code, description string) error {
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.JSON(status, map[string]string{"error": code, "error_description": description})
}

func devUserToken(dev *devissuer.Issuer) echo.HandlerFunc {
	type req struct {
		Sub        string         `json:"sub"`
		Scope      string         `json:"scope"`
		TTLSeconds int64          `json:"ttl_seconds"`
		Audience   string         `json:"audience"`
		Claims     map[string]any `json:"claims"`
	}
	return func(c echo.Context) error {
		var r req
		dec := json.NewDecoder(c.Request().Body)
		dec.DisallowUnknownFields()
		if err := dec.Decode(&r); err != nil {
			return APIError(c, http.StatusBadRequest, "invalid_request", "body must be JSON {sub, scope, ttl_seconds, audience, claims}")
		}
		tok, err := dev.Mint(devissuer.UserToken{Subject: r.Sub, Scopes: strings.Fields(r.Scope), TTL: time.Duration(r.TTLSeconds) * time.Second, Audience: r.Audience, Claims: r.Claims})
		if err != nil {
			return APIError(c, http.StatusBadRequest, "invalid_request", err.Error())
		}
		c.Response().Header().Set("Cache-Control", "no-store")
		return c.JSON(http.StatusOK, map[string]any{"access_token": tok, "token_type": "Bearer", "issuer": dev.Issuer()})
	}
}

// revocationFeed serves GET /v1/revocations?since=CURSOR&wait=SECONDS, the
// long-poll feed edges follow (see docs/edge.md). Revocation ids are not secrets.
func revocationFeed(l *ledger.Ledger) echo.HandlerFunc {
	return func(c echo.Context) error {
		wait := 0
		if w := c.QueryParam("wait"); w != "" {
			d, err := time.ParseDuration(w + "s")
			if err != nil || d < 0 || d > 30*time.Second {
				return APIError(c, http.StatusBadRequest, "invalid_request", "wait must be 0 to 30 seconds")
			}
			wait = int(d / time.Second)
		}
		since := c.QueryParam("since")
		if len(since) > 64 {
			return APIError(c, http.StatusBadRequest, "invalid_request", "since is not a cursor")
		}
		// A long poll outlives the server's write timeout; extend it for this response.
		_ = http.NewResponseController(c.Response().Writer).SetWriteDeadline(time.Now().Add(time.Duration(wait)*time.Second + 10*time.Second))
		entries, next, reset := l.Changes(c.Request().Context(), since, time.Duration(wait)*time.Second)
		if entries == nil {
			entries = []ledger.Entry{}
		}
		c.Response().Header().Set("Cache-Control", "no-store")
		return c.JSON(http.StatusOK, map[string]any{"cursor": next, "entries": entries, "reset": reset})
	}
}

func requestID(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		id := c.Request().Header.Get(echo.HeaderXRequestID)
		if id == "" || len(id) > 64 || strings.ContainsAny(id, "\r\n") {
			id = rand.Text()
		}
		c.Response().Header().Set(echo.HeaderXRequestID, id)
		return next(c)
	}
}

func accessLog(log *slog.Logger) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			start := time.Now()
			err := next(c)
			if err != nil {
				c.Error(err)
			}
			if !log.Enabled(c.Request().Context(), slog.LevelDebug) {
				return nil // the hot paths do not pay for a line nobody keeps
			}
			// Never the query string or the body: they can carry tokens.
			log.Debug("request", "method", c.Request().Method, "path", c.Request().URL.Path,
				"status", c.Response().Status, "dur_ms", float64(time.Since(start).Microseconds())/1000,
				"request_id", c.Response().Header().Get(echo.HeaderXRequestID), "ip", c.RealIP())
			return nil
		}
	}
}

// ownBodyLimit are routes that bound their bodies themselves (policy bundles
// are larger than any other request).
var ownBodyLimit = map[string]bool{"/admin/v1/policies": true, "/admin/v1/policies/simulate": true}

// longRequests are admin routes whose work (compiling and testing a bundle,
// replaying decisions) legitimately outlasts the per-request database deadline.
var longRequests = map[string]bool{
	"/admin/v1/policies": true, "/admin/v1/policies/simulate": true,
	"/admin/v1/policies/:version/activate": true, "/admin/v1/policies/rollback": true,
}

func bodyLimit(n int64) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if ownBodyLimit[c.Path()] {
				return next(c)
			}
			r := c.Request()
			if r.ContentLength > n {
				return APIError(c, http.StatusRequestEntityTooLarge, "invalid_request", "request body is too large")
			}
			r.Body = http.MaxBytesReader(c.Response(), r.Body, n)
			return next(c)
		}
	}
}

func inFlightLimit(n int) echo.MiddlewareFunc {
	var cur atomic.Int64
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			switch c.Request().URL.Path {
			case "/v1/revocations", "/healthz", "/readyz", "/metrics":
				// Long polls from edges and probes must not eat the budget of the
				// token endpoint, nor be shed when it is busy.
				return next(c)
			}
			if cur.Add(1) > int64(n) {
				cur.Add(-1)
				c.Response().Header().Set("Retry-After", "1")
				return APIError(c, http.StatusServiceUnavailable, "temporarily_unavailable", "the server is at capacity; retry shortly")
			}
			defer cur.Add(-1)
			return next(c)
		}
	}
}

func recoverMiddleware(log *slog.Logger) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) (err error) {
			defer func() {
				if r := recover(); r != nil {
					log.Error("panic serving request", "path", c.Request().URL.Path, "panic", r)
					err = APIError(c, http.StatusInternalServerError, "server_error", "the server could not complete the request")
				}
			}()
			return next(c)
		}
	}
}

func errorHandler(log *slog.Logger) echo.HTTPErrorHandler {
	return func(err error, c echo.Context) {
		if c.Response().Committed {
			return
		}
		var he *echo.HTTPError
		if errors.As(err, &he) {
			code := "invalid_request"
			switch he.Code {
			case http.StatusNotFound:
				code = "not_found"
			case http.StatusMethodNotAllowed:
				code = "method_not_allowed"
			case http.StatusUnauthorized:
				code = "unauthorized"
			case http.StatusRequestEntityTooLarge:
				code = "invalid_request"
			}
			if he.Code >= 500 {
				log.Error("request failed", "err", err)
				code = "server_error"
			}
			msg, _ := he.Message.(string)
			if msg == "" {
				msg = http.StatusText(he.Code)
			}
			_ = APIError(c, he.Code, code, msg)
			return
		}
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			_ = APIError(c, http.StatusRequestEntityTooLarge, "invalid_request", "request body is too large")
			return
		}
		log.Error("request failed", "path", c.Request().URL.Path, "err", err)
		_ = APIError(c, http.StatusInternalServerError, "server_error", "the server could not complete the request")
	}
}

// requestTimeout puts a deadline on each request's context, which every
// database call honours.
func requestTimeout(d time.Duration) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			switch c.Request().URL.Path {
			case "/v1/revocations", "/readyz", "/validate":
				// The feed and probes bound themselves; /validate never touches the
				// database, so its hot path skips the timer.
				return next(c)
			}
			if longRequests[c.Path()] {
				return next(c)
			}
			ctx, cancel := context.WithTimeout(c.Request().Context(), d)
			defer cancel()
			c.SetRequest(c.Request().WithContext(ctx))
			return next(c)
		}
	}
}
