"""SIP over real loopback sockets (127.0.0.1 and ::1, port 0): UDP, TCP framing, limits, reuse, dialing.

The service under test is the one ``scaserver.siproot.make_service`` builds, around a
core that answers every request with 200 (or does what a test scripts).  The
test's own end is a plain non-blocking socket polled while the reactor runs.
TCP timeouts run on a ``task.Clock`` injected into the stream factory; nothing
sleeps for a timeout.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import ParamSpec, cast

import pytest
import pytest_twisted
from twisted.internet import reactor as installed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import Clock, deferLater

from scaserver.config.schema import ServerSettings, Settings, SipSettings
from scaserver.edge.endpoint import Endpoint
from scaserver.edge.resolver import HostsTable
from scaserver.edge.services import Reactor, SipService
from scaserver.edge.stack import DelayedCall, Transports, call_later
from scaserver.edge.tcp import SipStreamFactory, StreamLimits, TcpListener
from scaserver.edge.udp import READ_PER_TURN
from scaserver.sip.actions import Action, Send
from scaserver.sip.message import Peer, Request, Transport
from scaserver.sip.parser import parse_message
from scaserver.sip.responses import make_response
from scaserver.siproot import make_service
from tests.unit.edge.doubles import FakeCore, RecordingSink

P = ParamSpec("P")
reactor = cast(Reactor, installed)
clock = cast(IReactorTime, installed)


def twisted_test(test: Callable[P, Awaitable[None]]) -> Callable[P, None]:
    """``pytest_twisted.ensureDeferred`` with its type spelled out (the plugin ships no annotations)."""
    wrapped: Callable[P, None] = pytest_twisted.ensureDeferred(test)
    return wrapped


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


HOSTS = [
    "127.0.0.1",
    pytest.param("::1", marks=pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback")),
]


def family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def request_bytes(transport: str, host: str, call_id: str = "c1", body: bytes = b"") -> bytes:
    sent_by = f"[{host}]" if ":" in host else host
    return (
        f"OPTIONS sip:demo.scaserver.test SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} {sent_by}:5999;branch=z9hG4bK-{call_id}\r\n"
        f"From: <sip:a@demo.scaserver.test>;tag=f1\r\n"
        f"To: <sip:demo.scaserver.test>\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: 1 OPTIONS\r\n"
        f"Max-Forwards: 70\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def answer_ok(data: bytes, peer: Peer, now: float) -> list[Action]:
    message = parse_message(data)
    if isinstance(message, Request):
        return [Send(make_response(message, 200), peer)]
    return []


def start(host: str, core: FakeCore, max_message_size: int = 65535) -> SipService:
    settings = Settings(
        server=ServerSettings(listen=(Endpoint(host, 0),)), sip=SipSettings(max_message_size=max_message_size)
    )
    service = make_service(settings, reactor, core, hosts=HostsTable())
    service.startService()  # type: ignore[no-untyped-call]
    return service


async def stop(service: SipService) -> None:
    await service.stopService()  # type: ignore[no-untyped-call]


async def eventually(condition: Callable[[], bool], what: str) -> None:
    """Let the reactor run until ``condition`` holds (socket I/O is asynchronous), at most 5 s."""
    for _ in range(500):
        if condition():
            return
        await deferLater(clock, 0.01, lambda: None)
    raise AssertionError(f"timed out waiting for {what}")


class Client:
    """The test's end of a TCP connection: a non-blocking socket."""

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port), timeout=5)
        self.sock.setblocking(False)
        self.data = b""
        self.closed = False

    @property
    def address(self) -> tuple[str, int]:
        name = self.sock.getsockname()
        return name[0], name[1]

    def poll(self) -> None:
        while not self.closed:
            try:
                chunk = self.sock.recv(65536)
            except BlockingIOError:
                return
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.closed = True
            self.data += chunk

    async def until(self, condition: Callable[[Client], bool], what: str) -> None:
        def check() -> bool:
            self.poll()
            return condition(self)

        await eventually(check, what)

    def close(self) -> None:
        self.sock.close()


def responses(data: bytes) -> int:
    return data.count(b"SIP/2.0 200 OK\r\n")


