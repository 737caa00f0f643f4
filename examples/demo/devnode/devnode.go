// Package devnode runs a dev-mode mandate node in-process, on a free loopback
// port, exactly as `mandate serve --dev` would run it: embedded SQLite in a data
// folder, the dev upstream issuer for user tokens, the default policy bundle and
// the HTTP server settings of the serve command.
//
// The demo uses it so that `make demo` needs no built binary and no free port
// 8080, and the examples' tests use it to drive a real broker over real HTTP:
//
//	n, err := devnode.Start(ctx, devnode.Options{DataDir: t.TempDir()})
//	if err != nil {
//		return err
//	}
//	defer n.Close()
//	fmt.Println(n.URL) // http://127.0.0.1:41873, also the issuer
package devnode

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/mandate-dev/mandate/internal/app"
	"github.com/mandate-dev/mandate/internal/config"
)

// Options configure Start.
type Options struct {
	// DataDir holds the SQLite database, the generated key-encryption key, the
	// dev issuer's key and admin.key. Required; the caller owns and removes it.
	DataDir string
	// Logger receives the node's logs. Default: discarded.
	Logger *slog.Logger
}

// Node is one running mandate.
type Node struct {
	// URL is the node's base URL and its issuer, e.g. http://127.0.0.1:41873.
	URL string
	// AdminKey is the admin API key (dev mode also writes it to DataDir/admin.key).
	AdminKey string
	// App is the running node, for callers that need to look inside.
	App *app.App

	srv  *http.Server
	done chan struct{}
}

// Start starts a dev-mode node listening on 127.0.0.1 at a free port.
func Start(ctx context.Context, o Options) (*Node, error) {
	if o.DataDir == "" {
		return nil, errors.New("devnode: DataDir is required")
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("devnode: listen: %w", err)
	}
	cfg := config.Default()
	cfg.Dev = true
	cfg.Listen = ln.Addr().String()
	cfg.DataDir = o.DataDir
	if err := cfg.Finish(); err != nil { // issuer http://<listen>, SQLite in DataDir
		ln.Close()
		return nil, fmt.Errorf("devnode: config: %w", err)
	}
	a, err := app.New(ctx, cfg, app.Options{Logger: log})
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("devnode: start mandate: %w", err)
	}
	// The same server settings as `mandate serve`, so that the examples meet
	// the timeouts a real deployment has.
	srv := &http.Server{
		Handler:           a.Handler(),
		ReadHeaderTimeout: cfg.HTTP.ReadHeaderTimeout,
		ReadTimeout:       cfg.HTTP.ReadTimeout,
		WriteTimeout:      cfg.HTTP.WriteTimeout,
		IdleTimeout:       cfg.HTTP.IdleTimeout,
		MaxHeaderBytes:    32 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	n := &Node{URL: cfg.Issuer, AdminKey: a.AdminKey, App: a, srv: srv, done: make(chan struct{})}
	go func() {
		defer close(n.done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("devnode: serve", "err", err)
		}
	}()
	return n, nil
}

// Close stops the server and the node. Requests still running (a revocation
// feed's long poll, say) get a short grace period and are then cut.
func (n *Node) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := n.srv.Shutdown(ctx); err != nil {
		n.srv.Close()
	}
	<-n.done
	n.App.Close()
}
