"""A scripted day of signalling, written through the history repository into SQLite and
PostgreSQL, and every report of reporting.md section 5 checked against what the script did."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select, text

from scaserver.reporting import commands
from scaserver.reporting.history import HistoryRecorder
from scaserver.reporting.output import (
    PNG_SIGNATURE,
    busy_hour_png,
    render_csv,
    render_table,
    wake_latency_png,
)
from scaserver.reporting.reports import (
    REPORTS,
    ReportError,
    ReportParams,
    hourly_traffic,
    run_report,
    wake_latencies,
)
from scaserver.reporting.retention import RetentionPolicy, purge
from scaserver.sca.appearance import AppearanceState as S
from scaserver.store import tables
from scaserver.store.engine import make_engine
from scaserver.store.history import HistoryKey, HistoryRow, ParkOutcome, SqlHistoryRepository, history_key
from tests.unit.reporting.script import (
    DESK_A,
    DESK_B,
    LINE,
    LINE2,
    Call,
    change,
    device_of,
    line_of,
    registered,
)

DAY = 1_732_492_800.0  # 2024-11-25 00:00:00 UTC
DAY_MS = int(DAY * 1000)
H8, H9, H10, H11 = DAY + 8 * 3600, DAY + 9 * 3600, DAY + 10 * 3600, DAY + 11 * 3600
RANGE = ReportParams(DAY_MS, DAY_MS + 86_400_000)
MAC_A, MAC_B = "0004f2aaaaaa", "0004f2bbbbbb"
MOBILE = "sip:mobile@example.com"


def _script() -> list[tuple[float, object]]:
    """(time, fact) of the day; push and park steps are ("push"/"park", ...) tuples."""
    a, b, c, d, e = (Call(f"call-{n}") for n in "abcde")
    f = Call("call-f", callee=LINE2)
    pickup = Call(
        "call-c-pickup",
        caller=LINE,
        callee=LINE,
        caller_tag="pk1",
        callee_tag="rm1",
        extra=(("Call-Info", "<sip:example.com>;appearance-index=2"),),
    )
    steps: list[tuple[float, object]] = [
        # A: answered on index 1 by desk A after 5 s, talk until 08:03:30.
        (H8, a.forwarded(H8)),
        (H8 + 2, a.ringing(H8 + 2)),
        (H8 + 5, a.answered(H8 + 5, DESK_A)),
        (H8 + 5, change(H8 + 5, 1, S.IDLE, S.ACTIVE_PENDING, "I3", DESK_A, "call-a")),
        (H8 + 5.1, change(H8 + 5.1, 1, S.ACTIVE_PENDING, S.ACTIVE, "I4", DESK_A, "call-a")),
        (H8 + 210, change(H8 + 210, 1, S.ACTIVE, S.IDLE, "O18", DESK_A, "call-a")),
        *((H8 + 210, fact) for fact in a.bye(H8 + 210)),
        # B: alerting on index 1, the caller gives up after 20 s.
        (H8 + 600, b.forwarded(H8 + 600)),
        (H8 + 600, change(H8 + 600, 1, S.IDLE, S.ALERTING, "I1", None, "call-b")),
        *((H8 + 620, fact) for fact in b.cancelled(H8 + 620)),
        (H8 + 620.1, change(H8 + 620.1, 1, S.ALERTING, S.IDLE, "I6", None, "call-b")),
        # C: answered on index 2 by desk B, held by B, picked up by desk A after 60 s.
        (H8 + 1200, c.forwarded(H8 + 1200)),
        (H8 + 1205, c.answered(H8 + 1205, DESK_B)),
        (H8 + 1205, change(H8 + 1205, 2, S.IDLE, S.ACTIVE_PENDING, "I3", DESK_B, "call-c")),
        (H8 + 1290, change(H8 + 1290, 2, S.ACTIVE, S.HELD, "O14", DESK_B, "call-c")),
        (H8 + 1350, pickup.forwarded(H8 + 1350, (("Replaces", "call-c;to-tag=ct1;from-tag=lt1"),))),
        (H8 + 1350, change(H8 + 1350, 2, S.HELD, S.ACTIVE, "O19", DESK_A, "call-c-pickup")),
        (H8 + 1350.5, pickup.answered(H8 + 1350.5, "sip:remote@203.0.113.5")),
        *((H8 + 1351, fact) for fact in c.bye(H8 + 1351, by_callee=True)),
        (H8 + 1530, change(H8 + 1530, 2, S.ACTIVE, S.IDLE, "O18", DESK_A, "call-c-pickup")),
        *((H8 + 1530, fact) for fact in pickup.bye(H8 + 1530)),
        # D: rings 30 s on index 1, nobody answers (480).
        (H9 + 300, d.forwarded(H9 + 300)),
        (H9 + 300.5, change(H9 + 300.5, 1, S.IDLE, S.ALERTING, "I1", None, "call-d")),
        *((H9 + 330.5, fact) for fact in d.failed(H9 + 330.5, 480, "Temporarily Unavailable")),
        (H9 + 330.5, change(H9 + 330.5, 1, S.ALERTING, S.IDLE, "I6", None, "call-d")),
        # E: busy.
        (H9 + 1800, e.forwarded(H9 + 1800)),
        (H9 + 1800.5, change(H9 + 1800.5, 1, S.IDLE, S.ALERTING, "I1", None, "call-e")),
        *((H9 + 1802, fact) for fact in e.failed(H9 + 1802, 486, "Busy Here")),
        (H9 + 1802, change(H9 + 1802, 1, S.ALERTING, S.IDLE, "I6", None, "call-e")),
        # F: line 2, answered by desk B, on hold 400 s by B, resumed by B.
        (H10, f.forwarded(H10)),
        (H10 + 5, f.answered(H10 + 5, DESK_B)),
        (H10 + 5, change(H10 + 5, 1, S.IDLE, S.ACTIVE_PENDING, "I3", DESK_B, "call-f", line=LINE2)),
        (H10 + 90, change(H10 + 90, 1, S.ACTIVE, S.HELD, "O14", DESK_B, "call-f", line=LINE2)),
        (H10 + 490, change(H10 + 490, 1, S.HELD, S.ACTIVE, "O16", DESK_B, "call-f", line=LINE2)),
        (H10 + 630, change(H10 + 630, 1, S.ACTIVE, S.IDLE, "O18", DESK_B, "call-f", line=LINE2)),
        *((H10 + 630, fact) for fact in f.bye(H10 + 630)),
        # Seizes without a call: desk A on line 2 until the 15 s expiry, on line 1 for 5 s.
        (H11 + 10, change(H11 + 10, 2, S.IDLE, S.SEIZED, "O1", DESK_A, line=LINE2)),
        (H11 + 25, change(H11 + 25, 2, S.SEIZED, S.IDLE, "O4", DESK_A, line=LINE2)),
        (H11 + 1800.5, change(H11 + 1800.5, 3, S.IDLE, S.SEIZED, "O1", DESK_A)),
        (H11 + 1805.5, change(H11 + 1805.5, 3, S.SEIZED, S.IDLE, "O3", DESK_A)),
        # Push wake-ups: apns woke after 2.5 s and 3.5 s, one timed out; an fcm gateway error.
        (H9, ("push", "apns", "tok-1", None)),
        (H9 + 2.5, registered(H9 + 2.5, MOBILE, "sip:m1@198.51.100.7:40000", prid="tok-1")),
        (H9 + 10, ("push", "apns", "tok-2", None)),
        (H9 + 13.5, registered(H9 + 13.5, MOBILE, "sip:m2@198.51.100.7:40001", prid="tok-2")),
        (H9 + 20, ("push", "apns", "tok-3", None)),
        (H9 + 50, ("push", "apns", "tok-3", "timeout")),
        (H9 + 60, ("push", "fcm", "tok-4", None)),
        (H9 + 60.3, ("push", "fcm", "tok-4", 503)),
        # Parked calls: one answered after wake, one timed out.
        (H10 + 100, ("park", "park-1", "start")),
        (H10 + 103, ("park", "park-1", "branch")),
        (H10 + 105, ("park", "park-1", ParkOutcome.ANSWERED_AFTER_WAKE)),
        (H10 + 200, ("park", "park-2", "start")),
        (H10 + 230, ("park", "park-2", ParkOutcome.TIMEOUT)),
    ]
    return sorted(steps, key=lambda step: step[0])


def _play(recorder: HistoryRecorder, time: float, step: object) -> list[HistoryRow]:
    match step:
        case ("push", str() as provider, str() as prid, None):
            return recorder.push_sent(
                aor=MOBILE, provider=provider, prid=prid, reason="call", call_id=None, now=time
            )
        case ("push", _, str() as prid, "timeout"):
            return recorder.push_timed_out(aor=MOBILE, prid=prid)
        case ("push", _, str() as prid, int() as status):
            return recorder.push_gateway_answered(aor=MOBILE, prid=prid, status=status, now=time)
        case ("park", str() as call_id, "start"):
            return recorder.call_parked(call_id=call_id, ruri=MOBILE, now=time)
        case ("park", str() as call_id, "branch"):
            return recorder.park_branch_added(call_id=call_id, now=time)
        case ("park", str() as call_id, ParkOutcome() as outcome):
            status = 200 if outcome is ParkOutcome.ANSWERED_AFTER_WAKE else 480
            return recorder.park_ended(call_id=call_id, outcome=outcome, status=status, now=time)
        case _:
            return recorder.record(step)  # type: ignore[arg-type]


def write_day(url: str) -> None:
    """Play the script; rows go through a coalescing queue into the repository, flushed
    every few facts as the write-behind queue would."""
    recorder = HistoryRecorder(line_of=line_of, local_domains=["example.com"], device_of=device_of)
    engine = make_engine(url, pool_size=1)
    repository = SqlHistoryRepository(engine)
    pending: dict[HistoryKey, HistoryRow] = {}
    minute = H8
    try:
        for count, (time, step) in enumerate(_script()):
            while minute <= time and minute < DAY + 12 * 3600:
                for sample in recorder.sample_lines(minute, [LINE, LINE2]):
                    pending[history_key(sample)] = sample
                minute += 60
            for row in _play(recorder, time, step):
                pending.pop(history_key(row), None)
                pending[history_key(row)] = row
            if count % 7 == 6:
                repository.upsert(list(pending.values()))
                pending.clear()
        while minute < DAY + 12 * 3600:
            for sample in recorder.sample_lines(minute, [LINE, LINE2]):
                pending[history_key(sample)] = sample
            minute += 60
        repository.upsert(list(pending.values()))
    finally:
        engine.dispose()


@pytest.fixture
def day_url(migrated_db_url: str) -> str:
    write_day(migrated_db_url)
    return migrated_db_url


@pytest.fixture
def engine(day_url: str) -> Iterator[Engine]:
    engine = make_engine(day_url, pool_size=1)
    yield engine
    engine.dispose()


def report(engine: Engine, name: str, params: ReportParams = RANGE) -> list[tuple[object, ...]]:
    with engine.connect() as conn:
        return list(run_report(conn, name, params).rows)


def test_q1_line_calls(engine: Engine) -> None:
    assert report(engine, "q1") == [(LINE, 5, 2, 1, 1, 40.0, 8.8), (LINE2, 1, 1, 0, 0, 100.0, 10.4)]
    assert report(engine, "line-calls", ReportParams(RANGE.since_ms, RANGE.until_ms, LINE2)) == [
        (LINE2, 1, 1, 0, 0, 100.0, 10.4)
    ]


def test_q2_busy_hour(engine: Engine) -> None:
    h8, h10 = int(H8 * 1000), int(H10 * 1000)
    assert report(engine, "busy-hour") == [
        (LINE, h8, "2024-11-25T08:00:00Z", 1, 0.13),
        (LINE2, h10, "2024-11-25T10:00:00Z", 1, 0.17),
    ]


def test_q3_appearance_answers(engine: Engine) -> None:
    assert report(engine, "q3") == [
        (LINE, 1, 4, 1, 1, 5.0),
        (LINE, 2, 1, 1, 0, 5.0),
        (LINE2, 1, 1, 1, 0, 5.0),
    ]


def test_q4_seize_without_call(engine: Engine) -> None:
    assert report(engine, "q4") == [(MAC_A, LINE, 1, 5.0, 0), (MAC_A, LINE2, 1, 15.0, 1)]


def test_q5_holds(engine: Engine) -> None:
    assert report(engine, "q5") == [(LINE, 1, 60.0, 60.0, 0, 0), (LINE2, 1, 400.0, 400.0, 1, 0)]


def test_q6_pickups(engine: Engine) -> None:
    assert report(engine, "q6") == [(LINE, MAC_B, MAC_A, 1, 60.0)]


def test_q7_push_wakeups(engine: Engine) -> None:
    assert report(engine, "q7") == [
        ("apns", 3, 2, 66.7, 1, 0, 3000, 3500),
        ("fcm", 1, 0, 0.0, 0, 1, None, None),
    ]
    with pytest.raises(ReportError, match="no per-line"):
        report(engine, "q7", ReportParams(RANGE.since_ms, RANGE.until_ms, LINE))


def test_q8_parked_calls(engine: Engine) -> None:
    assert report(engine, "q8") == [
        (DAY_MS, "2024-11-25T00:00:00Z", "answered_after_wake", 1, 3.0, 5.0),
        (DAY_MS, "2024-11-25T00:00:00Z", "timeout", 1, None, None),
    ]


def test_reports_outside_the_range_are_empty(engine: Engine) -> None:
    before = ReportParams(DAY_MS - 86_400_000, DAY_MS)
    for name in REPORTS:
        assert report(engine, name, before) == []


def test_cdr_rows_and_kamailio_views(engine: Engine) -> None:
    with engine.connect() as conn:
        calls = conn.execute(select(tables.calls).order_by(tables.calls.c.started_ms)).mappings().all()
        assert [(r["sip_call_id"], r["disposition"], r["end_reason"]) for r in calls] == [
            ("call-a", "ANSWERED", "bye"),
            ("call-b", "NO ANSWER", "caller_cancel"),
            ("call-c", "ANSWERED", "bye"),
            ("call-d", "NO ANSWER", "ring_timeout"),
            ("call-e", "BUSY", "rejected"),
            ("call-f", "ANSWERED", "bye"),
        ]
        c = calls[2]
        assert (c["hold_count"], c["held_ms"], c["billable_ms"]) == (1, 60_000, 325_000)
        assert c["started_at"].replace(tzinfo=None).isoformat() == "2024-11-25T08:20:00"
        assert conn.execute(text("SELECT COUNT(*) FROM acc_cdrs")).scalar_one() == 6
        missed = conn.execute(text("SELECT callid, sip_code FROM missed_calls ORDER BY callid")).all()
        assert [tuple(r) for r in missed] == [("call-b", "487"), ("call-d", "480"), ("call-e", "486")]
        woken = conn.execute(
            select(func.count()).where(tables.registration_events.c.wakeup_id.is_not(None))
        ).scalar_one()
        assert woken == 2
        samples = conn.execute(select(func.count()).select_from(tables.line_samples)).scalar_one()
        assert samples == 2 * 4 * 60


def test_png_charts_are_valid_pngs(engine: Engine) -> None:
    with engine.connect() as conn:
        busy = busy_hour_png(hourly_traffic(conn, RANGE))
        latency = wake_latency_png(wake_latencies(conn, RANGE))
    for image in (busy, latency):
        assert image.startswith(PNG_SIGNATURE)
        assert len(image) > 10_000
    assert wake_latency_png([]).startswith(PNG_SIGNATURE)
    assert busy_hour_png([]).startswith(PNG_SIGNATURE)


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scaserver")
    commands.add_subparsers(parser.add_subparsers(dest="command"))
    return parser.parse_args(["report", *argv])


def test_report_command_writes_json_csv_table_and_png(
    day_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    since, until = "2024-11-25", "2024-11-26T00:00:00Z"
    assert (
        commands.run(
            _args("q6", "--since", since, "--until", until, "--format", "json"), database_url=day_url
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out) == {
        "report": "pickups",
        "title": "Held calls retrieved from another phone",
        "rows": [
            {
                "line_aor": LINE,
                "held_by_device": MAC_B,
                "retrieved_by_device": MAC_A,
                "pickups": 1,
                "avg_wait_s": 60.0,
            }
        ],
    }
    out = tmp_path / "holds.csv"
    argv = (
        "holds",
        "--since",
        since,
        "--until",
        until,
        "--format",
        "csv",
        "--output",
        str(out),
        "--db",
        day_url,
    )
    assert commands.run(_args(*argv)) == 0
    assert out.read_text().splitlines() == [
        "line_aor,holds,avg_hold_s,max_hold_s,holds_over_5min,still_held",
        f"{LINE},1,60.0,60.0,0,0",
        f"{LINE2},1,400.0,400.0,1,0",
    ]
    assert commands.run(_args("q1", "--since", since, "--until", until), database_url=day_url) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0] == "Per-line call counts"
    assert table[3].split() == [LINE, "5", "2", "1", "1", "40", "8.8"]
    png = tmp_path / "busy.png"
    png_argv = ("busy-hour", "--since", since, "--until", until, "--format", "png", "--output", str(png))
    assert commands.run(_args(*png_argv), database_url=day_url) == 0
    assert png.read_bytes().startswith(PNG_SIGNATURE)


def test_render_helpers_on_an_empty_result(engine: Engine) -> None:
    with engine.connect() as conn:
        empty = run_report(conn, "q5", ReportParams(0, 1))
    assert render_table(empty).endswith("(no rows)\n")
    assert render_csv(empty) == "line_aor,holds,avg_hold_s,max_hold_s,holds_over_5min,still_held\r\n"


def test_purge_deletes_only_rows_older_than_retention_in_batches(engine: Engine) -> None:
    def counts() -> dict[str, int]:
        with engine.connect() as conn:
            return {
                name: conn.execute(
                    select(func.count()).select_from(tables.metadata.tables[name])
                ).scalar_one()
                for name in (
                    "calls",
                    "appearance_events",
                    "line_samples",
                    "registration_events",
                    "push_wakeups",
                    "parked_calls",
                    "acc",
                )
            }

    before = counts()
    # The day is 10 days old: a 30-day retention keeps everything.
    assert purge(engine, RetentionPolicy.uniform(30), DAY + 10 * 86_400) == {
        "calls_closed": 0,
        **dict.fromkeys(before, 0),
    }
    assert counts() == before
    # Line samples kept 1 day, the rest 30: only the samples go, in batches of 100.
    policy = RetentionPolicy({**dict.fromkeys(before, 30), "line_samples": 1}, batch_size=100)
    assert purge(engine, policy, DAY + 10 * 86_400)["line_samples"] == 480
    assert counts() == {**before, "line_samples": 0}
    # Everything older than 5 days goes.
    deleted = purge(engine, RetentionPolicy.uniform(5, batch_size=7), DAY + 10 * 86_400)
    assert deleted == {"calls_closed": 0, **{name: n for name, n in before.items()}, "line_samples": 0}
    assert set(counts().values()) == {0}


def test_restart_mid_call_is_closed_as_server_restart_after_max_call_age(migrated_db_url: str) -> None:
    recorder = HistoryRecorder(line_of=line_of)
    engine = make_engine(migrated_db_url, pool_size=1)
    try:
        repository = SqlHistoryRepository(engine)
        repository.upsert(recorder.record(Call("stuck").forwarded(H8)))
        repository.upsert(recorder.record(Call("young").forwarded(H8 + 11 * 3600)))
        assert purge(engine, RetentionPolicy(), H8 + 12 * 3600 + 1)["calls_closed"] == 1
        with engine.connect() as conn:
            rows = conn.execute(
                select(
                    tables.calls.c.sip_call_id,
                    tables.calls.c.disposition,
                    tables.calls.c.end_reason,
                    tables.calls.c.duration_ms,
                ).order_by(tables.calls.c.sip_call_id)
            ).all()
        assert [tuple(r) for r in rows] == [
            ("stuck", "FAILED", "server_restart", 12 * 3600 * 1000 + 1000),
            ("young", "IN PROGRESS", None, None),
        ]
    finally:
        engine.dispose()


def test_repository_deletes_keyed_rows_and_refuses_event_keys(migrated_db_url: str) -> None:
    recorder = HistoryRecorder(line_of=line_of)
    engine = make_engine(migrated_db_url, pool_size=1)
    try:
        repository = SqlHistoryRepository(engine)
        rows = recorder.record(Call("gone").forwarded(H8)) + recorder.sample_lines(H8, [LINE])
        rows += recorder.push_sent(aor=MOBILE, provider="apns", prid="t", reason="call", call_id=None, now=H8)
        rows += recorder.call_parked(call_id="p", ruri=MOBILE, now=H8)
        repository.upsert(rows)
        repository.upsert(rows)  # a repeated batch changes nothing
        repository.delete([history_key(row) for row in rows])
        repository.delete([])
        with engine.connect() as conn:
            for name in ("calls", "line_samples", "push_wakeups", "parked_calls"):
                assert (
                    conn.execute(select(func.count()).select_from(tables.metadata.tables[name])).scalar_one()
                    == 0
                )
        with pytest.raises(ValueError, match="cannot be deleted"):
            repository.delete([("appearance_events", 1)])
    finally:
        engine.dispose()


def test_report_command_unwritable_output_exits_1(day_url: str, tmp_path: Path) -> None:
    for fmt in ("csv", "png"):
        name = "busy-hour" if fmt == "png" else "q1"
        argv = (name, "--format", fmt, "--output", str(tmp_path / "missing" / f"x.{fmt}"), "--db", day_url)
        assert commands.run(_args(*argv)) == 1
