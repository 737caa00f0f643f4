// Command demo tells mandate's whole story in a few seconds, end to end, on
// loopback only:
//
//	user --(grant)--> agent --(re-delegation)--> sub-agent --> resource
//
// It starts mandate in dev mode in-process (embedded SQLite in a temporary
// folder, the dev upstream issuer for user tokens) and the example mail API
// (examples/resource-server), registers an agent and a sub-agent that
// authenticate with private_key_jwt, and then lets Alice grant, the agent
// exchange and re-delegate, the sub-agent exchange, everyone call the API, and
// Alice revoke. Each step prints ✔ when mandate behaved as promised and ✘
// otherwise; the exit status is non-zero on any ✘. The temporary folder is
// removed at the end.
//
//	go run ./examples/demo      # or: make demo
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/oauth2"

	"github.com/mandate-dev/mandate/examples/agent/agentclient"
	"github.com/mandate-dev/mandate/examples/demo/devnode"
	"github.com/mandate-dev/mandate/examples/resource-server/mailapi"
)

func main() {
	verbose := flag.Bool("v", false, "show the broker's and the API's logs on stderr")
	timeout := flag.Duration("timeout", 45*time.Second, "bound on the whole demo")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if *verbose {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	slog.SetDefault(log) // a few server handlers log through the default logger
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Stdout, options{Timeout: *timeout, Logger: log})
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

// options configure run.
type options struct {
	// Timeout bounds the whole demo. Default 45 s.
	Timeout time.Duration
	// TempRoot is where the temporary data folder is made. Default os.TempDir().
	TempRoot string
	// Logger receives the broker's and the API's logs. Default: discarded.
	Logger *slog.Logger
}

// The cast.
const (
	agentID    = "inbox-agent"
	subAgentID = "summary-agent"
	alice      = "alice"
	mailAPI    = mailapi.DefaultAudience
)

// run plays the story on out and returns an error if any step failed. It
// releases everything it started, and removes its data folder, before returning.
func run(ctx context.Context, out io.Writer, o options) (err error) {
	if o.Timeout <= 0 {
		o.Timeout = 45 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	began := time.Now()
	d := &demo{out: out}

	fmt.Fprintln(out, "mandate demo: Alice lets an agent read her mail; the agent hands part of that to a")
	fmt.Fprintln(out, "sub-agent. Every hop holds less than the one before, and one revocation ends them all.")

	dir, err := os.MkdirTemp(o.TempRoot, "mandate-demo-")
	if err != nil {
		return fmt.Errorf("temporary folder: %w", err)
	}
	defer func() {
		if rerr := os.RemoveAll(dir); rerr != nil && err == nil {
			err = fmt.Errorf("remove %s: %w", dir, rerr)
		}
	}()

	// The cast's state, filled in step by step.
	var (
		node                  *devnode.Node
		apiURL                string
		agent, sub            *agentclient.Client
		aliceToken, grantID   string
		agentTok, handoff     *oauth2.Token
		subTok                *oauth2.Token
		revokedAt             time.Time
		hc                    = &http.Client{Timeout: 10 * time.Second}
		agentScopes, subScope = []string{"mail:read", "mail:send"}, []string{"mail:read"}
	)

	d.section("The setting")
	if !d.step("mandate starts in dev mode: embedded SQLite, a dev identity provider for users", func() ([]string, error) {
		n, err := devnode.Start(ctx, devnode.Options{DataDir: dir, Logger: o.Logger})
		if err != nil {
			return nil, err
		}
		node = n
		return []string{"issuer " + n.URL + " · data in " + dir + " (removed at exit)"}, nil
	}) {
		return d.result(began)
	}
	defer node.Close()

	apiCtx, stopAPI := context.WithCancel(ctx)
	defer stopAPI() // runs before node.Close: the API's feed lets go of mandate first
	if !d.step("the mail API starts: it validates mandate tokens itself (broker/edge), no call to mandate per request", func() ([]string, error) {
		s, err := mailapi.Start(apiCtx, mailapi.Config{Issuer: node.URL, Logger: o.Logger})
		if err != nil {
			return nil, err
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("listen: %w", err)
		}
		srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = srv.Serve(ln) }()
		context.AfterFunc(apiCtx, func() { srv.Close() })
		apiURL = "http://" + ln.Addr().String()
		return []string{apiURL + " · audience " + mailAPI + " · keys from " + node.URL + "/jwks.json · revocations from " + node.URL + "/v1/revocations"}, nil
	}) {
		return d.result(began)
	}

	register := func(id, name string, scopes []string, client **agentclient.Client) func() ([]string, error) {
		return func() ([]string, error) {
			key, err := agentclient.GenerateKey()
			if err != nil {
				return nil, err
			}
			if _, err := agentclient.Register(ctx, hc, node.URL, node.AdminKey, agentclient.Registration{
				ClientID: id, Name: name, Scopes: scopes, Audiences: []string{mailAPI}, Key: key}); err != nil {
				return nil, err
			}
			c, err := agentclient.New(ctx, agentclient.Config{Issuer: node.URL, ClientID: id, Key: key, HTTPClient: hc})
			if err != nil {
				return nil, err
			}
			*client = c
			return []string{fmt.Sprintf("private_key_jwt with its own ES256 key (kid %.12s…): no secret exists · may hold at most %q", key.KeyID(), strings.Join(scopes, " "))}, nil
		}
	}
	if !d.step("a developer registers "+agentID+" (admin API)", register(agentID, "Inbox agent (demo)", agentScopes, &agent)) ||
		!d.step("and its helper "+subAgentID, register(subAgentID, "Summary sub-agent (demo)", subScope, &sub)) {
		return d.result(began)
	}

	d.section("Alice delegates")
	if !d.step("Alice logs in at her identity provider (the dev issuer)", func() ([]string, error) {
		t, err := node.UserToken(ctx, alice, "mail:read mail:send calendar:read")
		if err != nil {
			return nil, err
		}
		aliceToken = t
		c, _ := agentclient.UnverifiedClaims(t)
		return []string{fmt.Sprintf("token %s · sub %v · scope %q · aud %v: it is for asking mandate, nothing else", agentclient.Short(t), c["sub"], c["scope"], c["aud"])}, nil
	}) {
		return d.result(began)
	}
	if !d.step("her own token does not open the mail API: it is not a mandate token for it", func() ([]string, error) {
		return expectRefusal(ctx, hc, aliceToken, http.MethodGet, apiURL, "/mail/messages", http.StatusUnauthorized, "invalid_token")
	}) {
		return d.result(began)
	}
	if !d.step("without her consent, "+agentID+" gets nothing for her token", func() ([]string, error) {
		_, err := agent.Exchange(ctx, agentclient.ExchangeRequest{SubjectToken: aliceToken, Scopes: []string{"mail:read"}, Resources: []string{mailAPI}})
		return expectOAuthError(err, "invalid_grant")
	}) {
		return d.result(began)
	}
	if !d.step("Alice grants "+agentID+" mail:read and mail:send on the mail API, re-delegable to "+subAgentID, func() ([]string, error) {
		id, err := node.CreateGrant(ctx, aliceToken, devnode.Grant{ClientID: agentID, Scopes: agentScopes,
			Resources: []string{mailAPI}, AllowedSubAgents: []string{subAgentID}})
		if err != nil {
			return nil, err
		}
		grantID = id
		return []string{"POST /v1/grants with her own token → " + id}, nil
	}) {
		return d.result(began)
	}

	d.section("The agent works")
	if !d.step(agentID+" exchanges Alice's token for a token for the mail API only (RFC 8693)", func() ([]string, error) {
		t, err := agent.Exchange(ctx, agentclient.ExchangeRequest{SubjectToken: aliceToken, Scopes: agentScopes, Resources: []string{mailAPI}})
		if err != nil {
			return nil, err
		}
		agentTok = t
		return expectToken(t, tokenWant{sub: alice, client: agentID, actors: []string{agentID}, scope: "mail:read mail:send", aud: mailAPI, depth: 1})
	}) {
		return d.result(began)
	}
	if !d.step(agentID+" reads Alice's mail", func() ([]string, error) {
		return expectCaller(ctx, hc, agentTok, apiURL, mailapi.Caller{User: alice, Client: agentID, Actors: []string{agentID}, Scopes: agentScopes})
	}) {
		return d.result(began)
	}
	if !d.step(agentID+" re-delegates mail:read to "+subAgentID+" (audience = the next hop)", func() ([]string, error) {
		t, err := agent.Exchange(ctx, agentclient.ExchangeRequest{SubjectToken: agentTok.AccessToken, Scopes: subScope, Audiences: []string{subAgentID}})
		if err != nil {
			return nil, err
		}
		handoff = t
		c, err := agentclient.UnverifiedClaims(t.AccessToken)
		if err != nil {
			return nil, err
		}
		ma, _ := c["may_act"].(map[string]any)
		if ma["sub"] != subAgentID || c["scope"] != "mail:read" {
			return nil, fmt.Errorf("hand-off: may_act %v, scope %v; want %s, mail:read", c["may_act"], c["scope"], subAgentID)
		}
		return []string{fmt.Sprintf("token %s · held by %v · may_act %v · aud %v · scope %q: only %s can use it", agentclient.Short(t.AccessToken), c["client_id"], ma["sub"], c["aud"], c["scope"], subAgentID)}, nil
	}) {
		return d.result(began)
	}

	d.section("The sub-agent works")
	if !d.step(subAgentID+" cannot turn the hand-off into more than it carries", func() ([]string, error) {
		_, err := sub.Exchange(ctx, agentclient.ExchangeRequest{SubjectToken: handoff.AccessToken, Scopes: []string{"mail:send"}, Resources: []string{mailAPI}})
		return expectOAuthError(err, "invalid_scope")
	}) {
		return d.result(began)
	}
	if !d.step(subAgentID+" exchanges the hand-off for its own token", func() ([]string, error) {
		t, err := sub.Exchange(ctx, agentclient.ExchangeRequest{SubjectToken: handoff.AccessToken, Scopes: subScope, Resources: []string{mailAPI}})
		if err != nil {
			return nil, err
		}
		subTok = t
		return expectToken(t, tokenWant{sub: alice, client: subAgentID, actors: []string{subAgentID, agentID}, scope: "mail:read", aud: mailAPI, depth: 2})
	}) {
		return d.result(began)
	}
	if !d.step(subAgentID+" reads Alice's mail; the API sees the whole chain", func() ([]string, error) {
		return expectCaller(ctx, hc, subTok, apiURL, mailapi.Caller{User: alice, Client: subAgentID, Actors: []string{subAgentID, agentID}, Scopes: subScope})
	}) {
		return d.result(began)
	}
	if !d.step(subAgentID+" cannot send mail: it was never handed mail:send", func() ([]string, error) {
		return expectRefusal(ctx, hc, subTok.AccessToken, http.MethodPost, apiURL, "/mail/send", http.StatusForbidden, "insufficient_scope")
	}) {
		return d.result(began)
	}

	d.section("Alice changes her mind")
	if !d.step("Alice revokes her grant", func() ([]string, error) {
		revokedAt = time.Now()
		if err := node.RevokeGrant(ctx, aliceToken, grantID); err != nil {
			return nil, err
		}
		return []string{"DELETE /v1/grants/" + grantID + " with her own token: every token issued under it is revoked"}, nil
	}) {
		return d.result(began)
	}
	if !d.step("the mail API refuses "+subAgentID+"'s token within a second (the revocation feed)", func() ([]string, error) {
		deadline := revokedAt.Add(time.Second)
		for {
			lines, err := expectRefusal(ctx, hc, subTok.AccessToken, http.MethodGet, apiURL, "/mail/messages", http.StatusUnauthorized, "invalid_token")
			if err == nil {
				return append(lines, fmt.Sprintf("refused %s after Alice's request, without the API asking mandate", time.Since(revokedAt).Round(100*time.Microsecond))), nil
			}
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("still not refused 1 s after the revocation: %w", err)
			}
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(10 * time.Millisecond):
			}
		}
	}) {
		return d.result(began)
	}
	if !d.step("mandate's introspection agrees: the token is no longer active (RFC 7662)", func() ([]string, error) {
		in, err := sub.Introspect(ctx, subTok.AccessToken)
		if err != nil {
			return nil, err
		}
		if in.Active {
			return nil, errors.New(`introspection says "active": true`)
		}
		return []string{`{"active": false}`}, nil
	}) {
		return d.result(began)
	}
	if !d.step(agentID+" can no longer exchange Alice's token", func() ([]string, error) {
		_, err := agent.Exchange(ctx, agentclient.ExchangeRequest{SubjectToken: aliceToken, Scopes: []string{"mail:read"}, Resources: []string{mailAPI}})
		return expectOAuthError(err, "invalid_grant")
	}) {
		return d.result(began)
	}
	return d.result(began)
}

