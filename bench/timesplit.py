"""Run ``scaserver`` with the reactor thread's CPU time split: inside the core's entry points
(``SipRouter.receive``, ``on_timer``, ``connection_lost``, ``flow_failed``) and the rest.

    python -m bench.timesplit OUT.json [-m scaserver.cli] run --sip ... (the arguments of ``scaserver``)

SIGUSR1 starts counting, SIGUSR2 stops and writes ``OUT.json``: the thread CPU seconds of the
reactor thread over the load (``thread_s``), those spent inside the entry points (``core_s``)
and the number of entry calls.  No profiler: each entry costs two ``time.thread_time`` reads
(about 0.3 us), so the figures are those of the server as it runs, not cProfile's.

The part outside the entries is split further, the same way (each figure inclusive, the
reactor thread only): the stack's execution of the actions the core returned
(``SipStack.run``: sends, timers and the bus), the bus's subscribers (``EventBus.publish``,
inside the former), the serializer and the ``sendto`` of a datagram (inside the former), and
the cyclic garbage collector's collections (timed from its start to its stop callback).
"""

from __future__ import annotations

import functools
import gc
import json
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from scaserver import cli
from scaserver.edge import stack
from scaserver.edge.stack import SipStack
from scaserver.edge.udp import UdpTransport
from scaserver.events import EventBus
from scaserver.router.router import SipRouter

ENTRIES = ("receive", "on_timer", "connection_lost", "flow_failed")


class Split:
    def __init__(self) -> None:
        self.on = False
        self.core_s = 0.0
        self.calls = 0
        self.started = 0.0
        self.parts: dict[str, float] = dict.fromkeys(PARTS, 0.0)
        self._gc_began: float | None = None
        self.scanned = [0, 0, 0]
        self.collections = [0, 0, 0]
        self._reactor_thread = threading.get_ident()

    def wrap(self, method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if not self.on:
                return method(*args, **kwargs)
            begin = time.thread_time()
            try:
                return method(*args, **kwargs)
            finally:
                self.core_s += time.thread_time() - begin
                self.calls += 1

        return timed

    def part(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        """``function`` with its reactor-thread time added to ``parts[name]``."""
        parts = self.parts

        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if not self.on or threading.get_ident() != self._reactor_thread:
                return function(*args, **kwargs)
            begin = time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                parts[name] += time.thread_time() - begin

        return timed

    def collection(self, phase: str, info: dict[str, int]) -> None:
        if not self.on or threading.get_ident() != self._reactor_thread:
            return
        if phase == "start":
            # The objects the collection scans: those of its generation and the younger ones
            # (counted before the clock starts).
            generation = info["generation"]
            self.scanned[generation] += sum(len(gc.get_objects(g)) for g in range(generation + 1))
            self.collections[generation] += 1
            self._gc_began = time.thread_time()
        elif self._gc_began is not None:
            self.parts["gc"] += time.thread_time() - self._gc_began
            self._gc_began = None


PARTS = ("actions", "bus", "serialize", "sendto", "gc")


def main() -> int:
    out, args = Path(sys.argv[1]), sys.argv[2:]
    if args[:2] == ["-m", "scaserver.cli"]:
        args = args[2:]
    split = Split()
    for name in ENTRIES:
        setattr(SipRouter, name, split.wrap(getattr(SipRouter, name)))
    SipStack.run = split.part("actions", SipStack.run)  # type: ignore[method-assign]
    EventBus.publish = split.part("bus", EventBus.publish)  # type: ignore[method-assign]
    setattr(stack, "serialize", split.part("serialize", getattr(stack, "serialize")))  # noqa: B009, B010
    UdpTransport._send_on = split.part("sendto", UdpTransport._send_on)  # type: ignore[method-assign]
    gc.callbacks.append(split.collection)

    def start(_signum: int, _frame: FrameType | None) -> None:
        split.core_s, split.calls, split.on = 0.0, 0, True
        split.parts.update(dict.fromkeys(PARTS, 0.0))
        split.scanned[:], split.collections[:] = [0, 0, 0], [0, 0, 0]
        split.started = time.thread_time()

    def stop(_signum: int, _frame: FrameType | None) -> None:
        split.on = False
        thread_s = time.thread_time() - split.started
        out.write_text(
            json.dumps(
                {
                    "thread_s": thread_s,
                    "core_s": split.core_s,
                    "entry_calls": split.calls,
                    **split.parts,
                    "gc_collections": split.collections,
                    "gc_scanned": split.scanned,
                }
            )
        )

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    return cli.main(args)


if __name__ == "__main__":
    sys.exit(main())
