"""Push notifications for mobile softphones (push-and-parking.md sections 4 and 5): RFC 8599
and User-Agent device typing, push policy, and the push gateway's JSON contract (pure)."""
