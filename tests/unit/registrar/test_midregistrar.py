"""The push mid-registrar (push-and-parking.md section 3), exact actions, timers by ``now``."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import attrs
import pytest

from scaserver.registrar.binding import Binding, BindingKey, KeyKind
from scaserver.registrar.midregengine import MidRegistrar
from scaserver.registrar.midregevents import (
    BindingConfirmed,
    DropBinding,
    PutBinding,
    RegisterDecided,
    RegisterFinished,
    RegisterForwarded,
    UpstreamAuthNeeded,
    UpstreamChanged,
    UpstreamGaveUp,
    UpstreamSaved,
    UpstreamSnapshot,
)
from scaserver.registrar.midregistrar import (
    REFRESH_TIMER,
    UNREGISTER_TIMER,
    UPSTREAM_TIMEOUT,
    MidRegSettings,
    PushTyping,
    UpstreamCredentials,
    binding_key,
    mrct_of,
)
from scaserver.registrar.midregsettings import MidRegistrarSettings, Mode
from scaserver.registrar.midregstate import AorKey, ForwardKey, UpstreamRegistration
from scaserver.registrar.upstream import UpstreamState
from scaserver.sip.actions import CancelTimer, Deliver, EngineAction, Respond, SendRequest, StartTimer
from scaserver.sip.digest import (
    Algorithm,
    Authenticated,
    Authenticator,
    Credentials,
    NonceFactory,
    Rejected,
    compute_ha1,
)
from scaserver.sip.digestclient import ClientCredentials
from scaserver.sip.headers import contacts
from scaserver.sip.keys import ServerKey
from scaserver.sip.message import Headers, Peer, Request, Response, Transport
from scaserver.sip.parser import parse_message
from scaserver.sip.responses import make_response
from scaserver.sip.uri import NameAddr, parse_name_addr

AOR = "sip:200@example.com"
UPSTREAM = Peer(Transport.UDP, "203.0.113.1", 5060)
M1 = Peer(Transport.UDP, "10.0.0.5", 5062)
DEVICE_TX = ServerKey("t", "10.0.0.5", 5062, "REGISTER")
M2 = Peer(Transport.UDP, "10.0.0.6", 5062)
PUSH_CONTACT = "<sip:200@10.0.0.5:5062;pn-provider=apns;pn-prid=TOK1;pn-param=T.app.voip>"
AGGREGATE = "<sip:200@192.0.2.1:5060;transport=udp>"
SETTINGS = MidRegSettings(UPSTREAM, "example.com", "192.0.2.1:5060", jitter=0.0)


def register(
    contact: str | None = PUSH_CONTACT,
    *,
    call_id: str = "c1",
    number: int = 1,
    expires: int | None = 600,
    extra: Sequence[tuple[str, str]] = (),
) -> Request:
    lines = [
        "REGISTER sip:example.com SIP/2.0",
        "Via: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bKdev" + str(number),
        "From: <sip:200@example.com>;tag=f1",
        "To: <sip:200@example.com>",
        f"Call-ID: {call_id}",
        f"CSeq: {number} REGISTER",
        "Max-Forwards: 70",
        "Path: <sip:edge.example.com;lr>",
    ]
    if contact is not None:
        lines.append(f"Contact: {contact}")
    if expires is not None:
        lines.append(f"Expires: {expires}")
    lines += [f"{name}: {value}" for name, value in extra]
    message = parse_message(("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode())
    assert isinstance(message, Request)
    return message


@attrs.define
class World:
    """The engine plus a location table the test updates from Put/DropBinding (the
    dispatcher's part)."""

    table: dict[BindingKey, Binding] = attrs.Factory(dict)
    engine: MidRegistrar = attrs.field(init=False)
    draws: list[float] = attrs.Factory(lambda: [0.5])

    def __attrs_post_init__(self) -> None:
        self.engine = self.make(SETTINGS)

    def make(self, settings: MidRegSettings, credentials: UpstreamCredentials | None = None) -> MidRegistrar:
        return MidRegistrar(
            settings, self.bindings, lambda aor: f"up-{aor}", lambda: self.draws[0], credentials=credentials
        )

    def bindings(self, aor: str) -> tuple[Binding, ...]:
        return tuple(b for b in self.table.values() if b.aor == aor)

    def run(self, actions: list[EngineAction]) -> list[EngineAction]:
        for action in actions:
            if isinstance(action, Deliver) and isinstance(action.event, PutBinding):
                self.table[action.event.binding.key] = action.event.binding
            if isinstance(action, Deliver) and isinstance(action.event, DropBinding):
                self.table.pop(action.event.key, None)
        return actions

    def device(
        self, request: Request, peer: Peer = M1, now: float = 0.0, tx: ServerKey = DEVICE_TX
    ) -> list[EngineAction]:
        return self.run(self.engine.on_device_register(request, peer, tx, now, typing=TYPING))

    def answer(self, context: ForwardKey, response: Response, now: float = 0.1) -> list[EngineAction]:
        return self.run(self.engine.on_upstream_response(context, response, now))


TYPING = PushTyping(reply_caps=('*;+sip.pns="apns"',), upstream_caps=('*;+sip.pns="apns"',))


def sent(actions: list[EngineAction]) -> list[SendRequest]:
    return [a for a in actions if isinstance(a, SendRequest)]


def responded(actions: list[EngineAction]) -> list[Response]:
    out: list[Response] = []
    for action in actions:
        if isinstance(action, Respond):
            assert isinstance(action.response, Response)
            out.append(action.response)
    return out


def events(actions: list[EngineAction], kind: type[object]) -> list[object]:
    return [a.event for a in actions if isinstance(a, Deliver) and isinstance(a.event, kind)]


def upstream_ok(
    request: Request, expires: int | None = 3600, extra: Sequence[tuple[str, str]] = ()
) -> Response:
    headers = Headers.of(("Contact", f"{AGGREGATE};expires={expires}") if expires is not None else ("X", "y"))
    headers = headers.extend(extra)
    response = make_response(request, 200, headers=headers, to_tag="up")
    return response.with_headers(response.headers.prepend("Via", "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKus"))


def registered(world: World, now: float = 0.0) -> SendRequest:
    """T1 in short: M1 registers, upstream accepts."""
    (forward,) = sent(world.device(register(), now=now))
    world.answer(forward.context, upstream_ok(forward.request), now=now + 0.1)  # type: ignore[arg-type]
    return forward


KEY1 = BindingKey(AOR, KeyKind.PUSH, "apns TOK1 T.app.voip")


# ---------------------------------------------------------------- 3.2 / 3.3.1 / 3.3.2


def test_t1_first_device_forwarded_rewritten_challenge_relayed() -> None:
    world = World()
    request = register()
    actions = world.device(request)
    key = ForwardKey(AOR, 1)
    assert actions[0] == Deliver(RegisterDecided(AOR, "1", 0.0))
    assert Deliver(UpstreamChanged(AOR, UpstreamState.IDLE, UpstreamState.REGISTERING, 0.0)) in actions
    (forward,) = sent(actions)
    assert forward.peer == UPSTREAM and forward.context == key
    up = forward.request
    assert isinstance(up, Request)
    assert up.uri == request.uri and up.headers.get("Call-ID") == "c1"
    assert up.headers.lines("Contact") == (AGGREGATE,)
    assert up.headers.get("Expires") == "3600" and up.headers.get("Path") is None
    assert up.headers.lines("Feature-Caps") == ('*;+sip.pns="apns"',)
    assert up.headers.get("Max-Forwards") == "69"
    assert StartTimer(key, UPSTREAM_TIMEOUT, 5.0) in actions
    assert Deliver(RegisterForwarded(AOR, (KEY1,))) in actions
    challenge = make_response(up, 401, headers=Headers.of(("WWW-Authenticate", 'Digest realm="x"')))
    with_our_via = challenge.with_headers(challenge.headers.prepend("Via", "SIP/2.0/UDP us;branch=z9hG4bKx"))
    reply = world.answer(key, with_our_via)
    assert reply == [
        CancelTimer(key, UPSTREAM_TIMEOUT),
        Respond(DEVICE_TX, challenge),
        Deliver(RegisterFinished(AOR, (KEY1,), False)),
    ]
    assert world.table == {}  # no local binding after the 401


def test_t1_2xx_writes_binding_confirms_and_answers() -> None:
    world = World()
    request = register(extra=[("Authorization", 'Digest username="200"')])
    (forward,) = sent(world.device(request))
    ok = upstream_ok(forward.request, extra=[("Service-Route", "<sip:pbx;lr>"), ("Date", "X")])
    actions = world.answer(forward.context, ok, now=0.2)  # type: ignore[arg-type]
    binding = world.table[KEY1]
    assert (
        binding.expires_at == 600.2
        and binding.received == M1
        and binding.path == ("<sip:edge.example.com;lr>",)
    )
    assert Deliver(PutBinding(binding)) in actions
    assert Deliver(BindingConfirmed(AOR, KEY1, binding, 0.2, 0.2)) in actions
    assert StartTimer(AorKey(AOR), REFRESH_TIMER, 3600 - 0.33 * 3600) in actions
    (reply,) = responded(actions)
    assert reply.status == 200 and ";tag=up" in (reply.headers.get("To") or "")
    assert reply.headers.lines("Feature-Caps") == ('*;+sip.pns="apns"',)
    assert reply.headers.get("Service-Route") == "<sip:pbx;lr>" and reply.headers.get("Date") == "X"
    (contact,) = reply.headers.lines("Contact")
    assert "10.0.0.5:5062" in contact and "expires=600" in contact  # never the aggregate
    assert len(reply.headers.values("Via")) == 1
    reg = world.engine.registration(AOR)
    assert reg is not None and reg.state is UpstreamState.REGISTERED and reg.expires_at == 3600.2
    assert events(actions, RegisterFinished) == [RegisterFinished(AOR, (KEY1,), True)]


def test_upstream_expiry_from_expires_header_or_requested() -> None:
    world = World()
    (forward,) = sent(world.device(register()))
    response = upstream_ok(forward.request, expires=None)
    response = response.with_headers(response.headers.add("Expires", "1800"))
    world.answer(forward.context, response)  # type: ignore[arg-type]
    reg = world.engine.registration(AOR)
    assert reg is not None and reg.granted == 1800


def test_t2_absorbed_refresh_and_t3_other_source_forwarded() -> None:
    world = World()
    registered(world)
    actions = world.device(register(number=2), now=100.0)
    assert actions[0] == Deliver(RegisterDecided(AOR, "absorb", 100.0))
    assert sent(actions) == []
    assert world.table[KEY1].expires_at == 700.0
    assert events(actions, BindingConfirmed)
    assert responded(actions)[0].status == 200
    replay = world.device(register(number=3), peer=M2, now=101.0)
    assert replay[0] == Deliver(RegisterDecided(AOR, "5", 101.0)) and sent(replay)


@pytest.mark.parametrize(
    ("request_", "rule"),
    [
        (register(number=2, extra=[("Authorization", "Digest x")]), "2"),
        (register(number=2, expires=0), "3"),
        (register(number=2, call_id="other"), "5"),
        (register(number=1), "5"),  # CSeq not higher
        (register(contact=None), "query"),
    ],
)
def test_forward_rules(request_: Request, rule: str) -> None:
    world = World()
    registered(world)
    assert world.device(request_, now=10.0)[0] == Deliver(RegisterDecided(AOR, rule, 10.0))


def test_rule4_near_expiry_or_auth_needed_piggybacks() -> None:
    world = World()
    registered(world)
    assert world.device(register(number=2), now=2500.0)[0] == Deliver(RegisterDecided(AOR, "4", 2500.0))
    world2 = World()
    registered(world2)
    reg = world2.engine.registration(AOR)
    assert reg is not None
    reg.upstream_auth_needed = True
    assert world2.device(register(number=2), now=10.0)[0] == Deliver(RegisterDecided(AOR, "4", 10.0))


def test_absorb_without_same_callid_rule() -> None:
    world = World()
    table = MidRegistrarSettings(absorb_requires_same_callid=False)
    world.engine = world.make(attrs.evolve(SETTINGS, table=table))
    registered(world)
    assert world.device(register(number=1, call_id="new"), now=5.0)[0] == Deliver(
        RegisterDecided(AOR, "absorb", 5.0)
    )


# ------------------------------------------------------------------ local refusals


def test_555_for_unsupported_provider_nothing_upstream() -> None:
    world = World()
    acme = PushTyping(reject="acme")
    actions = world.engine.on_device_register(register(), M1, DEVICE_TX, 0.0, typing=acme)
    (reply,) = responded(actions)
    assert reply.status == 555 and sent(actions) == []
    assert actions[1] == Deliver(RegisterDecided(AOR, "555", 0.0))


def test_423_below_device_min_before_forwarding() -> None:
    world = World()
    (reply,) = responded(world.device(register(expires=30)))
    assert reply.status == 423 and reply.headers.get("Min-Expires") == "60"


def test_max_contacts_checked_before_forwarding() -> None:
    world = World()
    world.engine = world.make(attrs.evolve(SETTINGS, table=MidRegistrarSettings(max_contacts=1)))
    registered(world)
    (reply,) = responded(world.device(register("<sip:200@10.0.0.9>", call_id="c9"), now=1.0))
    assert reply.status == 503


def test_star_requires_expires_zero() -> None:
    world = World()
    (reply,) = responded(world.device(register("*", expires=600)))
    assert reply.status == 400


def test_non_sip_contact_and_aor_refused() -> None:
    world = World()
    assert responded(world.device(register("<tel:+1234>")))[0].status == 400
    bad_to = register()
    bad_to = bad_to.with_headers(bad_to.headers.set("To", "<tel:+1234>"))
    assert responded(world.device(bad_to))[0].status == 400


def test_device_expiry_clamped_to_max() -> None:
    world = World()
    (forward,) = sent(world.device(register(expires=99999)))
    world.answer(forward.context, upstream_ok(forward.request))  # type: ignore[arg-type]
    assert world.table[KEY1].expires_at == pytest.approx(3600.1)


# ------------------------------------------------------------------ 3.3.4, 3.3.5


def test_423_from_upstream_resent_once_with_min_expires() -> None:
    world = World()
    (forward,) = sent(world.device(register()))
    too_brief = make_response(forward.request, 423, headers=Headers.of(("Min-Expires", "7200")))
    actions = world.answer(forward.context, too_brief)  # type: ignore[arg-type]
    (again,) = sent(actions)
    assert again.request.headers.get("Expires") == "7200" and responded(actions) == []
    second = make_response(again.request, 423, headers=Headers.of(("Min-Expires", "9000")))
    assert responded(world.answer(again.context, second))[0].status == 423  # type: ignore[arg-type]


@pytest.mark.parametrize("status", [403, 404, 500, 302])
def test_other_finals_relayed_no_change(status: int) -> None:
    world = World()
    (forward,) = sent(world.device(register()))
    reply = world.answer(forward.context, make_response(forward.request, status))  # type: ignore[arg-type]
    assert responded(reply)[0].status == status and world.table == {}


def test_timeout_408_and_transport_error_503_r18() -> None:
    world = World()
    registered(world)
    (forward,) = sent(world.device(register(number=2, extra=[("Authorization", "x")]), now=1.0))
    actions = world.run(world.engine.on_timer(forward.context, UPSTREAM_TIMEOUT, 6.0))
    assert actions[0] == Deliver(UpstreamGaveUp(forward.context))  # type: ignore[arg-type]
    assert responded(actions)[0].status == 408
    assert KEY1 in world.table  # existing bindings untouched
    assert world.engine.on_upstream_timeout(forward.context, 7.0) == []  # type: ignore[arg-type]
    (forward2,) = sent(world.device(register(number=3, extra=[("Authorization", "x")]), now=8.0))
    failed = world.engine.on_upstream_failure(forward2.context, 8.1)  # type: ignore[arg-type]
    reply = responded(failed)[0]
    assert reply.status == 503 and reply.headers.get("Retry-After") == "30"


# ------------------------------------------------------------------ 3.4


def test_t5_non_last_device_leaves_with_piggyback_refresh() -> None:
    world = World()
    registered(world)
    (second,) = sent(world.device(register("<sip:200@10.0.0.6>", call_id="c2"), peer=M2, now=1.0))
    world.answer(second.context, upstream_ok(second.request), now=1.1)  # type: ignore[arg-type]
    assert len(world.table) == 2
    (leave,) = sent(world.device(register("<sip:200@10.0.0.6>", call_id="c2", number=2, expires=0), M2, 2.0))
    assert leave.request.headers.get("Expires") == "3600"
    actions = world.answer(leave.context, upstream_ok(leave.request), now=2.1)  # type: ignore[arg-type]
    assert Deliver(DropBinding(BindingKey(AOR, KeyKind.URI, "sip:200@10.0.0.6"), "unregistered")) in actions
    assert list(world.table) == [KEY1]
    assert len(responded(actions)[0].headers.lines("Contact")) == 1


def test_t6_last_device_leaves_expires_zero_upstream_idle() -> None:
    world = World()
    registered(world)
    (leave,) = sent(world.device(register(number=2, expires=0), now=5.0))
    assert leave.request.headers.get("Expires") == "0"
    actions = world.answer(leave.context, upstream_ok(leave.request, expires=0), now=5.1)  # type: ignore[arg-type]
    assert world.table == {}
    assert CancelTimer(AorKey(AOR), REFRESH_TIMER) in actions
    reg = world.engine.registration(AOR)
    assert reg is not None and reg.state is UpstreamState.IDLE


def test_t6_variant_local_expiry_unregisters_after_grace() -> None:
    world = World()
    registered(world)
    world.table.clear()  # the location service expired the binding
    assert world.engine.on_binding_gone(AOR, 700.0) == [
        CancelTimer(AorKey(AOR), REFRESH_TIMER),
        StartTimer(AorKey(AOR), UNREGISTER_TIMER, 0.0),
    ]
    (own,) = sent(world.engine.on_timer(AorKey(AOR), UNREGISTER_TIMER, 700.0))
    assert own.request.headers.get("Expires") == "0" and own.request.headers.get("Call-ID") == f"up-{AOR}"
    assert isinstance(own.request, Request) and own.request.uri == "sip:example.com"
    assert own.request.headers.get("CSeq") == "1 REGISTER"
    # failures: retried at most twice
    assert world.engine.on_upstream_failure(own.context, 700.1)[-1] == StartTimer(  # type: ignore[arg-type]
        AorKey(AOR), UNREGISTER_TIMER, 5.0
    )
    (again,) = sent(world.engine.on_timer(AorKey(AOR), UNREGISTER_TIMER, 705.1))
    world.engine.on_upstream_failure(again.context, 705.2)  # type: ignore[arg-type]
    (third,) = sent(world.engine.on_timer(AorKey(AOR), UNREGISTER_TIMER, 710.2))
    assert world.engine.on_upstream_failure(third.context, 710.3) == [  # type: ignore[arg-type]
        CancelTimer(third.context, UPSTREAM_TIMEOUT)
    ]


def test_binding_gone_with_bindings_left_or_idle_does_nothing() -> None:
    world = World()
    assert world.engine.on_binding_gone(AOR, 1.0) == []
    registered(world)
    assert world.engine.on_binding_gone(AOR, 1.0) == []


def test_r16_removal_with_pending_forward_is_refresh() -> None:
    world = World()
    registered(world)
    (first,) = sent(world.device(register("<sip:200@10.0.0.6>", call_id="c2"), peer=M2, now=1.0))
    queued = world.device(register(number=2, expires=0), now=1.01)
    assert sent(queued) == []  # serialised (3.8)
    actions = world.answer(first.context, upstream_ok(first.request), now=1.1)  # type: ignore[arg-type]
    (leave,) = sent(actions)
    assert leave.request.headers.get("Expires") == "3600"  # M2 remains: not the last binding


# ------------------------------------------------------------------ 3.5, 3.8


def test_t4_self_refresh_and_r17_dropped_when_piggyback_happened() -> None:
    world = World()
    registered(world)
    (own,) = sent(world.engine.on_timer(AorKey(AOR), REFRESH_TIMER, 2412.0))
    assert own.request.headers.get("Call-ID") == f"up-{AOR}" and own.request.headers.lines("Contact") == (
        AGGREGATE,
    )
    actions = world.answer(own.context, upstream_ok(own.request), now=2412.1)  # type: ignore[arg-type]
    (timer,) = [a for a in actions if isinstance(a, StartTimer) and a.name == REFRESH_TIMER]
    assert timer.key == AorKey(AOR) and timer.delay == pytest.approx(2412.0)
    reg = world.engine.registration(AOR)
    assert reg is not None and reg.cseq == 1
    # R17: refresh due while a device forward is in flight; the piggy-back refreshes first
    (piggy,) = sent(world.device(register(number=5, extra=[("Authorization", "x")]), now=4800.0))
    assert sent(world.engine.on_timer(AorKey(AOR), REFRESH_TIMER, 4800.01)) == []
    after = world.answer(piggy.context, upstream_ok(piggy.request), now=4800.1)  # type: ignore[arg-type]
    assert sent(after) == []  # the queued self-refresh is dropped


def test_t4_variant_challenge_flags_aor() -> None:
    world = World()
    registered(world)
    (own,) = sent(world.engine.on_timer(AorKey(AOR), REFRESH_TIMER, 2412.0))
    actions = world.answer(own.context, make_response(own.request, 401), now=2412.1)  # type: ignore[arg-type]
    reg = world.engine.registration(AOR)
    assert reg is not None and reg.upstream_auth_needed
    assert actions == [
        CancelTimer(own.context, UPSTREAM_TIMEOUT),
        Deliver(UpstreamAuthNeeded(AOR, 401, "challenge to our own REGISTER", 2412.1)),
        Deliver(UpstreamSaved(UpstreamSnapshot.of(reg))),
    ]
    assert reg.last_error == "401 challenge to our own REGISTER"
    assert world.device(register(number=2), now=2413.0)[0] == Deliver(RegisterDecided(AOR, "4", 2413.0))


def test_self_refresh_failure_retrying_then_lost() -> None:
    world = World()
    registered(world)
    (own,) = sent(world.engine.on_timer(AorKey(AOR), REFRESH_TIMER, 2412.0))
    busy = make_response(own.request, 503, headers=Headers.of(("Retry-After", "60")))
    actions = world.answer(own.context, busy, now=2412.1)  # type: ignore[arg-type]
    assert Deliver(UpstreamChanged(AOR, UpstreamState.REGISTERED, UpstreamState.RETRYING, 2412.1)) in actions
    reg = world.engine.registration(AOR)
    assert reg is not None
    assert actions[-2:] == [
        StartTimer(AorKey(AOR), REFRESH_TIMER, 60.0),
        Deliver(UpstreamSaved(UpstreamSnapshot.of(reg))),  # RETRYING is persisted
    ]
    (retry,) = sent(world.engine.on_timer(AorKey(AOR), REFRESH_TIMER, 3700.0))
    lost = world.engine.on_upstream_timeout(retry.context, 3705.0)  # type: ignore[arg-type]
    assert reg.state is UpstreamState.LOST and reg.degraded()
    assert lost[-1] == StartTimer(AorKey(AOR), REFRESH_TIMER, 10.0)  # backoff doubles; LOST saved before


def test_self_refresh_rejected_removes_bindings() -> None:
    world = World()
    registered(world)
    (own,) = sent(world.engine.on_timer(AorKey(AOR), REFRESH_TIMER, 2412.0))
    actions = world.answer(own.context, make_response(own.request, 404), now=2412.1)  # type: ignore[arg-type]
    assert Deliver(DropBinding(KEY1, "upstream-rejected")) in actions
    assert world.table == {}
    assert world.engine.on_timer(AorKey(AOR), REFRESH_TIMER, 2500.0) == []


def test_queue_bound_gives_503_retry_after_1() -> None:
    world = World()
    registered(world)
    for number in range(2, 12):
        last = world.device(register(number=number, extra=[("Authorization", "x")]), now=1.0)
    (reply,) = responded(last)
    assert reply.status == 503 and reply.headers.get("Retry-After") == "1"


def test_restore_spreads_reregistration_r21() -> None:
    world = World()
    saved = UpstreamRegistration(AOR, "kept-call-id", cseq=41, state=UpstreamState.REGISTERED, granted=3600)
    world.table[KEY1] = Binding(KEY1, "sip:200@10.0.0.5", 1000.0, "c1", 1, M1)
    world.draws[0] = 0.25
    assert world.engine.restore([saved, attrs.evolve(saved, aor="sip:9@example.com")], 0.0) == [
        StartTimer(AorKey(AOR), REFRESH_TIMER, 15.0)
    ]
    (own,) = sent(world.engine.on_timer(AorKey(AOR), REFRESH_TIMER, 15.0))
    assert (
        own.request.headers.get("Call-ID") == "kept-call-id"
        and own.request.headers.get("CSeq") == "42 REGISTER"
    )


# ------------------------------------------------------------------ 3.6, 3.7


def _contact(text: str) -> NameAddr:
    return parse_name_addr(text)


def test_binding_key_rules() -> None:
    instance = _contact('<sip:a@1.2.3.4>;+sip.instance="<urn:uuid:1>";reg-id=2')
    assert binding_key(AOR, instance, (), {}) == BindingKey(AOR, KeyKind.INSTANCE, "<urn:uuid:1>;reg-id=2")
    assert binding_key(AOR, _contact(PUSH_CONTACT), (), {}) == KEY1
    legacy = _contact("<sip:a@1.2.3.4;pn-tok=T>")
    assert binding_key(AOR, legacy, (), {"sip:a@1.2.3.4;pn-tok=T": "apns T"}) == BindingKey(
        AOR, KeyKind.PUSH, "apns T"
    )
    existing = Binding(BindingKey(AOR, KeyKind.URI, "sip:a@1.2.3.4"), "sip:a@1.2.3.4", 1.0, "c", 1, M1)
    assert binding_key(AOR, _contact("<sip:a@1.2.3.4>"), (existing,), {}) == existing.key


def test_r6_same_push_device_new_address_replaces_binding() -> None:
    world = World()
    registered(world)
    moved = "<sip:200@10.0.0.5:7000;pn-provider=apns;pn-prid=TOK1;pn-param=T.app.voip>"
    (forward,) = sent(world.device(register(moved, call_id="new", number=1), peer=M2, now=10.0))
    world.answer(forward.context, upstream_ok(forward.request), now=10.1)  # type: ignore[arg-type]
    assert list(world.table) == [KEY1] and world.table[KEY1].received == M2


def test_t19_mirror_mode_forwards_with_mrct_and_upstream_expiry() -> None:
    world = World()
    world.engine = world.make(attrs.evolve(SETTINGS, table=MidRegistrarSettings(mode=Mode.MIRROR)))
    (forward,) = sent(world.device(register(), now=0.0))
    (contact,) = world_contacts(forward.request)
    assert "192.0.2.1:5060" in contact and f"mrct={mrct_of(KEY1)}" in contact
    assert forward.request.headers.get("Expires") == "600"
    up_contact = contact.replace(">", ">;expires=300", 1) if ";expires" not in contact else contact
    response = make_response(forward.request, 200, headers=Headers.of(("Contact", up_contact)), to_tag="u")
    world.answer(forward.context, response, now=0.1)  # type: ignore[arg-type]
    assert world.table[KEY1].expires_at == pytest.approx(300.1)
    assert world.device(register(number=2), now=1.0)[0] == Deliver(RegisterDecided(AOR, "mirror", 1.0))


def world_contacts(request: object) -> list[str]:
    assert isinstance(request, Request)
    found = contacts(request)
    assert isinstance(found, list)
    return [str(c) for c in found]


def test_multi_domain_aggregate_escapes_at() -> None:
    engine = World().make(attrs.evolve(SETTINGS, multi_domain=True))
    assert engine.aggregate_contact(AOR) == "<sip:200%40example.com@192.0.2.1:5060;transport=udp>"


def test_stray_or_provisional_upstream_answers_ignored() -> None:
    world = World()
    assert world.engine.on_upstream_response(ForwardKey(AOR, 9), make_response(register(), 200), 0.0) == []
    (forward,) = sent(world.device(register()))
    assert world.answer(forward.context, make_response(forward.request, 100)) == []  # type: ignore[arg-type]
    assert world.engine.on_timer("x", "y", 0.0) == []
    assert world.engine.on_timer(AorKey("sip:none@x"), REFRESH_TIMER, 0.0) == []


# ------------------------------------------------------------------ 3.5 upstream_auth

UPSTREAM_REALM = "pbx.example.com"
UPSTREAM_PASSWORD = "pbx-secret"


def upstream_authenticator(*algorithms: Algorithm, ttl: float = 300.0) -> Authenticator:
    """The upstream's own verifier: it knows extension 200 in realm pbx.example.com."""
    draws = itertools.count(1)
    stored = Credentials.from_password("200", UPSTREAM_REALM, UPSTREAM_PASSWORD)
    return Authenticator(
        lambda user, realm: stored if (user, realm) == ("200", UPSTREAM_REALM) else None,
        NonceFactory(b"u" * 32, lambda size: next(draws).to_bytes(size, "big"), ttl=ttl),
        UPSTREAM_REALM,
        algorithms=algorithms or (Algorithm.SHA_256, Algorithm.MD5),
    )


def static(password: str = UPSTREAM_PASSWORD) -> UpstreamCredentials:
    def credentials(aor: str, realm: str) -> ClientCredentials | None:
        return ClientCredentials.from_password("200", realm, password) if aor == AOR else None

    return credentials


def req(action: SendRequest) -> Request:
    assert isinstance(action.request, Request)
    return action.request


def key(action: SendRequest) -> ForwardKey:
    assert isinstance(action.context, ForwardKey)
    return action.context


def challenge_of(upstream: Authenticator, action: SendRequest, now: float) -> Response:
    decision = upstream.authenticate(req(action), now)
    assert isinstance(decision, Rejected)
    return decision.response(req(action))


def challenge_with(action: SendRequest, status: int, name: str, value: str) -> Response:
    return make_response(req(action), status, headers=Headers.of((name, value)))


def reply(world: World, action: SendRequest, response: Response, now: float) -> list[EngineAction]:
    return world.answer(key(action), response, now=now)


def authorized_world(credentials: UpstreamCredentials | None) -> World:
    world = World()
    world.engine = world.make(SETTINGS, credentials)
    registered(world)
    return world


def own_refresh(world: World, now: float = 2412.0) -> SendRequest:
    (own,) = sent(world.engine.on_timer(AorKey(AOR), REFRESH_TIMER, now))
    return own


def own_unregister(world: World) -> SendRequest:
    world.table.clear()
    world.engine.on_binding_gone(AOR, 700.0)
    (own,) = sent(world.engine.on_timer(AorKey(AOR), UNREGISTER_TIMER, 700.0))
    return own


def answered(world: World, upstream: Authenticator, own: SendRequest, now: float) -> SendRequest:
    (retry,) = sent(reply(world, own, challenge_of(upstream, own, now), now + 0.05))
    return retry


def test_refresh_challenged_is_answered_then_200_renews_expiry() -> None:
    world = authorized_world(static())
    upstream = upstream_authenticator()
    own = own_refresh(world)
    assert req(own).headers.get("CSeq") == "1 REGISTER" and req(own).headers.get("Authorization") is None
    actions = reply(world, own, challenge_of(upstream, own, 2412.05), 2412.1)
    retry_key = ForwardKey(AOR, key(own).seq + 1)
    (retry,) = sent(actions)
    reg = world.engine.registration(AOR)
    assert reg is not None and reg.cseq == 2
    assert (reg.auth_realm, reg.auth_username) == (UPSTREAM_REALM, "200")  # shown by uac.reg_dump
    assert actions == [
        CancelTimer(key(own), UPSTREAM_TIMEOUT),
        SendRequest(retry.request, UPSTREAM, retry_key),
        StartTimer(retry_key, UPSTREAM_TIMEOUT, 5.0),
        Deliver(UpstreamSaved(UpstreamSnapshot.of(reg))),  # CSeq 2 is persisted
    ]
    request = req(retry)
    assert request.headers.get("Call-ID") == f"up-{AOR}" and request.headers.get("CSeq") == "2 REGISTER"
    assert request.uri == "sip:example.com" and request.headers.get("Expires") == "3600"
    line = request.headers.get("Authorization") or ""
    assert 'uri="sip:example.com"' in line and "algorithm=SHA-256" in line and "nc=00000001" in line
    assert upstream.authenticate(request, 2412.15) == Authenticated("200", UPSTREAM_REALM, Algorithm.SHA_256)
    done = world.answer(retry_key, upstream_ok(request), now=2412.2)
    (timer,) = [a for a in done if isinstance(a, StartTimer) and a.name == REFRESH_TIMER]
    assert timer.delay == pytest.approx(2412.0)
    reg = world.engine.registration(AOR)
    assert (
        reg is not None and reg.expires_at == pytest.approx(6012.2) and reg.state is UpstreamState.REGISTERED
    )
    assert not reg.upstream_auth_needed and reg.last_error is None and reg.cseq == 2
    assert reg.inflight is None


def test_proxy_challenge_answered_in_proxy_authorization_rfc2069_form() -> None:
    world = authorized_world(static())
    own = own_refresh(world)
    challenge = challenge_with(own, 407, "Proxy-Authenticate", f'Digest realm="{UPSTREAM_REALM}", nonce="n1"')
    (retry,) = sent(reply(world, own, challenge, 2412.1))
    assert req(retry).headers.get("Authorization") is None
    line = req(retry).headers.get("Proxy-Authorization") or ""
    assert 'realm="pbx.example.com"' in line and "algorithm=MD5" in line and "qop" not in line


def test_wrong_credentials_second_challenge_sets_auth_needed_once() -> None:
    world = authorized_world(static("wrong"))
    upstream = upstream_authenticator()
    retry = answered(world, upstream, own_refresh(world), 2412.0)
    again = challenge_of(upstream, retry, 2412.2)
    assert again.status == 401 and "stale" not in (again.headers.get("WWW-Authenticate") or "")
    actions = reply(world, retry, again, 2412.2)
    reg = world.engine.registration(AOR)
    assert reg is not None and reg.upstream_auth_needed and reg.inflight is None
    assert actions == [
        CancelTimer(key(retry), UPSTREAM_TIMEOUT),
        Deliver(UpstreamAuthNeeded(AOR, 401, "our credentials were refused", 2412.2)),
        Deliver(UpstreamSaved(UpstreamSnapshot.of(reg))),
    ]
    assert reg.last_error == "401 our credentials were refused"
    (device,) = sent(world.device(register(number=2), now=2413.0))  # rule 4: piggy-back refresh
    reply(world, device, upstream_ok(req(device)), 2413.1)
    # the next self-refresh meets the same fate, and is not reported a second time
    retry2 = answered(world, upstream, own_refresh(world, now=4800.0), 4800.0)
    assert reply(world, retry2, challenge_of(upstream, retry2, 4800.2), 4800.2) == [
        CancelTimer(key(retry2), UPSTREAM_TIMEOUT)
    ]


def test_stale_challenge_allows_one_more_retry_with_the_new_nonce() -> None:
    world = authorized_world(static())
    upstream = upstream_authenticator(ttl=1.0)
    retry = answered(world, upstream, own_refresh(world), 2412.0)
    stale = challenge_of(upstream, retry, 2414.0)
    assert "stale=true" in (stale.headers.get("WWW-Authenticate") or "")
    (second,) = sent(reply(world, retry, stale, 2414.0))
    assert req(second).headers.get("CSeq") == "3 REGISTER"
    assert "nc=00000001" in (req(second).headers.get("Authorization") or "")  # a new nonce
    assert isinstance(upstream.authenticate(req(second), 2414.1), Authenticated)
    stale_again = challenge_of(upstream, second, 2416.0)
    assert "stale=true" in (stale_again.headers.get("WWW-Authenticate") or "")
    actions = reply(world, second, stale_again, 2416.0)
    assert sent(actions) == [] and events(actions, UpstreamAuthNeeded)


def test_nonce_count_grows_when_the_upstream_reuses_its_nonce() -> None:
    world = authorized_world(static())
    value = f'Digest realm="{UPSTREAM_REALM}", nonce="same", qop="auth"'
    own = own_refresh(world)
    (retry,) = sent(reply(world, own, challenge_with(own, 401, "WWW-Authenticate", value), 2412.1))
    reply(world, retry, upstream_ok(req(retry)), 2412.2)
    later = own_refresh(world, now=4824.0)
    (retry2,) = sent(reply(world, later, challenge_with(later, 401, "WWW-Authenticate", value), 4824.1))
    line = req(retry2).headers.get("Authorization") or ""
    assert "nc=00000002" in line and 'cnonce="8000000000000000"' in line  # cnonce drawn from random()


def test_injected_cnonce_is_used() -> None:
    world = World()
    world.engine = MidRegistrar(
        SETTINGS, world.bindings, lambda aor: "cid", lambda: 0.5, credentials=static(), cnonce=lambda: "fresh"
    )
    registered(world)
    retry = answered(world, upstream_authenticator(), own_refresh(world), 2412.0)
    assert 'cnonce="fresh"' in (req(retry).headers.get("Authorization") or "")


def test_unregister_challenged_is_answered_with_expires_zero() -> None:
    world = authorized_world(static())
    upstream = upstream_authenticator(Algorithm.MD5)
    retry = answered(world, upstream, own_unregister(world), 700.0)
    assert req(retry).headers.get("Expires") == "0" and req(retry).headers.get("CSeq") == "2 REGISTER"
    assert isinstance(upstream.authenticate(req(retry), 700.2), Authenticated)
    actions = reply(world, retry, upstream_ok(req(retry), expires=0), 700.2)
    assert CancelTimer(AorKey(AOR), REFRESH_TIMER) in actions
    reg = world.engine.registration(AOR)
    assert reg is not None and reg.state is UpstreamState.IDLE and reg.unregister_failures == 0


def test_unregister_with_refused_credentials_sets_auth_needed() -> None:
    world = authorized_world(static("wrong"))
    upstream = upstream_authenticator()
    retry = answered(world, upstream, own_unregister(world), 700.0)
    actions = reply(world, retry, challenge_of(upstream, retry, 700.2), 700.2)
    assert events(actions, UpstreamAuthNeeded) == [
        UpstreamAuthNeeded(AOR, 401, "our credentials were refused", 700.2)
    ]
    assert sent(actions) == []


def test_static_ha1_answers_the_md5_offer_below_sha256() -> None:
    ha1 = compute_ha1(Algorithm.MD5, "200", UPSTREAM_REALM, UPSTREAM_PASSWORD)

    def credentials(aor: str, realm: str) -> ClientCredentials | None:
        return (
            ClientCredentials.with_ha1("200", realm, Algorithm.MD5, ha1) if realm == UPSTREAM_REALM else None
        )

    world = authorized_world(credentials)
    upstream = upstream_authenticator(Algorithm.SHA_256, Algorithm.MD5)
    retry = answered(world, upstream, own_refresh(world), 2412.0)
    assert "algorithm=MD5" in (req(retry).headers.get("Authorization") or "")
    assert upstream.authenticate(req(retry), 2412.2) == Authenticated("200", UPSTREAM_REALM, Algorithm.MD5)


def test_subscriber_realm_mismatch_sets_auth_needed() -> None:
    stored = Credentials.from_password("200", "example.com", "device-secret")

    def subscriber(aor: str, realm: str) -> ClientCredentials | None:
        return ClientCredentials.of(stored) if realm == stored.realm else None

    world = authorized_world(subscriber)
    own = own_refresh(world)
    actions = reply(world, own, challenge_of(upstream_authenticator(), own, 2412.0), 2412.1)
    reg = world.engine.registration(AOR)
    assert reg is not None and reg.upstream_auth_needed
    assert actions == [
        CancelTimer(key(own), UPSTREAM_TIMEOUT),
        Deliver(UpstreamAuthNeeded(AOR, 401, "no credentials for realm pbx.example.com", 2412.1)),
        Deliver(UpstreamSaved(UpstreamSnapshot.of(reg))),
    ]


def test_unanswerable_challenge_with_credentials_sets_auth_needed() -> None:
    world = authorized_world(static())
    own = own_refresh(world)
    actions = reply(world, own, challenge_with(own, 401, "WWW-Authenticate", 'Basic realm="x"'), 2412.1)
    assert events(actions, UpstreamAuthNeeded) == [
        UpstreamAuthNeeded(AOR, 401, "no credentials for realm none", 2412.1)
    ]


def test_device_register_waits_while_the_authorized_retry_is_in_flight() -> None:
    world = authorized_world(static())
    retry = answered(world, upstream_authenticator(), own_refresh(world), 2412.0)
    queued = world.device(register(number=2, extra=[("Authorization", "x")]), now=2412.15)
    assert sent(queued) == []  # 3.8: one upstream REGISTER per AoR in flight
    (device,) = sent(reply(world, retry, upstream_ok(req(retry)), 2412.2))
    assert req(device).headers.get("Call-ID") == "c1"


def test_423_resend_keeps_the_forward_in_flight() -> None:
    world = World()
    (forward,) = sent(world.device(register()))
    too_brief = make_response(req(forward), 423, headers=Headers.of(("Min-Expires", "7200")))
    assert len(sent(reply(world, forward, too_brief, 0.1))) == 1
    assert sent(world.device(register("<sip:200@10.0.0.6>", call_id="c2"), peer=M2, now=0.2)) == []
    reg = world.engine.registration(AOR)
    assert reg is not None and reg.inflight is not None and len(reg.queue) == 1


def test_mrct_of_a_key_with_octets_that_are_not_utf8() -> None:
    key = BindingKey(
        AOR, KeyKind.PUSH, "apns tok" + b"\xff".decode("utf-8", "surrogateescape") + " T.app.voip"
    )
    assert len(mrct_of(key)) == 16
    assert mrct_of(key) != mrct_of(KEY1)
