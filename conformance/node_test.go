package conformance

import (
	"context"
	"testing"

	"github.com/mandate-dev/mandate/broker"
	"github.com/mandate-dev/mandate/internal/app/apptest"
	"github.com/mandate-dev/mandate/internal/config"
	"github.com/mandate-dev/mandate/internal/db"
	"github.com/mandate-dev/mandate/internal/db/dbtest"
)

const testAdminKey = apptest.AdminKey

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
	var dsn string
	if dialect == db.Postgres {
		dsn = dbtest.SchemaURL(t)
	}
	n := apptest.Start(t, apptest.Options{DSN: dsn, Configure: func(cfg *config.Config, base string) {
		cfg.Upstream = []broker.TrustedIssuer{{
			Issuer: idp.URL(), JWKSURI: idp.JWKSURL(), Audience: base, Algorithms: []string{"ES256"},
		}}
	}})
	return n.URL
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
