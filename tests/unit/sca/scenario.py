"""Builders for SCA engine tests: the line L, members A and B, remote party R (sca.md 14)."""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Iterable
from typing import cast

import attrs

from scaserver.sca.engine import NotifyContext, ScaEngine
from scaserver.sca.settings import ScaSettings, ServerRole
from scaserver.sip.actions import CancelTimer, Deliver, EngineAction, Respond, SendRequest, StartTimer
from scaserver.sip.keys import ServerKey
from scaserver.sip.message import Headers, Peer, Request, Response, Transport
from scaserver.sip.responses import make_response

LINE = "sip:2001@pbx.example.com"
HOST = "pbx.example.com"
CA = "sip:2001@192.0.2.11:5060"
CB = "sip:2001@192.0.2.12:5060"
CC = "sip:2001@192.0.2.13:5060"
REMOTE = "sip:3001@carrier.example.net"
RC = "sip:3001@198.51.100.7:5060"
SERVER = "sip:sca@192.0.2.1:5060"
PEER_A = Peer(Transport.UDP, "192.0.2.11", 5060)
PEER_B = Peer(Transport.UDP, "192.0.2.12", 5060)
TX = ServerKey("tx", "phone.example.com", None, "SUBSCRIBE")

HOLD_SDP = (
    b"v=0\r\no=- 1 2 IN IP4 192.0.2.11\r\ns=-\r\nc=IN IP4 192.0.2.11\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/AVP 0\r\na=sendonly\r\n"
)
TALK_SDP = (
    b"v=0\r\no=- 1 3 IN IP4 192.0.2.11\r\ns=-\r\nc=IN IP4 192.0.2.11\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/AVP 0\r\na=sendrecv\r\n"
)


ROLE_FIELDS = frozenset(field.name for field in attrs.fields(ServerRole))


def engine(**changes: object) -> ScaEngine:
    """An engine with the ``[sca]`` and role values in ``changes``, and line ``aliases``
    (pairs of alias AoR and line AoR)."""
    aliases = cast(Iterable[tuple[str, str]], changes.pop("aliases", ()))
    counter = itertools.count(1)
    role = {name: value for name, value in changes.items() if name in ROLE_FIELDS}
    table = {name: value for name, value in changes.items() if name not in ROLE_FIELDS}
    built = ScaEngine(
        attrs.evolve(ScaSettings(), **table),  # type: ignore[arg-type]
        attrs.evolve(ServerRole(contact=SERVER), **role),  # type: ignore[arg-type]
        tag_factory=lambda: f"sca{next(counter)}",
    )
    built.set_aliases(dict(aliases))
    return built


def subscribe(
    event: str | None = "call-info",
    *,
    contact: str | None = CA,
    call_id: str = "sub-a",
    from_tag: str = "fa",
    to_tag: str | None = None,
    cseq: int = 1,
    expires: int | None = 3600,
    call_info: str | None = None,
    uri: str = LINE,
    record_route: Iterable[str] = (),
    extra: Iterable[tuple[str, str]] = (),
) -> Request:
    fields: list[tuple[str, str]] = [
        ("Via", "SIP/2.0/UDP 192.0.2.11:5060;branch=z9hG4bK" + call_id + str(cseq))
    ]
    fields += [("Record-Route", value) for value in record_route]
    fields += [
        ("From", f"<{LINE}>;tag={from_tag}"),
        ("To", f"<{LINE}>" + (f";tag={to_tag}" if to_tag else "")),
        ("Call-ID", call_id),
        ("CSeq", f"{cseq} SUBSCRIBE"),
    ]
    if contact is not None:
        fields.append(("Contact", f"<{contact}>"))
    if event is not None:
        fields.append(("Event", event))
    if expires is not None:
        fields.append(("Expires", str(expires)))
    if call_info is not None:
        fields.append(("Call-Info", call_info))
    fields += list(extra)
    return Request("SUBSCRIBE", uri, Headers.of(*fields))


def seize_info(index: int | str) -> str:
    return f"<sip:{HOST}>;appearance-index={index}"


def invite(
    *,
    call_id: str = "call-1",
    from_uri: str = LINE,
    from_tag: str = "ma",
    to_uri: str = REMOTE,
    to_tag: str | None = None,
    contact: str | None = CA,
    cseq: int = 1,
    call_info: str | None = None,
    body: bytes = b"",
    method: str = "INVITE",
    uri: str | None = None,
    to_display: str | None = None,
) -> Request:
    to_value = (
        (f'"{to_display}" ' if to_display else "") + f"<{to_uri}>" + (f";tag={to_tag}" if to_tag else "")
    )
    fields: list[tuple[str, str]] = [
        ("Via", f"SIP/2.0/UDP 192.0.2.11:5060;branch=z9hG4bK{call_id}{cseq}{method}"),
        ("From", f"<{from_uri}>;tag={from_tag}"),
        ("To", to_value),
        ("Call-ID", call_id),
        ("CSeq", f"{cseq} {'INVITE' if method == 'ACK' else method}"),
    ]
    if contact is not None:
        fields.append(("Contact", f"<{contact}>"))
    if call_info is not None:
        fields.append(("Call-Info", call_info))
    return Request(method, uri or to_uri, Headers.of(*fields), body)


