"""SIP over TLS and HTTPS against the real scaserver process (RFC 3261 section 26, RFC 5922,
BCP 195), with a throwaway CA made by the test (:mod:`tests.system.pki`).

``openssl s_client`` shows TLS 1.0/1.1 and a non-AEAD suite refused, TLS 1.2 and 1.3 served;
a REGISTER over TLS with a ``sips:`` contact gets its 200 on the connection it came on (with
our TLS Via); a client that never finishes its handshake is closed and counted while the server
keeps serving; SIGHUP swaps the certificate for new handshakes while an open connection goes
on; the HTTP listener speaks HTTPS; an upstream whose certificate names another domain is
refused (logged, counted, the caller answered) while one naming the right domain gets the
INVITE over TLS; baresip registers over TLS.
"""

from __future__ import annotations

import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from scaserver.sip.framing import StreamFramer
from scaserver.sip.message import Request, Response
from scaserver.sip.parser import parse_message
from tests.system.accounts import add_subscribers
from tests.system.baresip import Baresip
from tests.system.handset import Handset, sdp
from tests.system.pki import Issued, TestAuthority, tls_table
from tests.system.server import SCASERVER, RunningServer, free_port, running_server, tool

pytestmark = pytest.mark.system

DOMAIN = "example.test"
WAIT = 5.0


@attrs.frozen
class TlsServer:
    server: RunningServer
    tls_port: int
    authority: TestAuthority
    issued: Issued


def make_authority(directory: Path) -> tuple[TestAuthority, Issued]:
    authority = TestAuthority(directory)
    issued = authority.issue(
        "server",
        common_name="scaserver",
        dns=("localhost",),
        uris=(f"sip:{DOMAIN}",),
        addresses=("127.0.0.1",),
    )
    return authority, issued


def config(tls_port: int, issued: Issued, ca_file: Path, extra: str = "") -> str:
    return (
        f"""
[server]
domains = ["{DOMAIN}"]
[auth]
require = false
[database]
flush_interval = 0.3
"""
        + tls_table(issued, ca_file, tls_port)
        + extra
    )


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    workdir = tmp_path_factory.mktemp("tls")
    authority, issued = make_authority(workdir / "pki")
    tls_port = free_port()
    with running_server(workdir / "server", config(tls_port, issued, authority.ca_file)) as server:
        yield TlsServer(server, tls_port, authority, issued)


def client_context(ca_file: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca_file))
    context.check_hostname = True
    return context


def tls_connect(port: int, ca_file: Path) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    return client_context(ca_file).wrap_socket(raw, server_hostname="localhost")


class MessageReader:
    """Messages off a stream in order (several may come in one read)."""

    def __init__(self) -> None:
        self.framer = StreamFramer(65535)
        self.ready: list[bytes] = []


def read_message(sock: ssl.SSLSocket, reader: MessageReader) -> Request | Response:
    deadline = time.monotonic() + WAIT
    while not reader.ready and time.monotonic() < deadline:
        data = sock.recv(65535)
        if not data:
            raise AssertionError("connection closed before a message")
        reader.ready += reader.framer.feed(data)
    if not reader.ready:
        raise AssertionError("no message")
    return parse_message(reader.ready.pop(0))


