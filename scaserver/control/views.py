"""The seams' views of engine values: what the control plane shows of subscriptions,
appearances, bindings and parked calls (rpc.md 3, sca.md 8.1 and 11, push-and-parking.md 9),
and how an operator's arguments name AoRs and contacts.

Pure functions of the engines' values; the views over the running core (``control.scaview``,
``control.locationview``, ``control.parkingview``) read the engines and map what they read
through these.
"""

from __future__ import annotations

import hashlib
from typing import Final

import attrs

from scaserver.control.seams import (
    AppearanceInfo,
    AppearanceStateName,
    ContactInfo,
    ParkedBranchInfo,
    ParkedCallInfo,
    PushAttemptInfo,
    PushInfo,
    ScaEvent,
    SubscriptionInfo,
)
from scaserver.parking.parked import ParkingSettings
from scaserver.parking.parkedcall import AttemptState, CallState, ParkedCall
from scaserver.push.pnparams import token_hash
from scaserver.push.policy import DevicePush
from scaserver.registrar.binding import Binding, BindingKey, KeyKind
from scaserver.sca.appearance import Appearance
from scaserver.sca.line import canonical_aor
from scaserver.sca.subscription import (
    Package,
    Subscription,
)
from scaserver.sip.errors import MalformedMessage
from scaserver.sip.message import Peer
from scaserver.sip.uri import SipUri, parse_name_addr, parse_uri

# Argument canonicalisation.


def canonical_argument(text: str, default_domain: str) -> str | None:
    """The canonical AoR an RPC argument names, or None when it names none.

    rpc.md 3.3: an AoR is ``user@domain`` or a full URI, and a bare user gets the default
    domain; the result is the canonical form of sca.md section 1 (``sip:user@host[:port]``,
    lower-case host, parameters dropped), the form the SCA engine and the registrar key on.
    """
    value = text.strip()
    if not value:
        return None
    if ":" not in value.partition("@")[0]:  # no scheme: user@domain[:port] or a bare user
        value = f"sip:{value}" if "@" in value else f"sip:{value}@{default_domain}"
    return canonical_aor(value)


def contact_matches(stored: str, given: str) -> bool:
    """Whether an operator's contact argument names ``stored``: the same text, or an equivalent
    URI per RFC 3261 section 19.1.4."""
    if stored == given.strip():
        return True
    try:
        mine, theirs = parse_uri(stored), parse_uri(given.strip())
    except MalformedMessage:
        return False
    return isinstance(mine, SipUri) and mine.matches(theirs)


# Engine values -> seam values.


def subscription_info(sub: Subscription) -> SubscriptionInfo:
    """The seam's view of an engine subscription (sca.md 8.1, rpc.md 3.2 "Subscription")."""
    state = sub.state
    if state.terminated:
        reason = state.reason
        text = "terminated" if reason is None else f"terminated;reason={reason}"
    else:
        text = state.name.lower()
    line_seize = sub.event is Package.LINE_SEIZE
    return SubscriptionInfo(
        aor=sub.aor,
        event=ScaEvent(sub.event.value),
        subscriber=sub.remote_uri or sub.aor,
        contact=sub.subscriber,
        state=text,
        expires_at=sub.expires,
        call_id=sub.call_id,
        from_tag=sub.from_tag,
        to_tag=sub.to_tag,
        notify_cseq=sub.notify_cseq,
        subscribe_cseq=sub.subscribe_cseq,
        appearance_index=sub.index if line_seize and sub.index > 0 else None,
    )


def _uri_of(address: str | None) -> str | None:
    """The URI inside an appearance-uri content (``"display" <uri>`` or ``<uri>``, sca.md 7.5)."""
    if address is None:
        return None
    try:
        return str(parse_name_addr(address).uri)
    except MalformedMessage:
        return address


def appearance_info(app: Appearance) -> AppearanceInfo:
    """The seam's view of an in-use appearance (sca.md 6.1; ACTIVE_PENDING is ``active``)."""
    leg = app.leg
    return AppearanceInfo(
        aor=app.line,
        index=app.index,
        state=AppearanceStateName(app.state.wire),
        owner=app.owner,
        callee=_uri_of(app.remote_uri),
        appearance_uri=app.remote_uri,
        call_id=None if leg is None else leg.call_id,
        member_tag=None if leg is None else leg.member_tag,
        remote_tag=None if leg is None else leg.remote_tag,
        role=None if leg is None else leg.role.value,
        ctime=app.created_at,
        mtime=app.changed_at,
    )


def idle_appearance(aor: str, index: int) -> AppearanceInfo:
    return AppearanceInfo(aor=aor, index=index, state=AppearanceStateName.IDLE)


def _socket_text(peer: Peer) -> str:
    host = f"[{peer.host}]" if ":" in peer.host else peer.host
    return f"{peer.transport.value.lower()}:{host}:{peer.port}"


