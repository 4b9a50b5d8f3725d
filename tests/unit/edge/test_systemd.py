"""sd_notify: addresses, the watchdog interval, and the messages on a real datagram socket."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from twisted.internet import task
from twisted.internet.defer import Deferred, succeed

from scaserver.edge.systemd import SystemdNotifier, notify_address, watchdog_interval


def test_notify_address_forms() -> None:
    assert notify_address({"NOTIFY_SOCKET": "/run/systemd/notify"}) == "/run/systemd/notify"
    assert notify_address({"NOTIFY_SOCKET": "@sd/notify"}) == "\0sd/notify"
    assert notify_address({}) is None
    assert notify_address({"NOTIFY_SOCKET": "relative"}) is None


def test_watchdog_interval_is_half_of_watchdog_usec_for_this_process() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "20000000"}, 42) == 10.0
    assert watchdog_interval({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "42"}, 42) == 10.0
    assert watchdog_interval({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "7"}, 42) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}, 42) is None
    assert watchdog_interval({"WATCHDOG_USEC": "x"}, 42) is None
    assert watchdog_interval({}, 42) is None


@pytest.fixture(params=["path", "abstract"])
def listener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        name = str(tmp_path / "notify")
        sock.bind(name)
    else:
        name = f"@scaserver-test-{uuid.uuid4().hex}"
        sock.bind("\0" + name[1:])
    sock.settimeout(2.0)
    with sock:
        yield sock, name


def _received(sock: socket.socket) -> list[str]:
    messages = []
    sock.setblocking(False)
    while True:
        try:
            messages.append(sock.recv(4096).decode())
        except BlockingIOError:
            return messages


def test_ready_watchdog_and_stopping(listener: tuple[socket.socket, str]) -> None:
    sock, name = listener
    clock = task.Clock()
    answers = iter([False, True])
    asked: list[Deferred[bool]] = []

    def ready() -> Deferred[bool]:
        asked.append(succeed(next(answers)))
        return asked[-1]

    env = {"NOTIFY_SOCKET": name, "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())}
    notifier = SystemdNotifier(clock, ready, env, retry_s=1.0)
    notifier.startService()
    assert _received(sock) == ["WATCHDOG=1", "STATUS=waiting for the database"]
    assert not notifier.ready_sent
    clock.advance(1.0)  # asked again: ready now
    (ready_message,) = _received(sock)
    assert ready_message.splitlines()[:2] == ["READY=1", "STATUS=serving"]
    assert notifier.ready_sent and len(asked) == 2
    clock.advance(2.0)  # half of WATCHDOG_USEC
    assert _received(sock) == ["WATCHDOG=1"]
    notifier.stopService()
    assert _received(sock) == ["STOPPING=1\nSTATUS=stopping"]
    clock.advance(10.0)
    assert _received(sock) == [] and not clock.getDelayedCalls()


def test_without_notify_socket_nothing_is_sent_or_asked() -> None:
    clock = task.Clock()
    asked: list[bool] = []

    def ready() -> Deferred[bool]:
        asked.append(True)
        return succeed(True)

    notifier = SystemdNotifier(clock, ready, {"WATCHDOG_USEC": "1000000"})
    notifier.startService()
    clock.advance(5)
    notifier.stopService()
    assert asked == [] and not clock.getDelayedCalls()


def test_a_gone_systemd_is_logged_not_raised(tmp_path: Path) -> None:
    notifier = SystemdNotifier(task.Clock(), lambda: succeed(True), {"NOTIFY_SOCKET": str(tmp_path / "gone")})
    notifier.startService()  # READY=1 to a socket nobody listens on: logged
    assert notifier.ready_sent
    notifier.stopService()
