"""Registrar bindings (RFC 3261 section 10) and the facts published when they change.

A binding maps an address-of-record to one Contact address.  It is identified inside its
AoR by a :class:`BindingKey` that decides "same device" (push-and-parking.md section 3.6):

1. ``+sip.instance`` (with ``reg-id`` when present, RFC 5626 section 6);
2. else the RFC 8599 push coordinates (``pn-provider``, ``pn-prid``, ``pn-param``);
3. else the Contact URI, compared per RFC 3261 section 19.1.4.

The events at the bottom are what the registrar publishes on the bus; the push subsystem,
parking, SCA and the store consume them.
"""

from __future__ import annotations

import enum
import functools
import ipaddress

import attrs

from scaserver.sip.actions import Fact
from scaserver.sip.errors import MalformedMessage
from scaserver.sip.message import Peer
from scaserver.sip.uri import SipUri, Uri, parse_name_addr, parse_uri


class KeyKind(enum.Enum):
    __hash__ = object.__hash__  # members are singletons: identity hash in C, not Enum.__hash__

    INSTANCE = "instance"
    PUSH = "push"
    URI = "uri"


@attrs.frozen(cache_hash=True)
class BindingKey:
    """Identity of one binding: its AoR plus the device discriminator (section 3.6).

    Its hash is computed once: a REGISTER looks its key up in half a dozen tables.

    ``value`` is the instance URN (``<urn:uuid:...>`` with ``;reg-id=N`` appended when
    present), the push triple joined by spaces, or the contact URI text of the first
    registration of that URI.  It is also the timer key for the binding's expiry.
    """

    aor: str
    kind: KeyKind
    value: str


@attrs.frozen
class Binding:
    """One registered contact of an AoR (RFC 3261 section 10.3 step 7).

    ``contact`` is the Contact URI text (never the display name or header parameters);
    ``params`` are the Contact header parameters other than ``expires`` and ``q``, echoed in
    the 200 (``+sip.instance``, ``reg-id``, feature tags, ``methods``...).  ``expires_at``
    is absolute time.  ``received`` is the transport address the REGISTER came from, ``path``
    the Path header values of the REGISTER (RFC 3327 section 5.3), ``push`` the RFC 8599
    ``pn-*`` URI parameters.
    """

    key: BindingKey
    contact: str
    expires_at: float
    call_id: str
    cseq: int
    received: Peer
    q: float | None = None
    user_agent: str | None = None
    path: tuple[str, ...] = ()
    instance: str | None = None
    reg_id: int | None = None
    params: tuple[tuple[str, str | None], ...] = ()
    push: tuple[tuple[str, str], ...] = ()
    registered_at: float = 0.0
    updated_at: float = 0.0

    @property
    def aor(self) -> str:
        return self.key.aor

    @property
    def sort_q(self) -> float:
        """The q used for ordering: an absent q ranks as 1.0 (RFC 3261 section 16.6)."""
        return 1.0 if self.q is None else self.q

    def remaining(self, now: float) -> int:
        """Whole seconds left, as the ``expires`` parameter of a 200 (never negative)."""
        return max(0, int(self.expires_at - now + 0.5))

    @property
    def flow(self) -> Peer | None:
        """Where a request to this binding goes when not by its Contact URI: the REGISTER's
        source when the phone registered over a stream (its connection is the only way back)
        or from behind NAT (source and Contact differ; RFC 5626 spirit); None: by the URI."""
        received = self.received
        if received.transport.reliable:
            return received
        contact = parse_uri(self.contact)
        at_contact = isinstance(contact, SipUri) and (contact.host, contact.port or 5060) == (
            received.host,
            received.port,
        )
        return None if at_contact else received

    @property
    def reached_at(self) -> frozenset[tuple[str, int]]:
        """The transport addresses this binding is reached at, as :func:`address_key` writes
        them: its Contact URI's (``maddr`` or host; the scheme's or transport's default port),
        the address its REGISTER came from (the flow, behind NAT the only way back) and the
        first hop of its Path (RFC 3327)."""
        found = {address_key(self.received.host, self.received.port)}
        uris: list[Uri] = []
        try:
            uris.append(parse_uri(self.contact))
            uris += [parse_name_addr(value).uri for value in self.path[:1]]
        except MalformedMessage:
            pass
        for uri in uris:
            if isinstance(uri, SipUri):
                secure = uri.secure or uri.transport == "tls"
                found.add(address_key(uri.param("maddr") or uri.host, uri.port or (5061 if secure else 5060)))
        return frozenset(found)


@functools.lru_cache(maxsize=8192)
def address_key(host: str, port: int) -> tuple[str, int]:
    """A transport address as it is compared: the host in lower case without IPv6 brackets
    (an IPv6 address in its compressed form), and the port.  Remembered: every REGISTER
    compares its bindings' addresses, and ``ipaddress`` takes about 10 us a parse."""
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        text = ipaddress.ip_address(text).compressed
    except ValueError:
        text = text.lower()
    return text, port


class RemovalReason(enum.Enum):
    """Why a binding was removed before it expired."""

    UNREGISTERED = "unregistered"  # expires 0 for this contact, or Contact: *
    ADMINISTRATIVE = "administrative"  # an operator (RPC ul.rm / ul.rm_contact)
    UPSTREAM_REJECTED = "upstream-rejected"  # the upstream refused the AoR (push-and-parking.md 3.5)
    TOKEN_INVALID = "token-invalid"  # a push-only binding whose token died (push-and-parking.md 4.4)
    FLOW_FAILED = "flow-failed"  # its flow failed: a NAT ping unanswered, its connection closed (RFC 5626)


@attrs.frozen
class BindingAdded(Fact):
    """A contact was registered for an AoR that had no binding with its key."""

    binding: Binding
    at: float


@attrs.frozen
class BindingRefreshed(Fact):
    """An existing binding was re-registered; ``previous`` is what it replaced (the contact
    URI, received address or Call-ID may have changed for the same device key)."""

    binding: Binding
    previous: Binding
    at: float


@attrs.frozen
class BindingRemoved(Fact):
    """A binding ended before its time: de-registered or removed by an operator."""

    binding: Binding
    reason: RemovalReason
    at: float


@attrs.frozen
class BindingExpired(Fact):
    """A binding reached ``expires_at`` without being refreshed."""

    binding: Binding
    at: float


BindingEvent = BindingAdded | BindingRefreshed | BindingRemoved | BindingExpired
