"""The report queries Q1-Q8 of reporting.md section 5, as SQLAlchemy Core over the views.

Each report is the spec's SQL with the time range and the optional line as bound
parameters; the statements are dialect-neutral (section 3 rules 2 and 3): buckets are integer
division of epoch milliseconds, numeric constants are SQL literals (so PostgreSQL sees the
same ``GROUP BY`` expression as in the select list and ``ROUND`` gets a ``numeric``), and
percentiles are left to Python.  ``run_report`` returns plain Python numbers whatever the
database (PostgreSQL ``numeric`` becomes ``int`` when integral, else ``float``), and adds a UTC
ISO-8601 rendering after each ``hour_ms``/``day_ms`` bucket column.

The views are read through lightweight ``table()`` constructs: they are created by the
migration, not by ``tables.metadata``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Final

import attrs
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

__all__ = [
    "REPORTS",
    "Report",
    "ReportError",
    "ReportParams",
    "ReportResult",
    "hourly_traffic",
    "resolve",
    "run_report",
    "wake_latencies",
]


class ReportError(ValueError):
    """A report asked for with parameters it cannot take (unknown name, a line for Q7...)."""


@attrs.frozen
class ReportParams:
    """The range ``[since_ms, until_ms)`` in epoch milliseconds (UTC) and an optional line AoR."""

    since_ms: int
    until_ms: int
    line: str | None = None

    def __attrs_post_init__(self) -> None:
        if self.until_ms <= self.since_ms:
            raise ReportError("the report range is empty: --until must be after --since")


@attrs.frozen
class ReportResult:
    """Column names and rows of one report, values as plain Python scalars."""

    name: str
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[object, ...], ...]

    def as_dicts(self) -> list[dict[str, object]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


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


def _in_range(col: ColumnElement[int], params: ReportParams) -> ColumnElement[bool]:
    return and_(col >= params.since_ms, col < params.until_ms)


def _line(col: ColumnElement[str], params: ReportParams) -> list[ColumnElement[bool]]:
    return [] if params.line is None else [col == params.line]


# -- Q1-Q8 (section 5) --------------------------------------------------------------------


def q1_line_calls(params: ReportParams) -> Select[tuple[object, ...]]:
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


def _hourly_samples(params: ReportParams) -> Select[tuple[object, ...]]:
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


def q2_busy_hour(params: ReportParams) -> Select[tuple[object, ...]]:
    """Q2: each line's busy hour (highest Erlangs) and its peak of busy appearances."""
    inner = _hourly_samples(params).subquery("t")
    return (
        select(inner.c.line_aor, inner.c.hour_ms, inner.c.peak_busy, inner.c.erlangs)
        .where(inner.c.rn == _n("1"))
        .order_by(inner.c.line_aor)
    )


def q3_appearance_answers(params: ReportParams) -> Select[tuple[object, ...]]:
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


def q4_seize_without_call(params: ReportParams) -> Select[tuple[object, ...]]:
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


def q5_holds(params: ReportParams) -> Select[tuple[object, ...]]:
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


def q6_pickups(params: ReportParams) -> Select[tuple[object, ...]]:
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


def q7_push_wakeups(params: ReportParams) -> Select[tuple[object, ...]]:
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


def q8_parked_calls(params: ReportParams) -> Select[tuple[object, ...]]:
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


@attrs.frozen
class Report:
    """One report of section 5: its names, the question it answers and its query."""

    name: str
    spec_id: str
    title: str
    question: str
    query: Callable[[ReportParams], Select[tuple[object, ...]]]
    line_filter: bool = True
    chart: bool = False


