"""What the fan-out probe waits for: its slow samples set against what the server did then.

    python -m bench.tailcause [--rate 250] [--samples 150] [--members 2 8 32] [--out DIR]

Runs the fan-out measurement of ``bench/run`` ("NOTIFY fan-out ... under seize load at half
the max rate") on its own, with the server watched from inside and outside:

* the server (this tree, ``bench.procs.ScaServer``) runs with ``bench/tailwatch`` on its
  PYTHONPATH: its sitecustomize records every garbage collection (wall start, pause,
  generation) and every reactor turn busy for more than 0.5 ms (wall start, busy time, the
  reactor thread's CPU and run-queue wait over it, epoll events, SIP timers fired, time in
  UDP reads), written at exit;
* a sampler process reads the server's UDP socket's ``rx_queue`` from ``/proc/net/udp``
  every millisecond (the bytes of datagrams waiting for the reactor);
* the load is the harness's: 2000 lines x 2 members subscribed to call-info from a SIPp that
  stays up as their NOTIFY sink (``bench.harness.population``), then ``load-seize.xml`` at
  ``--rate`` cycles/s from a second SIPp, one second before the probe starts;
* the probe is ``bench.probe.LineProbe`` for each member count, each sample's wall start kept.

For every probe sample the report gives the latency and, over the sample's window, the time
the reactor spent in garbage collections (by generation), in turns longer than 5 ms and
whether those were CPU, waiting for a core (run queue) or sleeping (the GIL), the most bytes
queued in the socket, and the SIP timers fired.  It sums the decomposition over the samples
above the 5 ms target and over the top 1%, and prints the pauses of every generation and the
turns over 50 ms (the stalls).  Everything is written to ``--out`` (default
``bench/out/tailcause``): ``report.json``, the raw ``watch.json`` and ``rxq.txt``.
``BENCH_SCASERVER_TOML`` adds server configuration, as for ``bench/run``.

At exit the server also reports what the collector could not reach in the frozen generation
(``leak`` in the report, see bench/tailwatch/sitecustomize.py) and, every 5 s, how many objects
were frozen (``frozen``, seconds from the first probe sample): with ``--settle 40`` the load's
transactions have all waited out Timer J (32 s) before that audit, so the count should fall back
to what it was before the load, and whatever stays unreachable is a leak.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import gen_aors, probe
from bench.harness import (
    KAM_SCENARIOS,
    LINES,
    MEMBERS,
    PROBE_FIRST,
    SEIZE_LINES_FIRST,
    Context,
    pick_base_port,
    population,
    ports,
    spawn,
    terminate,
)
from bench.procs import PYTHON, ROOT, ScaServer
from bench.sipua import HOST

SLOW_MS = 5.0
LONG_TURN_S = 0.005
GC_BACKLOG_S = 0.1
"""A collection this long before a sample still delays it: the datagrams queued during the
pause are read first (at half a core of load, the backlog takes as long again to drain)."""


def sample_rx_queue(port: int, out: Path, seconds: float) -> None:
    """Every millisecond for ``seconds``: ``wall rx_queue_bytes`` of the UDP socket on ``port``."""
    local = f":{port:04X} "
    deadline = time.monotonic() + seconds
    last = -1
    with out.open("w") as f:
        while time.monotonic() < deadline:
            with open("/proc/net/udp") as table:
                for line in table:
                    fields = line.split()
                    if len(fields) > 4 and fields[1].endswith(local.strip()):
                        queued = int(fields[4].split(":")[1], 16)
                        if queued or last:
                            f.write(f"{time.time():.6f} {queued}\n")
                        last = queued
                        break
            time.sleep(0.001)


def overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def decompose(
    window: tuple[float, float], watch: dict[str, Any], rxq: list[tuple[float, int]]
) -> dict[str, float]:
    start, end = window
    out = {"gc0_ms": 0.0, "gc1_ms": 0.0, "gc2_ms": 0.0, "long_turns_ms": 0.0, "long_cpu_ms": 0.0}
    out |= {"long_runq_ms": 0.0, "long_slept_ms": 0.0, "timers": 0.0, "reads_ms": 0.0, "max_rxq_b": 0.0}
    out["max_turn_ms"] = out["gc_before_ms"] = 0.0
    for began, seconds, generation, _ in watch["gc"]:
        out[f"gc{int(generation)}_ms"] += 1000 * overlap(start, end, began, began + seconds)
        out["gc_before_ms"] += 1000 * overlap(start - GC_BACKLOG_S, start, began, began + seconds)
    for began, busy, cpu, runq, _events, fired, reads in watch["turns"]:
        if began > end or began + busy < start:
            continue
        out["timers"] += fired
        out["reads_ms"] += 1000 * reads
        out["max_turn_ms"] = max(out["max_turn_ms"], 1000 * busy)
        if busy >= LONG_TURN_S:
            share = overlap(start, end, began, began + busy) / busy
            out["long_turns_ms"] += 1000 * busy * share
            out["long_cpu_ms"] += 1000 * cpu * share
            out["long_runq_ms"] += 1000 * runq * share
            out["long_slept_ms"] += 1000 * max(0.0, busy - cpu - runq) * share
    out["max_rxq_b"] = float(max((q for t, q in rxq if start <= t <= end), default=0))
    return {key: round(value, 2) for key, value in out.items()}


def summed(rows: list[dict[str, float]]) -> dict[str, float]:
    if not rows:
        return {}
    return {key: round(statistics.fmean(row[key] for row in rows), 2) for key in rows[0]}


def pauses(watch: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for generation in (0, 1, 2):
        ms = sorted(1000 * s for _, s, g, _ in watch["gc"] if int(g) == generation)
        if ms:
            out[str(generation)] = {
                "n": len(ms),
                "p50_ms": round(ms[len(ms) // 2], 2),
                "max_ms": round(ms[-1], 2),
                "over_5ms": sum(1 for v in ms if v > 5),
            }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=250.0)
    parser.add_argument("--samples", type=int, default=150)
    parser.add_argument("--members", type=int, nargs="+", default=[2, 8, 32])
    parser.add_argument(
        "--settle", type=float, default=0.0, help="seconds idle after the load, before the stop"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "tailcause")
    parser.add_argument(
        "--sample-rx-queue", nargs=3, metavar=("PORT", "FILE", "SECONDS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.sample_rx_queue:
        port, file, seconds = args.sample_rx_queue
        sample_rx_queue(int(port), Path(file), float(seconds))
        return 0
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    ctx = Context(
        out, 1, False, pick_base_port(), time.monotonic() + 3600, lambda text: print(text, flush=True)
    )
    p = ports(ctx, 0)
    server = ScaServer(out / "scaserver", p["sip"], p["http"])
    watch_file = out / "watch.json"
    watch_file.unlink(missing_ok=True)
    os.environ["BENCH_TAILWATCH"] = str(watch_file)
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT / "bench" / "tailwatch"), str(ROOT)])
    inf = out / "aors-seize.csv"
    gen_aors.write(inf, LINES, MEMBERS, SEIZE_LINES_FIRST)
    duration = 3.0 + len(args.members) * (args.samples * 0.03 + 3.0)
    samples: list[tuple[int, float, float]] = []  # members, wall start, latency ms
    failures = 0
    server.start()
    try:
        population(ctx, [server], {"scaserver": 0}, inf, "seize")
        work = out / "background"
        work.mkdir(exist_ok=True)
        command = ["sipp", "-sf", str(KAM_SCENARIOS / "load-seize.xml"), "-i", HOST, "-p", str(p["bg"])]
        command += [
            "-nostdin",
            "-key",
            "domain",
            HOST,
            "-inf",
            str(inf),
            "-m",
            str(int(args.rate * duration)),
        ]
        command += ["-r", f"{args.rate:g}", "-l", str(int(args.rate * 2)), "-timeout", f"{duration + 5:g}s"]
        command += [f"{HOST}:{server.port}"]
        background = spawn(ctx, command, work, work / "sipp.out")
        rxq_file = out / "rxq.txt"
        sampler = subprocess.Popen(
            [
                str(PYTHON),
                "-m",
                "bench.tailcause",
                "--sample-rx-queue",
                str(server.port),
                str(rxq_file),
                str(duration + 60),
            ],
            cwd=ROOT,
            env={k: v for k, v in os.environ.items() if k != "BENCH_TAILWATCH"},  # no watch of its own
        )
        time.sleep(1.0)
        for members in args.members:
            line = probe.LineProbe((HOST, server.port), str(PROBE_FIRST + members), members)
            try:
                if not line.subscribe_members(str(time.time_ns())):
                    raise RuntimeError(f"the {members} members could not subscribe")
                for wall, value in line.paced(args.samples, 0.03):
                    if value is None:
                        failures += 1
                    else:
                        samples.append((members, wall, value))
            finally:
                line.close()
        sampler.terminate()
        sampler.wait(10)
        terminate(ctx, background)
        time.sleep(args.settle)
    finally:
        for process in list(ctx.helpers):
            terminate(ctx, process)
        server.stop()
    watch = json.loads(watch_file.read_text())
    rxq = [(float(t), int(q)) for t, q in (line.split() for line in rxq_file.read_text().splitlines())]
    rows = [
        {"members": m, "latency_ms": round(v, 2)} | decompose((t, t + v / 1000), watch, rxq)
        for m, t, v in samples
    ]
    load_start, load_end = samples[0][1], samples[-1][1]
    report: dict[str, Any] = {"rate": args.rate, "failures": failures, "per_members": {}}
    for members in args.members:
        mine = sorted((r for r in rows if r["members"] == members), key=lambda r: r["latency_ms"])
        if not mine:
            continue
        lat = [r["latency_ms"] for r in mine]
        top = mine[-max(1, len(mine) // 100) :]
        report["per_members"][str(members)] = {
            "n": len(mine),
            "p50_ms": lat[len(lat) // 2],
            "p99_ms": lat[min(len(lat) - 1, int(0.99 * len(lat)))],
            "max_ms": lat[-1],
            "slow": sum(1 for v in lat if v > SLOW_MS),
            "mean_of_slow": summed([r for r in mine if r["latency_ms"] > SLOW_MS]),
            "mean_of_fast": summed([r for r in mine if r["latency_ms"] <= SLOW_MS]),
            "top": top,
        }
    in_load = [row for row in watch["turns"] if load_start <= row[0] <= load_end]
    report["gc_pauses"] = pauses({"gc": [g for g in watch["gc"] if load_start <= g[0] <= load_end]})
    report["turns_over_50ms"] = [
        [round(1000 * v, 1) for v in row[1:4]] + row[4:6] for row in in_load if row[1] > 0.05
    ]
    report["turns_over_5ms"] = sum(1 for row in in_load if row[1] > LONG_TURN_S)
    report["freeze_count"] = watch["freeze_count"]
    report["leak"] = watch["leak"]
    report["frozen"] = [[round(t - load_start, 1), n] for t, n in watch["frozen"]]
    (out / "report.json").write_text(json.dumps(report, indent=1))
    (out / "samples.json").write_text(json.dumps(rows))
    brief = {k: v for k, v in report.items() if k != "per_members"}
    print(json.dumps(brief, indent=1))
    for members, figures in report["per_members"].items():
        shown = {k: v for k, v in figures.items() if k != "top"}
        print(members, json.dumps(shown))
        for row in figures["top"]:
            print("   top", json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
