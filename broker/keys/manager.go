package keys

import (
	"bytes"
	"cmp"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"

	"github.com/mandate-dev/mandate/internal/db"
)

// State is where a key is in its life.
type State string

// A key is created next, becomes active, then retired, then is pruned.
const (
	// StateNext keys are published in the JWKS but do not sign yet, so that relying
	// parties have fetched them before the first token signed by them appears.
	StateNext State = "next"
	// StateActive is the key that signs. There is exactly one.
	StateActive State = "active"
	// StateRetired keys no longer sign but stay published until ExpiresAt, so the
	// tokens they signed still verify; after that Prune deletes them.
	StateRetired State = "retired"
)

const (
	// DefaultMaxTokenLifetime is Options.MaxTokenLifetime when unset.
	DefaultMaxTokenLifetime = time.Hour
	// RetireGrace is added to MaxTokenLifetime to keep a retired key published. It
	// covers the nodes that still sign with the old key until their next Reload,
	// and clock skew between nodes; the server's reload interval must stay well
	// below it.
	RetireGrace = 5 * time.Minute
	// RecommendedPublishDelay is the Options.PublishDelay the server uses: long
	// enough for every node to Reload and every relying party to refresh a cached
	// JWKS before a new key starts signing.
	RecommendedPublishDelay = 10 * time.Minute
)

// Options tune a Manager.
type Options struct {
	// Alg is the algorithm of keys this Manager creates: ES256 (the default) or
	// EdDSA. Keys already in the database keep theirs, so changing it takes
	// effect at the next rotation.
	Alg string
	// Clock returns the current time; time.Now when nil.
	Clock func() time.Time
	// MaxTokenLifetime is the longest lifetime of a token signed by these keys; a
	// retired key stays published this long plus RetireGrace. Default 1h.
	MaxTokenLifetime time.Duration
	// PublishDelay is how long a next key must have been published before Rotate
	// promotes it. Zero lets the second Rotate promote at once, which suits tests
	// and single-node use; a server with several nodes or cached JWKS at the edges
	// should use RecommendedPublishDelay or more.
	PublishDelay time.Duration
	// Logger receives lifecycle events (never key material); slog.Default when nil.
	Logger *slog.Logger
}

// ErrNoActiveKey is returned by Reload when the database holds no usable active key.
var ErrNoActiveKey = errors.New("no active signing key")

// PublicKey is a published key, for verifying tokens mandate signed. Treat it as read-only.
type PublicKey struct {
	KID string
	Alg string // ES256 or EdDSA
	Key crypto.PublicKey
}

// KeyInfo describes a stored key for operators. It never holds private material.
type KeyInfo struct {
	KID   string
	Alg   string
	State State
	// Published reports whether the key is in the JWKS now: every next and active
	// key, and retired keys until ExpiresAt.
	Published   bool
	CreatedAt   time.Time
	ActivatedAt time.Time // zero until the key becomes active
	RetiredAt   time.Time // zero until the key is retired
	ExpiresAt   time.Time // zero until the key is retired
}

// Manager owns mandate's signing keys: it creates, encrypts, rotates and prunes
// them in the database and serves the current set to the hot path from an
// immutable in-memory snapshot. It is safe for concurrent use.
type Manager struct {
	db           *db.DB
	kek          sealer
	alg          string
	now          func() time.Time
	maxLifetime  time.Duration
	publishDelay time.Duration
	log          *slog.Logger

	reloadMu sync.Mutex // serializes Reload; the hot path never takes it
	cur      atomic.Pointer[snapshot]
}

// snapshot is one consistent view of the published keys. It is never modified
// once stored; changes build a new one.
type snapshot struct {
	active *SigningKey
	keys   map[string]*loadedKey // published keys by kid
	list   []*loadedKey          // the same keys in JWKS order
	setID  string                // the kids and states in list, to tell when the JWKS must change
	jwks   []byte
	// nextExpiry is the earliest expires_at (unix seconds) among retired keys in
	// list, 0 if none: when the clock reaches it the snapshot must drop that key.
	nextExpiry int64
}

