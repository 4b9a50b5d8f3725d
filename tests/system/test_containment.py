"""Containment against the real server: svcrack guessing a subscriber's password is banned
within 5 guesses (and the log has the fail2ban lines); a bounded UDP OPTIONS flood from
127.0.0.2 gets that address banned while 127.0.0.3 keeps being answered; sec.bans, sec.unban
and the security metrics over the control plane.  No timing assertions beyond generous bounds
(the flood's loss, latency and memory figures are measured by bench/flood.py)."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.system.accounts import CONFIG, DOMAIN, add_subscribers
from tests.system.server import ROOT, RunningServer, running_server, tool

pytestmark = pytest.mark.system

FLOODER = "127.0.0.2"
BYSTANDER = "127.0.0.3"
GUESSER = "127.0.0.1"
SECURITY = """
[security]
rate = 50.0
burst = 100.0
ban_s = 120.0
auth_failures = 5
allow = ["127.0.0.1/32"]
"""


def scactl(server: RunningServer, *argv: str) -> str:
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "rpc" / "scactl"),
            "-s",
            f"http://127.0.0.1:{server.http_port}/RPC",
            *argv,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return result.stdout


def metrics(server: RunningServer) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.http_port}/metrics", timeout=5) as reply:
        return str(reply.read().decode())


def options_from(port: int, host: str, call_id: str) -> bytes:
    return (
        f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {host}:9;branch=z9hG4bK{uuid.uuid4().hex};rport\r\n"
        f"From: <sip:probe@{host}>;tag={uuid.uuid4().hex[:8]}\r\n"
        f"To: <sip:127.0.0.1:{port}>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def answered(sock: socket.socket, port: int, host: str, timeout: float = 3.0) -> bool:
    """One OPTIONS from ``sock`` (bound to ``host``); True when its 200 comes back in time
    (answers to earlier requests still queued on the socket are skipped)."""
    call_id = uuid.uuid4().hex
    sock.settimeout(timeout)
    sock.sendto(options_from(port, host, call_id), ("127.0.0.1", port))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65535)
        except TimeoutError:
            return False
        if data.startswith(b"SIP/2.0 200") and f"Call-ID: {call_id}\r\n".encode() in data:
            return True
    return False


def bound(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    return sock


def test_svcrack_is_banned_within_five_guesses(tmp_path: Path) -> None:
    workdir = tmp_path / "server"
    workdir.mkdir()
    db_url = f"sqlite:///{workdir / 'scaserver.db'}"
    add_subscribers(db_url, [("alice", "not-a-number")])
    # svcrack sends from 127.0.0.1 whatever its -b says: nothing is allowed here.
    config = CONFIG + SECURITY.replace('allow = ["127.0.0.1/32"]', "allow = []")
    with running_server(workdir, config, db_url=db_url) as server:
        result = subprocess.run(
            [
                tool("svcrack"),
                "-u",
                "alice",
                "-r",
                "1000-1200",
                "-p",
                str(server.sip_port),
                "--maximumtime=5",
                f"--domain={DOMAIN}",  # the realm is the AoR's domain: guess alice@example.test
                "127.0.0.1",
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
            cwd=tmp_path,
        )
        log = server.log()
        failures = re.findall(
            rf"security: auth failure source={re.escape(GUESSER)} user=alice realm={DOMAIN} reason=(\S+)", log
        )
        assert failures, result.stdout + result.stderr + log
        assert set(failures) <= {"wrong-password", "replay"}
        assert len(failures) <= 5
        assert f"security: ban source={GUESSER} reason=auth-failures" in log
        assert "Could not crack" in result.stdout + result.stderr or "password" not in result.stdout.lower()
        bans = json.loads(scactl(server, "-F", "json", "sec.bans"))
        assert [(ban["source"], ban["reason"]) for ban in bans] == [(GUESSER, "auth-failures")]
        assert re.search(
            r'scaserver_security_auth_failures_total\{reason="wrong-password"\} [1-5]\.0', metrics(server)
        )


def test_an_options_flood_is_banned_and_another_address_keeps_being_answered(tmp_path: Path) -> None:
    with running_server(tmp_path / "server", CONFIG + SECURITY) as server:
        port = server.sip_port
        flooder, bystander = bound(FLOODER), bound(BYSTANDER)
        try:
            assert answered(bystander, port, BYSTANDER)
            flooder.setblocking(False)
            sent, deadline = 0, time.monotonic() + 10
            while sent < 20_000 and time.monotonic() < deadline:  # bounded in count and time
                try:
                    flooder.sendto(options_from(port, FLOODER, f"flood-{sent}"), ("127.0.0.1", port))
                    sent += 1
                except BlockingIOError:
                    time.sleep(0.001)
                if sent % 2000 == 0:
                    assert answered(bystander, port, BYSTANDER), f"no answer after {sent} flood messages"
            answers = sum(answered(bystander, port, BYSTANDER) for _ in range(20))
            assert answers >= 19  # UDP on a loaded machine: one loss is tolerated
            log = server.log()
            assert f"security: ban source={FLOODER} reason=rate" in log
            flooder.setblocking(True)
            assert not answered(flooder, port, FLOODER, timeout=1.0)  # still banned
            bans = json.loads(scactl(server, "-F", "json", "sec.bans"))
            assert [(ban["source"], ban["reason"]) for ban in bans] == [(FLOODER, "rate")]
            text = metrics(server)
            assert 'scaserver_security_bans_total{reason="rate"} 1.0' in text
            assert "scaserver_security_bans_active 1.0" in text
            dropped = re.search(r"^scaserver_security_dropped_messages_total (\S+)$", text, re.MULTILINE)
            assert dropped is not None and float(dropped[1]) > 0
            assert json.loads(scactl(server, "-F", "json", "sec.unban", FLOODER)) is True
            assert answered(flooder, port, FLOODER)  # the ban is lifted
        finally:
            flooder.close()
            bystander.close()