// demo prints the steps and counts the failures.
type demo struct {
	out    io.Writer
	n      int
	failed int
}

func (d *demo) section(title string) { fmt.Fprintf(d.out, "\n%s\n", title) }

// step runs fn and prints ✔ and fn's lines, or ✘ and its error. It reports
// whether the step succeeded; the story stops at the first ✘, since every step
// builds on the ones before.
func (d *demo) step(title string, fn func() ([]string, error)) bool {
	d.n++
	lines, err := fn()
	if err != nil {
		d.failed++
		fmt.Fprintf(d.out, " ✘ %2d. %s\n       %v\n", d.n, title, err)
		return false
	}
	fmt.Fprintf(d.out, " ✔ %2d. %s\n", d.n, title)
	for _, l := range lines {
		fmt.Fprintf(d.out, "       %s\n", l)
	}
	return true
}

func (d *demo) result(began time.Time) error {
	took := time.Since(began).Round(10 * time.Millisecond)
	if d.failed > 0 {
		fmt.Fprintf(d.out, "\n✘ %d of %d steps failed (%s)\n", d.failed, d.n, took)
		return fmt.Errorf("%d step(s) failed", d.failed)
	}
	fmt.Fprintf(d.out, "\n✔ all %d steps behaved as promised (%s)\n", d.n, took)
	return nil
}

