# Business hours for agents.
#
# Agents act for users only on weekdays from 08:00 to 18:00, Paris time.
# First-party apps, and clients acting for themselves, are not affected.
# Add this file beside the default bundle's exchange.rego.
package mandate.exchange

deny contains msg if {
	# The guard compares a field with a constant, so OPA's rule index skips
	# this rule for apps without evaluating it.
	input.client.type == "agent"
	input.subject.kind in {"upstream", "mandate"}

	# The decision time is the request's own (input.meta.time), so that a
	# recorded decision replays the same. A malformed time is an evaluation
	# error, hence a deny.
	now := [time.parse_rfc3339_ns(input.meta.time), "Europe/Paris"]
	not business_hours(now)

	[hour, minute, _] := time.clock(now)
	msg := sprintf(
		"agents may act for users on weekdays from 08:00 to 18:00 Europe/Paris only; it is %s %02d:%02d there",
		[time.weekday(now), hour, minute],
	)
}

business_hours(now) if {
	not time.weekday(now) in {"Saturday", "Sunday"}
	[hour, _, _] := time.clock(now)
	hour >= 8
	hour < 18
}
