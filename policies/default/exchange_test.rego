# Tests of the default exchange policy: each rule, on its allow side and on
# its deny side. The inputs are a user, alice, who granted the agent
# agent-mail access to her mail and to her folder of files, on a Tuesday
# morning; each test changes what it is about.
package mandate.exchange_test

import data.mandate.exchange

grant := {
	"id": "grt_1",
	"scopes": ["mail:read", "mail:write", "mail:delete", "calendar:read", "admin.mail"],
	"resources": ["https://mail.example.com", "https://files.example.com/alice/*"],
	"max_depth": 0,
	"max_lifetime_seconds": 0,
	"allowed_sub_agents": ["agent-drafter"],
	"expires_at": 0,
}

base := {
	"version": "mandate.policy/v1",
	"client": {
		"id": "agent-mail",
		"name": "Mail Summarizer",
		"type": "agent",
		"first_party": false,
		"may_impersonate": false,
		"scopes": ["mail:read", "mail:write"],
		"audiences": ["https://mail.example.com"],
	},
	"subject": {
		"issuer": "https://idp.example.com",
		"subject": "alice",
		"kind": "upstream",
		"client_id": "",
		"scopes": ["openid", "mail:read", "mail:write"],
		"depth": 0,
		"grant_id": "",
		"claims": {"iss": "https://idp.example.com", "sub": "alice"},
	},
	"actor": {
		"issuer": "https://mandate.example.com",
		"subject": "agent-mail",
		"client_id": "agent-mail",
		"claims": {"attested": true},
	},
	"actor_chain": [{"sub": "agent-mail"}],
	"grant": grant,
	"request": {
		"grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
		"scopes": ["mail:read"],
		"audiences": ["https://mail.example.com"],
		"resources": [],
		"requested_token_type": "urn:ietf:params:oauth:token-type:access_token",
		"delegation": true,
		"depth": 1,
	},
	"meta": {
		"time": "2026-03-10T10:00:00Z",
		"unix": 1773136800,
		"client_ip": "192.0.2.10",
		"request_id": "req-1",
	},
}

allowed := {"allow": true, "reasons": []}

# decide is the decision for base patched with patch (a deep merge: objects
# merge, other values replace).
decide(patch) := d if {
	d := exchange.decision with input as object.union(base, patch)
}

denied_with(d, reason) if {
	d.allow == false
	reason in d.reasons
}

# --- The basis and consent ------------------------------------------------------

test_allow_with_grant if {
	exchange.decision == allowed with input as base
}

test_deny_without_grant if {
	d := decide({"grant": null})
	denied_with(d, "no active grant from user alice to agent Mail Summarizer (agent-mail) covers this request")
}

test_deny_without_grant_names_unnamed_client_by_id if {
	d := decide({"grant": null, "client": {"name": ""}})
	denied_with(d, "no active grant from user alice to agent agent-mail covers this request")
}

test_allow_first_party_without_grant if {
	decide({"grant": null, "client": {"first_party": true, "type": "app"}}) == allowed
}

test_first_party_client_denied_for_another_reason_is_not_told_about_grants if {
	d := decide(object.union(impersonation, {"grant": null, "client": {"first_party": true}}))
	d.reasons == ["agent Mail Summarizer (agent-mail) may not impersonate user alice: impersonation is reserved for first-party clients registered for it"]
}

test_allow_mandate_subject_with_grant if {
	decide({"subject": {"kind": "mandate", "client_id": "agent-mail", "depth": 1, "grant_id": "grt_1"}}) == allowed
}

test_deny_mandate_subject_without_grant if {
	d := decide({"subject": {"kind": "mandate"}, "grant": null})
	denied_with(d, "no active grant from user alice to agent Mail Summarizer (agent-mail) covers this request")
}

test_allow_grant_not_yet_expired if {
	decide({"grant": {"expires_at": 1773136801}}) == allowed
}

test_deny_expired_grant if {
	d := decide({"grant": {"expires_at": 1773136800}})
	denied_with(d, "grant grt_1 expired at 2026-03-10T10:00:00Z")
}

