"""scaserver: a Shared Call Appearance SIP application server."""

__version__ = "0.1.0"