// tokenWant is what a delegated token must say.
type tokenWant struct {
	sub, client, scope, aud string
	actors                  []string
	depth                   int
}

// expectToken checks a token's claims (decoded for reading: the API verifies
// the signature) and describes them.
func expectToken(t *oauth2.Token, w tokenWant) ([]string, error) {
	c, err := agentclient.UnverifiedClaims(t.AccessToken)
	if err != nil {
		return nil, err
	}
	actors := agentclient.ActorChain(c)
	aud, _ := c["aud"].([]any)
	depth, _ := c["depth"].(float64)
	switch {
	case c["sub"] != w.sub, c["client_id"] != w.client, c["scope"] != w.scope:
		return nil, fmt.Errorf("sub %v, client_id %v, scope %q; want %s, %s, %q", c["sub"], c["client_id"], c["scope"], w.sub, w.client, w.scope)
	case !slices.Equal(actors, w.actors):
		return nil, fmt.Errorf("act chain %v, want %v", actors, w.actors)
	case len(aud) != 1 || aud[0] != w.aud:
		return nil, fmt.Errorf("aud %v, want [%s]", c["aud"], w.aud)
	case int(depth) != w.depth:
		return nil, fmt.Errorf("depth %v, want %d", c["depth"], w.depth)
	}
	return []string{
		fmt.Sprintf("token %s · expires in %ds", agentclient.Short(t.AccessToken), t.ExpiresIn),
		fmt.Sprintf("sub %v · client_id %v · scope %q · aud %v · depth %d", c["sub"], c["client_id"], c["scope"], aud, int(depth)),
		"act " + formatAct(c["act"]) + " (RFC 8693 §4.1: the current actor outermost)",
	}, nil
}