def register_request(sock: ssl.SSLSocket, user: str, *, scheme: str = "sips") -> bytes:
    """A REGISTER of ``scheme:user@DOMAIN``; its contact is ``sips:`` for a ``sips:`` AoR,
    else a ``sip:`` URI with ``transport=tls``."""
    host, port = sock.getsockname()[:2]
    contact = f"sips:{user}@{host}:{port}" if scheme == "sips" else f"sip:{user}@{host}:{port};transport=tls"
    return (
        f"REGISTER {scheme}:{DOMAIN} SIP/2.0\r\n"
        f"Via: SIP/2.0/TLS {host}:{port};branch=z9hG4bK{uuid.uuid4().hex};rport\r\n"
        f"From: <{scheme}:{user}@{DOMAIN}>;tag={uuid.uuid4().hex[:8]}\r\n"
        f"To: <{scheme}:{user}@{DOMAIN}>\r\n"
        f"Call-ID: {uuid.uuid4().hex}\r\nCSeq: 1 REGISTER\r\n"
        f"Contact: <{contact}>\r\nExpires: 300\r\n"
        "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def s_client(port: int, *args: str, ca_file: Path | None = None) -> subprocess.CompletedProcess[str]:
    command = [shutil.which("openssl") or "openssl", "s_client", "-connect", f"127.0.0.1:{port}", *args]
    if ca_file is not None:
        command += ["-CAfile", str(ca_file)]
    return subprocess.run(command, input="", capture_output=True, text=True, timeout=20, check=False)


def handshake_ok(result: subprocess.CompletedProcess[str]) -> bool:
    return result.returncode == 0 and "Cipher is (NONE)" not in result.stdout


def closed_by_peer(sock: socket.socket) -> bool:
    """The server closed (or aborted) the connection before ``WAIT``."""
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True


# ----------------------------------------------------------------------------- versions, suites


@pytest.mark.parametrize("version", ["-tls1_2", "-tls1_3"])
def test_tls_1_2_and_1_3_are_served(tls_server: TlsServer, version: str) -> None:
    result = s_client(tls_server.tls_port, version, ca_file=tls_server.authority.ca_file)
    assert handshake_ok(result), result.stdout + result.stderr
    assert "Verify return code: 0 (ok)" in result.stdout


@pytest.mark.parametrize(
    "args",
    [
        # OpenSSL 3 offers TLS 1.0/1.1 only at security level 0: the refusal is the server's.
        ("-tls1", "-cipher", "DEFAULT:@SECLEVEL=0"),
        ("-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"),
        ("-tls1_2", "-cipher", "AES128-SHA"),  # RSA key exchange, CBC: no forward secrecy, no AEAD
        ("-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA"),  # forward secret but CBC
    ],
)
def test_old_versions_and_weak_suites_are_refused(tls_server: TlsServer, args: tuple[str, ...]) -> None:
    result = s_client(tls_server.tls_port, *args)
    assert not handshake_ok(result), result.stdout
    assert tls_server.server.process.poll() is None


# ----------------------------------------------------------------------------- SIP over TLS


def test_register_over_tls_with_a_sips_contact_is_answered_on_the_same_connection(
    tls_server: TlsServer,
) -> None:
    caller = Handset("carol", ("127.0.0.1", tls_server.server.sip_port), line=f"sip:carol@{DOMAIN}")
    try:
        with tls_connect(tls_server.tls_port, tls_server.authority.ca_file) as sock:
            framer = MessageReader()
            sock.sendall(register_request(sock, "alice"))
            response = read_message(sock, framer)
            assert isinstance(response, Response)
            assert response.status == 200, response
            assert "sips:alice@127.0.0.1" in (response.headers.get("Contact") or "")
            assert (response.headers.get("Via") or "").startswith("SIP/2.0/TLS")
            # A sips: call to the AoR reaches the phone over its TLS connection (RFC 5923 reuse).
            caller.invite(f"sips:alice@{DOMAIN}")
            invite = read_message(sock, framer)
    finally:
        caller.close()
    assert isinstance(invite, Request) and invite.method == "INVITE", invite
    assert invite.uri.startswith("sips:alice@127.0.0.1")
    assert (invite.headers.get("Via") or "").startswith(f"SIP/2.0/TLS 127.0.0.1:{tls_server.tls_port}")
    record_route = invite.headers.get("Record-Route") or ""
    assert record_route.startswith(f"<sips:127.0.0.1:{tls_server.tls_port};lr"), record_route


def test_a_handshake_that_never_finishes_is_closed_and_the_server_keeps_serving(
    tls_server: TlsServer,
) -> None:
    silent = [socket.create_connection(("127.0.0.1", tls_server.tls_port), timeout=WAIT) for _ in range(20)]
    try:
        for sock in silent:  # handshake_timeout = 1 s: each is closed by the server
            sock.settimeout(WAIT)
            assert closed_by_peer(sock)
        with tls_connect(tls_server.tls_port, tls_server.authority.ca_file) as sock:
            sock.sendall(register_request(sock, "bob"))
            response = read_message(sock, MessageReader())
        assert isinstance(response, Response) and response.status == 200
    finally:
        for sock in silent:
            sock.close()
    log = tls_server.server.log()
    assert "failed (timeout): no handshake within 1.0 s" in log


def test_https_serves_metrics_with_the_tls_counters(tls_server: TlsServer) -> None:
    context = client_context(tls_server.authority.ca_file)
    url = f"https://localhost:{tls_server.server.http_port}/metrics"
    with urllib.request.urlopen(url, context=context, timeout=WAIT) as answer:
        text = answer.read().decode()
    assert "scaserver_tls_handshakes_total" in text
    assert 'scaserver_sip_connections{transport="tls"}' in text
    assert 'scaserver_tls_handshake_failures_total{reason="timeout"}' in text
    promtool = [tool("promtool"), "check", "metrics"]
    check = subprocess.run(promtool, input=text, capture_output=True, text=True, check=False, timeout=30)
    assert (check.returncode, check.stdout, check.stderr) == (0, "", ""), text
    with pytest.raises(OSError):  # plain HTTP gets no answer from an HTTPS listener
        urllib.request.urlopen(f"http://127.0.0.1:{tls_server.server.http_port}/metrics", timeout=2)


# ----------------------------------------------------------------------------- SIGHUP


def peer_common_name(port: int, ca_file: Path) -> str:
    with tls_connect(port, ca_file) as sock:
        der = sock.getpeercert(binary_form=True)
    assert der is not None
    names = x509.load_der_x509_certificate(der).subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value)


