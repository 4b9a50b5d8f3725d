"""CPU of the front door per datagram, in process: ``scaserver.sip.endpoint.admit`` (parse,
validate, stamp the top Via, work out where responses go) on four kinds of datagram.

    python -m bench.admission [--tree PATH ...] [--count N] [--repeat R] [--rounds K] [--profile]

The datagrams are those of the benchmarks: a REGISTER (as ``bench.corecalls`` sends it), a
line-seize SUBSCRIBE, the 200 a UA sends to one of our NOTIFYs (its Via is one we sent,
remembered by ``sent_via_text`` as the client transaction does) and an INVITE with an SDP
body as a desk phone sends it.  Each batch is ``--count`` datagrams of one kind, every one
with its own branch, tags and Call-ID (as under load: the parse caches miss on each new
datagram), the parse caches cleared before it; the figure is the min over ``--repeat``
batches, in microseconds of the thread's CPU time per datagram (the time other processes
of a busy machine take is not counted).

With several ``--tree`` paths (each a directory holding a ``scaserver`` package, e.g. an
``git archive`` of the base commit), each tree's modules are loaded side by side in this
one process and measured in turn, ``--rounds`` times alternated.  ``--profile`` prints the
cProfile call counts per datagram of each kind (deterministic) for each tree.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import importlib
import pstats
import sys
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

DOMAIN = "127.0.0.1"


def register(n: int) -> bytes:
    return (
        f"REGISTER sip:{DOMAIN} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:23004;branch=z9hG4bK-reg-{n}\r\n"
        f"From: <sip:{200000 + n}@{DOMAIN}>;tag=1r{n}\r\n"
        f"To: <sip:{200000 + n}@{DOMAIN}>\r\n"
        f"Call-ID: reg///{n}-1@127.0.0.1\r\n"
        "CSeq: 1 REGISTER\r\n"
        f"Contact: <sip:{200000 + n}@127.0.0.1:23004;member=a>\r\n"
        "Max-Forwards: 70\r\n"
        "Expires: 3600\r\n"
        "User-Agent: sipp-sca-bench\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def seize(n: int) -> bytes:
    user = 200000 + n
    return (
        f"SUBSCRIBE sip:{user}@{DOMAIN} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:23004;branch=z9hG4bK-sa-{n}-1\r\n"
        f"From: <sip:{user}@{DOMAIN}>;tag=1sa{n}\r\n"
        f"To: <sip:{user}@{DOMAIN}>\r\n"
        f"Call-Info: <sip:{user}@{DOMAIN}>;appearance-index=1\r\n"
        f"Call-ID: sa///{n}-1@127.0.0.1\r\n"
        "CSeq: 1 SUBSCRIBE\r\n"
        f"Contact: <sip:{user}@127.0.0.1:23004;member=a>\r\n"
        "Max-Forwards: 70\r\n"
        "Event: line-seize\r\n"
        "Expires: 15\r\n"
        "User-Agent: sipp-sca-bench\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def notify_ok(n: int) -> tuple[bytes, str]:
    """A 200 to a NOTIFY of ours, and the text of its Via (which we sent)."""
    user = 200000 + n
    via = f"SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK{n:08x}.{n * 7919 % 100000:05d}"
    text = (
        "SIP/2.0 200 OK\r\n"
        f"Via: {via}\r\n"
        f"From: <sip:{user}@{DOMAIN}>;tag=u{n:08d}\r\n"
        f"To: <sip:{user}@{DOMAIN}>;tag=1ca{n}\r\n"
        f"Call-ID: ca///{n}-1@127.0.0.1\r\n"
        "CSeq: 2 NOTIFY\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    return text, via


SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=Polycom IP Phone\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 2222 RTP/AVP 9 0 8 101\r\na=rtpmap:9 G722/8000\r\na=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
)


def invite(n: int) -> bytes:
    user = 200000 + n
    return (
        f"INVITE sip:300{n}@{DOMAIN};user=phone SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:23004;branch=z9hG4bK{n:x}d3e8a;rport\r\n"
        f'From: "Line {n}" <sip:{user}@{DOMAIN}>;tag=AB{n}-CD\r\n'
        f"To: <sip:300{n}@{DOMAIN};user=phone>\r\n"
        f"CSeq: 1 INVITE\r\n"
        f"Call-ID: {n:x}-5e1f-93b2@127.0.0.1\r\n"
        f"Contact: <sip:{user}@127.0.0.1:23004>\r\n"
        "Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, MESSAGE, SUBSCRIBE, NOTIFY, PRACK, UPDATE, REFER\r\n"
        "User-Agent: PolycomVVX-VVX_411-UA/5.9.5.0614\r\n"
        "Accept-Language: en\r\n"
        "Supported: 100rel,replaces\r\n"
        "Allow-Events: conference,talk,hold\r\n"
        "Max-Forwards: 70\r\n"
        "Content-Type: application/sdp\r\n"
        f"Content-Length: {len(SDP)}\r\n\r\n{SDP}"
    ).encode()


KINDS = ("register", "seize", "notify-200", "invite")


class Tree:
    """One tree's ``scaserver.sip`` modules, loaded under their own names in this process."""

    def __init__(self, path: str) -> None:
        saved = {name: module for name, module in sys.modules.items() if name.split(".")[0] == "scaserver"}
        for name in saved:
            del sys.modules[name]
        sys.path.insert(0, path)
        try:
            self.endpoint = importlib.import_module("scaserver.sip.endpoint")
            self.headers = importlib.import_module("scaserver.sip.headers")
            self.message = importlib.import_module("scaserver.sip.message")
            uri = importlib.import_module("scaserver.sip.uri")
            self.modules: list[ModuleType] = [
                module
                for name, module in sys.modules.items()
                if name.split(".")[0] == "scaserver" and module is not None
            ]
        finally:
            sys.path.remove(path)
            for name in [name for name in sys.modules if name.split(".")[0] == "scaserver"]:
                del sys.modules[name]
            sys.modules.update(saved)
        self.path = path
        self.caches = [
            function
            for module in (self.headers, uri)
            for function in vars(module).values()
            if callable(getattr(function, "cache_clear", None))
        ]

    def clear(self) -> None:
        for function in self.caches:
            function.cache_clear()

    def datagrams(self, kind: str, count: int, base: int) -> list[bytes]:
        if kind == "register":
            return [register(base + n) for n in range(count)]
        if kind == "seize":
            return [seize(base + n) for n in range(count)]
        if kind == "invite":
            return [invite(base + n) for n in range(count)]
        texts = []
        for n in range(count):
            text, via = notify_ok(base + n)
            self.headers.sent_via_text(self.headers.parse_via_text(via))
            texts.append(text)
        return texts

    def batch(self, kind: str, count: int, base: int, profile: cProfile.Profile | None = None) -> float:
        """Seconds per datagram of ``count`` datagrams of ``kind``."""
        admit: Callable[..., Any] = self.endpoint.admit
        peer = self.message.Peer(self.message.Transport.UDP, "127.0.0.1", 23004)
        texts = self.datagrams(kind, count, base)
        self.clear()
        unique = iter(range(10**9)).__next__

        def tag() -> str:
            return f"t{unique():09d}"

        gc.collect()
        gc.disable()
        try:
            if profile is not None:
                profile.enable()
            began = time.thread_time()
            for text in texts:
                admit(text, peer, tag)
            elapsed = time.thread_time() - began
            if profile is not None:
                profile.disable()
        finally:
            gc.enable()
        return elapsed / count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tree", action="append", default=[], help="a directory holding scaserver/")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args(argv)
    trees = [Tree(path) for path in (args.tree or ["."])]
    if args.profile:
        for tree in trees:
            for kind in KINDS:
                tree.batch(kind, args.count, 10**6)
                profile = cProfile.Profile()
                tree.batch(kind, args.count, 2 * 10**6, profile)
                stats = pstats.Stats(profile)
                calls = stats.total_calls  # type: ignore[attr-defined]
                print(f"{tree.path} {kind}: {calls / args.count:.0f} calls per datagram")
                stats.sort_stats("tottime").print_stats(args.top)
    base = 0
    for round_ in range(args.rounds):
        for tree in trees:
            figures = []
            for kind in KINDS:
                best = float("inf")
                for _ in range(args.repeat):
                    base += args.count
                    best = min(best, tree.batch(kind, args.count, base))
                figures.append(f"{kind} {best * 1e6:6.2f}")
            print(f"round {round_ + 1} {tree.path}: " + ", ".join(figures) + " us per datagram")


if __name__ == "__main__":
    main()
