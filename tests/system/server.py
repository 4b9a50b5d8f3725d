"""The real scaserver process, started for system tests on free loopback ports."""

from __future__ import annotations

import atexit
import collections
import functools
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import attrs
from sqlalchemy.engine import make_url

from scaserver.store import migrate

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"
SCASERVER = [sys.executable, "-m", "scaserver.cli"]


# What SIPp binds besides its SIP port: its media ports from 6000 up and its control port
# from 8888 up (the next ones when taken); never handed out, so that a SIPp starting meanwhile
# cannot take a port chosen for someone else.
_SIPP_PORTS = (range(6000, 6200), range(8888, 9000))


def _port_choices() -> list[int]:
    """5100-9998 less SIPp's ports; under pytest-xdist, this worker's block of them, so that
    two workers never choose the same port between its check and its bind."""
    choices = [port for port in range(5100, 9999) if not any(port in taken for taken in _SIPP_PORTS)]
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if count > 1 and worker.startswith("gw"):
        share = len(choices) // count  # a block of neighbours (baresip also takes the next port)
        index = int(worker[2:])
        return choices[index * share : (index + 1) * share]
    return choices


_PORT_CHOICES = _port_choices()
# The ports handed out last: free now, perhaps, but about to be bound again (a server restarted
# on its port gets a new HTTP port, which must not be that one).
_HANDED_OUT: collections.deque[int] = collections.deque(maxlen=256)


def free_port(host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP on ``host``, below 10000 (sipsak 0.9.8 cuts
    five-digit ports in the URIs it writes), and none of the last ones handed out."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(200):
        port = random.choice(_PORT_CHOICES)
        if port in _HANDED_OUT:
            continue
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
            _HANDED_OUT.append(port)
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


@functools.cache
def _migrated_sqlite() -> Path:
    """A SQLite file at the head revision, migrated once per test process."""
    directory = Path(tempfile.mkdtemp(prefix="scaserver-schema-"))
    atexit.register(shutil.rmtree, directory, True)
    migrated = directory / "head.db"
    migrate.upgrade(f"sqlite:///{migrated}")
    assert not migrated.with_name("head.db-wal").exists(), "the migrated file is not whole"
    return migrated


def upgrade_database(db_url: str) -> None:
    """Bring the database to the head revision as ``scaserver db upgrade`` does, in this
    process: a SQLite file that does not exist yet is a copy of one migrated once."""
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite" and url.database and not url.query:
        path = Path(url.database)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(_migrated_sqlite(), path)
            return
    migrate.upgrade(db_url)


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
