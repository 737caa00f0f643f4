# Per-audience scope ceilings.
#
# Some resource servers are sensitive enough that no delegated token for
# them may carry more than a few scopes, whatever a user granted. A token
# is valid at every audience it names, so each requested scope must be
# within the ceiling of every audience (and resource) that has one.
# Add this file beside the default bundle's exchange.rego.
package mandate.exchange

# The ceilings, keyed by audience. Audiences not listed have no ceiling.
audience_scope_ceilings := {
	"https://payments.example.com": {"payments:read"},
	"https://hr.example.com": {"hr:read", "hr:profile"},
}

deny contains msg if {
	some audience in array.concat(input.request.audiences, input.request.resources)
	ceiling := audience_scope_ceilings[audience]
	some scope in input.request.scopes
	not scope in ceiling
	msg := sprintf("scope %s is above the ceiling for audience %s (at most %s)", [scope, audience, concat(" ", sort(ceiling))])
}
