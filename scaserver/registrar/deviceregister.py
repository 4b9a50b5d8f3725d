"""What the push mid-registrar decides about a device REGISTER (push-and-parking.md 3.2, 3.3):
the binding changes it asks for, whether it is forwarded (rules 1-5) or absorbed, the
bindings it writes and the 200 the device gets."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import attrs

from scaserver.registrar.binding import Binding, BindingKey
from scaserver.registrar.midregevents import BindingConfirmed, DropBinding, PutBinding
from scaserver.registrar.midregistrar import (
    COPIED_FROM_UPSTREAM,
    NO_PUSH,
    MidRegSettings,
    PushTyping,
    binding_key,
    unquote_param,
)
from scaserver.registrar.midregsettings import Mode
from scaserver.registrar.midregstate import BindingChange, UpstreamRegistration
from scaserver.registrar.registrar import contact_line
from scaserver.sip.actions import Deliver, EngineAction
from scaserver.sip.date import date_value
from scaserver.sip.errors import BadRequest, IntervalTooBrief, ServiceUnavailable
from scaserver.sip.headers import Star, contacts, cseq, expires, parse_uint32, to_addr
from scaserver.sip.message import Headers, Peer, Request, Response
from scaserver.sip.responses import make_response
from scaserver.sip.uri import SipUri


def device_aor(request: Request) -> str:
    uri = to_addr(request).uri
    if not isinstance(uri, SipUri):
        raise BadRequest("address-of-record is not a SIP or SIPS URI")
    return uri.aor()


def requested_changes(
    settings: MidRegSettings, request: Request, aor: str, current: Sequence[Binding], typing: PushTyping
) -> list[BindingChange]:
    found = contacts(request)
    header_expires = expires(request)
    if isinstance(found, Star):
        if header_expires != 0:
            raise BadRequest("Contact '*' requires Expires: 0")
        return [BindingChange(binding.key, None, 0) for binding in current]
    changes: list[BindingChange] = []
    for contact in found:
        if not isinstance(contact.uri, SipUri):
            raise BadRequest(f"Contact {contact} is not a SIP or SIPS URI")
        param = contact.param("expires")
        requested = parse_uint32(param, "Contact expires") if param else header_expires
        if requested is None:
            requested = settings.table.device_default_expires
        if 0 < requested < settings.table.device_min_expires:
            raise IntervalTooBrief(
                "expiry under the minimum",
                headers=Headers.of(("Min-Expires", str(settings.table.device_min_expires))),
            )
        requested = min(requested, settings.table.device_max_expires)
        key = binding_key(aor, contact, current, typing.legacy_keys)
        changes = [change for change in changes if change.key != key]
        changes.append(BindingChange(key, contact if requested else None, requested))
    return changes


def check_limits(
    settings: MidRegSettings, changes: Sequence[BindingChange], current: Sequence[Binding]
) -> None:
    final = {binding.key for binding in current}
    for change in changes:
        if change.contact is None:
            final.discard(change.key)
        else:
            final.add(change.key)
    limit = settings.table.max_contacts
    if limit and len(final) > limit and len(final) > len(current):
        raise ServiceUnavailable("too many registered contacts")


def forward_rule(
    settings: MidRegSettings,
    request: Request,
    *,
    peer: Peer,
    reg: UpstreamRegistration,
    changes: Sequence[BindingChange],
    current: Sequence[Binding],
    now: float,
) -> str | None:
    """Section 3.2 rules 1-5 in order; None means absorb (3.3.3)."""
    if settings.table.mode is Mode.MIRROR:
        return "mirror"
    known = {binding.key: binding for binding in current}
    if not changes:
        return "query"  # a query is answered only after the upstream authenticated it
    if any(change.contact is not None and change.key not in known for change in changes):
        return "1"
    if "Authorization" in request.headers or "Proxy-Authorization" in request.headers:
        return "2"
    if any(change.contact is None for change in changes):
        return "3"
    if not reg.is_fresh(settings, now) or reg.upstream_auth_needed or reg.inflight is not None or reg.queue:
        return "4"
    call_id, number = request.call_id, cseq(request).number
    for change in changes:
        stored = known[change.key]
        same_call = stored.call_id == call_id and number > stored.cseq
        if settings.table.absorb_requires_same_callid and not same_call:
            return "5"
        if stored.received != peer:
            return "5"
    return None


def written_bindings(
    request: Request,
    peer: Peer,
    aor: str,
    changes: Sequence[BindingChange],
    current: Sequence[Binding],
    *,
    now: float,
    granted: Mapping[BindingKey, int] | None = None,
    typing: PushTyping = NO_PUSH,
) -> tuple[tuple[Binding, ...], list[EngineAction]]:
    """Write ``changes`` (as instructions) and return the AoR's bindings afterwards."""
    table = {binding.key: binding for binding in current}
    actions: list[EngineAction] = []
    call_id = request.call_id or ""
    number = cseq(request).number
    for change in changes:
        if change.contact is None:
            if table.pop(change.key, None) is not None:
                actions.append(Deliver(DropBinding(change.key, "unregistered")))
            continue
        previous = table.get(change.key)
        lifetime = change.requested if granted is None else granted.get(change.key, change.requested)
        binding = _binding(
            change,
            request,
            peer,
            call_id=call_id,
            number=number,
            expires_at=now + lifetime,
            previous=previous,
            now=now,
        )
        assert change.contact is not None
        legacy = typing.legacy_push.get(str(change.contact.uri))
        if legacy is not None:
            binding = attrs.evolve(binding, push=legacy)
        table[change.key] = binding
        actions += [
            Deliver(PutBinding(binding)),
            Deliver(BindingConfirmed(aor, change.key, binding, binding.registered_at, now)),
        ]
    ordered = tuple(sorted(table.values(), key=lambda b: (-b.sort_q, -b.updated_at)))
    return ordered, actions


