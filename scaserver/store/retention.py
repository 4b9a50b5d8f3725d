"""The SQL of history retention (reporting.md section 3 rules 4 and 6).

:func:`purge_table` deletes rows older than a cutoff in batches (one transaction each) chosen
through the table's time index (``*_ms``; ``acc.time`` for the Kamailio-shaped table), so a
large purge never holds long locks; :func:`close_stale_calls` closes calls left ``IN PROGRESS``
by a restart.  The policy (which table keeps how many days) is the reporting layer's.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import ColumnElement, Engine, Table, delete, literal, select, tuple_, update

from scaserver.store import tables

__all__ = ["close_stale_calls", "purge_table"]


def _older_than(table: Table, cutoff_ms: int) -> ColumnElement[bool]:
    if table.name == "acc":
        return table.c.time < datetime.fromtimestamp(cutoff_ms / 1000, tz=UTC)
    column = {
        "calls": "started_ms",
        "appearance_events": "event_ms",
        "line_samples": "sample_ms",
        "registration_events": "event_ms",
        "push_wakeups": "sent_ms",
        "parked_calls": "parked_ms",
    }[table.name]
    return table.c[column] < cutoff_ms


def purge_table(engine: Engine, name: str, cutoff_ms: int, batch_size: int) -> int:
    """Delete the rows of history table ``name`` older than ``cutoff_ms``, ``batch_size`` rows per
    transaction; returns how many."""
    table = tables.metadata.tables[name]
    keys = [table.c.id] if "id" in table.c else [table.c.line_aor, table.c.sample_ms]
    target = keys[0] if len(keys) == 1 else tuple_(*keys)
    deleted = 0
    while True:
        chosen = select(*keys).where(_older_than(table, cutoff_ms)).limit(batch_size)
        with engine.begin() as conn:
            count = conn.execute(delete(table).where(target.in_(chosen))).rowcount
        deleted += count
        if count < batch_size:
            return deleted


def close_stale_calls(engine: Engine, now: float, max_call_age_s: float) -> int:
    """Close calls ``IN PROGRESS`` for longer than ``max_call_age_s`` as ``FAILED`` /
    ``server_restart`` (section 3 rule 6); returns how many."""
    now_ms = int(now * 1000)
    calls = tables.calls
    statement = (
        update(calls)
        .where(calls.c.disposition == "IN PROGRESS", calls.c.started_ms < now_ms - int(max_call_age_s * 1000))
        .values(
            disposition="FAILED",
            end_reason="server_restart",
            ended_at=datetime.fromtimestamp(now_ms / 1000, tz=UTC),
            duration_ms=literal(now_ms) - calls.c.started_ms,
            billable_ms=0,
        )
    )
    with engine.begin() as conn:
        return conn.execute(statement).rowcount
