package grants

import (
	"sync"
	"time"
)

// cacheMaxEntries bounds each of the cache's maps. Past it, expired entries
// are swept, and if that is not enough the map starts over: the cache is an
// optimization, a miss only costs a query.
const cacheMaxEntries = 10000

// userKey names the (user, client) pair FindActive looks up.
type userKey struct{ iss, sub, client string }

type cacheEntry struct {
	g       *Grant // nil: the database had no such grant (a cached miss)
	expires time.Time
}

// cache holds the hot path's lookups for a short TTL. Entries are private
// copies. Every invalidation bumps gen, and a result loaded from the
// database is stored only if gen has not moved since the load began, so a
// read that raced a local write never re-caches what the write replaced.
type cache struct {
	ttl time.Duration // <= 0: disabled

	mu     sync.Mutex
	gen    uint64
	byID   map[string]cacheEntry
	byUser map[userKey]cacheEntry
	userOf map[string]userKey // grant id -> its byUser key, for Invalidate(id)
}

func newCache(ttl time.Duration) *cache {
	return &cache{
		ttl:    ttl,
		byID:   map[string]cacheEntry{},
		byUser: map[userKey]cacheEntry{},
		userOf: map[string]userKey{},
	}
}

func (c *cache) enabled() bool { return c.ttl > 0 }

func (c *cache) generation() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

func (c *cache) getID(id string, now time.Time) (g *Grant, hit bool) {
	if !c.enabled() {
		return nil, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.byID[id]
	if !ok || !now.Before(e.expires) {
		return nil, false
	}
	return e.g.Clone(), true
}

func (c *cache) getUser(k userKey, now time.Time) (g *Grant, hit bool) {
	if !c.enabled() {
		return nil, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.byUser[k]
	if !ok || !now.Before(e.expires) {
		return nil, false
	}
	return e.g.Clone(), true
}

func (c *cache) putID(id string, g *Grant, gen uint64, now time.Time) {
	if !c.enabled() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen {
		return
	}
	if len(c.byID) >= cacheMaxEntries {
		sweep(c.byID, now)
	}
	c.byID[id] = cacheEntry{g: g.Clone(), expires: now.Add(c.ttl)}
}

func (c *cache) putUser(k userKey, g *Grant, gen uint64, now time.Time) {
	if !c.enabled() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen {
		return
	}
	if len(c.byUser) >= cacheMaxEntries || len(c.userOf) >= cacheMaxEntries {
		sweep(c.byUser, now)
		clear(c.userOf)
		for uk, e := range c.byUser {
			if e.g != nil {
				c.userOf[e.g.ID] = uk
			}
		}
	}
	c.byUser[k] = cacheEntry{g: g.Clone(), expires: now.Add(c.ttl)}
	if g != nil {
		c.userOf[g.ID] = k
	}
}

// sweep drops expired entries, or everything if none had expired.
func sweep[K comparable](m map[K]cacheEntry, now time.Time) {
	n := len(m)
	for k, e := range m {
		if !now.Before(e.expires) {
			delete(m, k)
		}
	}
	if len(m) == n {
		clear(m)
	}
}

// invalidate forgets grant id and, when known, its (user, client) entry.
func (c *cache) invalidate(id string, k *userKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	delete(c.byID, id)
	if uk, ok := c.userOf[id]; ok {
		delete(c.byUser, uk)
		delete(c.userOf, id)
	}
	if k != nil {
		delete(c.byUser, *k)
	}
}

func (c *cache) invalidateAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	clear(c.byID)
	clear(c.byUser)
	clear(c.userOf)
}
