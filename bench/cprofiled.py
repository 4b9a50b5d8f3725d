"""Run ``scaserver`` with a deterministic profiler that the benchmark switches on and off.

    python -m bench.cprofiled OUT.prof [-m scaserver.cli] run --sip ... (the arguments of ``scaserver``)

SIGUSR1 starts cProfile, SIGUSR2 stops it and writes its statistics to OUT.prof, so that
only the load the benchmark drives is profiled (not start-up, restore or the population).
"""

from __future__ import annotations

import cProfile
import signal
import sys
import time
from types import FrameType

from scaserver import cli


def main() -> int:
    out, args = sys.argv[1], sys.argv[2:]
    if args[:2] == ["-m", "scaserver.cli"]:
        args = args[2:]
    # CPU time of the reactor thread: time spent preempted by other processes (2 shared cores)
    # or waiting for the GIL is not charged to whatever function was running.
    profiler = cProfile.Profile(time.thread_time)

    def start(_signum: int, _frame: FrameType | None) -> None:
        profiler.enable()

    def stop(_signum: int, _frame: FrameType | None) -> None:
        profiler.disable()
        profiler.dump_stats(out)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    return cli.main(args)


if __name__ == "__main__":
    sys.exit(main())
