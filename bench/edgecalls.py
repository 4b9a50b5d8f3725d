"""CPU of the SIP edge per datagram, in process: the work around the core's entry points.

    python -m bench.edgecalls [--cycles N] [--repeat R] [--top K]
    python -m bench.edgecalls --compare OTHER_TREE [--rounds K]     # alternate two trees

Drives the seize cycle of ``bench.corecalls`` (a line-seize SUBSCRIBE, its NOTIFYs and their
200s, the release and its NOTIFYs: 8 datagrams in, 8 out) through the real edge:
``UdpTransport.datagramReceived`` on a loopback socket, the :class:`SipStack` with a
:class:`SourceGuard` (``allow = 127.0.0.0/8``, as ``bench.procs`` configures the server), its
timer heap and ``Transports``, on a ``task.Clock`` moved 1/40 s per cycle (whose ``seconds``
is made a C call, like the reactor's ``time.time``).  The real core (``make_core``, as
``bench.corecalls`` builds it) runs each batch once while the actions it returns are
recorded; the batch is then replayed on a fresh edge whose core hands the recorded actions
back, so that what is counted and timed is the edge alone (and the serializer it calls).

Prints the Python calls per datagram in the edge (cProfile; the serializer and the stub
core's entry excluded), the calls of each edge function per cycle, and the microseconds of
thread CPU per datagram, min over ``--repeat`` replays (the cyclic collector off; the
serializer's time not counted, its output made beforehand: the ``sendto`` of each datagram is).
``--compare`` runs this file under ``PYTHONPATH=OTHER_TREE`` and under this tree by turns,
``--rounds`` times each, and prints both minimums.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import gc
import os
import pstats
import socket
import subprocess
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Hashable
from pathlib import Path

from twisted.internet.task import Clock

from bench.corecalls import DOMAIN, FIRST_LINE, Driver, ok_for, subscribe_text
from scaserver.edge import stack as stack_module
from scaserver.edge.resolver import HostsTable
from scaserver.edge.stack import SipStack, Transports
from scaserver.edge.udp import UdpTransport
from scaserver.events import EventBus
from scaserver.guard.sources import SecuritySettings, SourceGuard
from scaserver.sip.actions import Action, Send
from scaserver.sip.message import Peer, Request, Transport
from scaserver.sip.parser import parse_message

CYCLE_S = 1.0 / 40
Event = tuple[str, bytes, tuple[str, int]] | tuple[str, float]
Recorded = tuple[list[list[Action]], dict[tuple[Hashable, str], list[list[Action]]]]


class _Port:
    """The part of Twisted's ``udp.Port`` the UDP transport looks at."""

    _connectedAddr = None  # noqa: N815 (Twisted's spelling)

    def __init__(self, sock: socket.socket) -> None:
        self.socket = sock

    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        self.socket.sendto(data, addr)


