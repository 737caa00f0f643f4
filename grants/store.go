package grants

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/mandate-dev/mandate/internal/db"
)

// Revoker records a revocation durably and publishes it to every node and
// edge (implemented by the broker's ledger). Revoke must be idempotent: the
// store calls it again for a grant that is already revoked, so that a failed
// publish can be retried.
type Revoker interface {
	// Revoke records that the object kind/id is revoked until keepUntil,
	// after which no token it could affect is still valid. The store passes
	// kind RevocationKind.
	Revoke(ctx context.Context, kind, id, reason string, keepUntil time.Time) error
}

// ClientChecker tells whether a client id is registered.
type ClientChecker interface {
	ClientExists(ctx context.Context, id string) (bool, error)
}

// RevocationKind is the kind the store passes to Revoker.Revoke.
const RevocationKind = "grant"

// DefaultCacheTTL is how long FindActive and ActiveByID results are reused
// when Options.CacheTTL is zero.
const DefaultCacheTTL = 2 * time.Second

// revocationGrace is kept past the longest token lifetime, for clock skew
// between nodes and edges.
const revocationGrace = 5 * time.Minute

// publishTimeout bounds a Revoker call. The call does not inherit the
// caller's cancellation: once the database says revoked, the publish runs
// to the end even if the client hung up.
const publishTimeout = 15 * time.Second

// Options tune a Store. The zero value is usable.
type Options struct {
	// Clock returns the current time (default time.Now). Tests inject one.
	Clock func() time.Time
	// MaxLifetime is the server's longest token lifetime: a grant revocation is
	// kept for MaxLifetime + 5 minutes. Zero means MaxLifetimeLimit (24h), the
	// longest any grant allows, so that an unset value errs on keeping too long.
	MaxLifetime time.Duration
	// CacheTTL is how long FindActive and ActiveByID reuse a result (default
	// DefaultCacheTTL; negative disables the cache). Writes through this Store
	// invalidate at once; other nodes' writes are seen after at most CacheTTL,
	// or at once when a listener calls Invalidate.
	CacheTTL time.Duration
	// Clients, when set, makes Create refuse grants to unregistered clients.
	Clients ClientChecker
	// Logger receives warnings (default slog.Default()).
	Logger *slog.Logger
}

// Store keeps grants and their history in the database. It is safe for
// concurrent use; one Store per process is expected, since its cache is
// what makes FindActive and ActiveByID cheap.
type Store struct {
	db          *db.DB
	rev         Revoker
	clock       func() time.Time
	maxLifetime time.Duration
	clients     ClientChecker
	log         *slog.Logger
	cache       *cache
}

