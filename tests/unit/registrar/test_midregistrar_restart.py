"""What the mid-registrar reports for a restart (push-and-parking.md 3.5, race R21): an
``UpstreamSaved`` fact whenever an upstream registration changes in what must survive (CSeq,
state, expiry, flags), never for a change that does not, and a restore that continues the
saved registration dialog."""

from __future__ import annotations

from typing import Any

import attrs

from scaserver.registrar.binding import Binding
from scaserver.registrar.midregevents import UpstreamSaved, UpstreamSnapshot
from scaserver.registrar.midregistrar import REFRESH_TIMER, UNREGISTER_TIMER
from scaserver.registrar.midregsettings import MidRegistrarSettings, Mode
from scaserver.registrar.midregstate import AorKey, ForwardKey
from scaserver.registrar.upstream import UpstreamState
from scaserver.sip.actions import Deliver, EngineAction, StartTimer
from scaserver.sip.message import Headers
from scaserver.sip.responses import make_response
from tests.unit.registrar.test_midregistrar import (
    AOR,
    KEY1,
    M1,
    SETTINGS,
    World,
    register,
    registered,
    sent,
    upstream_ok,
)


def saves(actions: list[EngineAction]) -> list[UpstreamSnapshot]:
    return [
        a.event.snapshot for a in actions if isinstance(a, Deliver) and isinstance(a.event, UpstreamSaved)
    ]


def snapshot(**changes: Any) -> UpstreamSnapshot:
    base = UpstreamSnapshot(AOR, f"up-{AOR}", 0, UpstreamState.IDLE, 0.0, 0, False, 0)
    return attrs.evolve(base, **changes)


def test_snapshot_of_a_registration_takes_what_a_restart_needs() -> None:
    world = World()
    registered(world)
    reg = world.engine.registration(AOR)
    assert reg is not None
    assert UpstreamSnapshot.of(reg) == snapshot(
        state=UpstreamState.REGISTERED, expires_at=3600.1, granted=3600
    )


def test_first_forward_and_its_2xx_are_saved_an_absorbed_refresh_is_not() -> None:
    world = World()
    forwarded = world.device(register())
    assert saves(forwarded) == [snapshot(state=UpstreamState.REGISTERING)]
    (forward,) = sent(forwarded)
    answered = world.answer(forward.context, upstream_ok(forward.request), now=0.1)  # type: ignore[arg-type]
    assert saves(answered) == [snapshot(state=UpstreamState.REGISTERED, expires_at=3600.1, granted=3600)]
    absorbed = world.device(register(number=2), now=10.0)
    assert sent(absorbed) == [] and saves(absorbed) == []


def test_every_cseq_of_our_own_registers_is_reported() -> None:
    world = World()
    registered(world)
    refreshed = world.engine.on_timer(AorKey(AOR), REFRESH_TIMER, 2412.0)
    (own,) = sent(refreshed)
    assert own.request.headers.get("CSeq") == "1 REGISTER"
    assert [s.cseq for s in saves(refreshed)] == [1]
    answered = world.answer(own.context, upstream_ok(own.request), now=2412.1)  # type: ignore[arg-type]
    assert saves(answered) == [
        snapshot(cseq=1, state=UpstreamState.REGISTERED, expires_at=6012.1, granted=3600)
    ]
    (again,) = sent(world.engine.on_timer(AorKey(AOR), REFRESH_TIMER, 4824.0))
    assert again.request.headers.get("CSeq") == "2 REGISTER"


def test_a_423_floor_and_the_resent_cseq_are_saved() -> None:
    world = World()
    registered(world)
    (own,) = sent(world.engine.on_timer(AorKey(AOR), REFRESH_TIMER, 2412.0))
    brief = make_response(own.request, 423, headers=Headers.of(("Min-Expires", "7200")))
    actions = world.answer(own.context, brief, now=2412.1)  # type: ignore[arg-type]
    (resent,) = sent(actions)
    assert resent.request.headers.get("CSeq") == "2 REGISTER"
    assert saves(actions) == [
        snapshot(cseq=2, state=UpstreamState.REGISTERED, expires_at=3600.1, granted=3600, floor=7200)
    ]


