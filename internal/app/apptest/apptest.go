// Package apptest starts mandate nodes in-process on loopback ports for tests
// that drive them over real HTTP: the end-to-end tests, the conformance suite,
// the load command's tests.
//
//	n := apptest.Start(t, apptest.Options{Dev: true})
//	resp, err := http.Get(n.URL + "/.well-known/oauth-authorization-server")
package apptest

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mandate-dev/mandate/internal/app"
	"github.com/mandate-dev/mandate/internal/config"
)

// Test secrets: fixed, so that several nodes of one test can share a database.
const (
	AdminKey = "mnd_admin_e2e-test-key-0123456789abcdef0123456789abcdef"
	kek      = "0123456789abcdef0123456789abcdef"
)

// KEK is the key-encryption key test nodes use.
func KEK() []byte { return []byte(kek) }

// Options shape a test node. The zero value is a production-mode node on SQLite.
type Options struct {
	// DSN is the database URL; default SQLite in a temporary folder.
	DSN string
	// Dev starts the node in dev mode (dev upstream issuer, admin key file).
	Dev bool
	// Configure adjusts the configuration before it is checked; base is the node's URL.
	Configure func(cfg *config.Config, base string)
	// Logger receives the node's logs; default: discarded (warnings on stderr with -v).
	Logger *slog.Logger
}

// Node is a running test node; it stops at the test's cleanup.
type Node struct {
	URL      string
	AdminKey string
	App      *app.App
}

// Start starts a node on 127.0.0.1:0 and serves it over real HTTP.
func Start(t testing.TB, o Options) *Node {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + ln.Addr().String()
	cfg := config.Default()
	cfg.Dev = o.Dev
	cfg.Listen = ln.Addr().String()
	cfg.Issuer = base
	cfg.DataDir = t.TempDir()
	cfg.DatabaseURL = o.DSN
	if cfg.DatabaseURL == "" {
		cfg.DatabaseURL = "sqlite:" + filepath.Join(cfg.DataDir, "mandate.db")
	}
	if o.Configure != nil {
		o.Configure(&cfg, base)
	}
	if err := cfg.Finish(); err != nil {
		t.Fatal(err)
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
		if testing.Verbose() {
			log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
		}
	}
	a, err := app.New(context.Background(), cfg, app.Options{KEK: KEK(), AdminKey: AdminKey, Logger: log})
	if err != nil {
		t.Fatalf("start node: %v", err)
	}
	srv := httptest.NewUnstartedServer(a.Handler())
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(func() { srv.Close(); a.Close() })
	n := &Node{URL: base, AdminKey: AdminKey, App: a}
	if o.Dev {
		// Dev mode keeps the admin key in a file, as `make run` does.
		key, err := os.ReadFile(filepath.Join(cfg.DataDir, "admin.key"))
		if err != nil {
			t.Fatalf("dev admin key file: %v", err)
		}
		n.AdminKey = strings.TrimSpace(string(key))
	}
	return n
}
