"""The pure SIP core: messages, parser, serializer, transactions, dialogs, digest.

Nothing in this package performs I/O or reads the clock: callers pass ``now`` and
receive actions (see :mod:`scaserver.sip.actions`).
"""
