package edge

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
)

// httpCase is one request to a protected endpoint and the answer it must get.
type httpCase struct {
	name       string
	auth       func(ti *testIssuer, now time.Time) string // the Authorization header; "" for none
	stale      bool                                       // let the revocation feed go stale
	wantStatus int
	wantChall  string // WWW-Authenticate, exactly
}

func bearer(edit func(h, c map[string]any)) func(*testIssuer, time.Time) string {
	return func(ti *testIssuer, now time.Time) string { return "Bearer " + ti.token(ti.es, now, edit) }
}

func httpCases() []httpCase {
	const invalid = `Bearer realm="test", error="invalid_token", error_description=`
	return []httpCase{
		{name: "valid", auth: bearer(nil), wantStatus: http.StatusOK},
		{name: "lower-case scheme", auth: func(ti *testIssuer, now time.Time) string { return "bearer " + ti.token(ti.es, now, nil) },
			wantStatus: http.StatusOK},
		{name: "no token", auth: func(*testIssuer, time.Time) string { return "" },
			wantStatus: http.StatusUnauthorized, wantChall: `Bearer realm="test", scope="files:read"`},
		{name: "basic auth", auth: func(*testIssuer, time.Time) string { return "Basic dXNlcjpwYXNz" },
			wantStatus: http.StatusUnauthorized, wantChall: `Bearer realm="test", scope="files:read"`},
		{name: "empty bearer", auth: func(*testIssuer, time.Time) string { return "Bearer " },
			wantStatus: http.StatusUnauthorized, wantChall: invalid + `"The access token is malformed", scope="files:read"`},
		{name: "garbage", auth: func(*testIssuer, time.Time) string { return "Bearer a.b.c" },
			wantStatus: http.StatusUnauthorized, wantChall: invalid + `"The access token is malformed", scope="files:read"`},
		{name: "expired", auth: bearer(func(_, c map[string]any) { c["exp"] = testStart.Add(-time.Hour).Unix() }),
			wantStatus: http.StatusUnauthorized, wantChall: invalid + `"The access token expired", scope="files:read"`},
		{name: "wrong audience", auth: bearer(func(_, c map[string]any) { c["aud"] = "https://other.example.com" }),
			wantStatus: http.StatusUnauthorized, wantChall: invalid + `"The access token is not intended for this resource", scope="files:read"`},
		{name: "revoked", auth: bearer(func(_, c map[string]any) { c["jti"] = "jti-revoked" }),
			wantStatus: http.StatusUnauthorized, wantChall: invalid + `"The access token has been revoked", scope="files:read"`},
		{name: "insufficient scope", auth: bearer(func(_, c map[string]any) { c["scope"] = "mail:read" }),
			wantStatus: http.StatusForbidden,
			wantChall:  `Bearer realm="test", error="insufficient_scope", error_description="The request requires higher privileges than provided by the access token", scope="files:read"`},
		{name: "stale revocations", auth: bearer(nil), stale: true, wantStatus: http.StatusServiceUnavailable},
	}
}

// staleSwitch is a FeedStatus the test can make stale.
type staleSwitch struct {
	clock *fakeClock
	stale bool
}

func (s *staleSwitch) LastSync() time.Time {
	if s.stale {
		return s.clock.Now().Add(-time.Hour)
	}
	return s.clock.Now()
}

// httpValidator returns a validator whose revocation feed the test controls, with jti-revoked
// revoked.
func httpValidator(t *testing.T, ti *testIssuer, clock *fakeClock, stale bool) *Validator {
	t.Helper()
	set := NewRevocationSet()
	if err := set.Add(KindToken, "jti-revoked", time.Time{}); err != nil {
		t.Fatal(err)
	}
	v, _ := newValidator(t, ti, clock, func(c *Config) {
		c.NoRevocationFeed = false
		c.Revocations = set
		c.Feed = &staleSwitch{clock: clock, stale: stale}
	})
	return v
}