// loadedKey is a decrypted, verified key row.
type loadedKey struct {
	row keyRow
	sk  *SigningKey
	pub *PublicKey
	jwk jwk.Key
}

// keyRow is a signing_keys row; times are unix seconds, 0 when unset.
type keyRow struct {
	kid, alg, state                      string
	enc                                  []byte
	publicJWK                            string
	created, activated, retired, expires int64
}

// NewManager loads the signing keys from d, decrypting them with kek (32 bytes,
// see ParseKEK), and generates and activates a first key when there is no active
// one. On PostgreSQL that happens under an advisory lock, so nodes starting
// together create exactly one; on SQLite the write transaction serializes them.
func NewManager(ctx context.Context, d *db.DB, kek []byte, opts Options) (*Manager, error) {
	if d == nil {
		return nil, errors.New("keys: nil database")
	}
	alg := opts.Alg
	switch alg {
	case "":
		alg = ES256
	case ES256, EdDSA:
	default:
		return nil, fmt.Errorf("keys: unsupported signing algorithm %q: want %s or %s", opts.Alg, ES256, EdDSA)
	}
	if opts.MaxTokenLifetime < 0 || opts.PublishDelay < 0 {
		return nil, errors.New("keys: MaxTokenLifetime and PublishDelay must not be negative")
	}
	s, err := newSealer(kek)
	if err != nil {
		return nil, fmt.Errorf("keys: %w", err)
	}
	m := &Manager{
		db:           d,
		kek:          s,
		alg:          alg,
		now:          opts.Clock,
		maxLifetime:  cmp.Or(opts.MaxTokenLifetime, DefaultMaxTokenLifetime),
		publishDelay: opts.PublishDelay,
		log:          cmp.Or(opts.Logger, slog.Default()),
	}
	if m.now == nil {
		m.now = time.Now
	}
	if err := m.ensureActive(ctx); err != nil {
		return nil, fmt.Errorf("keys: start: %w", err)
	}
	if err := m.reload(ctx); err != nil {
		return nil, fmt.Errorf("keys: start: %w", err)
	}
	return m, nil
}

// ensureActive creates and activates a key unless one is active already.
func (m *Manager) ensureActive(ctx context.Context) error {
	// Every start after the first finds a key without taking a lock.
	if n, err := countActive(ctx, m.db); err != nil || n > 0 {
		return err
	}
	return m.db.InTx(ctx, func(q db.Querier) error {
		if _, err := lockKeys(ctx, m.db, q, true); err != nil {
			return err
		}
		n, err := countActive(ctx, q)
		if err != nil || n > 0 {
			return err // another node won the race
		}
		kid, err := m.insertKey(ctx, q, StateActive, m.now().Unix())
		if err != nil {
			return err
		}
		m.log.InfoContext(ctx, "created first signing key", "kid", kid, "alg", m.alg)
		return nil
	})
}

func countActive(ctx context.Context, q db.Querier) (int64, error) {
	var n int64
	if err := q.QueryRow(ctx, `SELECT COUNT(*) FROM signing_keys WHERE state = $1`, string(StateActive)).Scan(&n); err != nil {
		return 0, fmt.Errorf("count active keys: %w", err)
	}
	return n, nil
}

// Active returns the key that signs now. It never blocks and never returns nil
// on a Manager returned by NewManager.
func (m *Manager) Active() *SigningKey { return m.cur.Load().active }

// PublicKey returns the published key named kid: a next, active, or unexpired
// retired key. Verifying a token under any other kid must fail.
func (m *Manager) PublicKey(kid string) (*PublicKey, bool) {
	k, ok := m.published().keys[kid]
	if !ok {
		return nil, false
	}
	return k.pub, true
}

