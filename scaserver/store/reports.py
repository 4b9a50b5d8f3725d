"""The SQL of the report queries Q1-Q8 of reporting.md section 5, as SQLAlchemy Core over the views.

Each report is the spec's SQL with the time range and the optional line as bound
parameters; the statements are dialect-neutral (section 3 rules 2 and 3): buckets are integer
division of epoch milliseconds, numeric constants are SQL literals (so PostgreSQL sees the
same ``GROUP BY`` expression as in the select list and ``ROUND`` gets a ``numeric``), and
percentiles are left to Python.  :func:`report_rows` returns plain Python numbers whatever the
database (PostgreSQL ``numeric`` becomes ``int`` when integral, else ``float``).

The views are read through lightweight ``table()`` constructs: they are created by the
migration, not by ``tables.metadata``.  The reporting layer names the reports and shapes
their results; it asks this module for rows by spec id (``q1``...``q8``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Final, Protocol, TypeAlias

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    Integer,
    Select,
    String,
    and_,
    case,
    column,
    func,
    literal_column,
    select,
    table,
)
from sqlalchemy.sql.expression import TableClause

from scaserver.store import tables

__all__ = ["QUERIES", "HistoryConnection", "ReportRange", "hourly_traffic", "report_rows", "wake_latencies"]

#: What the report runner reads through: a connection of :func:`scaserver.store.engine.make_engine`'s engine.
HistoryConnection: TypeAlias = Connection


class ReportRange(Protocol):
    """The range ``[since_ms, until_ms)`` in epoch milliseconds (UTC) and an optional line AoR."""

    @property
    def since_ms(self) -> int: ...

    @property
    def until_ms(self) -> int: ...

    @property
    def line(self) -> str | None: ...


def _n(value: str) -> ColumnElement[int]:
    """A numeric SQL literal (not a bound parameter)."""
    return literal_column(value, Integer)


def _bucket(ms: ColumnElement[int], size: str) -> ColumnElement[int]:
    """``(ms / size) * size``: integer division of epoch ms, as in the spec's views."""
    return (ms.op("/")(_n(size))).op("*")(_n(size))


def _count_if(condition: ColumnElement[bool]) -> ColumnElement[int]:
    return func.sum(case((condition, _n("1")), else_=_n("0")))


# -- views (section 4.2) ------------------------------------------------------------------

V_LINE_HOURLY: Final = table(
    "v_line_hourly",
    column("line_aor", String),
    column("hour_ms", BigInteger),
    column("offered", BigInteger),
    column("answered", BigInteger),
    column("abandoned", BigInteger),
    column("unanswered", BigInteger),
    column("busy", BigInteger),
    column("failed", BigInteger),
    column("avg_answer_ms", BigInteger),
    column("billable_ms", BigInteger),
)

V_HOLD_INTERVALS: Final = table(
    "v_hold_intervals",
    column("line_aor", String),
    column("appearance_index", Integer),
    column("call_uuid", String),
    column("hold_kind", String),
    column("held_by_contact", String),
    column("held_by_device", String),
    column("hold_start_ms", BigInteger),
    column("hold_end_ms", BigInteger),
    column("held_ms", BigInteger),
    column("ended_as", String),
    column("retrieved_by_contact", String),
    column("retrieved_by_device", String),
    column("retrieved_elsewhere", Integer),
)

V_SEIZE_WITHOUT_CALL: Final = table(
    "v_seize_without_call",
    column("line_aor", String),
    column("appearance_index", Integer),
    column("owner_contact", String),
    column("owner_device", String),
    column("seized_ms", BigInteger),
    column("released_ms", BigInteger),
    column("seized_for_ms", BigInteger),
    column("ended_as", String),
)

V_PUSH_DAILY: Final = table(
    "v_push_daily",
    column("provider", String),
    column("day_ms", BigInteger),
    column("sent", BigInteger),
    column("woke", BigInteger),
    column("timed_out", BigInteger),
    column("gateway_errors", BigInteger),
    column("avg_wake_ms", BigInteger),
    column("max_wake_ms", BigInteger),
)

VIEWS: Final[Mapping[str, TableClause]] = {
    view.name: view for view in (V_LINE_HOURLY, V_HOLD_INTERVALS, V_SEIZE_WITHOUT_CALL, V_PUSH_DAILY)
}


def _in_range(col: ColumnElement[int], params: ReportRange) -> ColumnElement[bool]:
    return and_(col >= params.since_ms, col < params.until_ms)


def _line(col: ColumnElement[str], params: ReportRange) -> list[ColumnElement[bool]]:
    return [] if params.line is None else [col == params.line]


# -- Q1-Q8 (section 5) --------------------------------------------------------------------


