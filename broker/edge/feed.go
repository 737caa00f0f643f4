package edge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults and bounds of FeedConfig.
const (
	DefaultFeedWait        = 20 * time.Second
	MaxFeedWait            = 30 * time.Second
	DefaultFeedMinBackoff  = 250 * time.Millisecond
	DefaultFeedMaxBackoff  = 30 * time.Second
	DefaultFeedMaxResponse = 64 << 20
)

const (
	feedRequestGrace        = 15 * time.Second
	feedMinEmptyPoll        = time.Second // an empty answer sooner than this was not a long-poll
	feedPruneInterval       = time.Minute // pruning walks the whole set
	revocationsPath         = "/v1/revocations"
	feedErrorBodySampleSize = 512
)

// FeedConfig configures a Feed.
type FeedConfig struct {
	// Issuer is the broker's issuer URL; the feed is read from Issuer + "/v1/revocations"
	// unless URL is set.
	Issuer string
	// URL overrides the feed endpoint.
	URL string
	// Set receives the revocations. Default: a new set, available from Feed.Set.
	Set *RevocationSet
	// HTTPClient makes the requests. Its Timeout, if any, must exceed Wait; each request is
	// bounded by Wait plus 15s anyway. Default: a client without a timeout.
	HTTPClient *http.Client
	// Header is added to every request, e.g. an Authorization header.
	Header http.Header
	// Wait is how long the broker may hold a long-poll open (0 < Wait <= 30s). It must stay
	// well below the Validator's Staleness, since a held poll does not count as a sync until
	// it returns. Default 20s.
	Wait time.Duration
	// MinBackoff and MaxBackoff bound the jittered exponential backoff after a failed poll.
	// Defaults 250ms and 30s.
	MinBackoff, MaxBackoff time.Duration
	// MaxResponseBytes bounds one response (a full snapshot included). Default 64 MiB.
	MaxResponseBytes int64
	// Now is the clock that stamps LastSync and prunes the set. Default time.Now.
	Now func() time.Time
	// Logger receives poll failures. Default slog.Default().
	Logger *slog.Logger
}

// Feed follows the broker's revocation feed and keeps a RevocationSet in step with it:
//
//	GET {issuer}/v1/revocations?since=CURSOR&wait=SECONDS
//	200 {"cursor":"...","entries":[{"kind":"token","id":"...","expires_at":1700000000}],"reset":false}
//
// An empty since asks for a full snapshot. The broker answers at once when it has entries after
// the cursor and otherwise holds the request until one arrives or wait elapses. "reset": true
// tells the follower to drop its set and take entries as the full snapshot. After an error the
// Feed backs off and resumes from its last cursor, so nothing revoked meanwhile is missed.
type Feed struct {
	url        string
	set        *RevocationSet
	client     *http.Client
	header     http.Header
	wait       time.Duration
	minBackoff time.Duration
	maxBackoff time.Duration
	maxBytes   int64
	now        func() time.Time
	log        *slog.Logger

	running  atomic.Bool
	lastSync atomic.Int64 // unix nanoseconds; 0 before the first sync
	synced   chan struct{}
	once     sync.Once

	mu        sync.Mutex
	cursor    string
	lastPrune time.Time
}

var _ FeedStatus = (*Feed)(nil)

