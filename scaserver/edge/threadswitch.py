"""How long the reactor thread can wait for the GIL behind the database threads.

The reactor thread shares the interpreter's lock with the threads of the database pool
(the write-behind flushes, the reports).  When a thread that holds the lock runs Python
code, a thread that wants it waits for the holder's switch interval before asking it to
let go: CPython's default is 5 ms, and a reactor turn may ask several times.  Under a
REGISTER load every request queues a binding row and a history row, so a flush a second
builds thousands of rows in Python; at 2500-3800 REGISTER/s reactor turns slept 10-17 ms
inside a turn waiting for the lock, which was most of the p99 (bench/RESULTS.md, "The
reactor thread and the write-behind thread").  A switch interval of
:data:`SWITCH_INTERVAL_S` bounds each wait to that, and costs nothing while no other
thread runs Python (the lock is only handed over when another thread asks for it).
"""

from __future__ import annotations

import sys
from typing import Final

__all__ = ["SWITCH_INTERVAL_S", "shorten_thread_switch_interval"]

SWITCH_INTERVAL_S: Final = 0.0005
"""The running server's switch interval (``sys.setswitchinterval``), in seconds."""


def shorten_thread_switch_interval() -> float:
    """Before the server starts: set :data:`SWITCH_INTERVAL_S`; the interval it replaced."""
    was = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    return was
