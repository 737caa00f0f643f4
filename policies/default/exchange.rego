# The mandate default exchange policy.
#
# Decides every RFC 8693 token exchange unless a security team ships a
# bundle of its own. The broker enforces attenuation, holder binding and the
# act chain whatever this policy says; the policy can only narrow.
#
# A request is allowed when it has a basis (a grant from the user, a
# first-party client, or a client acting for itself) and no rule in `deny`
# fires. A denied request carries the reason of every rule that fired.
# To add a rule, add a file in this package with
# `deny contains msg if { ... }`: see examples/policies.
package mandate.exchange

# This policy runs on every token request, within a budget of microseconds,
# so it is written for OPA's evaluator:
#   - Rule guards compare an input field with a constant (`input.x == "c"`),
#     so that OPA's rule index skips the rules that cannot apply without
#     evaluating them. Keep guards in that form when editing.
#   - Constants are written in place (3, 300, "mandate.policy/v1") rather than
#     as rules of their own: each rule costs an evaluation.
#   - What only a denial needs (the why of a missing basis, client labels) is
#     computed only on the denial path.
#
# The limits it sets:
#   - delegation depth: at most 3 (user -> agent -> sub-agent -> sub-sub-agent),
#     and at most grant.max_depth when the grant sets one;
#   - tokens carrying a sensitive scope (ending in :write or :delete, or
#     starting with admin) live at most 300 seconds.

# --- The entry point --------------------------------------------------------

# decision is what the broker asks for: data.mandate.exchange.decision.
decision := {"allow": false, "reasons": reasons} if {
	not allow
} else := {"allow": true, "reasons": [], "max_lifetime_seconds": 300} if {
	sensitive
} else := {"allow": true, "reasons": []}

default allow := false

allow if {
	basis
	count(deny) == 0
}

# --- What a request stands on -----------------------------------------------

# A user's authority reaches a client through the user's grant...
basis if {
	input.version == "mandate.policy/v1"
	input.subject.kind == "upstream"
	is_object(input.grant)
}

basis if {
	input.version == "mandate.policy/v1"
	input.subject.kind == "mandate"
	is_object(input.grant)
}

# ...or through a client the operator registered as its own.
basis if {
	input.version == "mandate.policy/v1"
	input.subject.kind == "upstream"
	input.client.first_party == true
}

basis if {
	input.version == "mandate.policy/v1"
	input.subject.kind == "mandate"
	input.client.first_party == true
}

# A client acting for itself (client_credentials) needs no grant.
basis if {
	input.version == "mandate.policy/v1"
	input.subject.kind == "client"
}

# --- Why a request has no basis (computed on denial only) -------------------

reasons := sort(deny | no_basis) if {
	count(deny | no_basis) > 0
} else := ["no rule of the policy allows this request"]

no_basis contains msg if {
	not input.version == "mandate.policy/v1"
	msg := sprintf("input version %v is not mandate.policy/v1, the version this policy reads", [object.get(input, "version", null)])
}

no_basis contains msg if {
	not input.subject.kind in {"upstream", "mandate", "client"}
	msg := sprintf("subject kind %v is not one of client, mandate, upstream", [object.get(input, ["subject", "kind"], null)])
}

no_basis contains msg if {
	input.subject.kind in {"upstream", "mandate"}
	not is_object(input.grant)
	not input.client.first_party == true
	msg := sprintf("no active grant from user %s to %s covers this request", [input.subject.subject, client_label])
}

client_label := sprintf("%s %s", [input.client.type, input.client.id]) if {
	input.client.name in {"", input.client.id}
} else := sprintf("%s %s (%s)", [input.client.type, input.client.name, input.client.id])

# --- The input is consistent ------------------------------------------------

# The broker sets request.delegation exactly when the new token carries an
# act chain.
deny contains "inconsistent input: request.delegation is true but actor_chain is empty" if {
	input.request.delegation == true
	input.actor_chain == []
}

deny contains "inconsistent input: request.delegation is false but actor_chain is not empty" if {
	input.request.delegation == false
	input.actor_chain[0]
}

# --- The grant covers the request -------------------------------------------
# Each rule binds a field of input.grant first: with no grant it is
# undefined and the rule does not apply (the grant's absence is a matter of
# basis, above).