// NewFeed checks cfg and returns a Feed; call Run to start following.
func NewFeed(cfg FeedConfig) (*Feed, error) {
	f := &Feed{
		url:        cfg.URL,
		set:        cfg.Set,
		client:     cfg.HTTPClient,
		header:     cfg.Header.Clone(),
		wait:       cfg.Wait,
		minBackoff: cfg.MinBackoff,
		maxBackoff: cfg.MaxBackoff,
		maxBytes:   cfg.MaxResponseBytes,
		now:        cfg.Now,
		log:        cfg.Logger,
		synced:     make(chan struct{}),
	}
	if f.url == "" {
		if err := checkIssuer(cfg.Issuer); err != nil {
			return nil, fmt.Errorf("edge: feed: %w", err)
		}
		f.url = strings.TrimSuffix(cfg.Issuer, "/") + revocationsPath
	}
	u, err := url.Parse(f.url)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("edge: feed: URL %q is not an http(s) URL", f.url)
	}
	switch {
	case f.wait < 0 || f.wait > MaxFeedWait:
		return nil, fmt.Errorf("edge: feed: Wait %s outside (0, %s]", f.wait, MaxFeedWait)
	case f.wait == 0:
		f.wait = DefaultFeedWait
	}
	if f.minBackoff <= 0 {
		f.minBackoff = DefaultFeedMinBackoff
	}
	if f.maxBackoff <= 0 {
		f.maxBackoff = DefaultFeedMaxBackoff
	}
	if f.maxBackoff < f.minBackoff {
		return nil, fmt.Errorf("edge: feed: MaxBackoff %s below MinBackoff %s", f.maxBackoff, f.minBackoff)
	}
	if f.maxBytes <= 0 {
		f.maxBytes = DefaultFeedMaxResponse
	}
	if f.set == nil {
		f.set = NewRevocationSet()
	}
	if f.client == nil {
		f.client = &http.Client{}
	}
	if f.now == nil {
		f.now = time.Now
	}
	if f.log == nil {
		f.log = slog.Default()
	}
	return f, nil
}

// Set returns the revocation set the feed maintains.
func (f *Feed) Set() *RevocationSet { return f.set }

// LastSync returns when the last poll succeeded; the zero time before the first.
func (f *Feed) LastSync() time.Time {
	ns := f.lastSync.Load()
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// Cursor returns the position of the last successful poll; empty before the first.
func (f *Feed) Cursor() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cursor
}

// WaitSynced blocks until the first successful poll or until ctx is done. A server can call it
// before it starts accepting traffic, since validations fail with ErrRevocationStale until then.
func (f *Feed) WaitSynced(ctx context.Context) error {
	select {
	case <-f.synced:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("edge: feed: waiting for first sync: %w", ctx.Err())
	}
}

