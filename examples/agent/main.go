// Command agent is an example AI agent working through mandate. It plays two
// clients: the agent (inbox-agent) and the sub-agent it delegates to
// (summary-agent), each with its own ES256 key and private_key_jwt client
// authentication (RFC 7523), so no client secret exists anywhere.
//
// Given a user's token, it
//
//  1. exchanges the token for a delegated token with only the scopes it needs,
//     for the mail API only (RFC 8693, resource= per RFC 8707);
//  2. calls the mail API with it (through an oauth2.TokenSource);
//  3. re-delegates: asks for a token whose audience is the sub-agent (the next
//     hop, which the user's grant must list in allowed_sub_agents), narrower
//     than its own;
//  4. as the sub-agent, exchanges that token for the sub-agent's own token,
//     whose act claim is {sub-agent, act: {agent}}, and calls the API again,
//     where sending mail is refused because the sub-agent was not given it.
//
// With --register and MANDATE_ADMIN_KEY set, it first registers both clients
// (their public JWKS) through mandate's admin API. See examples/README.md for a
// session against `make run`.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"
	"golang.org/x/oauth2"

	"github.com/mandate-dev/mandate/examples/agent/agentclient"
	"github.com/mandate-dev/mandate/examples/resource-server/mailapi"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) { // -h has printed the usage
		fmt.Fprintln(os.Stderr, "agent:", err)
		os.Exit(1)
	}
}

// options are the command line.
type options struct {
	mandateURL, apiURL, resource string
	agentID, subAgentID          string
	agentScopes, subAgentScopes  []string
	keyDir                       string
	userToken                    string
	register                     bool
	adminKey                     string
	timeout                      time.Duration
}

func parseFlags(args []string, stderr io.Writer, getenv func(string) string) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.mandateURL, "mandate-url", envOr(getenv, "MANDATE_URL", "http://127.0.0.1:8080"), "mandate's issuer URL (env MANDATE_URL)")
	fs.StringVar(&o.apiURL, "api-url", envOr(getenv, "MAIL_API_URL", "http://127.0.0.1:8090"), "where the mail API listens (env MAIL_API_URL)")
	fs.StringVar(&o.resource, "resource", mailapi.DefaultAudience, "the mail API's resource identifier (RFC 8707)")
	fs.StringVar(&o.agentID, "client-id", "inbox-agent", "the agent's client id")
	fs.StringVar(&o.subAgentID, "sub-agent-id", "summary-agent", "the sub-agent's client id")
	agentScopes := fs.String("scope", "mail:read mail:send", "scopes the agent asks for (space-separated)")
	subScopes := fs.String("sub-agent-scope", "mail:read", "scopes the agent re-delegates to the sub-agent")
	fs.StringVar(&o.keyDir, "key-dir", filepath.Join("data", "examples"), "folder of the agents' private keys (created when missing)")
	fs.StringVar(&o.userToken, "user-token", getenv("MANDATE_USER_TOKEN"), "the user's token (env MANDATE_USER_TOKEN)")
	fs.BoolVar(&o.register, "register", false, "register both clients through the admin API (needs MANDATE_ADMIN_KEY)")
	fs.DurationVar(&o.timeout, "timeout", 30*time.Second, "bound on the whole run")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	o.agentScopes, o.subAgentScopes = strings.Fields(*agentScopes), strings.Fields(*subScopes)
	o.adminKey = getenv("MANDATE_ADMIN_KEY")
	if o.register && o.adminKey == "" {
		return nil, errors.New("--register needs the admin key in MANDATE_ADMIN_KEY")
	}
	if !o.register && o.userToken == "" {
		return nil, errors.New("no user token: pass --user-token or set MANDATE_USER_TOKEN (and --register to register the agents first); see examples/README.md")
	}
	return o, nil
}

