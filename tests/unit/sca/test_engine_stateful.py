"""Random sequences of subscribes, seizes, calls, holds, BYEs and time against the engine."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from scaserver.sca.appearance import AppearanceState
from scaserver.sca.engine import AppearanceError
from scaserver.sip.message import Response

from .scenario import (
    HOLD_SDP,
    LINE,
    TALK_SDP,
    Harness,
    answer,
    engine,
    invite,
    notifies,
    seize_info,
    subscribe,
)

MAX = 3
MEMBERS = ["sip:2001@192.0.2.11:5060", "sip:2001@192.0.2.12:5060", "sip:2001@192.0.2.13:5060"]
member = st.integers(0, len(MEMBERS) - 1)
call = st.integers(0, 3)
index = st.integers(0, MAX + 1)


def test_a_handset_that_vanishes_mid_seize_leaves_no_stuck_appearance() -> None:
    h = Harness(engine(), auto_answer=False)
    h.subscribe(subscribe())
    h.answer_all()
    h.subscribe(
        subscribe("line-seize", call_id="ls", contact=MEMBERS[1], expires=15, call_info=seize_info(0))
    )
    # The phone never answers its NOTIFYs' retransmissions and never refreshes; nothing else happens.
    h.in_flight.clear()
    h.advance(16.0)
    assert h.engine.appearances() == []


class ScaMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.h = Harness(engine(max_appearances=MAX, alerting_state=True))
        self.seq = 10

    def _cseq(self) -> int:
        self.seq += 1
        return self.seq

    @rule(who=member, expires=st.sampled_from([0, 5, 3600]))
    def subscribe_call_info(self, who: int, expires: int) -> None:
        self.h.subscribe(
            subscribe(contact=MEMBERS[who], call_id=f"ci{who}", from_tag=f"f{who}", expires=expires)
        )

    @rule(who=member, wanted=index, expires=st.sampled_from([0, 15]))
    def seize(self, who: int, wanted: int, expires: int) -> None:
        request = subscribe(
            "line-seize",
            contact=MEMBERS[who],
            call_id=f"ls{who}-{self._cseq()}",
            from_tag=f"l{who}",
            expires=expires,
            call_info=seize_info(wanted),
        )
        self.h.subscribe(request)

    @rule(who=member, n=call, wanted=index, progress=st.sampled_from([(), (180,), (200,), (183, 200)]))
    def dial(self, who: int, n: int, wanted: int, progress: tuple[int, ...]) -> None:
        request = invite(
            call_id=f"c{n}", from_tag=f"m{n}", contact=MEMBERS[who], call_info=seize_info(wanted)
        )
        self.h.forward(request)
        for status in progress:
            self.h.respond(request, answer(request, status, to_tag=f"r{n}"))

    @rule(n=call, status=st.sampled_from([180, 183, 200, 302, 407, 486, 487, 503]), local=st.booleans())
    def respond(self, n: int, status: int, local: bool) -> None:
        request = invite(call_id=f"c{n}", from_tag=f"m{n}")
        self.h.respond(request, answer(request, status, to_tag=f"r{n}"), local=local)

    @rule(n=call, hold=st.booleans(), status=st.sampled_from([200, 491]))
    def reinvite(self, n: int, hold: bool, status: int) -> None:
        request = invite(
            call_id=f"c{n}",
            from_tag=f"m{n}",
            to_tag=f"r{n}",
            cseq=self._cseq(),
            body=HOLD_SDP if hold else TALK_SDP,
        )
        self.h.forward(request)
        self.h.respond(request, answer(request, status, to_tag=f"r{n}"))

    @rule(n=call)
    def bye(self, n: int) -> None:
        self.h.forward(
            invite(method="BYE", call_id=f"c{n}", from_tag=f"m{n}", to_tag=f"r{n}", cseq=self._cseq())
        )

    @rule(n=call)
    def cancel(self, n: int) -> None:
        self.h.forward(invite(method="CANCEL", call_id=f"c{n}", from_tag=f"m{n}"))

    @rule(n=call, who=member, answered=st.booleans())
    def incoming(self, n: int, who: int, answered: bool) -> None:
        request = invite(
            call_id=f"in{n}",
            from_uri="sip:9@x.example",
            from_tag=f"x{n}",
            to_uri=LINE,
            contact="sip:9@198.51.100.9",
        )
        self.h.forward(request)
        if answered:
            self.h.respond(request, answer(request, 200, to_tag=f"t{who}", contact=MEMBERS[who]))

    @rule(n=call)
    def caller_ack(self, n: int) -> None:
        ack = invite(
            method="ACK",
            call_id=f"in{n}",
            from_uri="sip:9@x.example",
            from_tag=f"x{n}",
            to_uri=LINE,
            to_tag="t0",
        )
        self.h.ack(ack)

    @rule(who=member, n=call)
    def pickup(self, who: int, n: int) -> None:
        request = invite(
            call_id=f"p{n}", from_tag=f"p{n}", to_uri=LINE, contact=MEMBERS[who], call_info=seize_info(1)
        )
        plan = self.h.engine.check_request(request, self.h.now)
        if plan.rejection is None:
            self.h.forward(request)
            self.h.respond(request, answer(request, 481, to_tag="z"))

    @rule(status=st.sampled_from([200, 481, 503]))
    def notify_outcome(self, status: int) -> None:
        self.h.auto_answer = False
        if self.h.in_flight:
            context = self.h.in_flight.pop(0)
            self.h.run(self.h.engine.on_notify_response(context, Response(status, "x"), self.h.now))

    @rule()
    def notify_timeout(self) -> None:
        if self.h.in_flight:
            context = self.h.in_flight.pop(0)
            self.h.run(self.h.engine.on_notify_failed(context, self.h.now))

    @rule(wanted=index)
    def rpc_release(self, wanted: int) -> None:
        with contextlib.suppress(AppearanceError):
            self.h.run(self.h.engine.release_appearance(LINE, wanted, self.h.now))

    @rule(seconds=st.sampled_from([1.0, 10.0, 40.0, 130.0]))
    def wait(self, seconds: float) -> None:
        self.h.advance(seconds)

    @invariant()
    def indexes_in_range_and_one_owner_each(self) -> None:
        apps = self.h.engine.appearances(LINE)
        indexes = [a.index for a in apps]
        assert len(indexes) == len(set(indexes))
        assert all(1 <= i <= MAX for i in indexes)
        assert all(a.state is not AppearanceState.IDLE for a in apps)

    @invariant()
    def nothing_stuck_past_its_ttl(self) -> None:
        settings_ = self.h.engine.settings
        for app in self.h.engine.appearances():
            if app.state is AppearanceState.SEIZED and app.leg is None:
                assert app.touched_at + settings_.seized_ttl >= self.h.now - 1e-6
            if app.state in (AppearanceState.SEIZED, AppearanceState.PROGRESSING, AppearanceState.ALERTING):
                assert app.touched_at + settings_.early_ttl >= self.h.now - 1e-6  # O20, I8
            if app.state is AppearanceState.ACTIVE_PENDING:
                assert app.changed_at + settings_.active_pending_ttl >= self.h.now - 1e-6

    @invariant()
    def subscriptions_not_past_expiry(self) -> None:
        for sub in self.h.engine.subscriptions():
            assert sub.expires >= self.h.now - 1e-6
            assert sub.aor == LINE


ScaMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
test_sca_engine_state_machine = ScaMachine.TestCase


@pytest.mark.parametrize("state", ["ringing", "bogus", "active-pending"])
def test_rpc_update_rejects_unknown_states_q25(state: str) -> None:
    h = Harness(engine())
    with pytest.raises(AppearanceError):
        h.engine.update_appearance(LINE, 1, state, h.now)


def test_rpc_release_index_0_and_unused_are_errors() -> None:
    h = Harness(engine())
    with pytest.raises(AppearanceError):
        h.engine.release_appearance(LINE, 0, h.now)
    with pytest.raises(AppearanceError):
        h.engine.release_appearance(LINE, 1, h.now)
    with pytest.raises(AppearanceError):
        h.engine.update_appearance(LINE, 0, "held", h.now)


def test_rpc_update_then_release_through_the_table() -> None:
    h = Harness(engine())
    h.subscribe(subscribe())
    h.run(h.engine.update_appearance(LINE, 2, "held", h.now, uri="<sip:x@y>"))
    assert h.states() == {2: "held"}
    assert h.last_call_info() == (
        '<sip:pbx.example.com>;appearance-index=2;appearance-state=held;appearance-uri="<sip:x@y>",'
        "<sip:pbx.example.com>;appearance-index=*;appearance-state=idle"
    )
    h.run(h.engine.update_appearance(LINE, 2, "idle", h.now))
    assert h.states() == {}


def test_rpc_seize_fails_when_the_line_is_full() -> None:
    h = Harness(engine(max_appearances=1))
    h.run(h.engine.seize_appearance(LINE, MEMBERS[0], h.now)[1])
    with pytest.raises(AppearanceError):
        h.engine.seize_appearance(LINE, MEMBERS[0], h.now)


def test_rpc_deactivate_ends_with_reason_deactivated() -> None:
    h = Harness(engine())
    h.subscribe(subscribe())
    actions = h.run(h.engine.deactivate([s.key for s in h.engine.subscriptions()], h.now))
    assert [n.headers.get("Subscription-State") for n, _ in notifies(actions)] == [
        "terminated;reason=deactivated"
    ]
    assert h.engine.subscriptions() == []
