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

import attrs

from scaserver.sip.message import Peer
from scaserver.sip.uri import SipUri, parse_uri


class KeyKind(enum.Enum):
    INSTANCE = "instance"
    PUSH = "push"
    URI = "uri"


@attrs.frozen
class BindingKey:
    """Identity of one binding: its AoR plus the device discriminator (section 3.6).

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


class RemovalReason(enum.Enum):
    """Why a binding was removed before it expired."""

    UNREGISTERED = "unregistered"  # expires 0 for this contact, or Contact: *
    ADMINISTRATIVE = "administrative"  # an operator (RPC ul.rm / ul.rm_contact)
    UPSTREAM_REJECTED = "upstream-rejected"  # the upstream refused the AoR (push-and-parking.md 3.5)
    TOKEN_INVALID = "token-invalid"  # a push-only binding whose token died (push-and-parking.md 4.4)


@attrs.frozen
class BindingAdded:
    """A contact was registered for an AoR that had no binding with its key."""

    binding: Binding
    at: float


@attrs.frozen
class BindingRefreshed:
    """An existing binding was re-registered; ``previous`` is what it replaced (the contact
    URI, received address or Call-ID may have changed for the same device key)."""

    binding: Binding
    previous: Binding
    at: float


@attrs.frozen
class BindingRemoved:
    """A binding ended before its time: de-registered or removed by an operator."""

    binding: Binding
    reason: RemovalReason
    at: float


@attrs.frozen
class BindingExpired:
    """A binding reached ``expires_at`` without being refreshed."""

    binding: Binding
    at: float


BindingEvent = BindingAdded | BindingRefreshed | BindingRemoved | BindingExpired