def test_timeouts_and_unreachable_upstream_save_the_new_state() -> None:
    world = World()
    registered(world)
    (own,) = sent(world.engine.on_timer(AorKey(AOR), REFRESH_TIMER, 2412.0))
    context = own.context
    assert isinstance(context, ForwardKey)
    failed = world.engine.on_upstream_failure(context, 2412.1)
    assert [s.state for s in saves(failed)] == [UpstreamState.RETRYING]
    (retry,) = sent(world.engine.on_timer(AorKey(AOR), REFRESH_TIMER, 2417.1))
    assert isinstance(retry.context, ForwardKey)
    timed_out = world.engine.on_upstream_timeout(retry.context, 2422.1)
    assert saves(timed_out) == []  # still RETRYING, CSeq 2 was saved when it was sent


def test_timers_that_change_nothing_report_nothing() -> None:
    world = World()
    registered(world)
    assert world.engine.on_timer(AorKey("sip:nobody@example.com"), REFRESH_TIMER, 5.0) == []
    assert world.engine.on_timer(AorKey(AOR), UNREGISTER_TIMER, 5.0) == []  # a binding is left
    assert world.engine.on_timer("not-ours", REFRESH_TIMER, 5.0) == []


def test_restore_continues_the_saved_dialog_without_reporting_it_again() -> None:
    world = World()
    world.table[KEY1] = Binding(KEY1, "sip:200@10.0.0.5", 5000.0, "c1", 1, M1)
    world.draws[0] = 0.5
    saved = snapshot(call_id="kept", cseq=64, state=UpstreamState.REGISTERED, expires_at=4000.0, granted=3600)
    restored = world.engine.restore([saved], 1000.0)
    assert restored == [StartTimer(AorKey(AOR), REFRESH_TIMER, SETTINGS.table.startup_spread * 0.5)]
    reg = world.engine.registration(AOR)
    assert reg is not None and UpstreamSnapshot.of(reg) == saved
    refresh = world.engine.on_timer(AorKey(AOR), REFRESH_TIMER, 1030.0)
    (own,) = sent(refresh)
    assert own.request.headers.get("Call-ID") == "kept"
    assert own.request.headers.get("CSeq") == "65 REGISTER"
    assert saves(refresh) == [attrs.evolve(saved, cseq=65)]


def test_restored_registration_past_its_expiry_is_lost_and_registered_again() -> None:
    world = World()
    world.table[KEY1] = Binding(KEY1, "sip:200@10.0.0.5", 5000.0, "c1", 1, M1)
    saved = snapshot(call_id="kept", cseq=32, state=UpstreamState.REGISTERED, expires_at=900.0, granted=3600)
    world.engine.restore([saved], 1000.0)
    refresh = world.engine.on_timer(AorKey(AOR), REFRESH_TIMER, 1030.0)
    (own,) = sent(refresh)
    assert own.request.headers.get("CSeq") == "33 REGISTER"
    assert saves(refresh) == [attrs.evolve(saved, cseq=33, state=UpstreamState.LOST)]


def test_restore_without_bindings_or_in_mirror_mode_sends_nothing() -> None:
    world = World()
    saved = snapshot(call_id="kept", cseq=32, state=UpstreamState.REGISTERED, expires_at=4000.0)
    assert world.engine.restore([saved], 1000.0) == []
    mirror = World()
    mirror.engine = mirror.make(attrs.evolve(SETTINGS, table=MidRegistrarSettings(mode=Mode.MIRROR)))
    mirror.table[KEY1] = Binding(KEY1, "sip:200@10.0.0.5", 5000.0, "c1", 1, M1)
    assert mirror.engine.restore([saved], 1000.0) == []
    assert mirror.engine.registration(AOR) is not None  # restored, left to the devices
