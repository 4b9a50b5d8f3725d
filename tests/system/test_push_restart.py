"""Push mid-registrar across restarts against the real process (push-and-parking.md T21, race
R21, section 3.5).

Two mobiles of one extension register through the mid-registrar; the upstream registrar
(a small UDP registrar in the test that accepts every REGISTER, granting 33 s, so scaserver
refreshes the aggregate itself about every second) sees scaserver's own registration
dialog.  After ``kill -TERM`` and a start on the same database the upstream gets a
re-REGISTER within ``startup_spread`` in the same Call-ID with a higher CSeq, and
``ul.dump``/``pushreg.lookup`` show both bindings with their push coordinates.  The server is
then killed with SIGKILL while its writes wait for a 30 s flush: the next start still continues
the dialog above every CSeq sent (RFC 3261 10.3 step 7 would answer a repeated one with 500).
On SQLite and PostgreSQL.
"""

from __future__ import annotations

import hashlib
import json
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.request import Request as HttpRequest
from urllib.request import urlopen

import attrs
import pytest
from sqlalchemy import select

from scaserver.sip import headers
from scaserver.sip.errors import MalformedMessage
from scaserver.sip.message import Headers, Request
from scaserver.sip.parser import parse_message
from scaserver.sip.responses import make_response
from scaserver.sip.serializer import serialize
from scaserver.store.sql import SqlStore
from scaserver.store.tables import midreg_upstream
from tests.system.accounts import DOMAIN
from tests.system.handset import Handset, new_tag
from tests.system.server import RunningServer, free_port, running_server

pytestmark = pytest.mark.system

EXTENSION = "200"
AOR = f"sip:{EXTENSION}@{DOMAIN}"
TOKENS = ("a1b2c3d4e5f60718293a4b5c6d7e8f90", "0f1e2d3c4b5a69788796a5b4c3d2e1f0")
GRANTED = 33  # refresh threshold max(32 s, 0.33 x 33 s): scaserver refreshes after about 1 s
STARTUP_SPREAD = 1.0


@attrs.frozen
class Seen:
    """One REGISTER the upstream received."""

    at: float
    call_id: str
    cseq: int
    user_agent: str | None


class Upstream:
    """The upstream registrar: answers every REGISTER 200 with the aggregate contact granted
    ``GRANTED`` seconds, and records what it got."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", free_port()))
        self.sock.settimeout(0.05)
        self.port: int = self.sock.getsockname()[1]
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._running = True
        self._thread = threading.Thread(target=self._serve, name="upstream", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while self._running:
            try:
                data, address = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                request = parse_message(data)
            except MalformedMessage:
                continue
            if not isinstance(request, Request) or request.method != "REGISTER":
                continue
            with self._lock:
                self.seen.append(
                    Seen(
                        time.monotonic(),
                        request.call_id or "",
                        headers.cseq(request).number,
                        request.headers.get("User-Agent"),
                    )
                )
            contact = request.headers.get("Contact") or ""
            fields = (("Contact", f"{contact};expires={GRANTED}"),) if contact else ()
            response = make_response(request, 200, headers=Headers.of(*fields), to_tag="pbx")
            self.sock.sendto(serialize(response), address)

    def own(self, device_call_ids: set[str], since: float = 0.0) -> list[Seen]:
        """scaserver's own REGISTERs (not relayed from a device) received after ``since``."""
        with self._lock:
            return [s for s in self.seen if s.call_id not in device_call_ids and s.at >= since]

    def wait_own(self, device_call_ids: set[str], count: int, since: float, timeout: float) -> list[Seen]:
        deadline = time.monotonic() + timeout
        while len(found := self.own(device_call_ids, since)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(found)} of {count} own REGISTERs within {timeout} s: {self.seen}")
            time.sleep(0.02)
        return found

    def close(self) -> None:
        self._running = False
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    registrar = Upstream()
    try:
        yield registrar
    finally:
        registrar.close()


def config(upstream: Upstream, flush_interval: float) -> str:
    return f"""
[server]
domains = ["{DOMAIN}"]
[auth]
require = false
[database]
flush_interval = {flush_interval}
[push]
enabled = true
gateway_url = "http://127.0.0.1:9/push"
[midregistrar]
enabled = true
upstream = "sip:127.0.0.1:{upstream.port};transport=udp"
upstream_domain = "{DOMAIN}"
startup_spread = {STARTUP_SPREAD}
"""


def rpc(server: RunningServer, method: str, *params: str) -> dict[str, Any]:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}).encode()
    request = HttpRequest(
        f"http://127.0.0.1:{server.http_port}/RPC", body, {"Content-Type": "application/json"}
    )
    with urlopen(request, timeout=5) as answer:
        document = json.loads(answer.read())
    assert isinstance(document, dict) and "result" in document, document
    result = document["result"]
    assert isinstance(result, dict)
    return result


