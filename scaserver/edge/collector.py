"""The cyclic garbage collector of a running server, tuned to keep full collections off the
SIP path."""

from __future__ import annotations

import gc
from typing import Final

GC_THRESHOLDS: Final = (50_000, 20, 100)
"""Generation thresholds of the cyclic garbage collector for a running server (CPython's
defaults are (700, 10, 10))."""


def tune_garbage_collector() -> None:
    """Keep full garbage collections off the SIP path.

    Transactions live for seconds (timer J is 32 s on UDP), so under load hundreds of
    thousands of message objects reach the oldest generation, and CPython's default
    thresholds then scan all of them every few seconds: a 100-500 ms stop of the reactor
    (bench/RESULTS.md).  The start-up state (imports, restored subscriptions and bindings) is
    frozen out of collection; young cycles are still collected often (every 50 000
    allocations), the oldest generation rarely.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