class _Clock(Clock):
    """``task.Clock`` whose ``seconds`` is a C call, as the reactor's (``time.time``)."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds = functools.partial(getattr, self, "rightNow")  # type: ignore[method-assign]


def _sink() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


def _drain(sock: socket.socket) -> list[bytes]:
    found = []
    while True:
        try:
            found.append(sock.recv(65536))
        except BlockingIOError:
            return found


class Edge:
    """The real edge around ``core``: a UDP transport on a loopback socket, the stack, the guard."""

    def __init__(self, core: object) -> None:
        self.clock = _Clock()
        self.clock.advance(1_000_000.0)
        transports = Transports(hosts=HostsTable())
        guard = SourceGuard(SecuritySettings(allow=("127.0.0.0/8",)))
        self.stack = SipStack(core, self.clock, transports, EventBus(), guard=guard)  # type: ignore[arg-type]
        self.stack.startService()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.udp = UdpTransport(self.stack, transports, "127.0.0.1", 65535, guard=guard, clock=self.clock)
        self.udp.transport = _Port(self.sock)  # type: ignore[assignment]
        self.udp.doStart()  # type: ignore[no-untyped-call]

    def close(self) -> None:
        self.stack.stopService()
        self.sock.close()


class Recording:
    """The real core, its outputs kept in call order."""

    def __init__(self, core: object) -> None:
        self.core = core
        self.outputs: list[list[Action]] = []
        self.fired: dict[tuple[Hashable, str], list[list[Action]]] = {}

    def receive(self, data: bytes, peer: Peer, now: float) -> list[Action]:
        actions: list[Action] = self.core.receive(data, peer, now)  # type: ignore[attr-defined]
        self.outputs.append(actions)
        return actions

    def on_timer(self, key: Hashable, name: str, now: float) -> list[Action]:
        actions: list[Action] = self.core.on_timer(key, name, now)  # type: ignore[attr-defined]
        self.fired.setdefault((key, name), []).append(actions)
        return actions

    def connection_lost(self, peer: Peer, now: float) -> list[Action]:
        return []

    def flow_failed(self, flow: Peer, cause: object, now: float) -> list[Action]:
        return []


class Replay:
    """A core that hands back the recorded outputs: of each datagram in order, of each timer
    by its key and name (a timer armed before the recorded cycles never fires here)."""

    def __init__(self, recorded: Recorded) -> None:
        outputs, fired = recorded
        self._next = deque(outputs).popleft
        self._fired = {timer: deque(lists) for timer, lists in fired.items()}

    def receive(self, data: bytes, peer: Peer, now: float) -> list[Action]:
        return self._next()

    def on_timer(self, key: Hashable, name: str, now: float) -> list[Action]:
        lists = self._fired.get((key, name))
        return lists.popleft() if lists else []

    def connection_lost(self, peer: Peer, now: float) -> list[Action]:
        return []

    def flow_failed(self, flow: Peer, cause: object, now: float) -> list[Action]:
        return []


def record(cycles: int) -> tuple[list[Event], Recorded]:
    """Run ``cycles`` seize cycles (on lines that both members subscribed to) through the
    real edge and core; the datagrams and clock moves, and the core's outputs from the first
    cycle on."""
    seizer, member = _sink(), _sink()
    recording = Recording(Driver().core)
    edge = Edge(recording)
    events: list[Event] = []

    def send(data: bytes, source: socket.socket) -> list[Request]:
        addr = source.getsockname()
        events.append(("d", data, addr))
        edge.udp.datagramReceived(data, addr)
        return [m for m in map(parse_message, _drain(source)) if isinstance(m, Request)]

    def advance(seconds: float) -> None:
        events.append(("a", seconds))
        edge.clock.advance(seconds)

    def answer(requests: list[Request], source: socket.socket) -> None:
        for request in requests:
            send(ok_for(request), source)

    for n in range(cycles):
        to = f"To: <sip:{FIRST_LINE + n}@{DOMAIN}>\r\n"
        for tag, sock in (("ca", member), ("cb", member)):
            peer = _peer(sock)
            text = subscribe_text(n, tag, peer, event="call-info", expires=3600, cseq=1, extra=to)
            answer(send(text, sock), sock)
            answer(_requests(seizer), seizer)
        advance(0.001)
    del events[:], recording.outputs[:]
    recording.fired.clear()
    for n in range(cycles):
        seize_cycle(n, seizer, member, send)
        _drain(member)
        advance(CYCLE_S)
    edge.close()
    seizer.close()
    member.close()
    return events, (recording.outputs, recording.fired)


def _peer(sock: socket.socket) -> Peer:
    host, port = sock.getsockname()
    return Peer(Transport.UDP, host, port)


def _requests(sock: socket.socket) -> list[Request]:
    return [m for m in map(parse_message, _drain(sock)) if isinstance(m, Request)]


Inject = Callable[[bytes, socket.socket], list[Request]]


def seize_cycle(n: int, seizer: socket.socket, member: socket.socket, send: Inject) -> None:
    user = FIRST_LINE + n
    peer = _peer(seizer)
    to = f"To: <sip:{user}@{DOMAIN}>\r\n"
    info = f"Call-Info: <sip:{user}@{DOMAIN}>;appearance-index=1\r\n"
    seize = subscribe_text(n, "sa", peer, event="line-seize", expires=15, cseq=1, extra=to + info)
    to_tag = ""
    for notify in send(seize, seizer):
        to_tag = (notify.headers.get("From") or "").rpartition("tag=")[2]
        send(ok_for(notify), seizer)
    for notify in _requests(member):
        send(ok_for(notify), member)
    assert to_tag, "no line-seize NOTIFY"
    release = f"To: <sip:{user}@{DOMAIN}>;tag={to_tag}\r\n{info}"
    release_text = subscribe_text(n, "sa", peer, event="line-seize", expires=0, cseq=2, extra=release)
    for notify in send(release_text, seizer):
        send(ok_for(notify), seizer)
    for notify in _requests(member):
        send(ok_for(notify), member)


def replay(events: list[Event], outputs: Recorded, profile: cProfile.Profile | None = None) -> float:
    """Thread CPU seconds the edge takes over ``events``, its core replaying ``outputs``; the
    serializer is not counted (it is the core's): timed, it hands back the bytes of each
    message serialized beforehand, profiled, the profiler is paused while it runs."""
    edge = Edge(Replay(outputs))
    serialize = stack_module.serialize  # type: ignore[attr-defined]
    if profile is None:
        written = {
            id(action.message): serialize(action.message)
            for actions in [*outputs[0], *(a for lists in outputs[1].values() for a in lists)]
            for action in actions
            if isinstance(action, Send)
        }
        stack_module.serialize = lambda message: written[id(message)]  # type: ignore[attr-defined]
    else:

        def paused(message: object) -> bytes:
            profile.disable()
            try:
                return serialize(message)  # type: ignore[arg-type]
            finally:
                profile.enable()

        stack_module.serialize = paused  # type: ignore[attr-defined]
    datagram, clock = edge.udp.datagramReceived, edge.clock
    gc.collect()
    gc.disable()
    try:
        began = time.thread_time()
        if profile is not None:
            profile.enable()
        for event in events:
            if len(event) == 3:
                datagram(event[1], event[2])
            else:
                clock.advance(event[1])
        if profile is not None:
            profile.disable()
        return time.thread_time() - began
    finally:
        gc.enable()
        stack_module.serialize = serialize  # type: ignore[attr-defined]
        edge.close()


def measure(cycles: int, repeat: int, top: int) -> None:
    events, outputs = record(cycles)
    datagrams = sum(1 for e in events if e[0] == "d")
    profile = cProfile.Profile()
    replay(events, outputs, profile)
    stats = pstats.Stats(profile)
    per: Counter[str] = Counter()
    python_calls = builtin_calls = 0
    for (path, line, name), (_, ncalls, *_rest) in stats.stats.items():  # type: ignore[attr-defined]
        if name == "paused":
            continue
        if path == "~":
            builtin_calls += ncalls
        else:
            python_calls += ncalls
        per[f"{Path(path).name}:{line}({name})" if path != "~" else name] += ncalls
    best = min(replay(*record(cycles)) for _ in range(repeat))
    print(f"tree {Path(stack_module.__file__).parents[2]}")
    print(f"{datagrams / cycles:.1f} datagrams in per cycle, {cycles} cycles")
    print(f"python calls per datagram {python_calls / datagrams:.2f}", end=", ")
    print(f"builtin calls {builtin_calls / datagrams:.2f}")
    print(f"us per datagram (min of {repeat}) {best / datagrams * 1e6:.2f}")
    for name, count in per.most_common(top):
        print(f"  {count / cycles:8.2f} per cycle  {name}")


def compare(other: str, rounds: int, cycles: int) -> None:
    here = str(Path(__file__).resolve().parents[1])
    best: dict[str, float] = {}
    for _ in range(rounds):
        for tree in (other, here):
            # Run from /tmp with the tree on the path only (by its file, bench/ would come
            # first on the path and its profile.py would stand for the standard one).
            script = f"import runpy, sys; sys.argv = ['edgecalls', '--time-only', '--cycles', '{cycles}']; "
            script += f"runpy.run_path({str(Path(__file__).resolve())!r}, run_name='__main__')"
            out = subprocess.run(
                [sys.executable, "-c", script],
                cwd="/tmp",
                env={**os.environ, "PYTHONPATH": tree},
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            value = float(out.split()[-1])
            best[tree] = min(best.get(tree, value), value)
    for tree, value in best.items():
        print(f"{value:7.2f} us per datagram (min of {rounds} alternated)  {tree}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cycles", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--compare", metavar="TREE")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--time-only", action="store_true")
    args = parser.parse_args(argv)
    if args.compare:
        compare(args.compare, args.rounds, args.cycles)
    elif args.time_only:
        events, _ = record(args.cycles)
        datagrams = sum(1 for e in events if e[0] == "d")
        best = min(replay(*record(args.cycles)) for _ in range(3))
        print(best / datagrams * 1e6)
    else:
        measure(args.cycles, args.repeat, args.top)


if __name__ == "__main__":
    main()
