// Command resource-server runs the example mail API (package mailapi) in front
// of a mandate broker: every request needs a mandate token for the API's
// audience with the route's scope, validated locally by broker/edge, and
// revocations reach it through mandate's revocation feed.
//
//	go run ./examples/resource-server --issuer http://127.0.0.1:8080 --listen 127.0.0.1:8090
//
// Then call it with a delegated token:
//
//	curl -s -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8090/mail/messages
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/mandate-dev/mandate/examples/resource-server/mailapi"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stderr, os.Getenv)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) { // -h has printed the usage
		fmt.Fprintln(os.Stderr, "resource-server:", err)
		os.Exit(1)
	}
}

// run parses args, starts the API and serves until ctx is done.
func run(ctx context.Context, args []string, stderr io.Writer, getenv func(string) string) error {
	fs := flag.NewFlagSet("resource-server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	issuer := fs.String("issuer", envOr(getenv, "MANDATE_URL", "http://127.0.0.1:8080"), "mandate's issuer URL (env MANDATE_URL)")
	listen := fs.String("listen", "127.0.0.1:8090", "address to listen on")
	audience := fs.String("audience", mailapi.DefaultAudience, "the API's resource identifier; tokens must name it in aud")
	feedWait := fs.Duration("feed-wait", mailapi.DefaultFeedWait, "revocation feed long-poll (keep it below mandate's http.write_timeout, 15s by default)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))

	s, err := mailapi.Start(ctx, mailapi.Config{Issuer: *issuer, Audience: *audience, FeedWait: *feedWait, Logger: log})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       60 * time.Second,
	}
	log.Info("mail API listening", "url", "http://"+ln.Addr().String(), "issuer", *issuer, "audience", *audience)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}

func envOr(getenv func(string) string, name, def string) string {
	if v := getenv(name); v != "" {
		return v
	}
	return def
}
