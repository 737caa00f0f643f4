package edge

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// RevocationKind says what a revocation entry names.
type RevocationKind string

const (
	// KindToken revokes one token by its "jti"; it also revokes every token derived from it,
	// since those list the jti in their "anc" claim.
	KindToken RevocationKind = "token"
	// KindGrant revokes every token issued under a delegation grant ("grant_id").
	KindGrant RevocationKind = "grant"
)

// pruneGrace keeps an entry this long past its expiry, the largest leeway a Validator accepts,
// so that a token still accepted within its leeway is still seen as revoked.
const pruneGrace = MaxLeeway

// RevocationEntry is one revoked token or grant.
type RevocationEntry struct {
	Kind RevocationKind
	ID   string
	// ExpiresAt is when every token the entry could affect has expired; the entry may be
	// dropped after it. The zero time keeps the entry until the set is replaced.
	ExpiresAt time.Time
}

// RevocationSet is the in-memory set of revoked token ids and grant ids that a Validator
// consults on every validation, cached tokens included. It is safe for concurrent use; lookups
// take no lock, so they scale with cores. A Feed keeps it in step with the broker; the broker
// itself may feed it directly with Add.
type RevocationSet struct {
	mu  sync.Mutex // serialises writers
	cur atomic.Pointer[revocations]
	len int // entries in cur; guarded by mu
}

// revocations is one generation of the set; Replace swaps in a new one.
type revocations struct {
	tokens sync.Map // jti -> expiry, unix seconds (0: never pruned)
	grants sync.Map // grant id -> expiry
}

func (r *revocations) mapFor(kind RevocationKind) (*sync.Map, error) {
	switch kind {
	case KindToken:
		return &r.tokens, nil
	case KindGrant:
		return &r.grants, nil
	}
	return nil, fmt.Errorf("unknown kind %q", kind)
}

// add records id with expiry exp, keeping the later expiry (0 counts as latest) if id is
// there already. It reports whether id is new.
func (r *revocations) add(kind RevocationKind, id string, exp int64) (bool, error) {
	m, err := r.mapFor(kind)
	if err != nil {
		return false, err
	}
	if id == "" {
		return false, errors.New("empty id")
	}
	v, loaded := m.Load(id)
	if !loaded {
		m.Store(id, exp)
		return true, nil
	}
	if prev := v.(int64); prev != 0 && (exp == 0 || exp > prev) {
		m.Store(id, exp)
	}
	return false, nil
}

// NewRevocationSet returns an empty set.
func NewRevocationSet() *RevocationSet {
	s := &RevocationSet{}
	s.cur.Store(&revocations{})
	return s
}

// Add records a revocation. Adding an id twice keeps the later expiry.
func (s *RevocationSet) Add(kind RevocationKind, id string, expiresAt time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	added, err := s.cur.Load().add(kind, id, unixOrZero(expiresAt))
	if err != nil {
		return fmt.Errorf("edge: revoke: %w", err)
	}
	if added {
		s.len++
	}
	return nil
}

// Replace drops every entry and takes entries as the complete set, atomically: a concurrent
// validation sees either the old set or the new one, never an empty one in between. On error
// the set is unchanged.
func (s *RevocationSet) Replace(entries []RevocationEntry) error {
	next := &revocations{}
	n := 0
	for _, e := range entries {
		added, err := next.add(e.Kind, e.ID, unixOrZero(e.ExpiresAt))
		if err != nil {
			return fmt.Errorf("edge: replace revocations: %w", err)
		}
		if added {
			n++
		}
	}
	s.mu.Lock()
	s.cur.Store(next)
	s.len = n
	s.mu.Unlock()
	return nil
}

// Revoked reports whether id of the given kind is revoked.
func (s *RevocationSet) Revoked(kind RevocationKind, id string) bool {
	m, err := s.cur.Load().mapFor(kind)
	if err != nil {
		return false
	}
	_, ok := m.Load(id)
	return ok
}

// Prune drops the entries that expired more than the maximum leeway before now and returns how
// many it dropped.
func (s *RevocationSet) Prune(now time.Time) int {
	cutoff := now.Add(-pruneGrace).Unix()
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.cur.Load()
	n := 0
	for _, m := range []*sync.Map{&r.tokens, &r.grants} {
		m.Range(func(id, exp any) bool {
			if e := exp.(int64); e != 0 && e < cutoff {
				m.Delete(id)
				n++
			}
			return true
		})
	}
	s.len -= n
	return n
}

// Len returns the number of entries.
func (s *RevocationSet) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.len
}

// check returns which of the token's identifiers is revoked, if any.
func (s *RevocationSet) check(id *Identity) (string, bool) {
	r := s.cur.Load()
	if _, ok := r.tokens.Load(id.TokenID); ok {
		return "jti", true
	}
	if id.GrantID != "" {
		if _, ok := r.grants.Load(id.GrantID); ok {
			return "grant_id", true
		}
	}
	for _, a := range id.Ancestors {
		if _, ok := r.tokens.Load(a); ok {
			return "ancestor jti", true
		}
	}
	return "", false
}

func unixOrZero(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.Unix()
}