# --- Scopes, audiences, resources -------------------------------------------------

test_allow_scopes_within_grant if {
	decide({"request": {"scopes": ["mail:read", "calendar:read"]}}) == allowed
}

test_deny_scope_outside_grant if {
	d := decide({"request": {"scopes": ["mail:read", "mail:send"]}})
	denied_with(d, "scope mail:send is not covered by grant grt_1")
	count(d.reasons) == 1
}

test_deny_names_every_offending_scope if {
	d := decide({"request": {"scopes": ["contacts:read", "mail:send"]}})
	d.reasons == ["scope contacts:read is not covered by grant grt_1", "scope mail:send is not covered by grant grt_1"]
}

test_allow_audience_in_grant if {
	decide({"request": {"audiences": ["https://mail.example.com"]}}) == allowed
}

test_deny_audience_outside_grant if {
	d := decide({"request": {"audiences": ["https://bank.example.com"]}})
	denied_with(d, "audience https://bank.example.com is not covered by grant grt_1")
}

test_allow_audience_matching_prefix_pattern if {
	decide({"request": {"audiences": ["https://files.example.com/alice/reports"]}}) == allowed
}

test_deny_audience_outside_prefix_pattern if {
	d := decide({"request": {"audiences": ["https://files.example.com/bob/reports"]}})
	denied_with(d, "audience https://files.example.com/bob/reports is not covered by grant grt_1")
}

test_deny_pattern_is_not_matched_literally_without_star if {
	# "https://mail.example.com" has no "*": it is not a prefix.
	d := decide({"request": {"audiences": ["https://mail.example.com.evil.example"]}})
	denied_with(d, "audience https://mail.example.com.evil.example is not covered by grant grt_1")
}

test_allow_star_resource_covers_everything if {
	decide({
		"grant": {"resources": ["*"]},
		"request": {"audiences": ["https://anything.example.com"], "resources": ["urn:x"]},
	}) == allowed
}

test_allow_resource_in_grant if {
	decide({"request": {"resources": ["https://files.example.com/alice/notes.txt"]}}) == allowed
}

test_deny_resource_outside_grant if {
	d := decide({"request": {"resources": ["https://files.example.com/carol/notes.txt"]}})
	denied_with(d, "resource https://files.example.com/carol/notes.txt is not covered by grant grt_1")
}

test_grant_limits_apply_to_first_party_clients_too if {
	d := decide({"client": {"first_party": true}, "request": {"scopes": ["mail:send"]}})
	denied_with(d, "scope mail:send is not covered by grant grt_1")
}

# --- Depth and re-delegation ---------------------------------------------------------

chain(subs) := [{"sub": s} | some s in subs]

# The hand-off: agent-mail asks for a token whose audience is the sub-agent.
handoff(sub_agent) := {
	"subject": {"kind": "mandate", "client_id": "agent-mail", "depth": 1, "grant_id": "grt_1"},
	"request": {"audiences": [sub_agent]},
}

test_allow_handoff_to_allowed_sub_agent if {
	decide(handoff("agent-drafter")) == allowed
}

test_deny_handoff_to_other_sub_agent if {
	d := decide(handoff("agent-stranger"))
	denied_with(d, "audience agent-stranger is not covered by grant grt_1")
}

test_allow_handoff_to_any_sub_agent_with_star if {
	decide(object.union(handoff("agent-stranger"), {"grant": {"allowed_sub_agents": ["*"]}})) == allowed
}

test_star_sub_agents_do_not_cover_resource_audiences if {
	d := decide(object.union(handoff("https://bank.example.com"), {"grant": {"allowed_sub_agents": ["*"]}}))
	denied_with(d, "audience https://bank.example.com is not covered by grant grt_1")
}

test_allow_redelegation_to_allowed_sub_agent if {
	decide({
		"actor_chain": chain(["agent-drafter", "agent-mail"]),
		"request": {"depth": 2},
	}) == allowed
}

