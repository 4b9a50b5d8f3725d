"""CPU of the pure SIP core per request, in process: no sockets, no reactor, no edge.

    python -m bench.corecalls [--scenario register|register-refresh|register-auth|seize|call|both]
                              [--count N] [--repeat R] [--profile] [--top K] [--history]

Builds the core as ``scaserver run`` does (``scaserver.app.make_core``, the settings of the
server ``bench.profile`` starts: domain 127.0.0.1, no digest) and feeds it datagrams with
``SipRouter.receive``, as the edge would, serializing every message it sends (the stack's
``serialize``); ``StartTimer``/``CancelTimer`` are kept in a heap and fired by
``SipRouter.on_timer`` as the clock moves.  Bus facts are dropped (the edge's subscribers
are not part of the core).

* ``register``: one REGISTER (Expires 3600, a new AoR each) per request.
* ``register-refresh``: what ``bench.profile --scenario register`` sends once SIPp has gone
  round its injection file (AoRs of two members, ``a`` and ``b``, each registered): one
  REGISTER per request refreshing one binding of an AoR that holds two (same Contact, a new
  Call-ID and CSeq 1, as SIPp's ``[call_id]`` is new per call), its 200 listing both.
* ``register-auth``: one registration with digest (MD5, as ``bench/procs.py`` configures
  the digest phase) per request: a REGISTER answered 401 with a challenge, then the REGISTER
  with its Authorization, answered 200 (a new subscriber each).  Only the core's two
  ``receive`` calls are timed and profiled; the client's answer is computed between them.
* ``seize``: the cycle of ``load-seize.xml`` on a line whose two members hold call-info
  subscriptions: a line-seize SUBSCRIBE (200, its NOTIFY, a call-info NOTIFY to each
  member), the 200s to those NOTIFYs, the release SUBSCRIBE (Expires 0) and the 200s to its
  NOTIFYs: 8 transactions, 2 requests and 6 responses in.  Each cycle uses its own line.
* ``call``: one row of ``sca-call.xml`` on a line like ``seize``'s: seize appearance 1, an
  INVITE to ``callee`` (registered) proxied with its 180 and 200, the ACK along the
  Record-Route, a hold re-INVITE and its ACK, the BYE; every NOTIFY answered (not in
  ``both``).  ``--history`` (``call``, ``seize``) also times the history feed's mapper
  (``HistoryRecorder.record``, as the edge builds it) over the facts such calls or cycles deliver.
  With ``register`` and ``register-refresh`` it times the edge's subscribers of a REGISTER's
  facts instead: a bus with the history feed (its ``registration_events`` row) and the
  persistence of bindings (the write-behind of the ``location`` row) attached.

Prints the Python function calls per request (cProfile, deterministic) and the
microseconds per request, min over ``--repeat`` batches of ``--count`` requests (each batch
on a fresh core, the cyclic garbage collector off while it runs: its pauses are the edge's
tuning, not the core's work).  ``--profile`` also prints the top ``--top`` functions by own time.
Run it with ``PYTHONPATH`` on the tree to measure; alternate trees in the same conditions.
``compiled`` in the output says how many of the core's modules are extension modules (a tree
built by ``bench/mypycbuild.py``).
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import gc
import heapq
import io
import itertools
import pstats
import sys
import time
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Generic, TypeVar, get_args

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

import scaserver
from scaserver.app import make_core
from scaserver.config.load import settings_from_mapping
from scaserver.directory import credential_lookup
from scaserver.edge.historyfeed import HistoryFeed
from scaserver.edge.persistence import Persistence
from scaserver.edge.writebehind import WriteBehind
from scaserver.events import EventBus
from scaserver.registrar.binding import Binding, BindingKey
from scaserver.reporting.history import HistoryFact, HistoryRecorder
from scaserver.router.router import SipRouter
from scaserver.sca.appearance import Appearance
from scaserver.sca.subscription import Subscription, SubscriptionKey
from scaserver.sip.actions import Action, CancelTimer, Deliver, Send, StartTimer
from scaserver.sip.digest import Algorithm, Credentials, compute_ha1, compute_response
from scaserver.sip.headers import parse_auth
from scaserver.sip.message import Message, Peer, Request, Response, Transport
from scaserver.sip.serializer import serialize
from scaserver.sip.trust import TrustedPeers
from scaserver.store.history import HistoryKey, HistoryRow, history_key
from scaserver.store.repository import (
    AppearanceKey,
    appearance_key,
    binding_key,
    binding_key_text,
    subscription_key,
)

T = TypeVar("T")
K = TypeVar("K")

DOMAIN = "127.0.0.1"
SETTINGS = {"server": {"domains": [DOMAIN]}, "auth": {"require": False, "realm": DOMAIN}}
SEIZER = Peer(Transport.UDP, "127.0.0.1", 23004)
SINK = Peer(Transport.UDP, "127.0.0.1", 23007)
REGISTRANT = Peer(Transport.UDP, "127.0.0.1", 23004)
FIRST_LINE = 200000


class Driver:
    """A core, its clock and its armed timers.

    ``outbox``, when a list, keeps every message the core sends with its peer (and the
    requests are then not returned by :meth:`receive`: the caller plays the peers from the
    outbox); ``facts``, when a list, keeps the facts the core delivers."""

    def __init__(
        self,
        settings: Mapping[str, object] = SETTINGS,
        credentials: Callable[..., Credentials | None] = lambda *_: None,
    ) -> None:
        self.core: SipRouter = make_core(
            settings_from_mapping(settings, "bench.corecalls"),
            credentials=credentials,
            trusted=TrustedPeers(()),
            lines=(),
            secret=b"s" * 32,
            entropy=_counted_entropy(),
            unique=_counted_ids(),
        )
        self.now = 1_000_000.0
        self._heap: list[tuple[float, int, Hashable, str]] = []
        self._live: dict[tuple[Hashable, str], int] = {}
        self._seq = itertools.count()
        self.outbox: list[tuple[Message, Peer]] | None = None
        self.facts: list[object] | None = None

    def receive(self, data: bytes, peer: Peer) -> list[Request]:
        """Feed one datagram; the requests the core sent back (each serialized)."""
        return self._run(self.core.receive(data, peer, self.now))

    def advance(self, seconds: float) -> None:
        """Move the clock, firing the timers due by then."""
        self.now += seconds
        heap = self._heap
        while heap and heap[0][0] <= self.now:
            _, seq, key, name = heapq.heappop(heap)
            if self._live.get((key, name)) == seq:
                del self._live[key, name]
                self._run(self.core.on_timer(key, name, self.now))

    def _run(self, actions: Iterable[Action]) -> list[Request]:
        sent: list[Request] = []
        outbox, facts = self.outbox, self.facts
        for action in actions:
            kind = type(action)
            if kind is Send:
                assert isinstance(action, Send)
                serialize(action.message)
                if outbox is not None:
                    outbox.append((action.message, action.peer))
                elif type(action.message) is Request:
                    sent.append(action.message)
            elif kind is StartTimer:
                assert isinstance(action, StartTimer)
                seq = next(self._seq)
                self._live[action.key, action.name] = seq
                heapq.heappush(self._heap, (self.now + action.delay, seq, action.key, action.name))
            elif kind is CancelTimer:
                assert isinstance(action, CancelTimer)
                self._live.pop((action.key, action.name), None)
            elif kind is Deliver and facts is not None:
                assert isinstance(action, Deliver)
                facts.append(action.event)
        return sent


def _counted_ids() -> Callable[[], str]:
    counter = itertools.count(1)
    return lambda: f"u{next(counter):08d}"


def _counted_entropy() -> Callable[[int], bytes]:
    draws = itertools.count(1)
    return lambda size: next(draws).to_bytes(size, "big")


def register_text(n: int) -> bytes:
    user = FIRST_LINE + n
    host = f"{REGISTRANT.host}:{REGISTRANT.port}"
    return (
        f"REGISTER sip:{DOMAIN} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {host};branch=z9hG4bK-reg-{n}\r\n"
        f"From: <sip:{user}@{DOMAIN}>;tag=1r{n}\r\n"
        f"To: <sip:{user}@{DOMAIN}>\r\n"
        f"Call-ID: reg///{n}-1@{REGISTRANT.host}\r\n"
        f"CSeq: 1 REGISTER\r\n"
        f"Contact: <sip:{user}@{host};member=a>\r\n"
        "Max-Forwards: 70\r\n"
        "Expires: 3600\r\n"
        "User-Agent: sipp-sca-bench\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def refresh_text(n: int, member: str, serial: int) -> bytes:
    """A REGISTER of member ``member`` of AoR ``n`` as SIPp's register.xml sends it: the
    Contact of that member, a Call-ID and branch of its own (``serial``), CSeq 1."""
    user = FIRST_LINE + n
    host = f"{REGISTRANT.host}:{REGISTRANT.port}"
    return (
        f"REGISTER sip:{DOMAIN} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {host};branch=z9hG4bK-ref-{serial}\r\n"
        f"From: <sip:{user}@{DOMAIN}>;tag=1r{serial}\r\n"
        f"To: <sip:{user}@{DOMAIN}>\r\n"
        f"Call-ID: reg///{serial}-1@{REGISTRANT.host}\r\n"
        f"CSeq: 1 REGISTER\r\n"
        f"Contact: <sip:{user}@{host};member={member}>\r\n"
        "Max-Forwards: 70\r\n"
        "Expires: 3600\r\n"
        "User-Agent: sipp-sca-bench\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def register_members(driver: Driver, aors: Iterable[int]) -> None:
    """Members ``a`` and ``b`` of every AoR register (two bindings each)."""
    for n in aors:
        for member in ("a", "b"):
            driver.receive(refresh_text(n, member, -(2 * n + (member == "b")) - 1), REGISTRANT)
        driver.advance(0.001)


def refresh_texts(count: int) -> list[bytes]:
    """``count`` refreshing REGISTERs: request ``i`` refreshes member ``a`` or ``b`` (by
    turns) of AoR ``i``."""
    return [refresh_text(i, "ab"[i % 2], i) for i in range(count)]


def subscribe_text(n: int, tag: str, peer: Peer, *, event: str, expires: int, cseq: int, extra: str) -> bytes:
    """A SUBSCRIBE of member ``a`` or ``b`` (the first letter of ``tag`` after c/s) of line ``n``."""
    user = FIRST_LINE + n
    host = f"{peer.host}:{peer.port}"
    return (
        f"SUBSCRIBE sip:{user}@{DOMAIN} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {host};branch=z9hG4bK-{tag}-{n}-{cseq}\r\n"
        f"From: <sip:{user}@{DOMAIN}>;tag=1{tag}{n}\r\n"
        f"{extra}"
        f"Call-ID: {tag}///{n}-1@{peer.host}\r\n"
        f"CSeq: {cseq} SUBSCRIBE\r\n"
        f"Contact: <sip:{user}@{host};member={tag[-1]}>\r\n"
        "Max-Forwards: 70\r\n"
        f"Event: {event}\r\n"
        f"Expires: {expires}\r\n"
        "User-Agent: sipp-sca-bench\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def ok_for(request: Request) -> bytes:
    lines = [b"SIP/2.0 200 OK"]
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        for value in request.headers.lines(name):
            lines.append(f"{name}: {value}".encode())
    return b"\r\n".join([*lines, b"Content-Length: 0", b"", b""])


def populate(driver: Driver, lines: Iterable[int]) -> None:
    """Both members of every line subscribe to call-info; their NOTIFYs are answered."""
    for n in lines:
        to = f"To: <sip:{FIRST_LINE + n}@{DOMAIN}>\r\n"
        for member in ("a", "b"):
            text = subscribe_text(n, f"c{member}", SINK, event="call-info", expires=3600, cseq=1, extra=to)
            sent = driver.receive(text, SINK)
            for notify in sent:
                driver.receive(ok_for(notify), SINK)
        driver.advance(0.001)


def seize_cycle(driver: Driver, n: int) -> None:
    user = FIRST_LINE + n
    to = f"To: <sip:{user}@{DOMAIN}>\r\n"
    seize_info = f"Call-Info: <sip:{user}@{DOMAIN}>;appearance-index=1\r\n"
    seize = subscribe_text(n, "sa", SEIZER, event="line-seize", expires=15, cseq=1, extra=to + seize_info)
    sent = driver.receive(seize, SEIZER)
    to_tag = ""
    for notify in sent:
        if notify.headers.get("Event") == "line-seize":
            to_tag = (notify.headers.get("From") or "").rpartition("tag=")[2]
            driver.receive(ok_for(notify), SEIZER)
        else:
            driver.receive(ok_for(notify), SINK)
    assert to_tag, "no line-seize NOTIFY"
    release = f"To: <sip:{user}@{DOMAIN}>;tag={to_tag}\r\n{seize_info}"
    sent = driver.receive(
        subscribe_text(n, "sa", SEIZER, event="line-seize", expires=0, cseq=2, extra=release), SEIZER
    )
    assert len(sent) == 3, [m.headers.get("Event") for m in sent]
    for notify in sent:
        driver.receive(ok_for(notify), SEIZER if notify.headers.get("Event") == "line-seize" else SINK)


# --- the SCA call of sca-call.xml ------------------------------------------------------------

CALLER = SEIZER
HISTORY_FACTS = get_args(HistoryFact)
CALLEE = Peer(Transport.UDP, "127.0.0.1", 23003)
CALL_SDP = (
    "v=0\r\no=member 1 {version} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 6002 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na={mode}\r\n"
)


def call_driver() -> Driver:
    """A :class:`Driver` that keeps every message the core sends, with its peer."""
    driver = Driver()
    driver.outbox = []
    return driver


def history_batch(count: int, profile: cProfile.Profile | None, *, feed: bool = False) -> float:
    """Seconds per call the history feed's mapper (``HistoryRecorder.record``, as the edge
    builds it) takes over the facts of ``count`` calls, kept from a run of the core."""
    driver = call_driver()
    populate(driver, range(count))
    register_callee(driver)
    facts: list[object] = []
    driver.facts = facts
    for n in range(count):
        sca_call(driver, n)
        driver.advance(0.25)
    return _timed_history(driver, driver.facts, count, profile, feed=feed)


def _timed_history(
    driver: Driver, facts: list[object], count: int, profile: cProfile.Profile | None, *, feed: bool
) -> float:
    """Seconds per call or cycle the mapper takes over the history facts of ``facts``, or
    (``feed``) a bus with only the history feed attached (``HistoryFeed``, as the edge builds
    it, its rows queued on a write-behind channel that is never flushed) takes over all of them."""
    sca = driver.core.sca
    recorder = HistoryRecorder(line_of=lambda aor: aor if sca.is_sca(aor) else None, local_domains=[DOMAIN])
    handle: Callable[[object], object]
    if feed:
        bus = EventBus()
        writes = WriteBehind(Clock(), _NoRunner(), max_pending=1 << 30)
        channel = writes.channel(
            "history", _NoSink[HistoryKey, HistoryRow](), history_key, table_of=lambda key: str(key[0])
        )
        HistoryFeed(recorder, channel, lines=list, clock=lambda: driver.now).attach(bus)
        handle = bus.publish
    else:
        facts = [fact for fact in facts if isinstance(fact, HISTORY_FACTS)]
        handle = recorder.record  # type: ignore[assignment]
    return _timed_over(handle, facts, count, profile)


def _timed_over(
    handle: Callable[[object], object], facts: list[object], count: int, profile: cProfile.Profile | None
) -> float:
    """Seconds per call or cycle ``handle`` takes over ``facts`` (the facts of ``count`` of
    them), the cyclic garbage collector off; profiled when ``profile`` is given."""
    gc.collect()
    gc.disable()
    try:
        began = time.perf_counter()
        if profile is not None:
            profile.enable()
        for fact in facts:
            handle(fact)
        if profile is not None:
            profile.disable()
        return (time.perf_counter() - began) / count
    finally:
        gc.enable()


class _NoRunner:
    def run(self, f: Callable[..., T], /, *args: object, **kwargs: object) -> Deferred[T]:
        raise AssertionError("the bench's write-behind never flushes")


class _NoSink(Generic[K, T]):
    def upsert(self, values: Sequence[T], /) -> None:
        raise AssertionError("the bench's write-behind never flushes")

    def delete(self, keys: Sequence[K], /) -> None:
        raise AssertionError("the bench's write-behind never flushes")


# --- the edge's subscribers of a REGISTER ---------------------------------------------------


def register_edge_batch(scenario: str, count: int, profile: cProfile.Profile | None) -> float:
    """Seconds per REGISTER a bus with the edge's subscribers of registrations attached (the
    history feed, its rows queued on a write-behind channel that is never flushed, and the
    persistence of bindings on another) takes over the facts of ``count`` REGISTERs of
    ``scenario``, kept from a run of the core."""
    driver = Driver()
    if scenario == "register-refresh":
        register_members(driver, range(count))
        texts = refresh_texts(count)
    else:
        texts = [register_text(n) for n in range(count)]
    facts: list[object] = []
    driver.facts = facts
    for text in texts:
        driver.receive(text, REGISTRANT)
        driver.advance(1.0 / 40)
    bus = EventBus()
    writes = WriteBehind(Clock(), _NoRunner(), max_pending=1 << 30)
    history = writes.channel(
        "history", _NoSink[HistoryKey, HistoryRow](), history_key, table_of=lambda key: str(key[0])
    )
    recorder = HistoryRecorder(line_of=lambda _: None, local_domains=[DOMAIN])
    HistoryFeed(recorder, history, lines=list, clock=lambda: driver.now).attach(bus)
    location = writes.channel(
        "location", _NoSink[BindingKey, Binding](), binding_key, key_text=binding_key_text
    )
    Persistence(
        location,
        writes.channel("sca_subscriptions", _NoSink[SubscriptionKey, Subscription](), subscription_key),
        writes.channel("sca_appearance", _NoSink[AppearanceKey, Appearance](), appearance_key),
    ).attach(bus)
    return _timed_over(bus.publish, facts, count, profile)


# --- the history feed of a seize cycle --------------------------------------------------------


def seize_run(count: int) -> tuple[Driver, list[object]]:
    """A core after ``count`` seize cycles, each on its own line, and the facts it delivered."""
    driver = Driver()
    populate(driver, range(count))
    facts: list[object] = []
    driver.facts = facts
    for n in range(count):
        seize_cycle(driver, n)
        driver.advance(1.0 / 40)
    return driver, facts


def seize_history_batch(count: int, profile: cProfile.Profile | None, *, feed: bool = False) -> float:
    """Seconds per seize cycle the history feed's mapper takes over the facts of ``count``
    seize cycles (two appearance changes each), kept from a run of the core."""
    driver, facts = seize_run(count)
    return _timed_history(driver, facts, count, profile, feed=feed)


def _lines(message: Message, *names: str) -> list[str]:
    return [f"{name}: {value}" for name in names for value in message.headers.lines(name)]


def callee_answer(request: Request, status: int, reason: str, *, to_tag: str, body: str = "") -> bytes:
    """The callee SIPp's answer (callee.xml): Vias, From, To with its tag, Call-ID, CSeq,
    Record-Route copied, its Contact, an SDP body on a 200 to an INVITE."""
    to = request.headers.get("To") or ""
    if ";tag=" not in to:
        to += f";tag={to_tag}"
    lines = [f"SIP/2.0 {status} {reason}", *_lines(request, "Via", "From"), f"To: {to}"]
    lines += _lines(request, "Call-ID", "CSeq", "Record-Route")
    lines.append(f"Contact: <sip:callee@{CALLEE.host}:{CALLEE.port}>")
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def register_callee(driver: Driver) -> None:
    host = f"{CALLEE.host}:{CALLEE.port}"
    text = (
        f"REGISTER sip:{DOMAIN} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {host};branch=z9hG4bK-callee-reg\r\n"
        f"From: <sip:callee@{DOMAIN}>;tag=reg\r\n"
        f"To: <sip:callee@{DOMAIN}>\r\n"
        "Call-ID: reg-callee@bench\r\n"
        "CSeq: 1 REGISTER\r\n"
        f"Contact: <sip:callee@{host}>\r\n"
        "Max-Forwards: 70\r\n"
        "Expires: 3600\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    driver.receive(text, CALLEE)


def settle(driver: Driver, n: int) -> list[Response]:
    """Play the peers until the core has nothing left to send: the sink and the seizer answer
    every NOTIFY with 200, the callee answers as callee.xml does.  The responses the caller
    received, in order."""
    to_caller: list[Response] = []
    outbox = driver.outbox
    assert outbox is not None, "a driver that keeps what the core sends"
    while outbox:
        message, peer = outbox.pop(0)
        if isinstance(message, Response):
            if peer == CALLER:
                to_caller.append(message)
            continue
        if message.method == "NOTIFY":
            driver.receive(ok_for(message), peer)
        elif peer == CALLEE and message.method == "INVITE":
            tag = f"e{n}"
            version = message.body.count(b"sendonly") + 1
            answer = CALL_SDP.format(version=version, mode="recvonly" if version == 2 else "sendrecv")
            if version == 1:
                driver.receive(callee_answer(message, 180, "Ringing", to_tag=tag), CALLEE)
                driver.advance(0.001)
            driver.receive(callee_answer(message, 200, "OK", to_tag=tag, body=answer), CALLEE)
        elif peer == CALLEE and message.method == "BYE":
            driver.receive(callee_answer(message, 200, "OK", to_tag=""), CALLEE)
    return to_caller


def caller_text(
    method: str, uri: str, n: int, cseq: int, *, to_tag: str, routes: Iterable[str], body: str
) -> bytes:
    user = FIRST_LINE + n
    host = f"{CALLER.host}:{CALLER.port}"
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: SIP/2.0/UDP {host};branch=z9hG4bK-call-{n}-{cseq}-{method}",
        *(f"Route: {route}" for route in routes),
        f"From: <sip:{user}@{DOMAIN}>;tag=1i{n}",
        f"To: <sip:callee@{DOMAIN}>" + (f";tag={to_tag}" if to_tag else ""),
        f"Call-ID: inv///{n}-1@{CALLER.host}",
        f"CSeq: {cseq} {'ACK' if method == 'ACK' else method}",
    ]
    if method != "BYE":
        lines.append(f"Contact: <sip:{user}@{host};member=a>")
    if method == "INVITE" and not to_tag:
        lines.append(f"Call-Info: <sip:{user}@{DOMAIN}>;appearance-index=1")
    lines.append("Max-Forwards: 70")
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def sca_call(driver: Driver, n: int) -> None:
    """One row of sca-call.xml: seize appearance 1, call the callee through the server, hold,
    hang up; every NOTIFY of it answered."""
    user = FIRST_LINE + n
    to = f"To: <sip:{user}@{DOMAIN}>\r\n"
    seize_info = f"Call-Info: <sip:{user}@{DOMAIN}>;appearance-index=1\r\n"
    driver.receive(
        subscribe_text(n, "sa", CALLER, event="line-seize", expires=15, cseq=1, extra=to + seize_info), CALLER
    )
    settle(driver, n)
    driver.advance(0.001)
    invite = caller_text(
        "INVITE",
        f"sip:callee@{DOMAIN}",
        n,
        1,
        to_tag="",
        routes=(),
        body=CALL_SDP.format(version=1, mode="sendrecv"),
    )
    driver.receive(invite, CALLER)
    answered = [r for r in settle(driver, n) if r.status == 200]
    assert answered, "the INVITE was not answered"
    ok = answered[0]
    to_tag = (ok.headers.get("To") or "").rpartition("tag=")[2]
    routes = ok.headers.lines("Record-Route")
    target = (ok.headers.get("Contact") or "").strip("<>")
    driver.advance(0.001)
    driver.receive(caller_text("ACK", target, n, 1, to_tag=to_tag, routes=routes, body=""), CALLER)
    settle(driver, n)
    driver.advance(0.001)
    hold = CALL_SDP.format(version=2, mode="sendonly")
    driver.receive(caller_text("INVITE", target, n, 2, to_tag=to_tag, routes=routes, body=hold), CALLER)
    assert any(r.status == 200 for r in settle(driver, n)), "the hold was not answered"
    driver.advance(0.001)
    driver.receive(caller_text("ACK", target, n, 2, to_tag=to_tag, routes=routes, body=""), CALLER)
    settle(driver, n)
    driver.advance(0.001)
    driver.receive(caller_text("BYE", target, n, 3, to_tag=to_tag, routes=routes, body=""), CALLER)
    assert any(r.status == 200 for r in settle(driver, n)), "the BYE was not answered"


WARM_UP = 50


def run_batch(scenario: str, count: int, profile: cProfile.Profile | None) -> float:
    """Seconds per request of ``count`` requests on a fresh core, after ``WARM_UP`` requests
    of the same kind (population and warm-up not measured)."""
    driver = call_driver() if scenario == "call" else Driver()
    # A call's timers (Timer K of its NOTIFYs, J of its non-INVITE requests: 5 and 32 s) fire
    # within the batch, as they do at any rate on a server in a steady state.
    step = 0.25 if scenario == "call" else 1.0 / 40
    texts = {
        "register": lambda: [register_text(n) for n in range(count + WARM_UP)],
        "register-refresh": lambda: refresh_texts(count + WARM_UP),
    }.get(scenario, list)()

    def one(n: int) -> None:
        if scenario == "seize":
            seize_cycle(driver, n)
        elif scenario == "call":
            sca_call(driver, n)
        else:
            driver.receive(texts[n], REGISTRANT)
        driver.advance(step)

    if scenario in ("seize", "call"):
        populate(driver, range(count + WARM_UP))
    if scenario == "register-refresh":
        register_members(driver, range(count + WARM_UP))
    if scenario == "call":
        register_callee(driver)
    for n in range(count, count + WARM_UP):
        one(n)
    elapsed = 0.0
    gc.collect()
    gc.disable()  # the collector's pauses are not the core's work (edge/collector.py tunes them)
    try:
        for n in range(count):
            began = time.perf_counter()
            if profile is not None:
                profile.enable()
            one(n)
            if profile is not None:
                profile.disable()
            elapsed += time.perf_counter() - began
    finally:
        gc.enable()
    return elapsed / count


# REGISTER with digest ---------------------------------------------------------------------

AUTH_SETTINGS = {
    "server": {"domains": [DOMAIN]},
    "auth": {"require": True, "realm": DOMAIN, "algorithms": ["MD5"]},
}
PASSWORD = "bench-secret"


def auth_driver(users: int) -> Driver:
    """A core with digest required, the subscribers ``FIRST_LINE + n`` for ``n < users``
    known with ``PASSWORD``, that keeps what it sends."""
    table = credential_lookup(
        Credentials.from_password(str(FIRST_LINE + n), DOMAIN, PASSWORD) for n in range(users)
    )
    driver = Driver(AUTH_SETTINGS, table)
    driver.outbox = []
    return driver


def authorization(challenge: Response, n: int) -> str:
    """The MD5 Authorization answering ``challenge`` (qop=auth, nc 1) for subscriber ``n``."""
    header = parse_auth(challenge.headers.get("WWW-Authenticate") or "")
    nonce = header.param("nonce") or ""
    user, uri, cnonce = str(FIRST_LINE + n), f"sip:{DOMAIN}", f"c{n:08x}"
    ha1 = compute_ha1(Algorithm.MD5, user, DOMAIN, PASSWORD)
    answer = compute_response(
        Algorithm.MD5, ha1, nonce=nonce, nc="00000001", cnonce=cnonce, qop="auth", method="REGISTER", uri=uri
    )
    return (
        f'Authorization: Digest username="{user}",realm="{DOMAIN}",uri="{uri}",nonce="{nonce}",'
        f'response="{answer}",algorithm=MD5,cnonce="{cnonce}",qop=auth,nc=00000001\r\n'
    )


def register_auth_texts(n: int, authorization: str) -> bytes:
    """``register_text(n)`` with CSeq 2 and ``authorization`` (the second REGISTER)."""
    first = register_text(n).decode()
    second = first.replace("CSeq: 1 REGISTER\r\n", "CSeq: 2 REGISTER\r\n" + authorization)
    return second.replace(f"branch=z9hG4bK-reg-{n}", f"branch=z9hG4bK-rega-{n}").encode()


def run_auth_batch(scenario: str, count: int, profile: cProfile.Profile | None) -> float:
    """Seconds per registration (401 + 200) of ``count`` registrations on a fresh core, after
    ``WARM_UP`` of them; only the core's work is timed."""
    driver = auth_driver(count + WARM_UP)
    outbox = driver.outbox
    assert outbox is not None
    step = 1.0 / 40
    texts = [register_text(n) for n in range(count + WARM_UP)]
    elapsed = 0.0

    def receive(data: bytes) -> Response:
        nonlocal elapsed
        began = time.perf_counter()
        if profile is not None:
            profile.enable()
        driver.receive(data, REGISTRANT)
        if profile is not None:
            profile.disable()
        elapsed += time.perf_counter() - began
        response = outbox[-1][0]
        outbox.clear()
        assert isinstance(response, Response)
        return response

    def one(n: int) -> None:
        challenge = receive(texts[n])
        assert challenge.status == 401, challenge.status
        ok = receive(register_auth_texts(n, authorization(challenge, n)))
        assert ok.status == 200, ok.status
        driver.advance(step)

    for n in range(count, count + WARM_UP):
        one(n)
    if profile is not None:
        profile.clear()
    elapsed = 0.0
    gc.collect()
    gc.disable()
    try:
        for n in range(count):
            one(n)
    finally:
        gc.enable()
    return elapsed / count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--scenario",
        choices=("register", "register-refresh", "register-auth", "seize", "call", "both"),
        default="both",
    )
    parser.add_argument("--count", type=int, default=400)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument(
        "--history",
        action="store_true",
        help="call, seize: also the history feed's mapper; register(-refresh): the edge's subscribers",
    )
    args = parser.parse_args(argv)
    compiled = sorted(
        name
        for name, module in sys.modules.items()
        if name.startswith("scaserver.") and str(getattr(module, "__file__", "")).endswith(".so")
    )
    print(f"scaserver from {scaserver.__file__}, compiled: {len(compiled)} modules")
    scenarios = ("register", "seize") if args.scenario == "both" else (args.scenario,)
    for scenario in scenarios:
        unit = {
            "register": "REGISTER",
            "register-refresh": "REGISTER",
            "register-auth": "registration",
            "seize": "seize cycle",
            "call": "call",
        }[scenario]
        batch = run_auth_batch if scenario == "register-auth" else run_batch
        _report(
            scenario,
            unit,
            functools.partial(batch, scenario, args.count),
            args,
        )
        if scenario in ("register", "register-refresh") and args.history:
            _report(
                "edge subscribers",
                unit,
                functools.partial(register_edge_batch, scenario, args.count),
                args,
            )
        if scenario in ("call", "seize") and args.history:
            history = history_batch if scenario == "call" else seize_history_batch
            for feed in (False, True):
                _report(
                    f"history {'feed' if feed else 'mapper'}",
                    unit,
                    functools.partial(history, args.count, feed=feed),
                    args,
                )


def _report(
    label: str, unit: str, batch: Callable[[cProfile.Profile | None], float], args: argparse.Namespace
) -> None:
    """Prints the Python calls per ``unit`` of one profiled ``batch``, the min and median of
    ``args.repeat`` timed ones, and with ``--profile`` the top functions by own time."""
    profile = cProfile.Profile()
    batch(profile)
    calls = pstats.Stats(profile, stream=io.StringIO()).total_calls  # type: ignore[attr-defined]
    timings = sorted(batch(None) for _ in range(args.repeat))
    print(
        f"{label}: {calls / args.count:.0f} calls per {unit}, min {timings[0] * 1e6:.1f} us"
        f" (median {timings[len(timings) // 2] * 1e6:.1f} us) over {args.repeat} x {args.count}"
    )
    if args.profile:
        text = io.StringIO()
        pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(args.top)
        print(text.getvalue())


if __name__ == "__main__":
    main()
