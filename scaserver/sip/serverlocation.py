"""Locating SIP servers (RFC 3263 section 4): DNS records in, an ordered target list out.

Pure: no resolver, no clock, no randomness of its own.  The edge
(:mod:`scaserver.edge.dns`) queries DNS and feeds the records here; everything
RFC 3263 decides from them is decided here, so it is tested with plain values.

* Section 4.1, the transport: an explicit ``transport`` (or ``sips``) wins; a
  numeric host or an explicit port with no transport means UDP (TLS for
  ``sips``) and no NAPTR/SRV; otherwise NAPTR records (flag ``s``, services
  ``SIP+D2U``, ``SIP+D2T``, ``SIPS+D2T``) ordered by order then preference,
  kept only for transports this server runs (and only ``SIPS+D2T`` for a
  ``sips`` URI); with no usable NAPTR, SRV records ``_sip._udp``,
  ``_sip._tcp``, ``_sips._tcp`` are tried (:func:`srv_names`); with none of
  those, A/AAAA with UDP (TLS for ``sips``) and the default port.
* Section 4.2, the address and port: SRV records by priority, within a priority
  by weight (RFC 2782's weighted random choice, with an injected source of
  uniform numbers in [0, 1)), the port from the SRV record; an explicit port
  means A/AAAA only.
* Every target keeps the domain the URI named (``server_name``): the RFC 5922
  identity a TLS peer's certificate must show is that domain, never the SRV
  target or the address.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Final

import attrs

from scaserver.sip.actions import Fact
from scaserver.sip.message import Peer, Transport

DEFAULT_PORTS: Final[Mapping[Transport, int]] = MappingProxyType(
    {Transport.UDP: 5060, Transport.TCP: 5060, Transport.TLS: 5061}
)
NAPTR_SERVICES: Final[Mapping[str, Transport]] = MappingProxyType(
    {"SIP+D2U": Transport.UDP, "SIP+D2T": Transport.TCP, "SIPS+D2T": Transport.TLS}
)
SRV_PREFIXES: Final[Mapping[Transport, str]] = MappingProxyType(
    {Transport.UDP: "_sip._udp", Transport.TCP: "_sip._tcp", Transport.TLS: "_sips._tcp"}
)

RandomSource = Callable[[], float]
"""Uniform numbers in [0, 1): ``random.random``, or a seeded ``random.Random().random`` in tests."""


@attrs.frozen
class NaptrRecord:
    """One NAPTR resource record (RFC 3403), as the fields that matter to SIP."""

    order: int
    preference: int
    flags: str
    service: str
    replacement: str
    regexp: str = ""


@attrs.frozen
class SrvRecord:
    """One SRV resource record (RFC 2782)."""

    priority: int
    weight: int
    port: int
    target: str


@attrs.frozen
class Target:
    """One place to send a request: a numeric peer, and the domain its certificate must name
    (RFC 5922; the host of the URI that was resolved)."""

    peer: Peer
    server_name: str


@attrs.frozen
class Query:
    """What the URI leaves to DNS: the host, and the transport and port when the URI fixes them
    (None: NAPTR/SRV decide)."""

    host: str
    transport: Transport | None
    port: int | None
    secure: bool = False


def bare_host(host: str) -> str:
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


@functools.lru_cache(maxsize=4096)
def is_numeric(host: str) -> bool:
    """True for an IPv4 or IPv6 address (with or without brackets).

    Asked for every request the router sends, of a few peer addresses: remembered (parsing
    one costs about 5 us)."""
    try:
        ipaddress.ip_address(bare_host(host))
    except ValueError:
        return False
    return True


def default_transport(query: Query) -> Transport:
    """The transport when neither NAPTR nor SRV gave one (4.1): TLS for sips, else UDP."""
    if query.transport is not None:
        return query.transport
    return Transport.TLS if query.secure else Transport.UDP


def needs_dns_choice(query: Query) -> bool:
    """Whether NAPTR/SRV decide anything: not for a numeric host, nor with an explicit port
    (4.1: numeric host or explicit port -> the default transport; 4.2: port -> A/AAAA only)."""
    return not is_numeric(query.host) and query.port is None


def naptr_services(
    records: Iterable[NaptrRecord], *, secure: bool, served: frozenset[Transport]
) -> list[tuple[Transport, str]]:
    """The usable NAPTR records, best first (4.1): (transport, SRV name to look up).

    Only terminal ``s`` records of the three SIP services, for transports in ``served``; for
    a ``sips`` URI only ``SIPS+D2T``.  Records with a regexp (not used by SIP) are skipped.
    """
    usable: list[tuple[int, int, Transport, str]] = []
    for record in records:
        transport = NAPTR_SERVICES.get(record.service.upper())
        if transport is None or record.flags.lower() != "s" or record.regexp:
            continue
        if transport not in served or (secure and transport is not Transport.TLS):
            continue
        replacement = record.replacement.rstrip(".")
        if not replacement:
            continue
        usable.append((record.order, record.preference, transport, replacement))
    usable.sort(key=lambda item: (item[0], item[1]))
    seen: set[tuple[Transport, str]] = set()
    result: list[tuple[Transport, str]] = []
    for _, _, transport, name in usable:
        if (transport, name) not in seen:
            seen.add((transport, name))
            result.append((transport, name))
    return result


def srv_names(query: Query, served: frozenset[Transport]) -> list[tuple[Transport, str]]:
    """The SRV names to try with no usable NAPTR (4.1): the explicit transport's alone, else
    every served one (only ``_sips._tcp`` for sips), in the order UDP, TCP, TLS."""
    host = bare_host(query.host).rstrip(".")
    if query.transport is not None:
        transports: Sequence[Transport] = (query.transport,)
    elif query.secure:
        transports = (Transport.TLS,)
    else:
        transports = tuple(t for t in (Transport.UDP, Transport.TCP, Transport.TLS) if t in served)
    return [(t, f"{SRV_PREFIXES[t]}.{host}") for t in transports]


def order_srv(records: Iterable[SrvRecord], random: RandomSource) -> list[SrvRecord]:
    """RFC 2782 ordering: lowest priority first; within a priority a weighted random draw
    (records of weight 0 first in the running list, so that they are chosen rarely).  A
    single record with target "." means the service is not offered: nothing."""
    listed = list(records)
    if len(listed) == 1 and listed[0].target.rstrip(".") == "":
        return []
    result: list[SrvRecord] = []
    for priority in sorted({r.priority for r in listed}):
        group = [r for r in listed if r.priority == priority and r.target.rstrip(".")]
        group.sort(key=lambda r: r.weight != 0)  # weight-0 first, stable otherwise
        while group:
            total = sum(r.weight for r in group)
            draw = random() * (total + 1) if total else 0.0
            running = 0
            chosen = group[0]
            for record in group:
                running += record.weight
                if running >= draw:
                    chosen = record
                    break
            group.remove(chosen)
            result.append(chosen)
    return result


def targets_for(
    transport: Transport,
    addresses: Sequence[str],
    port: int,
    server_name: str,
) -> list[Target]:
    return [Target(Peer(transport, ipaddress.ip_address(a).compressed, port), server_name) for a in addresses]


def query_of(peer: Peer) -> Query:
    """The query for a peer the core asked to send to: port 0 means the URI gave none (SRV
    decides), otherwise the port is explicit; the transport is the one the core chose."""
    return Query(peer.host, peer.transport, peer.port or None, secure=peer.transport is Transport.TLS)


def without_held(targets: Sequence[Target], held: Callable[[Peer], bool]) -> list[Target]:
    """The targets not held down after a failure (4.3), or all of them when every one is: a
    request is tried somewhere rather than nowhere."""
    alive = [t for t in targets if not held(t.peer)]
    return alive or list(targets)


@attrs.frozen
class NextHopFailed(Fact):
    """A client transaction to the named ``destination`` failed (``reason``: "503",
    "timeout" or "transport-error") and the request is tried again, in a new transaction,
    at the next target (RFC 3263 4.3).  ``branch`` is the failed transaction's Via branch:
    the edge holds down the target that branch went to."""

    destination: Peer
    branch: str
    reason: str
