package mandate.examples.audience_ceilings_test

import data.mandate.exchange

# The grant is generous: the ceilings must hold anyway.
request(scopes, audiences) := {
	"version": "mandate.policy/v1",
	"client": {"id": "agent-books", "name": "", "type": "agent", "first_party": false, "may_impersonate": false, "scopes": scopes, "audiences": audiences},
	"subject": {"issuer": "https://idp.example.com", "subject": "alice", "kind": "upstream", "client_id": "", "scopes": scopes, "depth": 0, "grant_id": "", "claims": {}},
	"actor": {"issuer": "https://mandate.example.com", "subject": "agent-books", "client_id": "agent-books", "claims": {"attested": true}},
	"actor_chain": [{"sub": "agent-books"}],
	"grant": {"id": "grt_2", "scopes": ["payments:read", "payments:write", "hr:read", "hr:profile", "hr:salary", "mail:read"], "resources": ["*"], "max_depth": 0, "max_lifetime_seconds": 0, "allowed_sub_agents": [], "expires_at": 0},
	"request": {"grant_type": "urn:ietf:params:oauth:grant-type:token-exchange", "scopes": scopes, "audiences": audiences, "resources": [], "requested_token_type": "urn:ietf:params:oauth:token-type:access_token", "delegation": true, "depth": 1},
	"meta": {"time": "2026-03-10T10:00:00Z", "unix": 1773136800, "client_ip": "192.0.2.10", "request_id": "req-1"},
}

test_allow_within_ceiling if {
	d := exchange.decision with input as request(["payments:read"], ["https://payments.example.com"])
	d.allow
}

test_deny_above_ceiling if {
	d := exchange.decision with input as request(["payments:read", "payments:write"], ["https://payments.example.com"])
	d.allow == false
	d.reasons == ["scope payments:write is above the ceiling for audience https://payments.example.com (at most payments:read)"]
}

test_allow_audience_without_ceiling if {
	d := exchange.decision with input as request(["mail:read"], ["https://mail.example.com"])
	d.allow
}

test_every_audience_ceiling_applies if {
	# hr:read is within the HR ceiling but above the payments one.
	d := exchange.decision with input as request(["hr:read"], ["https://hr.example.com", "https://payments.example.com"])
	d.allow == false
	d.reasons == ["scope hr:read is above the ceiling for audience https://payments.example.com (at most payments:read)"]
}

test_deny_lists_every_scope_above_ceiling if {
	d := exchange.decision with input as request(["hr:read", "hr:salary", "mail:read"], ["https://hr.example.com"])
	d.reasons == [
		"scope hr:salary is above the ceiling for audience https://hr.example.com (at most hr:profile hr:read)",
		"scope mail:read is above the ceiling for audience https://hr.example.com (at most hr:profile hr:read)",
	]
}

test_ceiling_applies_to_resources if {
	req := object.union(request(["payments:write"], []), {"request": {"resources": ["https://payments.example.com"]}})
	d := exchange.decision with input as req
	d.allow == false
	d.reasons == ["scope payments:write is above the ceiling for audience https://payments.example.com (at most payments:read)"]
}