// formatAct writes an act claim with "sub" before the nested "act", the order
// in which it reads: {"sub":"B","act":{"sub":"A"}}.
func formatAct(v any) string {
	var b strings.Builder
	act, _ := v.(map[string]any)
	depth := 0
	for ; act != nil && depth < 32; depth++ {
		if depth > 0 {
			b.WriteString(`,"act":`)
		}
		sub, _ := json.Marshal(act["sub"])
		b.WriteString(`{"sub":`)
		b.Write(sub)
		act, _ = act["act"].(map[string]any)
	}
	b.WriteString(strings.Repeat("}", depth))
	return b.String()
}

// expectOAuthError checks that a token request was refused with code.
func expectOAuthError(err error, code string) ([]string, error) {
	if err == nil {
		return nil, fmt.Errorf("a token was issued; want %s", code)
	}
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.ErrorCode != code {
		return nil, fmt.Errorf("got %v; want %s", err, code)
	}
	return []string{fmt.Sprintf("refused: %s (%s)", re.ErrorCode, re.ErrorDescription)}, nil
}

// expectCaller reads the mailbox with tok and checks who the API says called.
func expectCaller(ctx context.Context, hc *http.Client, tok *oauth2.Token, apiURL string, want mailapi.Caller) ([]string, error) {
	res, body, err := callAPI(ctx, hc, tok.AccessToken, http.MethodGet, apiURL+"/mail/messages")
	if err != nil {
		return nil, err
	}
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /mail/messages: %d (%s)", res.StatusCode, res.Header.Get("WWW-Authenticate"))
	}
	var got mailapi.MessagesResponse
	if err := json.Unmarshal(body, &got); err != nil {
		return nil, fmt.Errorf("GET /mail/messages: %w", err)
	}
	c := got.Caller
	if c.User != want.User || c.Client != want.Client || !slices.Equal(c.Actors, want.Actors) || !slices.Equal(c.Scopes, want.Scopes) {
		return nil, fmt.Errorf("the API saw user %s, client %s, actors %v, scopes %v; want %s, %s, %v, %v",
			c.User, c.Client, c.Actors, c.Scopes, want.User, want.Client, want.Actors, want.Scopes)
	}
	return []string{
		fmt.Sprintf("GET /mail/messages → 200, %d messages", len(got.Messages)),
		fmt.Sprintf("the API saw: user %s · client %s · actors %v (current first) · scopes %v", c.User, c.Client, c.Actors, c.Scopes),
	}, nil
}

