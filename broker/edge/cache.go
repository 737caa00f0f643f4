package edge

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"
)

// tokenCache remembers tokens whose signature, issuer and lifetime were verified, so that a
// repeat validation costs a hash and a map lookup instead of a signature check.
//
// A hit requires the stored token to equal the presented one byte for byte, so it cannot be
// forged by a hash collision at all, crafted or not. A cryptographic hash of the token as the
// key would give that guarantee only up to its collision resistance, and SHA-256 of a ~1 KB
// token costs several times the rest of a cached validation on CPUs without SHA extensions. The
// price is the token's bytes per entry, small beside the decoded claims each entry keeps anyway.
//
// The slot is picked by a seeded maphash of the token's last bytes, which for a JWS are
// signature bytes: as good as random, and a tenth of the cost of hashing the whole token. A
// token crafted to share a cached token's tail only lands on that slot, fails the comparison,
// and, being unverifiable, is never stored.
//
// Lookups go through a sync.Map, whose reads take no lock and write no shared memory, so hits
// scale with cores. Insertions and evictions are serialised per shard, each shard evicting
// with CLOCK (second chance): a hit only sets the entry's reference bit, and only if unset.
type tokenCache struct {
	seed   maphash.Seed
	m      sync.Map // slot hash -> *cacheEntry
	shards []cacheShard
	mask   uint64
}

type cacheShard struct {
	mu   sync.Mutex
	ring []*cacheEntry // the shard's entries, swept by hand
	hand int
	cap  int
	_    [64]byte // keep neighbouring shards' locks off one cache line
}

// cacheEntry is a verified token. It is immutable once published, except for ref.
type cacheEntry struct {
	hash      uint64
	token     string
	id        *Identity
	notBefore time.Time // latest of nbf and iat, minus leeway
	deadline  time.Time // exp plus leeway
	key       *verifyKey
	slot      int
	ref       atomic.Bool
}

func newTokenCache(size int) *tokenCache {
	n := 1
	for n < 64 && n*16 <= size {
		n *= 2
	}
	per := (size + n - 1) / n
	c := &tokenCache{seed: maphash.MakeSeed(), shards: make([]cacheShard, n), mask: uint64(n - 1)}
	for i := range c.shards {
		c.shards[i].cap = per
	}
	return c
}

// tailLen is how many trailing bytes of a token pick its slot.
const tailLen = 32

func (c *tokenCache) slot(token string) uint64 {
	if len(token) > tailLen {
		token = token[len(token)-tailLen:]
	}
	return maphash.String(c.seed, token)
}

func (c *tokenCache) get(token string) *cacheEntry {
	v, ok := c.m.Load(c.slot(token))
	if !ok {
		return nil
	}
	e := v.(*cacheEntry)
	if e.token != token {
		return nil
	}
	if !e.ref.Load() {
		e.ref.Store(true)
	}
	return e
}

// put stores e, evicting by CLOCK when the shard is full. Expired entries are evicted first
// whatever their reference bit.
func (c *tokenCache) put(e *cacheEntry, now time.Time) {
	e.hash = c.slot(e.token)
	sh := &c.shards[e.hash&c.mask]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	// Every hash maps to one shard, so under its lock the map entry for e.hash is stable.
	if v, ok := c.m.Load(e.hash); ok {
		old := v.(*cacheEntry)
		e.slot = old.slot
		sh.ring[e.slot] = e
		c.m.Store(e.hash, e)
		return
	}
	if len(sh.ring) < sh.cap {
		e.slot = len(sh.ring)
		sh.ring = append(sh.ring, e)
		c.m.Store(e.hash, e)
		return
	}
	for {
		victim := sh.ring[sh.hand]
		if victim.ref.Load() && now.Before(victim.deadline) && !victim.key.removed.Load() {
			victim.ref.Store(false)
			sh.hand = (sh.hand + 1) % sh.cap
			continue
		}
		c.m.Delete(victim.hash)
		e.slot = sh.hand
		sh.ring[sh.hand] = e
		c.m.Store(e.hash, e)
		sh.hand = (sh.hand + 1) % sh.cap
		return
	}
}

// len returns the number of cached tokens.
func (c *tokenCache) len() int {
	n := 0
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		n += len(sh.ring)
		sh.mu.Unlock()
	}
	return n
}
