"""CPU cost per request of the pure SIP core, in process, with no network and no edge.

    PYTHONPATH=$PWD python -m bench.corecost [--cycles 200] [--registers 400] [--repeat 9]

The datagrams of the load scenarios (``load-seize.xml`` and ``register.xml``) go straight into
``SipRouter.receive``; every ``Send`` that comes back is serialized, as the edge would do. Two
members of a shared line hold call-info subscriptions; one seize cycle is the line-seize
SUBSCRIBE, the 200s answering its line-seize NOTIFY and the two call-info NOTIFYs (seized),
the releasing SUBSCRIBE (Expires: 0) and the 200s answering its three NOTIFYs: 8 datagrams in,
8 SIP transactions. The REGISTER figure is a REGISTER without authentication from a new AoR.

The input datagrams are recorded once against a router that answers them (the NOTIFYs it sends
are answered with 200), then replayed into a fresh router built the same way: the ids it makes
are deterministic, so the replay sees exactly the same messages, which it checks. Every
``functools`` cache of the core is emptied before each repetition, so that the parsing caches
see the messages for the first time, as they would on the wire. The figures are the minimum of
``--repeat`` ``timeit`` repetitions (garbage collector off while timed), in microseconds.

Which ``scaserver`` is measured is whichever is imported: run it under another ``PYTHONPATH``
(a tree with the core compiled by ``bench/compile.py``, say) to compare; ``compiled`` in the
output says how many of the core's modules are extension modules.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import sys
import timeit
from collections.abc import Callable

import attrs

from scaserver.router.router import SipRouter
from scaserver.sca.line import SharedLine
from scaserver.sip.actions import Send
from scaserver.sip.message import Peer, Request, Response, Transport
from scaserver.sip.parser import parse_message
from scaserver.sip.serializer import serialize
from tests.builders import DOMAIN, make_core

LINE_USER = "2001"
LINE = f"sip:{LINE_USER}@{DOMAIN}"
MEMBERS = (Peer(Transport.UDP, "198.51.100.10", 5062), Peer(Transport.UDP, "198.51.100.20", 5064))
APPEARANCE = f"Call-Info: <{LINE}>;appearance-index=1\r\n"
REGISTRANT = Peer(Transport.UDP, "198.51.100.30", 5066)
NOW = 1_000_000.0

Datagram = tuple[bytes, Peer]


def subscribe(peer: Peer, event: str, call_id: str, cseq: int, extra: str) -> bytes:
    member = f"m{MEMBERS.index(peer)}"
    return (
        f"SUBSCRIBE {LINE} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {peer.host}:{peer.port};branch=z9hG4bK{call_id}-{cseq}\r\n"
        f"From: <{LINE}>;tag={call_id}f\r\n"
        f"{extra}"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} SUBSCRIBE\r\n"
        f"Contact: <sip:{LINE_USER}@{peer.host}:{peer.port};member={member}>\r\n"
        "Max-Forwards: 70\r\n"
        f"Event: {event}\r\n"
        "User-Agent: sipp-sca-bench\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def register(n: int) -> bytes:
    user = f"r{n:06d}"
    host = f"{REGISTRANT.host}:{REGISTRANT.port}"
    return (
        f"REGISTER sip:{DOMAIN} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {host};branch=z9hG4bKreg{n}\r\n"
        f"From: <sip:{user}@{DOMAIN}>;tag=rt{n}\r\n"
        f"To: <sip:{user}@{DOMAIN}>\r\n"
        f"Call-ID: reg-{n}\r\n"
        "CSeq: 1 REGISTER\r\n"
        f"Contact: <sip:{user}@{host}>\r\n"
        "Max-Forwards: 70\r\n"
        "Expires: 3600\r\n"
        "User-Agent: sipp-sca-bench\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def answer(notify: Request, peer: Peer) -> bytes:
    """The member's 200 to a NOTIFY the router sent it (load-seize.xml's ``[last_*]`` copy)."""
    headers = [("Via", v) for v in notify.headers.lines("Via")]
    headers += [(name, notify.headers.get(name) or "") for name in ("From", "To", "Call-ID", "CSeq")]
    lines = ["SIP/2.0 200 OK", *(f"{name}: {value}" for name, value in headers)]
    lines += [f"Contact: <sip:{LINE_USER}@{peer.host}:{peer.port}>", "Content-Length: 0", "", ""]
    return "\r\n".join(lines).encode()


def build() -> SipRouter:
    return make_core(require_auth=False, lines=[SharedLine(LINE, 2)])


def wire_out(core: SipRouter, data: bytes, peer: Peer) -> list[tuple[bytes, Peer]]:
    return [(serialize(a.message), a.peer) for a in core.receive(data, peer, NOW) if isinstance(a, Send)]


@attrs.frozen
class Script:
    """What the members send: ``setup`` (call-info subscriptions), then ``cycles`` and ``registers``."""

    setup: tuple[Datagram, ...]
    cycles: tuple[Datagram, ...]
    registers: tuple[Datagram, ...]
    out: tuple[tuple[bytes, Peer], ...]


class Recorder:
    """Plays the members against a live router: answers every NOTIFY with 200 at once."""

    def __init__(self) -> None:
        self.core = build()
        self.sent: list[Datagram] = []
        self.out: list[tuple[bytes, Peer]] = []

    def send(self, data: bytes, peer: Peer) -> list[Response]:
        self.sent.append((data, peer))
        responses: list[Response] = []
        for wire, to in wire_out(self.core, data, peer):
            self.out.append((wire, to))
            message = parse_message(wire)
            if isinstance(message, Response):
                responses.append(message)
            elif message.method == "NOTIFY":
                self.send(answer(message, to), to)
        return responses

    def take(self) -> tuple[Datagram, ...]:
        taken, self.sent = tuple(self.sent), []
        return taken


def record(cycles: int, registers: int) -> Script:
    recorder = Recorder()
    for index, peer in enumerate(MEMBERS):
        accepted = recorder.send(subscribe(peer, "call-info", f"ci{index}", 1, f"To: <{LINE}>\r\n"), peer)[0]
        assert accepted.status in (200, 202), accepted
    setup = recorder.take()
    recorder.out.clear()
    seizer = MEMBERS[0]
    for n in range(cycles):
        call_id = f"ls{n}"
        seize = subscribe(seizer, "line-seize", call_id, 1, f"To: <{LINE}>\r\nExpires: 15\r\n{APPEARANCE}")
        [seized] = recorder.send(seize, seizer)
        assert seized.status == 200, seized
        to_tag = seized.headers.get("To") or ""
        release = subscribe(seizer, "line-seize", call_id, 2, f"To: {to_tag}\r\nExpires: 0\r\n{APPEARANCE}")
        [released] = recorder.send(release, seizer)
        assert released.status == 200, released
    cycle_datagrams = recorder.take()
    assert len(cycle_datagrams) == 8 * cycles, len(cycle_datagrams)
    for n in range(registers):
        [registered] = recorder.send(register(n), REGISTRANT)
        assert registered.status == 200, registered
    return Script(setup, cycle_datagrams, recorder.take(), tuple(recorder.out))


def clear_caches() -> None:
    for name, module in list(sys.modules.items()):
        if name.startswith("scaserver.") and module is not None:
            for value in list(vars(module).values()):
                clear = getattr(value, "cache_clear", None)
                if callable(clear):
                    clear()


def replay(script: Script) -> tuple[Callable[[], None], Callable[[], None], Callable[[], None]]:
    """(setup, run the cycles, run the REGISTERs) against one fresh router per setup."""
    state: dict[str, SipRouter] = {}

    def setup() -> None:
        clear_caches()
        core = state["core"] = build()
        for data, peer in script.setup:
            wire_out(core, data, peer)

    def run(datagrams: tuple[Datagram, ...]) -> Callable[[], None]:
        def feed() -> None:
            core = state["core"]
            for data, peer in datagrams:
                for action in core.receive(data, peer, NOW):
                    if isinstance(action, Send):
                        serialize(action.message)

        return feed

    return setup, run(script.cycles), run(script.registers)


def check(script: Script) -> None:
    """The replay makes exactly the messages the recording saw."""
    core = build()
    for data, peer in script.setup:
        wire_out(core, data, peer)
    out = [item for data, peer in script.cycles + script.registers for item in wire_out(core, data, peer)]
    assert tuple(out) == script.out, "the replay diverged from the recording"


def compiled_modules() -> list[str]:
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    return sorted(
        name
        for name, module in sys.modules.items()
        if name.startswith("scaserver.") and (getattr(module, "__file__", None) or "").endswith(suffixes)
    )


def parse_serialize_us(repeat: int) -> float:
    """A line-seize SUBSCRIBE parsed and its 200 serialized (the issue's parse+serialize pair)."""
    data = subscribe(MEMBERS[0], "line-seize", "ps", 1, f"To: <{LINE}>\r\nExpires: 15\r\n{APPEARANCE}")
    request = parse_message(data)
    assert isinstance(request, Request)
    ok = Response(200, "OK", request.headers)

    def pair() -> None:
        parse_message(data)
        serialize(ok)

    number = 2000
    return min(timeit.Timer(pair).repeat(repeat=repeat, number=number)) / number * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=200, help="seize cycles per repetition")
    parser.add_argument("--registers", type=int, default=400, help="REGISTERs per repetition")
    parser.add_argument("--repeat", type=int, default=9, help="repetitions; the minimum is reported")
    args = parser.parse_args(argv)
    script = record(args.cycles, args.registers)
    check(script)
    setup, cycles, registers = replay(script)
    seize_s = min(timeit.Timer(cycles, setup).repeat(repeat=args.repeat, number=1))
    register_s = min(timeit.Timer(registers, setup).repeat(repeat=args.repeat, number=1))
    cycle_us = seize_s / args.cycles * 1e6
    print(f"compiled modules: {len(compiled_modules())}")
    print(f"seize cycle (8 datagrams in, 8 out): {cycle_us:8.1f} us")
    print(f"  per datagram received:             {cycle_us / 8:8.1f} us")
    print(f"REGISTER without auth:               {register_s / args.registers * 1e6:8.1f} us")
    print(f"parse SUBSCRIBE + serialize 200:     {parse_serialize_us(args.repeat):8.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
