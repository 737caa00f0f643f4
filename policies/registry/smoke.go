package registry

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/mandate-dev/mandate/policies"
)

// A bundle's tests say what its authors checked, not that its decision has
// the shape the broker reads: a decision whose allow is a string, or that
// sets a reserved claim, passes a test that only asks whether the decision is
// defined. So Push also decides a few typical requests and refuses a bundle
// that answers any of them with a malformed decision or an evaluation error.
// An undefined decision (a deny) and a timeout (a slow machine) are not
// refused here.

// smokeInputs are typical requests: a user's token exchanged by an agent
// under a grant, a re-delegation to a sub-agent, a first-party app without a
// grant, and a client acting for itself.
func smokeInputs(now time.Time) map[string]*policies.Input {
	meta := policies.MetaInput{Time: now.UTC().Format(time.RFC3339), Unix: now.Unix(), ClientIP: "192.0.2.1", RequestID: "smoke"}
	agent := policies.ClientInput{ID: "agent-a", Name: "Agent A", Type: policies.ClientTypeAgent, Scopes: []string{"mail:read"}, Audiences: []string{"https://mail.example.com"}}
	grant := &policies.GrantInput{ID: "grt_smoke", Scopes: []string{"mail:read"}, Resources: []string{"https://mail.example.com"}, AllowedSubAgents: []string{"agent-b"}}
	exchange := policies.RequestInput{
		GrantType: "urn:ietf:params:oauth:grant-type:token-exchange", Scopes: []string{"mail:read"},
		Audiences: []string{"https://mail.example.com"}, RequestedTokenType: "urn:ietf:params:oauth:token-type:access_token",
		Delegation: true, Depth: 1,
	}
	user := policies.SubjectInput{Issuer: "https://idp.example.com", Subject: "alice", Kind: policies.SubjectUpstream,
		Scopes: []string{"openid", "mail:read"}, Claims: map[string]any{"iss": "https://idp.example.com", "sub": "alice"}}

	redelegate := exchange
	redelegate.Depth = 2
	subB := policies.ClientInput{ID: "agent-b", Name: "Agent B", Type: policies.ClientTypeAgent, Scopes: []string{"mail:read"}, Audiences: []string{"https://mail.example.com"}}

	firstParty := policies.ClientInput{ID: "app", Name: "App", Type: policies.ClientTypeApp, FirstParty: true, Scopes: []string{"mail:read"}, Audiences: []string{"https://mail.example.com"}}
	self := policies.ClientInput{ID: "svc", Name: "Service", Type: policies.ClientTypeApp, Scopes: []string{"mail:read"}, Audiences: []string{"https://mail.example.com"}}

	return map[string]*policies.Input{
		"agent exchanging a user's token under a grant": {
			Version: policies.InputVersion, Client: agent, Subject: user,
			Actor: &policies.ActorInput{Issuer: "https://mandate.example.com", Subject: "agent-a", ClientID: "agent-a", Claims: map[string]any{}},
			Chain: []policies.ChainLink{{Sub: "agent-a"}}, Grant: grant, Request: exchange, Meta: meta,
		},
		"re-delegation to a sub-agent": {
			Version: policies.InputVersion, Client: subB,
			Subject: policies.SubjectInput{Issuer: "https://mandate.example.com", Subject: "alice", Kind: policies.SubjectMandate, ClientID: "agent-a",
				Scopes: []string{"mail:read"}, Depth: 1, GrantID: "grt_smoke", Claims: map[string]any{"sub": "alice"}},
			Chain: []policies.ChainLink{{Sub: "agent-b"}, {Sub: "agent-a"}}, Grant: grant, Request: redelegate, Meta: meta,
		},
		"first-party app without a grant": {
			Version: policies.InputVersion, Client: firstParty, Subject: user,
			Chain: []policies.ChainLink{{Sub: "app"}}, Request: exchange, Meta: meta,
		},
		"client acting for itself": {
			Version: policies.InputVersion, Client: self,
			Subject: policies.SubjectInput{Issuer: "https://mandate.example.com", Subject: "svc", Kind: policies.SubjectClient, ClientID: "svc", Scopes: []string{"mail:read"}},
			Request: policies.RequestInput{GrantType: "client_credentials", Scopes: []string{"mail:read"}, Audiences: []string{"https://mail.example.com"},
				RequestedTokenType: "urn:ietf:params:oauth:token-type:access_token"},
			Meta: meta,
		},
	}
}

// smokeTest decides the typical requests with b.
func smokeTest(ctx context.Context, b *policies.Bundle, now time.Time) error {
	var problems []Problem
	inputs := smokeInputs(now)
	for _, name := range slices.Sorted(maps.Keys(inputs)) {
		_, err := b.Decide(ctx, inputs[name])
		switch {
		case err == nil, errors.Is(err, policies.ErrUndefined), errors.Is(err, policies.ErrTimeout):
			continue
		case ctx.Err() != nil:
			return ctx.Err()
		}
		code := "invalid_decision"
		if !errors.Is(err, policies.ErrInvalidDecision) {
			code = "eval_error"
		}
		msg := strings.ReplaceAll(err.Error(), "policies: ", "")
		problems = append(problems, Problem{Code: code, Message: fmt.Sprintf("deciding a typical request (%s): %s", name, msg)})
	}
	if len(problems) == 0 {
		return nil
	}
	return &InvalidBundleError{Version: b.Version, Problems: problems, err: policies.ErrInvalidDecision}
}
