package server

import (
	"errors"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/mandate-dev/mandate/broker/keys"
)

// RegisterKeyAdmin mounts GET /keys and POST /keys/rotate on the admin group.
func RegisterKeyAdmin(g *echo.Group, m *keys.Manager) {
	g.GET("/keys", func(c echo.Context) error {
		list, err := m.List(c.Request().Context())
		if err != nil {
			return unavailable(c, err)
		}
		out := make([]map[string]any, 0, len(list))
		for _, k := range list {
			out = append(out, map[string]any{
				"kid": k.KID, "alg": k.Alg, "state": string(k.State), "published": k.Published,
				"created_at": rfc3339(k.CreatedAt), "activated_at": rfc3339(k.ActivatedAt),
				"retired_at": rfc3339(k.RetiredAt), "expires_at": rfc3339(k.ExpiresAt),
			})
		}
		return c.JSON(http.StatusOK, map[string]any{"keys": out})
	})
	g.POST("/keys/rotate", func(c echo.Context) error {
		ctx := c.Request().Context()
		var err error
		if c.QueryParam("now") == "true" {
			err = m.RotateNow(ctx)
		} else {
			err = m.Rotate(ctx)
		}
		if errors.Is(err, keys.ErrRotationInProgress) {
			return APIError(c, http.StatusConflict, "conflict", "another node is rotating keys right now; retry")
		}
		if err != nil {
			return unavailable(c, err)
		}
		status := "rotated"
		for _, k := range mustList(c, m) {
			if k.State == keys.StateNext {
				status = "next key " + k.KID + " published; run rotate again to promote it"
			}
		}
		return c.JSON(http.StatusOK, map[string]any{"status": status, "active_kid": m.Active().KID})
	})
}

func mustList(c echo.Context, m *keys.Manager) []keys.KeyInfo {
	l, _ := m.List(c.Request().Context())
	return l
}

func rfc3339(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

func unavailable(c echo.Context, err error) error {
	c.Logger().Error(err)
	c.Response().Header().Set("Retry-After", "1")
	return APIError(c, http.StatusServiceUnavailable, "temporarily_unavailable", "the store is unavailable; retry")
}