deny contains msg if {
	expires_at := input.grant.expires_at
	expires_at > 0
	expires_at <= input.meta.unix
	msg := sprintf("grant %s expired at %s", [input.grant.id, time.format(expires_at * 1000000000)])
}

deny contains msg if {
	granted := input.grant.scopes
	some scope in input.request.scopes
	not scope in granted
	msg := sprintf("scope %s is not covered by grant %s", [scope, input.grant.id])
}

deny contains msg if {
	granted := input.grant.resources
	some audience in input.request.audiences
	not audience in granted
	not matches_prefix(audience, granted)
	not next_hop_allowed(audience)
	msg := sprintf("audience %s is not covered by grant %s", [audience, input.grant.id])
}

deny contains msg if {
	granted := input.grant.resources
	some resource in input.request.resources
	not resource in granted
	not matches_prefix(resource, granted)
	msg := sprintf("resource %s is not covered by grant %s", [resource, input.grant.id])
}

# A grant resource ending in "*" is a prefix: "https://files.example.com/alice/*"
# covers everything under alice's folder, and "*" covers everything.
matches_prefix(value, patterns) if {
	some pattern in patterns
	endswith(pattern, "*")
	startswith(value, trim_suffix(pattern, "*"))
}

# Re-delegation starts with a hand-off: agent A asks for a token whose
# audience is sub-agent B, the next hop, and gives it to B. The grant names B
# in allowed_sub_agents, not in resources. With "*" any audience shaped like
# a client ID (not a URI) may be a next hop; the broker checks that it is a
# registered agent.
next_hop_allowed(audience) if audience in input.grant.allowed_sub_agents

next_hop_allowed(audience) if {
	"*" in input.grant.allowed_sub_agents
	regex.match(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`, audience)
}

# --- Delegation depth and re-delegation -------------------------------------

deny contains msg if {
	input.request.depth > 3
	msg := sprintf("delegation depth %d exceeds the server maximum of 3", [input.request.depth])
}

deny contains msg if {
	max_depth := input.grant.max_depth
	max_depth > 0
	input.request.depth > max_depth
	msg := sprintf("delegation depth %d exceeds the maximum of %d set by grant %s", [input.request.depth, max_depth, input.grant.id])
}

# Re-delegation: the act chain holds a sub-agent (actor_chain[0], the current
# actor) in front of the agent that delegated to it (actor_chain[1]).
deny contains msg if {
	input.actor_chain[1]
	allowed := input.grant.allowed_sub_agents
	sub_agent := input.actor_chain[0].sub
	not "*" in allowed
	not sub_agent in allowed
	msg := sprintf("grant %s does not allow re-delegation to sub-agent %s", [input.grant.id, sub_agent])
}

# A user's authority passes to a sub-agent only as the user's grant says.
# (A client acting for itself may hand its own authority on: the broker lets
# only the next hop its token names take it.)
deny contains msg if {
	input.grant == null
	input.actor_chain[1]
	input.subject.kind in {"upstream", "mandate"}
	msg := sprintf("re-delegation to sub-agent %s needs a grant that allows it", [input.actor_chain[0].sub])
}

# --- Impersonation ----------------------------------------------------------

# Without an act chain the new token says the user acts themself: only a
# first-party client registered for it may ask for that.
deny contains msg if {
	input.request.delegation == false
	input.subject.kind in {"upstream", "mandate"}
	not may_impersonate
	msg := sprintf("%s may not impersonate user %s: impersonation is reserved for first-party clients registered for it", [client_label, input.subject.subject])
}

may_impersonate if {
	input.client.first_party == true
	input.client.may_impersonate == true
}

# --- A client acting for itself ---------------------------------------------

# Without an act chain, a client's own token is used by that client only.
deny contains msg if {
	input.subject.kind == "client"
	input.actor_chain == []
	input.subject.subject != input.client.id
	msg := sprintf("client %s may not present a client_credentials subject of client %s", [input.client.id, input.subject.subject])
}

# --- Sensitive scopes: short-lived tokens -----------------------------------

sensitive if strings.any_suffix_match(input.request.scopes, [":write", ":delete"])

sensitive if strings.any_prefix_match(input.request.scopes, "admin")