@pytest.mark.parametrize("host", HOSTS)
@twisted_test
async def test_udp_request_is_answered_to_its_source(host: str) -> None:
    service = start(host, core := FakeCore(on_receive=answer_ok))
    client = socket.socket(family(host), socket.SOCK_DGRAM)
    client.bind((host, 0))
    client.setblocking(False)
    answers: list[bytes] = []

    def answered() -> bool:
        try:
            answers.append(client.recv(65536))
        except BlockingIOError:
            return False
        return True

    try:
        client.sendto(request_bytes("UDP", host), (host, service.udp[0].port))
        await eventually(answered, "the UDP answer")
        assert answers[0].startswith(b"SIP/2.0 200 OK\r\n")
        [(_, peer, _)] = core.received
        assert peer == Peer(Transport.UDP, host, client.getsockname()[1])
    finally:
        client.close()
        await stop(service)


@twisted_test
async def test_a_burst_of_datagrams_is_read_a_bounded_slice_per_reactor_turn() -> None:
    """Between two slices the reactor runs its timers: a burst of 120 datagrams of 1000
    octets (120 000 octets, which Twisted alone reads in one turn) takes several turns."""
    service = start("127.0.0.1", core := FakeCore())
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    seen_at_turns: list[int] = []
    turns: list[DelayedCall] = []

    def turn() -> None:  # runs once per reactor iteration, before it polls
        seen_at_turns.append(len(core.received))
        turns.append(call_later(reactor, 0, turn))

    try:
        for number in range(120):
            datagram = request_bytes("UDP", "127.0.0.1", f"b{number}").ljust(1000, b"x")
            client.sendto(datagram, ("127.0.0.1", service.udp[0].port))
        turn()
        await eventually(lambda: len(core.received) == 120, "the burst")
        slices = [after - before for before, after in itertools.pairwise(seen_at_turns)]
        assert max(slices) <= READ_PER_TURN // 1000 + 1
        assert sum(slices) + seen_at_turns[0] == 120
    finally:
        if turns and turns[-1].active():
            turns[-1].cancel()
        client.close()
        await stop(service)


@pytest.mark.parametrize("host", HOSTS)
@twisted_test
async def test_tcp_messages_across_chunks_are_answered_on_the_same_connection(host: str) -> None:
    service = start(host, core := FakeCore(on_receive=answer_ok))
    client = Client(host, service.tcp[0].port)
    try:
        data = request_bytes("TCP", host, "a", b"v=0\r\n") + request_bytes("TCP", host, "b")
        for index in range(0, len(data), 50):
            client.sock.sendall(data[index : index + 50])
            await deferLater(clock, 0, lambda: None)  # one reactor turn: separate reads where possible
        await client.until(lambda c: responses(c.data) == 2, "two responses")
        assert [parse_message(data).call_id for data, _, _ in core.received] == ["a", "b"]
        assert {peer for _, peer, _ in core.received} == {Peer(Transport.TCP, host, client.address[1])}
        assert service.transports.stream_to(Peer(Transport.TCP, host, client.address[1])) is not None
    finally:
        client.close()
        await stop(service)


@twisted_test
async def test_tcp_oversize_message_closes_the_connection_without_an_answer() -> None:
    service = start("127.0.0.1", core := FakeCore(on_receive=answer_ok), max_message_size=1024)
    client = Client("127.0.0.1", service.tcp[0].port)
    try:
        client.sock.sendall(request_bytes("TCP", "127.0.0.1", body=b"x" * 2000))
        await client.until(lambda c: c.closed, "the server to close")
        assert client.data == b""
        assert core.received == []
        await eventually(lambda: core.lost != [], "connection_lost")
    finally:
        client.close()
        await stop(service)


@twisted_test
async def test_connection_closed_by_the_peer_is_reported_and_unregistered() -> None:
    service = start("127.0.0.1", core := FakeCore(on_receive=answer_ok))
    client = Client("127.0.0.1", service.tcp[0].port)
    try:
        await eventually(lambda: len(service.transports.streams) == 1, "the connection to register")
        client.close()
        await eventually(lambda: core.lost != [], "connection_lost")
        assert service.transports.streams == ()
    finally:
        await stop(service)


