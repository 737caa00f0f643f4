// Package agentclient is the client side of an agent that works through mandate:
// it authenticates with private_key_jwt (RFC 7523 §2.2: a short-lived assertion
// signed with the agent's own ES256 key, so no shared secret exists anywhere),
// exchanges tokens (RFC 8693) and introspects them (RFC 7662).
//
// An agent holds a key and a client id. It exchanges a user's token for a
// delegated token that names only the resource and scopes it needs, and calls the
// resource with an oauth2 TokenSource that re-runs the exchange when the token
// nears its expiry:
//
//	key, _, err := agentclient.LoadOrCreateKey("data/examples/inbox-agent.jwk.json")
//	if err != nil {
//		return err
//	}
//	c, err := agentclient.New(ctx, agentclient.Config{Issuer: "http://127.0.0.1:8080", ClientID: "inbox-agent", Key: key})
//	if err != nil {
//		return err
//	}
//	ts := c.TokenSource(ctx, agentclient.ExchangeRequest{
//		SubjectToken: userToken,
//		Scopes:       []string{"mail:read"},
//		Resources:    []string{"https://api.example.com/mail"},
//	})
//	api := oauth2.NewClient(ctx, ts) // an *http.Client that sends "Authorization: Bearer <delegated token>"
//	res, err := api.Get("http://127.0.0.1:8090/mail/messages")
//
// Re-delegation is one more exchange: the agent asks for a token whose audience
// is the sub-agent's client id (the next hop, which the user's grant must list in
// allowed_sub_agents), hands it to the sub-agent, and the sub-agent exchanges it,
// with its own client authentication, for its own token:
//
//	handoff, err := agent.Exchange(ctx, agentclient.ExchangeRequest{
//		SubjectToken: agentToken.AccessToken, Scopes: []string{"mail:read"}, Audiences: []string{"summary-agent"},
//	})
//	own, err := subAgent.Exchange(ctx, agentclient.ExchangeRequest{
//		SubjectToken: handoff.AccessToken, Scopes: []string{"mail:read"}, Resources: []string{"https://api.example.com/mail"},
//	})
//	// own's "act" is {"sub": "summary-agent", "act": {"sub": "inbox-agent"}}
//
// Token endpoint errors are *oauth2.RetrieveError values carrying the RFC 6749
// error code (invalid_grant, invalid_scope, ...) and mandate's description.
package agentclient
