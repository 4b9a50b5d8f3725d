"""The systemd unit passes ``systemd-analyze verify``, and the real server speaks sd_notify to
a ``$NOTIFY_SOCKET`` this test plays: READY=1 once it serves, WATCHDOG=1 at half of
``$WATCHDOG_USEC``, STOPPING=1 on SIGTERM."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system.server import ROOT, options_request, running_server, udp_exchange

UNIT = ROOT / "contrib" / "systemd" / "scaserver.service"
INSTALLED_AT = "/opt/scaserver/bin/scaserver"

pytestmark = pytest.mark.system


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None, "systemd-analyze is missing: run the test command (sh .ci/test)"
    text = UNIT.read_text()
    for option in ("Type=notify", "NotifyAccess=main", "WatchdogSec=", "StateDirectory=scaserver"):
        assert option in text
    # verify checks that ExecStart exists: point it at this environment's scaserver.
    script = Path(sys.executable).with_name("scaserver")
    assert INSTALLED_AT in text
    unit = tmp_path / "scaserver.service"
    unit.write_text(text.replace(INSTALLED_AT, str(script if script.exists() else sys.executable)))
    done = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "scaserver.service" not in done.stderr, done.stderr  # no ignored key, no warning


def test_the_example_configuration_is_valid() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "scaserver", "check-config", str(UNIT.with_name("scaserver.toml"))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    name = f"@scaserver-test-{uuid.uuid4().hex}"  # the abstract namespace, as systemd may use
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name[1:])
        sock.settimeout(10.0)
        yield sock, name


def _next(sock: socket.socket, prefix: str) -> dict[str, str]:
    """The next notification whose first line starts with ``prefix`` (others are skipped)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        message = sock.recv(4096).decode()
        if message.startswith(prefix):
            return dict(line.split("=", 1) for line in message.splitlines())
    raise AssertionError(f"no {prefix} notification")


def test_ready_watchdog_and_stopping_from_the_server(
    tmp_path: Path, notify_socket: tuple[socket.socket, str]
) -> None:
    sock, name = notify_socket
    environ = {"NOTIFY_SOCKET": name, "WATCHDOG_USEC": "1000000"}
    with running_server(tmp_path, environ=environ) as server:
        ready = _next(sock, "READY=1")
        assert ready["MAINPID"] == str(server.process.pid) and ready["STATUS"] == "serving"
        assert udp_exchange(server.sip_port, options_request(server.sip_port)) is not None
        _next(sock, "WATCHDOG=1")
        _next(sock, "WATCHDOG=1")
        assert server.stop() == 0
        assert _next(sock, "STOPPING=1")["STATUS"] == "stopping"