// NewStore returns a Store over d (migrated) that publishes revocations
// through rev. It panics if d or rev is nil: a store that cannot revoke
// must not exist.
func NewStore(d *db.DB, rev Revoker, opts Options) *Store {
	if d == nil || rev == nil {
		panic("grants: NewStore needs a database and a Revoker")
	}
	s := &Store{db: d, rev: rev, clock: opts.Clock, maxLifetime: opts.MaxLifetime, clients: opts.Clients, log: opts.Logger}
	if s.clock == nil {
		s.clock = time.Now
	}
	if s.maxLifetime <= 0 {
		s.maxLifetime = MaxLifetimeLimit
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	ttl := opts.CacheTTL
	if ttl == 0 {
		ttl = DefaultCacheTTL
	}
	s.cache = newCache(ttl)
	return s
}

// Narrowing lists the changes Narrow makes; nil fields stay as they are.
// Every change must narrow: see Narrow.
type Narrowing struct {
	Scopes           *[]string
	Resources        *[]string
	AllowedSubAgents *[]string
	MaxDepth         *int
	MaxLifetime      *time.Duration
	ExpiresAt        *time.Time
}

// Filter selects grants for List. Empty fields match everything.
type Filter struct {
	ClientID    string
	UserIssuer  string
	UserSubject string
	// Status is "", StatusActive, StatusRevoked or StatusExpired.
	Status string
	// Limit is 0 (DefaultListLimit) up to MaxListLimit.
	Limit int
}

// Event is one entry of a grant's history.
type Event struct {
	GrantID string
	// Seq numbers a grant's events from 1 (created), without gaps.
	Seq    int64
	At     time.Time
	Actor  string // AdminActor or UserActor(iss, sub)
	Action string // ActionCreated, ActionNarrowed or ActionRevoked
	// Detail is a JSON object: the grant as created; {"field": {"from": ..., "to": ...}}
	// for each narrowed field; {"reason": ...} for a revocation.
	Detail json.RawMessage
}

const grantCols = `id, user_issuer, user_subject, client_id, scopes, resources, max_depth, max_lifetime,
	allowed_sub_agents, expires_at, status, version, created_at, updated_at, revoked_at`

// errRetry asks a write loop to run again: another node changed the row.
var errRetry = errors.New("grants: concurrent update, retry")

// maxAttempts bounds the optimistic-concurrency retries of Narrow and Revoke.
// Running out means the grant is being changed faster than it can be read;
// the error then matches db.ErrUnavailable, so that the caller retries later.
const maxAttempts = 8

func (s *Store) now() time.Time { return s.clock() }

// Create stores a new active grant from g's user, client, scopes, resources,
// constraints and expiry (g's ID, Status and times are ignored, and g is not
// modified) and records a "created" event by actor. It returns the stored grant.
//
// actor is AdminActor, or UserActor of the grant's own user: a user creates
// grants only for themselves. Only an admin may grant the resource "*".
// Errors: *ValidationError (nothing stored); an *ExistsError matching ErrExists
// when the user already has an active grant to the client; db.ErrUnavailable.
func (s *Store) Create(ctx context.Context, g *Grant, actor string) (*Grant, error) {
	if g == nil {
		return nil, errors.New("grants: create: nil grant")
	}
	now := s.now()
	admin, iss, sub, err := parseActor(actor)
	if err != nil {
		return nil, fmt.Errorf("grants: create: %w", err)
	}
	n, err := validateNew(g, now, admin)
	if err != nil {
		return nil, fmt.Errorf("grants: create: %w", err)
	}
	if !admin && (iss != n.UserIssuer || sub != n.UserSubject) {
		return nil, fmt.Errorf("grants: create: %w", invalid("user_subject", "a user may create grants only for themselves"))
	}
	if s.clients != nil {
		ok, err := s.clients.ClientExists(ctx, n.ClientID)
		if err != nil {
			return nil, fmt.Errorf("grants: create: check client %s: %w", n.ClientID, err)
		}
		if !ok {
			return nil, fmt.Errorf("grants: create: %w", invalid("client_id", "%q is not a registered client", n.ClientID))
		}
	}
	at := time.Unix(now.Unix(), 0).UTC()
	n.ID = newID()
	n.Status = StatusActive
	n.CreatedAt, n.UpdatedAt, n.RevokedAt = at, at, time.Time{}
	n.version = 1
	detail, err := json.Marshal(snapshot(n))
	if err != nil {
		return nil, fmt.Errorf("grants: create: %w", err)
	}
	scopes, resources, subs := mustJSON(n.Scopes), mustJSON(n.Resources), mustJSON(n.AllowedSubAgents)
	err = s.db.InTx(ctx, func(q db.Querier) error {
		// An expired grant still marked active would hold the one-active slot.
		if _, err := q.Exec(ctx, `UPDATE grants SET status = 'expired', updated_at = $4
			WHERE user_issuer = $1 AND user_subject = $2 AND client_id = $3 AND status = 'active' AND expires_at <= $4`,
			n.UserIssuer, n.UserSubject, n.ClientID, at.Unix()); err != nil {
			return err
		}
		if _, err := q.Exec(ctx, `INSERT INTO grants (`+grantCols+`)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)`,
			n.ID, n.UserIssuer, n.UserSubject, n.ClientID, scopes, resources, int64(n.MaxDepth),
			int64(n.MaxLifetime/time.Second), subs, n.ExpiresAt.Unix(), n.Status, n.version,
			at.Unix(), at.Unix(), int64(0)); err != nil {
			return err
		}
		return insertEvent(ctx, q, n.ID, n.version, at, actor, ActionCreated, detail)
	})
	if errors.Is(err, db.ErrConflict) {
		exists := &ExistsError{}
		// Best effort: the conflicting grant may have been revoked since.
		_ = s.db.QueryRow(ctx, `SELECT id FROM grants WHERE user_issuer = $1 AND user_subject = $2
			AND client_id = $3 AND status = 'active'`, n.UserIssuer, n.UserSubject, n.ClientID).Scan(&exists.GrantID)
		return nil, fmt.Errorf("grants: create for client %s: %w", n.ClientID, exists)
	}
	if err != nil {
		return nil, fmt.Errorf("grants: create for client %s: %w", n.ClientID, err)
	}
	s.cache.invalidate(n.ID, &userKey{n.UserIssuer, n.UserSubject, n.ClientID})
	return n.Clone(), nil
}

// Get returns the grant, whatever its status, or ErrNotFound.
// It always reads the database.
func (s *Store) Get(ctx context.Context, id string) (*Grant, error) {
	g, err := getGrant(ctx, s.db, id, s.now())
	if err != nil {
		return nil, fmt.Errorf("grants: get %s: %w", id, err)
	}
	return g, nil
}

// ListByUser returns the user's grants of every status, newest first, at
// most MaxListLimit of them.
func (s *Store) ListByUser(ctx context.Context, iss, sub string) ([]*Grant, error) {
	if iss == "" || sub == "" {
		return nil, fmt.Errorf("grants: list by user: %w", invalid("user_subject", "issuer and subject are required"))
	}
	return s.List(ctx, Filter{UserIssuer: iss, UserSubject: sub, Limit: MaxListLimit})
}

// List returns the grants matching f, newest first. An invalid filter is a
// *ValidationError naming the field ("client_id", "status", "limit", ...).
func (s *Store) List(ctx context.Context, f Filter) ([]*Grant, error) {
	now := s.now()
	var (
		where []string
		args  []any
	)
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	if f.ClientID != "" {
		if !ValidClientID(f.ClientID) {
			return nil, fmt.Errorf("grants: list: %w", invalid("client_id", "must match %s", clientIDPattern))
		}
		where = append(where, "client_id = "+arg(f.ClientID))
	}
	if f.UserIssuer != "" {
		if verr := checkText("user_issuer", f.UserIssuer, MaxNameLength); verr != nil {
			return nil, fmt.Errorf("grants: list: %w", verr)
		}
		where = append(where, "user_issuer = "+arg(f.UserIssuer))
	}
	if f.UserSubject != "" {
		if verr := checkText("user_subject", f.UserSubject, MaxNameLength); verr != nil {
			return nil, fmt.Errorf("grants: list: %w", verr)
		}
		where = append(where, "user_subject = "+arg(f.UserSubject))
	}
	switch f.Status {
	case "":
	case StatusActive:
		where = append(where, "status = 'active' AND expires_at > "+arg(now.Unix()))
	case StatusExpired:
		where = append(where, "(status = 'expired' OR (status = 'active' AND expires_at <= "+arg(now.Unix())+"))")
	case StatusRevoked:
		where = append(where, "status = 'revoked'")
	default:
		return nil, fmt.Errorf("grants: list: %w", invalid("status", "must be active, revoked or expired"))
	}
	limit := f.Limit
	switch {
	case limit == 0:
		limit = DefaultListLimit
	case limit < 0 || limit > MaxListLimit:
		return nil, fmt.Errorf("grants: list: %w", invalid("limit", "must be between 1 and %d", MaxListLimit))
	}
	query := `SELECT ` + grantCols + ` FROM grants`
	if len(where) > 0 {
		query += ` WHERE ` + strings.Join(where, " AND ")
	}
	query += ` ORDER BY created_at DESC, id DESC LIMIT ` + arg(int64(limit))
	rows, err := s.db.Query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("grants: list: %w", err)
	}
	defer rows.Close()
	out := []*Grant{}
	for rows.Next() {
		g, err := scanGrant(rows, now)
		if err != nil {
			return nil, fmt.Errorf("grants: list: %w", err)
		}
		out = append(out, g)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("grants: list: %w", err)
	}
	return out, nil
}

