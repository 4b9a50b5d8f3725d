"""Handset provisioning (provisioning.md): Polycom and Cisco profiles from store records."""