def test_sighup_swaps_the_certificate_and_an_open_connection_goes_on(tmp_path: Path) -> None:
    authority, issued = make_authority(tmp_path / "pki")
    tls_port = free_port()
    with running_server(tmp_path / "server", config(tls_port, issued, authority.ca_file)) as server:
        assert peer_common_name(tls_port, authority.ca_file) == "scaserver"
        with tls_connect(tls_port, authority.ca_file) as old:
            renewed = authority.issue(
                "renewed", common_name="scaserver renewed", dns=("localhost",), addresses=("127.0.0.1",)
            )
            shutil.copyfile(renewed.certificate, issued.certificate)
            shutil.copyfile(renewed.key, issued.key)
            server.process.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + WAIT
            while "reloaded" not in server.log() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert peer_common_name(tls_port, authority.ca_file) == "scaserver renewed"
            old.sendall(register_request(old, "carol"))
            response = read_message(old, MessageReader())
            assert isinstance(response, Response) and response.status == 200
        assert "TLS certificate" in server.log()


def test_check_config_refuses_a_tls_listener_without_a_readable_key(tmp_path: Path) -> None:
    authority, issued = make_authority(tmp_path / "pki")
    path = tmp_path / "bad.toml"
    text = tls_table(issued, authority.ca_file, 5061).replace(str(issued.key), str(tmp_path / "missing.key"))
    path.write_text(text)
    result = subprocess.run(
        [*SCASERVER, "check-config", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f'{path}: tls.key: cannot read "{tmp_path / "missing.key"}" (needed by tls.listen)'
    ]


# ----------------------------------------------------------------------------- outbound TLS


class TlsPeer:
    """A TLS server on loopback (the upstream PBX) presenting ``issued``: records what it reads."""

    def __init__(self, issued: Issued) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(str(issued.certificate), str(issued.key))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.received = b""
        self.handshake_errors: list[str] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.listener.settimeout(0.2)
        while True:
            try:
                raw, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                sock = self.context.wrap_socket(raw, server_side=True)
            except (ssl.SSLError, OSError) as error:
                with self._cond:
                    self.handshake_errors.append(str(error))
                    self._cond.notify_all()
                continue
            sock.settimeout(0.2)
            while True:
                try:
                    data = sock.recv(65535)
                except TimeoutError:
                    continue
                except OSError:
                    break
                if not data:
                    break
                with self._cond:
                    self.received += data
                    self._cond.notify_all()

    def wait_for(self, needle: bytes, timeout: float = WAIT) -> bool:
        """Whether ``needle`` arrives within ``timeout``."""
        with self._cond:
            return self._cond.wait_for(lambda: needle in self.received, timeout)

    def close(self) -> None:
        self.listener.close()


def upstream_config(tls_port: int, issued: Issued, ca_file: Path, upstream_port: int) -> str:
    return f"""
[server]
domains = ["{DOMAIN}"]
[auth]
require = true
algorithms = ["MD5"]
[database]
flush_interval = 0.3
[upstream]
host = "localhost"
port = {upstream_port}
transport = "tls"
""" + tls_table(issued, ca_file, tls_port)


@pytest.mark.parametrize("named", ["localhost", "pbx.other.example"])
def test_upstream_certificate_must_name_the_upstream_domain(tmp_path: Path, named: str) -> None:
    authority, issued = make_authority(tmp_path / "pki")
    peer_cert = authority.issue("pbx", common_name=named, dns=(named,))
    pbx = TlsPeer(peer_cert)
    db_url = f"sqlite:///{tmp_path / 'sca.db'}"
    add_subscribers(db_url, [("alice", "alice-secret")])
    tls_port = free_port()
    text = upstream_config(tls_port, issued, authority.ca_file, pbx.port)
    try:
        with running_server(tmp_path / "server", text, db_url=db_url) as server:
            line = f"sip:alice@{DOMAIN}"
            phone = Handset(
                "alice", ("127.0.0.1", server.sip_port), line=line, username="alice", password="alice-secret"
            )
            try:
                transaction, _ = phone.invite("sip:+15551234@pstn.example.net")
                challenge = phone.wait_response(transaction)
                assert challenge.status == 407, challenge
                answered = phone.start(phone.with_credentials(transaction.request, challenge))
                if named == "localhost":
                    assert pbx.wait_for(b"INVITE sip:+15551234@pstn.example.net"), server.log()
                    assert b"Via: SIP/2.0/TLS 127.0.0.1:" + str(tls_port).encode() in pbx.received
                else:
                    final = phone.wait_response(answered, timeout=40.0)
                    assert final.status >= 500, final
                    assert pbx.received == b""
                    log = server.log()
                    assert "failed (name): certificate does not name localhost" in log, log
            finally:
                phone.close()
    finally:
        pbx.close()


# ----------------------------------------------------------------------------- baresip


def test_baresip_registers_and_calls_over_tls(tls_server: TlsServer, tmp_path: Path) -> None:
    server = tls_server.server
    phone = Baresip(
        tmp_path / "baresip",
        user="dave",
        domain=DOMAIN,
        server_port=tls_server.tls_port,
        transport="tls",
        ca_file=tls_server.authority.ca_file,
    )
    callee = Handset("erin", ("127.0.0.1", server.sip_port), line=f"sip:erin@{DOMAIN}")
    try:
        phone.wait_registered()
        assert callee.register().status == 200
        phone.command("dial", f"sip:erin@{DOMAIN}")
        invite = callee.expect_request("INVITE")
        assert "SIP/2.0/TLS" in " ".join(invite.headers.values("Via"))  # baresip's hop was TLS
        answered = callee.uas_dialog(invite)
        callee.respond(invite, 200, to_tag=answered.local_tag, body=sdp(callee.port + 2))
        phone.wait_event("CALL_ESTABLISHED")
        phone.command("hangup")
        bye = callee.expect_request("BYE")
        callee.respond(bye, 200)
        phone.wait_event("CALL_CLOSED")
    finally:
        callee.close()
        phone.stop()


# ----------------------------------------------------------------------------- sips: dialogs


def tls_request(sock: ssl.SSLSocket, method: str, uri: str, dialog: dict[str, str], cseq: int) -> bytes:
    """A request of ``dialog`` (keys: user, call_id, from, to, route) from the client on ``sock``."""
    host, port = sock.getsockname()[:2]
    route = f"Route: {dialog['route']}\r\n" if dialog.get("route") else ""
    return (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/TLS {host}:{port};branch=z9hG4bK{uuid.uuid4().hex};rport\r\n"
        f"{route}From: {dialog['from']}\r\nTo: {dialog['to']}\r\n"
        f"Call-ID: {dialog['call_id']}\r\nCSeq: {cseq} {method}\r\n"
        f"Contact: <sips:{dialog['user']}@{host}:{port}>\r\n"
        "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def tls_answer(request: Request, status: int, sock: ssl.SSLSocket, to_tag: str) -> bytes:
    """The UAS's answer to ``request``: its Vias, Record-Route, From, Call-ID, CSeq copied."""
    host, port = sock.getsockname()[:2]
    copied = "".join(
        f"{name}: {value}\r\n" for name, value in request.headers if name in ("Via", "Record-Route")
    )
    to = request.headers.get("To") or ""
    if ";tag=" not in to:
        to += f";tag={to_tag}"
    return (
        f"SIP/2.0 {status} OK\r\n{copied}"
        f"From: {request.headers.get('From')}\r\nTo: {to}\r\n"
        f"Call-ID: {request.call_id}\r\nCSeq: {request.headers.get('CSeq')}\r\n"
        f"Contact: <sips:bob@{host}:{port}>\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def next_request(sock: ssl.SSLSocket, reader: MessageReader) -> Request:
    """The next request on ``sock``, skipping provisional answers."""
    while True:
        message = read_message(sock, reader)
        if isinstance(message, Request):
            return message


def final_response(sock: ssl.SSLSocket, reader: MessageReader) -> Response:
    while True:
        message = read_message(sock, reader)
        if isinstance(message, Response) and message.status >= 200:
            return message


def test_a_sips_dialog_is_record_routed_with_a_sips_uri_and_its_bye_is_routed(tls_server: TlsServer) -> None:
    ca_file, port = tls_server.authority.ca_file, tls_server.tls_port
    with tls_connect(port, ca_file) as callee, tls_connect(port, ca_file) as caller:
        callee_reader, caller_reader = MessageReader(), MessageReader()
        callee.sendall(register_request(callee, "bob"))
        registered = read_message(callee, callee_reader)
        assert isinstance(registered, Response) and registered.status == 200, registered
        dialog = {
            "user": "carol",
            "call_id": uuid.uuid4().hex,
            "from": f"<sips:carol@{DOMAIN}>;tag=c{uuid.uuid4().hex[:8]}",
            "to": f"<sips:bob@{DOMAIN}>",
        }
        caller.sendall(tls_request(caller, "INVITE", f"sips:bob@{DOMAIN}", dialog, 1))
        invite = next_request(callee, callee_reader)
        assert invite.method == "INVITE", invite
        record_route = invite.headers.get("Record-Route") or ""
        # RFC 3261 16.6 step 4: a sips: Request-URI makes our Record-Route a sips: URI.
        assert record_route.startswith(f"<sips:127.0.0.1:{port};lr;rrsig="), record_route
        assert "transport=" not in record_route
        callee.sendall(tls_answer(invite, 200, callee, "b1"))
        ok = final_response(caller, caller_reader)
        assert ok.status == 200, ok
        assert ok.headers.get("Record-Route") == record_route
        dialog["to"] = ok.headers.get("To") or ""
        dialog["route"] = record_route
        remote = (ok.headers.get("Contact") or "").strip("<>")
        caller.sendall(tls_request(caller, "ACK", remote, dialog, 1))
        ack = next_request(callee, callee_reader)
        assert ack.method == "ACK", ack
        caller.sendall(tls_request(caller, "BYE", remote, dialog, 2))
        bye = next_request(callee, callee_reader)
        assert bye.method == "BYE", bye
        assert bye.headers.get("Route") is None  # our sips: entry was recognised and removed
        callee.sendall(tls_answer(bye, 200, callee, "b1"))
        done = final_response(caller, caller_reader)
        assert done.status == 200, done


# ----------------------------------------------------------------------------- sips: never in cleartext


def test_a_sips_request_uri_never_reaches_a_contact_over_cleartext(tls_server: TlsServer) -> None:
    server = tls_server.server
    frank = Handset("frank", ("127.0.0.1", server.sip_port), line=f"sip:frank@{DOMAIN}")
    alice = Handset("alice", ("127.0.0.1", server.sip_port), line=f"sip:alice@{DOMAIN}")
    try:
        # The sips: AoR with a sip: contact registered over UDP.
        assert frank.register(f"sips:frank@{DOMAIN}").status == 200
        transaction, _ = alice.invite(f"sips:frank@{DOMAIN}")
        final = alice.wait_response(transaction)
        assert final.status == 480, server.log()[-6000:]
        assert frank.requests == []
        assert "sips: Request-URI and no contact reachable over TLS" in server.log()
    finally:
        alice.close()
        frank.close()


def test_sip_and_sips_name_one_aor_and_sips_reaches_only_tls_contacts(tls_server: TlsServer) -> None:
    server = tls_server.server
    gina = Handset("gina", ("127.0.0.1", server.sip_port), line=f"sip:gina@{DOMAIN}")
    alice = Handset("alice", ("127.0.0.1", server.sip_port), line=f"sip:alice@{DOMAIN}")
    try:
        # gina registered her sip: AoR over UDP only: a sips: call finds her AoR but no
        # contact reachable securely, 480 (not 404: RFC 5630, one AoR for both schemes).
        assert gina.register(f"sip:gina@{DOMAIN}").status == 200
        transaction, _ = alice.invite(f"sips:gina@{DOMAIN}")
        final = alice.wait_response(transaction)
        assert final.status == 480, server.log()[-6000:]
        assert gina.requests == []
        assert "sips: Request-URI and no contact reachable over TLS" in server.log()
        # hank registered his sip: AoR over TLS with a sip:;transport=tls contact: a sips:
        # call reaches him over his TLS connection.
        with tls_connect(tls_server.tls_port, tls_server.authority.ca_file) as sock:
            reader = MessageReader()
            sock.sendall(register_request(sock, "hank", scheme="sip"))
            registered = read_message(sock, reader)
            assert isinstance(registered, Response) and registered.status == 200, registered
            alice.invite(f"sips:hank@{DOMAIN}")
            invite = next_request(sock, reader)
        assert invite.method == "INVITE"
        assert invite.uri.startswith("sip:hank@127.0.0.1") and "transport=tls" in invite.uri
    finally:
        alice.close()
        gina.close()


# ----------------------------------------------------------------------------- client certificates


def options_to_user(sock: ssl.SSLSocket) -> bytes:
    host, port = sock.getsockname()[:2]
    return (
        f"OPTIONS sip:nobody@{DOMAIN} SIP/2.0\r\n"
        f"Via: SIP/2.0/TLS {host}:{port};branch=z9hG4bK{uuid.uuid4().hex};rport\r\n"
        f"From: <sip:pbx@pbx.example.test>;tag={uuid.uuid4().hex[:8]}\r\n"
        f"To: <sip:nobody@{DOMAIN}>\r\n"
        f"Call-ID: {uuid.uuid4().hex}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def test_a_peer_is_trusted_by_its_client_certificate(tmp_path: Path) -> None:
    authority, issued = make_authority(tmp_path / "pki")
    pbx = authority.issue("pbx", common_name="pbx", uris=("sip:pbx.example.test",))
    phone = authority.issue("phone", common_name="phone", dns=("phone.example.test",))
    stranger = TestAuthority(tmp_path / "other").issue("x", common_name="x", dns=("pbx.example.test",))
    tls_port = free_port()
    extra = 'verify_clients = true\ntrusted_names = ["pbx.example.test"]\n'
    text = f'\n[server]\ndomains = ["{DOMAIN}"]\n[auth]\nrequire = true\nalgorithms = ["MD5"]\n' + tls_table(
        issued, authority.ca_file, tls_port, extra
    )

    def status_with(client: Issued | None) -> int:
        context = client_context(authority.ca_file)
        if client is not None:
            context.load_cert_chain(str(client.certificate), str(client.key))
        raw = socket.create_connection(("127.0.0.1", tls_port), timeout=WAIT)
        with context.wrap_socket(raw, server_hostname="localhost") as sock:
            sock.sendall(options_to_user(sock))
            response = read_message(sock, MessageReader())
        assert isinstance(response, Response)
        return response.status

    with running_server(tmp_path / "server", text) as server:
        assert status_with(pbx) == 200  # trusted: answered for the user, not challenged
        assert status_with(None) == 407  # no certificate: an ordinary client
        assert status_with(phone) == 407  # a verified certificate naming no trusted peer
        with pytest.raises((ssl.SSLError, ConnectionError, AssertionError)):
            status_with(stranger)  # a certificate of another CA: the handshake fails
        log = server.log()
    assert "is trusted peer pbx.example.test by its certificate" in log


# ----------------------------------------------------------------------------- NOTIFY connection reuse


def test_call_info_notifies_reach_a_tls_subscriber_over_its_connection(tmp_path: Path) -> None:
    authority, issued = make_authority(tmp_path / "pki")
    tls_port = free_port()
    line = f"sip:2001@{DOMAIN}"
    extra = f'\n[[sca.lines]]\naor = "{line}"\nappearances = 2\nmembers = ["{line}"]\n'
    text = config(tls_port, issued, authority.ca_file, extra)
    with running_server(tmp_path / "server", text), tls_connect(tls_port, authority.ca_file) as sock:
        host, port = sock.getsockname()[:2]
        subscribe = (
            f"SUBSCRIBE {line} SIP/2.0\r\n"
            f"Via: SIP/2.0/TLS {host}:{port};branch=z9hG4bK{uuid.uuid4().hex};rport\r\n"
            f"From: <{line}>;tag={uuid.uuid4().hex[:8]}\r\nTo: <{line}>\r\n"
            f"Call-ID: {uuid.uuid4().hex}\r\nCSeq: 1 SUBSCRIBE\r\n"
            f"Contact: <sips:2001@{host}:{port}>\r\nEvent: call-info\r\n"
            "Accept: application/x-sca-info\r\nExpires: 600\r\nMax-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
        sock.sendall(subscribe)
        framer = MessageReader()
        accepted, notify = read_message(sock, framer), read_message(sock, framer)
    assert isinstance(accepted, Response) and accepted.status == 202, accepted
    assert isinstance(notify, Request) and notify.method == "NOTIFY", notify
    assert notify.uri == f"sips:2001@{host}:{port}"
    assert (notify.headers.get("Via") or "").startswith(f"SIP/2.0/TLS 127.0.0.1:{tls_port}")
    tls_contact = f"<sip:127.0.0.1:{tls_port};transport=tls>"
    assert accepted.headers.get("Contact") == tls_contact
    assert notify.headers.get("Contact") == tls_contact


# ----------------------------------------------------------------------------- RFC 5923 alias


def test_an_alias_offered_by_a_certified_pbx_carries_requests_to_its_name(tmp_path: Path) -> None:
    authority, issued = make_authority(tmp_path / "pki")
    pbx_cert = authority.issue("pbx", common_name="pbx", dns=("pbx.example.test",))
    db_url = f"sqlite:///{tmp_path / 'sca.db'}"
    add_subscribers(db_url, [("alice", "alice-secret")])
    tls_port = free_port()
    text = (
        f'\n[server]\ndomains = ["{DOMAIN}"]\n[auth]\nrequire = true\nalgorithms = ["MD5"]\n'
        '[upstream]\nhost = "pbx.example.test"\nport = 5061\ntransport = "tls"\n'
        + tls_table(issued, authority.ca_file, tls_port, "verify_clients = true\n")
    )
    with running_server(tmp_path / "server", text, db_url=db_url) as server:
        context = client_context(authority.ca_file)
        context.load_cert_chain(str(pbx_cert.certificate), str(pbx_cert.key))
        raw = socket.create_connection(("127.0.0.1", tls_port), timeout=WAIT)
        with context.wrap_socket(raw, server_hostname="localhost") as sock:
            reader = MessageReader()
            options = options_to_user(sock).replace(
                b"Via: SIP/2.0/TLS 127.0.0.1:", b"Via: SIP/2.0/TLS pbx.example.test:5061;alias;x-port="
            )
            sock.sendall(options)
            answer = read_message(sock, reader)
            assert isinstance(answer, Response), answer
            phone = Handset(
                "alice",
                ("127.0.0.1", server.sip_port),
                line=f"sip:alice@{DOMAIN}",
                username="alice",
                password="alice-secret",
            )
            try:
                transaction, _ = phone.invite("sip:+15551234@pstn.example.net")
                challenge = phone.wait_response(transaction)
                phone.start(phone.with_credentials(transaction.request, challenge))
                invite = read_message(sock, reader)  # the upstream's name reached over the alias
            finally:
                phone.close()
        assert isinstance(invite, Request) and invite.method == "INVITE", invite
        assert "is an alias of tls:pbx.example.test:5061" in server.log()
