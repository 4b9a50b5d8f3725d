"""The reports Q1-Q8 of reporting.md section 5: their names, questions and results.

Each report is the spec's SQL with the time range and the optional line as bound
parameters; the statements themselves live in :mod:`scaserver.store.reports` (SQLAlchemy
stays in the store), which answers by spec id with plain Python numbers whatever the
database.  ``run_report`` adds a UTC ISO-8601 rendering after each ``hour_ms``/``day_ms``
bucket column; percentiles are left to Python (:func:`percentile`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Final

import attrs

from scaserver.store import reports as sql
from scaserver.store.reports import HistoryConnection

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


@attrs.frozen
class Report:
    """One report of section 5: its names and the question it answers (its query is the store's,
    by ``spec_id``)."""

    name: str
    spec_id: str
    title: str
    question: str
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
        ),
        Report(
            "busy-hour",
            "q2",
            "Busy hour per line",
            "When is each line's busy hour, and how many appearances does it really need?",
            chart=True,
        ),
        Report(
            "appearance-answers",
            "q3",
            "Calls answered and abandoned per appearance index",
            "Do callers that land on appearance 2+ get answered as often as on appearance 1?",
        ),
        Report(
            "seize-without-call",
            "q4",
            "Seize-without-call per device",
            "Which phones seize appearances without placing a call?",
        ),
        Report(
            "holds",
            "q5",
            "Hold durations per line",
            "How long do callers wait on hold, and which lines leave callers on hold too long?",
        ),
        Report(
            "pickups",
            "q6",
            "Held calls retrieved from another phone",
            "How often does a colleague pick up a call someone else put on hold, and between which desks?",
        ),
        Report(
            "push-wakeups",
            "q7",
            "Push wake-up success rate and latency per provider",
            "Are mobile softphones actually waking for calls, and how long does it take?",
            line_filter=False,
            chart=True,
        ),
        Report(
            "parked-calls",
            "q8",
            "Parked-call outcomes per day",
            "How do parked calls for sleeping mobiles end: answered after wake, timeout, caller gave up?",
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


def _iso(ms: object) -> str | None:
    if not isinstance(ms, int):
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_BUCKETS: Final = {"hour_ms": "hour", "day_ms": "day"}


def run_report(conn: HistoryConnection, report: Report | str, params: ReportParams) -> ReportResult:
    """Run one report; raises :class:`ReportError` for a ``line`` the report cannot filter by."""
    if isinstance(report, str):
        report = resolve(report)
    if params.line is not None and not report.line_filter:
        raise ReportError(f"report {report.name} ({report.spec_id}) has no per-line breakdown")
    names, rows = sql.report_rows(conn, report.spec_id, params)
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


def hourly_traffic(conn: HistoryConnection, params: ReportParams) -> list[tuple[str, int, int, float]]:
    """Every (line, hour) of the range: ``(line_aor, hour_ms, peak_busy, erlangs)``, the data
    behind Q2 and its chart."""
    return sql.hourly_traffic(conn, params)


def wake_latencies(conn: HistoryConnection, params: ReportParams) -> list[tuple[str, int]]:
    """``(provider, registered_ms)`` of every successful wake-up sent in the range: the
    distribution behind Q7's averages (percentiles are computed in Python, section 3 rule 3)."""
    return sql.wake_latencies(conn, params)


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """The ``fraction`` percentile (0..1) of ``values`` by linear interpolation; None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
