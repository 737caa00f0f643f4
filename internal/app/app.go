// Package app wires a mandate node from its configuration: store, keys, clients,
// grants, ledger, policies, broker and HTTP server. cmd/mandate serve runs it;
// end-to-end tests and the conformance suite start it in-process.
package app

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/mandate-dev/mandate/broker"
	"github.com/mandate-dev/mandate/broker/clients"
	"github.com/mandate-dev/mandate/broker/keys"
	"github.com/mandate-dev/mandate/broker/ledger"
	"github.com/mandate-dev/mandate/grants"
	"github.com/mandate-dev/mandate/internal/adminkey"
	"github.com/mandate-dev/mandate/internal/config"
	"github.com/mandate-dev/mandate/internal/db"
	"github.com/mandate-dev/mandate/internal/devissuer"
	"github.com/mandate-dev/mandate/internal/notify"
	"github.com/mandate-dev/mandate/policies"
	"github.com/mandate-dev/mandate/policies/decisionlog"
	"github.com/mandate-dev/mandate/policies/registry"
	"github.com/mandate-dev/mandate/server"
)

// App is one running mandate node.
type App struct {
	Config   config.Config
	DB       *db.DB
	Keys     *keys.Manager
	Clients  *clients.Store
	Grants   *grants.Store
	Ledger   *ledger.Ledger
	Policies *policies.Engine
	Broker   *broker.Broker
	Dev      *devissuer.Issuer
	Admin    *adminkey.Store
	Echo     *echo.Echo
	// PolicyRegistry, PolicySync and Decisions are the policy lifecycle and the decision log.
	PolicyRegistry *registry.Registry
	PolicySync     *registry.Syncer
	Decisions      *decisionlog.Log
	Metrics        *server.Metrics
	Log            *slog.Logger

	// AdminKey is set when this start created the admin key (show it once).
	AdminKey string

	listener *notify.Listener
	edge     *edgeValidator
	syncedAt atomic.Int64 // unix nanos of the last successful revocation sync
	stop     context.CancelFunc
	workers  sync.WaitGroup
}

// Options adjust New for tests.
type Options struct {
	// KEK overrides MANDATE_KEK / kek_file (32 bytes).
	KEK []byte
	// AdminKey, when set and no admin key is stored yet, becomes the admin key.
	AdminKey string
	Logger   *slog.Logger
	Clock    func() time.Time
}

