package decisionlog

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/mandate-dev/mandate/broker"
	"github.com/mandate-dev/mandate/policies"
)

// BenchmarkConvert is the decision log's cost on the request path.
func BenchmarkConvert(b *testing.B) {
	l := &Log{clock: time.Now, log: slog.New(slog.DiscardHandler), maxInput: DefaultMaxInputBytes}
	in := &policies.Input{
		Version: policies.InputVersion,
		Client:  policies.ClientInput{ID: "agent-mail", Name: "Mail", Type: "agent", Scopes: []string{"mail:read", "mail:write"}, Audiences: []string{"https://mail.example.com"}},
		Subject: policies.SubjectInput{Issuer: "https://idp.example.com", Subject: "alice", Kind: "upstream", Scopes: []string{"openid", "mail:read"},
			Claims: map[string]any{"iss": "https://idp.example.com", "sub": "alice", "email": "alice@example.com", "aud": "https://mandate.example.com", "exp": 1773140400, "iat": 1773136800, "scope": "openid mail:read"}},
		Actor:   &policies.ActorInput{Issuer: "https://mandate.example.com", Subject: "agent-mail", ClientID: "agent-mail", Claims: map[string]any{"client_id": "agent-mail"}},
		Chain:   []policies.ChainLink{{Sub: "agent-mail"}},
		Grant:   &policies.GrantInput{ID: "grt_1", Scopes: []string{"mail:read", "mail:write"}, Resources: []string{"https://mail.example.com"}},
		Request: policies.RequestInput{GrantType: broker.GrantTypeTokenExchange, Scopes: []string{"mail:read"}, Audiences: []string{"https://mail.example.com"}, Delegation: true, Depth: 1},
		Meta:    policies.MetaInput{Time: "2026-03-10T10:00:00Z", Unix: 1773136800, ClientIP: "192.0.2.10", RequestID: "r1"},
	}
	a := &broker.Audit{ClientID: "agent-mail", Subject: "alice", SubjectIssuer: "https://idp.example.com", Actors: []string{"agent-mail"},
		GrantID: "grt_1", GrantType: broker.GrantTypeTokenExchange, Requested: []string{"mail:read"}, Audiences: []string{"https://mail.example.com"},
		Allowed: true, Issued: []string{"mail:read"}, BundleVersion: "v1", Input: in}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		l.convert(ctx, a)
	}
}
