package server

import (
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"golang.org/x/time/rate"

	"github.com/mandate-dev/mandate/broker"
)

// clientRateLimit bounds token requests per client (token bucket per client id).
// The client id is read before authentication, only to pick a bucket; an
// attacker naming another client's id spends that client's budget, which is why
// the limit is a per-client ceiling, not a per-caller fairness mechanism.
func clientRateLimit(perSecond float64, burst int) echo.MiddlewareFunc {
	if burst <= 0 {
		burst = int(perSecond)
		if burst < 1 {
			burst = 1
		}
	}
	var mu sync.Mutex
	buckets := map[string]*rate.Limiter{}
	lastSweep := time.Now()
	get := func(id string) *rate.Limiter {
		mu.Lock()
		defer mu.Unlock()
		if time.Since(lastSweep) > time.Minute || len(buckets) > 100_000 {
			// Full buckets carry no state worth keeping.
			for k, l := range buckets {
				if l.Tokens() >= float64(burst) {
					delete(buckets, k)
				}
			}
			lastSweep = time.Now()
		}
		l, ok := buckets[id]
		if !ok {
			l = rate.NewLimiter(rate.Limit(perSecond), burst)
			buckets[id] = l
		}
		return l
	}
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			id := clientIDHint(c.Request())
			if id == "" {
				return next(c)
			}
			if r := get(id).Reserve(); !r.OK() || r.Delay() > 0 {
				d := r.Delay()
				r.Cancel()
				secs := int(d/time.Second) + 1
				c.Response().Header().Set("Retry-After", strconv.Itoa(secs))
				return APIError(c, http.StatusTooManyRequests, "temporarily_unavailable", "rate limit exceeded for this client; retry after the indicated delay")
			}
			return next(c)
		}
	}
}

// clientIDHint names the client a token request claims to be, unverified.
func clientIDHint(r *http.Request) string {
	if id, _, ok := r.BasicAuth(); ok {
		if u, err := url.QueryUnescape(id); err == nil {
			return u
		}
		return id
	}
	if err := r.ParseForm(); err != nil {
		return ""
	}
	if id := r.PostForm.Get("client_id"); id != "" {
		return id
	}
	if a := r.PostForm.Get("client_assertion"); a != "" {
		// RFC 7523: the assertion's iss is the client id.
		if iss, err := broker.PeekIssuer(a); err == nil {
			return iss
		}
	}
	return ""
}