func checkDenial(t *testing.T, tc httpCase, rec *httptest.ResponseRecorder) {
	t.Helper()
	if got := rec.Code; got != tc.wantStatus {
		t.Fatalf("status: got %d, want %d (body %q)", got, tc.wantStatus, rec.Body.String())
	}
	if got := rec.Header().Get("WWW-Authenticate"); got != tc.wantChall {
		t.Errorf("WWW-Authenticate:\n got %s\nwant %s", got, tc.wantChall)
	}
	if tc.wantStatus == http.StatusServiceUnavailable {
		if got, want := rec.Header().Get("Retry-After"), "1"; got != want {
			t.Errorf("Retry-After: got %q, want %q", got, want)
		}
	}
	if tc.wantStatus != http.StatusOK {
		if got, want := rec.Header().Get("Cache-Control"), "no-store"; got != want {
			t.Errorf("Cache-Control: got %q, want %q", got, want)
		}
	}
}

func TestMiddleware(t *testing.T) {
	ti := newTestIssuer(t)
	for _, tc := range httpCases() {
		t.Run(tc.name, func(t *testing.T) {
			clock := newClock()
			v := httpValidator(t, ti, clock, tc.stale)
			var seen *Identity
			h := v.Middleware(Requirements{Scopes: []string{"files:read"}})(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				seen, _ = FromContext(r.Context())
				w.WriteHeader(http.StatusOK)
			}))
			req := httptest.NewRequest(http.MethodGet, "/files", nil)
			if a := tc.auth(ti, clock.Now()); a != "" {
				req.Header.Set("Authorization", a)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			checkDenial(t, tc, rec)
			if got, want := seen != nil, tc.wantStatus == http.StatusOK; got != want {
				t.Errorf("handler saw an identity: got %v, want %v", got, want)
			}
			if seen != nil && seen.Subject != "user-1" {
				t.Errorf("identity subject: got %q, want %q", seen.Subject, "user-1")
			}
		})
	}
}

func TestEchoMiddleware(t *testing.T) {
	ti := newTestIssuer(t)
	for _, tc := range httpCases() {
		t.Run(tc.name, func(t *testing.T) {
			clock := newClock()
			v := httpValidator(t, ti, clock, tc.stale)
			e := echo.New()
			var seen *Identity
			e.GET("/files", func(c echo.Context) error {
				seen, _ = FromContext(c.Request().Context())
				return c.NoContent(http.StatusOK)
			}, v.EchoMiddleware(Requirements{Scopes: []string{"files:read"}}))
			req := httptest.NewRequest(http.MethodGet, "/files", nil)
			if a := tc.auth(ti, clock.Now()); a != "" {
				req.Header.Set("Authorization", a)
			}
			rec := httptest.NewRecorder()
			e.ServeHTTP(rec, req)
			checkDenial(t, tc, rec)
			if got, want := seen != nil, tc.wantStatus == http.StatusOK; got != want {
				t.Errorf("handler saw an identity: got %v, want %v", got, want)
			}
		})
	}
}

