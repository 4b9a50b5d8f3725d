"""Where a SIP URI is sent: RFC 3263 section 4 without DNS.

The hosts file, parsed once at start-up (:class:`HostsTable`), and numeric hosts.
With DNS servers known, :mod:`scaserver.edge.dns` locates names (NAPTR, SRV,
A/AAAA) and consults this table first; without, this module is all there is.  The selection
follows RFC 3263 section 4.1 for the cases that need no NAPTR or SRV record:

* the target host is the ``maddr`` parameter when present, else the URI host
  (RFC 3261 section 16.6 step 7, RFC 3263 section 4);
* the transport is the ``transport`` parameter when present; otherwise TLS for
  a ``sips`` URI and UDP for a ``sip`` URI (section 4.1: numeric host or
  explicit port means UDP; with no NAPTR record a ``sip`` URI also gets UDP);
  ``sips`` with ``transport=tcp`` is TLS over TCP;
* the port is the URI port, else 5060 (5061 for TLS) (section 4.2, no SRV).

A host name absent from the hosts file is unresolvable: :class:`UnresolvableTargetError`.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Final

from scaserver.sip.message import Peer, Transport
from scaserver.sip.uri import SipUri

DEFAULT_PORTS: Final[Mapping[Transport, int]] = MappingProxyType(
    {Transport.UDP: 5060, Transport.TCP: 5060, Transport.TLS: 5061}
)
_TRANSPORT_PARAMS: Final[Mapping[str, Transport]] = MappingProxyType(
    {"udp": Transport.UDP, "tcp": Transport.TCP, "tls": Transport.TLS}
)


class UnresolvableTargetError(Exception):
    """A URI or peer whose host has no address we can find, or whose transport we do not serve."""


@functools.lru_cache(maxsize=4096)
def is_numeric(host: str) -> bool:
    """True for an IPv4 address or an IPv6 address (with or without brackets).

    Asked for every message sent, of a few peer addresses: remembered (parsing one costs
    about 5 us)."""
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(bare)
    except ValueError:
        return False
    return True


class HostsTable:
    """Name -> addresses, parsed from a hosts(5) file: ``ADDRESS NAME [ALIAS...]`` per line.

    Names are case-insensitive; addresses keep file order, without repeats.
    Lines whose first field is not an IP address are skipped.
    """

    def __init__(self, entries: Mapping[str, tuple[str, ...]] | None = None) -> None:
        self._entries: Mapping[str, tuple[str, ...]] = MappingProxyType(dict(entries or {}))

    @classmethod
    def parse(cls, text: str) -> HostsTable:
        entries: dict[str, list[str]] = {}
        for raw in text.splitlines():
            fields = raw.split("#", 1)[0].split()
            if len(fields) < 2:
                continue
            try:
                address = ipaddress.ip_address(fields[0]).compressed
            except ValueError:
                continue
            for name in fields[1:]:
                addresses = entries.setdefault(name.lower().rstrip("."), [])
                if address not in addresses:
                    addresses.append(address)
        return cls({name: tuple(addresses) for name, addresses in entries.items()})

    @classmethod
    def load(cls, path: str | Path = "/etc/hosts") -> HostsTable:
        """Read the hosts file once; a missing or unreadable file gives an empty table."""
        try:
            text = Path(path).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return cls()
        return cls.parse(text)

    def lookup(self, name: str) -> tuple[str, ...]:
        return self._entries.get(name.lower().rstrip("."), ())

    def __len__(self) -> int:
        return len(self._entries)


def addresses_of(host: str, hosts: HostsTable) -> tuple[str, ...]:
    """A numeric host as itself (brackets removed), a name through the hosts table."""
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if is_numeric(bare):
        return (ipaddress.ip_address(bare).compressed,)
    addresses = hosts.lookup(bare)
    if not addresses:
        raise UnresolvableTargetError(f"{host}: not numeric and not in the hosts file")
    return addresses


def select_transport(uri: SipUri) -> Transport:
    """RFC 3263 section 4.1 for a URI, without NAPTR."""
    param = uri.transport
    if param is not None:
        transport = _TRANSPORT_PARAMS.get(param)
        if transport is None:
            raise UnresolvableTargetError(f"{uri}: transport {param!r} is not served")
        if uri.scheme == "sips" and transport is Transport.TCP:
            return Transport.TLS
        return transport
    return Transport.TLS if uri.scheme == "sips" else Transport.UDP


def resolve_uri(uri: SipUri, hosts: HostsTable) -> tuple[Peer, ...]:
    """The peers to try, in order, for a request sent to ``uri`` (RFC 3263 section 4)."""
    transport = select_transport(uri)
    port = uri.port if uri.port is not None else DEFAULT_PORTS[transport]
    host = uri.param("maddr") or uri.host
    return tuple(Peer(transport, address, port) for address in addresses_of(host, hosts))


def resolve_peer(peer: Peer, hosts: HostsTable) -> tuple[Peer, ...]:
    """A peer whose host may be a name (a proxy's next hop) -> peers with numeric hosts."""
    return tuple(Peer(peer.transport, address, peer.port) for address in addresses_of(peer.host, hosts))


def resolvable_in(hosts: HostsTable, *, dns: bool = False) -> Callable[[str], bool]:
    """Whether the edge can send to a host: numeric, a name in the hosts table, or with
    ``dns`` (name servers configured) any host name, looked up when a message goes there."""

    def known(host: str) -> bool:
        if is_numeric(host):  # its own address (remembered: not parsed again per message)
            return True
        try:
            addresses_of(host, hosts)
        except UnresolvableTargetError:
            return dns and _is_host_name(host)
        return True

    return known


_LABEL = r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9])?"


_HOST_NAME = re.compile(rf"(?i)^(?=.{{1,253}}\.?$)({_LABEL}\.)*{_LABEL}\.?$")


def _is_host_name(host: str) -> bool:
    """A syntactically valid DNS name that may resolve (RFC 6761 6.4: ``.invalid`` never does)."""
    name = host.lower().rstrip(".")
    return bool(_HOST_NAME.match(host)) and name != "invalid" and not name.endswith(".invalid")
