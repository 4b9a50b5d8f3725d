"""One SIPp load step against a target, bounded in calls and time, and its figures.

A step runs ``calls`` calls at ``rate`` calls/s (``-l`` caps concurrent calls at twice the
rate), with SIPp's statistics (``-trace_stat``) and every response time (``-trace_rtt
-rtt_freq 1``) written to the step's own directory.  The server's CPU seconds (its whole
process tree) are read before and after.  A step passes when fewer than 1 % of the calls
failed (a call that did not finish counts as failed), SIPp started the calls at no less
than 90 % of the target rate (it slows down when the ``-l`` concurrent-call cap is reached,
that is when the server falls behind), and the 99th percentile of the scenario's first
response time is at most ``MAX_P99_MS`` (T1: an answer later than that makes a UAC over UDP
retransmit; a server answering all its calls seconds late from a deep socket buffer has not
sustained the rate).  CPU % is the CPU seconds over the step's whole time, SIPp's start to
its exit.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import attrs

from bench.procs import Target, lag_report
from bench.sipua import HOST

MAX_FAILED_PCT = 1.0
MIN_ACHIEVED = 0.9
MAX_P99_MS = 500.0


@attrs.frozen
class Latency:
    n: int
    p50_ms: float
    p99_ms: float


@attrs.frozen
class Step:
    """The outcome of one SIPp run."""

    scenario: str
    target: str
    rate: float
    calls: int
    successful: int
    failed: int
    elapsed_s: float
    cpu_s: float
    rss_kb: int
    pss_kb: int
    latency: dict[str, Latency]
    transactions_per_call: float
    loop_lag: dict[str, float] | None = None
    """scaserver's reactor lag during the step (procs.lag_report), None for Kamailio."""
    wall_s: float = 0.0
    """From SIPp's start to its exit: every call's end, or the step's time bound."""

    @property
    def failed_pct(self) -> float:
        return 100.0 * (self.calls - self.successful) / max(self.calls, 1)

    @property
    def achieved(self) -> float:
        """Calls started per second (``elapsed_s`` is the time SIPp took to start them all)."""
        return self.calls / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def first_p99_ms(self) -> float | None:
        """p99 of the scenario's first response-time measure; None when SIPp recorded none."""
        first = next(iter(self.latency.values()), None)
        return None if first is None else first.p99_ms

    @property
    def passed(self) -> bool:
        p99 = self.first_p99_ms
        return (
            self.failed_pct < MAX_FAILED_PCT
            and self.achieved >= MIN_ACHIEVED * self.rate
            and (p99 is None or p99 <= MAX_P99_MS)
        )

    @property
    def cpu_ms_per_call(self) -> float:
        return 1000.0 * self.cpu_s / max(self.successful, 1)

    @property
    def cpu_pct(self) -> float:
        return 100.0 * self.cpu_s / self.wall_s if self.wall_s > 0 else 0.0

    def as_json(self) -> dict[str, object]:
        return {
            "scenario": self.scenario,
            "target": self.target,
            "rate": self.rate,
            "calls": self.calls,
            "successful": self.successful,
            "failed_pct": round(self.failed_pct, 3),
            "elapsed_s": round(self.elapsed_s, 3),
            "achieved": round(self.achieved, 1),
            "cpu_s": round(self.cpu_s, 3),
            "cpu_pct": round(self.cpu_pct, 1),
            "cpu_ms_per_call": round(self.cpu_ms_per_call, 4),
            "rss_kb": self.rss_kb,
            "pss_kb": self.pss_kb,
            "latency": {k: attrs.asdict(v) for k, v in self.latency.items()},
            "passed": self.passed,
        }


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def _hms(text: str) -> float:
    h, m, s = text.split(":")[:3]
    return int(h) * 3600 + int(m) * 60 + float(s)


def read_stats(path: Path, calls: int) -> tuple[int, float]:
    """(successful calls, seconds SIPp took to start every call) from a ``-trace_stat`` file
    written every second (``-fd 1``).  The second figure is what the achieved rate is measured
    on, so that one late call does not stretch it to the step's time bound; when not every
    call was started it is the whole run."""
    rows = [line.rstrip("\n").split(";") for line in path.read_text().splitlines() if line.strip()]
    head, last = rows[0], rows[-1]
    col = {name: i for i, name in enumerate(head)}
    started_s = _hms(last[col["ElapsedTime(C)"]])
    for row in rows[1:]:
        if int(row[col["OutgoingCall(C)"]]) >= calls:
            started_s = _hms(row[col["ElapsedTime(C)"]])
            break
    return int(last[col["SuccessfulCall(C)"]]), started_s


