"""Memory per restored call-info subscription, in process, with tracemalloc.

    python -m bench.memory [--count N] [--top K]

Seeds a fresh SQLite database with N call-info subscriptions (bench/gen_subscriptions.py,
2 members per line), loads them as the server does (``StoredState.load``), restores them into
a core built by ``make_core`` and runs the restore's actions through a ``SipStack`` whose
UDP endpoint only counts datagrams (each full-state NOTIFY is then answered with a 200, so
that its client transaction ends as on the wire).  Prints the bytes still allocated per
subscription once the loaded rows are dropped, and the K allocation sites holding most.
"""

from __future__ import annotations

import argparse
import gc
import heapq
import socket
import subprocess
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path

from bench import gen_subscriptions
from bench.procs import PYTHON, ROOT
from scaserver.app import make_core
from scaserver.config.schema import Settings
from scaserver.edge.collector import tune_garbage_collector
from scaserver.edge.pacing import RESTORE_NOTIFY_BATCH, Paced
from scaserver.edge.persistence import StoredState
from scaserver.edge.stack import SipStack, Transports
from scaserver.events import EventBus
from scaserver.sca.subscription import DialogKey
from scaserver.sip.message import Peer, Request
from scaserver.sip.parser import parse_message
from scaserver.sip.trust import TrustedPeers
from scaserver.store.sql import SqlStore


class HeapClock:
    """The part of the reactor the stack uses, with a heap (``task.Clock`` sorts its whole
    list on every ``callLater``: too slow for 100k timers)."""

    def __init__(self, now: float) -> None:
        self.now = now
        self._calls: list[tuple[float, int, HeapCall]] = []
        self._seq = 0

    def seconds(self) -> float:
        return self.now

    def callLater(  # noqa: N802
        self,
        delay: float,
        callable: Callable[..., object],  # the name IReactorTime gives it
        *args: object,
        **kw: object,
    ) -> HeapCall:
        call = HeapCall(self, callable, args)
        self.push(call, delay)
        return call

    def push(self, call: HeapCall, delay: float) -> None:
        """``call`` due ``delay`` from now; an entry of it pushed before is dead from now on."""
        self._seq += 1
        call.seq = self._seq
        heapq.heappush(self._calls, (self.now + delay, self._seq, call))

    def advance(self, seconds: float) -> None:
        end = self.now + seconds
        while self._calls and self._calls[0][0] <= end:
            when, seq, call = heapq.heappop(self._calls)
            self.now = max(self.now, when)
            if call.live and call.seq == seq:
                call.live = False
                call.function(*call.args)
        self.now = end


class HeapCall:
    def __init__(self, clock: HeapClock, function: Callable[..., object], args: tuple[object, ...]) -> None:
        self.clock, self.function, self.args, self.live, self.seq = clock, function, args, True, 0

    def active(self) -> bool:
        return self.live

    def cancel(self) -> None:
        self.live = False

    def reset(self, delay: float) -> None:
        """Due ``delay`` from now instead (the stack's one timer moves earlier)."""
        self.clock.push(self, delay)


class CountingDatagram:
    """A UDP endpoint that keeps the NOTIFYs it is given, to answer them."""

    family = socket.AF_INET

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Peer]] = []

    def send(self, data: bytes, peer: Peer) -> None:
        self.sent.append((data, peer))


