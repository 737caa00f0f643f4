package main

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

func newClientCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "client", Short: "Register and manage apps and agents (admin API)"}

	var (
		id, name, typ, auth, jwksFile string
		scopes, audiences, grants     []string
		impersonate, firstParty       bool
		quiet                         bool
	)
	create := &cobra.Command{
		Use:   "create",
		Short: "Register a client; its secret is shown once",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			body := map[string]any{
				"name": name, "type": typ, "token_endpoint_auth_method": auth,
				"scopes": splitList(scopes), "audiences": splitList(audiences),
				"may_impersonate": impersonate, "first_party": firstParty,
			}
			if id != "" {
				body["client_id"] = id
			}
			if len(grants) > 0 {
				body["grant_types"] = splitList(grants)
			}
			if jwksFile != "" {
				b, err := os.ReadFile(jwksFile)
				if err != nil {
					return err
				}
				body["jwks"] = json.RawMessage(b)
			}
			var out map[string]any
			if err := g.adminCall("POST", "/clients", body, &out); err != nil {
				return err
			}
			if g.json {
				return printJSON(out)
			}
			if quiet {
				// For scripts: the secret alone (the id for private_key_jwt clients).
				if s, ok := out["client_secret"].(string); ok && s != "" {
					fmt.Println(s)
				} else {
					fmt.Println(out["client_id"])
				}
				return nil
			}
			fmt.Printf("client_id:     %v\n", out["client_id"])
			if s, ok := out["client_secret"].(string); ok && s != "" {
				fmt.Printf("client_secret: %s\n(shown once: store it now)\n", s)
			}
			return nil
		},
	}
	f := create.Flags()
	f.StringVar(&id, "id", "", "client id (generated when empty)")
	f.StringVar(&name, "name", "", "display name (required)")
	f.StringVar(&typ, "type", "agent", "app or agent")
	f.StringVar(&auth, "auth", "client_secret_basic", "client_secret_basic, client_secret_post or private_key_jwt")
	f.StringVar(&jwksFile, "jwks-file", "", "public JWKS file (private_key_jwt)")
	f.StringSliceVar(&scopes, "scope", nil, "allowed scopes (repeat or space/comma separated)")
	f.StringSliceVar(&audiences, "audience", nil, "allowed audiences/resources (repeat or comma separated)")
	f.StringSliceVar(&grants, "grant-type", nil, "allowed grant types (default: token-exchange for agents, both for apps)")
	f.BoolVar(&impersonate, "may-impersonate", false, "may receive impersonation tokens (no act claim)")
	f.BoolVarP(&quiet, "quiet", "q", false, "print only the client secret, for scripts")
	f.BoolVar(&firstParty, "first-party", false, "first-party client (may act without a user grant if the policy allows)")

	list := &cobra.Command{
		Use: "list", Short: "List clients", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out any
			if err := g.adminCall("GET", "/clients", nil, &out); err != nil {
				return err
			}
			if g.json {
				return printJSON(out)
			}
			items := asList(out)
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "CLIENT_ID\tTYPE\tNAME\tAUTH\tSCOPES\tDISABLED")
			for _, c := range items {
				fmt.Fprintf(tw, "%v\t%v\t%v\t%v\t%v\t%v\n", c["client_id"], c["type"], c["name"], c["token_endpoint_auth_method"], joinAny(c["scopes"]), c["disabled"])
			}
			return tw.Flush()
		},
	}
	get := &cobra.Command{
		Use: "get CLIENT_ID", Short: "Show one client", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var out any
			if err := g.adminCall("GET", "/clients/"+url.PathEscape(args[0]), nil, &out); err != nil {
				return err
			}
			return printJSON(out)
		},
	}
	rotate := &cobra.Command{
		Use: "rotate-secret CLIENT_ID", Short: "Replace a client's secret (the old one stops working at once)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var out map[string]any
			if err := g.adminCall("POST", "/clients/"+url.PathEscape(args[0])+"/rotate-secret", nil, &out); err != nil {
				return err
			}
			if g.json {
				return printJSON(out)
			}
			fmt.Printf("client_secret: %v\n(shown once: store it now)\n", out["client_secret"])
			return nil
		},
	}
	simple := func(use, short, method, suffix, done string) *cobra.Command {
		return &cobra.Command{
			Use: use + " CLIENT_ID", Short: short, Args: cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				if err := g.adminCall(method, "/clients/"+url.PathEscape(args[0])+suffix, nil, nil); err != nil {
					return err
				}
				if g.json {
					return printJSON(map[string]any{"client_id": args[0], "status": done})
				}
				fmt.Printf("%s %s\n", args[0], done)
				return nil
			},
		}
	}
	cmd.AddCommand(create, list, get, rotate,
		simple("disable", "Disable a client (its token requests fail with invalid_client)", "POST", "/disable", "disabled"),
		simple("enable", "Enable a disabled client", "POST", "/enable", "enabled"),
		simple("delete", "Delete a client", "DELETE", "", "deleted"))
	return cmd
}

// splitList accepts repeated flags and space- or comma-separated values.
func splitList(in []string) []string {
	out := []string{}
	for _, v := range in {
		out = append(out, strings.FieldsFunc(v, func(r rune) bool { return r == ' ' || r == ',' })...)
	}
	return out
}

func asList(v any) []map[string]any {
	var arr []any
	switch t := v.(type) {
	case []any:
		arr = t
	case map[string]any:
		for _, k := range []string{"clients", "items", "grants", "keys", "decisions", "bundles"} {
			if a, ok := t[k].([]any); ok {
				arr = a
				break
			}
		}
	}
	out := make([]map[string]any, 0, len(arr))
	for _, x := range arr {
		if m, ok := x.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}

func joinAny(v any) string {
	arr, _ := v.([]any)
	s := make([]string, 0, len(arr))
	for _, x := range arr {
		s = append(s, fmt.Sprint(x))
	}
	return strings.Join(s, " ")
}