def q1_line_calls(params: ReportRange) -> Select[tuple[object, ...]]:
    """Q1: per-line call counts (offered / answered / abandoned / unanswered, talk minutes)."""
    h = V_LINE_HOURLY.c
    offered = func.sum(h.offered).label("offered")
    return (
        select(
            h.line_aor,
            offered,
            func.sum(h.answered).label("answered"),
            func.sum(h.abandoned).label("abandoned"),
            func.sum(h.unanswered).label("unanswered"),
            func.round(
                _n("100.0") * func.sum(h.answered) / func.nullif(func.sum(h.offered), _n("0")), _n("1")
            ).label("answer_pct"),
            func.round(func.sum(h.billable_ms) / _n("60000.0"), _n("1")).label("talk_minutes"),
        )
        .where(_in_range(h.hour_ms, params), *_line(h.line_aor, params))
        .group_by(h.line_aor)
        .order_by(offered.desc(), h.line_aor)
    )


def _hourly_samples(params: ReportRange) -> Select[tuple[object, ...]]:
    s = tables.line_samples.c
    hour = _bucket(s.sample_ms, "3600000")
    load = func.avg(s.active_calls + s.held_calls)
    return (
        select(
            s.line_aor,
            hour.label("hour_ms"),
            func.max(s.busy_appearances).label("peak_busy"),
            func.round(load, _n("2")).label("erlangs"),
            func.row_number()
            .over(partition_by=s.line_aor, order_by=(load.desc(), func.max(s.busy_appearances).desc()))
            .label("rn"),
        )
        .where(_in_range(s.sample_ms, params), *_line(s.line_aor, params))
        .group_by(s.line_aor, hour)
    )


def q2_busy_hour(params: ReportRange) -> Select[tuple[object, ...]]:
    """Q2: each line's busy hour (highest Erlangs) and its peak of busy appearances."""
    inner = _hourly_samples(params).subquery("t")
    return (
        select(inner.c.line_aor, inner.c.hour_ms, inner.c.peak_busy, inner.c.erlangs)
        .where(inner.c.rn == _n("1"))
        .order_by(inner.c.line_aor)
    )


def q3_appearance_answers(params: ReportRange) -> Select[tuple[object, ...]]:
    """Q3: calls answered and abandoned per appearance index."""
    c = tables.calls.c
    return (
        select(
            c.line_aor,
            c.appearance_index,
            func.count().label("calls"),
            _count_if(c.disposition == "ANSWERED").label("answered"),
            _count_if(c.end_reason == "caller_cancel").label("abandoned"),
            func.round(
                func.avg(case((c.disposition == "ANSWERED", c.answer_ms))) / _n("1000.0"), _n("1")
            ).label("avg_answer_s"),
        )
        .where(
            c.direction == "inbound",
            c.line_aor.is_not(None),
            c.disposition != "IN PROGRESS",
            _in_range(c.started_ms, params),
            *_line(c.line_aor, params),
        )
        .group_by(c.line_aor, c.appearance_index)
        .order_by(c.line_aor, c.appearance_index)
    )


def q4_seize_without_call(params: ReportRange) -> Select[tuple[object, ...]]:
    """Q4: seizes without a call per device (stuck keys, aborted dials)."""
    v = V_SEIZE_WITHOUT_CALL.c
    device = func.coalesce(v.owner_device, v.owner_contact)
    seizes = func.count().label("seizes_without_call")
    return (
        select(
            device.label("device"),
            v.line_aor,
            seizes,
            func.round(func.avg(v.seized_for_ms) / _n("1000.0"), _n("1")).label("avg_seized_s"),
            _count_if(v.seized_for_ms >= _n("15000")).label("expired_at_limit"),
        )
        .where(_in_range(v.seized_ms, params), *_line(v.line_aor, params))
        .group_by(device, v.line_aor)
        .order_by(seizes.desc(), device, v.line_aor)
    )


def q5_holds(params: ReportRange) -> Select[tuple[object, ...]]:
    """Q5: hold durations per line, holds longer than five minutes, calls still held."""
    v = V_HOLD_INTERVALS.c
    holds = func.count().label("holds")
    return (
        select(
            v.line_aor,
            holds,
            func.round(func.avg(v.held_ms) / _n("1000.0"), _n("1")).label("avg_hold_s"),
            func.round(func.max(v.held_ms) / _n("1000.0"), _n("1")).label("max_hold_s"),
            _count_if(v.held_ms > _n("300000")).label("holds_over_5min"),
            _count_if(v.hold_end_ms.is_(None)).label("still_held"),
        )
        .where(_in_range(v.hold_start_ms, params), *_line(v.line_aor, params))
        .group_by(v.line_aor)
        .order_by(holds.desc(), v.line_aor)
    )


