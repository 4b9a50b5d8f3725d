"""Push mid-registrar and call parking against the real process (push-and-parking.md T1, T8).

Issue: over loopback, with an upstream PBX played by SIPp (401 challenge, then 200; later it
sends the INVITE), a push gateway played by a small HTTP server in the test that, on each
push, makes a simulated mobile UA send a REGISTER a few hundred milliseconds later, and a
desk phone that answers 486 (DND): the call is parked, the mobile is pushed once, registers,
gets a branch, answers, the call connects; the upstream saw one registration (one aggregate
contact) for the extension throughout.  Over UDP on SQLite and PostgreSQL; over TCP (the PBX
and the mobile, whose app drops its connection while suspended and registers again over a new
one when woken) on SQLite.

The numbered races of spec section 7 and the scenarios of section 8 are tested on the SIP core
in tests/unit/test_dispatch_push_parking.py, test_dispatch_push_parking_races.py and
test_dispatch_push_parking_scenarios.py.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.request import Request as HttpRequest
from urllib.request import urlopen

import pytest

from scaserver.sip.framing import StreamFramer
from scaserver.sip.headers import top_via
from scaserver.sip.message import Headers, Request, Response
from scaserver.sip.parser import parse_message
from scaserver.sip.responses import make_response
from scaserver.sip.serializer import serialize
from tests.builders import digest_authorization
from tests.system.accounts import DOMAIN
from tests.system.handset import Handset, new_branch, new_tag, sdp
from tests.system.server import RunningServer, free_port, running_server
from tests.system.sipp import start_sipp

pytestmark = pytest.mark.system

EXTENSION = "200"
AOR = f"sip:{EXTENSION}@{DOMAIN}"
TOKEN = "a1b2c3d4e5f60718293a4b5c6d7e8f90"
PN = f"pn-provider=apns;pn-prid={TOKEN};pn-param=ABCDE12345.com.acme.phone.voip"


class Gateway:
    """The push gateway (section 5): records each POST, answers 202, and on a ``call`` push
    makes the mobile register ``wake_delay`` seconds later."""

    def __init__(self, wake: threading.Event, wake_delay: float = 0.3) -> None:
        self.pushes: list[dict[str, object]] = []
        self.headers: list[dict[str, str]] = []
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length))
                gateway.pushes.append(body)
                gateway.headers.append(dict(self.headers.items()))
                answer = b'{"status":"sent"}'
                self.send_response(202)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
                if body.get("type") == "call":
                    threading.Timer(wake_delay, wake.set).start()

            def log_message(self, format: str, *args: object) -> None:
                return

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port: int = self.http.server_address[1]
        self._thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


class TcpMobile:
    """The mobile app over TCP: one connection to the server (RFC 3261 18.3 framing), a reader
    thread queueing what arrives; requests are answered on the connection they came on."""

    def __init__(self, server: tuple[str, int], contact_params: str) -> None:
        self.sock = socket.create_connection(server, timeout=5)
        self.port: int = self.sock.getsockname()[1]
        self.contact = f"sip:{EXTENSION}@127.0.0.1:{self.port};transport=tcp;{contact_params}"
        self.requests: list[Request] = []
        self._responses: list[Response] = []
        self._cond = threading.Condition()
        self._framer = StreamFramer(65535)
        self._thread = threading.Thread(target=self._read, name="tcp-mobile", daemon=True)
        self._thread.start()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._thread.join(2)

    def _read(self) -> None:
        while True:
            try:
                data = self.sock.recv(65535)
            except OSError:
                return
            if not data:
                return
            for frame in self._framer.feed(data):
                message = parse_message(frame)
                with self._cond:
                    if isinstance(message, Response):
                        self._responses.append(message)
                    else:
                        self.requests.append(message)
                    self._cond.notify_all()

    def build(
        self,
        method: str,
        uri: str,
        *,
        from_: str,
        to: str,
        call_id: str,
        cseq: int,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> Request:
        fields = [
            ("Via", f"SIP/2.0/TCP 127.0.0.1:{self.port};branch={new_branch()};rport"),
            ("Max-Forwards", "70"),
            ("From", from_),
            ("To", to),
            ("Call-ID", call_id),
            ("CSeq", f"{cseq} {method}"),
            ("Contact", f"<{self.contact}>"),
            *extra,
        ]
        return Request(method, uri, Headers.of(*fields))

    def request(self, request: Request, timeout: float = 10.0) -> Response:
        """Send ``request`` and wait for its final response (no retransmission over TCP)."""
        branch = top_via(request).branch
        self.sock.sendall(serialize(request))
        found: list[Response] = []

        def final() -> bool:
            found[:] = [r for r in self._responses if r.status >= 200 and top_via(r).branch == branch]
            return bool(found)

        with self._cond:
            assert self._cond.wait_for(final, timeout), f"no final response to {request.method}"
        return found[0]

    def expect_request(self, method: str, timeout: float = 10.0) -> Request:
        with self._cond:
            assert self._cond.wait_for(lambda: any(r.method == method for r in self.requests), timeout), (
                f"no {method} over TCP"
            )
            request = next(r for r in self.requests if r.method == method)
            self.requests.remove(request)
        return request

    def respond(self, request: Request, status: int, *, to_tag: str, body: bytes = b"") -> None:
        fields: list[tuple[str, str]] = []
        if 100 < status < 300:
            fields.append(("Contact", f"<sip:{EXTENSION}@127.0.0.1:{self.port};transport=tcp>"))
            fields.extend(("Record-Route", value) for value in request.headers.lines("Record-Route"))
        if body:
            fields.append(("Content-Type", "application/sdp"))
        response = make_response(request, status, headers=Headers.of(*fields), to_tag=to_tag, body=body)
        self.sock.sendall(serialize(response))


Phone = Handset | TcpMobile


def register(phone: Phone, call_id: str, cseq: int, *, expires: int = 600) -> tuple[Response, int]:
    """REGISTER the extension from ``phone``; answer a relayed 401 with MD5 digest credentials
    (RFC 2617 with qop=auth) computed against the PBX's challenge.  Returns the final response
    and the last CSeq used."""
    base = (("Expires", str(expires)),)
    from_ = f"<{AOR}>;tag={new_tag()}"
    request = phone.build(
        "REGISTER", f"sip:{DOMAIN}", from_=from_, to=f"<{AOR}>", call_id=call_id, cseq=cseq, extra=base
    )
    response = phone.request(request)
    if response.status != 401:
        return response, cseq
    request = phone.build(
        "REGISTER",
        f"sip:{DOMAIN}",
        from_=from_,
        to=f"<{AOR}>",
        call_id=call_id,
        cseq=cseq + 1,
        extra=base,
    )
    request = digest_authorization(request, response, EXTENSION, "secret")
    return phone.request(request), cseq + 1


def rpc(server: RunningServer, method: str, *params: str) -> object:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}).encode()
    request = HttpRequest(
        f"http://127.0.0.1:{server.http_port}/RPC", body, {"Content-Type": "application/json"}
    )
    with urlopen(request, timeout=5) as answer:
        return json.loads(answer.read())


@pytest.fixture
def wake() -> threading.Event:
    return threading.Event()


def server_config(gateway: Gateway, pbx_port: int, transport: str, *, secret: str = "") -> str:
    """scaserver with digest, push through ``gateway`` and the mid-registrar towards the PBX."""
    return f"""