def registered_ok(
    request: Request,
    bindings: Sequence[Binding],
    now: float,
    typing: PushTyping,
    *,
    to_tag: str,
    upstream: Response | None = None,
) -> Response:
    """3.3.2 step 4: our 200 listing the local bindings."""
    headers = Headers.EMPTY
    for binding in bindings:
        headers = headers.add("Contact", contact_line(binding, now))
    for value in typing.reply_caps:
        headers = headers.add("Feature-Caps", value)
    copied = False
    if upstream is not None:
        for name in COPIED_FROM_UPSTREAM:
            for value in upstream.headers.lines(name):
                headers = headers.add(name, value)
                copied = copied or name == "Date"
    if not copied:
        headers = headers.add("Date", date_value(now))
    return make_response(request, 200, headers=headers, to_tag=to_tag)


def _binding(
    change: BindingChange,
    request: Request,
    peer: Peer,
    *,
    call_id: str,
    number: int,
    expires_at: float,
    previous: Binding | None,
    now: float,
) -> Binding:
    """3.3.2 step 2: the stored binding (device expiry, never the upstream's)."""
    contact = change.contact
    assert contact is not None
    uri = contact.uri
    assert isinstance(uri, SipUri)
    instance = contact.param("+sip.instance")
    reg_id = contact.param("reg-id")
    q = contact.param("q")
    return Binding(
        key=change.key,
        contact=str(uri),
        expires_at=expires_at,
        call_id=call_id,
        cseq=number,
        received=peer,
        q=float(q) if q else None,
        user_agent=request.headers.get("User-Agent"),
        path=tuple(request.headers.values("Path")),
        instance=unquote_param(instance) if instance else None,
        reg_id=int(reg_id) if reg_id and reg_id.isdigit() else None,
        params=tuple((n, v) for n, v in contact.params if n.lower() not in ("expires", "q")),
        push=tuple((n.lower(), v or "") for n, v in uri.params if n.lower().startswith("pn-")),
        registered_at=previous.registered_at if previous is not None else now,
        updated_at=now,
    )
