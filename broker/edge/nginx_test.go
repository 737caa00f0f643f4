package edge

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestNginxAuthRequest runs the nginx configuration published in docs/edge.md against the
// forward-auth handler, so that the documented snippet is known to work. It needs an nginx
// binary with the auth_request module (Debian: nginx-light) and skips without one.
func TestNginxAuthRequest(t *testing.T) {
	if testing.Short() {
		t.Skip("starts nginx")
	}
	bin, err := exec.LookPath("nginx")
	if err != nil {
		t.Skip("nginx not installed")
	}
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "edge.md"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)```nginx\n(.*?)```").FindSubmatch(doc)
	if m == nil {
		t.Fatal("docs/edge.md has no nginx block")
	}

	ti := newTestIssuer(t)
	clock := newClock()
	var stale atomic.Bool
	v, _ := newValidator(t, ti, clock, func(c *Config) {
		c.Audience, c.AnyAudience = "", true
		c.NoRevocationFeed, c.Revocations = false, NewRevocationSet()
		c.Feed = feedFunc(func() time.Time {
			if stale.Load() {
				return clock.Now().Add(-time.Hour)
			}
			return clock.Now()
		})
	})
	mandate := httptest.NewServer(v.ForwardAuthHandler())
	defer mandate.Close()
	// The upstream echoes the identity headers it receives.
	files := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, h := range []string{HeaderSubject, HeaderClientID, HeaderScope, HeaderActor, HeaderGrantID} {
			w.Header().Set("Echo-"+h, r.Header.Get(h))
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer files.Close()

	port := freePort(t)
	dir := t.TempDir()
	conf := string(m[1])
	conf = strings.ReplaceAll(conf, "mandate.internal:8080", strings.TrimPrefix(mandate.URL, "http://"))
	conf = strings.ReplaceAll(conf, "files.internal:8080", strings.TrimPrefix(files.URL, "http://"))
	conf = strings.ReplaceAll(conf, "listen 443 ssl;", fmt.Sprintf("listen 127.0.0.1:%d;", port))
	full := fmt.Sprintf(`daemon off;
master_process off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log info;
events {}
http {
    access_log off;
    client_body_temp_path %[1]s/body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
%[2]s
}
`, dir, conf)
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(full), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-p", dir, "-c", filepath.Join(dir, "nginx.conf"))
	if out, err := exec.Command(bin, "-t", "-p", dir, "-c", filepath.Join(dir, "nginx.conf")).CombinedOutput(); err != nil {
		t.Fatalf("nginx -t: %v\n%s", err, out)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = cmd.Wait() }()
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	waitFor(t, "nginx to listen", func() bool {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Close()
		}
		return err == nil
	})

	for _, tc := range []struct {
		name       string
		auth       string
		spoof      http.Header
		stale      bool
		wantStatus int
		wantHeader map[string]string
	}{
		{name: "valid", auth: "Bearer " + ti.token(ti.es, clock.Now(), nil),
			spoof:      http.Header{HeaderSubject: {"admin"}, HeaderGrantID: {"forged"}},
			wantStatus: http.StatusOK,
			wantHeader: map[string]string{"Echo-" + HeaderSubject: "user-1", "Echo-" + HeaderActor: "agent-b,agent-a", "Echo-" + HeaderGrantID: "grant-1"}},
		{name: "client token: spoofed headers dropped", auth: "Bearer " + ti.token(ti.es, clock.Now(), func(_, c map[string]any) {
			delete(c, "act")
			delete(c, "grant_id")
		}),
			spoof:      http.Header{HeaderActor: {"agent-z"}, HeaderGrantID: {"forged"}},
			wantStatus: http.StatusOK,
			wantHeader: map[string]string{"Echo-" + HeaderActor: "", "Echo-" + HeaderGrantID: ""}},
		{name: "no token", wantStatus: http.StatusUnauthorized,
			wantHeader: map[string]string{"WWW-Authenticate": `Bearer realm="test", scope="files:read"`}},
		{name: "expired", auth: "Bearer " + ti.token(ti.es, clock.Now(), func(_, c map[string]any) { c["exp"] = testStart.Add(-time.Hour).Unix() }),
			wantStatus: http.StatusUnauthorized,
			wantHeader: map[string]string{"WWW-Authenticate": `Bearer realm="test", error="invalid_token", error_description="The access token expired", scope="files:read"`}},
		{name: "insufficient scope, requirement headers from the client ignored",
			auth:       "Bearer " + ti.token(ti.es, clock.Now(), func(_, c map[string]any) { c["scope"] = "mail:read" }),
			spoof:      http.Header{HeaderScope: {"mail:read"}},
			wantStatus: http.StatusForbidden,
			wantHeader: map[string]string{"WWW-Authenticate": `Bearer realm="test", error="insufficient_scope", error_description="The request requires higher privileges than provided by the access token", scope="files:read"`}},
		{name: "wrong audience", auth: "Bearer " + ti.token(ti.es, clock.Now(), func(_, c map[string]any) { c["aud"] = testAudience }),
			wantStatus: http.StatusUnauthorized},
		{name: "stale revocations", auth: "Bearer " + ti.token(ti.es, clock.Now(), nil), stale: true,
			wantStatus: http.StatusServiceUnavailable, wantHeader: map[string]string{"Retry-After": "1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stale.Store(tc.stale)
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/files/report.pdf", nil)
			if err != nil {
				t.Fatal(err)
			}
			for k, vs := range tc.spoof {
				req.Header[k] = vs
			}
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if got := resp.StatusCode; got != tc.wantStatus {
				t.Fatalf("status: got %d, want %d", got, tc.wantStatus)
			}
			for k, want := range tc.wantHeader {
				if got := resp.Header.Get(k); got != want {
					t.Errorf("%s: got %q, want %q", k, got, want)
				}
			}
		})
	}
}

// feedFunc adapts a function to FeedStatus.
type feedFunc func() time.Time

func (f feedFunc) LastSync() time.Time { return f() }

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