// run is the whole program; main only wires the process to it.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	o, err := parseFlags(args, stderr, getenv)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	hc := &http.Client{Timeout: 15 * time.Second}
	ctx = context.WithValue(ctx, oauth2.HTTPClient, hc)
	p := &printer{w: stdout}

	p.printf("mail agent %s, sub-agent %s\nmandate %s · mail API %s (resource %s)\n", o.agentID, o.subAgentID, o.mandateURL, o.apiURL, o.resource)

	p.step("keys (private_key_jwt, RFC 7523: the agents sign their own client assertions)")
	agentKey, err := loadKey(p, o.keyDir, o.agentID)
	if err != nil {
		return err
	}
	subKey, err := loadKey(p, o.keyDir, o.subAgentID)
	if err != nil {
		return err
	}

	if o.register {
		p.step("registration through the admin API")
		regs := []agentclient.Registration{
			{ClientID: o.agentID, Name: "Inbox agent (example)", Scopes: o.agentScopes, Audiences: []string{o.resource}, Key: agentKey},
			{ClientID: o.subAgentID, Name: "Summary sub-agent (example)", Scopes: o.subAgentScopes, Audiences: []string{o.resource}, Key: subKey},
		}
		for _, r := range regs {
			created, err := agentclient.Register(ctx, hc, o.mandateURL, o.adminKey, r)
			if err != nil {
				return err
			}
			if created {
				p.detail("%s registered: private_key_jwt, scopes %q, audience %s", r.ClientID, strings.Join(r.Scopes, " "), o.resource)
			} else {
				p.detail("%s was already registered: its JWKS now holds this key (scopes left as they were)", r.ClientID)
			}
		}
		if o.userToken == "" {
			p.printf("\nRegistered. Next, the user grants %s (re-delegable to %s) and passes her token with --user-token;\nsee examples/README.md.\n", o.agentID, o.subAgentID)
			return nil
		}
	}

	agent, err := agentclient.New(ctx, agentclient.Config{Issuer: o.mandateURL, ClientID: o.agentID, Key: agentKey, HTTPClient: hc})
	if err != nil {
		return err
	}
	sub, err := agentclient.New(ctx, agentclient.Config{Issuer: o.mandateURL, ClientID: o.subAgentID, Key: subKey, HTTPClient: hc})
	if err != nil {
		return err
	}
	return delegate(ctx, p, o, agent, sub)
}

// delegate is the delegation story proper, from the user's token to the
// sub-agent's refused send.
func delegate(ctx context.Context, p *printer, o *options, agent, sub *agentclient.Client) error {
	p.step(fmt.Sprintf("%s exchanges the user's token (RFC 8693): scope %q, resource %s", agent.ID(), strings.Join(o.agentScopes, " "), o.resource))
	agentTS := agent.TokenSource(ctx, agentclient.ExchangeRequest{SubjectToken: o.userToken, Scopes: o.agentScopes, Resources: []string{o.resource}})
	agentTok, err := agentTS.Token()
	if err != nil {
		return fmt.Errorf("%s: exchange: %w", agent.ID(), err)
	}
	p.token(agentTok)
	agentAPI := oauth2.NewClient(ctx, agentTS) // sends the delegated token, re-exchanging when it nears expiry

	p.step(fmt.Sprintf("%s calls GET /mail/messages", agent.ID()))
	var inbox mailapi.MessagesResponse
	if err := callAPI(ctx, agentAPI, http.MethodGet, o.apiURL+"/mail/messages", nil, http.StatusOK, &inbox); err != nil {
		return fmt.Errorf("%s: %w", agent.ID(), err)
	}
	p.caller(http.StatusOK, inbox.Caller)
	p.detail("%d messages, e.g. %q from %s", len(inbox.Messages), inbox.Messages[0].Subject, inbox.Messages[0].From)

	p.step(fmt.Sprintf("%s calls POST /mail/send", agent.ID()))
	var sent mailapi.SendResponse
	msg := mailapi.SendRequest{To: "bob@example.com", Subject: "Re: Lunch on Friday?", Body: "Friday works."}
	if err := callAPI(ctx, agentAPI, http.MethodPost, o.apiURL+"/mail/send", msg, http.StatusAccepted, &sent); err != nil {
		return fmt.Errorf("%s: %w", agent.ID(), err)
	}
	p.caller(http.StatusAccepted, sent.Caller)
	p.detail("queued %s", sent.Queued)

	p.step(fmt.Sprintf("%s re-delegates to %s: audience %s (the next hop), scope %q", agent.ID(), sub.ID(), sub.ID(), strings.Join(o.subAgentScopes, " ")))
	current, err := agentTS.Token()
	if err != nil {
		return fmt.Errorf("%s: %w", agent.ID(), err)
	}
	handoff, err := agent.Exchange(ctx, agentclient.ExchangeRequest{SubjectToken: current.AccessToken, Scopes: o.subAgentScopes, Audiences: []string{sub.ID()}})
	if err != nil {
		return fmt.Errorf("%s: re-delegation to %s: %w", agent.ID(), sub.ID(), err)
	}
	p.token(handoff)
	p.detail("%s hands this token to %s; only %s may exchange it", agent.ID(), sub.ID(), sub.ID())

	p.step(fmt.Sprintf("%s exchanges the hand-off for its own token: scope %q, resource %s", sub.ID(), strings.Join(o.subAgentScopes, " "), o.resource))
	subTS := sub.TokenSource(ctx, agentclient.ExchangeRequest{SubjectToken: handoff.AccessToken, Scopes: o.subAgentScopes, Resources: []string{o.resource}})
	subTok, err := subTS.Token()
	if err != nil {
		return fmt.Errorf("%s: exchange: %w", sub.ID(), err)
	}
	p.token(subTok)
	subAPI := oauth2.NewClient(ctx, subTS)

	p.step(fmt.Sprintf("%s calls GET /mail/messages", sub.ID()))
	if err := callAPI(ctx, subAPI, http.MethodGet, o.apiURL+"/mail/messages", nil, http.StatusOK, &inbox); err != nil {
		return fmt.Errorf("%s: %w", sub.ID(), err)
	}
	p.caller(http.StatusOK, inbox.Caller)

	p.step(fmt.Sprintf("%s tries POST /mail/send (it was not given mail:send)", sub.ID()))
	err = callAPI(ctx, subAPI, http.MethodPost, o.apiURL+"/mail/send", msg, http.StatusAccepted, &sent)
	var se *statusError
	if !errors.As(err, &se) || se.status != http.StatusForbidden {
		return fmt.Errorf("%s: sending mail should be refused with 403, got %v", sub.ID(), err)
	}
	p.detail("%d, as it should be · WWW-Authenticate: %s", se.status, se.challenge)
	p.printf("\ndone: every hop held less than the one before.\n")
	return nil
}

