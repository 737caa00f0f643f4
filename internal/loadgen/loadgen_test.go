package loadgen

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// testServer answers /ok with 200 and a token-like body, /bad with an OAuth
// error, /challenge with a bare RFC 6750 challenge and /hangup by closing the
// connection.
func testServer(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"access_token":"secret-token-value","token_type":"Bearer"}`))
		case "/bad":
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"error":"invalid_grant","error_description":"no active grant"}`))
		case "/challenge":
			w.Header().Set("WWW-Authenticate", `Bearer realm="x", error="invalid_token"`)
			w.WriteHeader(http.StatusUnauthorized)
		case "/hangup":
			c, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				_ = c.Close()
			}
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func get(srv *httptest.Server, path string) Target {
	return Target{Method: http.MethodGet, URL: srv.URL + path}
}

// consistent checks the invariants every report keeps, whatever the timing.
func consistent(t *testing.T, r *Report) {
	t.Helper()
	if r.Requests != r.Successes+r.Errors {
		t.Errorf("requests %d != successes %d + errors %d", r.Requests, r.Successes, r.Errors)
	}
	var byStatus, byError uint64
	for _, n := range r.StatusCodes {
		byStatus += n
	}
	if byStatus != r.Requests {
		t.Errorf("status histogram sums to %d, want %d", byStatus, r.Requests)
	}
	for _, e := range r.TopErrors {
		byError += e.Count
	}
	if r.DistinctErrors <= topErrors && byError != r.Errors {
		t.Errorf("top errors sum to %d, want %d", byError, r.Errors)
	}
	if r.Requests > 0 && (r.Latency.P50 > r.Latency.P90 || r.Latency.P90 > r.Latency.P99 || r.Latency.P99 > r.Latency.Max) {
		t.Errorf("percentiles out of order: %+v", r.Latency)
	}
}