REPORTS: Final[Mapping[str, Report]] = {
    r.name: r
    for r in (
        Report(
            "line-calls",
            "q1",
            "Per-line call counts",
            "Which shared lines are busiest, and how many callers hang up before anyone answers?",
            q1_line_calls,
        ),
        Report(
            "busy-hour",
            "q2",
            "Busy hour per line",
            "When is each line's busy hour, and how many appearances does it really need?",
            q2_busy_hour,
            chart=True,
        ),
        Report(
            "appearance-answers",
            "q3",
            "Calls answered and abandoned per appearance index",
            "Do callers that land on appearance 2+ get answered as often as on appearance 1?",
            q3_appearance_answers,
        ),
        Report(
            "seize-without-call",
            "q4",
            "Seize-without-call per device",
            "Which phones seize appearances without placing a call?",
            q4_seize_without_call,
        ),
        Report(
            "holds",
            "q5",
            "Hold durations per line",
            "How long do callers wait on hold, and which lines leave callers on hold too long?",
            q5_holds,
        ),
        Report(
            "pickups",
            "q6",
            "Held calls retrieved from another phone",
            "How often does a colleague pick up a call someone else put on hold, and between which desks?",
            q6_pickups,
        ),
        Report(
            "push-wakeups",
            "q7",
            "Push wake-up success rate and latency per provider",
            "Are mobile softphones actually waking for calls, and how long does it take?",
            q7_push_wakeups,
            line_filter=False,
            chart=True,
        ),
        Report(
            "parked-calls",
            "q8",
            "Parked-call outcomes per day",
            "How do parked calls for sleeping mobiles end: answered after wake, timeout, caller gave up?",
            q8_parked_calls,
        ),
    )
}


def resolve(name: str) -> Report:
    """The report called ``name`` (``line-calls``...) or by its spec id (``q1``...)."""
    key = name.lower()
    for report in REPORTS.values():
        if key in (report.name, report.spec_id):
            return report
    known = ", ".join(f"{r.name} ({r.spec_id})" for r in REPORTS.values())
    raise ReportError(f"unknown report {name!r}; known reports: {known}")


def _plain(value: object) -> object:
    if isinstance(value, Decimal):
        return int(value) if value.as_tuple().exponent == 0 else float(value)
    return value


def _iso(ms: object) -> str | None:
    if not isinstance(ms, int):
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_BUCKETS: Final = {"hour_ms": "hour", "day_ms": "day"}


def _rows(conn: Connection, statement: Select[tuple[object, ...]]) -> tuple[list[str], list[list[object]]]:
    result = conn.execute(statement)
    return list(result.keys()), [[_plain(v) for v in row] for row in result]


def run_report(conn: Connection, report: Report | str, params: ReportParams) -> ReportResult:
    """Run one report; raises :class:`ReportError` for a ``line`` the report cannot filter by."""
    if isinstance(report, str):
        report = resolve(report)
    if params.line is not None and not report.line_filter:
        raise ReportError(f"report {report.name} ({report.spec_id}) has no per-line breakdown")
    names, rows = _rows(conn, report.query(params))
    columns: list[str] = []
    for name in names:
        columns.append(name)
        if name in _BUCKETS:
            columns.append(_BUCKETS[name])
    out: list[tuple[object, ...]] = []
    for row in rows:
        values: list[object] = []
        for name, value in zip(names, row, strict=True):
            values.append(value)
            if name in _BUCKETS:
                values.append(_iso(value))
        out.append(tuple(values))
    return ReportResult(report.name, report.title, tuple(columns), tuple(out))


def hourly_traffic(conn: Connection, params: ReportParams) -> list[tuple[str, int, int, float]]:
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


def wake_latencies(conn: Connection, params: ReportParams) -> list[tuple[str, int]]:
    """``(provider, registered_ms)`` of every successful wake-up sent in the range: the
    distribution behind Q7's averages (percentiles are computed in Python, section 3 rule 3)."""
    w = tables.push_wakeups.c
    statement = (
        select(w.provider, w.registered_ms)
        .where(w.outcome == "registered", w.registered_ms.is_not(None), _in_range(w.sent_ms, params))
        .order_by(w.provider, w.registered_ms)
    )
    return [(str(provider), int(ms)) for provider, ms in conn.execute(statement)]


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """The ``fraction`` percentile (0..1) of ``values`` by linear interpolation; None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
