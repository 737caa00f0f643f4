// Command mandate is the token-exchange broker for AI agents: one binary with
// the server (serve) and the client-side commands that drive its APIs.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

// globals are the flags every client-side command shares.
type globals struct {
	url      string
	adminKey string
	json     bool
}

func main() {
	if err := newRoot().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "mandate:", err)
		os.Exit(1)
	}
}

func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		PersistentPreRun: func(*cobra.Command, []string) {
			if g.adminKey == "" {
				g.adminKey = os.Getenv("MANDATE_ADMIN_KEY")
			}
		},
		Use:           "mandate",
		Short:         "mandate: an OAuth 2.0 token-exchange broker for AI agents",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	pf := root.PersistentFlags()
	pf.StringVar(&g.url, "url", envOr("MANDATE_URL", "http://127.0.0.1:8080"), "mandate server URL (env MANDATE_URL)")
	// Secrets are read from the environment at run time, never as flag defaults,
	// so that --help does not print them.
	pf.StringVar(&g.adminKey, "admin-key", "", "admin API key (default: env MANDATE_ADMIN_KEY)")
	pf.BoolVar(&g.json, "json", false, "print one JSON object (snake_case fields, as in the API)")
	root.AddCommand(newServeCmd(), newMigrateCmd(), newClientCmd(g), newTokenCmd(g), newKeysCmd(g))
	for _, extra := range extraCommands {
		root.AddCommand(extra(g))
	}
	return root
}

// extraCommands lets other files add top-level commands.
var extraCommands []func(*globals) *cobra.Command

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