// loadKey loads or creates the client's key, writes its public JWKS beside it
// and prints both.
func loadKey(p *printer, dir, clientID string) (jwk.Key, error) {
	path := filepath.Join(dir, clientID+".jwk.json")
	key, created, err := agentclient.LoadOrCreateKey(path)
	if err != nil {
		return nil, err
	}
	jwks, err := agentclient.PublicJWKS(key)
	if err != nil {
		return nil, err
	}
	pubPath := filepath.Join(dir, clientID+".jwks.json")
	if err := os.WriteFile(pubPath, append(bytes.Clone(jwks), '\n'), 0o644); err != nil {
		return nil, fmt.Errorf("write public JWKS: %w", err)
	}
	how := "loaded from"
	if created {
		how = "generated into"
	}
	p.detail("%s: ES256 key %s %s (private, mode 0600)", clientID, how, path)
	p.detail("%s: public JWKS %s (also in %s)", clientID, jwks, pubPath)
	return key, nil
}

// statusError is an API answer other than the one expected.
type statusError struct {
	status    int
	challenge string // WWW-Authenticate
}

func (e *statusError) Error() string {
	if e.challenge != "" {
		return fmt.Sprintf("HTTP %d (WWW-Authenticate: %s)", e.status, e.challenge)
	}
	return fmt.Sprintf("HTTP %d", e.status)
}

// callAPI calls the mail API; hc adds the bearer token.
func callAPI(ctx context.Context, hc *http.Client, method, url string, body any, want int, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, url, err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("%s %s: read: %w", method, url, err)
	}
	if res.StatusCode != want {
		return &statusError{status: res.StatusCode, challenge: res.Header.Get("WWW-Authenticate")}
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("%s %s: decode: %w", method, url, err)
	}
	return nil
}

// printer numbers the steps and indents their details.
type printer struct {
	w io.Writer
	n int
}

func (p *printer) printf(format string, args ...any) { fmt.Fprintf(p.w, format, args...) }

func (p *printer) step(title string) {
	p.n++
	fmt.Fprintf(p.w, "\n[%d] %s\n", p.n, title)
}

func (p *printer) detail(format string, args ...any) {
	fmt.Fprintf(p.w, "    "+format+"\n", args...)
}

// token shows what a token says: a prefix of it, never all of it, and its
// claims decoded without verification (the API verifies; this is for reading).
func (p *printer) token(t *oauth2.Token) {
	c, err := agentclient.UnverifiedClaims(t.AccessToken)
	if err != nil {
		p.detail("token %s (not a JWT: %v)", agentclient.Short(t.AccessToken), err)
		return
	}
	p.detail("token %s · expires in %ds", agentclient.Short(t.AccessToken), t.ExpiresIn)
	p.detail("sub %v · client_id %v · act %v · scope %q · aud %v", c["sub"], c["client_id"], agentclient.ActorChain(c), c["scope"], c["aud"])
	if ma, ok := c["may_act"].(map[string]any); ok {
		p.detail("may_act %v (the next hop) · depth %v", ma["sub"], c["depth"])
	} else {
		p.detail("depth %v · grant %v", c["depth"], c["grant_id"])
	}
}

func (p *printer) caller(status int, c mailapi.Caller) {
	p.detail("%d · user %s · client %s · actors %v · scopes %v", status, c.User, c.Client, c.Actors, c.Scopes)
}

func envOr(getenv func(string) string, name, def string) string {
	if v := getenv(name); v != "" {
		return v
	}
	return def
}