// JWKS returns the JSON Web Key Set of the published keys, {"keys":[...]}, each
// with kid, alg and "use":"sig", ready to serve. It is computed when the key set
// changes and shared between calls: callers must not modify it.
func (m *Manager) JWKS() []byte { return m.published().jwks }

// published returns the current snapshot, first dropping retired keys that have
// expired since it was built, so a key leaves the JWKS on time even between
// reloads.
func (m *Manager) published() *snapshot {
	s := m.cur.Load()
	if s.nextExpiry == 0 {
		return s
	}
	now := m.now().Unix()
	if now < s.nextExpiry {
		return s
	}
	ns, err := m.build(s, s.list, now)
	if err != nil {
		return s // cannot happen: the active key never expires
	}
	m.cur.CompareAndSwap(s, ns) // losing to a Reload is fine: it is at least as fresh
	return ns
}

// Reload re-reads the keys from the database, so this node follows rotations
// made by others. Keys already loaded are not decrypted again, and the JWKS is
// rebuilt only if the set changed. On error the previous keys stay in use.
func (m *Manager) Reload(ctx context.Context) error {
	if err := m.reload(ctx); err != nil {
		return fmt.Errorf("keys: reload: %w", err)
	}
	return nil
}

func (m *Manager) reload(ctx context.Context) error {
	m.reloadMu.Lock()
	defer m.reloadMu.Unlock()
	now := m.now().Unix()
	rows, err := m.db.Query(ctx, `SELECT kid, alg, state, private_enc, public_jwk, created_at, activated_at, retired_at, expires_at
		FROM signing_keys WHERE state IN ($1, $2) OR (state = $3 AND expires_at > $4)`,
		string(StateNext), string(StateActive), string(StateRetired), now)
	if err != nil {
		return fmt.Errorf("read keys: %w", err)
	}
	defer rows.Close()
	prev := m.cur.Load()
	var keys []*loadedKey
	for rows.Next() {
		var r keyRow
		if err := rows.Scan(&r.kid, &r.alg, &r.state, &r.enc, &r.publicJWK, &r.created, &r.activated, &r.retired, &r.expires); err != nil {
			return fmt.Errorf("read keys: %w", err)
		}
		switch State(r.state) {
		case StateNext, StateActive, StateRetired:
		default:
			m.log.WarnContext(ctx, "ignoring signing key in unknown state", "kid", r.kid, "state", r.state)
			continue
		}
		k, err := m.open(prev, r)
		if err != nil {
			return err
		}
		keys = append(keys, k)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read keys: %w", err)
	}
	s, err := m.build(prev, keys, now)
	if err != nil {
		return err
	}
	m.cur.Store(s)
	switch {
	case prev == nil:
		m.log.InfoContext(ctx, "loaded signing keys", "active", s.active.KID, "alg", s.active.Alg, "published", len(s.list))
	case prev.active.KID != s.active.KID:
		m.log.InfoContext(ctx, "signing key changed", "active", s.active.KID, "previous", prev.active.KID, "alg", s.active.Alg)
	}
	return nil
}

