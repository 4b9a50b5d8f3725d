"""Containment of floods and password guessing (pure: no I/O, ``now`` passed in)."""
