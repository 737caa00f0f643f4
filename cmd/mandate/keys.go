package main

import (
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

func newKeysCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "keys", Short: "List and rotate mandate's signing keys (admin API)"}
	list := &cobra.Command{
		Use: "list", Short: "List signing keys and their states", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out map[string]any
			if err := g.adminCall("GET", "/keys", nil, &out); err != nil {
				return err
			}
			if g.json {
				return printJSON(out)
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "KID\tALG\tSTATE\tPUBLISHED\tCREATED\tEXPIRES")
			for _, k := range asList(out) {
				fmt.Fprintf(tw, "%v\t%v\t%v\t%v\t%v\t%v\n", k["kid"], k["alg"], k["state"], k["published"], k["created_at"], k["expires_at"])
			}
			return tw.Flush()
		},
	}
	var now bool
	rotate := &cobra.Command{
		Use:   "rotate",
		Short: "Rotate: publish the next key first; run again (or --now) to promote it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path := "/keys/rotate"
			if now {
				path += "?now=true"
			}
			var out map[string]any
			if err := g.adminCall("POST", path, nil, &out); err != nil {
				return err
			}
			if g.json {
				return printJSON(out)
			}
			fmt.Println(out["status"])
			return nil
		},
	}
	rotate.Flags().BoolVar(&now, "now", false, "publish and promote at once (tokens verified against a cached JWKS may fail until it refreshes)")
	cmd.AddCommand(list, rotate)
	return cmd
}
