"""Run ``scaserver`` with the reactor thread's CPU time split: inside the core's entry points
(``SipRouter.receive``, ``on_timer``, ``connection_lost``, ``flow_failed``) and the rest.

    python -m bench.timesplit OUT.json [-m scaserver.cli] run --sip ... (the arguments of ``scaserver``)

SIGUSR1 starts counting, SIGUSR2 stops and writes ``OUT.json``: the thread CPU seconds of the
reactor thread over the load (``thread_s``), those spent inside the entry points (``core_s``)
and the number of entry calls.  No profiler: each entry costs two ``time.thread_time`` reads
(about 0.3 us), so the figures are those of the server as it runs, not cProfile's.
"""

from __future__ import annotations

import functools
import json
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from scaserver import cli
from scaserver.router.router import SipRouter

ENTRIES = ("receive", "on_timer", "connection_lost", "flow_failed")


class Split:
    def __init__(self) -> None:
        self.on = False
        self.core_s = 0.0
        self.calls = 0
        self.started = 0.0

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


def main() -> int:
    out, args = Path(sys.argv[1]), sys.argv[2:]
    if args[:2] == ["-m", "scaserver.cli"]:
        args = args[2:]
    split = Split()
    for name in ENTRIES:
        setattr(SipRouter, name, split.wrap(getattr(SipRouter, name)))

    def start(_signum: int, _frame: FrameType | None) -> None:
        split.core_s, split.calls, split.on = 0.0, 0, True
        split.started = time.thread_time()

    def stop(_signum: int, _frame: FrameType | None) -> None:
        split.on = False
        thread_s = time.thread_time() - split.started
        out.write_text(json.dumps({"thread_s": thread_s, "core_s": split.core_s, "entry_calls": split.calls}))

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    return cli.main(args)


if __name__ == "__main__":
    sys.exit(main())