test_deny_redelegation_to_other_sub_agent if {
	d := decide({
		"actor_chain": chain(["agent-stranger", "agent-mail"]),
		"request": {"depth": 2},
	})
	denied_with(d, "grant grt_1 does not allow re-delegation to sub-agent agent-stranger")
}

test_allow_redelegation_to_any_sub_agent_with_star if {
	decide({
		"grant": {"allowed_sub_agents": ["*"]},
		"actor_chain": chain(["agent-stranger", "agent-mail"]),
		"request": {"depth": 2},
	}) == allowed
}

test_deny_redelegation_when_grant_names_no_sub_agent if {
	d := decide({
		"grant": {"allowed_sub_agents": []},
		"actor_chain": chain(["agent-drafter", "agent-mail"]),
		"request": {"depth": 2},
	})
	denied_with(d, "grant grt_1 does not allow re-delegation to sub-agent agent-drafter")
}

test_deny_redelegation_without_grant if {
	d := decide({
		"grant": null,
		"client": {"first_party": true},
		"actor_chain": chain(["agent-drafter", "agent-mail"]),
		"request": {"depth": 2},
	})
	denied_with(d, "re-delegation to sub-agent agent-drafter needs a grant that allows it")
}

test_allow_depth_at_server_maximum if {
	decide({
		"grant": {"allowed_sub_agents": ["*"]},
		"actor_chain": chain(["agent-c", "agent-b", "agent-mail"]),
		"request": {"depth": 3},
	}) == allowed
}

test_deny_depth_over_server_maximum if {
	d := decide({
		"grant": {"allowed_sub_agents": ["*"]},
		"actor_chain": chain(["agent-d", "agent-c", "agent-b", "agent-mail"]),
		"request": {"depth": 4},
	})
	denied_with(d, "delegation depth 4 exceeds the server maximum of 3")
}

test_allow_depth_at_grant_maximum if {
	decide({
		"grant": {"max_depth": 2},
		"actor_chain": chain(["agent-drafter", "agent-mail"]),
		"request": {"depth": 2},
	}) == allowed
}

test_deny_depth_over_grant_maximum if {
	d := decide({
		"grant": {"max_depth": 1},
		"actor_chain": chain(["agent-drafter", "agent-mail"]),
		"request": {"depth": 2},
	})
	denied_with(d, "delegation depth 2 exceeds the maximum of 1 set by grant grt_1")
}

test_grant_max_depth_zero_means_server_maximum if {
	decide({
		"grant": {"max_depth": 0, "allowed_sub_agents": ["*"]},
		"actor_chain": chain(["agent-c", "agent-b", "agent-mail"]),
		"request": {"depth": 3},
	}) == allowed
}

# --- Impersonation -------------------------------------------------------------------

impersonation := {"actor_chain": [], "request": {"delegation": false, "depth": 0}}

test_allow_impersonation_by_registered_first_party_client if {
	decide(object.union(impersonation, {
		"grant": null,
		"client": {"first_party": true, "may_impersonate": true, "type": "app"},
	})) == allowed
}

test_deny_impersonation_by_first_party_client_not_registered_for_it if {
	d := decide(object.union(impersonation, {"client": {"first_party": true}}))
	denied_with(d, "agent Mail Summarizer (agent-mail) may not impersonate user alice: impersonation is reserved for first-party clients registered for it")
}

test_deny_impersonation_by_third_party_client_even_if_registered if {
	d := decide(object.union(impersonation, {"client": {"may_impersonate": true}}))
	denied_with(d, "agent Mail Summarizer (agent-mail) may not impersonate user alice: impersonation is reserved for first-party clients registered for it")
}

test_deny_delegation_flag_without_chain if {
	d := decide({"actor_chain": []})
	denied_with(d, "inconsistent input: request.delegation is true but actor_chain is empty")
}

test_deny_chain_without_delegation_flag if {
	d := decide({"client": {"first_party": true, "may_impersonate": true}, "request": {"delegation": false}})
	denied_with(d, "inconsistent input: request.delegation is false but actor_chain is not empty")
}