// open decrypts and checks a row, reusing the key from prev when the row's
// ciphertext is unchanged.
func (m *Manager) open(prev *snapshot, r keyRow) (*loadedKey, error) {
	if prev != nil {
		if k, ok := prev.keys[r.kid]; ok && k.row.alg == r.alg && bytes.Equal(k.row.enc, r.enc) && k.row.publicJWK == r.publicJWK {
			return &loadedKey{row: r, sk: k.sk, pub: k.pub, jwk: k.jwk}, nil
		}
	}
	der, err := m.kek.open(r.kid, r.enc)
	if err != nil {
		return nil, err
	}
	priv, err := x509.ParsePKCS8PrivateKey(der)
	clear(der)
	if err != nil {
		return nil, fmt.Errorf("signing key %q: parse private key: %w", r.kid, err)
	}
	signer, ok := priv.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("signing key %q: %T is not a signer", r.kid, priv)
	}
	sk, err := newSigningKey(r.kid, signer)
	if err != nil {
		return nil, err
	}
	if sk.Alg != r.alg {
		return nil, fmt.Errorf("signing key %q: stored alg %q but the key is %s", r.kid, r.alg, sk.Alg)
	}
	// The JWKS is built from the decrypted private key, so only keys sealed under
	// the KEK are ever published; a public half that disagrees means the row was
	// altered, and is refused rather than ignored.
	stored, err := jwk.ParseKey([]byte(r.publicJWK))
	if err != nil {
		return nil, fmt.Errorf("signing key %q: parse stored public key: %w", r.kid, err)
	}
	var raw any
	if err := stored.Raw(&raw); err != nil {
		return nil, fmt.Errorf("signing key %q: stored public key: %w", r.kid, err)
	}
	if eq, ok := sk.Public.(interface{ Equal(crypto.PublicKey) bool }); !ok || !eq.Equal(raw) || stored.KeyID() != r.kid {
		return nil, fmt.Errorf("signing key %q: stored public key does not match its private key", r.kid)
	}
	pj, err := publicJWK(sk)
	if err != nil {
		return nil, err
	}
	return &loadedKey{row: r, sk: sk, pub: &PublicKey{KID: sk.KID, Alg: sk.Alg, Key: sk.Public}, jwk: pj}, nil
}

// build makes a snapshot of the keys still published at now, reusing prev's
// JWKS when the set is the same.
func (m *Manager) build(prev *snapshot, keys []*loadedKey, now int64) (*snapshot, error) {
	s := &snapshot{keys: make(map[string]*loadedKey, len(keys))}
	var active *loadedKey
	nActive := 0
	for _, k := range keys {
		if k.row.state == string(StateRetired) && k.row.expires <= now {
			continue
		}
		s.list = append(s.list, k)
		s.keys[k.row.kid] = k
		switch k.row.state {
		case string(StateActive):
			nActive++
			// Should two ever be active, sign with the newest; both stay published.
			if active == nil || k.row.activated > active.row.activated ||
				(k.row.activated == active.row.activated && k.row.kid > active.row.kid) {
				active = k
			}
		case string(StateRetired):
			if s.nextExpiry == 0 || k.row.expires < s.nextExpiry {
				s.nextExpiry = k.row.expires
			}
		}
	}
	if active == nil {
		return nil, ErrNoActiveKey
	}
	if nActive > 1 {
		m.log.Warn("several active signing keys; signing with the newest", "count", nActive, "kid", active.row.kid)
	}
	s.active = active.sk
	slices.SortFunc(s.list, func(a, b *loadedKey) int {
		return cmp.Or(
			cmp.Compare(stateRank(a.row.state), stateRank(b.row.state)),
			cmp.Compare(b.row.created, a.row.created),
			strings.Compare(a.row.kid, b.row.kid))
	})
	var id strings.Builder
	for _, k := range s.list {
		id.WriteString(k.row.kid)
		id.WriteByte(':')
		id.WriteString(k.row.state)
		id.WriteByte(';')
	}
	s.setID = id.String()
	if prev != nil && prev.setID == s.setID {
		s.jwks = prev.jwks
		return s, nil
	}
	set := jwk.NewSet()
	for _, k := range s.list {
		if err := set.AddKey(k.jwk); err != nil {
			return nil, fmt.Errorf("build JWKS: %w", err)
		}
	}
	b, err := json.Marshal(set)
	if err != nil {
		return nil, fmt.Errorf("build JWKS: %w", err)
	}
	s.jwks = b
	return s, nil
}

func stateRank(s string) int {
	switch State(s) {
	case StateActive:
		return 0
	case StateNext:
		return 1
	default:
		return 2
	}
}