// Narrow applies n to an active grant and records a "narrowed" event with
// each field's old and new value. Narrowing never widens, so every change
// must be:
//
//   - Scopes: a non-empty subset of the current scopes.
//   - Resources: each entry covered by a current entry (an exact resource by
//     a matching pattern, a pattern by a wider pattern).
//   - AllowedSubAgents: a subset of the current ones, unless those include "*".
//   - MaxDepth, MaxLifetime: lower. 0 ("server default") may become a number;
//     a number may not become 0.
//   - ExpiresAt: earlier, and still in the future.
//
// A narrowing that changes nothing is refused. actor is AdminActor or the
// grant's own user; anyone else gets ErrNotFound. Errors: *ValidationError,
// ErrNotFound, ErrNotActive (revoked or expired), db.ErrUnavailable.
func (s *Store) Narrow(ctx context.Context, id string, n Narrowing, actor string) (*Grant, error) {
	admin, iss, sub, err := parseActor(actor)
	if err != nil {
		return nil, fmt.Errorf("grants: narrow %s: %w", id, err)
	}
	for range maxAttempts {
		now := s.now()
		var out *Grant
		err = s.db.InTx(ctx, func(q db.Querier) error {
			old, err := getGrant(ctx, q, id, now)
			if err != nil {
				return err
			}
			if !admin && (old.UserIssuer != iss || old.UserSubject != sub) {
				return ErrNotFound
			}
			if old.Status != StatusActive {
				return fmt.Errorf("%w: it is %s", ErrNotActive, old.Status)
			}
			next, changes, err := applyNarrowing(old, n, now, admin)
			if err != nil {
				return err
			}
			detail, err := json.Marshal(changes)
			if err != nil {
				return err
			}
			rows, err := q.Exec(ctx, `UPDATE grants SET scopes = $3, resources = $4, max_depth = $5,
				max_lifetime = $6, allowed_sub_agents = $7, expires_at = $8, version = $9, updated_at = $10
				WHERE id = $1 AND version = $2 AND status = 'active'`,
				id, old.version, mustJSON(next.Scopes), mustJSON(next.Resources), int64(next.MaxDepth),
				int64(next.MaxLifetime/time.Second), mustJSON(next.AllowedSubAgents), next.ExpiresAt.Unix(),
				next.version, next.UpdatedAt.Unix())
			if err != nil {
				return err
			}
			if rows != 1 {
				return errRetry
			}
			if err := insertEvent(ctx, q, id, next.version, next.UpdatedAt, actor, ActionNarrowed, detail); err != nil {
				return err
			}
			out = next
			return nil
		})
		if errors.Is(err, errRetry) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("grants: narrow %s: %w", id, err)
		}
		s.cache.invalidate(id, &userKey{out.UserIssuer, out.UserSubject, out.ClientID})
		return out, nil
	}
	return nil, fmt.Errorf("grants: narrow %s: %w", id, errors.Join(db.ErrUnavailable, errRetry))
}

