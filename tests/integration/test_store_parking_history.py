"""Push wake-ups and parked calls reach the reporting tables (reporting.md 4.1, Q7, Q8): a whole
SIP core parks a call, pushes the mobile, which wakes and answers (push-and-parking.md T8); the
facts it publishes go through the composition root's HistoryFeed and the write-behind queue
into SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from typing import ParamSpec, TypeVar, cast

from sqlalchemy import select
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock

from scaserver.edge.historyfeed import HistoryFeed
from scaserver.edge.stack import TimerClock
from scaserver.edge.writebehind import WriteBehind
from scaserver.events import EventBus
from scaserver.push.gateway import Outcome
from scaserver.reporting.callhistory import call_uuid
from scaserver.reporting.history import HistoryRecorder
from scaserver.reporting.wakeups import prid_sha256
from scaserver.store import tables
from scaserver.store.engine import make_engine
from scaserver.store.history import SqlHistoryRepository, history_key
from tests.push_rig import AOR, DESK, M1_WOKEN, Rig, registered, wakes

P = ParamSpec("P")
T = TypeVar("T")


class SyncRunner:
    """Runs the flush at once, on the calling thread."""

    def run(self, f: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Deferred[T]:
        return maybeDeferred(f, *args, **kwargs)


def published(r: Rig, bus: EventBus, seen: list[int]) -> None:
    """Publish what the core delivered since the last call, as the stack does after each input."""
    for fact in r.facts[seen[0] :]:
        bus.publish(fact)
    seen[0] = len(r.facts)


def test_t8_parked_call_and_wake_are_written_to_the_history_tables(migrated_db_url: str) -> None:
    r = registered()
    engine = make_engine(migrated_db_url)
    bus, seen = EventBus(), [len(r.facts)]
    writes = WriteBehind(cast(TimerClock, Clock()), SyncRunner())
    recorder = HistoryRecorder(line_of=lambda aor: None, local_domains=["example.com"])
    feed = HistoryFeed(
        recorder,
        writes.channel("history", SqlHistoryRepository(engine), history_key),
        lines=tuple,
        clock=lambda: r.now,
    )
    feed.attach(bus)
    parked_at = r.now
    r.invite()
    published(r, bus, seen)
    (push,) = r.pushes()
    (to_desk,) = r.to(DESK, "INVITE")
    r.answer(to_desk, 486, DESK, "desk")
    published(r, bus, seen)
    r.advance(0.05)
    r.push_result(push, Outcome.SENT, 202)
    published(r, bus, seen)
    r.advance(0.3)
    wakes(r, M1_WOKEN, "TOK1", "m1-b")
    published(r, bus, seen)
    (to_mobile,) = r.to(M1_WOKEN, "INVITE")
    r.advance(1.0)
    r.answer(to_mobile, 200, M1_WOKEN, "mob")
    published(r, bus, seen)
    writes.flush()
    try:
        with engine.connect() as conn:
            wakeups = conn.execute(select(tables.push_wakeups)).mappings().all()
            parked = conn.execute(select(tables.parked_calls)).mappings().all()
            calls = conn.execute(select(tables.calls)).mappings().all()
            woke_row = conn.execute(
                select(tables.registration_events.c.wakeup_id).where(
                    tables.registration_events.c.wakeup_id.is_not(None)
                )
            ).all()
    finally:
        engine.dispose()
    (wakeup,) = wakeups
    sent_ms = round(parked_at * 1000)
    assert {k: wakeup[k] for k in ("aor", "provider", "prid_sha256", "reason", "outcome")} == {
        "aor": AOR,
        "provider": "apns",
        "prid_sha256": prid_sha256("TOK1"),
        "reason": "call",
        "outcome": "registered",
    }
    assert (wakeup["sent_ms"], wakeup["gateway_status"], wakeup["gateway_ms"], wakeup["registered_ms"]) == (
        sent_ms,
        202,
        50,
        350,
    )
    assert "TOK1" not in str(dict(wakeup))  # the token only as SHA-256
    (row,) = parked
    uuid = call_uuid("call-1@pbx", "pbx1")
    assert dict(row) | {"id": 0, "parked_at": None} == {
        "id": 0,
        "call_uuid": uuid,
        "ruri": AOR,
        "parked_at": None,
        "parked_ms": sent_ms,
        "wakeup_id": wakeup["id"],
        "branches_added": 1,
        "first_branch_ms": 350,
        "answered_ms": 1350,
        "ended_ms": 1350,
        "outcome": "answered_after_wake",
        "final_sip_code": 200,
    }
    (cdr,) = calls
    assert (cdr["call_uuid"], cdr["parked"], cdr["disposition"]) == (uuid, True, "IN PROGRESS")
    assert woke_row == [(wakeup["id"],)]  # the woken device's registration names its wake-up