[server]
domains = ["{DOMAIN}"]
[auth]
require = true
algorithms = ["MD5"]
[database]
flush_interval = 0.5
[push]
enabled = true
gateway_url = "http://127.0.0.1:{gateway.port}/push"
gateway_secret = "{secret}"
[midregistrar]
enabled = true
upstream = "sip:127.0.0.1:{pbx_port};transport={transport}"
upstream_domain = "{DOMAIN}"
"""


@pytest.fixture
def gateway(wake: threading.Event) -> Iterator[Gateway]:
    gw = Gateway(wake)
    try:
        yield gw
    finally:
        gw.close()


def test_t8_parked_call_wakes_the_mobile_which_answers_after_the_desk_phone_declines(
    tmp_path: Path, db_url: str, gateway: Gateway, wake: threading.Event
) -> None:
    pbx_port = free_port()
    config = server_config(gateway, pbx_port, "udp", secret="s3cret")
    workdir = tmp_path / "sipp"
    with running_server(tmp_path / "server", config, db_url=db_url) as server:
        registrar = start_sipp(
            "pbx-registrar.xml", server, workdir, port=pbx_port, calls=2, extra=["-trace_msg"]
        )
        registrar.wait_listening()
        target = ("127.0.0.1", server.sip_port)
        mobile = Handset("mobile", target, line=AOR, contact_user=EXTENSION)
        mobile.contact = f"sip:{EXTENSION}@127.0.0.1:{mobile.port};{PN}"
        desk = Handset("desk", target, line=AOR, contact_user=EXTENSION)
        try:
            mobile_call_id = uuid.uuid4().hex
            ok, cseq = register(mobile, mobile_call_id, 1)
            assert ok.status == 200, ok
            assert ok.headers.get("Feature-Caps") == '*;+sip.pns="apns"'
            ok, _ = register(desk, uuid.uuid4().hex, 1)
            assert ok.status == 200, ok
            assert len(ok.headers.values("Contact")) == 2  # the 200 lists both local bindings
            upstream = registrar.wait(20)
            assert upstream.ok, upstream.report() + server.log()[-4000:]

            caller = start_sipp("pbx-call.xml", server, workdir, service=EXTENSION, timeout_s=30)
            invite = desk.expect_request("INVITE")
            desk.respond(invite, 486, to_tag="desk")  # do not disturb
            assert wake.wait(10), "the gateway got no call push"
            # The woken app registers again from the same socket: an absorbed refresh
            # (section 3.3.3) confirms the binding, and parking gives it a branch (6.4).
            refreshed = mobile.request(
                mobile.build(
                    "REGISTER",
                    f"sip:{DOMAIN}",
                    from_=f"<{AOR}>;tag={new_tag()}",
                    to=f"<{AOR}>",
                    call_id=mobile_call_id,
                    cseq=cseq + 1,
                    extra=(("Expires", "600"),),
                )
            )
            assert refreshed.status == 200
            branch = mobile.expect_request("INVITE")
            assert "pn-" not in branch.uri  # tokens travel no further (4.1)
            mobile.respond(branch, 180, to_tag="mob")
            mobile.respond(branch, 200, to_tag="mob", body=sdp(mobile.port))
            mobile.expect_request("ACK")
            bye = mobile.expect_request("BYE")
            mobile.respond(bye, 200)
            result = caller.wait(30)
            assert result.ok, result.report() + server.log()[-6000:]
            time.sleep(0.3)
            assert [req.method for req in mobile.requests] == []  # no second INVITE
        finally:
            mobile.close()
            desk.close()
        calls = [push for push in gateway.pushes if push["type"] == "call"]
        assert len(calls) == 1
        assert calls[0]["prid"] == TOKEN and calls[0]["aor"] == AOR
        assert gateway.pushes == calls  # M1 rang: no cancel push (6.3 case 1)
        signature = gateway.headers[0].get("X-Scaserver-Signature", "")
        assert signature.startswith("sha256=")
        # The upstream registrar saw one contact for the extension: the aggregate one.
        (trace,) = workdir.glob("pbx-registrar_*_messages.log")
        contacts = set(re.findall(r"^Contact: (.*)$", trace.read_text(), re.MULTILINE))
        aggregate = f"<sip:{EXTENSION}@127.0.0.1:{server.sip_port};transport=udp>"
        assert {c.split(";expires")[0].strip() for c in contacts} == {aggregate}
        assert len(re.findall(r"^REGISTER ", trace.read_text(), re.MULTILINE)) == 4
        ts = rpc(server, "ts.dump")
        assert isinstance(ts, dict) and ts["result"]["Size"] >= 1 and ts["result"]["R-URIs"] == []
        status = rpc(server, "pushreg.lookup", AOR)
        assert isinstance(status, dict), status
        assert status["result"]["upstream"]["state"] == "REGISTERED"
        assert len(status["result"]["contacts"]) == 2
        with urlopen(f"http://127.0.0.1:{server.http_port}/metrics", timeout=5) as answer:
            metrics = answer.read().decode()
        for line in (
            "scaserver_push_sent_total 1.0",
            "scaserver_parked_total 1.0",
            "scaserver_park_answered_total 1.0",
            "scaserver_added_branches_total 1.0",
            "scaserver_parked_current 0.0",
        ):
            assert line in metrics, line


def test_t8_over_tcp_the_suspended_app_reconnects_when_woken_and_gets_the_branch(
    tmp_path: Path, sqlite_url: str, gateway: Gateway, wake: threading.Event
) -> None:
    pbx_port = free_port()
    config = server_config(gateway, pbx_port, "tcp")
    workdir = tmp_path / "sipp"
    with running_server(tmp_path / "server", config, db_url=sqlite_url) as server:
        registrar = start_sipp(
            "pbx-registrar.xml",
            server,
            workdir,
            transport="tcp",
            port=pbx_port,
            calls=3,
            extra=["-trace_msg"],
        )
        registrar.wait_listening()
        target = ("127.0.0.1", server.sip_port)
        mobile = TcpMobile(target, PN)
        desk = Handset("desk", target, line=AOR, contact_user=EXTENSION)
        woken: TcpMobile | None = None
        try:
            ok, _ = register(mobile, uuid.uuid4().hex, 1)
            assert ok.status == 200, ok
            assert ok.headers.get("Feature-Caps") == '*;+sip.pns="apns"'
            ok, _ = register(desk, uuid.uuid4().hex, 1)
            assert ok.status == 200, ok
            mobile.close()  # the app is suspended: its connection is gone
            time.sleep(0.2)

            caller = start_sipp(
                "pbx-call.xml", server, workdir, transport="tcp", service=EXTENSION, timeout_s=30
            )
            invite = desk.expect_request("INVITE")
            desk.respond(invite, 486, to_tag="desk")
            assert wake.wait(10), "the gateway got no call push"
            # Woken, the app connects again and registers from its new address (new Call-ID):
            # forwarded, challenged by P, accepted; parking gives it a branch on that connection.
            woken = TcpMobile(target, PN)
            ok, _ = register(woken, uuid.uuid4().hex, 1)
            assert ok.status == 200, ok
            branch = woken.expect_request("INVITE")
            assert "pn-" not in branch.uri
            woken.respond(branch, 180, to_tag="mob")
            woken.respond(branch, 200, to_tag="mob", body=sdp(woken.port))
            woken.expect_request("ACK")
            bye = woken.expect_request("BYE")
            woken.respond(bye, 200, to_tag="mob")
            result = caller.wait(30)
            assert result.ok, result.report() + server.log()[-6000:]
            upstream = registrar.wait(10)
            assert upstream.ok, upstream.report() + server.log()[-4000:]
            time.sleep(0.3)
            assert [req.method for req in woken.requests] == []  # no second INVITE
        finally:
            mobile.close()
            if woken is not None:
                woken.close()
            desk.close()
        calls = [push for push in gateway.pushes if push["type"] == "call"]
        assert len(calls) == 1 and gateway.pushes == calls
        (trace,) = workdir.glob("pbx-registrar_*_messages.log")
        contacts = set(re.findall(r"^Contact: (.*)$", trace.read_text(), re.MULTILINE))
        aggregate = f"<sip:{EXTENSION}@127.0.0.1:{server.sip_port};transport=tcp>"
        assert {c.split(";expires")[0].strip() for c in contacts} == {aggregate}
        assert len(re.findall(r"^REGISTER ", trace.read_text(), re.MULTILINE)) == 6
        status = rpc(server, "pushreg.lookup", AOR)
        assert isinstance(status, dict), status
        assert status["result"]["upstream"]["state"] == "REGISTERED"
        assert len(status["result"]["contacts"]) == 2  # the woken app replaced its binding