def q6_pickups(params: ReportRange) -> Select[tuple[object, ...]]:
    """Q6: held calls retrieved from another phone, per (holder, retriever) pair."""
    v = V_HOLD_INTERVALS.c
    pickups = func.count().label("pickups")
    return (
        select(
            v.line_aor,
            v.held_by_device,
            v.retrieved_by_device,
            pickups,
            func.round(func.avg(v.held_ms) / _n("1000.0"), _n("1")).label("avg_wait_s"),
        )
        .where(
            v.retrieved_elsewhere == _n("1"),
            _in_range(v.hold_start_ms, params),
            *_line(v.line_aor, params),
        )
        .group_by(v.line_aor, v.held_by_device, v.retrieved_by_device)
        .order_by(pickups.desc(), v.line_aor, v.held_by_device, v.retrieved_by_device)
    )


def q7_push_wakeups(params: ReportRange) -> Select[tuple[object, ...]]:
    """Q7: push wake-up success rate and latency per provider."""
    v = V_PUSH_DAILY.c
    return (
        select(
            v.provider,
            func.sum(v.sent).label("sent"),
            func.sum(v.woke).label("woke"),
            func.round(
                _n("100.0") * func.sum(v.woke) / func.nullif(func.sum(v.sent), _n("0")), _n("1")
            ).label("wake_pct"),
            func.sum(v.timed_out).label("timed_out"),
            func.sum(v.gateway_errors).label("gateway_errors"),
            func.round(func.sum(v.avg_wake_ms * v.woke) / func.nullif(func.sum(v.woke), _n("0"))).label(
                "avg_wake_ms"
            ),
            func.max(v.max_wake_ms).label("worst_wake_ms"),
        )
        .where(_in_range(v.day_ms, params))
        .group_by(v.provider)
        .order_by(v.provider)
    )


def q8_parked_calls(params: ReportRange) -> Select[tuple[object, ...]]:
    """Q8: parked-call outcomes per day (``--line`` selects the parked Request-URI)."""
    p = tables.parked_calls.c
    day = _bucket(p.parked_ms, "86400000")
    calls = func.count().label("calls")
    day_ms = day.label("day_ms")
    return (
        select(
            day_ms,
            p.outcome,
            calls,
            func.round(func.avg(p.first_branch_ms) / _n("1000.0"), _n("1")).label("avg_first_branch_s"),
            func.round(func.avg(p.answered_ms) / _n("1000.0"), _n("1")).label("avg_answer_s"),
        )
        .where(p.outcome != "pending", _in_range(p.parked_ms, params), *_line(p.ruri, params))
        .group_by(day, p.outcome)
        .order_by(day_ms, calls.desc(), p.outcome)
    )


#: The query of each report by its spec id.
QUERIES: Final[Mapping[str, Callable[[ReportRange], Select[tuple[object, ...]]]]] = {
    "q1": q1_line_calls,
    "q2": q2_busy_hour,
    "q3": q3_appearance_answers,
    "q4": q4_seize_without_call,
    "q5": q5_holds,
    "q6": q6_pickups,
    "q7": q7_push_wakeups,
    "q8": q8_parked_calls,
}


def _plain(value: object) -> object:
    if isinstance(value, Decimal):
        return int(value) if value.as_tuple().exponent == 0 else float(value)
    return value


def _rows(conn: Connection, statement: Select[tuple[object, ...]]) -> tuple[list[str], list[list[object]]]:
    result = conn.execute(statement)
    return list(result.keys()), [[_plain(v) for v in row] for row in result]


def report_rows(conn: Connection, spec_id: str, params: ReportRange) -> tuple[list[str], list[list[object]]]:
    """Column names and rows of report ``spec_id`` over ``params``, values as plain Python scalars."""
    return _rows(conn, QUERIES[spec_id](params))


def hourly_traffic(conn: Connection, params: ReportRange) -> list[tuple[str, int, int, float]]:
    """Every (line, hour) of the range: ``(line_aor, hour_ms, peak_busy, erlangs)``, the data
    behind Q2 and its chart."""
    inner = _hourly_samples(params).subquery("t")
    statement = select(inner.c.line_aor, inner.c.hour_ms, inner.c.peak_busy, inner.c.erlangs).order_by(
        inner.c.line_aor, inner.c.hour_ms
    )
    return [
        (str(line), int(hour), int(peak), float(erlangs))
        for line, hour, peak, erlangs in conn.execute(statement)
    ]


def wake_latencies(conn: Connection, params: ReportRange) -> list[tuple[str, int]]:
    """``(provider, registered_ms)`` of every successful wake-up sent in the range: the
    distribution behind Q7's averages (percentiles are computed in Python, section 3 rule 3)."""
    w = tables.push_wakeups.c
    statement = (
        select(w.provider, w.registered_ms)
        .where(w.outcome == "registered", w.registered_ms.is_not(None), _in_range(w.sent_ms, params))
        .order_by(w.provider, w.registered_ms)
    )
    return [(str(provider), int(ms)) for provider, ms in conn.execute(statement)]
