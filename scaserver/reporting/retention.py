"""Retention of reporting history (reporting.md section 3 rules 4 and 6).

Caller numbers are personal data: :func:`purge` deletes rows older than each table's
retention, in batches (default 10 000 rows, one transaction each) chosen through the table's
time index (``*_ms``; ``acc.time`` for the Kamailio-shaped table), so a large purge never
holds long locks.  It also closes calls left ``IN PROGRESS`` by a restart: after
``max_call_age_s`` (default 12 h) such a row becomes ``FAILED`` / ``server_restart``.

The SQL of each step is :mod:`scaserver.store.retention`'s.  Blocking: the edge runs it daily
in the database thread pool.
"""

from __future__ import annotations

from typing import Final

import attrs

from scaserver.store.engine import Engine
from scaserver.store.retention import close_stale_calls, purge_table

__all__ = ["DEFAULT_RETENTION_DAYS", "RetentionPolicy", "purge"]

DEFAULT_RETENTION_DAYS: Final = 90
DAY_MS: Final = 86_400_000

#: Each table and its time column (epoch ms, except ``acc.time``).
HISTORY_TABLES: Final = (
    "calls",
    "appearance_events",
    "line_samples",
    "registration_events",
    "push_wakeups",
    "parked_calls",
    "acc",
)


@attrs.frozen
class RetentionPolicy:
    """Days of history kept per table (``reporting.retention_days``, default 90 for all)."""

    days: dict[str, int] = attrs.field(factory=lambda: dict.fromkeys(HISTORY_TABLES, DEFAULT_RETENTION_DAYS))
    batch_size: int = 10_000
    max_call_age_s: float = 12 * 3600.0

    def __attrs_post_init__(self) -> None:
        unknown = set(self.days) - set(HISTORY_TABLES)
        if unknown:
            raise ValueError(f"no retention for unknown history tables {sorted(unknown)}")
        if any(days < 1 for days in self.days.values()):
            raise ValueError("retention must be at least one day")
        if self.batch_size < 1 or self.max_call_age_s <= 0:
            raise ValueError("batch_size and max_call_age_s must be positive")

    @classmethod
    def uniform(
        cls, days: int, *, batch_size: int = 10_000, max_call_age_s: float = 12 * 3600.0
    ) -> RetentionPolicy:
        """The same retention for every table."""
        return cls(dict.fromkeys(HISTORY_TABLES, days), batch_size, max_call_age_s)


def purge(engine: Engine, policy: RetentionPolicy, now: float) -> dict[str, int]:
    """Apply ``policy`` at time ``now`` (epoch seconds); returns rows changed per table
    (``calls_closed`` counts the stale calls closed)."""
    now_ms = int(now * 1000)
    result = {"calls_closed": close_stale_calls(engine, now, policy.max_call_age_s)}
    for name in HISTORY_TABLES:
        cutoff_ms = now_ms - policy.days.get(name, DEFAULT_RETENTION_DAYS) * DAY_MS
        result[name] = purge_table(engine, name, cutoff_ms, policy.batch_size)
    return result
