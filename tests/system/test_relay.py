"""No open relay, against the real scaserver process on loopback (the relay policy of
scaserver.proxy.relay, rules R1-R7).

A "victim" listens on UDP and TCP at 127.0.0.3; the attacker sends from 127.0.0.1 without
credentials (or as an authenticated subscriber) every form that used to be relayed: a To tag
and our Route, a forged Record-Route signature, the signature of another dialog, a bare ACK,
an ACK with a tag, a subscriber's pre-loaded Route, a subscriber's own signed Route of a call
towards another host; INVITE, MESSAGE and BYE; over UDP and TCP.
The victim must receive nothing, the attacker 403 or 404 (an ACK: nothing).  A trusted peer
(127.0.0.2) may pre-load a Route, and a real record-routed call still passes both ways.

No sleeping for absence: after each attack the attacker's own socket gets an answer to an
OPTIONS sent after it (the server handles one socket's messages in order), and at the end a
request the server must relay reaches the victim, after everything else was handled.
"""

from __future__ import annotations

import select
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator

import attrs
import pytest

from scaserver.sip import headers
from scaserver.sip.errors import MalformedMessage
from scaserver.sip.framing import StreamFramer
from scaserver.sip.message import Request, Response
from scaserver.sip.parser import parse_message
from scaserver.sip.responses import make_response
from scaserver.sip.serializer import serialize
from tests.system.accounts import add_subscribers
from tests.system.handset import Handset, handsets, new_tag, sdp
from tests.system.server import SCASERVER, RunningServer, free_port, running_server

# One server for the module: its tests stay in one pytest-xdist worker.
pytestmark = [pytest.mark.system, pytest.mark.xdist_group("relay")]

DOMAIN = "example.test"
ATTACKER_HOST = "127.0.0.1"
TRUSTED_HOST = "127.0.0.2"
VICTIM_HOST = "127.0.0.3"
WAIT = 5.0
CONFIG = f"""
[server]
domains = ["{DOMAIN}"]
[auth]
require = true
algorithms = ["MD5"]
[database]
flush_interval = 0.5
"""