func TestForwardAuth(t *testing.T) {
	ti := newTestIssuer(t)
	// Forward-auth validators front many routes: the audience comes per route.
	newFA := func(t *testing.T, clock *fakeClock, stale bool) http.Handler {
		set := NewRevocationSet()
		_ = set.Add(KindToken, "jti-revoked", time.Time{})
		v, _ := newValidator(t, ti, clock, func(c *Config) {
			c.Audience, c.AnyAudience = "", true
			c.NoRevocationFeed, c.Revocations, c.Feed = false, set, &staleSwitch{clock: clock, stale: stale}
		})
		return v.ForwardAuthHandler()
	}
	for _, tc := range []struct {
		name       string
		method     string
		query      url.Values
		header     http.Header
		edit       func(h, c map[string]any)
		noToken    bool
		stale      bool
		wantStatus int
		wantChall  string
	}{
		{name: "no requirements", wantStatus: http.StatusOK},
		{name: "POST forwarded as is", method: http.MethodPost, wantStatus: http.StatusOK},
		{name: "query requirements met", query: url.Values{"aud": {testAudience}, "scope": {"files:read mail:read"}}, wantStatus: http.StatusOK},
		{name: "header requirements met", header: http.Header{HeaderAudience: {testAudience}, HeaderScope: {"files:read"}}, wantStatus: http.StatusOK},
		{name: "query audience not met", query: url.Values{"aud": {"https://mail.example.com"}}, wantStatus: http.StatusUnauthorized,
			wantChall: `Bearer realm="test", error="invalid_token", error_description="The access token is not intended for this resource"`},
		{name: "header audience not met although query audience is", query: url.Values{"aud": {testAudience}},
			header: http.Header{HeaderAudience: {"https://mail.example.com"}}, wantStatus: http.StatusUnauthorized,
			wantChall: `Bearer realm="test", error="invalid_token", error_description="The access token is not intended for this resource"`},
		{name: "query scope not met", query: url.Values{"scope": {"files:read files:write"}}, wantStatus: http.StatusForbidden,
			wantChall: `Bearer realm="test", error="insufficient_scope", error_description="The request requires higher privileges than provided by the access token", scope="files:read files:write"`},
		{name: "header scope adds to query scope", query: url.Values{"scope": {"files:read"}}, header: http.Header{HeaderScope: {"admin"}},
			wantStatus: http.StatusForbidden,
			wantChall:  `Bearer realm="test", error="insufficient_scope", error_description="The request requires higher privileges than provided by the access token", scope="files:read admin"`},
		{name: "no token", noToken: true, wantStatus: http.StatusUnauthorized, wantChall: `Bearer realm="test"`},
		{name: "revoked", edit: func(_, c map[string]any) { c["jti"] = "jti-revoked" }, wantStatus: http.StatusUnauthorized,
			wantChall: `Bearer realm="test", error="invalid_token", error_description="The access token has been revoked"`},
		{name: "stale", stale: true, wantStatus: http.StatusServiceUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := newClock()
			h := newFA(t, clock, tc.stale)
			method := tc.method
			if method == "" {
				method = http.MethodGet
			}
			req := httptest.NewRequest(method, "/validate?"+tc.query.Encode(), nil)
			for k, vs := range tc.header {
				req.Header[k] = vs
			}
			if !tc.noToken {
				req.Header.Set("Authorization", "Bearer "+ti.token(ti.es, clock.Now(), tc.edit))
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if got := rec.Code; got != tc.wantStatus {
				t.Fatalf("status: got %d, want %d", got, tc.wantStatus)
			}
			if got := rec.Header().Get("WWW-Authenticate"); got != tc.wantChall {
				t.Errorf("WWW-Authenticate:\n got %s\nwant %s", got, tc.wantChall)
			}
			if tc.wantStatus != http.StatusOK {
				if got := rec.Header().Get(HeaderSubject); got != "" {
					t.Errorf("%s on a denial: got %q, want none", HeaderSubject, got)
				}
				return
			}
			for name, want := range map[string]string{
				HeaderSubject:       "user-1",
				HeaderSubjectIssuer: "https://idp.example.com",
				HeaderClientID:      "agent-b",
				HeaderScope:         "files:read mail:read",
				HeaderActor:         "agent-b,agent-a",
				HeaderGrantID:       "grant-1",
			} {
				if got := rec.Header().Get(name); got != want {
					t.Errorf("%s: got %q, want %q", name, got, want)
				}
			}
			if got := rec.Header().Get(HeaderTokenID); !strings.HasPrefix(got, "jti-") {
				t.Errorf("%s: got %q, want a jti", HeaderTokenID, got)
			}
		})
	}
}

// TestForwardAuthEmptyHeadersPresent: a client token without act still yields every identity
// header, empty, so that a proxy copying them overwrites client-supplied values.
func TestForwardAuthEmptyHeadersPresent(t *testing.T) {
	ti := newTestIssuer(t)
	clock := newClock()
	v, _ := newValidator(t, ti, clock, nil)
	req := httptest.NewRequest(http.MethodGet, "/validate", nil)
	req.Header.Set("Authorization", "Bearer "+ti.token(ti.es, clock.Now(), func(_, c map[string]any) {
		delete(c, "act")
		delete(c, "sub_iss")
		delete(c, "grant_id")
	}))
	rec := httptest.NewRecorder()
	v.ForwardAuthHandler().ServeHTTP(rec, req)
	if got, want := rec.Code, http.StatusOK; got != want {
		t.Fatalf("status: got %d, want %d", got, want)
	}
	for _, name := range []string{HeaderActor, HeaderSubjectIssuer, HeaderGrantID} {
		if vals, ok := rec.Header()[name]; !ok || len(vals) != 1 || vals[0] != "" {
			t.Errorf("%s: got %q (present %v), want present and empty", name, vals, ok)
		}
	}
}