def read_rtt(paths: Sequence[Path]) -> dict[str, Latency]:
    per: dict[str, list[float]] = {}
    for path in paths:
        for line in path.read_text().splitlines()[1:]:
            parts = line.strip().split(";")
            if len(parts) >= 3:
                per.setdefault(parts[2], []).append(float(parts[1]))
    return {
        name: Latency(len(v), round(percentile(v, 0.5), 3), round(percentile(v, 0.99), 3))
        for name, v in per.items()
    }


def run_step(
    target: Target,
    scenario: Path,
    workdir: Path,
    *,
    name: str,
    rate: float,
    calls: int,
    local_port: int,
    inf: Path | None = None,
    keys: dict[str, str] | None = None,
    extra: Sequence[str] = (),
    timeout_s: float = 10.0,
    transactions_per_call: float = 1.0,
    limit: int | None = None,
) -> Step:
    """Run ``calls`` calls of ``scenario`` at ``rate``/s against ``target``."""
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    command = ["sipp", "-sf", str(scenario), "-i", HOST, "-p", str(local_port), "-nostdin"]
    command += ["-key", "domain", HOST]
    for key, value in (keys or {}).items():
        command += ["-key", key, value]
    if inf is not None:
        command += ["-inf", str(inf)]
    command += ["-m", str(calls), "-r", str(rate), "-l", str(limit or max(int(rate * 2), 10))]
    command += ["-timeout", f"{timeout_s:g}s", "-trace_stat", "-stf", str(workdir / "stat.csv")]
    command += ["-trace_rtt", "-rtt_freq", "1", "-trace_err", "-error_file", str(workdir / "errors.log")]
    command += ["-fd", "1", *extra, f"{HOST}:{target.port}"]
    before = target.usage()
    lag_before = target.loop_lag()
    started = time.monotonic()
    with (workdir / "sipp.out").open("w") as output:
        process = subprocess.Popen(command, cwd=workdir, stdout=output, stderr=subprocess.STDOUT)
        try:
            process.wait(timeout_s + 10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    wall_s = time.monotonic() - started
    after = target.usage()
    lag = lag_report(lag_before, target.loop_lag())
    stat = workdir / "stat.csv"
    successful, elapsed = read_stats(stat, calls) if stat.exists() else (0, timeout_s)
    return Step(
        scenario=name,
        target=target.name,
        rate=rate,
        calls=calls,
        successful=successful,
        failed=calls - successful,
        elapsed_s=elapsed,
        cpu_s=after.cpu_s - before.cpu_s,
        rss_kb=after.rss_kb,
        pss_kb=after.pss_kb,
        latency=read_rtt(sorted(workdir.glob("*_rtt.csv"))),
        transactions_per_call=transactions_per_call,
        loop_lag=lag,
        wall_s=wall_s,
    )


def median_step(steps: Sequence[Step]) -> dict[str, float]:
    """Median figures of repeated steps at one rate (CPU per call, CPU %, p50/p99 of the
    first response-time measure, RSS/PSS, achieved rate, failures)."""
    first = next(iter(steps[0].latency), "")

    def med(values: Sequence[float]) -> float:
        return float(statistics.median(values)) if values else float("nan")

    return {
        "rate": steps[0].rate,
        "runs": len(steps),
        "passed_runs": sum(s.passed for s in steps),
        "achieved": med([s.achieved for s in steps]),
        "failed_pct": med([s.failed_pct for s in steps]),
        "cpu_ms_per_call": med([s.cpu_ms_per_call for s in steps]),
        "cpu_pct": med([s.cpu_pct for s in steps]),
        "p50_ms": med([s.latency[first].p50_ms for s in steps if first in s.latency]),
        "p99_ms": med([s.latency[first].p99_ms for s in steps if first in s.latency]),
        "rss_kb": med([s.rss_kb for s in steps]),
        "pss_kb": med([s.pss_kb for s in steps]),
        # The worst run, not the median: one stall is one too many.
        "lag_over_50ms": max((s.loop_lag["over_50ms"] for s in steps if s.loop_lag), default=float("nan")),
        "max_lag_le_s": max((s.loop_lag["max_lag_le_s"] for s in steps if s.loop_lag), default=float("nan")),
    }