// New builds a node; Close releases it. cfg must have been through Finish.
func New(ctx context.Context, cfg config.Config, o Options) (_ *App, err error) {
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	a := &App{Config: cfg, Log: log}
	defer func() {
		if err != nil {
			a.Close() // releases whatever was opened before the failure
		}
	}()
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data_dir: %w", err)
	}
	kek := o.KEK
	if kek == nil {
		kek, err = loadKEK(cfg, log)
		if err != nil {
			return nil, err
		}
	}
	a.DB, err = db.Open(ctx, cfg.DatabaseURL, db.Options{MaxConns: cfg.Database.MaxConns, ConnectTimeout: cfg.Database.ConnectTimeout})
	if err != nil {
		return nil, err
	}
	if err := a.DB.Migrate(ctx); err != nil {
		return nil, err
	}
	// Outside dev mode a next key must be published for a while before it signs,
	// so that edges holding a cached JWKS have fetched it (rotate --now skips this).
	publishDelay := keys.RecommendedPublishDelay
	if cfg.Dev {
		publishDelay = 0
	}
	a.Keys, err = keys.NewManager(ctx, a.DB, kek, keys.Options{Alg: cfg.Tokens.SigningAlg, MaxTokenLifetime: cfg.Tokens.MaxLifetime,
		PublishDelay: publishDelay, Logger: log, Clock: o.Clock})
	if err != nil {
		return nil, err
	}
	// Audit records are written in batches: fewer, larger commits keep the
	// single SQLite writer ahead of the token endpoint (records land within 50ms).
	a.Ledger, err = ledger.Open(ctx, a.DB, ledger.Options{Logger: log, Clock: o.Clock, FlushInterval: 50 * time.Millisecond, BatchSize: 2000})
	if err != nil {
		return nil, err
	}
	pepper := derive(kek, "mandate/client-secret-pepper/v1")
	a.Clients, err = clients.NewStore(a.DB, &clients.SecretHasher{Key: pepper}, clients.StoreOptions{Logger: log, Clock: o.Clock,
		// Removing a client ends what it holds: its tokens, and their descendants.
		BeforeRemove: func(ctx context.Context, id string) error {
			n, err := a.Ledger.RevokeIssuedTo(ctx, id, "client "+id+" removed by admin")
			if n > 0 {
				log.Info("revoked a removed client's tokens", "client_id", id, "count", n)
			}
			return err
		}})
	if err != nil {
		return nil, err
	}
	a.Grants = grants.NewStore(a.DB, a.Ledger, grants.Options{MaxLifetime: cfg.Tokens.MaxLifetime, Clients: clientChecker{a.Clients}, Logger: log, Clock: o.Clock})
	a.Admin = adminkey.New(a.DB, derive(kek, "mandate/admin-key/v1"))

	trusted := append([]broker.TrustedIssuer(nil), cfg.Upstream...)
	if cfg.Dev {
		a.Dev, err = devissuer.Open(cfg.DataDir, cfg.Issuer+"/dev", cfg.Issuer)
		if err != nil {
			return nil, err
		}
		trusted = append(trusted, broker.TrustedIssuer{Issuer: a.Dev.Issuer(), JWKS: a.Dev.JWKS(), Audience: cfg.Issuer, Algorithms: []string{"ES256"}})
	}
	up, err := broker.NewUpstream(ctx, trusted, broker.UpstreamOptions{Clock: o.Clock, Leeway: cfg.Tokens.Leeway})
	if err != nil {
		return nil, err
	}

	a.Policies = policies.NewEngine(policies.EngineConfig{Timeout: cfg.Policies.EvalTimeout})
	startup, err := a.loadPolicies(ctx)
	if err != nil {
		return nil, err
	}
	// The registry is the record of which bundle runs: the default (or
	// --policies) bundle only seeds it on the very first start.
	a.PolicyRegistry = registry.New(a.DB, registry.Options{Logger: log, Clock: o.Clock})
	a.PolicySync = registry.NewSyncer(a.PolicyRegistry, a.Policies, registry.SyncerOptions{Logger: log})
	if err := a.PolicySync.Start(ctx, startup); err != nil {
		return nil, fmt.Errorf("policies: %w", err)
	}
	a.Decisions = decisionlog.New(a.DB, decisionlog.Options{Logger: log, Clock: o.Clock, FlushInterval: 50 * time.Millisecond, BatchSize: 2000})

	a.Metrics = server.NewMetrics(a.DB)
	a.Metrics.Registry.MustRegister(a.Decisions)
	a.Metrics.Gauge("mandate_revocations_tokens", "Token revocations in force.", func() float64 { n, _ := a.Ledger.Size(); return float64(n) })
	a.Metrics.Gauge("mandate_revocations_grants", "Grant revocations in force.", func() float64 { _, n := a.Ledger.Size(); return float64(n) })
	a.Metrics.Gauge("mandate_issued_records_pending", "Issued-token records waiting to be written.", func() float64 { return float64(a.Ledger.Pending()) })
	a.Metrics.Gauge("mandate_revocation_sync_lag_seconds", "Seconds since this node last read revocations from the database.", func() float64 {
		return time.Since(a.lastSync()).Seconds()
	})

	a.Broker, err = broker.New(broker.Config{
		Issuer: cfg.Issuer, AccessTokenLifetime: cfg.Tokens.AccessTokenLifetime, MaxTokenLifetime: cfg.Tokens.MaxLifetime,
		MaxDepth: cfg.Delegation.MaxDepth, Leeway: cfg.Tokens.Leeway,
	}, broker.Deps{
		Clients: a.Clients, Hasher: &clients.SecretHasher{Key: pepper}, Keys: broker.ManagerKeys{M: a.Keys},
		Upstream: up, Ledger: a.Ledger, Grants: grantLookup{a.Grants}, Decider: a.Policies, Decisions: a.recorders(), Logger: log, Clock: o.Clock,
	})
	if err != nil {
		return nil, err
	}

	// Finish grant revocations a crash may have cut short between the database
	// commit and the publish.
	if n, err := a.Grants.RepublishRevocations(ctx, time.Now().Add(-cfg.Tokens.MaxLifetime-5*time.Minute)); err != nil {
		log.Warn("republishing grant revocations", "err", err)
	} else if n > 0 {
		log.Info("republished grant revocations", "count", n)
	}

	a.AdminKey, err = a.ensureAdminKey(ctx, o.AdminKey)
	if err != nil {
		return nil, err
	}

	a.edge, err = newEdgeValidator(ctx, a)
	if err != nil {
		return nil, err
	}
	a.Metrics.Counter("mandate_validate_cache_hits_total", "GET /validate answers served from the verified-token cache.", func() float64 { h, _ := a.edge.cacheStats(); return float64(h) })
	a.Metrics.Counter("mandate_validate_cache_misses_total", "GET /validate answers that verified a signature.", func() float64 { _, m := a.edge.cacheStats(); return float64(m) })

	a.Echo = server.New(server.Options{
		Broker: a.Broker, Keys: a.Keys, Ledger: a.Ledger, AdminKeys: a.Admin, Dev: a.Dev,
		Ready: a.ready, Logger: log, MaxBodyBytes: cfg.HTTP.MaxBodyBytes, MaxInFlight: cfg.HTTP.MaxInFlight, RequestTimeout: cfg.Database.QueryTimeout,
		Metrics: a.Metrics, RateLimit: cfg.HTTP.RateLimit, RateBurst: cfg.HTTP.RateBurst, Validate: a.edge,
		Mount: func(e *echo.Echo, admin, user *echo.Group) {
			// Registry writes tell the other nodes to drop their caches.
			admin.Use(a.notifyOnWrite)
			user.Use(a.notifyOnWrite)
			server.RegisterClientAdmin(admin, a.Clients)
			server.RegisterKeyAdmin(admin, a.Keys)
			server.RegisterPolicyAdmin(admin, a.PolicyRegistry, a.Policies, a.Decisions)
			server.RegisterAdminGrants(admin, a.Grants)
			server.RegisterUserGrants(user, a.Grants, userAuth{a.Broker})
		},
	})

	a.listener = notify.NewListener(a.DB, log)
	a.listener.Handle(notify.Revocations, func(ctx context.Context, _ string) { a.syncRevocations(ctx) })
	a.listener.Handle(notify.Keys, func(ctx context.Context, _ string) { a.reloadKeys(ctx) })
	a.listener.Handle(notify.Clients, func(context.Context, string) { a.Clients.InvalidateAll() })
	a.listener.Handle(notify.Grants, func(context.Context, string) { a.Grants.InvalidateAll() })
	a.listener.Handle(notify.Policies, func(ctx context.Context, _ string) { a.pollPolicies(ctx) })

	bg, stop := context.WithCancel(context.Background())
	a.stop = stop
	for _, run := range []func(context.Context){a.listener.Run, a.edge.follow, a.background} {
		a.workers.Add(1)
		go func() {
			defer a.workers.Done()
			run(bg)
		}()
	}
	return a, nil
}

