"""The real scaserver process, started for system tests on free loopback ports."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import attrs

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"
SCASERVER = [sys.executable, "-m", "scaserver.cli"]


def free_port(host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP on ``host``, below 10000 (sipsak 0.9.8 cuts
    five-digit ports in the URIs it writes)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(200):
        port = random.randrange(5100, 9999)
        with socket.socket(family, socket.SOCK_STREAM) as tcp:
            try:
                tcp.bind((host, port))
            except OSError:
                continue
            with socket.socket(family, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((host, port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port")


def options_request(port: int, *, transport: str = "UDP", call_id: str | None = None) -> bytes:
    call_id = call_id or uuid.uuid4().hex
    branch = "z9hG4bK" + uuid.uuid4().hex
    return (
        f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} 127.0.0.1:9;branch={branch};rport\r\n"
        f"From: <sip:probe@127.0.0.1>;tag={uuid.uuid4().hex[:8]}\r\n"
        f"To: <sip:127.0.0.1:{port}>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def udp_exchange(port: int, data: bytes, *, timeout: float = 2.0, host: str = "127.0.0.1") -> bytes | None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(data, (host, port))
        try:
            return sock.recv(65535)
        except TimeoutError:
            return None


@attrs.define
class RunningServer:
    process: subprocess.Popen[bytes]
    sip_port: int
    http_port: int
    db_url: str
    log_path: Path
    config_path: Path

    @property
    def sip_address(self) -> str:
        return f"127.0.0.1:{self.sip_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 5.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
                raise AssertionError(f"scaserver did not stop within {timeout} s:\n{self.log()}") from None
        return int(self.process.returncode)


LOOPBACK_ALLOWED = '\n[security]\nallow = ["127.0.0.1/32", "::1/128"]\n'


def upgrade_database(db_url: str) -> None:
    subprocess.run([*SCASERVER, "db", "upgrade", "--db", db_url], check=True, cwd=ROOT, capture_output=True)


@contextmanager
def running_server(
    workdir: Path,
    config_text: str | None = "",
    *,
    db_url: str | None = None,
    extra_args: tuple[str, ...] = (),
    environ: Mapping[str, str] | None = None,
    sip_port: int | None = None,
) -> Iterator[RunningServer]:
    """Start ``scaserver run`` with ``config_text`` (and ``environ`` added to the environment)
    and wait until it answers OPTIONS; on ``sip_port`` when given (a restart where the phones'
    route sets point).  ``config_text`` None starts it with no configuration file at all
    (``--config`` left out)."""
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "scaserver.toml"
    config_args: tuple[str, ...] = ()
    if config_text is not None:
        if "[security]" not in config_text:
            # The tools of most tests send from 127.0.0.1 faster than a phone would: never limit
            # it (the containment tests send from 127.0.0.2 and 127.0.0.3 with their own [security]).
            config_text += LOOPBACK_ALLOWED
        config_path.write_text(config_text)
        config_args = ("--config", str(config_path))
    db_url = db_url or f"sqlite:///{workdir / 'scaserver.db'}"
    upgrade_database(db_url)
    sip_port, http_port = sip_port or free_port(), free_port()
    log_path = workdir / "scaserver.log"
    env = dict(os.environ, PYTHONUNBUFFERED="1", **(environ or {}))
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [
                *SCASERVER,
                "run",
                *config_args,
                "--sip",
                f"127.0.0.1:{sip_port}",
                "--http",
                f"127.0.0.1:{http_port}",
                "--db",
                db_url,
                *extra_args,
            ],
            cwd=ROOT,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
        )
    server = RunningServer(process, sip_port, http_port, db_url, log_path, config_path)
    try:
        deadline = time.monotonic() + 20
        while True:
            if process.poll() is not None:
                raise AssertionError(f"scaserver exited with {process.returncode}:\n{server.log()}")
            if udp_exchange(sip_port, options_request(sip_port), timeout=0.3) is not None:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"scaserver never answered OPTIONS:\n{server.log()}")
        yield server
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)


def tool(name: str) -> str:
    """The path of an external SIP tool the test command installs (sip-tester, sipsak)."""
    path = shutil.which(name)
    if path is None:
        raise AssertionError(f"{name} is not installed: run the test command (sh .ci/test) to install it")
    return path
