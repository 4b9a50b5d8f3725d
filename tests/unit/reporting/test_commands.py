"""``scaserver report`` argument handling and its error paths (no database needed)."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import pytest

from scaserver.reporting import commands
from scaserver.reporting.reports import ReportError, ReportParams, percentile, resolve
from scaserver.reporting.retention import RetentionPolicy


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scaserver")
    commands.add_subparsers(parser.add_subparsers(dest="command"))
    return parser.parse_args(["report", *argv])


def _run(*argv: str, url: str | None = "sqlite://") -> tuple[int, str]:
    err = io.StringIO()
    status = commands.run(_args(*argv), database_url=url, stdout=io.StringIO(), stderr=err, clock=lambda: 1e9)
    return status, err.getvalue()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("q9",), "unknown report 'q9'"),
        (("q1", "--since", "yesterday"), "neither an ISO-8601"),
        (("q1", "--since", "2024-11-26", "--until", "2024-11-25"), "range is empty"),
        (("q1", "--format", "png", "--output", "x.png"), "has no chart"),
        (("busy-hour", "--format", "png"), "needs --output"),
    ],
)
def test_unusable_arguments_exit_2_with_one_line(argv: tuple[str, ...], message: str) -> None:
    status, err = _run(*argv)
    assert status == 2
    assert message in err and err.count("\n") == 1


def test_no_database_url_is_a_usage_error() -> None:
    assert _run("q1", url=None) == (
        2,
        "scaserver report: no database: give --db URL or a configuration with [database] url\n",
    )


def test_database_failure_exits_1(tmp_path: Path) -> None:
    status, err = _run("q1", url=f"sqlite:///{tmp_path / 'empty.db'}")  # no schema: the views are missing
    assert status == 1 and "OperationalError" in err


def test_line_filter_refused_by_q7_exits_2(tmp_path: Path) -> None:
    status, err = _run("q7", "--line", "sip:line1@example.com", url=f"sqlite:///{tmp_path / 'x.db'}")
    assert status == 2 and "no per-line breakdown" in err


def test_parse_instant_accepts_dates_offsets_and_epoch_ms() -> None:
    assert commands.parse_instant("2024-11-25") == 1_732_492_800_000
    assert commands.parse_instant("2024-11-25T01:00:00+01:00") == 1_732_492_800_000
    assert commands.parse_instant("2024-11-25T00:00:00Z") == 1_732_492_800_000
    assert commands.parse_instant("1732492800000") == 1_732_492_800_000


def test_resolve_by_name_or_spec_id() -> None:
    assert resolve("Q4") is resolve("seize-without-call")
    with pytest.raises(ReportError):
        resolve("nope")
    with pytest.raises(ReportError):
        ReportParams(10, 10)


def test_percentile_interpolates() -> None:
    assert percentile([], 0.5) is None
    assert percentile([4.0, 1.0, 3.0, 2.0], 0.5) == 2.5
    assert percentile([1.0, 2.0], 0.95) == pytest.approx(1.95)


def test_retention_policy_validation() -> None:
    with pytest.raises(ValueError, match="unknown history tables"):
        RetentionPolicy({"cdr": 3})
    with pytest.raises(ValueError, match="at least one day"):
        RetentionPolicy.uniform(0)
    with pytest.raises(ValueError, match="positive"):
        RetentionPolicy.uniform(5, batch_size=0)
