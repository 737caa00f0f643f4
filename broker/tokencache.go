package broker

import (
	"sync"
	"time"
)

// verifiedCache remembers tokens whose signature and claims were verified, so
// that a token presented again (an agent exchanging the same user token for
// several resources, a sub-agent re-exchanging) skips the signature check and
// the JSON parse. The key is the whole token string: a hit compares every byte,
// so no crafted collision can return another token's claims. Entries leave at
// the token's expiry; a hit re-checks the expiry against the clock. Revocation
// is never cached: callers check it on every use.
type verifiedCache[V any] struct {
	mu      sync.RWMutex
	entries map[string]cacheEntry[V]
	max     int
}

type cacheEntry[V any] struct {
	val V
	exp int64 // unix seconds, leeway included
}

func newVerifiedCache[V any](max int) *verifiedCache[V] {
	return &verifiedCache[V]{entries: make(map[string]cacheEntry[V]), max: max}
}

func (c *verifiedCache[V]) get(raw string, now time.Time) (V, bool) {
	c.mu.RLock()
	e, ok := c.entries[raw]
	c.mu.RUnlock()
	if !ok || now.Unix() > e.exp {
		var zero V
		return zero, false
	}
	return e.val, true
}

func (c *verifiedCache[V]) put(raw string, v V, exp int64, now time.Time) {
	if c.max <= 0 || len(raw) > MaxTokenSize {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= c.max {
		// Drop the expired, then as many others as needed: map iteration order is
		// random, so this evicts an arbitrary quarter without bookkeeping.
		n := now.Unix()
		drop := c.max / 4
		for k, e := range c.entries {
			if e.exp < n {
				delete(c.entries, k)
			} else if drop > 0 {
				delete(c.entries, k)
				drop--
			}
		}
	}
	c.entries[raw] = cacheEntry[V]{val: v, exp: exp}
}
