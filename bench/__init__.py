"""Benchmarks of scaserver side by side with Kamailio's sca module (see bench/README.md)."""
