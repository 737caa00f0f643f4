package mandate.examples.actor_attestation_test

import data.mandate.exchange

request := {
	"version": "mandate.policy/v1",
	"client": {"id": "agent-mail", "name": "", "type": "agent", "first_party": false, "may_impersonate": false, "scopes": ["mail:read"], "audiences": ["https://mail.example.com"]},
	"subject": {"issuer": "https://idp.example.com", "subject": "alice", "kind": "upstream", "client_id": "", "scopes": ["mail:read"], "depth": 0, "grant_id": "", "claims": {}},
	"actor": {"issuer": "https://spiffe.example.com", "subject": "spiffe://example.com/agent-mail", "client_id": "agent-mail", "claims": {"attested": true}},
	"actor_chain": [{"sub": "agent-mail"}],
	"grant": {"id": "grt_1", "scopes": ["mail:read"], "resources": ["https://mail.example.com"], "max_depth": 0, "max_lifetime_seconds": 0, "allowed_sub_agents": [], "expires_at": 0},
	"request": {"grant_type": "urn:ietf:params:oauth:grant-type:token-exchange", "scopes": ["mail:read"], "audiences": ["https://mail.example.com"], "resources": [], "requested_token_type": "urn:ietf:params:oauth:token-type:access_token", "delegation": true, "depth": 1},
	"meta": {"time": "2026-03-10T10:00:00Z", "unix": 1773136800, "client_ip": "192.0.2.10", "request_id": "req-1"},
}

test_allow_attested_actor if {
	d := exchange.decision with input as request
	d.allow
}

test_deny_unattested_actor if {
	d := exchange.decision with input as object.union(request, {"actor": {"claims": {"attested": false}}})
	d.reasons == ["actor spiffe://example.com/agent-mail is not attested (attested is false): agents must present an attested actor token"]
}

test_deny_actor_without_attestation_claim if {
	d := exchange.decision with input as json.patch(request, [{"op": "replace", "path": "/actor/claims", "value": {}}])
	d.reasons == ["actor spiffe://example.com/agent-mail is not attested (attested is null): agents must present an attested actor token"]
}

test_deny_attestation_claim_that_is_only_truthy if {
	# "true" the string is not true the boolean.
	d := exchange.decision with input as object.union(request, {"actor": {"claims": {"attested": "true"}}})
	d.allow == false
}

test_deny_agent_without_actor_token if {
	d := exchange.decision with input as object.remove(request, ["actor"])
	d.reasons == ["agent agent-mail presented no actor token: agents must present an attested actor token"]
}

test_apps_are_not_affected if {
	req := object.union(object.remove(request, ["actor"]), {"client": {"type": "app"}})
	d := exchange.decision with input as req
	d.allow
}
