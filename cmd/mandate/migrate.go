package main

import (
	"context"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/mandate-dev/mandate/internal/config"
	"github.com/mandate-dev/mandate/internal/db"
)

func newMigrateCmd() *cobra.Command {
	var cfgFile, dsn, data string
	open := func(ctx context.Context) (*db.DB, error) {
		cfg, err := config.Load(cfgFile, os.Getenv)
		if err != nil {
			return nil, err
		}
		if dsn != "" {
			cfg.DatabaseURL = dsn
		}
		if data != "" {
			cfg.DataDir = data
		}
		if err := cfg.Finish(); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
			return nil, err
		}
		return db.Open(ctx, cfg.DatabaseURL, db.Options{})
	}
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Apply pending database migrations (serve also applies them at start)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := context.Background()
			d, err := open(ctx)
			if err != nil {
				return err
			}
			defer d.Close()
			if err := d.Migrate(ctx); err != nil {
				return err
			}
			fmt.Println("migrations applied")
			return nil
		},
	}
	status := &cobra.Command{
		Use: "status", Short: "List migrations and whether each is applied", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := context.Background()
			d, err := open(ctx)
			if err != nil {
				return err
			}
			defer d.Close()
			st, err := d.Status(ctx)
			if err != nil {
				return err
			}
			for _, s := range st {
				fmt.Printf("%05d  %-30s applied=%v\n", s.Version, s.Name, s.Applied)
			}
			return nil
		},
	}
	for _, c := range []*cobra.Command{cmd, status} {
		c.Flags().StringVar(&cfgFile, "config", os.Getenv("MANDATE_CONFIG"), "YAML configuration file")
		c.Flags().StringVar(&dsn, "database-url", "", "database URL (postgres://... or sqlite:PATH)")
		c.Flags().StringVar(&data, "data", "", "data folder (for the default SQLite database)")
	}
	cmd.AddCommand(status)
	return cmd
}