def register(phone: Handset, token: str, call_id: str) -> None:
    phone.contact = (
        f"sip:{EXTENSION}@127.0.0.1:{phone.port};pn-provider=apns;pn-prid={token};pn-param=T.com.acme.voip"
    )
    request = phone.build(
        "REGISTER",
        f"sip:{DOMAIN}",
        from_=f"<{AOR}>;tag={new_tag()}",
        to=f"<{AOR}>",
        call_id=call_id,
        cseq=1,
        extra=(("Expires", "600"),),
    )
    response = phone.request(request)
    assert response.status == 200, response


def push_shown(server: RunningServer) -> dict[str, dict[str, Any]]:
    """``ul.dump``'s Push object of each contact of the extension, by token hash."""
    dump = rpc(server, "ul.dump")
    (domain,) = dump["Domains"]
    shown: dict[str, dict[str, Any]] = {}
    for record in domain["Domain"]["AoRs"]:
        if record["Info"]["AoR"] == f"{EXTENSION}@{DOMAIN}":  # Kamailio's form, no scheme
            for contact in record["Info"]["Contacts"]:
                push = contact["Contact"]["Push"]
                shown[push["prid_sha256"]] = push
    return shown


def stored_dialog(db_url: str) -> tuple[str, int]:
    store = SqlStore(db_url)
    try:
        with store.engine.connect() as conn:
            (row,) = conn.execute(
                select(midreg_upstream.c.call_id, midreg_upstream.c.cseq).where(midreg_upstream.c.aor == AOR)
            ).all()
    finally:
        store.close()
    return str(row[0]), int(row[1])


def test_t21_restart_reregisters_in_the_same_dialog_and_restores_push_bindings(
    tmp_path: Path, db_url: str, upstream: Upstream
) -> None:
    device_call_ids = {uuid.uuid4().hex, uuid.uuid4().hex}
    with running_server(tmp_path / "first", config(upstream, 0.2), db_url=db_url) as first:
        target = ("127.0.0.1", first.sip_port)
        phones = [Handset(f"m{n}", target, line=AOR, contact_user=EXTENSION) for n in (1, 2)]
        try:
            for phone, token, call_id in zip(phones, TOKENS, sorted(device_call_ids), strict=True):
                register(phone, token, call_id)
        finally:
            for phone in phones:
                phone.close()
        before = upstream.wait_own(device_call_ids, 2, 0.0, timeout=5.0)  # self-refreshes
        before_rpc = rpc(first, "pushreg.lookup", AOR)
        assert first.stop(signal.SIGTERM) == 0, first.log()[-3000:]
    (dialog,) = {s.call_id for s in before}
    sent_before = max(s.cseq for s in before)
    assert [s.cseq for s in before] == list(range(1, len(before) + 1))
    assert upstream.seen[0].call_id in device_call_ids  # the first REGISTER was a device's
    call_id, reserved = stored_dialog(db_url)
    assert call_id == dialog and reserved > sent_before

    started = time.monotonic()
    with running_server(tmp_path / "second", config(upstream, 30.0), db_url=db_url) as second:
        ready = time.monotonic()
        (again, *_) = upstream.wait_own(device_call_ids, 1, started, timeout=STARTUP_SPREAD + 2)
        assert again.at - ready <= STARTUP_SPREAD + 0.5, "re-REGISTER not within startup_spread"
        assert again.call_id == dialog and again.cseq > sent_before
        lookup = rpc(second, "pushreg.lookup", AOR)
        shown = push_shown(second)
        upstream.wait_own(device_call_ids, 2, started, timeout=5.0)  # and one more refresh
        second.stop(signal.SIGKILL)  # the 30 s flush never ran: the database has the start-up reserve
    time.sleep(0.1)  # a REGISTER sent as it died is still on its way
    expected = {hashlib.sha256(token.encode()).hexdigest() for token in TOKENS}
    assert set(shown) == expected
    assert {p["provider"] for p in shown.values()} == {"apns"}
    assert lookup["upstream"]["state"] == "REGISTERED"
    assert len(lookup["contacts"]) == 2 == len(before_rpc["contacts"])
    second_run = upstream.own(device_call_ids, started)
    assert {s.call_id for s in second_run} == {dialog}

    started = time.monotonic()
    with running_server(tmp_path / "third", config(upstream, 0.2), db_url=db_url) as third:
        (after_crash, *_) = upstream.wait_own(device_call_ids, 1, started, timeout=STARTUP_SPREAD + 2)
        assert after_crash.call_id == dialog
        assert after_crash.cseq > max(s.cseq for s in second_run), (after_crash, second_run)
        assert len(push_shown(third)) == 2
