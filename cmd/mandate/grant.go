package main

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

func init() { extraCommands = append(extraCommands, newGrantCmd) }

// grantCaller picks the API: a user's own token (/v1/grants) or the admin key (/admin/v1/grants).
type grantCaller struct {
	g         *globals
	userToken string
}

func (c *grantCaller) flags(cmd *cobra.Command) {
	cmd.Flags().StringVar(&c.userToken, "user-token", "", "act as the user with their upstream token (default: env MANDATE_USER_TOKEN); without it the admin API is used")
}

func (c *grantCaller) call(method, path string, body, out any) error {
	if c.userToken == "" {
		c.userToken = os.Getenv("MANDATE_USER_TOKEN")
	}
	if c.userToken != "" {
		tok, err := tokenArg(c.userToken)
		if err != nil {
			return err
		}
		return c.g.call(method, "/v1"+path, "Bearer "+tok, body, out)
	}
	return c.g.adminCall(method, path, body, out)
}

func newGrantCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "grant", Short: "Create, list, narrow and revoke users' delegation grants"}

	cc := &grantCaller{g: g}
	var client, userIss, userSub string
	var scopes, resources, subAgents []string
	var maxDepth int
	var maxLifetime, expiresIn time.Duration
	create := &cobra.Command{
		Use:   "create",
		Short: "Grant a client (agent or app) the right to act for a user",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			body := map[string]any{
				"client_id": client, "scopes": splitList(scopes), "resources": splitList(resources),
				"allowed_sub_agents": splitList(subAgents), "max_depth": maxDepth,
				"max_lifetime_seconds": int64(maxLifetime / time.Second),
				"expires_at":           time.Now().Add(expiresIn).UTC().Format(time.RFC3339),
			}
			if cc.userToken == "" {
				if userIss == "" || userSub == "" {
					return errors.New("admin grants need --user-issuer and --user-subject (or pass --user-token to act as the user)")
				}
				body["user_issuer"], body["user_subject"] = userIss, userSub
			}
			var out map[string]any
			if err := cc.call("POST", "/grants", body, &out); err != nil {
				return err
			}
			if g.json {
				return printJSON(out)
			}
			fmt.Println(out["grant_id"])
			return nil
		},
	}
	cc.flags(create)
	f := create.Flags()
	f.StringVar(&client, "client", "", "the client id receiving the grant (required)")
	f.StringVar(&userIss, "user-issuer", "", "admin: the user's upstream issuer")
	f.StringVar(&userSub, "user-subject", "", "admin: the user's subject")
	f.StringSliceVar(&scopes, "scope", nil, "scopes the client may request (space/comma separated or repeated)")
	f.StringSliceVar(&resources, "resource", nil, "audiences/resources it may reach; a trailing * is a prefix")
	f.StringSliceVar(&subAgents, "sub-agent", nil, "client ids that may receive re-delegation (* = any)")
	f.IntVar(&maxDepth, "max-depth", 0, "maximum delegation depth (0 = server default)")
	f.DurationVar(&maxLifetime, "max-lifetime", 0, "maximum token lifetime (0 = server default)")
	f.DurationVar(&expiresIn, "expires-in", 30*24*time.Hour, "how long the grant lasts")

	lc := &grantCaller{g: g}
	var lClient, lStatus string
	list := &cobra.Command{
		Use: "list", Short: "List grants (a user's own with --user-token)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := url.Values{}
			if lClient != "" {
				q.Set("client_id", lClient)
			}
			if lStatus != "" {
				q.Set("status", lStatus)
			}
			path := "/grants"
			if len(q) > 0 && lc.userToken == "" {
				path += "?" + q.Encode()
			}
			var out any
			if err := lc.call("GET", path, nil, &out); err != nil {
				return err
			}
			if g.json {
				return printJSON(out)
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "GRANT_ID\tUSER\tCLIENT\tSCOPES\tSTATUS\tEXPIRES")
			for _, gr := range asList(out) {
				fmt.Fprintf(tw, "%v\t%v\t%v\t%v\t%v\t%v\n", gr["grant_id"], gr["user_subject"], gr["client_id"], joinAny(gr["scopes"]), gr["status"], gr["expires_at"])
			}
			return tw.Flush()
		},
	}
	lc.flags(list)
	list.Flags().StringVar(&lClient, "client", "", "admin: only this client's grants")
	list.Flags().StringVar(&lStatus, "status", "", "admin: active, revoked or expired")

	rc := &grantCaller{g: g}
	revoke := &cobra.Command{
		Use: "revoke GRANT_ID", Short: "Revoke a grant and every token issued under it", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := rc.call("DELETE", "/grants/"+url.PathEscape(args[0]), nil, nil); err != nil {
				return err
			}
			if g.json {
				return printJSON(map[string]any{"grant_id": args[0], "status": "revoked"})
			}
			fmt.Println(args[0], "revoked")
			return nil
		},
	}
	rc.flags(revoke)

	nc := &grantCaller{g: g}
	var nScopes, nResources, nSubAgents []string
	var nDepth int
	var nLifetime, nExpiresIn time.Duration
	narrow := &cobra.Command{
		Use:   "narrow GRANT_ID",
		Short: "Narrow a grant (fewer scopes, resources or sub-agents, lower limits, earlier expiry); never widens",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			body := map[string]any{}
			f := cmd.Flags()
			if f.Changed("scope") {
				body["scopes"] = splitList(nScopes)
			}
			if f.Changed("resource") {
				body["resources"] = splitList(nResources)
			}
			if f.Changed("sub-agent") {
				body["allowed_sub_agents"] = splitList(nSubAgents)
			}
			if f.Changed("max-depth") {
				body["max_depth"] = nDepth
			}
			if f.Changed("max-lifetime") {
				body["max_lifetime_seconds"] = int64(nLifetime / time.Second)
			}
			if f.Changed("expires-in") {
				body["expires_at"] = time.Now().Add(nExpiresIn).UTC().Format(time.RFC3339)
			}
			if len(body) == 0 {
				return errors.New("nothing to narrow: pass --scope, --resource, --sub-agent, --max-depth, --max-lifetime or --expires-in")
			}
			var out map[string]any
			if err := nc.call("PATCH", "/grants/"+url.PathEscape(args[0]), body, &out); err != nil {
				return err
			}
			if g.json {
				return printJSON(out)
			}
			fmt.Println(args[0], "narrowed")
			return nil
		},
	}
	nc.flags(narrow)
	nf := narrow.Flags()
	nf.StringSliceVar(&nScopes, "scope", nil, "the scopes to keep (a subset of the grant's)")
	nf.StringSliceVar(&nResources, "resource", nil, "the resources to keep (each covered by the grant's)")
	nf.StringSliceVar(&nSubAgents, "sub-agent", nil, "the sub-agents to keep")
	nf.IntVar(&nDepth, "max-depth", 0, "a lower maximum depth")
	nf.DurationVar(&nLifetime, "max-lifetime", 0, "a lower maximum token lifetime")
	nf.DurationVar(&nExpiresIn, "expires-in", 0, "an earlier expiry, from now")

	gc := &grantCaller{g: g}
	get := &cobra.Command{
		Use: "get GRANT_ID", Short: "Show a grant", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var out any
			if err := gc.call("GET", "/grants/"+url.PathEscape(args[0]), nil, &out); err != nil {
				return err
			}
			return printJSON(out)
		},
	}
	gc.flags(get)
	cmd.AddCommand(create, list, get, narrow, revoke)
	return cmd
}