// Handler is the node's HTTP handler.
func (a *App) Handler() http.Handler { return a.Echo }

// Close stops background work and releases the store.
func (a *App) Close() {
	if a.stop != nil {
		a.stop()
		a.workers.Wait()
		a.stop = nil
	}
	if a.Decisions != nil {
		a.Decisions.Close()
		a.Decisions = nil
	}
	if a.Ledger != nil {
		a.Ledger.Close()
		a.Ledger = nil
	}
	if a.DB != nil {
		a.DB.Close()
		a.DB = nil
	}
}

func (a *App) ready(ctx context.Context) error {
	if err := a.DB.Ping(ctx); err != nil {
		return errors.New("database unreachable")
	}
	if a.Keys.Active() == nil {
		return errors.New("no active signing key")
	}
	if a.Policies.Active() == nil {
		return errors.New("no active policy bundle")
	}
	return nil
}

// background keeps this node in step with the others: revocations, keys, pruning.
func (a *App) background(ctx context.Context) {
	sync := time.NewTicker(a.Config.Revocations.SyncInterval)
	defer sync.Stop()
	reload := time.NewTicker(10 * time.Second)
	defer reload.Stop()
	prune := time.NewTicker(time.Hour)
	defer prune.Stop()
	policyPoll := time.NewTicker(500 * time.Millisecond)
	defer policyPoll.Stop()
	rotate := time.NewTicker(time.Minute)
	defer rotate.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-sync.C:
			a.syncRevocations(ctx)
		case <-reload.C:
			a.reloadKeys(ctx)
		case <-policyPoll.C:
			a.pollPolicies(ctx)
		case <-rotate.C:
			a.RotateIfDue(ctx)
		case <-prune.C:
			if _, err := a.Ledger.Prune(ctx); err != nil && ctx.Err() == nil {
				a.Log.Warn("revocation prune failed", "err", err)
			}
			if _, err := a.Keys.Prune(ctx); err != nil && ctx.Err() == nil {
				a.Log.Warn("key prune failed", "err", err)
			}
			if _, err := a.Decisions.Prune(ctx, time.Now().Add(-a.Config.Policies.DecisionRetention)); err != nil && ctx.Err() == nil {
				a.Log.Warn("decision log prune failed", "err", err)
			}
		}
	}
}