async def stop_listener(listener: TcpListener) -> None:
    stopping = listener.stopService()
    if stopping is not None:
        await stopping


def listen_with_clock(limits: StreamLimits) -> tuple[TcpListener, Clock, RecordingSink, Transports]:
    sink, transports, fake_clock = RecordingSink(), Transports(), Clock()
    listener = TcpListener(reactor, "127.0.0.1", 0, SipStreamFactory(sink, transports, limits, fake_clock))
    listener.startService()
    return listener, fake_clock, sink, transports


@twisted_test
async def test_slow_sender_is_disconnected_after_the_timeout() -> None:
    listener, fake_clock, sink, _ = listen_with_clock(StreamLimits(slow_sender_timeout=10.0))
    client = Client("127.0.0.1", listener.port)
    try:
        client.sock.sendall(request_bytes("TCP", "127.0.0.1")[:40])
        await eventually(
            lambda: len(fake_clock.getDelayedCalls()) == 2, "the slow-sender timer"
        )  # idle + slow
        fake_clock.advance(9.9)
        client.poll()
        assert not client.closed
        fake_clock.advance(0.1)
        await client.until(lambda c: c.closed, "the server to close")
        assert sink.received == []
        await eventually(lambda: len(sink.lost) == 1, "connection_lost")
    finally:
        client.close()
        await stop_listener(listener)


@twisted_test
async def test_idle_connection_is_closed() -> None:
    listener, fake_clock, sink, transports = listen_with_clock(StreamLimits(idle_timeout=30.0))
    client = Client("127.0.0.1", listener.port)
    try:
        await eventually(lambda: len(transports.streams) == 1, "the connection to register")
        client.sock.sendall(request_bytes("TCP", "127.0.0.1"))
        await eventually(lambda: len(sink.received) == 1, "the message")
        fake_clock.advance(29)
        client.poll()
        assert not client.closed
        fake_clock.advance(1)
        await client.until(lambda c: c.closed, "the server to close")
        await eventually(lambda: transports.streams == (), "the connection to unregister")
    finally:
        client.close()
        await stop_listener(listener)


@twisted_test
async def test_request_to_a_peer_without_connection_dials_it() -> None:
    remote = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    remote.bind(("127.0.0.1", 0))
    remote.listen(1)
    remote.setblocking(False)
    target = Peer(Transport.TCP, "127.0.0.1", remote.getsockname()[1])
    outgoing = parse_message(request_bytes("TCP", "127.0.0.1", "out"))

    def forward(data: bytes, peer: Peer, now: float) -> list[Action]:
        return [Send(outgoing, target), Send(outgoing, target)]

    service = start("127.0.0.1", FakeCore(on_receive=forward))
    trigger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    accepted: list[socket.socket] = []
    received = bytearray()

    def got_both() -> bool:
        if not accepted:
            try:
                accepted.append(remote.accept()[0])
                accepted[0].setblocking(False)
            except BlockingIOError:
                return False
        with contextlib.suppress(BlockingIOError):
            received.extend(accepted[0].recv(65536))
        return received.count(b"OPTIONS sip:") == 2

    try:
        trigger.sendto(b"go", ("127.0.0.1", service.udp[0].port))
        await eventually(got_both, "both requests on one dialed connection")
        assert service.transports.stream_to(target) is not None
    finally:
        trigger.close()
        for sock in accepted:
            sock.close()
        remote.close()
        await stop(service)


@twisted_test
async def test_failed_dial_reports_connection_lost() -> None:
    closed = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there: the connection is refused
    target = Peer(Transport.TCP, "127.0.0.1", port)
    outgoing = parse_message(request_bytes("TCP", "127.0.0.1", "out"))
    service = start(
        "127.0.0.1", core := FakeCore(on_receive=lambda data, peer, now: [Send(outgoing, target)])
    )
    trigger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        trigger.sendto(b"go", ("127.0.0.1", service.udp[0].port))
        await eventually(lambda: [peer for peer, _ in core.lost] == [target], "the dial failure")
    finally:
        trigger.close()
        await stop(service)