def ok_for(data: bytes) -> bytes:
    request = parse_message(data)
    assert isinstance(request, Request)
    lines = [b"SIP/2.0 200 OK"]
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        for value in request.headers.lines(name):
            lines.append(f"{name}: {value}".encode())
    return b"\r\n".join([*lines, b"Content-Length: 0", b"", b""])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=10000)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--timing", action="store_true", help="no tracemalloc: time the load and the restore")
    parser.add_argument("--batch", type=int, default=RESTORE_NOTIFY_BATCH, help="NOTIFYs per turn (--timing)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        db = Path(work) / "s.db"
        url = f"sqlite:///{db}"
        subprocess.run(
            [str(PYTHON), "-m", "scaserver.cli", "db", "upgrade", "--db", url], cwd=ROOT, check=True
        )
        gen_subscriptions.seed(db, args.count, 5999)
        store = SqlStore(url)
        tune_garbage_collector()  # as `scaserver run` does before it restores
        started = time.perf_counter()
        state = StoredState.load(store)
        loaded = time.perf_counter()
        settings = Settings()
        core = make_core(
            settings,
            credentials=lambda *_: None,
            trusted=TrustedPeers(()),
            lines=state.lines,
            secret=b"s" * 32,
        )
        clock = HeapClock(time.time())
        transports = Transports()
        datagram = CountingDatagram()
        transports.add_datagram(datagram)
        stack = SipStack(core, clock, transports, EventBus())
        gc.collect()
        if not args.timing:
            tracemalloc.start(8)
        before = tracemalloc.take_snapshot() if not args.timing else None
        now = clock.seconds()
        restoring = time.perf_counter()
        actions = core.sca.restore(state.lines, state.subscriptions, (), now)
        engine_done = time.perf_counter()
        stack.run(core.run(actions, now))
        sent = time.perf_counter()
        restored = len(datagram.sent)
        if before is None:
            print(
                f"load {loaded - started:.2f} s, engine restore {engine_done - restoring:.2f} s,"
                f" core.run + stack.run (NOTIFYs sent) {sent - engine_done:.2f} s, {restored} NOTIFYs"
                f" (all in one reactor turn: a stall of {sent - restoring:.2f} s)"
            )
            paced_restore(settings, state, args.batch)
            return
        for data, peer in datagram.sent:
            stack.bytes_received(ok_for(data), Peer(peer.transport, peer.host, peer.port))
        datagram.sent.clear()
        clock.advance(40.0)  # timer K and every other transaction timer
        del state, actions  # the server keeps neither the loaded rows nor the restore's actions
        gc.collect()
        after = tracemalloc.take_snapshot()
        stats = after.compare_to(before, "traceback")
        total = sum(stat.size_diff for stat in stats)
        print(f"{restored} full-state NOTIFYs for {args.count} subscriptions")
        print(f"{total / args.count:.0f} bytes per subscription still allocated")
        for stat in stats[: args.top]:
            frames = [f"{f.filename.rsplit('/', 2)[-1]}:{f.lineno}" for f in stat.traceback[-4:]]
            where = " < ".join(reversed(frames))
            print(f"{stat.size_diff / args.count:8.0f} B/sub  {stat.count_diff:+8d}  {where}")


def paced_restore(settings: Settings, state: StoredState, batch: int) -> None:
    """The restore as the server runs it: the state at once, then the full-state NOTIFYs
    ``batch`` per reactor turn (``edge.pacing.Paced``); each NOTIFY is answered after its
    turn, and the clock moves by the time each turn took.  Prints the longest turn."""
    core = make_core(
        settings, credentials=lambda *_: None, trusted=TrustedPeers(()), lines=state.lines, secret=b"s" * 32
    )
    clock = HeapClock(time.time())
    transports = Transports()
    datagram = CountingDatagram()
    transports.add_datagram(datagram)
    stack = SipStack(core, clock, transports, EventBus())
    turns: list[float] = []
    started = time.perf_counter()
    actions, owed = core.sca.restore_state(state.lines, state.subscriptions, (), clock.seconds())
    stack.run(core.run(actions, clock.seconds()))
    turns.append(time.perf_counter() - started)

    def step(dialogs: Sequence[DialogKey], now: float) -> None:
        begun = time.perf_counter()
        stack.run(core.run(core.sca.notify_restored(dialogs, now), now))
        turns.append(time.perf_counter() - begun)

    paced = Paced(clock, owed, step, batch=batch)
    paced.start()
    while not paced.done:
        clock.advance(turns[-1])
        for data, peer in datagram.sent:  # the subscribers answer between turns
            stack.bytes_received(ok_for(data), Peer(peer.transport, peer.host, peer.port))
        datagram.sent.clear()
    total = time.perf_counter() - started
    notify_turns = sorted(turns[1:]) or [0.0]
    print(
        f"paced, {batch} NOTIFYs per turn: restore turn {turns[0]:.3f} s, {len(turns) - 1} NOTIFY turns,"
        f" median {notify_turns[len(notify_turns) // 2] * 1000:.1f} ms,"
        f" longest {notify_turns[-1] * 1000:.1f} ms; {total:.2f} s in all (answers included)"
    )


if __name__ == "__main__":
    main()
