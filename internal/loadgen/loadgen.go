package loadgen

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// Defaults and bounds of Options.
const (
	// DefaultMaxRequests caps the measured requests of one run, so that even a
	// long run at a high rate keeps its latency record (8 bytes a request) small.
	DefaultMaxRequests = 5_000_000
	// DefaultTimeout is the per-request timeout.
	DefaultTimeout = 10 * time.Second
	// MaxConcurrency bounds Options.Concurrency.
	MaxConcurrency = 10_000
	// MaxDuration bounds Options.Duration and Options.Warmup: a load run always ends by itself.
	MaxDuration = time.Hour
	// errorBodyLimit is how much of a response body is read; an OAuth error body is far smaller.
	errorBodyLimit = 4 << 10
)

// Target is one request the generator may send. Header and Body are shared by
// every hit and must not change during a run.
type Target struct {
	Method string
	URL    string
	Header http.Header
	Body   []byte
}

// Options shape one run.
type Options struct {
	// Concurrency is the number of workers: in a closed loop the requests in
	// flight, in an open loop the most requests in flight. Required, 1 to MaxConcurrency.
	Concurrency int
	// Rate is the open-loop arrival rate in requests per second; 0 runs a closed loop.
	Rate int
	// Duration is the measured phase; required, at most MaxDuration.
	Duration time.Duration
	// Warmup runs the same load first, unmeasured, to open connections and warm caches.
	Warmup time.Duration
	// MaxRequests caps the measured requests; 0 means DefaultMaxRequests.
	MaxRequests uint64
	// Timeout bounds each request; 0 means DefaultTimeout.
	Timeout time.Duration
	// AllowRemote permits targets that are not loopback addresses.
	AllowRemote bool
	// Client, when set, replaces the generator's own keep-alive client (tests).
	// It then carries no loopback guard of its own.
	Client *http.Client
}

// Validate reports what Run would refuse in o, so a caller can fail before
// any setup work.
func (o Options) Validate() error { return o.check() }

func (o *Options) check() error {
	switch {
	case o.Concurrency < 1 || o.Concurrency > MaxConcurrency:
		return fmt.Errorf("loadgen: concurrency %d: must be 1 to %d", o.Concurrency, MaxConcurrency)
	case o.Rate < 0:
		return fmt.Errorf("loadgen: rate %d: must be 0 (closed loop) or more", o.Rate)
	case o.Duration <= 0 || o.Duration > MaxDuration:
		return fmt.Errorf("loadgen: duration %s: must be above 0 and at most %s", o.Duration, MaxDuration)
	case o.Warmup < 0 || o.Warmup > MaxDuration:
		return fmt.Errorf("loadgen: warmup %s: must be 0 to %s", o.Warmup, MaxDuration)
	case o.Timeout < 0:
		return fmt.Errorf("loadgen: timeout %s: must not be negative", o.Timeout)
	}
	if o.MaxRequests == 0 {
		o.MaxRequests = DefaultMaxRequests
	}
	if o.Timeout == 0 {
		o.Timeout = DefaultTimeout
	}
	return nil
}

// Run sends the load of o to targets, picking one at random for every request,
// and reports the measured phase. It returns early, with what was measured so
// far, when ctx ends during the measured phase; an error means nothing was
// measured.
func Run(ctx context.Context, name string, targets []Target, o Options) (*Report, error) {
	if err := o.check(); err != nil {
		return nil, err
	}
	if len(targets) == 0 {
		return nil, errors.New("loadgen: no targets")
	}
	hosts := map[string]bool{}
	for _, t := range targets {
		if hosts[t.URL] {
			continue
		}
		hosts[t.URL] = true
		if err := CheckTarget(ctx, t.URL, o.AllowRemote); err != nil {
			return nil, err
		}
	}
	client := o.Client
	if client == nil {
		client = NewClient(o.Concurrency, o.Timeout, o.AllowRemote)
		defer client.CloseIdleConnections()
	}
	tr := func(t *vegeta.Target) error {
		src := &targets[rand.IntN(len(targets))]
		t.Method, t.URL, t.Header, t.Body = src.Method, src.URL, src.Header, src.Body
		return nil
	}

	if o.Warmup > 0 {
		if _, err := attack(ctx, client, tr, o, o.Warmup, 0, nil); err != nil {
			return nil, fmt.Errorf("loadgen: %s warmup: %w", name, err)
		}
	}
	rep := newReport(name, o)
	elapsed, err := attack(ctx, client, tr, o, o.Duration, o.MaxRequests, rep.add)
	if err != nil && rep.Requests == 0 {
		return nil, fmt.Errorf("loadgen: %s: %w", name, err)
	}
	rep.Interrupted = err != nil
	rep.finish(elapsed)
	return rep, nil
}

