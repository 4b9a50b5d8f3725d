"""Thread CPU of one write-behind flush, per row, in process: the repositories' ``upsert`` as
the flush thread runs it (``edge/writebehind.py`` calls the sink on a pool thread).

    python -m bench.flushcost [--count N] [--repeat R] [--table location|registration_events|
                              appearance_events|all] [--url URL] [--profile] [--top K]

The rows are those the core produces: the ``location`` rows of ``count`` REGISTERs that
refresh a binding (``bench.corecalls``' ``register-refresh``: the latest binding of each key,
as the write-behind queue coalesces them), the ``registration_events`` rows the history
feed's mapper makes of those REGISTERs, and the ``appearance_events`` rows of seize cycles
(two per cycle), kept from a run of the core.  Each measure is ``time.thread_time`` around
one ``upsert`` of the ``count`` rows (the ``location`` rows are written once before, so
they are refreshed, as under load; the history rows are inserted), min over ``--repeat``,
the cyclic garbage collector off.  ``--url`` names the database (default: a new SQLite file;
a PostgreSQL URL names an empty database, e.g. one of the throwaway cluster of
``tests/conftest.py``), migrated first.  ``--profile`` also prints the top ``--top``
functions by own time of one more upsert.  Each figure is also given without the thread CPU
spent in the driver's ``executemany`` (``DriverClock``): what is left is the Python that holds
the GIL for the whole of it.

Run it with ``PYTHONPATH`` on the tree to measure; alternate trees in the same conditions.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import gc
import io
import pstats
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Dialect

from bench.corecalls import (
    DOMAIN,
    HISTORY_FACTS,
    REGISTRANT,
    Driver,
    refresh_texts,
    register_members,
    seize_run,
)
from scaserver.registrar.binding import Binding, BindingAdded, BindingRefreshed
from scaserver.reporting.history import HistoryRecorder
from scaserver.store.engine import make_engine
from scaserver.store.history import (
    AppearanceEventRecord,
    HistoryRow,
    RegistrationEventRecord,
    SqlHistoryRepository,
)
from scaserver.store.migrate import upgrade
from scaserver.store.registrations import SqlBindingRepository

TABLES = ("location", "registration_events", "appearance_events")


def register_facts(count: int) -> list[object]:
    """The bus facts of ``count`` REGISTERs refreshing a binding each."""
    driver = Driver()
    register_members(driver, range(count))
    facts: list[object] = []
    driver.facts = facts
    for text in refresh_texts(count):
        driver.receive(text, REGISTRANT)
        driver.advance(0.0004)
    return facts


def refreshed_bindings(facts: list[object], count: int) -> list[Binding]:
    """The latest binding of each key among ``facts``, at most ``count``."""
    bindings = [f.binding for f in facts if isinstance(f, (BindingAdded, BindingRefreshed))]
    return list({b.key: b for b in bindings}.values())[:count]


def history_rows(facts: list[object], kind: type[HistoryRow], count: int) -> list[HistoryRow]:
    """The rows of ``kind`` the history feed's mapper makes of ``facts``, at most ``count``."""
    recorder = HistoryRecorder(line_of=lambda aor: aor, local_domains=[DOMAIN])
    rows = [row for fact in facts if isinstance(fact, HISTORY_FACTS) for row in recorder.record(fact)]
    return [row for row in rows if isinstance(row, kind)][:count]


def seize_facts(count: int) -> list[object]:
    """The bus facts of ``count`` seize cycles, each on its own line."""
    return seize_run(count)[1]


class DriverClock:
    """Thread CPU spent in the driver's ``executemany`` (binding each row's parameters, and
    running the statement: SQLite releases the GIL while a row's statement steps, psycopg
    while it waits for the server), counted by wrapping the dialect's ``do_executemany``."""

    def __init__(self, dialect: Dialect) -> None:
        self.seconds = 0.0
        self._run = dialect.do_executemany
        dialect.do_executemany = self._timed  # type: ignore[method-assign]

    def _timed(self, cursor: Any, statement: str, parameters: Any, context: Any = None) -> None:
        began = time.thread_time()
        try:
            self._run(cursor, statement, parameters, context)
        finally:
            self.seconds += time.thread_time() - began


def thread_cpu(write: Callable[[], None], repeat: int, driver: DriverClock) -> tuple[float, float]:
    """Min over ``repeat`` of the thread CPU seconds of ``write()``, the collector off, and
    of the part of it outside the driver's ``executemany``."""
    best, outside = float("inf"), float("inf")
    for _ in range(repeat):
        gc.collect()
        gc.disable()
        try:
            driver.seconds = 0.0
            began = time.thread_time()
            write()
            spent = time.thread_time() - began
            best, outside = min(best, spent), min(outside, spent - driver.seconds)
        finally:
            gc.enable()
    return best, outside


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=2500)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--table", choices=(*TABLES, "all"), default="all")
    parser.add_argument("--url", default=None)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args(argv)
    url = args.url or f"sqlite:///{tempfile.mkdtemp(prefix='flushcost-')}/flush.db"
    upgrade(url)
    engine = make_engine(url)
    driver = DriverClock(engine.dialect)
    chosen = TABLES if args.table == "all" else (args.table,)
    facts = register_facts(args.count) if {"location", "registration_events"} & set(chosen) else []
    for table in chosen:
        write: Callable[[], None]
        if table == "location":
            latest = refreshed_bindings(facts, args.count)
            write = functools.partial(SqlBindingRepository(engine).upsert, latest)
            write()  # refreshed from now on, as under load
            rows = len(latest)
        else:
            kind = RegistrationEventRecord if table == "registration_events" else AppearanceEventRecord
            source = facts if table == "registration_events" else seize_facts((args.count + 1) // 2)
            records = history_rows(source, kind, args.count)
            write = functools.partial(SqlHistoryRepository(engine).upsert, records)
            write()  # the statement compiled and cached, as after the first flush
            rows = len(records)
        seconds, outside = thread_cpu(write, args.repeat, driver)
        print(
            f"{table:20} {engine.dialect.name:10} {rows} rows: {seconds * 1e3:7.2f} ms thread CPU, "
            f"{seconds / rows * 1e6:6.2f} us per row, {outside / rows * 1e6:6.2f} outside the "
            f"driver's executemany (min of {args.repeat})"
        )
        if args.profile:
            profile = cProfile.Profile()
            profile.enable()
            write()
            profile.disable()
            out = io.StringIO()
            pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(args.top)
            print(out.getvalue())
    engine.dispose()


if __name__ == "__main__":
    main()
