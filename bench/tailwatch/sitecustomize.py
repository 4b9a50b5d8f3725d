"""What the server's reactor thread did, turn by turn, for ``bench/tailcause.py``.

Put this directory on the PYTHONPATH of a ``scaserver run`` with ``BENCH_TAILWATCH=FILE``
in its environment: at exit the process writes FILE (JSON), with

* ``gc``: every collection, ``[wall start, seconds, generation, objects collected]``;
* ``frozen``: ``[wall, gc.get_freeze_count()]`` at the end of a collection, every 5 s at most
  (the walk of the permanent generation is not free);
* ``garbage``: with ``BENCH_TAILWATCH_SAVEALL=1``, the collector keeps what it finds
  (``gc.DEBUG_SAVEALL``) and this counts it by "generation type" (then drops it), once
  the start-up state is frozen;
* ``leak``: at exit, every frozen object unfrozen and a full collection under
  ``gc.DEBUG_SAVEALL`` (after one collection of the unfrozen objects, whose unreachable count
  is given apart: the shutdown's own garbage): how many objects were frozen, how many of them
  were unreachable (by type: reference cycles frozen alive that died frozen), and the pause of
  that full collection;
* ``turns``: every reactor turn that was busy for more than ``BENCH_TAILWATCH_MIN_S``
  (default 0.5 ms): ``[wall start, busy s, CPU s, run-queue wait s, events, SIP timers fired,
  datagram reads s]`` where busy is from the return of ``epoll_wait`` to the end of the next
  ``runUntilCurrent``, CPU and run-queue wait are the reactor thread's own over that time
  (``/proc/thread-self/schedstat``: the rest, busy - CPU - run-queue wait, is time the thread
  slept inside the turn, that is, waited for the GIL), SIP timers fired counts
  ``SipStack._fire`` calls, datagram reads the time in ``udp.Port.doRead``.

Kept in flat ``array`` columns (not tracked by the collector) so the watch itself does not
grow the heap it measures.  Without ``BENCH_TAILWATCH`` nothing is installed.
"""

from __future__ import annotations

import array
import atexit
import gc
import json
import os
import threading
import time
from collections.abc import Callable, Hashable

_OUT = os.environ.get("BENCH_TAILWATCH")
FROZEN_EVERY_S = 5.0


def _kind_of(thing: object) -> str:
    """What an object the collector found is: its type, and a function's or method's own name."""
    kind = type(thing)
    name = f"{kind.__module__}.{kind.__qualname__}"
    if kind.__name__ in {"function", "method"}:
        name += f" {getattr(thing, '__module__', '?')}.{getattr(thing, '__qualname__', '?')}"
    return name


