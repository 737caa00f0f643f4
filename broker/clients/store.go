package clients

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mandate-dev/mandate/internal/db"
)

var (
	// ErrNotFound means no client has the id (or the id is not a valid client id).
	// Errors carrying it also wrap db.ErrNotFound when the database said so.
	ErrNotFound = errors.New("clients: no such client")
	// ErrExists means a client with the id is already registered. Errors carrying it
	// also wrap db.ErrConflict.
	ErrExists = errors.New("clients: client id already registered")
)

// DefaultCacheTTL bounds how long a node may serve a client it read earlier:
// changes made through another node reach this one within it.
const DefaultCacheTTL = 5 * time.Second

// DefaultCacheMaxEntries bounds the client cache.
const DefaultCacheMaxEntries = 10000

// StoreOptions tune a Store. The zero value is sensible.
type StoreOptions struct {
	// Clock returns the current time (default time.Now); tests inject one.
	Clock func() time.Time
	// CacheTTL bounds how stale a cached client may be (default DefaultCacheTTL).
	// A negative value turns the cache off.
	CacheTTL time.Duration
	// CacheMaxEntries bounds the number of cached clients (default DefaultCacheMaxEntries).
	// When the cache is full of live entries, further clients are read from the
	// database each time rather than evicting hot ones.
	CacheMaxEntries int
	// Logger receives warnings (default slog.Default()). Secrets are never logged.
	Logger *slog.Logger
	// BeforeRemove, when set, runs before a client is disabled (SetDisabled, or
	// an Update that disables it) or deleted. The broker revokes the client's
	// tokens there; an error leaves the client unchanged and is returned.
	BeforeRemove func(ctx context.Context, id string) error
}

// Patch is a partial update of a client: nil fields are left as they are.
// The client id, type and authentication method cannot change; register a new
// client instead. An empty GrantTypes slice restores the type's default grants.
type Patch struct {
	Name           *string
	GrantTypes     *[]string
	Scopes         *[]string
	Audiences      *[]string
	JWKS           *json.RawMessage
	MayImpersonate *bool
	FirstParty     *bool
	Disabled       *bool
}

// Store keeps clients in the database, with a read-through cache in front of the
// token endpoint's lookups. It is safe for concurrent use.
//
// Writes through a Store invalidate its own cache at once. Writes through other nodes
// reach this one within CacheTTL, or sooner if a change listener calls Invalidate.
type Store struct {
	db     *db.DB
	hasher *SecretHasher
	clock  func() time.Time
	ttl    time.Duration
	max    int
	log    *slog.Logger
	remove func(ctx context.Context, id string) error

	cache sync.Map // id -> *cacheEntry; read without locks on the hot path
	mu    sync.Mutex
	gen   atomic.Uint64 // bumped under mu by every invalidation
	size  int           // guarded by mu

	lastJTISweep atomic.Int64 // unix seconds

	testHookLoaded func(id string) // tests: runs between a database read and the cache fill
}

type cacheEntry struct {
	fc      *fositeClient
	expires time.Time
}

