"""The floor of a SIP server in Python on Twisted: what answering a REGISTER costs with no SIP.

    python -m bench.floor [--rates 2500 5600] [--runs 3] [--warm N] [--pypy TREE] [--out DIR]

Runs ``register.xml`` (the registrar step of ``bench/run``: one REGISTER per row of the
2000-line population, each answered 200) side by side against three servers, each step
measured the way ``bench/run`` measures one (SIPp at a fixed rate, the server's CPU seconds
from /proc over the step, medians of ``--runs``):

* ``floor``: :class:`FloorResponder` (``python -m bench.floor --serve PORT``), the cheapest
  answer a Python program on Twisted's epoll reactor can give: one ``datagramReceived`` per
  datagram, the head split into lines, the five lines a response copies picked by their
  names, a tag and an ``expires`` added, one ``write``.  No parser, no validation, no
  transaction, no registrar, no database, no log, no metrics: every one of those is work a
  real server adds on top of this;
* ``kamailio-1w``: the reference with one worker (``bench/procs.py``);
* ``scaserver``: this tree, as ``bench/run`` starts it;
* ``scaserver-pypy`` (with ``--pypy TREE``): this tree built for PyPy by ``bench/pypybuild.py``.

``--warm N`` runs N steps of each rate on each server before the measured ones, unrecorded:
PyPy's JIT compiles the hot loops during the first few thousand requests.

The ratio of ``floor`` to Kamailio is the lowest ratio any registrar written in Python on
Twisted could reach on this machine: it is what the interpreter and the reactor cost per
request, before any SIP is done.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import gen_aors
from bench.harness import (
    KAM_SCENARIOS,
    LINES,
    MEMBERS,
    SEIZE_LINES_FIRST,
    STEP_GRACE_S,
    STEP_SECONDS,
    pick_base_port,
)
from bench.procs import PYTHON, ROOT, Kamailio, ScaServer, Target, answers_options
from bench.sippstep import Step, run_step
from bench.sipua import HOST

NAMES = ("floor", "kamailio-1w", "scaserver")
COPIED = (b"via", b"from", b"call-id", b"cseq", b"contact")


def answer(datagram: bytes) -> bytes | None:
    """The 200 to a request: its Via, From, Call-ID, CSeq and Contact lines copied (the
    Contact with ``;expires=3600``), its To with a tag; None for a response or no request."""
    head, _, _ = datagram.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    if lines[0].startswith(b"SIP/2.0"):
        return None
    out = [b"SIP/2.0 200 OK"]
    for line in lines[1:]:
        name = line[: line.find(b":")].strip().lower()
        if name in COPIED:
            out.append(line + b";expires=3600" if name == b"contact" else line)
        elif name == b"to":
            out.append(line + b";tag=floor")
    out.append(b"Content-Length: 0")
    return b"\r\n".join(out) + b"\r\n\r\n"


def serve(port: int) -> None:
    """Answer every request on ``HOST:port`` with :func:`answer` until killed."""
    from twisted.internet import epollreactor  # noqa: PLC0415 (the reactor is installed here)

    epollreactor.install()  # type: ignore[no-untyped-call]
    from twisted.internet import reactor as installed  # noqa: PLC0415
    from twisted.internet.protocol import DatagramProtocol  # noqa: PLC0415

    reactor: Any = installed  # the epoll reactor: IReactorUDP and IReactorCore

    class Responder(DatagramProtocol):
        def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:  # noqa: N802
            response = answer(datagram)
            port: Any = self.transport  # twisted.internet.udp.Port: write(datagram, addr)
            if response is not None and port is not None:
                port.write(response, addr)

    reactor.listenUDP(port, Responder(), interface=HOST)
    reactor.run()


class FloorResponder(Target):
    """:func:`serve` in a process of its own."""

    def __init__(self, workdir: Path, port: int) -> None:
        self.name, self.port, self.workdir = "floor", port, workdir
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *, auth: bool = False) -> float:
        self.workdir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        command = [str(PYTHON), "-m", "bench.floor", "--serve", str(self.port)]
        self.process = subprocess.Popen(command, cwd=ROOT)
        if not answers_options(self.port, 30.0):
            self.stop()
            raise RuntimeError("the floor responder did not answer OPTIONS")
        return time.monotonic() - started

    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            process.wait(10)


def median_cpu(steps: Sequence[Step]) -> dict[str, float]:
    first = [next(iter(s.latency.values())) for s in steps if s.latency]
    return {
        "cpu_ms_per_register": statistics.median(s.cpu_ms_per_call for s in steps),
        "cpu_pct": statistics.median(s.cpu_pct for s in steps),
        "p99_ms": statistics.median(f.p99_ms for f in first) if first else float("nan"),
        "passed": float(all(s.passed for s in steps)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[2500.0, 5600.0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "floor")
    parser.add_argument("--warm", type=int, default=0, help="unrecorded steps before the measured ones")
    parser.add_argument("--pypy", type=Path, help="also a tree built by bench/pypybuild.py")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve)
        return 0
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    base = pick_base_port()
    inf = out / "aors.csv"
    gen_aors.write(inf, LINES, MEMBERS, SEIZE_LINES_FIRST)
    targets: list[Target] = [
        FloorResponder(out / "floor", base),
        Kamailio(out / "kamailio-1w", base + 40, 1),
        ScaServer(out / "scaserver", base + 80, base + 81),
    ]
    if args.pypy is not None:
        pypy = ScaServer(
            out / "scaserver-pypy", base + 90, base + 91, tree=args.pypy.resolve(), name="scaserver-pypy"
        )
        targets.append(pypy)
    results: dict[str, dict[str, dict[str, float]]] = {}
    try:
        for target in targets:
            target.start()
        for rate in args.rates:
            for index, target in enumerate(targets):
                steps = [
                    run_step(
                        target,
                        KAM_SCENARIOS / "register.xml",
                        out / target.name / f"r{rate:g}-{n}",
                        name="register",
                        rate=rate,
                        calls=int(rate * STEP_SECONDS),
                        local_port=base + 120 + index,
                        inf=inf,
                        timeout_s=STEP_SECONDS + STEP_GRACE_S,
                    )
                    for n in range(-args.warm, args.runs)
                ][args.warm :]
                figures = median_cpu(steps)
                results.setdefault(f"{rate:g}", {})[target.name] = figures
                print(f"{rate:6g}/s {target.name:12} {json.dumps(figures)}", flush=True)
    finally:
        for target in targets:
            target.stop()
    names = [target.name for target in targets]
    versus = [name for name in names if name != "kamailio-1w"]
    print("\n| REGISTER/s | " + " | ".join([*names, *(f"{name} / kamailio" for name in versus)]) + " |")
    print("|---" * (1 + len(names) + len(versus)) + "|")
    for rate, row in results.items():
        cost = {name: row[name]["cpu_ms_per_register"] for name in names}
        shown = [f"{cost[n]:.4f}" for n in names] + [f"{cost[n] / cost['kamailio-1w']:.2f}" for n in versus]
        print(f"| {rate} | " + " | ".join(shown) + " |")
    (out / "results.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
