"""``scaserver report NAME [--since] [--until] [--line] [--format] [--output] [--db URL]``.

``add_subparsers(subparsers)`` adds the ``report`` command to the ``scaserver`` parser;
``run(args, database_url=...)`` executes it.  The CLI resolves ``--config`` (this package
sits below the configuration layer) and passes ``[database] url`` as ``database_url``;
``--db`` wins over it.

Times: ``--since``/``--until`` take an ISO-8601 date or date-time (UTC unless it carries an
offset) or epoch milliseconds; the default range is the seven days before now.  ``--format
png`` draws the chart of ``busy-hour`` or ``push-wakeups`` and needs ``--output``.

Exit status: 0 on success, 1 when the database fails, 2 for unusable arguments.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TextIO

from scaserver.reporting.output import (
    Format,
    busy_hour_png,
    render_csv,
    render_json,
    render_table,
    wake_latency_png,
)
from scaserver.reporting.reports import (
    REPORTS,
    ReportError,
    ReportParams,
    hourly_traffic,
    resolve,
    run_report,
    wake_latencies,
)
from scaserver.store.engine import DatabaseError, make_engine

__all__ = ["DEFAULT_RANGE_DAYS", "add_subparsers", "parse_instant", "run"]

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2
DEFAULT_RANGE_DAYS: Final = 7


def add_subparsers(subparsers: argparse._SubParsersAction[Any]) -> argparse.ArgumentParser:
    """Add ``report`` to the ``scaserver`` command's sub-commands; returns its parser."""
    names = ", ".join(f"{r.name} ({r.spec_id})" for r in REPORTS.values())
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "report", help="run a report over the history tables", description=f"Reports: {names}."
    )
    parser.add_argument("name", metavar="NAME", help="report name or spec id (q1..q8)")
    parser.add_argument(
        "--since", metavar="TIME", help="start (ISO date/time or epoch ms; default: 7 days ago)"
    )
    parser.add_argument("--until", metavar="TIME", help="end, exclusive (default: now)")
    parser.add_argument("--line", metavar="AOR", help="only this shared line (sip:user@domain)")
    parser.add_argument("--format", choices=[f.value for f in Format], default=Format.TABLE.value)
    parser.add_argument("--output", metavar="FILE", help="write here instead of standard output")
    parser.add_argument("--config", metavar="FILE", help="TOML configuration giving [database] url")
    parser.add_argument("--db", metavar="URL", help="database URL (default: [database] url)")
    return parser


def parse_instant(text: str) -> int:
    """Epoch milliseconds of ``text``: digits are epoch ms, anything else ISO-8601 (UTC if naive)."""
    value = text.strip()
    if value.isdigit():
        return int(value)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ReportError(f"{text!r} is neither an ISO-8601 date/time nor epoch milliseconds") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _params(args: argparse.Namespace, now: float) -> ReportParams:
    until_ms = parse_instant(args.until) if args.until else int(now * 1000)
    since_ms = parse_instant(args.since) if args.since else until_ms - DEFAULT_RANGE_DAYS * 86_400_000
    return ReportParams(since_ms, until_ms, args.line)


def run(
    args: argparse.Namespace,
    *,
    database_url: str | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    clock: Callable[[], float] = time.time,
) -> int:
    """Execute ``scaserver report``; returns the exit status."""
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    url = args.db or database_url
    try:
        if not url:
            raise ReportError("no database: give --db URL or a configuration with [database] url")
        report = resolve(args.name)
        params = _params(args, clock())
        fmt = Format(args.format)
        if fmt is Format.PNG and not report.chart:
            charts = ", ".join(r.name for r in REPORTS.values() if r.chart)
            raise ReportError(f"report {report.name} has no chart; charts exist for: {charts}")
        if fmt is Format.PNG and not args.output:
            raise ReportError("--format png needs --output FILE")
    except ReportError as error:
        print(f"scaserver report: {error}", file=err)
        return EXIT_USAGE
    engine = make_engine(url, pool_size=1)
    try:
        with engine.connect() as conn:
            if fmt is Format.PNG:
                if report.name == "busy-hour":
                    image = busy_hour_png(hourly_traffic(conn, params))
                else:
                    image = wake_latency_png(wake_latencies(conn, params))
                Path(args.output).write_bytes(image)
                return EXIT_OK
            result = run_report(conn, report, params)
    except ReportError as error:
        print(f"scaserver report: {error}", file=err)
        return EXIT_USAGE
    except DatabaseError as error:
        print(f"scaserver report: database {url}: {type(error).__name__}: {error}", file=err)
        return EXIT_FAILURE
    except OSError as error:
        print(f"scaserver report: {args.output}: {error.strerror or error}", file=err)
        return EXIT_FAILURE
    finally:
        engine.dispose()
    text = {Format.TABLE: render_table, Format.CSV: render_csv, Format.JSON: render_json}[fmt](result)
    if not args.output:
        out.write(text)
        return EXIT_OK
    try:
        Path(args.output).write_text(text, encoding="utf-8", newline="")
    except OSError as error:
        print(f"scaserver report: {args.output}: {error.strerror or error}", file=err)
        return EXIT_FAILURE
    return EXIT_OK
