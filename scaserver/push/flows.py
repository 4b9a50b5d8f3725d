"""The stream connections push devices registered over (push-and-parking.md 6.1 step 2,
``ring_open_flows``): a device whose TCP/TLS connection closed gets no direct branch until
it registers over a new one."""

from __future__ import annotations

from collections.abc import Hashable

import attrs

from scaserver.sip.message import Peer


@attrs.define
class DeviceFlows:
    """Push bindings by the open connection they registered over, and those whose
    connection has closed since (bindings by the registrar's key, opaque here)."""

    _flows: dict[Peer, set[Hashable]] = attrs.field(factory=dict)
    _flow_of: dict[Hashable, Peer] = attrs.field(factory=dict)
    _closed: set[Hashable] = attrs.field(factory=set)

    def closed(self, peer: Peer) -> None:
        """A TCP/TLS connection closed: the bindings registered over it lose their flow."""
        for key in self._flows.pop(peer, ()):
            del self._flow_of[key]
            self._closed.add(key)

    def is_closed(self, key: Hashable) -> bool:
        return key in self._closed

    def track(self, key: Hashable, received: Peer, *, open_now: bool = True) -> None:
        """Remember the connection a push device registered over (``closed``)."""
        self.untrack(key)
        if not received.transport.reliable:
            return
        if open_now:
            self._flows.setdefault(received, set()).add(key)
            self._flow_of[key] = received
        else:
            self._closed.add(key)  # restored: connections do not survive a restart

    def untrack(self, key: Hashable) -> None:
        self._closed.discard(key)
        peer = self._flow_of.pop(key, None)
        if peer is not None:
            keys = self._flows[peer]
            keys.discard(key)
            if not keys:
                del self._flows[peer]