// NewStore returns a Store over d. hasher hashes and compares client secrets; its key
// must be at least MinPepperLen bytes.
func NewStore(d *db.DB, hasher *SecretHasher, opts StoreOptions) (*Store, error) {
	if d == nil {
		return nil, errors.New("clients: NewStore: nil database")
	}
	if hasher == nil || len(hasher.Key) < MinPepperLen {
		return nil, fmt.Errorf("clients: NewStore: %w", errNoPepper)
	}
	s := &Store{db: d, hasher: hasher, clock: opts.Clock, ttl: opts.CacheTTL, max: opts.CacheMaxEntries, log: opts.Logger,
		remove: opts.BeforeRemove}
	if s.clock == nil {
		s.clock = time.Now
	}
	if s.ttl == 0 {
		s.ttl = DefaultCacheTTL
	}
	if s.max <= 0 {
		s.max = DefaultCacheMaxEntries
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	return s, nil
}

const selectClient = `SELECT id, name, type, auth_method, secret_hash, jwks, grant_types, scopes, audiences,
	may_impersonate, first_party, disabled, created_at, updated_at FROM clients`

// Create validates c (see Client.Validate, which fills in its defaults and, when
// c.ID is empty, a generated id) and registers it. For the secret methods it
// generates the client secret, stores only its hash in c.SecretHash and returns the
// secret, which cannot be recovered later; for private_key_jwt the secret is empty.
// Create sets c's timestamps. A taken id gives an error wrapping ErrExists.
func (s *Store) Create(ctx context.Context, c *Client) (string, error) {
	if err := c.Validate(); err != nil {
		return "", err
	}
	var secret string
	c.SecretHash = nil
	if c.UsesSecret() {
		secret = NewSecret()
		h, err := s.hasher.Hash(ctx, []byte(secret))
		if err != nil {
			return "", fmt.Errorf("clients: create %s: %w", c.ID, err)
		}
		c.SecretHash = h
	}
	now := s.now()
	c.CreatedAt, c.UpdatedAt = now, now
	cols, err := encodeLists(c)
	if err != nil {
		return "", fmt.Errorf("clients: create %s: %w", c.ID, err)
	}
	_, err = s.db.Exec(ctx, `INSERT INTO clients (id, name, type, auth_method, secret_hash, jwks,
		grant_types, scopes, audiences, may_impersonate, first_party, disabled, created_at, updated_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)`,
		c.ID, c.Name, c.Type, c.AuthMethod, c.SecretHash, string(c.JWKS),
		cols.grantTypes, cols.scopes, cols.audiences, c.MayImpersonate, c.FirstParty, c.Disabled,
		now.Unix(), now.Unix())
	if errors.Is(err, db.ErrConflict) {
		return "", fmt.Errorf("clients: create %s: %w: %w", c.ID, ErrExists, err)
	}
	if err != nil {
		return "", fmt.Errorf("clients: create %s: %w", c.ID, err)
	}
	s.Invalidate(c.ID)
	return secret, nil
}

// Get returns the client with the given id, disabled or not, from the cache when a
// fresh copy is there (without touching the database). Unknown ids give an error
// wrapping ErrNotFound.
func (s *Store) Get(ctx context.Context, id string) (*Client, error) {
	fc, err := s.lookup(ctx, id)
	if err != nil {
		return nil, err
	}
	return fc.c.Clone(), nil
}

// List returns every client, ordered by id.
func (s *Store) List(ctx context.Context) ([]*Client, error) {
	rows, err := s.db.Query(ctx, selectClient+` ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("clients: list: %w", err)
	}
	defer rows.Close()
	out := []*Client{}
	for rows.Next() {
		c, err := scanClient(rows)
		if err != nil {
			return nil, fmt.Errorf("clients: list: %w", err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("clients: list: %w", err)
	}
	return out, nil
}

// Update applies patch to the client and validates the result as a whole before
// writing it; a *ValidationError leaves the client unchanged.
func (s *Store) Update(ctx context.Context, id string, patch Patch) (*Client, error) {
	if !ValidID(id) {
		return nil, fmt.Errorf("clients: update: %w", ErrNotFound)
	}
	if patch.Disabled != nil && *patch.Disabled {
		if err := s.beforeRemove(ctx, id); err != nil {
			return nil, fmt.Errorf("clients: update %s: %w", id, err)
		}
	}
	var out *Client
	err := s.db.InTx(ctx, func(q db.Querier) error {
		c, err := scanClient(q.QueryRow(ctx, selectClient+` WHERE id = $1`+s.forUpdate(), id))
		if err != nil {
			return err
		}
		applyPatch(c, patch)
		if err := c.Validate(); err != nil {
			return err
		}
		c.UpdatedAt = s.now()
		cols, err := encodeLists(c)
		if err != nil {
			return err
		}
		n, err := q.Exec(ctx, `UPDATE clients SET name = $2, jwks = $3, grant_types = $4, scopes = $5,
			audiences = $6, may_impersonate = $7, first_party = $8, disabled = $9, updated_at = $10
			WHERE id = $1`,
			c.ID, c.Name, string(c.JWKS), cols.grantTypes, cols.scopes, cols.audiences,
			c.MayImpersonate, c.FirstParty, c.Disabled, c.UpdatedAt.Unix())
		if err != nil {
			return err
		}
		if n == 0 {
			return db.ErrNotFound
		}
		out = c
		return nil
	})
	s.Invalidate(id)
	if err != nil {
		if asValidation(err) {
			return nil, err
		}
		return nil, fmt.Errorf("clients: update %s: %w", id, notFound(err))
	}
	return out, nil
}

func applyPatch(c *Client, p Patch) {
	if p.Name != nil {
		c.Name = *p.Name
	}
	if p.GrantTypes != nil {
		c.GrantTypes = append([]string(nil), (*p.GrantTypes)...)
	}
	if p.Scopes != nil {
		c.Scopes = append([]string{}, (*p.Scopes)...)
	}
	if p.Audiences != nil {
		c.Audiences = append([]string{}, (*p.Audiences)...)
	}
	if p.JWKS != nil {
		c.JWKS = append(json.RawMessage(nil), (*p.JWKS)...)
	}
	if p.MayImpersonate != nil {
		c.MayImpersonate = *p.MayImpersonate
	}
	if p.FirstParty != nil {
		c.FirstParty = *p.FirstParty
	}
	if p.Disabled != nil {
		c.Disabled = *p.Disabled
	}
}

// RotateSecret replaces the client's secret with a fresh one and returns it. The old
// secret stops working at once on this node, and on other nodes within CacheTTL
// (sooner with a change listener). Clients using private_key_jwt have no secret and
// get a *ValidationError.
func (s *Store) RotateSecret(ctx context.Context, id string) (string, error) {
	if !ValidID(id) {
		return "", fmt.Errorf("clients: rotate secret: %w", ErrNotFound)
	}
	secret := NewSecret()
	hash, err := s.hasher.Hash(ctx, []byte(secret))
	if err != nil {
		return "", fmt.Errorf("clients: rotate secret %s: %w", id, err)
	}
	err = s.db.InTx(ctx, func(q db.Querier) error {
		var method string
		if err := q.QueryRow(ctx, `SELECT auth_method FROM clients WHERE id = $1`+s.forUpdate(), id).Scan(&method); err != nil {
			return err
		}
		if method != AuthClientSecretBasic && method != AuthClientSecretPost {
			return invalid("token_endpoint_auth_method", "client %s authenticates with %s and has no secret to rotate; update its jwks instead", id, method)
		}
		_, err := q.Exec(ctx, `UPDATE clients SET secret_hash = $2, updated_at = $3 WHERE id = $1`, id, hash, s.now().Unix())
		return err
	})
	s.Invalidate(id)
	if err != nil {
		if asValidation(err) {
			return "", err
		}
		return "", fmt.Errorf("clients: rotate secret %s: %w", id, notFound(err))
	}
	return secret, nil
}

// SetDisabled disables or re-enables a client. A disabled client cannot authenticate
// (GetClient reports it as not found) but stays registered.
func (s *Store) SetDisabled(ctx context.Context, id string, disabled bool) error {
	if !ValidID(id) {
		return fmt.Errorf("clients: set disabled: %w", ErrNotFound)
	}
	if disabled {
		if err := s.beforeRemove(ctx, id); err != nil {
			return fmt.Errorf("clients: disable %s: %w", id, err)
		}
	}
	n, err := s.db.Exec(ctx, `UPDATE clients SET disabled = $2, updated_at = $3 WHERE id = $1`, id, disabled, s.now().Unix())
	s.Invalidate(id)
	if err != nil {
		return fmt.Errorf("clients: set disabled %s: %w", id, err)
	}
	if n == 0 {
		return fmt.Errorf("clients: set disabled %s: %w", id, ErrNotFound)
	}
	return nil
}

// Delete removes a client, after StoreOptions.BeforeRemove (which the broker
// uses to revoke the client's tokens).
func (s *Store) Delete(ctx context.Context, id string) error {
	if !ValidID(id) {
		return fmt.Errorf("clients: delete: %w", ErrNotFound)
	}
	if err := s.beforeRemove(ctx, id); err != nil {
		return fmt.Errorf("clients: delete %s: %w", id, err)
	}
	n, err := s.db.Exec(ctx, `DELETE FROM clients WHERE id = $1`, id)
	s.Invalidate(id)
	if err != nil {
		return fmt.Errorf("clients: delete %s: %w", id, err)
	}
	if n == 0 {
		return fmt.Errorf("clients: delete %s: %w", id, ErrNotFound)
	}
	return nil
}

// Invalidate drops the cached copy of a client, so the next lookup reads the database.
// A listener for other nodes' changes (PostgreSQL NOTIFY) calls it.
func (s *Store) Invalidate(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gen.Add(1)
	if _, ok := s.cache.LoadAndDelete(id); ok {
		s.size--
	}
}

// InvalidateAll empties the cache, for a change listener that lost its connection
// and cannot know what it missed.
func (s *Store) InvalidateAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gen.Add(1)
	s.cache.Clear()
	s.size = 0
}

// lookup returns the client's adapter from the cache or the database.
func (s *Store) lookup(ctx context.Context, id string) (*fositeClient, error) {
	if !ValidID(id) {
		return nil, fmt.Errorf("clients: get: %w", ErrNotFound)
	}
	if s.ttl > 0 {
		if v, ok := s.cache.Load(id); ok {
			e := v.(*cacheEntry)
			if s.clock().Before(e.expires) {
				return e.fc, nil
			}
		}
	}
	gen := s.gen.Load()
	c, err := scanClient(s.db.QueryRow(ctx, selectClient+` WHERE id = $1`, id))
	if err != nil {
		return nil, fmt.Errorf("clients: get %s: %w", id, notFound(err))
	}
	fc := s.newFositeClient(c)
	if s.testHookLoaded != nil {
		s.testHookLoaded(id)
	}
	if s.ttl > 0 {
		s.remember(id, fc, gen)
	}
	return fc, nil
}

// remember caches fc unless an invalidation happened since the read began, which
// would mean fc may predate a local write.
func (s *Store) remember(id string, fc *fositeClient, gen uint64) {
	now := s.clock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gen.Load() != gen {
		return
	}
	if _, ok := s.cache.Load(id); !ok && s.size >= s.max {
		s.cache.Range(func(k, v any) bool {
			if !now.Before(v.(*cacheEntry).expires) {
				s.cache.Delete(k)
				s.size--
			}
			return true
		})
		if s.size >= s.max {
			return
		}
	}
	if _, loaded := s.cache.Swap(id, &cacheEntry{fc: fc, expires: now.Add(s.ttl)}); !loaded {
		s.size++
	}
}

func (s *Store) now() time.Time { return time.Unix(s.clock().Unix(), 0).UTC() }

func (s *Store) forUpdate() string {
	if s.db.Dialect() == db.Postgres {
		return ` FOR UPDATE`
	}
	return "" // SQLite transactions here begin IMMEDIATE and hold the write lock
}

func notFound(err error) error {
	if errors.Is(err, db.ErrNotFound) {
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	return err
}

type listColumns struct{ grantTypes, scopes, audiences string }

func encodeLists(c *Client) (listColumns, error) {
	var out listColumns
	for _, f := range []struct {
		dst *string
		src []string
	}{{&out.grantTypes, c.GrantTypes}, {&out.scopes, c.Scopes}, {&out.audiences, c.Audiences}} {
		if f.src == nil {
			f.src = []string{}
		}
		b, err := json.Marshal(f.src)
		if err != nil {
			return out, err
		}
		*f.dst = string(b)
	}
	return out, nil
}

func scanClient(r db.Row) (*Client, error) {
	var (
		c                          Client
		jwks, grants, scopes, auds string
		created, updated           int64
	)
	if err := r.Scan(&c.ID, &c.Name, &c.Type, &c.AuthMethod, &c.SecretHash, &jwks, &grants, &scopes, &auds,
		&c.MayImpersonate, &c.FirstParty, &c.Disabled, &created, &updated); err != nil {
		return nil, err
	}
	if jwks != "" {
		c.JWKS = json.RawMessage(jwks)
	}
	for _, f := range []struct {
		name string
		src  string
		dst  *[]string
	}{{"grant_types", grants, &c.GrantTypes}, {"scopes", scopes, &c.Scopes}, {"audiences", auds, &c.Audiences}} {
		if err := json.Unmarshal([]byte(f.src), f.dst); err != nil {
			return nil, fmt.Errorf("client %s: stored %s is not a JSON array: %w", c.ID, f.name, err)
		}
		if *f.dst == nil {
			*f.dst = []string{}
		}
	}
	if len(c.SecretHash) == 0 {
		c.SecretHash = nil
	}
	c.CreatedAt = time.Unix(created, 0).UTC()
	c.UpdatedAt = time.Unix(updated, 0).UTC()
	return &c, nil
}

func (s *Store) beforeRemove(ctx context.Context, id string) error {
	if s.remove == nil {
		return nil
	}
	return s.remove(ctx, id)
}
