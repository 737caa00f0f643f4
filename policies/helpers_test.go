package policies

import (
	"context"
	"encoding/json"
	"testing"
)

// aliceInput is a request every bundle in these tests is asked about: alice
// granted agent-mail access to her mail; agent-mail asks for a token to read it.
func aliceInput() *Input {
	return &Input{
		Version: InputVersion,
		Client: ClientInput{
			ID: "agent-mail", Name: "Mail Summarizer", Type: ClientTypeAgent,
			Scopes: []string{"mail:read", "mail:write"}, Audiences: []string{"https://mail.example.com"},
		},
		Subject: SubjectInput{
			Issuer: "https://idp.example.com", Subject: "alice", Kind: SubjectUpstream,
			Scopes: []string{"openid", "mail:read", "mail:write"},
			Claims: map[string]any{"iss": "https://idp.example.com", "sub": "alice", "email_verified": true},
		},
		Actor: &ActorInput{
			Issuer: "https://mandate.example.com", Subject: "agent-mail", ClientID: "agent-mail",
			Claims: map[string]any{"attested": true},
		},
		Chain: []ChainLink{{Sub: "agent-mail"}},
		Grant: &GrantInput{
			ID: "grt_1", Scopes: []string{"mail:read", "mail:write"},
			Resources:        []string{"https://mail.example.com", "https://files.example.com/alice/*"},
			AllowedSubAgents: []string{"agent-drafter"},
		},
		Request: RequestInput{
			GrantType:          "urn:ietf:params:oauth:grant-type:token-exchange",
			Scopes:             []string{"mail:read"},
			Audiences:          []string{"https://mail.example.com"},
			RequestedTokenType: "urn:ietf:params:oauth:token-type:access_token",
			Delegation:         true,
			Depth:              1,
		},
		Meta: MetaInput{Time: "2026-03-10T10:00:00Z", Unix: 1773136800, ClientIP: "192.0.2.10", RequestID: "req-1"},
	}
}

// mustCompile compiles a bundle of one policy file, p.rego.
func mustCompile(t testing.TB, src string) *Bundle {
	t.Helper()
	b, err := Compile(context.Background(), "test-1", map[string]string{"p.rego": src})
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return b
}

func mustDefault(t testing.TB) *Bundle {
	t.Helper()
	b, err := DefaultBundle(context.Background())
	if err != nil {
		t.Fatalf("DefaultBundle: %v", err)
	}
	return b
}

func jsonNumber(s string) json.Number { return json.Number(s) }
