"""A whole SIP core with its push service and call parking (push mid-registrar and call parking,
push-and-parking.md sections 3 to 7), driven with SIP messages as the network would, timers
fired on a simulated clock, push gateway results fed back as the edge does.

Actors of section 8: P the upstream PBX, D a desk phone (no push), M1/M2 mobiles with RFC 8599
contacts (``*_WOKEN``: the same app after a push, from a new source port).  Every message the
core sends is re-parsed from its wire form and kept with its destination.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Iterable, Iterator
from typing import Any, TypeVar

import attrs

from scaserver.app import client_owners
from scaserver.parking.calls import CallParking
from scaserver.parking.parked import ParkingLot, ParkingSettings
from scaserver.push.facts import PushRequested
from scaserver.push.gateway import Answer, Outcome, PushRequest, PushType
from scaserver.push.service import PushService, PushServiceSettings
from scaserver.registrar.midregengine import MidRegistrar
from scaserver.registrar.midregistrar import MidRegSettings
from scaserver.registrar.midregsettings import MidRegistrarSettings
from scaserver.registrar.midregstate import UpstreamRegistration
from scaserver.router.router import SipRouter
from scaserver.sip.actions import Action, CancelTimer, Deliver, Send, StartTimer
from scaserver.sip.headers import top_via
from scaserver.sip.message import Headers, Message, Peer, Request, Response, Transport
from scaserver.sip.parser import parse_message
from scaserver.sip.responses import make_response
from scaserver.sip.serializer import serialize
from scaserver.sip.trust import TrustedPeer
from tests.builders import make_core

T = TypeVar("T")

PBX = Peer(Transport.UDP, "192.0.2.50", 5060)
DESK = Peer(Transport.UDP, "192.0.2.60", 5060)
M1 = Peer(Transport.UDP, "192.0.2.71", 5062)
M1_WOKEN = Peer(Transport.UDP, "192.0.2.71", 6062)
M2 = Peer(Transport.UDP, "192.0.2.72", 5062)
M2_WOKEN = Peer(Transport.UDP, "192.0.2.72", 6072)
AOR = "sip:200@example.com"
AGGREGATE = "<sip:200@192.0.2.1:5060;transport=udp>"
AGGREGATE_URI = "sip:200@192.0.2.1:5060;transport=udp"
CHALLENGE = 'Digest realm="pbx", nonce="n1", algorithm=MD5'
WAKE_TIMEOUT_REASON = 'SIP;cause=480;text="push wake-up timeout"'
ANSWERED_ELSEWHERE = 'SIP;cause=200;text="Call completed elsewhere"'
REFRESH_AT = 3600 - 0.33 * 3600
"""When our own refresh of a 3600 s aggregate goes out (3.5: refresh_fraction 0.33; the rig's
random source is 0.5, so no jitter)."""
SDP = b"v=0\r\no=- 1 1 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"


def pn(token: str, param: str = "T.app.voip", provider: str = "apns") -> str:
    """The RFC 8599 Contact URI parameters of a mobile app."""
    return f"pn-provider={provider};pn-prid={token};pn-param={param}"


def contact_of(peer: Peer, token: str | None = None, **params: str) -> str:
    """The Contact URI a device registers from ``peer`` (with push parameters for ``token``)."""
    uri = f"sip:200@{peer.host}:{peer.port}"
    if token is not None:
        uri += ";" + pn(token, **params)
    return uri


@attrs.define
class Rig:
    """The core plus a clock: runs actions as the stack would and keeps what went out."""

    core: SipRouter
    now: float = 1_000_000.0
    timers: dict[tuple[Hashable, str], float] = attrs.field(factory=dict)
    out: list[tuple[Message, Peer]] = attrs.field(factory=list)
    facts: list[object] = attrs.field(factory=list)
    calls: Iterator[int] = attrs.field(factory=lambda: itertools.count(1))

    @property
    def push(self) -> PushService:
        assert self.core.push is not None
        return self.core.push

    @property
    def parking(self) -> CallParking:
        assert self.core.parking is not None
        return self.core.parking

    @property
    def midregistrar(self) -> MidRegistrar:
        midreg = self.push.midregistrar
        assert midreg is not None
        return midreg

    def upstream(self, aor: str = AOR) -> UpstreamRegistration:
        """``pushreg.lookup``: the upstream registration of ``aor``."""
        registration = self.midregistrar.registration(aor)
        assert registration is not None
        return registration

    def run(self, actions: Iterable[Action]) -> list[tuple[Message, Peer]]:
        sent: list[tuple[Message, Peer]] = []
        for action in actions:
            match action:
                case Send(message=message, peer=peer):
                    sent.append((parse_message(serialize(message)), peer))
                case StartTimer(key=key, name=name, delay=delay):
                    self.timers[key, name] = self.now + delay
                case CancelTimer(key=key, name=name):
                    self.timers.pop((key, name), None)
                case Deliver(event=event):
                    self.facts.append(event)
        self.out += sent
        return sent

    def send(self, message: Message, peer: Peer) -> list[tuple[Message, Peer]]:
        return self.run(self.core.receive(serialize(message), peer, self.now))

    def advance(self, seconds: float) -> None:
        """Move the clock, firing every timer that falls due on the way, in time order."""
        end = self.now + seconds
        while True:
            due = [(at, key) for key, at in self.timers.items() if at <= end]
            if not due:
                break
            at, (key, name) = min(due, key=lambda item: item[0])
            del self.timers[key, name]
            self.now = max(self.now, at)
            self.run(self.core.on_timer(key, name, self.now))
        self.now = end

    def mark(self) -> int:
        """A position in what went out; ``since(mark)`` is what was sent after it."""
        return len(self.out)

    def since(self, mark: int) -> list[tuple[Message, Peer]]:
        return self.out[mark:]

    # -- what went where

    def to(self, peer: Peer, method: str | None = None) -> list[Request]:
        """Requests sent to ``peer``, retransmissions included."""
        return [m for m, p in self.out if p == peer and isinstance(m, Request) and method in (None, m.method)]

    def new_to(self, peer: Peer, method: str | None = None) -> list[Request]:
        """Requests sent to ``peer``, each client transaction once (retransmissions left out:
        same top Via branch and method)."""
        seen: set[tuple[str, str | None]] = set()
        found: list[Request] = []
        for request in self.to(peer, method):
            identity = (request.method, top_via(request).branch)
            if identity not in seen:
                seen.add(identity)
                found.append(request)
        return found

    def responses_to(self, peer: Peer) -> list[Response]:
        return [m for m, p in self.out if p == peer and isinstance(m, Response)]

    def invite_responses(self, call_id: str = "call-1@pbx") -> list[Response]:
        """Responses to P's INVITE ``call_id``, in the order they were sent."""
        return [
            r
            for r in self.responses_to(PBX)
            if r.call_id == call_id and r.headers.get("CSeq") == "1 INVITE"
        ]

    def statuses(self, call_id: str = "call-1@pbx") -> list[int]:
        return [r.status for r in self.invite_responses(call_id)]

    def pushes(self, kind: PushType | None = None) -> list[PushRequest]:
        return [
            f.request for f in self.facts if isinstance(f, PushRequested) and kind in (None, f.request.type)
        ]

    def of(self, kind: type[T]) -> list[T]:
        return [f for f in self.facts if isinstance(f, kind)]

    # -- the actors

    def register(
        self,
        peer: Peer,
        contact: str,
        *,
        call_id: str,
        cseq: int,
        expires: int = 600,
        authorization: bool = False,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> Request:
        """A device REGISTER of ``contact`` (a URI, or ``*``) from ``peer``."""
        branch = f"z9hG4bK{next(self.calls)}r{peer.port}"
        fields = [
            ("Via", f"SIP/2.0/{peer.transport.value} {peer.host}:{peer.port};branch={branch};rport"),
            ("Max-Forwards", "70"),
            ("From", f"<{AOR}>;tag=f{peer.port}"),
            ("To", f"<{AOR}>"),
            ("Call-ID", call_id),
            ("CSeq", f"{cseq} REGISTER"),
            ("Contact", contact if contact == "*" else f"<{contact}>"),
            ("Expires", str(expires)),
            *extra,
        ]
        if authorization:
            fields.append(("Authorization", 'Digest username="200", realm="pbx", nonce="n1", response="x"'))
        request = Request("REGISTER", "sip:example.com", Headers.of(*fields))
        self.send(request, peer)
        return request

    def pbx_answers_last_register(
        self, status: int, *, contact: str | None = None, extra: tuple[tuple[str, str], ...] = ()
    ) -> Request:
        """P answers the last REGISTER it got: 401 with a challenge, 200 with the aggregate
        contact (``contact`` overrides it), anything else bare.  Returns that REGISTER."""
        forwarded = self.new_to(PBX, "REGISTER")[-1]
        headers = Headers.of(*extra)
        if status == 401:
            headers = headers.add("WWW-Authenticate", CHALLENGE)
        granted = forwarded.headers.get("Expires") or "3600"
        if status == 200 and (contact is not None or granted != "0"):  # a removal lists nothing
            headers = headers.add("Contact", contact or f"{AGGREGATE};expires={granted}")
        self.send(make_response(forwarded, status, headers=headers, to_tag="pbx"), PBX)
        return forwarded

    def device_registers(
        self, peer: Peer, contact: str, *, call_id: str, cseq: int = 1, expires: int = 600
    ) -> None:
        """REGISTER, 401 relayed from P, REGISTER with credentials, P 200 (T1)."""
        self.register(peer, contact, call_id=call_id, cseq=cseq, expires=expires)
        self.pbx_answers_last_register(401)
        self.register(peer, contact, call_id=call_id, cseq=cseq + 1, expires=expires, authorization=True)
        self.pbx_answers_last_register(200)

    def invite(
        self,
        call_id: str = "call-1@pbx",
        uri: str = AGGREGATE_URI,
        *,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> Request:
        """P sends an initial INVITE (to the aggregate contact by default)."""
        invite = Request(
            "INVITE",
            uri,
            Headers.of(
                ("Via", f"SIP/2.0/UDP {PBX.host}:{PBX.port};branch=z9hG4bKinv{call_id.replace('@', '.')}"),
                ("Max-Forwards", "70"),
                ("From", '"Alice" <sip:alice@example.com>;tag=pbx1'),
                ("To", "<sip:200@example.com>"),
                ("Call-ID", call_id),
                ("CSeq", "1 INVITE"),
                ("Contact", f"<sip:alice@{PBX.host}:{PBX.port}>"),
                *extra,
            ),
        )
        self.send(invite, PBX)
        return invite

    def cancel(self, invite: Request) -> None:
        """P CANCELs its INVITE (RFC 3261 9.1: same Request-URI, Via, Call-ID, CSeq number)."""
        headers = invite.headers.set("CSeq", "1 CANCEL").remove("Contact")
        self.send(Request("CANCEL", invite.uri, headers), PBX)

    def ack(self, invite: Request, final: Response) -> None:
        """P ACKs a non-2xx final response to its INVITE (RFC 3261 17.1.1.3)."""
        to = final.headers.get("To") or ""
        headers = invite.headers.set("CSeq", "1 ACK").remove("Contact").set("To", to)
        self.send(Request("ACK", invite.uri, headers), PBX)

    def answer(
        self,
        request: Request,
        status: int,
        peer: Peer,
        tag: str,
        *,
        body: bytes = b"",
        extra: tuple[tuple[str, str], ...] = (),
    ) -> None:
        """A device answers a request it got (a branch INVITE, a CANCEL...)."""
        headers = Headers.of(*extra)
        if body:
            headers = headers.add("Content-Type", "application/sdp")
        if status < 300 and request.method == "INVITE":
            headers = headers.add("Contact", f"<sip:200@{peer.host}:{peer.port}>")
        self.send(make_response(request, status, headers=headers, to_tag=tag, body=body), peer)

    def push_result(
        self, push: PushRequest, outcome: Outcome, status: int, body: float | None = None
    ) -> None:
        """The gateway's last word on ``push`` (``body``: a 410's ``invalidated_at``)."""
        answer = Answer(outcome, status, invalidated_at=body)
        self.run(self.core.push_delivered(push, answer, False, self.now))

    def push_retrying(self, push: PushRequest) -> None:
        self.run(self.core.push_retrying(push, self.now))


def rig(
    *,
    midreg: dict[str, object] | None = None,
    push: PushServiceSettings | None = None,
    **parking: Any,
) -> Rig:
    """A core in front of P (mid-registrar AoR mode unless ``midreg`` says otherwise); P is
    a trusted peer, as the composition root makes the mid-registrar's upstream."""
    upstream = TrustedPeer(f"{PBX.host}/32", None, "midregistrar-upstream")
    core = make_core(require_auth=False, trusted=[upstream])
    settings = MidRegSettings(
        upstream=PBX,
        upstream_domain="example.com",
        advertised="192.0.2.1:5060",
        table=MidRegistrarSettings(**(midreg or {})),  # type: ignore[arg-type]
    )
    registrar = MidRegistrar(
        settings, core.registrar.location.with_dormant, lambda aor: f"reg-{aor}", random=lambda: 0.5
    )
    counter = itertools.count(1)
    lot = ParkingLot(ParkingSettings(**parking), id_factory=lambda: f"att-{next(counter)}")
    equip(core, lot, push, registrar)
    return Rig(core)


def equip(
    core: SipRouter,
    lot: ParkingLot,
    settings: PushServiceSettings | None = None,
    midregistrar: MidRegistrar | None = None,
) -> None:
    """Give ``core`` a push service (``midregistrar`` None: devices register with the core
    registrar) and call parking over ``lot``, as the composition root does."""
    location, identity = core.registrar.location, core.identity
    push = PushService(settings or PushServiceSettings(), location, identity, lot.id_factory, midregistrar)
    core.push = push
    core.parking = CallParking(lot, push, core.identity)
    core.owners = client_owners(core)


def registered(*, desk: bool = True, second: bool = False, **options: Any) -> Rig:
    """M1 (and M2) registered with push, D without, each through P's challenge (T1, T2)."""
    r = rig(**options)
    r.device_registers(M1, contact_of(M1, "TOK1"), call_id="m1-a")
    if second:
        r.device_registers(M2, contact_of(M2, "TOK2"), call_id="m2-a")
    if desk:
        r.device_registers(DESK, contact_of(DESK), call_id="d-a")
    return r


def wakes(r: Rig, peer: Peer, token: str, call_id: str) -> None:
    """A pushed app registers again from ``peer``: challenged by P, then accepted (T8)."""
    r.device_registers(peer, contact_of(peer, token), call_id=call_id)


def register_as(
    r: Rig, aor: str, peer: Peer, contact: str, *, call_id: str, cseq: int = 1, expires: int = 600
) -> None:
    """A REGISTER of ``contact`` (a whole Contact header value) for ``aor`` from ``peer``."""
    request = Request(
        "REGISTER",
        "sip:example.com",
        Headers.of(
            ("Via", f"SIP/2.0/UDP {peer.host}:{peer.port};branch=z9hG4bK{call_id}{cseq};rport"),
            ("Max-Forwards", "70"),
            ("From", f"<{aor}>;tag=f{peer.port}"),
            ("To", f"<{aor}>"),
            ("Call-ID", call_id),
            ("CSeq", f"{cseq} REGISTER"),
            ("Contact", contact),
            ("Expires", str(expires)),
        ),
    )
    r.send(request, peer)
