"""The push mid-registrar's REGISTERs to the upstream registrar and what it reads in the answers
(push-and-parking.md 3.2-3.7).

A device REGISTER goes upstream with the AoR's aggregate contact (3.2) or with each contact
rewritten to ``advertised`` plus ``mrct`` (3.7, mirror mode); our own REGISTERs (refresh and
unregister, 3.4, 3.5) run in the AoR's registration dialog and answer the challenge their
forward met with the client side of :mod:`scaserver.sip.digest`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import attrs

from scaserver.registrar.binding import Binding, BindingKey
from scaserver.registrar.midregistrar import MidRegSettings, mrct_of
from scaserver.registrar.midregsettings import Mode
from scaserver.registrar.midregstate import Forward, ForwardKind, UpstreamRegistration
from scaserver.sip.digestclient import authorize
from scaserver.sip.errors import MalformedMessage
from scaserver.sip.headers import Star, contacts, expires, parse_uint32, to_addr
from scaserver.sip.message import Headers, Request, Response
from scaserver.sip.uri import SipUri, parse_uri

# ------------------------------------------------------------------ building REGISTERs


def aggregate_contact(settings: MidRegSettings, aor: str) -> str:
    """3.2: ``<sip:{user}@{advertised};transport={t}>`` for the AoR."""
    uri = parse_uri(aor)
    assert isinstance(uri, SipUri)
    user = uri.user or ""
    if settings.multi_domain:
        user = f"{user}%40{uri.host}"
    transport = settings.upstream.transport.value.lower()
    return f"<sip:{user}@{settings.advertised};transport={transport}>"


def upstream_request(
    settings: MidRegSettings,
    reg: UpstreamRegistration,
    forward: Forward,
    bindings: Callable[[str], tuple[Binding, ...]],
    cnonce: Callable[[], str],
) -> Request:
    """The REGISTER ``forward`` sends upstream; sets ``forward.expires`` and, for our own
    REGISTERs, takes the next CSeq of the AoR's registration dialog (3.5)."""
    if forward.kind is ForwardKind.DEVICE:
        assert forward.request is not None
        if settings.table.mode is Mode.MIRROR:
            return _mirror_request(settings, forward)
        forward.expires = _aggregate_expires(settings, reg, forward, bindings)
        headers = forward.request.headers.remove("Contact").remove("Expires").remove("Path")
        headers = headers.remove("Feature-Caps")
        headers = headers.add("Contact", aggregate_contact(settings, reg.aor))
        headers = headers.add("Expires", str(forward.expires))
        for value in forward.typing.upstream_caps:
            headers = headers.add("Feature-Caps", value)
        headers = _decrement_max_forwards(headers)
        return attrs.evolve(forward.request, headers=headers)
    reg.cseq += 1
    forward.expires = 0 if forward.kind is ForwardKind.UNREGISTER else outgoing_expires(settings, reg)
    uri = parse_uri(reg.aor)
    assert isinstance(uri, SipUri)
    if settings.table.mode is Mode.MIRROR:
        contact_lines = [f"<{contact}>" for contact in forward.contacts]  # 3.7 kept devices
    else:
        contact_lines = [aggregate_contact(settings, reg.aor)]
    headers = Headers.of(
        ("From", f"<{reg.aor}>;tag={hashlib.sha256(reg.call_id.encode()).hexdigest()[:10]}"),
        ("To", f"<{reg.aor}>"),
        ("Call-ID", reg.call_id),
        ("CSeq", f"{reg.cseq} REGISTER"),
        ("Max-Forwards", "70"),
        *(("Contact", line) for line in contact_lines),
        ("Expires", str(forward.expires)),
    )
    request = Request("REGISTER", f"sip:{settings.upstream_domain}", headers, b"")
    return _authorized(reg, forward, request, cnonce)


def outgoing_expires(settings: MidRegSettings, reg: UpstreamRegistration) -> int:
    return max(settings.table.outgoing_expires, reg.floor)


def _aggregate_expires(
    settings: MidRegSettings,
    reg: UpstreamRegistration,
    forward: Forward,
    bindings: Callable[[str], tuple[Binding, ...]],
) -> int:
    """3.4: 0 only when the forward removes the last binding and no other forward is
    pending for the AoR (R16); else a (piggy-back) refresh of the aggregate."""
    removes = {change.key for change in forward.changes if change.contact is None}
    adds = any(change.contact is not None for change in forward.changes)
    if not removes or adds:
        return outgoing_expires(settings, reg)
    current = reg.written if reg.written is not None else bindings(reg.aor)
    remaining = [binding for binding in current if binding.key not in removes]
    others = [f for f in reg.queue if f.kind is ForwardKind.DEVICE]
    return 0 if not remaining and not others else outgoing_expires(settings, reg)


