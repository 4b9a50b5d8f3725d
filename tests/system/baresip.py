"""baresip from Debian as a member of a shared line in system tests (real-uas.md).

A real SIP phone that scaserver did not design: its Contact user is ``ACCOUNT-0x<pointer>``,
it refreshes and ends its registration by itself, and it CANCELs, answers and hangs up as
it chooses.  It runs headless (a sine source, a bridge player, no sound card) and is driven
through its ``ctrl_tcp`` module: netstring-framed JSON commands (``dial``, ``accept``,
``hangup``) and the JSON events it reports (``REGISTER_OK``, ``CALL_INCOMING``...).
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from tests.system.server import free_port, tool

CONFIG = """\
poll_method\tepoll
sip_listen\t127.0.0.1:{sip_port}
module_path\t/usr/lib/baresip/modules
module\tg711.so
module\tausine.so
module\taubridge.so
module\taccount.so
module_app\tmenu.so
module_app\tctrl_tcp.so
ctrl_tcp_listen\t127.0.0.1:{ctrl_port}
audio_player\taubridge,{name}
audio_source\tausine,440
audio_alert\taubridge,{name}
ausrc_srate\t48000
ausrc_channels\t2
rtp_ports\t10000-20000
"""


def _sip_port() -> int:
    """A SIP port whose +1 (baresip's TLS listener, real-uas.md) is free as well."""
    for _ in range(50):
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for baresip")


class Baresip:
    """One baresip process registered as ``user@domain`` through the server at ``server_port``."""

    def __init__(
        self,
        workdir: Path,
        *,
        user: str,
        domain: str,
        server_port: int,
        name: str = "baresip",
        transport: str = "udp",
        ca_file: Path | None = None,
    ) -> None:
        """``transport`` "tls": to the server's TLS port ``server_port``, verifying its
        certificate with ``ca_file``."""
        workdir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.sip_port, self.ctrl_port = _sip_port(), free_port()
        config = CONFIG.format(sip_port=self.sip_port, ctrl_port=self.ctrl_port, name=name)
        if ca_file is not None:
            config += f"sip_cafile\t{ca_file}\n"
        (workdir / "config").write_text(config)
        account = (
            f"<sip:{user}@{domain};transport={transport}>;auth_pass=unused;"
            f'outbound="sip:127.0.0.1:{server_port};transport={transport}";regint=600'
        )
        (workdir / "accounts").write_text(account + "\n")
        (workdir / "contacts").write_text("")
        self.log_path = workdir / "baresip.log"
        self.events: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [tool("baresip"), "-f", str(workdir), "-n", "127.0.0.1"],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.sock = self._connect()
        self._reader = threading.Thread(target=self._read, name=f"baresip-{name}", daemon=True)
        self._reader.start()

    def _connect(self) -> socket.socket:
        deadline = time.monotonic() + 10
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"baresip exited: {self.log()}")
            try:
                return socket.create_connection(("127.0.0.1", self.ctrl_port), timeout=1)
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"baresip ctrl_tcp never listened: {self.log()}") from None
                time.sleep(0.1)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _read(self) -> None:
        buffer = b""
        self.sock.settimeout(0.2)
        while True:
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not chunk:
                return
            buffer += chunk
            while b":" in buffer:
                size_text, _, rest = buffer.partition(b":")
                size = int(size_text)
                if len(rest) < size + 1:
                    break
                document = json.loads(rest[:size])
                buffer = rest[size + 1 :]
                with self._cond:
                    self.events.append(document)
                    self._cond.notify_all()

    def command(self, name: str, params: str = "") -> None:
        """Send a ctrl_tcp command (``dial``, ``accept``, ``hangup``...)."""
        body = json.dumps({"command": name, "params": params, "token": name}).encode()
        self.sock.sendall(str(len(body)).encode() + b":" + body + b",")

    def wait_event(self, kind: str, timeout: float = 10.0) -> dict[str, Any]:
        """The first event of ``kind`` (``REGISTER_OK``, ``CALL_INCOMING``, ``CALL_CLOSED``...)
        not waited for before."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for event in self.events:
                    if event.get("event") and event.get("type") == kind and not event.get("_seen"):
                        event["_seen"] = True
                        return event
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"baresip {self.name}: no {kind} within {timeout} s:\n{self.log()[-3000:]}"
                    )
                self._cond.wait(left)

    def wait_registered(self, timeout: float = 10.0) -> None:
        """Until ``reginfo`` shows the account registered (its REGISTER_OK event may come before
        the control connection is up)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                self.events = [e for e in self.events if not e.get("response")]
            self.command("reginfo")
            with self._cond:
                self._cond.wait_for(lambda: any(e.get("response") for e in self.events), 2.0)
                answers = [str(e.get("data", "")) for e in self.events if e.get("response")]
            if any("OK" in answer for answer in answers):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"baresip {self.name} never registered: {answers}\n{self.log()[-3000:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        """Quit (it un-registers), or terminate it."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.sock.close()