class Victim:
    """A host that must never hear from scaserver unless a trusted peer routes to it: a UDP
    socket and a TCP listener on one port; it records every request and answers it 200."""

    def __init__(self) -> None:
        self.port = free_port(VICTIM_HOST)
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind((VICTIM_HOST, self.port))
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind((VICTIM_HOST, self.port))
        self.tcp.listen(16)
        self.received: list[tuple[str, Request]] = []
        self.connections = 0
        self._cond = threading.Condition()
        self._running = True
        self._thread = threading.Thread(target=self._serve, name="victim", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        streams: dict[socket.socket, StreamFramer] = {}
        while self._running:
            readable, _, _ = select.select([self.udp, self.tcp, *streams], [], [], 0.05)
            for sock in readable:
                if sock is self.udp:
                    data, source = self.udp.recvfrom(65535)
                    self._on_data("udp", data, lambda reply, to=source: self.udp.sendto(reply, to))
                elif sock is self.tcp:
                    connection, _ = self.tcp.accept()
                    streams[connection] = StreamFramer(65535)
                    with self._cond:
                        self.connections += 1
                else:
                    chunk = sock.recv(65535)
                    if not chunk:
                        del streams[sock]
                        sock.close()
                        continue
                    for data in streams[sock].feed(chunk):
                        self._on_data("tcp", data, lambda reply, conn=sock: conn.sendall(reply))
        for sock in streams:
            sock.close()

    def _on_data(self, transport: str, data: bytes, reply: object) -> None:
        try:
            message = parse_message(data)
        except MalformedMessage:
            message = None
        if not isinstance(message, Request):
            return
        with self._cond:
            self.received.append((transport, message))
            self._cond.notify_all()
        if message.method != "ACK" and callable(reply):
            reply(serialize(make_response(message, 200, to_tag=new_tag())))

    def wait_for(self, call_id: str) -> Request:
        with self._cond:
            if not self._cond.wait_for(lambda: any(r.call_id == call_id for _, r in self.received), WAIT):
                raise AssertionError(f"the victim never got {call_id}; it got {self.summary()}")
            return next(r for _, r in self.received if r.call_id == call_id)

    def summary(self) -> list[str]:
        return [f"{transport} {r.method} {r.uri} {r.call_id}" for transport, r in self.received]

    def close(self) -> None:
        self._running = False
        self._thread.join(2)
        self.udp.close()
        self.tcp.close()


class Peer:
    """A raw SIP sender on one source address, over UDP or one TCP connection."""

    def __init__(self, server: RunningServer, host: str, transport: str) -> None:
        self.transport = transport
        self.server = (ATTACKER_HOST, server.sip_port)
        kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
        self.sock = socket.socket(socket.AF_INET, kind)
        self.sock.bind((host, 0))
        self.sock.settimeout(WAIT)
        if transport == "tcp":
            self.sock.connect(self.server)
        self.host, self.port = self.sock.getsockname()
        self.framer = StreamFramer(65535)
        self.pending: list[bytes] = []

    def send(self, data: bytes) -> None:
        if self.transport == "udp":
            self.sock.sendto(data, self.server)
        else:
            self.sock.sendall(data)

    def receive(self) -> Response:
        while not self.pending:
            if self.transport == "udp":
                self.pending.append(self.sock.recv(65535))
            else:
                chunk = self.sock.recv(65535)
                assert chunk, "the server closed the connection"
                self.pending += self.framer.feed(chunk)
        message = parse_message(self.pending.pop(0))
        assert isinstance(message, Response), message
        return message

    def final(self, call_id: str) -> Response:
        """The final response for ``call_id`` (provisional ones skipped)."""
        while True:
            response = self.receive()
            if response.call_id == call_id and response.status >= 200:
                return response

    def request(
        self,
        method: str,
        uri: str,
        *,
        to_tag: str | None = None,
        routes: tuple[str, ...] = (),
        call_id: str | None = None,
        from_tag: str = "attacker",
        extra: tuple[tuple[str, str], ...] = (),
    ) -> bytes:
        to = f"<sip:victim@{VICTIM_HOST}>" + (f";tag={to_tag}" if to_tag else "")
        lines = [
            f"{method} {uri} SIP/2.0",
            f"Via: {self.via()}",
            "Max-Forwards: 70",
            f"From: <sip:mallory@{DOMAIN}>;tag={from_tag}",
            f"To: {to}",
            f"Call-ID: {call_id or uuid.uuid4().hex}",
            f"CSeq: 1 {method}",
            f"Contact: <sip:mallory@{self.host}:{self.port};transport={self.transport}>",
            *(f"Route: {route}" for route in routes),
            *(f"{name}: {value}" for name, value in extra),
            "Content-Length: 0",
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def via(self) -> str:
        branch = f"z9hG4bK{uuid.uuid4().hex}"
        return f"SIP/2.0/{self.transport.upper()} {self.host}:{self.port};branch={branch};rport"

    def barrier(self) -> None:
        """Everything this peer sent before has been handled: the answer to an OPTIONS sent
        after it came back (one socket's messages are handled in order)."""
        call_id = uuid.uuid4().hex
        self.send(self.request("OPTIONS", f"sip:{self.server[0]}:{self.server[1]}", call_id=call_id))
        assert self.final(call_id).status == 200

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    workdir = tmp_path_factory.mktemp("relay")
    db_url = f"sqlite:///{workdir / 'scaserver.db'}"
    add_subscribers(db_url, [("alice", "alice-secret"), ("bob", "bob-secret"), ("mallory", "mallory-secret")])
    subprocess.run(
        [*SCASERVER, "trusted", "add", f"{TRUSTED_HOST}/32", "--tag", "pbx", "--db", db_url],
        check=True,
        capture_output=True,
    )
    with running_server(workdir / "server", CONFIG, db_url=db_url) as running:
        yield running


@pytest.fixture
def victim() -> Iterator[Victim]:
    found = Victim()
    try:
        yield found
    finally:
        found.close()


def our_route(server: RunningServer, **params: str) -> str:
    extra = "".join(f";{name}={value}" for name, value in params.items())
    return f"<sip:{ATTACKER_HOST}:{server.sip_port};lr{extra}>"


def relayed_nothing(server: RunningServer, victim: Victim, transport: str) -> None:
    """The canary: a trusted peer's pre-loaded Route reaches the victim, so the server has
    handled everything sent before it; and the victim got nothing else."""
    canary = Peer(server, TRUSTED_HOST, transport)
    call_id = f"canary-{uuid.uuid4().hex}"
    try:
        canary.send(
            canary.request(
                "MESSAGE",
                f"sip:victim@{VICTIM_HOST}:{victim.port}",
                call_id=call_id,
                routes=(f"<sip:{VICTIM_HOST}:{victim.port};transport={transport};lr>",),
            )
        )
        assert canary.final(call_id).status == 200
    finally:
        canary.close()
    victim.wait_for(call_id)
    assert [line for line in victim.summary() if "canary-" not in line] == []


def victim_uri(victim: Victim, transport: str) -> str:
    return f"sip:victim@{VICTIM_HOST}:{victim.port};transport={transport}"


# -- the open-relay forms --------------------------------------------------------------------------

TRANSPORTS = ["udp", "tcp"]
METHODS = ["INVITE", "MESSAGE", "BYE"]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_no_credentials_a_to_tag_and_our_route_relay_nothing(
    server: RunningServer, victim: Victim, transport: str
) -> None:
    attacker = Peer(server, ATTACKER_HOST, transport)
    try:
        for method in METHODS:
            for route in (
                our_route(server),  # unsigned
                our_route(server, rrsig="0123456789abcdef01234567"),  # forged
                our_route(server, transport=transport, rrsig="f" * 24),
            ):
                call_id = uuid.uuid4().hex
                attacker.send(
                    attacker.request(
                        method, victim_uri(victim, transport), to_tag="x", routes=(route,), call_id=call_id
                    )
                )
                assert attacker.final(call_id).status == 403, (method, route)
    finally:
        attacker.close()
    relayed_nothing(server, victim, transport)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_acks_outside_a_dialog_we_record_routed_relay_nothing(
    server: RunningServer, victim: Victim, transport: str
) -> None:
    attacker = Peer(server, ATTACKER_HOST, transport)
    try:
        uri = victim_uri(victim, transport)
        attacker.send(attacker.request("ACK", uri))  # bare: no tag, no Route
        attacker.send(attacker.request("ACK", uri, to_tag="x"))
        attacker.send(attacker.request("ACK", uri, to_tag="x", routes=(our_route(server),)))
        attacker.send(attacker.request("ACK", uri, routes=(our_route(server),)))
        attacker.barrier()
    finally:
        attacker.close()
    relayed_nothing(server, victim, transport)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_without_a_route_of_ours_an_in_dialog_request_is_404(
    server: RunningServer, victim: Victim, transport: str
) -> None:
    attacker = Peer(server, ATTACKER_HOST, transport)
    try:
        for method in METHODS:
            call_id = uuid.uuid4().hex
            attacker.send(
                attacker.request(method, victim_uri(victim, transport), to_tag="x", call_id=call_id)
            )
            assert attacker.final(call_id).status == 404
    finally:
        attacker.close()
    relayed_nothing(server, victim, transport)


def authenticated(peer: Peer, data: bytes, call_id: str, username: str, password: str) -> Response:
    """Send ``data``; answer a 407 with digest credentials (a fresh branch, CSeq + 1)."""
    peer.send(data)
    challenge = peer.final(call_id)
    if challenge.status != 407:
        return challenge
    request = parse_message(data)
    assert isinstance(request, Request)
    phone = Handset.__new__(Handset)  # only its digest arithmetic (with_credentials)
    phone.username, phone.password, phone.port = username, password, peer.port
    answered = phone.with_credentials(request, challenge)
    answered = answered.with_headers(answered.headers.set("Via", peer.via()))
    peer.send(serialize(answered))
    return peer.final(call_id)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_an_authenticated_subscriber_cannot_preload_a_route_to_a_foreign_host(
    server: RunningServer, victim: Victim, transport: str
) -> None:
    subscriber = Peer(server, ATTACKER_HOST, transport)
    try:
        for method in ("INVITE", "MESSAGE"):
            call_id = uuid.uuid4().hex
            data = subscriber.request(
                method,
                "sip:anyone@elsewhere.example.net",
                routes=(f"<sip:{VICTIM_HOST}:{victim.port};transport={transport};lr>",),
                call_id=call_id,
            )
            assert authenticated(subscriber, data, call_id, "mallory", "mallory-secret").status == 403
        # Without a Route, a foreign domain is refused as well (no upstream configured).
        call_id = uuid.uuid4().hex
        data = subscriber.request("MESSAGE", victim_uri(victim, transport), call_id=call_id)
        assert authenticated(subscriber, data, call_id, "mallory", "mallory-secret").status == 403
    finally:
        subscriber.close()
    relayed_nothing(server, victim, transport)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_an_unroutable_preloaded_route_of_a_trusted_peer_is_400(
    server: RunningServer, victim: Victim, transport: str
) -> None:
    pbx = Peer(server, TRUSTED_HOST, transport)
    try:
        for route in (
            "<tel:+15551234>",
            "<sip:pbx.example.net;transport=sctp;lr>",
            "<sip:255.255.255.255;lr>",
            "<sip:nowhere.invalid;lr>",  # never resolves (RFC 6761 6.4)
        ):
            for to_tag in (None, "x"):
                call_id = uuid.uuid4().hex
                data = pbx.request(
                    "INVITE",
                    victim_uri(victim, transport),
                    to_tag=to_tag,
                    routes=(our_route(server), route),
                    call_id=call_id,
                )
                pbx.send(data)
                assert pbx.final(call_id).status == 400, (route, to_tag)
    finally:
        pbx.close()
    relayed_nothing(server, victim, transport)


# -- what must still work ------------------------------------------------------------------------


def test_a_trusted_peers_preloaded_route_is_honoured_in_and_out_of_dialog(
    server: RunningServer, victim: Victim
) -> None:
    pbx = Peer(server, TRUSTED_HOST, "udp")
    try:
        for to_tag, routes in (
            (None, (f"<sip:{VICTIM_HOST}:{victim.port};lr>",)),
            ("x", (our_route(server), f"<sip:{VICTIM_HOST}:{victim.port};lr>")),
        ):
            call_id = uuid.uuid4().hex
            pbx.send(
                pbx.request(
                    "MESSAGE",
                    "sip:someone@elsewhere.example.net",
                    to_tag=to_tag,
                    routes=routes,
                    call_id=call_id,
                )
            )
            assert pbx.final(call_id).status == 200
            assert victim.wait_for(call_id).uri == "sip:someone@elsewhere.example.net"
    finally:
        pbx.close()


def test_a_record_routed_call_still_works_both_ways_and_its_signature_opens_no_other_dialog(
    server: RunningServer, victim: Victim
) -> None:
    address = ("127.0.0.1", server.sip_port)
    alice = Handset("alice", address, line=f"sip:alice@{DOMAIN}", username="alice", password="alice-secret")
    bob = Handset("bob", address, line=f"sip:bob@{DOMAIN}", username="bob", password="bob-secret")
    with handsets(alice, bob):
        assert bob.register().status == 200
        assert alice.register().status == 200  # bob's requests reach alice at her contact (R7)
        first_tx, caller = alice.invite(f"sip:bob@{DOMAIN}")
        challenge = alice.wait_response(first_tx)
        assert challenge.status == 407
        alice.ack(caller, first_tx, challenge)
        invite_tx = alice.start(alice.with_credentials(first_tx.request, challenge))
        invite = bob.expect_request("INVITE")
        [record_route] = invite.headers.values("Record-Route")
        assert ";rrsig=" in record_route
        callee = bob.uas_dialog(invite)
        bob.respond(invite, 200, to_tag=callee.local_tag, body=sdp(bob.port))
        ok = alice.wait_response(invite_tx)
        assert ok.status == 200
        alice.established(caller, ok)
        caller.local_cseq = headers.cseq(invite_tx.request).number
        alice.ack(caller, invite_tx, ok)
        bob.expect_request("ACK")
        # re-INVITE and its ACK, caller to callee
        reinvite_tx = alice.send_in_dialog(caller, "INVITE", body=sdp(alice.port, "sendonly"))
        reinvite = bob.expect_request("INVITE")
        bob.respond(reinvite, 200, body=sdp(bob.port, "recvonly"))
        reinvited = alice.wait_response(reinvite_tx)
        assert reinvited.status == 200
        alice.ack(caller, reinvite_tx, reinvited)
        bob.expect_request("ACK")
        # re-INVITE callee to caller
        back_tx = bob.send_in_dialog(callee, "INVITE", body=sdp(bob.port))
        back = alice.expect_request("INVITE")
        alice.respond(back, 200, body=sdp(alice.port))
        back_ok = bob.wait_response(back_tx)
        assert back_ok.status == 200
        bob.ack(callee, back_tx, back_ok)
        alice.expect_request("ACK")
        # The signature of this dialog, on another Call-ID to the victim: refused.
        attacker = Peer(server, ATTACKER_HOST, "udp")
        try:
            call_id = uuid.uuid4().hex
            attacker.send(
                attacker.request(
                    "INVITE", victim_uri(victim, "udp"), to_tag="x", routes=(record_route,), call_id=call_id,
                    from_tag=new_tag(),
                )
            )  # fmt: skip
            assert attacker.final(call_id).status == 403
        finally:
            attacker.close()
        # BYE from the callee reaches the caller.
        bye_tx = bob.send_in_dialog(callee, "BYE")
        bye = alice.expect_request("BYE")
        alice.respond(bye, 200)
        assert bob.wait_response(bye_tx).status == 200
    relayed_nothing(server, victim, "udp")


def test_a_party_to_a_record_routed_call_cannot_send_its_in_dialog_requests_elsewhere(
    server: RunningServer, victim: Victim
) -> None:
    """R7: alice, an authenticated subscriber, calls bob and holds our signed Record-Route;
    her in-dialog requests towards the victim (a gateway trusting our address), by
    Request-URI or by a Route after ours, get 403 (an ACK: nothing); the call still ends."""
    address = ("127.0.0.1", server.sip_port)
    alice = Handset("alice", address, line=f"sip:alice@{DOMAIN}", username="alice", password="alice-secret")
    bob = Handset("bob", address, line=f"sip:bob@{DOMAIN}", username="bob", password="bob-secret")
    with handsets(alice, bob):
        assert bob.register().status == 200
        assert alice.register().status == 200
        first_tx, caller = alice.invite(f"sip:bob@{DOMAIN}")
        challenge = alice.wait_response(first_tx)
        assert challenge.status == 407
        alice.ack(caller, first_tx, challenge)
        invite_tx = alice.start(alice.with_credentials(first_tx.request, challenge))
        invite = bob.expect_request("INVITE")
        callee = bob.uas_dialog(invite)
        bob.respond(invite, 200, to_tag=callee.local_tag, body=sdp(bob.port))
        ok = alice.wait_response(invite_tx)
        assert ok.status == 200 and ";rrsig=" in (ok.headers.get("Record-Route") or "")
        alice.established(caller, ok)
        caller.local_cseq = headers.cseq(invite_tx.request).number
        alice.ack(caller, invite_tx, ok)
        bob.expect_request("ACK")
        gateway = f"sip:+15551234@{VICTIM_HOST}:{victim.port}"
        by_uri = attrs.evolve(caller, remote_target=gateway, route_set=list(caller.route_set))
        by_route = attrs.evolve(
            caller, route_set=[*caller.route_set, f"<sip:{VICTIM_HOST}:{victim.port};lr>"]
        )
        for forged in (by_uri, by_route):
            for method in ("BYE", "INVITE", "MESSAGE", "INFO"):
                tx = alice.send_in_dialog(forged, method, body=sdp(alice.port) if method == "INVITE" else b"")
                assert alice.wait_response(tx).status == 403, (method, forged.remote_target)
            forged.local_cseq += 1
            alice.send_bytes(serialize(alice._in_dialog_request(forged, "ACK", forged.local_cseq)))
        # The real call ends with its BYE, caller to callee.
        caller.local_cseq = by_route.local_cseq
        bye_tx = alice.send_in_dialog(caller, "BYE")
        bye = bob.expect_request("BYE")
        bob.respond(bye, 200)
        assert alice.wait_response(bye_tx).status == 200
    relayed_nothing(server, victim, "udp")