func TestClosedLoopCounts(t *testing.T) {
	srv := testServer(t)
	rep, err := Run(context.Background(), "mixed", []Target{get(srv, "/ok"), get(srv, "/bad")},
		Options{Concurrency: 4, Duration: 300 * time.Millisecond, Warmup: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	consistent(t, rep)
	if rep.Requests == 0 || rep.Successes == 0 || rep.Errors == 0 {
		t.Fatalf("got %d requests, %d successes, %d errors; want some of each", rep.Requests, rep.Successes, rep.Errors)
	}
	if got, want := rep.StatusCodes["200"]+rep.StatusCodes["400"], rep.Requests; got != want {
		t.Errorf("200s and 400s: got %d, want %d", got, want)
	}
	if len(rep.TopErrors) != 1 {
		t.Fatalf("top errors: got %+v, want one", rep.TopErrors)
	}
	e := rep.TopErrors[0]
	if e.Status != 400 || e.Error != "invalid_grant" || e.Description != "no active grant" || e.Count != rep.Errors {
		t.Errorf("top error: got %+v", e)
	}
	if rep.Mode != "closed" || rep.Concurrency != 4 {
		t.Errorf("shape: got %s/%d", rep.Mode, rep.Concurrency)
	}
	if !strings.HasPrefix(rep.Line(), "mixed: ") || !strings.Contains(rep.Line(), "errors ") {
		t.Errorf("line: %q", rep.Line())
	}
	var b strings.Builder
	if err := rep.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "secret-token-value") {
		t.Error("the text report carries a response body")
	}
}

func TestMaxRequestsEndsTheRun(t *testing.T) {
	srv := testServer(t)
	rep, err := Run(context.Background(), "capped", []Target{get(srv, "/ok")},
		Options{Concurrency: 3, Duration: time.Minute, MaxRequests: 50})
	if err != nil {
		t.Fatal(err)
	}
	consistent(t, rep)
	if rep.Requests != 50 || !rep.HitMaxRequests || rep.Errors != 0 {
		t.Fatalf("got %d requests (cap hit %v, %d errors), want exactly 50 and no error", rep.Requests, rep.HitMaxRequests, rep.Errors)
	}
}

func TestOpenLoop(t *testing.T) {
	srv := testServer(t)
	rep, err := Run(context.Background(), "open", []Target{get(srv, "/ok")},
		Options{Concurrency: 2, Rate: 100, Duration: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	consistent(t, rep)
	if rep.Mode != "open" || rep.TargetRate != 100 || rep.Requests == 0 || rep.Errors != 0 {
		t.Fatalf("got %+v", rep)
	}
}

func TestErrorClassification(t *testing.T) {
	srv := testServer(t)
	for _, tc := range []struct {
		path   string
		status int
		code   string
	}{
		{"/challenge", 401, "invalid_token"},
		{"/nowhere", 404, "Not Found"},
		{"/hangup", 0, ""},
	} {
		t.Run(tc.path, func(t *testing.T) {
			rep, err := Run(context.Background(), "e", []Target{get(srv, tc.path)},
				Options{Concurrency: 1, Duration: time.Minute, MaxRequests: 5})
			if err != nil {
				t.Fatal(err)
			}
			consistent(t, rep)
			if rep.Errors != 5 || len(rep.TopErrors) == 0 {
				t.Fatalf("got %d errors %+v, want 5", rep.Errors, rep.TopErrors)
			}
			e := rep.TopErrors[0]
			if e.Status != tc.status {
				t.Errorf("status: got %d, want %d", e.Status, tc.status)
			}
			if tc.code != "" && e.Error != tc.code {
				t.Errorf("error: got %q, want %q", e.Error, tc.code)
			}
			if tc.status == 0 && (e.Error == "" || strings.Contains(e.Error, srv.URL)) {
				t.Errorf("transport error: got %q, want the cause without the URL", e.Error)
			}
		})
	}
}

func TestCancelReportsWhatRan(t *testing.T) {
	srv := testServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	rep, err := Run(ctx, "cut", []Target{get(srv, "/ok")}, Options{Concurrency: 2, Duration: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	consistent(t, rep)
	if !rep.Interrupted || rep.Requests == 0 {
		t.Fatalf("got interrupted=%v after %d requests", rep.Interrupted, rep.Requests)
	}
}

func TestOptionsAreChecked(t *testing.T) {
	srv := testServer(t)
	ok := []Target{get(srv, "/ok")}
	for _, o := range []Options{
		{Concurrency: 0, Duration: time.Second},
		{Concurrency: MaxConcurrency + 1, Duration: time.Second},
		{Concurrency: 1},
		{Concurrency: 1, Duration: 2 * MaxDuration},
		{Concurrency: 1, Duration: time.Second, Rate: -1},
		{Concurrency: 1, Duration: time.Second, Warmup: -time.Second},
	} {
		if _, err := Run(context.Background(), "x", ok, o); err == nil {
			t.Errorf("%+v: got no error", o)
		}
	}
	if _, err := Run(context.Background(), "x", nil, Options{Concurrency: 1, Duration: time.Second}); err == nil {
		t.Error("no targets: got no error")
	}
}

func TestCheckTarget(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		url         string
		allowRemote bool
		ok          bool
	}{
		{"http://127.0.0.1:8080/oauth2/token", false, true},
		{"http://127.1.2.3:8080/", false, true},
		{"http://[::1]:8080/", false, true},
		{"http://localhost:8080/", false, true},
		{"http://192.0.2.10/", false, false},
		{"http://10.0.0.1/", false, false},
		{"http://192.0.2.10/", true, true},
		{"ftp://127.0.0.1/", false, false},
		{"http:///nohost", false, false},
		{"::not a url", false, false},
	} {
		err := CheckTarget(ctx, tc.url, tc.allowRemote)
		if (err == nil) != tc.ok {
			t.Errorf("CheckTarget(%q, %v): got %v, want ok=%v", tc.url, tc.allowRemote, err, tc.ok)
		}
	}
	if _, err := Run(ctx, "x", []Target{{Method: "GET", URL: "http://192.0.2.10/"}}, Options{Concurrency: 1, Duration: time.Second}); err == nil {
		t.Error("Run with a remote target: got no error")
	}
}

// The dial guard refuses by address after resolution (it never connects).
func TestLoopbackDialGuard(t *testing.T) {
	for addr, ok := range map[string]bool{
		"127.0.0.1:80": true, "[::1]:443": true, "192.0.2.10:80": false, "[2001:db8::1]:80": false, "nonsense": false,
	} {
		if err := loopbackOnly("tcp", addr, nil); (err == nil) != ok {
			t.Errorf("loopbackOnly(%q): got %v, want ok=%v", addr, err, ok)
		}
	}
}

func TestPercentileAndFormat(t *testing.T) {
	d := []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for p, want := range map[float64]time.Duration{0.5: 5, 0.9: 9, 0.99: 10, 0.01: 1} {
		if got := percentile(d, p); got != want {
			t.Errorf("percentile(%v): got %d, want %d", p, got, want)
		}
	}
	for v, want := range map[float64]string{0.456: "0.46ms", 3.14: "3.1ms", 41.4: "41ms"} {
		if got := fmtMs(v); got != want {
			t.Errorf("fmtMs(%v): got %q, want %q", v, got, want)
		}
	}
	if got := trimURLError(`Post "http://127.0.0.1:1/oauth2/token": dial tcp 127.0.0.1:1: connect: connection refused`); got != "dial tcp 127.0.0.1:1: connect: connection refused" {
		t.Errorf("trimURLError: got %q", got)
	}
	if got := shorten("a\nb", 10); got != "a b" {
		t.Errorf("shorten: got %q", got)
	}
}

// A 2xx that carries an Error (its body could not be read) is an error.
func TestTruncated2xxIsAnError(t *testing.T) {
	r := newReport("x", Options{Concurrency: 1})
	r.add(&vegeta.Result{Code: 200, Error: "unexpected EOF"})
	r.add(&vegeta.Result{Code: 200})
	r.finish(time.Second)
	if r.Successes != 1 || r.Errors != 1 || r.TopErrors[0].Error != "unexpected EOF" {
		t.Fatalf("got %+v", r)
	}
}