func (a *App) pollPolicies(ctx context.Context) {
	if _, err := a.PolicySync.Poll(ctx); err != nil && ctx.Err() == nil {
		a.Log.Warn("policy activation poll failed", "err", err)
	}
}

// loadPolicies compiles and tests the start-up bundle: the default one, or the
// --policies folder.
func (a *App) loadPolicies(ctx context.Context) (*policies.Bundle, error) {
	files, version := policies.DefaultFiles(), policies.DefaultVersion
	if dir := a.Config.Policies.Dir; dir != "" {
		var err error
		files, err = policies.LoadDir(dir)
		if err != nil {
			return nil, fmt.Errorf("policies.dir: %w", err)
		}
		version = "dir:" + filepath.Base(dir)
	}
	b, err := policies.Compile(ctx, version, files)
	if err != nil {
		return nil, fmt.Errorf("policies: %w", err)
	}
	rep, err := policies.RunTests(ctx, b)
	if err != nil {
		return nil, fmt.Errorf("policies: tests: %w", err)
	}
	if !rep.OK() {
		return nil, fmt.Errorf("policies: bundle %s fails its tests: %d passed, %d failed, %d errored", version, rep.Passed, rep.Failed, rep.Errored)
	}
	return b, nil
}

func (a *App) ensureAdminKey(ctx context.Context, want string) (string, error) {
	if !a.Config.Dev {
		key, _, err := a.Admin.Ensure(ctx, want)
		return key, err
	}
	// Dev mode keeps the admin key in a file so that `make run` can show it again.
	path := filepath.Join(a.Config.DataDir, "admin.key")
	if b, err := os.ReadFile(path); err == nil {
		key := strings.TrimSpace(string(b))
		if ok, err := a.Admin.Check(ctx, key); err == nil && ok {
			return key, nil
		}
	}
	key, created, err := a.Admin.Ensure(ctx, want)
	if err != nil {
		return "", err
	}
	if !created {
		if key, err = a.Admin.Reset(ctx, want); err != nil {
			return "", err
		}
	}
	if err := os.WriteFile(path, []byte(key+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	return key, nil
}

func loadKEK(cfg config.Config, log *slog.Logger) ([]byte, error) {
	if s := os.Getenv("MANDATE_KEK"); s != "" {
		k, err := keys.ParseKEK(s)
		if err != nil {
			return nil, fmt.Errorf("MANDATE_KEK: %w", err)
		}
		return k, nil
	}
	path := cfg.KEKFile
	if path == "" && cfg.Dev {
		path = filepath.Join(cfg.DataDir, "kek")
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			log.Warn("dev mode: generating a key-encryption key into the data folder; production must set MANDATE_KEK", "path", path)
			if err := os.WriteFile(path, []byte(keys.GenerateKEK()+"\n"), 0o600); err != nil {
				return nil, fmt.Errorf("write %s: %w", path, err)
			}
		}
	}
	if path == "" {
		return nil, errors.New("MANDATE_KEK is required (32 random bytes, base64; `openssl rand -base64 32`), or kek_file; dev mode generates one")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("kek_file: %w", err)
	}
	k, err := keys.ParseKEK(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, fmt.Errorf("kek_file %s: %w", path, err)
	}
	return k, nil
}

// derive separates keys for distinct purposes from the one KEK.
func derive(kek []byte, purpose string) []byte {
	m := hmac.New(sha256.New, kek)
	m.Write([]byte(purpose))
	return m.Sum(nil)
}

// grantLookup adapts the grants store to the broker's narrow view.
type grantLookup struct{ s *grants.Store }

func (g grantLookup) FindActive(ctx context.Context, iss, sub, clientID string) (*broker.Grant, error) {
	gr, err := g.s.FindActive(ctx, iss, sub, clientID)
	return toBrokerGrant(gr, err)
}

func (g grantLookup) ActiveByID(ctx context.Context, id string) (*broker.Grant, error) {
	gr, err := g.s.ActiveByID(ctx, id)
	return toBrokerGrant(gr, err)
}

func toBrokerGrant(g *grants.Grant, err error) (*broker.Grant, error) {
	if err != nil {
		if errors.Is(err, grants.ErrNotFound) || errors.Is(err, grants.ErrNotActive) {
			return nil, broker.ErrGrantNotFound
		}
		return nil, err
	}
	return &broker.Grant{ID: g.ID, Scopes: g.Scopes, Resources: g.Resources, MaxDepth: g.MaxDepth, MaxLifetime: g.MaxLifetime, AllowedSubAgents: g.AllowedSubAgents, ExpiresAt: g.ExpiresAt}, nil
}

type clientChecker struct{ s *clients.Store }

func (c clientChecker) ClientExists(ctx context.Context, id string) (bool, error) {
	_, err := c.s.Get(ctx, id)
	if errors.Is(err, clients.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// notifyOnWrite signals the other nodes after a successful write to the client,
// grant or key registries, so that their caches follow at once.
func (a *App) notifyOnWrite(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		err := next(c)
		m := c.Request().Method
		if err != nil || m == http.MethodGet || m == http.MethodHead || c.Response().Status >= 300 {
			return err
		}
		p := c.Path()
		var ch string
		switch {
		case strings.Contains(p, "/clients"):
			ch = notify.Clients
		case strings.Contains(p, "/grants"):
			ch = notify.Grants
		case strings.Contains(p, "/keys"):
			ch = notify.Keys
		default:
			return nil
		}
		if nerr := notify.Notify(c.Request().Context(), a.DB, ch, ""); nerr != nil {
			a.Log.Warn("notify other nodes", "channel", ch, "err", nerr)
		}
		return nil
	}
}

func (a *App) syncRevocations(ctx context.Context) {
	if err := a.Ledger.Sync(ctx); err != nil {
		if ctx.Err() == nil {
			a.Log.Warn("revocation sync failed", "err", err)
		}
		return
	}
	a.syncedAt.Store(time.Now().UnixNano())
}

func (a *App) lastSync() time.Time {
	if n := a.syncedAt.Load(); n > 0 {
		return time.Unix(0, n)
	}
	return time.Now()
}

// recorders fans token decisions out to the metrics (every request) and, later,
// the decision log.
func (a *App) recorders() broker.DecisionRecorder {
	return multiRecorder{a.Metrics, a.Decisions}
}

type multiRecorder []broker.DecisionRecorder

func (m multiRecorder) RecordDecision(ctx context.Context, au *broker.Audit) {
	for _, r := range m {
		r.RecordDecision(ctx, au)
	}
}

// userAuth verifies users' upstream tokens for the grants API, telling an
// unreachable IdP (503) from a bad token (401).
type userAuth struct{ b *broker.Broker }

func (u userAuth) AuthenticateUser(ctx context.Context, bearer string) (string, string, error) {
	iss, sub, err := u.b.AuthenticateUser(ctx, bearer)
	if errors.Is(err, broker.ErrUpstreamUnavailable) {
		return "", "", fmt.Errorf("%w: %v", server.ErrUserAuthUnavailable, err)
	}
	return iss, sub, err
}

func (a *App) reloadKeys(ctx context.Context) {
	if err := a.Keys.Reload(ctx); err != nil {
		if ctx.Err() == nil {
			a.Log.Warn("key reload failed", "err", err)
		}
		return
	}
	if err := a.edge.refresh(ctx); err != nil {
		a.Log.Warn("edge validator refresh failed", "err", err)
	}
}

// RotateIfDue rotates the signing keys every tokens.key_rotation_interval. Every
// node runs it; the rotation is idempotent (a published next key is promoted only
// after its publish delay) and the advisory lock lets one node act at a time.
func (a *App) RotateIfDue(ctx context.Context) {
	every := a.Config.Tokens.KeyRotationInterval
	if every <= 0 {
		return
	}
	list, err := a.Keys.List(ctx)
	if err != nil {
		return
	}
	due := false
	for _, k := range list {
		switch k.State {
		case keys.StateNext:
			due = true // finish a rotation in progress (promote after the publish delay)
		case keys.StateActive:
			if time.Since(k.ActivatedAt) >= every {
				due = true
			}
		}
	}
	if !due {
		return
	}
	if err := a.Keys.Rotate(ctx); err != nil && !errors.Is(err, keys.ErrRotationInProgress) && ctx.Err() == nil {
		a.Log.Warn("automatic key rotation failed", "err", err)
		return
	}
	if err := notify.Notify(ctx, a.DB, notify.Keys, ""); err != nil {
		a.Log.Warn("notify other nodes of a key rotation", "err", err)
	}
	a.reloadKeys(ctx)
}
