package main

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

const (
	grantTokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange"
	tokenTypeAccess    = "urn:ietf:params:oauth:token-type:access_token"
)

type clientCreds struct{ id, secret string }

func (c *clientCreds) flags(cmd *cobra.Command) {
	cmd.Flags().StringVar(&c.id, "client-id", os.Getenv("MANDATE_CLIENT_ID"), "client id (env MANDATE_CLIENT_ID)")
	cmd.Flags().StringVar(&c.secret, "client-secret", "", "client secret (default: env MANDATE_CLIENT_SECRET)")
}

func (c *clientCreds) check() error {
	if c.secret == "" {
		c.secret = os.Getenv("MANDATE_CLIENT_SECRET")
	}
	if c.id == "" || c.secret == "" {
		return errors.New("client credentials needed: --client-id and --client-secret (or MANDATE_CLIENT_ID, MANDATE_CLIENT_SECRET)")
	}
	return nil
}

// tokenArg reads a token argument; "-" reads it from standard input.
func tokenArg(s string) (string, error) {
	if s == "-" {
		b, err := io.ReadAll(io.LimitReader(os.Stdin, 64<<10))
		if err != nil {
			return "", err
		}
		s = string(b)
	}
	s = strings.TrimSpace(s)
	if s == "" {
		return "", errors.New("empty token")
	}
	return s, nil
}

func newTokenCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Get, exchange, decode, introspect and revoke tokens"}

	var sub, scope, aud string
	var ttl time.Duration
	user := &cobra.Command{
		Use:   "user",
		Short: "Mint a user token from the dev upstream issuer (dev mode only); prints the token alone",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out map[string]any
			body := map[string]any{"sub": sub, "scope": scope, "ttl_seconds": int64(ttl / time.Second), "audience": aud}
			if err := g.adminCall("POST", "/dev/user-token", body, &out); err != nil {
				var ae *apiError
				if errors.As(err, &ae) && ae.Status == 404 {
					return errors.New("the server has no dev issuer: start it with `mandate serve --dev`")
				}
				return err
			}
			if g.json {
				return printJSON(out)
			}
			fmt.Println(out["access_token"])
			return nil
		},
	}
	user.Flags().StringVar(&sub, "sub", "", "the user's subject (required)")
	user.Flags().StringVar(&scope, "scope", "", "space-separated scopes the user token carries")
	user.Flags().StringVar(&aud, "audience", "", "aud of the token (default: mandate's issuer)")
	user.Flags().DurationVar(&ttl, "ttl", time.Hour, "lifetime")

	var cc clientCreds
	var ccScope string
	var ccAud []string
	client := &cobra.Command{
		Use:   "client",
		Short: "Get a client's own token (client_credentials), e.g. an actor token; prints the token alone",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := cc.check(); err != nil {
				return err
			}
			v := url.Values{"grant_type": {"client_credentials"}}
			if ccScope != "" {
				v.Set("scope", ccScope)
			}
			for _, a := range splitList(ccAud) {
				v.Add("audience", a)
			}
			return tokenCall(g, v, cc)
		},
	}
	cc.flags(client)
	client.Flags().StringVar(&ccScope, "scope", "", "scopes")
	client.Flags().StringSliceVar(&ccAud, "audience", nil, "audiences")

	var ex clientCreds
	var subjectToken, actorToken, exScope, reqType string
	var exAud, exRes []string
	exchange := &cobra.Command{
		Use:   "exchange",
		Short: "Exchange a subject token for a delegated token (RFC 8693); prints the token alone",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := ex.check(); err != nil {
				return err
			}
			st, err := tokenArg(subjectToken)
			if err != nil {
				return fmt.Errorf("--subject-token: %w", err)
			}
			v := url.Values{
				"grant_type":         {grantTokenExchange},
				"subject_token":      {st},
				"subject_token_type": {tokenTypeAccess},
			}
			if actorToken != "" {
				at, err := tokenArg(actorToken)
				if err != nil {
					return fmt.Errorf("--actor-token: %w", err)
				}
				v.Set("actor_token", at)
				v.Set("actor_token_type", tokenTypeAccess)
			}
			if exScope != "" {
				v.Set("scope", exScope)
			}
			if reqType != "" {
				v.Set("requested_token_type", reqType)
			}
			for _, a := range splitList(exAud) {
				v.Add("audience", a)
			}
			for _, r := range splitList(exRes) {
				v.Add("resource", r)
			}
			return tokenCall(g, v, ex)
		},
	}
	ex.flags(exchange)
	exchange.Flags().StringVar(&subjectToken, "subject-token", "", "the subject token (- reads standard input)")
	exchange.Flags().StringVar(&actorToken, "actor-token", "", "an actor token of this client")
	exchange.Flags().StringVar(&exScope, "scope", "", "requested scopes (space-separated)")
	exchange.Flags().StringSliceVar(&exAud, "audience", nil, "requested audiences (a registered agent here names the next hop)")
	exchange.Flags().StringSliceVar(&exRes, "resource", nil, "requested resources (absolute URIs, RFC 8707)")
	exchange.Flags().StringVar(&reqType, "requested-token-type", "", "access_token (default) or jwt token type URN")

	decode := &cobra.Command{
		Use:   "decode TOKEN",
		Short: "Print a JWT's header and claims (NOT verified: for reading only)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			tok, err := tokenArg(args[0])
			if err != nil {
				return err
			}
			parts := strings.Split(tok, ".")
			if len(parts) != 3 {
				return errors.New("not a compact JWT (want three dot-separated parts)")
			}
			out := map[string]any{}
			for i, name := range []string{"header", "claims"} {
				b, err := base64.RawURLEncoding.DecodeString(parts[i])
				if err != nil {
					return fmt.Errorf("%s is not base64url", name)
				}
				var v any
				if err := json.Unmarshal(b, &v); err != nil {
					return fmt.Errorf("%s is not JSON", name)
				}
				out[name] = v
			}
			return printJSON(out)
		},
	}

	var ic clientCreds
	introspect := &cobra.Command{
		Use:   "introspect TOKEN",
		Short: "Ask the server whether a token is active (RFC 7662)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := ic.check(); err != nil {
				return err
			}
			tok, err := tokenArg(args[0])
			if err != nil {
				return err
			}
			var out map[string]any
			if err := g.form("/oauth2/introspect", url.Values{"token": {tok}}, ic.id, ic.secret, &out); err != nil {
				return err
			}
			return printJSON(out)
		},
	}
	ic.flags(introspect)

	var rc clientCreds
	revoke := &cobra.Command{
		Use:   "revoke TOKEN",
		Short: "Revoke a token and every token derived from it (RFC 7009)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := rc.check(); err != nil {
				return err
			}
			tok, err := tokenArg(args[0])
			if err != nil {
				return err
			}
			if err := g.form("/oauth2/revoke", url.Values{"token": {tok}, "token_type_hint": {"access_token"}}, rc.id, rc.secret, nil); err != nil {
				return err
			}
			if g.json {
				return printJSON(map[string]any{"revoked": true})
			}
			fmt.Println("revoked")
			return nil
		},
	}
	rc.flags(revoke)

	cmd.AddCommand(user, client, exchange, decode, introspect, revoke)
	return cmd
}

func tokenCall(g *globals, v url.Values, c clientCreds) error {
	var out map[string]any
	if err := g.form("/oauth2/token", v, c.id, c.secret, &out); err != nil {
		return err
	}
	if g.json {
		return printJSON(out)
	}
	fmt.Println(out["access_token"])
	return nil
}
