package conformance

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/mandate-dev/mandate/broker"
	"github.com/mandate-dev/mandate/internal/app"
	"github.com/mandate-dev/mandate/internal/config"
	"github.com/mandate-dev/mandate/internal/db"
	"github.com/mandate-dev/mandate/internal/db/dbtest"
)

const testAdminKey = "mnd_admin_conformance-test-key-0123456789abcdef0123456789"

var testKEK = []byte("conformance-kek-0123456789abcdef")

// newTestIdP starts the suite's IdP for one test.
func newTestIdP(t *testing.T) *IdP {
	t.Helper()
	idp, err := NewIdP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { idp.Close() })
	return idp
}

// startMandate starts a production-mode mandate node in-process on a loopback
// port, trusting idp as its upstream issuer, and returns its URL. The IdP must
// be up first: its JWKS URL is part of the node's configuration.
func startMandate(t *testing.T, dialect db.Dialect, idp *IdP) string {
	t.Helper()
	dsn := "sqlite:" + filepath.Join(t.TempDir(), "mandate.db")
	if dialect == db.Postgres {
		dsn = dbtest.SchemaURL(t)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + ln.Addr().String()
	cfg := config.Default()
	cfg.Listen = ln.Addr().String()
	cfg.Issuer = base
	cfg.DataDir = t.TempDir()
	cfg.DatabaseURL = dsn
	cfg.Upstream = []broker.TrustedIssuer{{
		Issuer: idp.URL(), JWKSURI: idp.JWKSURL(), Audience: base, Algorithms: []string{"ES256"},
	}}
	if err := cfg.Finish(); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	a, err := app.New(context.Background(), cfg, app.Options{KEK: testKEK, AdminKey: testAdminKey, Logger: log})
	if err != nil {
		t.Fatalf("start mandate: %v", err)
	}
	srv := httptest.NewUnstartedServer(a.Handler())
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(func() { srv.Close(); a.Close() })
	return base
}

// setupNode starts the IdP and a node on the backend and sets the node up for the suite.
func setupNode(t *testing.T, dialect db.Dialect) (*Target, *IdP) {
	t.Helper()
	idp := newTestIdP(t)
	base := startMandate(t, dialect, idp)
	target, err := SetupMandate(context.Background(), base, testAdminKey, idp)
	if err != nil {
		t.Fatalf("setup: %v", err)
	}
	return target, idp
}
