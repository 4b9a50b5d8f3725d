"""RFC 4028 session timers guard a call's appearances (section 10): the TTL of an appearance
in progress is the session's ``interval - min(32, interval / 3)`` from its last refresh, and
when it passes the appearance is idled with rule ``4028`` (history cause ``session-expired``).

Driven on the simulated clock of :class:`Harness`; the member's Contact user is not the line's.
"""

from __future__ import annotations

from scaserver.sca.appearance import AppearanceChanged, AppearanceState
from scaserver.sca.engine import TTL_TIMER, AppearanceKey
from scaserver.sip.actions import CancelTimer, EngineAction, StartTimer

from .scenario import (
    CA,
    CB,
    IDLE_ONLY,
    LINE,
    Harness,
    answer,
    engine,
    facts,
    invite,
    notifies,
    seize_info,
    subscribe,
)

S = AppearanceState
BARESIP_A = "sip:2001-0x55a1c2@192.0.2.11:5060"
KEY = AppearanceKey(LINE, 1)


def rules(actions: list[EngineAction]) -> list[tuple[str, S, S]]:
    return [(c.rule, c.from_state, c.to_state) for c in facts(actions, AppearanceChanged)]  # type: ignore[attr-defined]


def call_info(actions: list[EngineAction]) -> list[str | None]:
    return [n.headers.get("Call-Info") for n, _ in notifies(actions) if n.headers.get("Event") == "call-info"]


def answered_call(**kw: object) -> Harness:
    h = Harness(engine(**kw))
    h.subscribe(subscribe(contact=CA))
    h.subscribe(subscribe(contact=CB, call_id="sub-b", from_tag="fb"))
    call = invite(call_info=seize_info(1), contact=BARESIP_A)
    h.forward(call)
    h.respond(call, answer(call, 200))
    h.ack(invite(method="ACK", to_tag="rt"))
    return h


def test_session_timer_from_the_2xx_arms_the_appearance_ttl() -> None:
    h = answered_call()
    actions = h.run(h.engine.on_session_refreshed("call-1", 60.0, h.now))
    assert actions == [StartTimer(KEY, TTL_TIMER, 60.0)]


def test_session_expiry_idles_the_appearance_with_rule_4028() -> None:
    h = answered_call()
    h.run(h.engine.on_session_refreshed("call-1", 60.0, h.now))
    assert rules(h.advance(59.0)) == []
    actions = h.advance(1.0)
    assert rules(actions) == [("4028", S.ACTIVE, S.IDLE)]
    assert call_info(actions) == [IDLE_ONLY] * 2
    assert h.engine.appearances(LINE) == []


def test_each_refresh_rearms_the_session_ttl() -> None:
    h = answered_call()
    h.run(h.engine.on_session_refreshed("call-1", 60.0, h.now))
    for _ in range(5):
        h.advance(50.0)
        refresh = invite(to_tag="rt", cseq=2)
        h.forward(refresh)
        h.respond(refresh, answer(refresh, 200))
        h.run(h.engine.on_session_refreshed("call-1", 60.0, h.now))
    assert h.states() == {1: "active"}
    assert rules(h.advance(60.0)) == [("4028", S.ACTIVE, S.IDLE)]


def test_session_ttl_survives_hold_and_expires_held_call() -> None:
    h = answered_call()
    h.run(h.engine.on_session_refreshed("call-1", 60.0, h.now))
    h.advance(10.0)
    hold = invite(
        to_tag="rt", cseq=3, body=b"v=0\r\nc=IN IP4 0.0.0.0\r\nm=audio 4000 RTP/AVP 0\r\na=sendonly\r\n"
    )
    h.forward(hold)
    h.respond(hold, answer(hold, 200))
    assert h.states() == {1: "held"}
    assert rules(h.advance(60.0)) == [("4028", S.HELD, S.IDLE)]


def test_session_timer_overrides_max_call_age_and_none_restores_it() -> None:
    h = answered_call(max_call_age=600.0)
    h.run(h.engine.on_session_refreshed("call-1", 60.0, h.now))
    actions = h.run(h.engine.on_session_refreshed("call-1", None, h.now))
    assert actions == [StartTimer(KEY, TTL_TIMER, 600.0)]
    assert rules(h.advance(599.0)) == []
    assert rules(h.advance(1.0)) == [("Q18", S.ACTIVE, S.IDLE)]


def test_session_timer_dropped_without_max_call_age_cancels_the_ttl() -> None:
    h = answered_call()
    h.run(h.engine.on_session_refreshed("call-1", 60.0, h.now))
    assert h.run(h.engine.on_session_refreshed("call-1", None, h.now)) == [CancelTimer(KEY, TTL_TIMER)]
    assert rules(h.advance(86400.0)) == []
    assert h.states() == {1: "active"}


def test_session_timer_of_an_unknown_call_is_ignored_and_not_kept() -> None:
    h = answered_call()
    assert h.engine.on_session_refreshed("other-call", 60.0, h.now) == []
    assert rules(h.advance(3600.0)) == []
    assert h.states() == {1: "active"}


def test_bye_forgets_the_session_timer() -> None:
    h = answered_call()
    h.run(h.engine.on_session_refreshed("call-1", 60.0, h.now))
    assert rules(h.forward(invite(method="BYE", to_tag="rt", cseq=2))) == [("O18", S.ACTIVE, S.IDLE)]
    assert rules(h.advance(120.0)) == []
    assert h.engine.on_session_refreshed("call-1", 60.0, h.now) == []