def answer(
    request: Request,
    status: int,
    *,
    to_tag: str | None = "rt",
    contact: str | None = RC,
    call_info: str | None = None,
    body: bytes = b"",
) -> Response:
    extra: list[tuple[str, str]] = []
    if contact is not None and status < 300:
        extra.append(("Contact", f"<{contact}>"))
    if call_info is not None:
        extra.append(("Call-Info", call_info))
    return make_response(request, status, headers=Headers.of(*extra), to_tag=to_tag, body=body)


def responses(actions: Iterable[EngineAction]) -> list[Response]:
    return [a.response for a in actions if isinstance(a, Respond) and isinstance(a.response, Response)]


def notifies(actions: Iterable[EngineAction]) -> list[tuple[Request, NotifyContext]]:
    found = []
    for action in actions:
        if isinstance(action, SendRequest) and isinstance(action.request, Request):
            assert isinstance(action.context, NotifyContext)
            found.append((action.request, action.context))
    return found


def facts(actions: Iterable[EngineAction], kind: type[object] | None = None) -> list[object]:
    return [
        a.event for a in actions if isinstance(a, Deliver) and (kind is None or isinstance(a.event, kind))
    ]


@attrs.define
class Harness:
    """Runs an engine like the edge would: timers on a fake clock, NOTIFYs answered 200 on demand."""

    engine: ScaEngine
    now: float = 1000.0
    timers: dict[tuple[Hashable, str], float] = attrs.field(factory=dict)
    in_flight: list[NotifyContext] = attrs.field(factory=list)
    sent: list[Request] = attrs.field(factory=list)
    log: list[EngineAction] = attrs.field(factory=list)
    auto_answer: bool = True

    def run(self, actions: list[EngineAction]) -> list[EngineAction]:
        self.log.extend(actions)
        for action in actions:
            if isinstance(action, StartTimer):
                self.timers[action.key, action.name] = self.now + action.delay
            elif isinstance(action, CancelTimer):
                self.timers.pop((action.key, action.name), None)
            elif isinstance(action, SendRequest):
                assert isinstance(action.context, NotifyContext)
                assert isinstance(action.request, Request)
                self.sent.append(action.request)
                self.in_flight.append(action.context)
        if self.auto_answer:
            self.answer_all()
        return actions

    def answer_all(self, status: int = 200) -> list[EngineAction]:
        produced: list[EngineAction] = []
        while self.in_flight:
            context = self.in_flight.pop(0)
            response = Response(status, "OK" if status == 200 else "Failed", Headers.EMPTY)
            actions = self.engine.on_notify_response(context, response, self.now)
            produced.extend(actions)
            self.log.extend(actions)
            for action in actions:
                if isinstance(action, StartTimer):
                    self.timers[action.key, action.name] = self.now + action.delay
                elif isinstance(action, CancelTimer):
                    self.timers.pop((action.key, action.name), None)
                elif isinstance(action, SendRequest):
                    assert isinstance(action.context, NotifyContext)
                    assert isinstance(action.request, Request)
                    self.sent.append(action.request)
                    self.in_flight.append(action.context)
        return produced

    def subscribe(self, request: Request, **kw: object) -> list[EngineAction]:
        return self.run(self.engine.on_subscribe(request, TX, self.now, **kw))  # type: ignore[arg-type]

    def forward(self, request: Request) -> list[EngineAction]:
        return self.run(self.engine.on_request_forwarded(request, self.now))

    def respond(self, request: Request, response: Response, *, local: bool = False) -> list[EngineAction]:
        return self.run(self.engine.on_response_forwarded(request, response, self.now, local=local))

    def ack(self, request: Request) -> list[EngineAction]:
        return self.run(self.engine.on_ack(request, self.now))

    def advance(self, seconds: float) -> list[EngineAction]:
        end = self.now + seconds
        produced: list[EngineAction] = []
        while True:
            due = sorted(
                ((when, key) for key, when in self.timers.items() if when <= end), key=lambda item: item[0]
            )
            if not due:
                break
            when, (key, name) = due[0][0], due[0][1]
            del self.timers[key, name]
            self.now = max(self.now, when)
            produced.extend(self.run(self.engine.on_timer(key, name, self.now)))
        self.now = end
        return produced

    def states(self) -> dict[int, str]:
        return {app.index: app.state.value for app in self.engine.appearances(LINE_AOR)}

    def last_call_info(self, subscriber: str = CA) -> str | None:
        for request in reversed(self.sent):
            if request.uri == subscriber and request.headers.get("Event") == "call-info":
                return request.headers.get("Call-Info")
        return None


LINE_AOR = LINE
IDLE_ONLY = f"<sip:{HOST}>;appearance-index=*;appearance-state=idle"


def state_entry(index: int, state: str, uri: str | None = None) -> str:
    text = f"<sip:{HOST}>;appearance-index={index};appearance-state={state}"
    if uri is not None:
        text += f';appearance-uri="{uri}"'
    return text


def full(*entries: str) -> str:
    return ",".join((*entries, IDLE_ONLY))
