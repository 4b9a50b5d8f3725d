"""RFC 3261 section 18.1.1 on the wire, against the real scaserver process: a call-info NOTIFY
larger than 1300 bytes (a line with many appearances in use) goes over TCP to a subscriber
that listens on TCP at its Contact, and over UDP, with a log line, to one that does not.

Both subscribers are members of a shared line with 24 appearances, subscribed to call-info over
UDP; a third phone seizes appearance after appearance until the full-state NOTIFY is large.
"""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from scaserver.sip.framing import StreamFramer
from scaserver.sip.message import Request
from scaserver.sip.parser import parse_message
from scaserver.sip.responses import make_response
from scaserver.sip.serializer import serialize
from tests.system.handset import Handset
from tests.system.server import RunningServer, running_server

pytestmark = pytest.mark.system

DOMAIN = "example.test"
LINE = f"sip:2001@{DOMAIN}"
APPEARANCES = 24
WAIT = 10.0
CONFIG = f"""
[server]
domains = ["{DOMAIN}"]
[auth]
require = false
[database]
flush_interval = 0.3
[sca]
line_seize_max_expires = 60
[[sca.lines]]
aor = "{LINE}"
appearances = {APPEARANCES}
"""


class TcpInbox:
    """A TCP listener on a handset's own port (the address of its Contact): it answers every
    request 200 on the connection it came on and keeps the NOTIFYs."""

    def __init__(self, port: int) -> None:
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen(4)
        self.listener.settimeout(0.1)
        self.notifies: list[tuple[Request, int]] = []  # the request and its size on the wire
        self._cond = threading.Condition()
        self._running = True
        self._thread = threading.Thread(target=self._serve, name="tcp-inbox", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while self._running:
            try:
                connection, _ = self.listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._read, args=(connection,), daemon=True).start()

    def _read(self, connection: socket.socket) -> None:
        framer = StreamFramer(65535)
        connection.settimeout(0.1)
        with connection:
            while self._running:
                try:
                    chunk = connection.recv(65535)
                except TimeoutError:
                    continue
                if not chunk:
                    return
                for data in framer.feed(chunk):
                    message = parse_message(data)
                    if not isinstance(message, Request):
                        continue
                    connection.sendall(serialize(make_response(message, 200)))
                    with self._cond:
                        if message.method == "NOTIFY":
                            self.notifies.append((message, len(data)))
                        self._cond.notify_all()

    def wait_large(self) -> tuple[Request, int]:
        with self._cond:
            found = self._cond.wait_for(lambda: next((n for n in self.notifies if n[1] > 1300), None), WAIT)
        assert found is not None, f"no large NOTIFY over TCP (got sizes {[n[1] for n in self.notifies]})"
        return found

    def close(self) -> None:
        self._running = False
        self._thread.join(2)
        self.listener.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    db_url = f"sqlite:///{tmp_path / 'sca.db'}"
    with running_server(tmp_path / "server", CONFIG, db_url=db_url) as running:
        yield running


def phone(name: str, server: RunningServer) -> Handset:
    return Handset(name, ("127.0.0.1", server.sip_port), line=LINE)


@pytest.fixture
def seizers(server: RunningServer) -> Iterator[list[Handset]]:
    """One phone per appearance (a phone holds one seized appearance at a time)."""
    phones = [phone(f"seizer{index}", server) for index in range(1, APPEARANCES + 1)]
    try:
        yield phones
    finally:
        for each in phones:
            each.close()


def fill_the_line(seizers: list[Handset]) -> None:
    """Seize every appearance: each full-state call-info NOTIFY grows by one entry."""
    for index, seizer in enumerate(seizers, start=1):
        response, _, _ = seizer.subscribe("line-seize", expires=60, index=index)
        assert response.status == 200, response


def test_a_large_notify_goes_over_tcp_to_a_subscriber_reachable_by_tcp(
    server: RunningServer, seizers: list[Handset]
) -> None:
    tcp_phone = phone("tcp", server)
    inbox = TcpInbox(tcp_phone.port)
    try:
        response, _, _ = tcp_phone.subscribe("call-info")
        assert response.status == 202, response
        fill_the_line(seizers)
        notify, size = inbox.wait_large()
        assert size > 1300
        # Read before the phone's listener closes: a NOTIFY after that falls back to UDP, rightly.
        # Other phones of the line (the seizers have no TCP listener) may get theirs over UDP.
        log = server.log()
    finally:
        inbox.close()
        tcp_phone.close()
    assert notify.headers.get("Event") == "call-info"
    assert (notify.headers.get("Via") or "").startswith("SIP/2.0/TCP "), notify
    assert not re.search(rf"to udp:127\.0\.0\.1:{tcp_phone.port}\b.* sent over UDP", log)


def test_a_large_notify_goes_over_udp_with_a_log_line_when_tcp_is_refused(
    server: RunningServer, seizers: list[Handset]
) -> None:
    udp_phone = phone("udp", server)
    try:
        response, _, _ = udp_phone.subscribe("call-info")
        assert response.status == 202, response
        fill_the_line(seizers)
        large = udp_phone.wait_notify(
            lambda n: n.event == "call-info" and len(serialize(n.request)) > 1300, WAIT
        )
    finally:
        udp_phone.close()
    assert (large.request.headers.get("Via") or "").startswith("SIP/2.0/UDP ")
    logged = re.findall(
        rf"NOTIFY of \d+ bytes to udp:127\.0\.0\.1:{udp_phone.port}.* sent over UDP", server.log()
    )
    assert len(logged) == 1, server.log()[-3000:]
