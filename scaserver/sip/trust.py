"""Trusted peers: source addresses whose requests are not challenged for credentials.

A trusted peer is a network (a CIDR block, IPv4 or IPv6) optionally restricted to one
transport, e.g. the upstream registrar of the mid-registrar (push-and-parking.md section 3.1,
``midreg.upstream``) or a PBX trunk.  Matching is by the source address the transport layer saw
(:class:`~scaserver.sip.message.Peer`), never by anything written in the message: Via
``sent-by`` and From are chosen by the sender (RFC 3261 section 26.3.2).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Final

import attrs

from scaserver.sip.message import Headers, Peer, Transport

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _network(value: str | IPNetwork) -> IPNetwork:
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return value
    # strict=False: "192.0.2.10/24" means the /24 around it, as operators write it.
    return ipaddress.ip_network(value.strip(), strict=False)


def _address(host: str) -> IPAddress | None:
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    text = text.split("%", 1)[0]  # an IPv6 zone id is not part of the address
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # ::ffff:192.0.2.1 from a dual-stack socket is 192.0.2.1
    return address


@attrs.frozen
class TrustedPeer:
    """One trusted network.  ``transport`` None matches every transport; ``tag`` names the
    entry (the peer group an operator configured) and is reported on a match."""

    cidr: IPNetwork = attrs.field(converter=_network)
    transport: Transport | None = None
    tag: str = ""

    def matches(self, peer: Peer) -> bool:
        if self.transport is not None and peer.transport is not self.transport:
            return False
        address = _address(peer.host)
        return address is not None and address.version == self.cidr.version and address in self.cidr


def _peer_tuple(peers: Iterable[TrustedPeer]) -> tuple[TrustedPeer, ...]:
    return tuple(peers)


@attrs.frozen
class TrustedPeers:
    """An ordered set of trusted networks; the first entry that matches wins."""

    peers: tuple[TrustedPeer, ...] = attrs.field(default=(), converter=_peer_tuple)

    @classmethod
    def of(cls, *peers: TrustedPeer) -> TrustedPeers:
        return cls(peers)

    @classmethod
    def from_entries(cls, entries: Iterable[tuple[str, Transport | None, str]]) -> TrustedPeers:
        """Build from ``(cidr, transport, tag)`` triples; raises ValueError for a bad CIDR."""
        return cls(tuple(TrustedPeer(cidr, transport, tag) for cidr, transport, tag in entries))

    def match(self, peer: Peer) -> TrustedPeer | None:
        """The first entry matching ``peer`` (address and transport), or None."""
        for entry in self.peers:
            if entry.matches(peer):
                return entry
        return None

    def is_trusted(self, peer: Peer) -> bool:
        return self.match(peer) is not None

    def __len__(self) -> int:
        return len(self.peers)


# RFC 3325: the trust domain of asserted identities.  A P-Asserted-Identity is believed only
# from a trusted peer (section 5: "a proxy that receives a request containing a
# P-Asserted-Identity header field from an entity it does not trust MUST remove it"); a
# P-Preferred-Identity is a user agent's wish to a proxy it trusts (section 9.2) and never
# leaves a proxy that has read it.

ASSERTED: Final = "P-Asserted-Identity"
PREFERRED: Final = "P-Preferred-Identity"
IDENTITY_HEADERS: Final = (ASSERTED, PREFERRED)


def carries_identity(headers: Headers) -> bool:
    """Whether ``headers`` hold a P-Asserted-Identity or P-Preferred-Identity."""
    return any(name in headers for name in IDENTITY_HEADERS)


def without_identity(headers: Headers) -> Headers:
    """``headers`` with every P-Asserted-Identity and P-Preferred-Identity removed."""
    for name in IDENTITY_HEADERS:
        headers = headers.remove(name)
    return headers


def asserted(headers: Headers, identity: str) -> Headers:
    """``headers`` carrying ``identity`` (a SIP URI) as the one asserted identity."""
    return without_identity(headers).set(ASSERTED, f"<{identity}>")


def requests_id_privacy(headers: Headers) -> bool:
    """Whether the ``Privacy`` header asks for ``id`` privacy (RFC 3325 section 9.3): the
    asserted identity may reach trusted hops only."""
    for value in headers.values("Privacy"):
        for token in value.split(";"):
            if token.strip().lower() == "id":
                return True
    return False
