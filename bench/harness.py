"""``bench/run``: scaserver and Kamailio's sca module under the same SIPp load, one invocation.

Phases (each SIPp step bounded in calls and time, everything on 127.0.0.1):

1. open servers (no digest): REGISTER ladder; call-info population (2 members per line,
   SUBSCRIBE at 1000/s, measured); seize+release ladder (Kamailio's load-seize.xml);
   NOTIFY fan-out latency for 2, 8 and 32 members under seize load at half each server's
   max rate; SCA call mix ladder (bench/scenarios/sca-call.xml, callee.xml);
2. digest servers: REGISTER with digest ladder (bench/scenarios/register-auth.xml);
3. restart restore and memory: each server started on a database seeded with 0, 10k and
   100k call-info subscriptions (bench/gen_subscriptions.py);
4. push-parking overhead (scaserver only: the Kamailio reference has no push parking):
   bench/pushpark.py, the time from a woken mobile's REGISTER to the INVITE branch reaching
   it, over ``--runs`` x 10 parked calls.

Ladders: scaserver runs each rate step ``--runs`` times and stops when the median run
fails (< 1 % failed calls and >= 90 % of the target rate is a pass); Kamailio runs the
highest rate scaserver sustained ``--runs`` times (the comparison rate: CPU per call at the
same achieved rate), then the steps above it once each until one fails.  The targets are
scaserver, Kamailio with one worker and Kamailio with two.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import attrs

from bench import gen_aors, gen_subscribers, gen_subscriptions, probe, pushpark
from bench.procs import PYTHON, REFERENCE, ROOT, Kamailio, ScaServer, Target, load_average, usage
from bench.sippstep import Step, median_step, run_step
from bench.sipua import HOST, register

KAM_SCENARIOS = REFERENCE / "scenarios"
OUR_SCENARIOS = ROOT / "bench" / "scenarios"
STEP_SECONDS = 3.0
STEP_GRACE_S = 5.0
SEIZE_LINES_FIRST = 200000
CALL_LINES_FIRST = 210000
PROBE_FIRST = 300000
LINES = 2000
MEMBERS = 2
PASSWORD = "bench-secret"
KAMAILIO_RESTORE_PKG_MB = 256
"""Private memory for the restore figure: with run-kamailio.sh's 32 MB, db_sqlite (no fetch
support) runs out storing 100k rows ("no private memory left") and nothing is restored."""

LADDERS: dict[str, list[float]] = {
    "register": [750, 1100, 1700, 2500, 3800, 5600, 8000],
    "register-auth": [400, 600, 900, 1300, 2000, 3000, 4000],
    "seize": [150, 220, 330, 500, 750, 1100, 1600, 2000, 2500],
    "sca-call": [60, 90, 130, 200, 300, 450, 700, 1000],
}
QUICK_LADDERS: dict[str, list[float]] = {
    "register": [500, 2000],
    "register-auth": [300, 1000],
    "seize": [100, 400],
    "sca-call": [50, 150],
}
TRANSACTIONS = {"register": 1.0, "register-auth": 2.0, "seize": 8.0, "sca-call": 18.0}
"""SIP transactions per call with 2 members per line (seize: 2 SUBSCRIBE + 2 line-seize
NOTIFY + 4 call-info NOTIFY; sca-call: SUBSCRIBE, 2 line-seize NOTIFY, INVITE in and out,
re-INVITE in and out, BYE in and out, 8 call-info NOTIFY)."""


@attrs.define
class Context:
    out: Path
    runs: int
    quick: bool
    base_port: int
    deadline: float
    log: Callable[[str], None]
    results: dict[str, Any] = attrs.Factory(dict)
    helpers: list[subprocess.Popen[bytes]] = attrs.Factory(list)

    def ladder(self, scenario: str) -> list[float]:
        return (QUICK_LADDERS if self.quick else LADDERS)[scenario]

    def time_left(self) -> float:
        return self.deadline - time.monotonic()


def port_free(port: int) -> bool:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind((HOST, port))
            except OSError:
                return False
    return True


def pick_base_port() -> int:
    for base in range(21000, 30000, 200):
        if all(port_free(base + n) for n in range(140)):
            return base
    raise RuntimeError("no free port range on 127.0.0.1")


def ports(ctx: Context, index: int) -> dict[str, int]:
    """Ports of target ``index``: SIP (Kamailio's HTTP is SIP + 20), sink, callee, SIPp."""
    base = ctx.base_port + 40 * index
    return {
        "sip": base,
        "http": base + 1,
        "callee": base + 3,
        "sipp": base + 4,
        "bg": base + 5,
        "restore_sink": base + 6,
        "pop-seize": base + 7,
        "pop-call": base + 8,
    }


def make_targets(ctx: Context, names: Sequence[str]) -> list[Target]:
    targets: list[Target] = []
    for index, name in enumerate(names):
        p = ports(ctx, index)
        if name == "scaserver":
            targets.append(ScaServer(ctx.out / "scaserver", p["sip"], p["http"]))
        else:
            children = int(name.removeprefix("kamailio-").removesuffix("w"))
            targets.append(Kamailio(ctx.out / name, p["sip"], children))
    return targets


def spawn(ctx: Context, command: list[str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    cwd.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        process = subprocess.Popen(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    ctx.helpers.append(process)
    return process


def terminate(ctx: Context, process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    if process in ctx.helpers:
        ctx.helpers.remove(process)


@contextmanager
def helpers_for(ctx: Context, targets: Sequence[Target], index_of: dict[str, int]) -> Iterator[None]:
    """A SIPp callee per target, registered as ``callee`` from its own port."""
    started: list[subprocess.Popen[bytes]] = []
    try:
        for target in targets:
            p = ports(ctx, index_of[target.name])
            work = ctx.out / target.name / "helpers"
            if not register((HOST, target.port), "callee", p["callee"]):
                raise RuntimeError(f"{target.name}: callee REGISTER failed")
            callee = ["sipp", "-sf", str(OUR_SCENARIOS / "callee.xml"), "-i", HOST, "-p", str(p["callee"])]
            callee += ["-nostdin", "-timeout", "900s", "-trace_err"]
            callee += ["-error_file", str(work / "callee-errors.log")]
            started.append(spawn(ctx, callee, work, work / "callee.out"))
        time.sleep(0.5)
        yield
    finally:
        for process in started:
            terminate(ctx, process)


# --------------------------------------------------------------------------- ladders


def step_runner(
    ctx: Context,
    scenario: str,
    path: Path,
    inf: Path,
    index_of: dict[str, int],
    *,
    extra: Sequence[str] = (),
) -> Callable[[Target, float, int], Step]:
    def run(target: Target, rate: float, n: int) -> Step:
        p = ports(ctx, index_of[target.name])
        step = run_step(
            target,
            path,
            ctx.out / target.name / scenario / f"r{rate:g}-{n}",
            name=scenario,
            rate=rate,
            calls=int(rate * STEP_SECONDS),
            local_port=p["sipp"],
            inf=inf,
            extra=extra,
            timeout_s=STEP_SECONDS + STEP_GRACE_S,
            transactions_per_call=TRANSACTIONS.get(scenario, 1.0),
        )
        first = next(iter(step.latency.values()), None)
        ctx.log(
            f"  {target.name:14} {scenario:13} rate {rate:6g}/s: {'pass' if step.passed else 'FAIL'}"
            f" ok {step.successful}/{step.calls} achieved {step.achieved:7.1f}/s cpu {step.cpu_pct:5.1f}%"
            f" {step.cpu_ms_per_call:.3f} ms/call"
            + (f" p50 {first.p50_ms:.2f} p99 {first.p99_ms:.2f} ms" if first else "")
        )
        return step

    return run


def median_passes(steps: Sequence[Step]) -> bool:
    return sum(s.passed for s in steps) * 2 > len(steps)


def ladder_scenario(
    ctx: Context, scenario: str, targets: Sequence[Target], run: Callable[[Target, float, int], Step]
) -> dict[str, Any]:
    """scaserver first (each step ``runs`` times), then Kamailio from the comparison rate up."""
    rates = ctx.ladder(scenario)
    out: dict[str, Any] = {"rates": rates, "targets": {}}
    ours = [t for t in targets if isinstance(t, ScaServer)]
    others = [t for t in targets if not isinstance(t, ScaServer)]
    common: float | None = None
    for target in ours:
        steps: dict[float, list[Step]] = {}
        best: float | None = None
        for rate in rates:
            runs: list[Step] = []
            for n in range(ctx.runs):
                runs.append(run(target, rate, n))
                if sum(not s.passed for s in runs) * 2 > ctx.runs:
                    break
            steps[rate] = runs
            if not median_passes(runs):
                break
            best = rate
        common = best if best is not None else rates[0]
        out["targets"][target.name] = summarize(steps, best)
    for other in others:
        steps = {}
        best = None
        start = rates.index(common) if common in rates else 0
        for i, rate in enumerate(rates[start:]):
            count = ctx.runs if i == 0 else 1
            runs = [run(other, rate, n) for n in range(count)]
            steps[rate] = runs
            if not median_passes(runs):
                break
            best = rate
        out["targets"][other.name] = summarize(steps, best)
    out["common_rate"] = common
    return out


def summarize(steps: dict[float, list[Step]], best: float | None) -> dict[str, Any]:
    return {
        "max_rate": best,
        "first_failing_rate": next((r for r, runs in steps.items() if not median_passes(runs)), None),
        "capped": best is not None and best == max(steps),
        "at_rate": {f"{rate:g}": median_step(runs) for rate, runs in steps.items()},
        "runs": [s.as_json() for runs in steps.values() for s in runs],
    }


# --------------------------------------------------------------------------- phases


def population(
    ctx: Context, targets: Sequence[Target], index_of: dict[str, int], inf: Path, label: str
) -> dict[str, Any]:
    """Every row of ``inf`` subscribes to call-info from a SIPp that stays up as the NOTIFY
    sink of those subscriptions (bench/scenarios/subscribe-sink.xml) until the phase ends."""
    rows = sum(1 for _ in inf.open()) - 1
    rate = 1000.0
    out: dict[str, Any] = {}
    for target in targets:
        p = ports(ctx, index_of[target.name])
        work = ctx.out / target.name / f"population-{label}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        command = ["sipp", "-sf", str(OUR_SCENARIOS / "subscribe-sink.xml"), "-i", HOST]
        command += ["-p", str(p[f"pop-{label}"]), "-nostdin", "-key", "domain", HOST, "-inf", str(inf)]
        command += ["-m", str(rows), "-r", f"{rate:g}", "-l", str(rows), "-timeout", "1200s"]
        command += ["-default_behaviors", "all,-abortunexp", "-trace_rtt", "-rtt_freq", "1"]
        command += ["-trace_err", "-error_file", str(work / "errors.log"), f"{HOST}:{target.port}"]
        before = target.usage()
        began = time.monotonic()
        spawn(ctx, command, work, work / "sipp.out")
        done = 0
        deadline = began + rows / rate + 15
        while time.monotonic() < deadline:
            time.sleep(0.25)
            done = sum(max(0, len(f.read_text().splitlines()) - 1) for f in work.glob("*_rtt.csv"))
            if done >= rows:
                break
        elapsed = time.monotonic() - began
        after = target.usage()
        cpu = after.cpu_s - before.cpu_s
        figures = {
            "subscriptions": rows,
            "answered": done,
            "elapsed_s": round(elapsed, 2),
            "cpu_s": round(cpu, 3),
            "cpu_ms_per_call": round(1000 * cpu / max(done, 1), 4),
            "rss_kb": after.rss_kb,
        }
        ctx.log(f"  {target.name:14} call-info SUBSCRIBE x{rows} at {rate:g}/s ({label}): {figures}")
        out[target.name] = figures
    time.sleep(1.0)
    return out


def fanout_phase(
    ctx: Context, targets: Sequence[Target], index_of: dict[str, int], inf: Path, seize: dict[str, Any]
) -> dict[str, Any]:
    member_counts = (2, 8) if ctx.quick else (2, 8, 32)
    samples = 30 if ctx.quick else 150
    out: dict[str, Any] = {}
    for target in targets:
        best = seize["targets"][target.name]["max_rate"] or ctx.ladder("seize")[0]
        rate = max(50.0, best / 2)
        p = ports(ctx, index_of[target.name])
        duration = 3.0 + len(member_counts) * (samples * 0.03 + 1.5)
        work = ctx.out / target.name / "fanout-background"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        command = ["sipp", "-sf", str(KAM_SCENARIOS / "load-seize.xml"), "-i", HOST, "-p", str(p["bg"])]
        command += ["-nostdin", "-key", "domain", HOST, "-inf", str(inf), "-m", str(int(rate * duration))]
        command += ["-r", f"{rate:g}", "-l", str(int(rate * 2)), "-timeout", f"{duration + 5:g}s"]
        command += ["-trace_stat", "-stf", str(work / "stat.csv"), "-fd", "1", f"{HOST}:{target.port}"]
        background = spawn(ctx, command, work, work / "sipp.out")
        time.sleep(1.0)
        figures = {}
        for members in member_counts:
            result = probe.measure((HOST, target.port), str(PROBE_FIRST + members), members, samples, 0.03)
            figures[str(members)] = result.as_json()
            shown = figures[str(members)]
            ctx.log(f"  {target.name:14} fan-out {members:2} members under seize {rate:g}/s: {shown}")
        with contextlib.suppress(subprocess.TimeoutExpired):
            background.wait(duration + 20)
        terminate(ctx, background)
        out[target.name] = {"background_seize_rate": rate, "members": figures}
    return out


def open_phase(ctx: Context, targets: Sequence[Target], index_of: dict[str, int]) -> None:
    seize_inf = ctx.out / "aors-seize.csv"
    call_inf = ctx.out / "aors-call.csv"
    gen_aors.write(seize_inf, LINES, MEMBERS, SEIZE_LINES_FIRST)
    gen_aors.write(call_inf, LINES, MEMBERS, CALL_LINES_FIRST)
    for target in targets:
        ctx.log(f"starting {target.name} (open) on {HOST}:{target.port}")
        target.start()
        ctx.results.setdefault("idle_rss_kb", {})[target.name] = target.usage().rss_kb
    with helpers_for(ctx, targets, index_of):
        ctx.log("REGISTER (no auth)")
        run = step_runner(ctx, "register", KAM_SCENARIOS / "register.xml", seize_inf, index_of)
        ctx.results["register"] = ladder_scenario(ctx, "register", targets, run)
        ctx.log("call-info population")
        ctx.results["subscribe"] = population(ctx, targets, index_of, seize_inf, "seize")
        population(ctx, targets, index_of, call_inf, "call")
        ctx.log("seize + release")
        run = step_runner(ctx, "seize", KAM_SCENARIOS / "load-seize.xml", seize_inf, index_of)
        ctx.results["seize"] = ladder_scenario(ctx, "seize", targets, run)
        ctx.log("NOTIFY fan-out")
        ctx.results["fanout"] = fanout_phase(ctx, targets, index_of, seize_inf, ctx.results["seize"])
        ctx.log("SCA call mix")
        run = step_runner(
            ctx,
            "sca-call",
            OUR_SCENARIOS / "sca-call.xml",
            call_inf,
            index_of,
            extra=("-default_behaviors", "all,-abortunexp"),
        )
        ctx.results["sca-call"] = ladder_scenario(ctx, "sca-call", targets, run)
        ctx.results["subscriptions_rss_kb"] = {t.name: t.usage().rss_kb for t in targets}
    for target in targets:
        target.stop()


def auth_phase(ctx: Context, targets: Sequence[Target], index_of: dict[str, int]) -> None:
    inf = ctx.out / "aors-auth.csv"
    gen_aors.write(inf, LINES, MEMBERS, SEIZE_LINES_FIRST, PASSWORD)
    for target in targets:
        ctx.log(f"starting {target.name} (digest) on {HOST}:{target.port}")
        if isinstance(target, ScaServer):
            target.prepare_db()
            gen_subscribers.seed_scaserver(target.db_url, LINES, PASSWORD, SEIZE_LINES_FIRST)
            target.start(auth=True, fresh_db=False)
        elif isinstance(target, Kamailio):
            target.start(auth=True)
            gen_subscribers.seed_kamailio(target.db_file, LINES, PASSWORD, SEIZE_LINES_FIRST)
    try:
        run = step_runner(
            ctx,
            "register-auth",
            OUR_SCENARIOS / "register-auth.xml",
            inf,
            index_of,
            extra=("-auth_uri", HOST),
        )
        ctx.results["register-auth"] = ladder_scenario(ctx, "register-auth", targets, run)
    finally:
        for target in targets:
            target.stop()


def wait_for_notifies(status: Path, count: int, timeout: float) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    data: dict[str, float] = {"notifies": 0, "first": 0.0, "last": 0.0}
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(status.read_text())
        if data["notifies"] >= count:
            break
        time.sleep(0.2)
    return data


def restore_phase(ctx: Context, targets: Sequence[Target], index_of: dict[str, int]) -> None:
    sizes = (0, 1000, 10000) if ctx.quick else (0, 10000, 100000)
    repeats = {0: 1, sizes[1]: 1, sizes[2]: ctx.runs}
    out: dict[str, Any] = {}
    for target in targets:
        p = ports(ctx, index_of[target.name])
        work = ctx.out / target.name / "restore"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        template = work / "template.db"
        if isinstance(target, ScaServer):
            target.prepare_db()
            shutil.copyfile(target.db_file, template)
        figures: dict[str, Any] = {}
        for size in sizes:
            runs: list[dict[str, Any]] = []
            for n in range(repeats[size]):
                seeded = work / f"seed-{size}-{n}.db"
                seeded.unlink(missing_ok=True)
                if isinstance(target, ScaServer):
                    shutil.copyfile(template, seeded)
                    gen_subscriptions.seed(seeded, size, p["restore_sink"])
                else:
                    gen_subscriptions.seed(
                        seeded, size, p["restore_sink"], schema=REFERENCE / "schema-sqlite.sql"
                    )
                status = work / f"sink-{size}-{n}.json"
                sink = spawn(
                    ctx,
                    [str(PYTHON), "-m", "bench.sink", str(p["restore_sink"]), str(status)],
                    ROOT,
                    work / "sink.out",
                )
                time.sleep(0.5)
                started = time.time()
                if isinstance(target, ScaServer):
                    target.prepare_db(template=seeded)
                    serving = target.start(fresh_db=False)
                    sent = wait_for_notifies(status, size, 120.0)
                    notified = (sent["last"] - started) if size and sent["notifies"] >= size else None
                    time.sleep(2.0)
                else:
                    assert isinstance(target, Kamailio)
                    serving = target.start_seeded(seeded, KAMAILIO_RESTORE_PKG_MB)
                    sent = {"notifies": 0}
                    notified = None
                    loaded = target.rpc("sca.subscription_count", "call-info").split(" ", 1)[0]
                    if loaded != str(size):
                        ctx.log(f"  {target.name}: restored {loaded!r} of {size} subscriptions")
                    time.sleep(1.0)
                use = usage(target.pid())
                target.stop()
                terminate(ctx, sink)
                seeded.unlink(missing_ok=True)
                run: dict[str, Any] = {
                    "serving_s": round(serving, 3),
                    "all_notified_s": round(notified, 3) if notified is not None else None,
                    "notifies": sent["notifies"],
                    "rss_kb": use.rss_kb,
                    "pss_kb": use.pss_kb,
                }
                ctx.log(f"  {target.name:14} restore {size:6} subscriptions: {run}")
                runs.append(run)
            figures[str(size)] = {
                "runs": runs,
                "serving_s": statistics.median(r["serving_s"] for r in runs),
                "rss_kb": statistics.median(r["rss_kb"] for r in runs),
                "pss_kb": statistics.median(r["pss_kb"] for r in runs),
                "all_notified_s": statistics.median(
                    [r["all_notified_s"] for r in runs if r["all_notified_s"] is not None] or [float("nan")]
                ),
            }
        base = figures["0"]
        for size in sizes[1:]:
            f = figures[str(size)]
            f["rss_bytes_per_subscription"] = round((f["rss_kb"] - base["rss_kb"]) * 1024 / size, 1)
            f["pss_bytes_per_subscription"] = round((f["pss_kb"] - base["pss_kb"]) * 1024 / size, 1)
        out[target.name] = figures
    ctx.results["restore"] = out


# --------------------------------------------------------------------------- table


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0 or math.isnan(a) or math.isnan(b):
        return "-"
    return f"{a / b:.2f}"


def fmt(value: float | None, digits: int = 2) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:.{digits}f}"


def table(results: dict[str, Any], names: Sequence[str]) -> str:
    kams = [n for n in names if n != "scaserver"]
    head = (
        "| scenario | figure | "
        + " | ".join(names)
        + " | "
        + " | ".join(f"ratio vs {k}" for k in kams)
        + " |"
    )
    lines = [head, "|" + "---|" * (2 + len(names) + len(kams))]

    def row(scenario: str, figure: str, values: dict[str, float | None], digits: int = 2) -> None:
        ours = values.get("scaserver")
        cells = [fmt(values.get(n), digits) for n in names]
        ratios = [ratio(ours, values.get(k)) for k in kams]
        lines.append(f"| {scenario} | {figure} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")

    for scenario in ("register", "register-auth", "seize", "sca-call"):
        data = results.get(scenario)
        if not data:
            continue
        common = data["common_rate"]
        per = data["targets"]
        row(
            scenario,
            "max sustained calls/s (<1% failed)",
            {n: per[n]["max_rate"] for n in names if n in per},
            0,
        )
        row(
            scenario,
            "first failing step calls/s",
            {n: per[n]["first_failing_rate"] for n in names if n in per},
            0,
        )
        at = {n: per[n]["at_rate"].get(f"{common:g}") for n in names if n in per}
        for key, label, digits in (
            ("cpu_ms_per_call", f"CPU ms/call at {common:g}/s", 3),
            ("cpu_pct", f"CPU % of a core at {common:g}/s", 1),
            ("p50_ms", f"p50 ms at {common:g}/s", 2),
            ("p99_ms", f"p99 ms at {common:g}/s", 2),
            ("rss_kb", "RSS MiB after step", 1),
            ("lag_over_50ms", f"reactor stalls over 50 ms at {common:g}/s (worst run)", 0),
            ("max_lag_le_s", f"longest stall at {common:g}/s, at most s (worst run)", 3),
        ):
            values = {n: (a[key] / 1024 if key == "rss_kb" else a[key]) if a else None for n, a in at.items()}
            row(scenario, label, values, digits)
    sub = results.get("subscribe")
    if sub:
        row(
            "call-info SUBSCRIBE",
            "CPU ms/call at 1000/s",
            {n: sub[n]["cpu_ms_per_call"] for n in names if n in sub},
            3,
        )
    fan = results.get("fanout")
    if fan:
        for members in ("2", "8", "32"):
            if all(members in fan[n]["members"] for n in names if n in fan):
                for key in ("p50_ms", "p99_ms"):
                    row(
                        f"fan-out {members} members",
                        f"{key.split('_')[0]} ms (seize at half max)",
                        {n: fan[n]["members"][members][key] for n in names if n in fan},
                    )
    restore = results.get("restore")
    if restore:
        sizes = sorted((int(s) for s in next(iter(restore.values()))), key=int)
        for size in sizes[1:]:
            row(
                f"{size} subscriptions",
                "RSS bytes/subscription",
                {n: restore[n][str(size)]["rss_bytes_per_subscription"] for n in names if n in restore},
                0,
            )
            row(
                f"{size} subscriptions",
                "PSS bytes/subscription",
                {n: restore[n][str(size)]["pss_bytes_per_subscription"] for n in names if n in restore},
                0,
            )
        top = str(sizes[-1])
        row(
            f"restart, {top} subs",
            "s to serving",
            {n: restore[n][top]["serving_s"] for n in names if n in restore},
        )
        row(
            f"restart, {top} subs",
            "s to last restore NOTIFY",
            {n: restore[n][top]["all_notified_s"] for n in names if n in restore},
        )
    park = results.get("push_parking")
    if isinstance(park, dict) and park.get("p50_ms") is not None:
        lines.append(
            f"| push parking | REGISTER to INVITE branch p50 / p99 ms ({park['calls']} calls, "
            f"{park['failures']} failed) | {park['p50_ms']} / {park['p99_ms']} | n/a | n/a | - | - |"
        )
    else:
        lines.append(f"| push parking | REGISTER to INVITE branch | not measured: {park} | | | | |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/run", description="scaserver vs Kamailio sca benchmarks")
    parser.add_argument("--runs", type=int, default=3, help="runs per measured rate (median)")
    parser.add_argument("--quick", action="store_true", help="tiny ladders, for checking the harness")
    parser.add_argument("--out", type=Path, default=Path("/tmp/scaserver-bench"), help="work and result dir")
    parser.add_argument(
        "--targets", default="scaserver,kamailio-1w,kamailio-2w", help="comma-separated targets"
    )
    parser.add_argument("--phases", default="open,auth,restore", help="comma-separated: open, auth, restore")
    parser.add_argument("--budget", type=float, default=15 * 60, help="seconds before giving up")
    args = parser.parse_args(argv)
    out: Path = args.out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    log_file = (out / "bench.log").open("a")

    def log(text: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {text}"
        print(line, flush=True)
        log_file.write(line + "\n")
        log_file.flush()

    names = [n.strip() for n in args.targets.split(",") if n.strip()]
    ctx = Context(out, args.runs, args.quick, pick_base_port(), time.monotonic() + args.budget, log)
    targets = make_targets(ctx, names)
    index_of = {t.name: i for i, t in enumerate(targets)}
    ctx.results["machine"] = {"load_before": load_average(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    phases = {"open": open_phase, "auth": auth_phase, "restore": restore_phase}
    began = time.monotonic()
    interrupted = False

    def on_signal(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    with ExitStack() as cleanup:
        for target in targets:
            cleanup.callback(target.stop)

        def stop_helpers() -> None:
            for process in list(ctx.helpers):
                terminate(ctx, process)

        cleanup.callback(stop_helpers)
        try:
            for phase in args.phases.split(","):
                if ctx.time_left() <= 0:
                    log(f"budget exhausted before phase {phase}")
                    break
                log(f"== phase {phase} (load {load_average()})")
                phases[phase.strip()](ctx, targets, index_of)
        except KeyboardInterrupt:
            interrupted = True
            log("interrupted: stopping every process started")
    ctx.results["machine"]["load_after"] = load_average()
    ctx.results["machine"]["elapsed_s"] = round(time.monotonic() - began, 1)
    # Written before the push-parking probe as well: a probe that hangs loses nothing measured.
    (out / "results.json").write_text(json.dumps(ctx.results, indent=1, default=str))
    if not interrupted and ctx.time_left() > 60:
        log("push-parking overhead (scaserver only)")
        ctx.results["push_parking"] = pushpark.measure(10 * ctx.runs, out / "pushpark")
        log(f"  scaserver      push parking: {ctx.results['push_parking']}")
    else:
        ctx.results["push_parking"] = "time budget exhausted"
    (out / "results.json").write_text(json.dumps(ctx.results, indent=1, default=str))
    text = table(ctx.results, names)
    (out / "table.md").write_text(text + "\n")
    print(text)
    log(f"done in {ctx.results['machine']['elapsed_s']} s; load {load_average()}; results in {out}")
    return 1 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