// attack runs one phase of the load and hands every result to record (nil:
// discarded). It returns the phase's wall time, from the first request to the
// last answer, and ctx's error when it was cut short.
func attack(ctx context.Context, client *http.Client, tr vegeta.Targeter, o Options, d time.Duration, max uint64, record func(*vegeta.Result)) (time.Duration, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	workers := uint64(o.Concurrency)
	atk := vegeta.NewAttacker(
		vegeta.Client(client),
		vegeta.Workers(workers),
		vegeta.MaxWorkers(workers),
		vegeta.MaxBody(errorBodyLimit),
	)
	var pacer vegeta.Pacer = vegeta.ConstantPacer{Freq: o.Rate, Per: time.Second}
	if max > 0 {
		pacer = cappedPacer{Pacer: pacer, max: max}
	}
	stop := context.AfterFunc(ctx, func() { atk.Stop() })
	defer stop()
	start := time.Now()
	for r := range atk.Attack(tr, pacer, d, "") {
		if record != nil {
			record(r)
		}
	}
	return time.Since(start), ctx.Err()
}

// cappedPacer ends an attack after max requests.
type cappedPacer struct {
	vegeta.Pacer
	max uint64
}

// Pace implements vegeta.Pacer.
func (p cappedPacer) Pace(elapsed time.Duration, hits uint64) (time.Duration, bool) {
	if hits >= p.max {
		return 0, true
	}
	return p.Pacer.Pace(elapsed, hits)
}

// NewClient returns the keep-alive client the generator uses: enough idle
// connections per host for every worker to keep its own, no proxy (load goes
// straight to the target), no redirects followed, no compression, and unless
// allowRemote a dialer that refuses any address that is not loopback.
func NewClient(concurrency int, timeout time.Duration, allowRemote bool) *http.Client {
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	if !allowRemote {
		dialer.Control = loopbackOnly
	}
	idle := max(concurrency*2, 64)
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			Proxy:               nil,
			DialContext:         dialer.DialContext,
			MaxIdleConns:        idle,
			MaxIdleConnsPerHost: idle,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true,
			ForceAttemptHTTP2:   false,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// loopbackOnly is a net.Dialer Control function: it runs after name resolution,
// on the address about to be dialed.
func loopbackOnly(_, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return fmt.Errorf("loadgen: dial %s: %w", address, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("loadgen: refusing to send load to %s: not a loopback address (allow remote targets explicitly)", host)
	}
	return nil
}

// CheckTarget refuses a URL that is not http(s), and unless allowRemote one
// whose host is not, or does not resolve only to, loopback addresses.
func CheckTarget(ctx context.Context, rawURL string, allowRemote bool) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return fmt.Errorf("loadgen: target %q: %w", rawURL, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("loadgen: target %q: want an http or https URL", rawURL)
	}
	host := u.Hostname()
	if host == "" {
		return fmt.Errorf("loadgen: target %q has no host", rawURL)
	}
	if allowRemote {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil {
		if !ip.IsLoopback() {
			return fmt.Errorf("loadgen: target host %s is not a loopback address; pass --allow-remote to load another machine", host)
		}
		return nil
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupIPAddr(rctx, host)
	if err != nil {
		return fmt.Errorf("loadgen: resolve target host %s: %w", host, err)
	}
	for _, a := range addrs {
		if !a.IP.IsLoopback() {
			return fmt.Errorf("loadgen: target host %s resolves to %s, not a loopback address; pass --allow-remote to load another machine", host, a.IP)
		}
	}
	return nil
}

// trimURLError drops the `Post "URL": ` prefix net/http puts on transport
// errors, so errors group by cause rather than by URL.
func trimURLError(s string) string {
	if i := strings.Index(s, `": `); i > 0 && strings.Contains(s[:i], ` "`) {
		return s[i+3:]
	}
	return s
}