def _mirror_request(settings: MidRegSettings, forward: Forward) -> Request:
    """3.7: contact host:port replaced by ``advertised`` plus ``mrct``; Expires unchanged."""
    assert forward.request is not None
    request = forward.request
    headers = request.headers.remove("Contact").remove("Path")
    found = contacts(request)
    if isinstance(found, Star):
        headers = headers.add("Contact", "*")
    else:
        for change, contact in zip(forward.changes, found, strict=False):
            uri = contact.uri
            assert isinstance(uri, SipUri)
            rewritten = mirrored_uri(settings, uri, change.key)
            headers = headers.add("Contact", str(attrs.evolve(contact, uri=rewritten)))
    for value in forward.typing.upstream_caps:
        headers = headers.add("Feature-Caps", value)
    return attrs.evolve(request, headers=_decrement_max_forwards(headers))


def mirrored_uri(settings: MidRegSettings, uri: SipUri, key: BindingKey) -> SipUri:
    """3.7: a device contact as the upstream sees it: ``advertised`` host:port, ``mrct``."""
    host, _, port = settings.advertised.partition(":")
    return attrs.evolve(uri, host=host, port=int(port) if port else None).with_params(("mrct", mrct_of(key)))


def kept_contacts(settings: MidRegSettings, bindings: Sequence[Binding], now: float) -> tuple[str, ...]:
    """3.7 mirror mode: the mirrored contacts of the AoR's dormant push bindings (4.5),
    which no device refreshes any more, so scaserver keeps them registered upstream."""
    kept: list[str] = []
    for binding in bindings:
        uri = parse_uri(binding.contact)
        if binding.expires_at <= now and isinstance(uri, SipUri):
            kept.append(str(mirrored_uri(settings, uri, binding.key)))
    return tuple(sorted(kept))


def _authorized(
    reg: UpstreamRegistration, forward: Forward, request: Request, cnonce: Callable[[], str]
) -> Request:
    """Our own REGISTER with the answer to the challenge its forward met (3.5); ``nc``
    counts the requests sent with one nonce (RFC 7616 section 3.4)."""
    if forward.challenge is None or forward.secret is None:
        return request
    if reg.digest_nonce != forward.challenge.nonce:
        reg.digest_nonce, reg.digest_nc = forward.challenge.nonce, 0
    reg.digest_nc += 1
    return authorize(request, forward.challenge, forward.secret, nc=reg.digest_nc, cnonce=cnonce())


def _decrement_max_forwards(headers: Headers) -> Headers:
    value = headers.get("Max-Forwards")
    if value is None or not value.strip().isdigit():
        return headers.set("Max-Forwards", "70")
    return headers.set("Max-Forwards", str(max(0, int(value) - 1)))


# ------------------------------------------------------------------ reading answers


def safe_aor(request: Request) -> str:
    """The AoR of a device REGISTER's To, or "" when it cannot be read."""
    try:
        uri = to_addr(request).uri
    except MalformedMessage:
        return ""
    return uri.aor() if isinstance(uri, SipUri) else str(uri)


def strip_our_via(response: Response, sent: Request) -> Response:
    if len(response.headers.values("Via")) > len(sent.headers.values("Via")):
        return response.with_headers(response.headers.remove_first_value("Via"))
    return response


def min_expires(response: Response) -> int | None:
    value = response.headers.get("Min-Expires")
    try:
        return None if value is None else parse_uint32(value.strip(), "Min-Expires")
    except MalformedMessage:
        return None


def aggregate_expiry(response: Response, requested: int) -> int | None:
    """3.3.2 step 1: the aggregate contact's ``expires``, else Expires, else None (requested)."""
    try:
        found = contacts(response)
    except MalformedMessage:
        found = []
    if not isinstance(found, Star):
        for contact in found:
            param = contact.param("expires")
            if param:
                try:
                    return parse_uint32(param, "expires")
                except MalformedMessage:
                    continue
    try:
        header = expires(response)
    except MalformedMessage:
        header = None
    return header if header is not None else (requested or None)


def mirror_grants(response: Response, forward: Forward) -> dict[BindingKey, int]:
    """3.7: the expiry the upstream granted each contact, matched by ``mrct``."""
    by_mrct = {mrct_of(change.key): change.key for change in forward.changes}
    grants: dict[BindingKey, int] = {}
    try:
        found = contacts(response)
    except MalformedMessage:
        return grants
    if isinstance(found, Star):
        return grants
    for contact in found:
        uri = contact.uri
        mrct = uri.param("mrct") if isinstance(uri, SipUri) else None
        param = contact.param("expires")
        if mrct in by_mrct and param:
            try:
                grants[by_mrct[mrct]] = parse_uint32(param, "expires")
            except MalformedMessage:
                continue
    return grants