// applyNarrowing returns old with n applied, and the changes for the event.
func applyNarrowing(old *Grant, n Narrowing, now time.Time, admin bool) (*Grant, map[string]any, error) {
	next := old.Clone()
	changes := map[string]any{}
	change := func(field string, from, to any) { changes[field] = map[string]any{"from": from, "to": to} }
	if n.Scopes != nil {
		sc, verr := normScopes(*n.Scopes)
		if verr != nil {
			return nil, nil, verr
		}
		for _, s := range sc {
			if !slices.Contains(old.Scopes, s) {
				return nil, nil, invalid("scopes", "%q is not in the grant; narrowing cannot add scopes", s)
			}
		}
		if !slices.Equal(sc, old.Scopes) {
			change("scopes", old.Scopes, sc)
		}
		next.Scopes = sc
	}
	if n.Resources != nil {
		rs, verr := normResources(*n.Resources, admin, old.Resources)
		if verr != nil {
			return nil, nil, verr
		}
		for _, r := range rs {
			if !slices.ContainsFunc(old.Resources, func(o string) bool { return resourceCovers(o, r) }) {
				return nil, nil, invalid("resources", "%q is not covered by the grant's resources; narrowing cannot add resources", r)
			}
		}
		if !slices.Equal(rs, old.Resources) {
			change("resources", old.Resources, rs)
		}
		next.Resources = rs
	}
	if n.AllowedSubAgents != nil {
		sa, verr := normSubAgents(*n.AllowedSubAgents)
		if verr != nil {
			return nil, nil, verr
		}
		if !slices.Contains(old.AllowedSubAgents, AnySubAgent) {
			for _, a := range sa {
				if !slices.Contains(old.AllowedSubAgents, a) {
					return nil, nil, invalid("allowed_sub_agents", "%q may not receive re-delegation now; narrowing cannot add sub-agents", a)
				}
			}
		}
		if !slices.Equal(sa, old.AllowedSubAgents) {
			change("allowed_sub_agents", old.AllowedSubAgents, sa)
		}
		next.AllowedSubAgents = sa
	}
	if n.MaxDepth != nil {
		d := *n.MaxDepth
		if verr := checkDepth(d); verr != nil {
			return nil, nil, verr
		}
		if old.MaxDepth != 0 && (d == 0 || d > old.MaxDepth) {
			return nil, nil, invalid("max_depth", "may only be lowered (now %d; 0 would mean the server default)", old.MaxDepth)
		}
		if d != old.MaxDepth {
			change("max_depth", old.MaxDepth, d)
		}
		next.MaxDepth = d
	}
	if n.MaxLifetime != nil {
		l := *n.MaxLifetime
		if verr := checkLifetime(l); verr != nil {
			return nil, nil, verr
		}
		if old.MaxLifetime != 0 && (l == 0 || l > old.MaxLifetime) {
			return nil, nil, invalid("max_lifetime_seconds", "may only be lowered (now %d; 0 would mean the server default)", int64(old.MaxLifetime/time.Second))
		}
		if l != old.MaxLifetime {
			change("max_lifetime_seconds", int64(old.MaxLifetime/time.Second), int64(l/time.Second))
		}
		next.MaxLifetime = l
	}
	if n.ExpiresAt != nil {
		e, verr := checkExpiry(*n.ExpiresAt, now)
		if verr != nil {
			return nil, nil, verr
		}
		if e.After(old.ExpiresAt) {
			return nil, nil, invalid("expires_at", "may only be moved earlier (now %s)", old.ExpiresAt.Format(time.RFC3339))
		}
		if !e.Equal(old.ExpiresAt) {
			change("expires_at", old.ExpiresAt.Format(time.RFC3339), e.Format(time.RFC3339))
		}
		next.ExpiresAt = e
	}
	if len(changes) == 0 {
		return nil, nil, invalid("", "the narrowing changes nothing")
	}
	next.version = old.version + 1
	next.UpdatedAt = time.Unix(now.Unix(), 0).UTC()
	return next, changes, nil
}