def contact_info(binding: Binding, device: DevicePush | None = None, *, now: float = 0.0) -> ContactInfo:
    """The seam's view of a binding (rpc.md 3.3 "Contact object").

    ``received`` is the REGISTER's source as ``proto:host:port``; the push coordinates are
    shown with the ``pn-prid`` token hashed (rpc.md 3.3 ``Push``: the raw token is never shown),
    with the push state of ``device`` when we push for it (push-and-parking.md 4.3).
    """
    push_params = dict(binding.push)
    provider, prid = push_params.get("pn-provider"), push_params.get("pn-prid")
    push = None
    if provider and prid:
        push = PushInfo(
            provider=provider,
            prid_sha256=hashlib.sha256(prid.encode("utf-8")).hexdigest(),
            param=push_params.get("pn-param") or None,
        )
        if device is not None:
            coordinates = device.coordinates
            push = attrs.evolve(
                push,
                source=coordinates.source.value,
                device_type=coordinates.device_type,
                keepalive=coordinates.keepalive.value,
                push_capable=device.push_capable,
                dormant=device.dormant(now),
                invalidated_at=device.invalidated_at,
                last_push_at=device.last_push_at,
                last_wake_ms=device.last_wake_ms,
            )
    return ContactInfo(
        address=binding.contact,
        expires_at=binding.expires_at,
        call_id=binding.call_id,
        cseq=binding.cseq,
        q=binding.q,
        user_agent=binding.user_agent,
        received=_socket_text(binding.received),
        path=binding.path,
        instance=binding.instance,
        reg_id=binding.reg_id or 0,
        last_modified=binding.updated_at,
        push=push,
    )


def usrloc_aor(aor: str) -> str:
    """An AoR as usrloc shows it: ``user@domain`` for a ``sip:`` AoR (Kamailio's spelling),
    the whole URI for any other scheme."""
    return aor[4:] if aor.startswith("sip:") else aor


def binding_text(binding: object) -> str:
    """A binding key as ``park.dump`` shows it: ``kind:value``, a push token as SHA-256."""
    if not isinstance(binding, BindingKey):
        return str(binding)
    if binding.kind is KeyKind.PUSH:
        provider, _, rest = binding.value.partition(" ")
        prid = rest.split(" ")[0]
        return f"push:{provider} {token_hash(prid)}"
    return f"{binding.kind.value}:{binding.value}"


def parked_call_info(call: ParkedCall, settings: ParkingSettings) -> ParkedCallInfo:
    """The seam's view of a parked call (rpc.md 3.4, push-and-parking.md 9).  Every push
    attempt of a call leaves when it is parked (6.1), so ``sent_at`` is the park time."""
    branches = tuple(
        ParkedBranchInfo(
            index=branch.index,
            binding=binding_text(branch.target.binding),
            contact=branch.target.contact,
            started_at=branch.started_at,
            state="superseded" if branch.superseded and branch.alive else branch.state.value,
            status=branch.status,
        )
        for branch in call.branches.values()
    )
    pushes = tuple(
        PushAttemptInfo(
            attempt=attempt.id,
            provider=attempt.target.provider,
            prid_sha256=token_hash(attempt.target.prid),
            state=attempt.state.value,
            sent_at=call.parked_at,
            accepted_at=attempt.accepted_at,
            wake_deadline=(
                attempt.accepted_at + settings.wake_timeout
                if attempt.state is AttemptState.SENT and attempt.accepted_at is not None
                else None
            ),
        )
        for attempt in call.attempts.values()
    )
    grace = call.deadline + settings.inflight_grace if call.state is CallState.GRACE else None
    return ParkedCallInfo(
        park_id=call.park_id,
        ruris=tuple(usrloc_aor(aor) for aor in call.spec.aors),
        call_id=call.spec.call_id,
        caller=call.spec.from_uri,
        callee=call.spec.to_uri,
        state=call.state.value,
        parked_at=call.parked_at,
        timeout_at=call.deadline,
        grace_until=grace,
        branches=branches,
        pushes=pushes,
    )


#: Kamailio-style statistic groups of our metric families (family name without the namespace):
#: (prefix, group, whether the prefix leaves the statistic's name).  The tsilo names of
#: push-and-parking.md 6.8 are ``tsilo:stored_ruris``, ``tsilo:added_branches``...
STAT_GROUPS: Final = (
    ("tsilo_", "tsilo", True),
    ("added_branches", "tsilo", False),
    ("park", "park", False),
    ("push_", "push", False),
    ("sca_", "sca", True),
    ("notify", "sca", False),
    ("transactions", "tm", False),
    ("registrations", "registrar", False),
    ("db_", "db", False),
    ("registered_contacts", "usrloc", False),
)

#: Families whose statistic keeps the Kamailio name its metric could not keep (tsilo's
#: ``total_ruris`` is the counter ``tsilo_ruris_total``; usrloc's ``location-contacts``).
STAT_NAMES: Final = {
    "tsilo_ruris": ("tsilo", "total_ruris"),
    "tsilo_transactions": ("tsilo", "total_transactions"),
    "registered_contacts": ("usrloc", "location-contacts"),
}


def statistic_group(family: str) -> tuple[str, str]:
    """(group, name) of a metric family (its name without the namespace); ``core`` for
    families no group claims."""
    if family in STAT_NAMES:
        return STAT_NAMES[family]
    for prefix, group, strip in STAT_GROUPS:
        if family.startswith(prefix):
            return group, family[len(prefix) :] if strip else family
    return "core", family