// Run follows the feed until ctx is done, then returns ctx's error. It long-polls, backs off
// with jitter after failures, and resumes from the last cursor. A Feed runs once at a time.
func (f *Feed) Run(ctx context.Context) error {
	if !f.running.CompareAndSwap(false, true) {
		return errors.New("edge: feed: already running")
	}
	defer f.running.Store(false)
	failures := 0
	for {
		start := time.Now()
		prev := f.Cursor()
		n, err := f.poll(ctx, f.wait)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var pause time.Duration
		switch {
		case err != nil:
			failures++
			pause = backoff(failures, f.minBackoff, f.maxBackoff)
			f.log.Warn("edge: revocation feed poll failed", "url", f.url, "error", err, "failures", failures, "retry_in", pause)
		case n == 0 && f.Cursor() == prev && time.Since(start) < feedMinEmptyPoll:
			// A broker that answers "nothing new" at once, without moving the cursor, is
			// not holding the poll; do not spin against it. (The first answer, an empty
			// snapshot that sets the cursor, is followed at once by a real long poll.)
			failures = 0
			pause = feedMinEmptyPoll - time.Since(start)
		default:
			failures = 0
			continue
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// backoff returns a jittered exponential delay: a random duration in [d/2, d] where d doubles
// per failure from min up to max, so that edges restarting together do not poll in lockstep.
func backoff(failures int, min, max time.Duration) time.Duration {
	d := min
	for i := 1; i < failures && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	return d/2 + rand.N(d/2+1)
}

// errCursorGone is the broker's 410 Gone: the cursor is no longer known, take a snapshot.
var errCursorGone = errors.New("cursor no longer known to the broker")

// feedResponse is the body of a 200 from the feed.
type feedResponse struct {
	Cursor  *string     `json:"cursor"`
	Entries []feedEntry `json:"entries"`
	Reset   bool        `json:"reset"`
}

type feedEntry struct {
	Kind      string  `json:"kind"`
	ID        string  `json:"id"`
	ExpiresAt float64 `json:"expires_at"`
}

// Poll makes one request to the feed, waiting at most wait for news (0: answer at once), and
// applies the answer. Run calls it in a loop; it is exported for callers who drive their own
// schedule. Do not call it concurrently with Run.
func (f *Feed) Poll(ctx context.Context, wait time.Duration) error {
	_, err := f.poll(ctx, wait)
	return err
}

// poll is Poll that also returns how many entries the answer carried.
func (f *Feed) poll(ctx context.Context, wait time.Duration) (int, error) {
	if wait < 0 || wait > MaxFeedWait {
		return 0, fmt.Errorf("edge: feed: wait %s outside [0, %s]", wait, MaxFeedWait)
	}
	since := f.Cursor()
	resp, err := f.request(ctx, since, wait)
	if errors.Is(err, errCursorGone) {
		f.log.Warn("edge: revocation feed cursor expired; taking a snapshot", "url", f.url)
		since = ""
		resp, err = f.request(ctx, since, 0)
	}
	if err != nil {
		return 0, err
	}
	entries := make([]RevocationEntry, 0, len(resp.Entries))
	skipped := 0
	for _, e := range resp.Entries {
		kind := RevocationKind(e.Kind)
		if kind != KindToken && kind != KindGrant {
			// A kind this edge does not know cannot be enforced by it; refusing the whole
			// batch would stall every known revocation behind it.
			skipped++
			continue
		}
		if e.ID == "" {
			return 0, errors.New("edge: feed: entry without id")
		}
		var exp time.Time
		if e.ExpiresAt > 0 {
			exp = time.Unix(int64(e.ExpiresAt), 0)
		}
		entries = append(entries, RevocationEntry{Kind: kind, ID: e.ID, ExpiresAt: exp})
	}
	if skipped > 0 {
		f.log.Warn("edge: revocation feed entries of unknown kind ignored", "url", f.url, "count", skipped)
	}
	if resp.Reset || since == "" {
		if err := f.set.Replace(entries); err != nil {
			return 0, fmt.Errorf("edge: feed: %w", err)
		}
	} else {
		for _, e := range entries {
			if err := f.set.Add(e.Kind, e.ID, e.ExpiresAt); err != nil {
				return 0, fmt.Errorf("edge: feed: %w", err)
			}
		}
	}
	now := f.now()
	f.mu.Lock()
	f.cursor = *resp.Cursor
	prune := now.Sub(f.lastPrune) >= feedPruneInterval
	if prune {
		f.lastPrune = now
	}
	f.mu.Unlock()
	if prune {
		f.set.Prune(now)
	}
	f.lastSync.Store(now.UnixNano())
	f.once.Do(func() { close(f.synced) })
	return len(resp.Entries), nil
}

func (f *Feed) request(ctx context.Context, since string, wait time.Duration) (*feedResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, wait+feedRequestGrace)
	defer cancel()
	q := url.Values{}
	q.Set("since", since)
	q.Set("wait", strconv.Itoa(int(wait/time.Second)))
	u := f.url
	if strings.Contains(u, "?") {
		u += "&" + q.Encode()
	} else {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("edge: feed: request: %w", err)
	}
	for k, vs := range f.header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	req.Header.Set("Accept", "application/json")
	resp, err := f.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("edge: feed: poll: %w", err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusGone:
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, feedErrorBodySampleSize))
		return nil, errCursorGone
	default:
		sample, _ := io.ReadAll(io.LimitReader(resp.Body, feedErrorBodySampleSize))
		return nil, fmt.Errorf("edge: feed: poll: status %d: %s", resp.StatusCode, strings.TrimSpace(quotedSafe(string(sample))))
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, f.maxBytes+1))
	if err != nil {
		return nil, fmt.Errorf("edge: feed: read: %w", err)
	}
	if int64(len(body)) > f.maxBytes {
		return nil, fmt.Errorf("edge: feed: response larger than %d bytes", f.maxBytes)
	}
	var r feedResponse
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("edge: feed: decode: %w", err)
	}
	if r.Cursor == nil || *r.Cursor == "" {
		return nil, errors.New("edge: feed: response without cursor")
	}
	return &r, nil
}
