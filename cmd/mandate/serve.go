package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/mandate-dev/mandate/internal/app"
	"github.com/mandate-dev/mandate/internal/config"
	"github.com/mandate-dev/mandate/internal/db"
)

func newServeCmd() *cobra.Command {
	var cfgFile string
	flags := map[string]*string{}
	var dev bool
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the broker (config file, then MANDATE_* environment, then flags)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.Load(cfgFile, os.Getenv)
			if err != nil {
				return err
			}
			for key, v := range flags {
				if cmd.Flags().Changed(flagName(key)) {
					if err := cfg.Set(key, *v); err != nil {
						return fmt.Errorf("--%s: %w", flagName(key), err)
					}
				}
			}
			if cmd.Flags().Changed("dev") {
				cfg.Dev = dev
			}
			if err := cfg.Finish(); err != nil {
				return err
			}
			return serve(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfgFile, "config", os.Getenv("MANDATE_CONFIG"), "YAML configuration file (env MANDATE_CONFIG)")
	f.BoolVar(&dev, "dev", false, "dev mode: local upstream issuer for user tokens, generated KEK; never in production")
	for _, key := range []string{"listen", "issuer", "data_dir", "database_url", "policies.dir", "log.level", "log.format"} {
		v := new(string)
		flags[key] = v
		f.StringVar(v, flagName(key), "", "overrides config key "+key)
	}
	return cmd
}

func flagName(key string) string {
	switch key {
	case "data_dir":
		return "data"
	case "database_url":
		return "database-url"
	case "policies.dir":
		return "policies"
	case "log.level":
		return "log-level"
	case "log.format":
		return "log-format"
	}
	return key
}

func newLogger(cfg config.Config) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(cfg.Log.Level))
	opts := &slog.HandlerOptions{Level: lvl}
	if cfg.Log.Format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

func serve(ctx context.Context, cfg config.Config) error {
	log := newLogger(cfg)
	slog.SetDefault(log)
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer cancel()

	a, err := app.New(ctx, cfg, app.Options{Logger: log})
	if err != nil {
		return err
	}
	defer a.Close()

	if addr := os.Getenv("MANDATE_PPROF_ADDR"); addr != "" {
		// Profiling for operators, on its own listener (never the public one).
		pl, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("MANDATE_PPROF_ADDR: %w", err)
		}
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		go http.Serve(pl, mux) //nolint:errcheck // ends with the process
		log.Info("pprof listening", "addr", pl.Addr().String())
	}

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	srv := &http.Server{
		Handler:           a.Handler(),
		ReadHeaderTimeout: cfg.HTTP.ReadHeaderTimeout,
		ReadTimeout:       cfg.HTTP.ReadTimeout,
		WriteTimeout:      cfg.HTTP.WriteTimeout,
		IdleTimeout:       cfg.HTTP.IdleTimeout,
		MaxHeaderBytes:    32 << 10,
	}
	log.Info("mandate listening", "addr", ln.Addr().String(), "issuer", cfg.Issuer, "database", redacted(cfg.DatabaseURL), "dev", cfg.Dev)
	if a.AdminKey != "" {
		// Shown on stderr only; never logged through slog.
		fmt.Fprintf(os.Stderr, "\nadmin key (shown once; dev mode also keeps it in %s/admin.key):\n  export MANDATE_ADMIN_KEY=%s\n\n", cfg.DataDir, a.AdminKey)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down")
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func redacted(dsn string) string { return db.Redact(dsn) }
