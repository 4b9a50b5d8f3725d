"""Profile scaserver's hot path while SIPp drives one scenario at a fixed rate.

    python -m bench.profile [--scenario seize|register|sca-call] [--rate R] [--seconds S] [--out DIR]
                            [--profiler py-spy|cprofile|split|none]

Starts scaserver (no digest), makes the 2000 x 2 call-info population, then profiles the
server while the load runs.  With py-spy (the default) it samples the server with
``py-spy record --format raw`` (collapsed stacks, 200 Hz, idle samples left out) and prints
the functions with the most samples: own time ("self") and time including callees
("total"), as a share of all samples.  With cprofile the server runs under
``bench.cprofiled`` (cProfile switched on for the load only: deterministic call counts,
less sensitive to other work on the machine, but its overhead inflates small functions);
it prints the top functions by own and by cumulative time, and the calls per SIPp call.
With split the server runs under ``bench.timesplit`` (no profiler: the reactor thread's CPU
time inside the core's entry points and outside them, per SIPp call).
All print the server's CPU time (utime + stime from /proc) per SIPp call during the load.
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import os
import pstats
import shutil
import signal
import subprocess
import time
from pathlib import Path

from bench import gen_aors
from bench.harness import KAM_SCENARIOS, OUR_SCENARIOS
from bench.procs import ROOT, ScaServer, lag_report
from bench.sipua import HOST, register

SCENARIOS = {
    "seize": KAM_SCENARIOS / "load-seize.xml",
    "register": KAM_SCENARIOS / "register.xml",
    "sca-call": OUR_SCENARIOS / "sca-call.xml",
}


def summarize(raw: Path, top: int = 25) -> str:
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        samples += count
        frames = [
            f.split(" (", 1)[0] + " (" + f.split(" (", 1)[1].rsplit(":", 1)[0] + ")" if " (" in f else f
            for f in stack.split(";")
        ]
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    lines = [f"{samples} samples", "", "self %  function"]
    lines += [f"{100 * n / samples:6.1f}  {name}" for name, n in own.most_common(top)]
    lines += ["", "total %  function"]
    lines += [f"{100 * n / samples:6.1f}  {name}" for name, n in total.most_common(top)]
    return "\n".join(lines)


def summarize_cprofile(path: Path, calls: int, top: int = 30) -> str:
    text = io.StringIO()
    stats = pstats.Stats(str(path), stream=text)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    total_calls = stats.total_calls  # type: ignore[attr-defined]
    return text.getvalue() + f"\n{total_calls} function calls, {total_calls / calls:.0f} per SIPp call"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="seize")
    parser.add_argument("--rate", type=float, default=150.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--port", type=int, default=23000)
    parser.add_argument("--out", type=Path, default=Path("/tmp/scaserver-profile"))
    parser.add_argument("--profiler", choices=("py-spy", "cprofile", "split", "none"), default="py-spy")
    args = parser.parse_args(argv)
    out: Path = args.out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    port = args.port
    stats = out / "server.prof"
    cprofile = args.profiler == "cprofile"
    python_args = ["-m", "bench.cprofiled", str(stats)] if cprofile else []
    timed = out / "split.json"  # --profiler split: the reactor thread's CPU in and outside the core
    if args.profiler == "split":
        python_args = ["-m", "bench.timesplit", str(timed)]
    server = ScaServer(out / "scaserver", port, port + 1, python_args=python_args)
    helpers: list[subprocess.Popen[bytes]] = []
    try:
        server.start()
        inf = out / "aors.csv"
        rows = gen_aors.write(inf, 2000, 2)
        common = ["-i", HOST, "-nostdin", "-key", "domain", HOST, "-inf", str(inf)]
        population = ["sipp", "-sf", str(OUR_SCENARIOS / "subscribe-sink.xml"), "-p", str(port + 7), *common]
        population += ["-m", str(rows), "-r", "1000", "-l", str(rows), "-timeout", "600s"]
        population += [
            "-default_behaviors",
            "all,-abortunexp",
            "-trace_rtt",
            "-rtt_freq",
            "1",
            f"{HOST}:{port}",
        ]
        helpers.append(subprocess.Popen(population, cwd=out, stdout=subprocess.DEVNULL))
        if args.scenario == "sca-call":
            register((HOST, port), "callee", port + 3)
            callee = ["sipp", "-sf", str(OUR_SCENARIOS / "callee.xml"), "-i", HOST, "-p", str(port + 3)]
            callee += ["-nostdin", "-timeout", "600s"]
            helpers.append(subprocess.Popen(callee, cwd=out, stdout=subprocess.DEVNULL))
        deadline = time.monotonic() + rows / 1000 + 30
        while time.monotonic() < deadline:  # until every subscription is answered
            time.sleep(0.25)
            if sum(max(0, len(f.read_text().splitlines()) - 1) for f in out.glob("*_rtt.csv")) >= rows:
                break
        time.sleep(2)
        raw = out / "profile.txt"
        calls = int(args.rate * args.seconds)
        before = server.usage()
        lag_before = server.loop_lag()
        if cprofile or args.profiler == "split":
            os.kill(server.pid(), signal.SIGUSR1)
        spy = (
            None
            if args.profiler != "py-spy"
            else subprocess.Popen(
                [
                    str(ROOT / ".venv" / "bin" / "py-spy"),
                    "record",
                    "--format",
                    "raw",
                    "--rate",
                    "200",
                    "--duration",
                    f"{int(args.seconds)}",
                    "--output",
                    str(raw),
                    "--pid",
                    str(server.pid()),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        load = ["sipp", "-sf", str(SCENARIOS[args.scenario]), "-p", str(port + 4), *common]
        load += [
            "-m",
            str(int(args.rate * args.seconds)),
            "-r",
            f"{args.rate:g}",
            "-l",
            str(int(args.rate * 2)),
        ]
        load += ["-timeout", f"{args.seconds + 10:g}s", f"{HOST}:{port}"]
        if args.scenario == "sca-call":
            load[-1:-1] = ["-default_behaviors", "all,-abortunexp"]
        load[-1:-1] = ["-trace_screen", "-trace_err"]
        subprocess.run(load, cwd=out, stdout=subprocess.DEVNULL, check=False, timeout=args.seconds + 40)
        cpu_s = server.usage().cpu_s - before.cpu_s
        lag = lag_report(lag_before, server.loop_lag())
        if spy is not None:
            spy.wait(args.seconds + 30)
            report = summarize(raw)
        elif cprofile:
            os.kill(server.pid(), signal.SIGUSR2)
            time.sleep(2)
            report = summarize_cprofile(stats, calls)
        elif args.profiler == "split":
            os.kill(server.pid(), signal.SIGUSR2)
            time.sleep(2)
            figures = json.loads(timed.read_text())
            thread_us, core_us = (1e6 * figures[k] / calls for k in ("thread_s", "core_s"))
            report = (
                f"reactor thread CPU per call: {thread_us:.0f} us, inside the core's entries"
                f" {core_us:.0f} us ({core_us / thread_us:.1%}), outside {thread_us - core_us:.0f} us;"
                f" {figures['entry_calls'] / calls:.1f} entry calls per call"
            )
            parts = [name for name in ("actions", "bus", "serialize", "sendto", "gc") if name in figures]
            if parts:
                report += "\noutside the entries, inclusive: " + ", ".join(
                    f"{name} {1e6 * figures[name] / calls:.0f} us" for name in parts
                )
            if "gc_scanned" in figures:
                report += "\ncollections by generation (objects scanned per call): " + ", ".join(
                    f"{n} ({scanned / calls:.0f})"
                    for n, scanned in zip(figures["gc_collections"], figures["gc_scanned"], strict=True)
                )
        else:
            report = "no profiler"
        report += f"\n\nserver CPU during the load: {cpu_s:.2f} s, {1000 * cpu_s / calls:.3f} ms per call"
        report += f"\nreactor lag during the load: {lag}"
        (out / "summary.txt").write_text(report + "\n")
        print(report)
    finally:
        for helper in helpers:
            helper.terminate()
            helper.wait(10)
        server.stop()


if __name__ == "__main__":
    main()
