package mandate.examples.business_hours_test

import data.mandate.exchange

# Alice's grant lets agent-mail read her mail.
request(at) := {
	"version": "mandate.policy/v1",
	"client": {"id": "agent-mail", "name": "", "type": "agent", "first_party": false, "may_impersonate": false, "scopes": ["mail:read"], "audiences": ["https://mail.example.com"]},
	"subject": {"issuer": "https://idp.example.com", "subject": "alice", "kind": "upstream", "client_id": "", "scopes": ["mail:read"], "depth": 0, "grant_id": "", "claims": {}},
	"actor": {"issuer": "https://mandate.example.com", "subject": "agent-mail", "client_id": "agent-mail", "claims": {"attested": true}},
	"actor_chain": [{"sub": "agent-mail"}],
	"grant": {"id": "grt_1", "scopes": ["mail:read"], "resources": ["https://mail.example.com"], "max_depth": 0, "max_lifetime_seconds": 0, "allowed_sub_agents": [], "expires_at": 0},
	"request": {"grant_type": "urn:ietf:params:oauth:grant-type:token-exchange", "scopes": ["mail:read"], "audiences": ["https://mail.example.com"], "resources": [], "requested_token_type": "urn:ietf:params:oauth:token-type:access_token", "delegation": true, "depth": 1},
	"meta": {"time": at, "unix": time.parse_rfc3339_ns(at) / 1000000000, "client_ip": "192.0.2.10", "request_id": "req-1"},
}

test_allow_on_a_weekday_morning if {
	# 10:00 UTC is 11:00 in Paris (CET, UTC+1).
	d := exchange.decision with input as request("2026-03-10T10:00:00Z")
	d.allow
}

test_allow_at_opening_time_paris if {
	# 07:00 UTC is 08:00 in Paris.
	d := exchange.decision with input as request("2026-03-10T07:00:00Z")
	d.allow
}

test_deny_before_opening_time_paris if {
	# 08:30 in UTC+2 is 07:30 in Paris: the offset in the time is honoured.
	d := exchange.decision with input as request("2026-03-10T08:30:00+02:00")
	d.allow == false
	"agents may act for users on weekdays from 08:00 to 18:00 Europe/Paris only; it is Tuesday 07:30 there" in d.reasons
}

test_deny_at_closing_time if {
	# 17:00 UTC is 18:00 in Paris.
	d := exchange.decision with input as request("2026-03-10T17:00:00Z")
	d.allow == false
	"agents may act for users on weekdays from 08:00 to 18:00 Europe/Paris only; it is Tuesday 18:00 there" in d.reasons
}

test_deny_on_a_saturday if {
	d := exchange.decision with input as request("2026-03-14T10:00:00Z")
	d.allow == false
	"agents may act for users on weekdays from 08:00 to 18:00 Europe/Paris only; it is Saturday 11:00 there" in d.reasons
}

test_summer_time_is_honoured if {
	# In July Paris is UTC+2: 06:30 UTC is 08:30 there.
	d := exchange.decision with input as request("2026-07-07T06:30:00Z")
	d.allow
}

test_apps_are_not_affected if {
	req := object.union(request("2026-03-14T23:00:00Z"), {"client": {"type": "app"}})
	d := exchange.decision with input as req
	d.allow
}
