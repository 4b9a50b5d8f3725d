"""Peers trusted by their verified TLS client certificate (``[tls] trusted_names``)."""

from __future__ import annotations

from typing import Final

from scaserver.router.router import SipRouter
from scaserver.sip.message import Peer, Transport
from scaserver.sip.trust import TrustedPeer, TrustedPeers


class CertificateTrust:
    """Peers trusted by their TLS client certificate (``[tls] trusted_names``): while a
    connection whose verified certificate names a trusted peer is open, its source address is a
    trusted peer on TLS (tag ``tls-certificate:NAME``), beside the directory's entries."""

    TAG: Final = "tls-certificate:"

    def __init__(self, core: SipRouter) -> None:
        self._core = core
        self._names: dict[Peer, str] = {}

    def identified(self, peer: Peer, name: str | None) -> None:
        if name is None:
            self._names.pop(peer, None)
        else:
            self._names[peer] = name
        self.apply()

    def apply(self) -> None:
        """Put the current certificate entries into the core's trusted peers."""
        kept = [entry for entry in self._core.trusted.peers if not entry.tag.startswith(self.TAG)]
        added: dict[str, TrustedPeer] = {}
        for peer, name in self._names.items():
            if peer.host not in added:
                added[peer.host] = TrustedPeer(peer.host, Transport.TLS, self.TAG + name)
        self._core.trusted = TrustedPeers((*kept, *added.values()))