// Revoke marks the grant revoked and records a "revoked" event (one
// transaction), then has the Revoker publish the revocation, to be kept until
// now + Options.MaxLifetime + 5 minutes. Only when the Revoker succeeds is the
// revocation done: otherwise Revoke returns an error matching ErrNotPublished
// (the grant stays revoked in the database) and the caller should retry.
//
// Revoking a revoked grant records nothing new but calls the Revoker again,
// so a retry completes a failed publish. An expired grant can be revoked.
// actor is AdminActor or the grant's own user; anyone else gets ErrNotFound.
func (s *Store) Revoke(ctx context.Context, id, actor, reason string) error {
	admin, iss, sub, err := parseActor(actor)
	if err != nil {
		return fmt.Errorf("grants: revoke %s: %w", id, err)
	}
	if verr := checkReason(reason); verr != nil {
		return fmt.Errorf("grants: revoke %s: %w", id, verr)
	}
	detail, err := json.Marshal(map[string]string{"reason": reason})
	if err != nil {
		return fmt.Errorf("grants: revoke %s: %w", id, err)
	}
	var (
		key  *userKey
		done bool
	)
	for range maxAttempts {
		now := s.now()
		err = s.db.InTx(ctx, func(q db.Querier) error {
			old, err := getGrant(ctx, q, id, now)
			if err != nil {
				return err
			}
			if !admin && (old.UserIssuer != iss || old.UserSubject != sub) {
				return ErrNotFound
			}
			key = &userKey{old.UserIssuer, old.UserSubject, old.ClientID}
			if old.Status == StatusRevoked {
				return nil
			}
			at := time.Unix(now.Unix(), 0).UTC()
			rows, err := q.Exec(ctx, `UPDATE grants SET status = 'revoked', revoked_at = $3, updated_at = $3, version = $4
				WHERE id = $1 AND version = $2`, id, old.version, at.Unix(), old.version+1)
			if err != nil {
				return err
			}
			if rows != 1 {
				return errRetry
			}
			return insertEvent(ctx, q, id, old.version+1, at, actor, ActionRevoked, detail)
		})
		if !errors.Is(err, errRetry) {
			done = true
			break
		}
	}
	if !done {
		return fmt.Errorf("grants: revoke %s: %w", id, errors.Join(db.ErrUnavailable, errRetry))
	}
	if err != nil {
		return fmt.Errorf("grants: revoke %s: %w", id, err)
	}
	s.cache.invalidate(id, key)
	return s.publish(ctx, id, reason, s.now())
}

