"""NOTIFY requests of the SCA packages (sca.md section 4, RFC 6665 section 4.2.2).

Each NOTIFY is an in-dialog request of the subscription dialog (RFC 3261
12.2.1.1): Request-URI the subscriber's contact (remote target), Route the
stored route set (loose routing; a strict first hop becomes the Request-URI
and the remote target goes last), From our URI with our tag, To the
subscriber's URI with its tag, the dialog's Call-ID and the next local CSeq.
The body is empty: the state travels in ``Call-Info`` (section 5).
"""

from __future__ import annotations

from typing import Final

import attrs

from scaserver.sca.subscription import EVENT_NAMES, Subscription
from scaserver.sip.errors import MalformedMessage
from scaserver.sip.message import Headers, Peer, Request, Transport
from scaserver.sip.uri import SipUri, parse_name_addr, parse_uri

MAX_FORWARDS: Final = 70
_MAX_FORWARDS_TEXT: Final = str(MAX_FORWARDS)


@attrs.frozen
class SubscriptionStatus:
    """A ``Subscription-State`` value (RFC 6665 section 8.2.3)."""

    terminated: bool
    expires: int = 0
    reason: str | None = None

    def render(self) -> str:
        return subscription_state(self.terminated, self.expires, self.reason)


def subscription_state(terminated: bool, expires: int = 0, reason: str | None = None) -> str:
    """The text of a ``Subscription-State`` value (:class:`SubscriptionStatus` without the value,
    for the outbox's NOTIFYs)."""
    if not terminated:
        return f"active;expires={expires}"
    return "terminated" if reason is None else f"terminated;reason={reason}"


def _route_uri(value: str) -> SipUri | None:
    try:
        uri = parse_name_addr(value).uri
    except MalformedMessage:
        return None
    return uri if isinstance(uri, SipUri) else None


def bracketed(value: str) -> str:
    """A Contact URI as a NOTIFY's Contact value: in ``<>`` unless already a name-addr."""
    value = value.strip()
    return value if value.startswith("<") or value.startswith('"') else f"<{value}>"


def request_target(subscription: Subscription) -> tuple[str, tuple[str, ...]]:
    """The Request-URI and Route values of an in-dialog request (RFC 3261 12.2.1.1)."""
    routes = subscription.record_route
    if not routes:
        return subscription.subscriber, ()
    first = _route_uri(routes[0])
    if first is None or first.has_param("lr"):
        return subscription.subscriber, routes
    # Strict routing: the first hop is the Request-URI, the remote target goes last.
    return str(first), (*routes[1:], f"<{subscription.subscriber}>")


def build_notify(
    subscription: Subscription,
    *,
    cseq: int,
    contact: str,
    call_info: str,
    status: SubscriptionStatus,
) -> Request:
    """The NOTIFY number ``cseq`` of ``subscription``'s dialog (sca.md section 4).

    Header order follows K's (Contact, Call-Info, Event, Subscription-State)
    after the dialog headers; Via and Content-Length are added by the layers
    below.
    """
    return notify_request(
        subscription, cseq=cseq, contact=bracketed(contact), call_info=call_info, state=status.render()
    )


def notify_request(
    subscription: Subscription, *, cseq: int, contact: str, call_info: str, state: str
) -> Request:
    """:func:`build_notify` with what the NOTIFYs of an outbox share given ready: ``contact``
    already a Contact value (:func:`bracketed`, made once per outbox), ``state`` the
    Subscription-State value (:meth:`SubscriptionStatus.render`'s text).  Once per NOTIFY:
    no route look-up for an empty route set, no list built field by field."""
    local = subscription.local_uri or subscription.aor
    remote = subscription.remote_uri or subscription.aor
    fields: tuple[tuple[str, str], ...] = (
        ("Max-Forwards", _MAX_FORWARDS_TEXT),
        ("From", f"<{local}>;tag={subscription.to_tag}"),
        ("To", f"<{remote}>;tag={subscription.from_tag}"),
        ("Call-ID", subscription.call_id),
        ("CSeq", f"{cseq} NOTIFY"),
        ("Contact", contact),
        ("Call-Info", call_info),
        ("Event", EVENT_NAMES[subscription.event]),
        ("Subscription-State", state),
    )
    if subscription.record_route:
        uri, routes = request_target(subscription)
        fields = tuple([("Route", route) for route in routes]) + fields
    else:
        uri = subscription.subscriber
    # Every name above is spelled canonically: no Headers.of pass over them.
    return Request("NOTIFY", uri, Headers(fields))


_TRANSPORTS: Final = {"udp": Transport.UDP, "tcp": Transport.TCP, "tls": Transport.TLS}


def next_hop(subscription: Subscription) -> Peer | None:
    """Where a NOTIFY goes first: where the SUBSCRIBE came from when known (its sender is
    the first hop of the route set, or the phone itself), else the host of the first
    Route or of the Request-URI (RFC 3263 resolution of a host name is the edge's job)."""
    if subscription.peer is not None:
        return subscription.peer
    uri_text, routes = request_target(subscription)
    target = _route_uri(routes[0]) if routes else None
    if target is None:
        try:
            parsed = parse_uri(uri_text)
        except MalformedMessage:
            return None
        if not isinstance(parsed, SipUri):
            return None
        target = parsed
    transport = _TRANSPORTS.get(target.transport or "", Transport.TLS if target.secure else Transport.UDP)
    return Peer(transport, target.host, target.port or target.default_port)