// TestForwardAuthOverHTTP drives the handler through a real server, as a proxy would.
func TestForwardAuthOverHTTP(t *testing.T) {
	ti := newTestIssuer(t)
	clock := newClock()
	v, _ := newValidator(t, ti, clock, nil)
	srv := httptest.NewServer(v.ForwardAuthHandler())
	defer srv.Close()
	for _, tc := range []struct {
		auth string
		want int
	}{
		{"Bearer " + ti.token(ti.ed, clock.Now(), nil), http.StatusOK},
		{"Bearer " + strings.Repeat("A", 20<<10), http.StatusUnauthorized},
		{"Bearer \x01\x02", http.StatusUnauthorized},
	} {
		req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, srv.URL+"/validate?scope=files:read", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header["Authorization"] = []string{tc.auth}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			// The client refuses to send control characters; that is not the handler's case.
			continue
		}
		resp.Body.Close()
		if got := resp.StatusCode; got != tc.want {
			t.Errorf("status: got %d, want %d", got, tc.want)
		}
	}
}

func TestBearerToken(t *testing.T) {
	for _, tc := range []struct {
		headers []string
		want    string
		wantErr error
	}{
		{nil, "", ErrNoToken},
		{[]string{"Bearer abc"}, "abc", nil},
		{[]string{"BEARER   abc"}, "abc", nil},
		{[]string{"  Bearer abc  "}, "abc", nil},
		{[]string{"Basic abc"}, "", ErrNoToken},
		{[]string{"Bearer"}, "", ErrMalformed},
		{[]string{"Bearer a b"}, "", ErrMalformed},
		{[]string{"Bearer a,b"}, "", ErrMalformed},
		{[]string{"Bearer a", "Bearer b"}, "", ErrMalformed},
	} {
		t.Run(fmt.Sprint(tc.headers), func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.Header["Authorization"] = tc.headers
			got, err := BearerToken(r)
			if got != tc.want || !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Errorf("got (%q, %v), want (%q, %v)", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestHTTPStatusAndChallenge(t *testing.T) {
	for _, tc := range []struct {
		err        error
		realm      string
		scopes     []string
		wantStatus int
		wantChall  string
	}{
		{nil, "", nil, 200, "Bearer"},
		{newError(ErrNoToken, ""), "api", nil, 401, `Bearer realm="api"`},
		{newError(ErrExpired, "x"), "", nil, 401, `Bearer error="invalid_token", error_description="The access token expired"`},
		{newError(ErrSignature, ""), `a"b\c`, nil, 401, `Bearer realm="abc", error="invalid_token", error_description="The access token signature is invalid"`},
		{newError(ErrInsufficientScope, ""), "api", []string{"a", `b"`, ""}, 403,
			`Bearer realm="api", error="insufficient_scope", error_description="The request requires higher privileges than provided by the access token", scope="a b"`},
		{newError(ErrRevocationStale, ""), "", nil, 503, `Bearer error="invalid_token", error_description="The revocation status of the access token cannot be checked"`},
		{context.Canceled, "", nil, 401, `Bearer error="invalid_token", error_description="The access token is invalid"`},
	} {
		if got := HTTPStatus(tc.err); got != tc.wantStatus {
			t.Errorf("HTTPStatus(%v): got %d, want %d", tc.err, got, tc.wantStatus)
		}
		if got := WWWAuthenticate(tc.err, tc.realm, tc.scopes); got != tc.wantChall {
			t.Errorf("WWWAuthenticate(%v):\n got %s\nwant %s", tc.err, got, tc.wantChall)
		}
	}
}

func TestErrorWrapping(t *testing.T) {
	cause := errors.New("dial tcp: refused")
	err := wrapError(ErrUnknownKey, `kid "k"`, cause)
	if !errors.Is(err, ErrUnknownKey) || !errors.Is(err, cause) {
		t.Errorf("errors.Is: got false, want true for both the sentinel and the cause")
	}
	var e *Error
	if !errors.As(err, &e) || e.Kind != ErrUnknownKey {
		t.Errorf("errors.As: got %v, want *Error of kind %v", e, ErrUnknownKey)
	}
	if got, want := err.Error(), `edge: unknown signing key: kid "k": dial tcp: refused`; got != want {
		t.Errorf("Error(): got %q, want %q", got, want)
	}
}