func (s *Store) publish(ctx context.Context, id, reason string, revokedAt time.Time) error {
	keepUntil := revokedAt.Add(s.maxLifetime + revocationGrace)
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), publishTimeout)
	defer cancel()
	if err := s.rev.Revoke(pctx, RevocationKind, id, reason, keepUntil); err != nil {
		s.log.WarnContext(ctx, "grants: revocation recorded but not published; the caller must retry",
			slog.String("grant_id", id), slog.Any("err", err))
		return fmt.Errorf("grants: revoke %s: %w: %w", id, ErrNotPublished, err)
	}
	return nil
}

// RepublishRevocations calls the Revoker again for every grant revoked at or
// after since whose revocation must still be kept, for instance at startup to
// finish publishes cut short by a crash between the database commit and the
// Revoker. It returns how many it published and every failure, joined.
func (s *Store) RepublishRevocations(ctx context.Context, since time.Time) (int, error) {
	rows, err := s.db.Query(ctx, `SELECT id, revoked_at FROM grants WHERE status = 'revoked' AND revoked_at >= $1
		ORDER BY revoked_at`, since.Unix())
	if err != nil {
		return 0, fmt.Errorf("grants: republish revocations: %w", err)
	}
	type revoked struct {
		id string
		at int64
	}
	var todo []revoked
	for rows.Next() {
		var r revoked
		if err := rows.Scan(&r.id, &r.at); err != nil {
			rows.Close()
			return 0, fmt.Errorf("grants: republish revocations: %w", err)
		}
		todo = append(todo, r)
	}
	err = rows.Err()
	rows.Close()
	if err != nil {
		return 0, fmt.Errorf("grants: republish revocations: %w", err)
	}
	now := s.now()
	n := 0
	var errs []error
	for _, r := range todo {
		at := time.Unix(r.at, 0).UTC()
		if !at.Add(s.maxLifetime + revocationGrace).After(now) {
			continue // every token it could affect has expired
		}
		if err := s.publish(ctx, r.id, "", at); err != nil {
			errs = append(errs, err)
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

// Events returns the grant's history, oldest first: all of it, or the latest
// MaxEvents entries. ErrNotFound if there is no such grant.
func (s *Store) Events(ctx context.Context, id string) ([]Event, error) {
	if _, err := getGrant(ctx, s.db, id, s.now()); err != nil {
		return nil, fmt.Errorf("grants: events of %s: %w", id, err)
	}
	rows, err := s.db.Query(ctx, `SELECT grant_id, seq, at, actor, action, detail FROM grant_events
		WHERE grant_id = $1 ORDER BY seq DESC LIMIT $2`, id, int64(MaxEvents))
	if err != nil {
		return nil, fmt.Errorf("grants: events of %s: %w", id, err)
	}
	defer rows.Close()
	var out []Event
	for rows.Next() {
		var (
			e      Event
			at     int64
			detail string
		)
		if err := rows.Scan(&e.GrantID, &e.Seq, &at, &e.Actor, &e.Action, &detail); err != nil {
			return nil, fmt.Errorf("grants: events of %s: %w", id, err)
		}
		e.At = time.Unix(at, 0).UTC()
		e.Detail = json.RawMessage(detail)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("grants: events of %s: %w", id, err)
	}
	slices.Reverse(out)
	return out, nil
}

// FindActive returns the user's active, unexpired grant to clientID, or
// ErrNotFound. It is the exchange's hot path: results (misses too) are reused
// for Options.CacheTTL. A write through this Store is seen at once.
func (s *Store) FindActive(ctx context.Context, userIss, userSub, clientID string) (*Grant, error) {
	now := s.now()
	k := userKey{userIss, userSub, clientID}
	g, hit := s.cache.getUser(k, now)
	if !hit {
		gen := s.cache.generation()
		var err error
		g, err = s.queryActive(ctx, k, now)
		if err != nil {
			return nil, fmt.Errorf("grants: find active grant for client %s: %w", clientID, err)
		}
		s.cache.putUser(k, g, gen, now)
	}
	if g == nil || g.Status != StatusActive || now.Unix() >= g.ExpiresAt.Unix() {
		return nil, fmt.Errorf("grants: find active grant for client %s: %w", clientID, ErrNotFound)
	}
	return g, nil
}

func (s *Store) queryActive(ctx context.Context, k userKey, now time.Time) (*Grant, error) {
	// What cannot be stored cannot be found; PostgreSQL would also refuse NUL bytes with an error.
	if checkIssuer("user_issuer", k.iss) != nil || checkText("user_subject", k.sub, MaxNameLength) != nil || !ValidClientID(k.client) {
		return nil, nil
	}
	g, err := scanGrant(s.db.QueryRow(ctx, `SELECT `+grantCols+` FROM grants
		WHERE user_issuer = $1 AND user_subject = $2 AND client_id = $3 AND status = 'active' AND expires_at > $4`,
		k.iss, k.sub, k.client, now.Unix()), now)
	if errors.Is(err, db.ErrNotFound) {
		return nil, nil
	}
	return g, err
}

// ActiveByID returns the grant if it is active and unexpired. Otherwise the
// error matches ErrNotFound, and also ErrNotActive when the grant exists but
// is revoked or expired. Results are cached like FindActive's.
func (s *Store) ActiveByID(ctx context.Context, id string) (*Grant, error) {
	if !ValidID(id) {
		return nil, fmt.Errorf("grants: active grant %s: %w", id, ErrNotFound)
	}
	now := s.now()
	g, hit := s.cache.getID(id, now)
	if !hit {
		gen := s.cache.generation()
		var err error
		g, err = getGrant(ctx, s.db, id, now)
		if errors.Is(err, ErrNotFound) {
			g, err = nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("grants: active grant %s: %w", id, err)
		}
		s.cache.putID(id, g, gen, now)
	}
	switch {
	case g == nil:
		return nil, fmt.Errorf("grants: active grant %s: %w", id, ErrNotFound)
	case g.Status == StatusRevoked:
		return nil, fmt.Errorf("grants: active grant %s: %w: revoked (%w)", id, ErrNotActive, ErrNotFound)
	case g.Status == StatusExpired || now.Unix() >= g.ExpiresAt.Unix():
		return nil, fmt.Errorf("grants: active grant %s: %w: expired (%w)", id, ErrNotActive, ErrNotFound)
	}
	return g, nil
}

// Invalidate drops grant id from this Store's cache, with its (user, client)
// entry. A listener for other nodes' changes calls it.
func (s *Store) Invalidate(id string) { s.cache.invalidate(id, nil) }

// InvalidateAll empties this Store's cache, e.g. after a listener reconnects
// and may have missed notifications.
func (s *Store) InvalidateAll() { s.cache.invalidateAll() }

func getGrant(ctx context.Context, q db.Querier, id string, now time.Time) (*Grant, error) {
	if !ValidID(id) {
		return nil, ErrNotFound
	}
	g, err := scanGrant(q.QueryRow(ctx, `SELECT `+grantCols+` FROM grants WHERE id = $1`, id), now)
	if errors.Is(err, db.ErrNotFound) {
		return nil, ErrNotFound
	}
	return g, err
}

func scanGrant(row db.Row, now time.Time) (*Grant, error) {
	var (
		g                                                    Grant
		scopes, resources, subs, status                      string
		depth, life, exp, version, created, updated, revoked int64
	)
	if err := row.Scan(&g.ID, &g.UserIssuer, &g.UserSubject, &g.ClientID, &scopes, &resources, &depth, &life,
		&subs, &exp, &status, &version, &created, &updated, &revoked); err != nil {
		return nil, err
	}
	for _, f := range []struct {
		raw string
		dst *[]string
	}{{scopes, &g.Scopes}, {resources, &g.Resources}, {subs, &g.AllowedSubAgents}} {
		if err := json.Unmarshal([]byte(f.raw), f.dst); err != nil {
			return nil, fmt.Errorf("grants: corrupt row %s: %w", g.ID, err)
		}
		if *f.dst == nil {
			*f.dst = []string{}
		}
	}
	g.MaxDepth = int(depth)
	g.MaxLifetime = time.Duration(life) * time.Second
	g.ExpiresAt = time.Unix(exp, 0).UTC()
	g.CreatedAt = time.Unix(created, 0).UTC()
	g.UpdatedAt = time.Unix(updated, 0).UTC()
	if revoked != 0 {
		g.RevokedAt = time.Unix(revoked, 0).UTC()
	}
	g.version = version
	g.Status = status
	if status == StatusActive && exp <= now.Unix() {
		g.Status = StatusExpired
	}
	return &g, nil
}

func insertEvent(ctx context.Context, q db.Querier, id string, seq int64, at time.Time, actor, action string, detail []byte) error {
	_, err := q.Exec(ctx, `INSERT INTO grant_events (grant_id, seq, at, actor, action, detail) VALUES ($1, $2, $3, $4, $5, $6)`,
		id, seq, at.Unix(), actor, action, string(detail))
	return err
}

// mustJSON encodes a string list; a nil list is "[]".
func mustJSON(v []string) string {
	if v == nil {
		return "[]"
	}
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // a []string always encodes
	}
	return string(b)
}

// snapshot is a grant as recorded in its "created" event, in wire names.
func snapshot(g *Grant) map[string]any {
	return map[string]any{
		"user_issuer":          g.UserIssuer,
		"user_subject":         g.UserSubject,
		"client_id":            g.ClientID,
		"scopes":               g.Scopes,
		"resources":            g.Resources,
		"max_depth":            g.MaxDepth,
		"max_lifetime_seconds": int64(g.MaxLifetime / time.Second),
		"allowed_sub_agents":   g.AllowedSubAgents,
		"expires_at":           g.ExpiresAt.Format(time.RFC3339),
	}
}
