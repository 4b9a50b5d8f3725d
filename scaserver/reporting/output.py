"""Rendering of report results: terminal table, CSV, JSON and PNG charts.

Charts use matplotlib's object API on the Agg canvas (no pyplot, no display, no global
state), so they render in a server or a cron job:

* ``busy-hour`` (Q2): Erlangs per hour of the range for each line, each line's busy hour
  marked with its peak of busy appearances;
* ``push-wakeups`` (Q7): the distribution of wake-up latencies (push sent until the woken
  device registered) per provider, with the median and 95th percentile in the legend.

matplotlib is the optional ``charts`` extra (``pip install 'scaserver[charts]'``); it is
imported when a chart is drawn, and its absence is a ``ReportError`` that says so.
"""

from __future__ import annotations

import csv
import enum
import io
import json
from collections.abc import Sequence
from datetime import UTC
from typing import TYPE_CHECKING

from scaserver.reporting.reports import ReportError, ReportResult, percentile

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "Format",
    "busy_hour_png",
    "render_csv",
    "render_json",
    "render_table",
    "wake_latency_png",
]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class Format(enum.Enum):
    TABLE = "table"
    CSV = "csv"
    JSON = "json"
    PNG = "png"


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:g}" if abs(value) < 1e15 else repr(value)
    return str(value)


def render_table(result: ReportResult) -> str:
    """A fixed-width text table with a title line; numbers right-aligned."""
    header = list(result.columns)
    body = [[_cell(v) for v in row] for row in result.rows]
    numeric = [
        all(isinstance(row[i], int | float) or row[i] is None for row in result.rows)
        for i in range(len(header))
    ]
    widths = [max([len(header[i]), *(len(row[i]) for row in body)]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.rjust(widths[i]) if numeric[i] else cell.ljust(widths[i]) for i, cell in enumerate(cells)
        ).rstrip()

    out = [result.title, line(header), "  ".join("-" * w for w in widths)]
    out += [line(row) for row in body]
    if not body:
        out.append("(no rows)")
    return "\n".join(out) + "\n"


def render_csv(result: ReportResult) -> str:
    """RFC 4180 CSV with a header row; NULL is the empty field."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(result.columns)
    for row in result.rows:
        writer.writerow(["" if v is None else v for v in row])
    return buffer.getvalue()


def render_json(result: ReportResult) -> str:
    """``{"report": name, "title": ..., "rows": [{column: value}, ...]}``."""
    return (
        json.dumps({"report": result.name, "title": result.title, "rows": result.as_dicts()}, indent=2) + "\n"
    )


def _figure(width: float, height: float) -> Figure:
    """A new figure on the Agg canvas; ReportError when matplotlib is not installed."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
        from matplotlib.figure import Figure  # noqa: PLC0415
    except ImportError:
        raise ReportError(
            "PNG charts need matplotlib: install scaserver with the charts extra "
            "(pip install 'scaserver[charts]')"
        ) from None
    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    return figure


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def _hour_x(ms: int) -> float:
    """Matplotlib's date number of an epoch-ms instant: days since its epoch, 1970-01-01 UTC."""
    return ms / 86_400_000


def busy_hour_png(
    traffic: Sequence[tuple[str, int, int, float]], *, title: str = "Busy hour per line"
) -> bytes:
    """Erlangs per hour for each line (``reports.hourly_traffic`` rows), busy hours marked."""
    figure = _figure(10, 5)
    axes = figure.add_subplot()
    lines = sorted({row[0] for row in traffic})
    for line in lines:
        points = [(hour, peak, erlangs) for name, hour, peak, erlangs in traffic if name == line]
        axes.plot([_hour_x(h) for h, _, _ in points], [e for _, _, e in points], marker=".", label=line)
        busiest = max(points, key=lambda p: (p[2], p[1]))
        axes.annotate(
            f"peak {busiest[1]}",
            (_hour_x(busiest[0]), busiest[2]),
            textcoords="offset points",
            xytext=(0, 6),
            ha="center",
            fontsize=8,
        )
    axes.xaxis_date(UTC)
    axes.set_title(title)
    axes.set_xlabel("hour (UTC)")
    axes.set_ylabel("traffic (Erlangs)")
    axes.grid(True, alpha=0.3)
    if lines:
        axes.legend(fontsize=8)
    else:
        axes.text(0.5, 0.5, "no line samples in range", ha="center", va="center", transform=axes.transAxes)
    figure.autofmt_xdate()
    return _png(figure)


def wake_latency_png(latencies: Sequence[tuple[str, int]], *, title: str = "Push wake-up latency") -> bytes:
    """Histogram of wake-up latencies in seconds per provider (``reports.wake_latencies`` rows)."""
    figure = _figure(8, 5)
    axes = figure.add_subplot()
    providers = sorted({provider for provider, _ in latencies})
    for provider in providers:
        seconds = [ms / 1000 for name, ms in latencies if name == provider]
        median, p95 = percentile(seconds, 0.5) or 0.0, percentile(seconds, 0.95) or 0.0
        axes.hist(
            seconds,
            bins=min(30, max(5, len(seconds))),
            alpha=0.6,
            label=f"{provider} (n={len(seconds)}, p50={median:.1f}s, p95={p95:.1f}s)",
        )
    axes.set_title(title)
    axes.set_xlabel("push sent until REGISTER (s)")
    axes.set_ylabel("wake-ups")
    axes.grid(True, alpha=0.3)
    if providers:
        axes.legend(fontsize=8)
    else:
        axes.text(
            0.5, 0.5, "no successful wake-ups in range", ha="center", va="center", transform=axes.transAxes
        )
    return _png(figure)
