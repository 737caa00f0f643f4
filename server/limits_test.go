package server

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/labstack/echo/v4"
)

// TestInFlightLimitSheds: past the limit a request is answered at once with 503
// and Retry-After, while probes and the revocation feed are never shed.
func TestInFlightLimitSheds(t *testing.T) {
	e := echo.New()
	e.Use(inFlightLimit(1))
	release := make(chan struct{})
	entered := make(chan struct{})
	e.GET("/slow", func(c echo.Context) error {
		close(entered)
		<-release
		return c.NoContent(http.StatusOK)
	})
	e.GET("/healthz", func(c echo.Context) error { return c.NoContent(http.StatusOK) })
	done := make(chan int)
	go func() {
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, httptest.NewRequest("GET", "/slow", nil))
		done <- rec.Code
	}()
	<-entered
	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, httptest.NewRequest("GET", "/slow", nil))
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("over the limit: got %d Retry-After=%q, want 503 with Retry-After", rec.Code, rec.Header().Get("Retry-After"))
	}
	rec = httptest.NewRecorder()
	e.ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("probe shed: got %d", rec.Code)
	}
	close(release)
	if code := <-done; code != http.StatusOK {
		t.Fatalf("first request: got %d", code)
	}
}

// TestClientRateLimit: a client over its rate gets 429 with Retry-After; another client is unaffected.
func TestClientRateLimit(t *testing.T) {
	e := echo.New()
	e.POST("/oauth2/token", func(c echo.Context) error { return c.NoContent(http.StatusOK) }, clientRateLimit(1, 2))
	call := func(id string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("POST", "/oauth2/token", nil)
		req.SetBasicAuth(id, "x")
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, req)
		return rec
	}
	for i := 0; i < 2; i++ {
		if rec := call("a"); rec.Code != http.StatusOK {
			t.Fatalf("within burst: got %d", rec.Code)
		}
	}
	rec := call("a")
	if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("over the rate: got %d Retry-After=%q, want 429", rec.Code, rec.Header().Get("Retry-After"))
	}
	if rec := call("b"); rec.Code != http.StatusOK {
		t.Fatalf("another client: got %d", rec.Code)
	}
}
