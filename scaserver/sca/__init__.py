"""Shared Call Appearances (sca.md): call-info and line-seize subscriptions, the appearance
state machine, the Call-Info codec and NOTIFY fan-out, as a pure engine."""
