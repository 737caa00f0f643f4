# Attested agents only.
#
# An agent acting for a user must present an actor token whose claims say
# its workload is attested (attested: true, as set by the workload identity
# system that issued the token). Apps, and clients acting for themselves,
# are not affected. Add this file beside the default bundle's exchange.rego.
package mandate.exchange

deny contains msg if {
	input.client.type == "agent"
	input.request.delegation == true
	not input.actor
	msg := sprintf("agent %s presented no actor token: agents must present an attested actor token", [input.client.id])
}

deny contains msg if {
	input.client.type == "agent"
	actor := input.actor
	not actor.claims.attested == true
	msg := sprintf("actor %s is not attested (attested is %v): agents must present an attested actor token", [actor.subject, object.get(actor.claims, "attested", null)])
}