@twisted_test
async def test_stopping_the_service_closes_listeners_and_connections() -> None:
    service = start("127.0.0.1", FakeCore(on_receive=answer_ok))
    port = service.tcp[0].port
    client = Client("127.0.0.1", port)
    await eventually(lambda: len(service.transports.streams) == 1, "the connection to register")
    await stop(service)
    await client.until(lambda c: c.closed, "the connection to close")
    client.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def upgraded_database(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/x.db"
    subprocess.run(
        [sys.executable, "-m", "scaserver.cli", "db", "upgrade", "--db", url], check=True, capture_output=True
    )
    return url


def test_run_command_refuses_a_database_that_is_behind(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "scaserver.cli",
            "run",
            "--sip",
            "127.0.0.1:0",
            "--db",
            f"sqlite:///{tmp_path}/x.db",
        ],
        capture_output=True,
        check=False,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "run `scaserver db upgrade` first" in result.stderr


def test_run_command_serves_and_stops_within_five_seconds_on_sigterm(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    url = upgraded_database(tmp_path)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "scaserver.cli",
            "run",
            "--sip",
            "127.0.0.1:0",
            "--db",
            url,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        cwd=tmp_path,
    )
    assert process.stderr is not None
    output = b""
    deadline = time.monotonic() + 20
    try:
        while b"listening on TCP" not in output:
            assert time.monotonic() < deadline, output.decode(errors="replace")
            ready, _, _ = select.select([process.stderr], [], [], 0.5)
            if ready:
                chunk = os.read(process.stderr.fileno(), 65536)
                assert chunk, output.decode(errors="replace")
                output += chunk
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert time.monotonic() - started < 5
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stderr.close()


def test_run_command_exits_2_when_an_address_cannot_be_bound(tmp_path: Path) -> None:
    url = upgraded_database(tmp_path)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "scaserver.cli",
                "run",
                "--sip",
                f"127.0.0.1:{port}",
                "--db",
                url,
                "--log-level",
                "error",
            ],
            capture_output=True,
            timeout=30,
            cwd=tmp_path,
            check=False,
        )
    assert result.returncode == 2
    assert result.stderr.decode().startswith(
        f"server.listen: cannot bind: Couldn't listen on 127.0.0.1:{port}"
    )


@twisted_test
async def test_connections_beyond_the_per_address_limit_are_closed_at_once() -> None:
    limits = StreamLimits(max_connections_per_address=2, max_connections=100)
    listener, _, _, transports = listen_with_clock(limits)
    clients = [Client("127.0.0.1", listener.port) for _ in range(2)]
    try:
        await eventually(lambda: len(transports.streams) == 2, "two connections to register")
        refused = Client("127.0.0.1", listener.port)
        clients.append(refused)
        await refused.until(lambda c: c.closed, "the server to close the third connection")
        for client in clients[:2]:
            client.poll()
            assert not client.closed
        assert listener.factory.refused["per-address"] == 1
    finally:
        for client in clients:
            client.close()
        await stop_listener(listener)


@twisted_test
async def test_a_connection_that_carried_no_authenticated_request_gets_the_short_idle_timeout() -> None:
    limits = StreamLimits(idle_timeout=600.0, unvouched_idle_timeout=30.0)
    listener, fake_clock, _, transports = listen_with_clock(limits)
    quiet, vouched = Client("127.0.0.1", listener.port), Client("127.0.0.1", listener.port)
    try:
        await eventually(lambda: len(transports.streams) == 2, "the connections to register")
        vouched_key = vouched.address
        for stream in transports.streams:
            if (stream.peer.host, stream.peer.port) == vouched_key:
                stream.vouch()
        fake_clock.advance(30)
        await quiet.until(lambda c: c.closed, "the server to close the idle unvouched connection")
        vouched.poll()
        assert not vouched.closed
        fake_clock.advance(570)
        await vouched.until(lambda c: c.closed, "the long idle timeout")
    finally:
        quiet.close()
        vouched.close()
        await stop_listener(listener)