def _install(out: str) -> None:
    min_busy = float(os.environ.get("BENCH_TAILWATCH_MIN_S", "0.0005"))
    gc_cols = [array.array("d") for _ in range(4)]
    turn_cols = [array.array("d") for _ in range(7)]
    state = {"gc_start": 0.0, "fired": 0, "reads": 0.0}
    wall, perf = time.time, time.perf_counter

    saveall = os.environ.get("BENCH_TAILWATCH_SAVEALL") == "1"
    garbage: dict[str, int] = {}
    frozen: list[list[float]] = []
    if saveall:
        gc.set_debug(gc.DEBUG_SAVEALL)

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            state["gc_start"] = perf()
            return
        seconds = perf() - state["gc_start"]
        if wall() > state.get("frozen_next", 0.0):
            state["frozen_next"] = wall() + FROZEN_EVERY_S
            frozen.append([wall(), gc.get_freeze_count()])
        if saveall:
            if gc.get_freeze_count() > 0:  # after the start-up state was frozen
                for thing in gc.garbage:
                    name = f"{info['generation']} {_kind_of(thing)}"
                    garbage[name] = garbage.get(name, 0) + 1
            gc.garbage.clear()
        for col, value in zip(
            gc_cols, (wall() - seconds, seconds, info["generation"], info["collected"]), strict=True
        ):
            col.append(value)

    gc.callbacks.append(on_gc)

    from twisted.internet import epollreactor, udp  # noqa: PLC0415  (the reactor is not installed)

    from scaserver.edge import stack  # noqa: PLC0415

    fire = stack.SipStack._fire

    def counted_fire(self: stack.SipStack, key: Hashable, name: str) -> None:
        state["fired"] += 1
        fire(self, key, name)

    stack.SipStack._fire = counted_fire  # type: ignore[method-assign]

    do_read: Callable[..., None] = udp.Port.doRead

    def timed_read(self: udp.Port) -> None:
        began = perf()
        try:
            do_read(self)
        finally:
            state["reads"] += perf() - began

    setattr(udp.Port, "doRead", timed_read)  # noqa: B010 (a patch mypy would refuse)

    fds: dict[int, int] = {}

    def sched() -> tuple[float, float]:
        tid = threading.get_native_id()
        fd = fds.get(tid)
        if fd is None:
            fd = fds[tid] = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
        cpu, queued, _ = os.pread(fd, 80, 0).split()
        return int(cpu) / 1e9, int(queued) / 1e9

    turn = {"ready": 0.0, "ready_wall": 0.0, "cpu": 0.0, "queued": 0.0, "events": 0}

    class Poller:
        def __init__(self, poller: object) -> None:
            self._poller = poller

        def __getattr__(self, name: str) -> object:
            return getattr(self._poller, name)

        def poll(self, timeout: float, most: int) -> list[tuple[int, int]]:
            events: list[tuple[int, int]] = self._poller.poll(timeout, most)  # type: ignore[attr-defined]
            turn["ready"], turn["ready_wall"] = perf(), wall()
            turn["cpu"], turn["queued"] = sched()
            turn["events"] = len(events)
            state["fired"], state["reads"] = 0, 0.0
            return events

    do_poll: Callable[..., None] = epollreactor.EPollReactor.doPoll

    def watched_poll(self: epollreactor.EPollReactor, timeout: float | None) -> None:
        if not isinstance(self._poller, Poller):
            self._poller = Poller(self._poller)
        turn["ready"] = 0.0
        do_poll(self, timeout)

    run_until_current: Callable[..., None] = epollreactor.EPollReactor.runUntilCurrent

    def watched_run(self: epollreactor.EPollReactor) -> None:
        if not turn["ready"]:
            turn["ready"], turn["ready_wall"] = perf(), wall()
            turn["cpu"], turn["queued"] = sched()
            turn["events"] = 0
            state["fired"], state["reads"] = 0, 0.0
        run_until_current(self)
        busy = perf() - turn["ready"]
        if busy >= min_busy:
            cpu, queued = sched()
            row = (
                turn["ready_wall"],
                busy,
                cpu - turn["cpu"],
                queued - turn["queued"],
                turn["events"],
                state["fired"],
                state["reads"],
            )
            for col, value in zip(turn_cols, row, strict=True):
                col.append(value)
        turn["ready"] = 0.0

    # doIteration is doPoll under another name, bound when the class was made.
    for name, patch in (
        ("doPoll", watched_poll),
        ("doIteration", watched_poll),
        ("runUntilCurrent", watched_run),
    ):
        setattr(epollreactor.EPollReactor, name, patch)

    def dump() -> None:
        # What the frozen generation holds that nothing reaches: reference cycles frozen
        # alive that died frozen (the paced collections' leak, if any), found the only way
        # there is, a full collection over everything; its pause is the stall avoided.
        gc.callbacks.remove(on_gc)
        unfrozen_garbage = gc.collect()  # the shutdown's own garbage, and the last turns'
        frozen_count = gc.get_freeze_count()
        gc.unfreeze()
        gc.set_debug(gc.DEBUG_SAVEALL)
        began = perf()
        gc.collect()
        reclaim_s = perf() - began
        leaked: dict[str, int] = {}
        for thing in gc.garbage:
            name = _kind_of(thing)
            leaked[name] = leaked.get(name, 0) + 1
        leak = {
            "frozen": frozen_count,
            "unfrozen_unreachable": unfrozen_garbage,
            "frozen_unreachable": len(gc.garbage),
            "full_collection_s": reclaim_s,
            "by_type": dict(sorted(leaked.items(), key=lambda kv: -kv[1])[:40]),
        }
        gcs = [list(row) for row in zip(*gc_cols, strict=True)]
        turns = [list(row) for row in zip(*turn_cols, strict=True)]
        with open(out, "w") as f:
            json.dump(
                {
                    "frozen": frozen,
                    "leak": leak,
                    "garbage": garbage,
                    "gc": gcs,
                    "turns": turns,
                    "freeze_count": gc.get_freeze_count(),
                },
                f,
            )

    atexit.register(dump)


if _OUT:
    _install(_OUT)