# --- client_credentials --------------------------------------------------------------

client_credentials := {
	"subject": {"issuer": "https://mandate.example.com", "subject": "agent-mail", "kind": "client", "scopes": []},
	"grant": null,
	"actor_chain": [],
	"request": {"grant_type": "client_credentials", "delegation": false, "depth": 0},
}

test_allow_client_credentials_without_grant if {
	decide(client_credentials) == allowed
}

test_allow_client_token_handed_to_the_next_hop if {
	# agent-root's client_credentials token names agent-mail as next hop.
	decide(object.union(client_credentials, {
		"subject": {"subject": "agent-root", "client_id": "agent-root", "kind": "client"},
		"actor_chain": chain(["agent-mail", "agent-root"]),
		"request": {"grant_type": "urn:ietf:params:oauth:grant-type:token-exchange", "delegation": true, "depth": 1},
	})) == allowed
}

test_deny_client_credentials_for_another_client if {
	d := decide(object.union(client_credentials, {"subject": {"subject": "agent-other"}}))
	denied_with(d, "client agent-mail may not present a client_credentials subject of client agent-other")
}

# --- Sensitive scopes ------------------------------------------------------------------

test_no_lifetime_cap_for_read_scopes if {
	d := decide({"request": {"scopes": ["mail:read", "calendar:read"]}})
	d == allowed
	not "max_lifetime_seconds" in object.keys(d)
}

test_cap_lifetime_for_write_scope if {
	decide({"request": {"scopes": ["mail:read", "mail:write"]}}) == {"allow": true, "reasons": [], "max_lifetime_seconds": 300}
}

test_cap_lifetime_for_delete_scope if {
	decide({"request": {"scopes": ["mail:delete"]}}).max_lifetime_seconds == 300
}

test_cap_lifetime_for_admin_scope if {
	decide({"request": {"scopes": ["admin.mail"]}}).max_lifetime_seconds == 300
}

test_no_lifetime_cap_on_deny if {
	d := decide({"grant": null, "request": {"scopes": ["mail:write"]}})
	d.allow == false
	not "max_lifetime_seconds" in object.keys(d)
}

# --- The input itself and the shape of decisions ------------------------------------------

test_deny_unknown_input_version if {
	d := decide({"version": "mandate.policy/v0"})
	denied_with(d, "input version mandate.policy/v0 is not mandate.policy/v1, the version this policy reads")
}

test_deny_missing_input_version if {
	d := exchange.decision with input as object.remove(base, ["version"])
	denied_with(d, "input version null is not mandate.policy/v1, the version this policy reads")
}

test_deny_unknown_subject_kind if {
	d := decide({"subject": {"kind": "robot"}})
	denied_with(d, "subject kind robot is not one of client, mandate, upstream")
}

test_deny_empty_input if {
	d := exchange.decision with input as {}
	d.allow == false
	count(d.reasons) > 0
}

test_deny_without_basis_still_gives_a_reason if {
	d := exchange.decision with input as base with exchange.basis as false
	d == {"allow": false, "reasons": ["no rule of the policy allows this request"]}
}

test_every_deny_has_a_reason if {
	patches := [
		{"grant": null},
		{"request": {"scopes": ["mail:send"]}},
		{"request": {"depth": 9}},
		{"subject": {"kind": "robot"}},
		{"actor_chain": []},
		object.union(impersonation, {"client": {"may_impersonate": true}}),
	]
	every patch in patches {
		d := decide(patch)
		d.allow == false
		count(d.reasons) > 0
		every r in d.reasons {
			is_string(r)
			r != ""
		}
	}
}

test_reasons_are_sorted_and_unique if {
	d := decide({"grant": {"expires_at": 1}, "request": {"scopes": ["z:read", "a:read"]}})
	d.reasons == sort(d.reasons)
	count(d.reasons) == count({r | some r in d.reasons})
	count(d.reasons) == 3
}