// publicJWK is the public half of k as a JWK with kid, alg and use.
func publicJWK(k *SigningKey) (jwk.Key, error) {
	j, err := jwk.FromRaw(k.Public)
	if err != nil {
		return nil, fmt.Errorf("signing key %q: public JWK: %w", k.KID, err)
	}
	for name, v := range map[string]any{
		jwk.KeyIDKey:     k.KID,
		jwk.AlgorithmKey: jwa.SignatureAlgorithm(k.Alg),
		jwk.KeyUsageKey:  jwk.ForSignature,
	} {
		if err := j.Set(name, v); err != nil {
			return nil, fmt.Errorf("signing key %q: public JWK %s: %w", k.KID, name, err)
		}
	}
	return j, nil
}

// newKID returns a random key id: 96 bits, base64url.
func newKID() string {
	b := make([]byte, 12)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// generate makes a private key for alg.
func generate(alg string) (crypto.Signer, error) {
	switch alg {
	case ES256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case EdDSA:
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		return priv, err
	default:
		return nil, fmt.Errorf("unsupported algorithm %q", alg)
	}
}

// insertKey generates a key of the Manager's algorithm, seals it and stores it
// in the given state at time t, returning its kid.
func (m *Manager) insertKey(ctx context.Context, q db.Querier, state State, t int64) (string, error) {
	signer, err := generate(m.alg)
	if err != nil {
		return "", fmt.Errorf("generate key: %w", err)
	}
	kid := newKID()
	sk, err := newSigningKey(kid, signer)
	if err != nil {
		return "", err
	}
	pj, err := publicJWK(sk)
	if err != nil {
		return "", err
	}
	pub, err := json.Marshal(pj)
	if err != nil {
		return "", fmt.Errorf("signing key %q: marshal public JWK: %w", kid, err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(signer)
	if err != nil {
		return "", fmt.Errorf("signing key %q: marshal private key: %w", kid, err)
	}
	enc := m.kek.seal(kid, der)
	clear(der)
	var activated int64
	if state == StateActive {
		activated = t
	}
	if _, err := q.Exec(ctx, `INSERT INTO signing_keys (kid, alg, state, private_enc, public_jwk, created_at, activated_at, retired_at, expires_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, 0, 0)`, kid, m.alg, string(state), enc, string(pub), t, activated); err != nil {
		return "", fmt.Errorf("store signing key %q: %w", kid, err)
	}
	return kid, nil
}

// List returns every stored key, newest first, for operators; it includes
// retired keys awaiting Prune. It never returns private material.
func (m *Manager) List(ctx context.Context) ([]KeyInfo, error) {
	now := m.now().Unix()
	rows, err := m.db.Query(ctx, `SELECT kid, alg, state, created_at, activated_at, retired_at, expires_at
		FROM signing_keys ORDER BY created_at DESC, kid`)
	if err != nil {
		return nil, fmt.Errorf("keys: list: %w", err)
	}
	defer rows.Close()
	var out []KeyInfo
	for rows.Next() {
		var r keyRow
		if err := rows.Scan(&r.kid, &r.alg, &r.state, &r.created, &r.activated, &r.retired, &r.expires); err != nil {
			return nil, fmt.Errorf("keys: list: %w", err)
		}
		st := State(r.state)
		out = append(out, KeyInfo{
			KID:         r.kid,
			Alg:         r.alg,
			State:       st,
			Published:   st == StateNext || st == StateActive || (st == StateRetired && now < r.expires),
			CreatedAt:   unixTime(r.created),
			ActivatedAt: unixTime(r.activated),
			RetiredAt:   unixTime(r.retired),
			ExpiresAt:   unixTime(r.expires),
		})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("keys: list: %w", err)
	}
	return out, nil
}

func unixTime(s int64) time.Time {
	if s == 0 {
		return time.Time{}
	}
	return time.Unix(s, 0).UTC()
}