// expectRefusal calls the API with token and checks the status and the
// WWW-Authenticate error code.
func expectRefusal(ctx context.Context, hc *http.Client, token, method, apiURL, path string, status int, code string) ([]string, error) {
	res, _, err := callAPI(ctx, hc, token, method, apiURL+path)
	if err != nil {
		return nil, err
	}
	if res.StatusCode != status || mailapi.ChallengeError(res.Header) != code {
		return nil, fmt.Errorf("%s %s: got %d (%s), want %d %s", method, path, res.StatusCode, res.Header.Get("WWW-Authenticate"), status, code)
	}
	return []string{fmt.Sprintf("%s %s → %d · WWW-Authenticate: %s", method, path, res.StatusCode, res.Header.Get("WWW-Authenticate"))}, nil
}

// callAPI calls the mail API with a bearer token, through an oauth2 client.
func callAPI(ctx context.Context, hc *http.Client, token, method, url string) (*http.Response, []byte, error) {
	var body io.Reader
	if method == http.MethodPost {
		body = bytes.NewReader([]byte(`{"to":"bob@example.com","subject":"Re: Lunch on Friday?","body":"Friday works."}`))
	}
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return nil, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	client := oauth2.NewClient(context.WithValue(ctx, oauth2.HTTPClient, hc), oauth2.StaticTokenSource(&oauth2.Token{AccessToken: token, TokenType: "Bearer"}))
	res, err := client.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("%s %s: %w", method, url, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if err != nil {
		return nil, nil, fmt.Errorf("%s %s: read: %w", method, url, err)
	}
	return res, b, nil
}
