"""Scripted signalling for the reporting tests: the bus facts a call, a seize or a
registration produces, built as the proxy, SCA engine and registrar publish them."""

from __future__ import annotations

import attrs

from scaserver.proxy.events import (
    CallCancelled,
    CallEnded,
    CallEndReason,
    RequestForwarded,
    ResponseRelayed,
)
from scaserver.proxy.target import Target
from scaserver.registrar.binding import Binding, BindingAdded, BindingKey, KeyKind
from scaserver.sca.appearance import AppearanceChanged
from scaserver.sca.appearance import AppearanceState as S
from scaserver.sip.message import Headers, Peer, Request, Response, Transport

PEER = Peer(Transport.UDP, "192.0.2.10", 5060)
DOMAIN = "example.com"
LINE = f"sip:line1@{DOMAIN}"
LINE2 = f"sip:line2@{DOMAIN}"
LINES = {LINE: LINE, LINE2: LINE2}
#: Member phones of the lines: contact URI -> MAC.
DESK_A = "sip:desk-a@192.0.2.21:5060"
DESK_B = "sip:desk-b@192.0.2.22:5060"
DEVICES = {DESK_A: "0004f2aaaaaa", DESK_B: "0004f2bbbbbb"}


def line_of(aor: str) -> str | None:
    return LINES.get(aor)


def device_of(contact: str) -> str | None:
    return DEVICES.get(contact)


@attrs.define
class Call:
    """One call's messages: ``caller`` calls ``callee`` (AoRs) with Call-ID ``call_id``."""

    call_id: str
    caller: str = "sip:+15551230001@carrier.example.net"
    callee: str = LINE
    caller_tag: str = "ct1"
    callee_tag: str = "lt1"
    extra: tuple[tuple[str, str], ...] = ()

    def invite(self) -> Request:
        return Request(
            "INVITE",
            self.callee,
            Headers.of(
                ("Via", "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-1"),
                ("From", f'"Caller" <{self.caller}>;tag={self.caller_tag}'),
                ("To", f"<{self.callee}>"),
                ("Call-ID", self.call_id),
                ("CSeq", "1 INVITE"),
                ("Contact", "<sip:caller@192.0.2.10:5060>"),
                *self.extra,
            ),
        )

    def response(self, status: int, reason: str, contact: str | None = None) -> Response:
        invite = self.invite()
        to = f"<{self.callee}>" + (f";tag={self.callee_tag}" if status > 100 else "")
        fields = [
            ("Via", invite.headers.get("Via") or ""),
            ("From", invite.headers.get("From") or ""),
            ("To", to),
            ("Call-ID", self.call_id),
            ("CSeq", "1 INVITE"),
        ]
        if contact is not None:
            fields.append(("Contact", f"<{contact}>"))
        return Response(status, reason, Headers.of(*fields))

    def forwarded(self, now: float, forwarded_extra: tuple[tuple[str, str], ...] = ()) -> RequestForwarded:
        invite = self.invite()
        branch = invite.with_headers(invite.headers.extend(forwarded_extra)) if forwarded_extra else invite
        return RequestForwarded(invite, branch, Target(self.callee), PEER, now)

    def ringing(self, now: float) -> ResponseRelayed:
        return ResponseRelayed(self.invite(), self.response(180, "Ringing"), now)

    def answered(self, now: float, contact: str) -> ResponseRelayed:
        return ResponseRelayed(self.invite(), self.response(200, "OK", contact), now)

    def failed(self, now: float, status: int, reason: str) -> list[object]:
        reason_kind = CallEndReason.CANCELLED if status == 487 else CallEndReason.FAILED
        return [
            ResponseRelayed(self.invite(), self.response(status, reason), now),
            CallEnded(self.call_id, reason_kind, self.invite(), status, now),
        ]

    def cancelled(self, now: float) -> list[object]:
        cancel = Request("CANCEL", self.callee, self.invite().headers.set("CSeq", "1 CANCEL"))
        return [
            CallCancelled(self.invite(), cancel, now),
            *self.failed(now + 0.05, 487, "Request Terminated"),
        ]

    def bye(self, now: float, *, by_callee: bool = False) -> list[object]:
        if by_callee:
            from_, to = f"<{self.callee}>;tag={self.callee_tag}", f"<{self.caller}>;tag={self.caller_tag}"
        else:
            from_, to = f"<{self.caller}>;tag={self.caller_tag}", f"<{self.callee}>;tag={self.callee_tag}"
        bye = Request(
            "BYE",
            self.callee,
            Headers.of(
                ("Via", "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-2"),
                ("From", from_),
                ("To", to),
                ("Call-ID", self.call_id),
                ("CSeq", "2 BYE"),
            ),
        )
        ok = Response(200, "OK", bye.headers)
        return [ResponseRelayed(bye, ok, now), CallEnded(self.call_id, CallEndReason.BYE, bye, 200, now)]


def change(  # noqa: PLR0917 (mirrors AppearanceChanged's positional fields)
    now: float,
    index: int,
    old: S,
    new: S,
    rule: str,
    owner: str | None,
    call_id: str | None = None,
    line: str = LINE,
) -> AppearanceChanged:
    return AppearanceChanged(line, index, old, new, rule, owner, call_id, now)


def registered(now: float, aor: str, contact: str, *, prid: str | None = None) -> BindingAdded:
    push: tuple[tuple[str, str], ...] = ()
    if prid is not None:
        push = (("pn-provider", "apns"), ("pn-prid", prid), ("pn-param", "ABCD.com.example.voip"))
    binding = Binding(
        BindingKey(aor, KeyKind.URI, contact),
        contact,
        expires_at=now + 3600,
        call_id="reg-1",
        cseq=1,
        received=Peer(Transport.UDP, "198.51.100.7", 40000),
        user_agent="Softphone/1.0",
        push=push,
        registered_at=now,
        updated_at=now,
    )
    return BindingAdded(binding, now)
