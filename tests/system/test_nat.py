"""Phones behind NAT and keep-alives, against the real server on loopback.

A CRLF keep-alive datagram is absorbed quietly; a STUN Binding request gets the source's
XOR-MAPPED-ADDRESS; a double-CRLF ping on TCP gets a CRLF pong.  A handset whose Contact is a
private address (192.168.1.10) while it sends from 127.0.0.1:port gets its INVITE and NOTIFY at
its source port, also after a restart of the server; OPTIONS pings reach it at the configured
interval; when it stops answering them its binding and subscriptions are dropped: nothing is
sent to it any more and a call to it gets 480.
"""

from __future__ import annotations

import itertools
import socket
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from scaserver.sip import stun
from tests.system.accounts import add_subscribers, location_rows
from tests.system.handset import Handset, handsets, sdp
from tests.system.server import RunningServer, options_request, running_server, udp_exchange

pytestmark = pytest.mark.system

DOMAIN = "example.test"
LINE = f"sip:2001@{DOMAIN}"
ALICE = f"sip:alice@{DOMAIN}"
PRIVATE_CONTACT = "sip:alice@192.168.1.10:5060"


def config(extra: str = "") -> str:
    return f"""
[server]
domains = ["{DOMAIN}"]
[auth]
require = false
[database]
flush_interval = 0.2
{extra}
[[sca.lines]]
aor = "{LINE}"
appearances = 2
"""


def metric(server: RunningServer, name: str, **labels: str) -> float | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.http_port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.1)


def nated_alice(server: RunningServer) -> Handset:
    """A handset on the line whose Contact is a private address: behind a NAT as far as the
    server can tell, reachable only at the address it sends from."""
    phone = Handset("alice", ("127.0.0.1", server.sip_port), line=LINE, contact_user="alice")
    phone.contact = PRIVATE_CONTACT
    return phone


def caller(server: RunningServer, name: str = "carol") -> Handset:
    return Handset(name, ("127.0.0.1", server.sip_port), line=f"sip:{name}@{DOMAIN}")


def call_reaches(phone: Handset, server: RunningServer) -> None:
    """A call to alice arrives at the handset's own socket (its flow), never at 192.168.1.10."""
    with handsets(caller(server)) as (carol,):
        transaction, _ = carol.invite(ALICE)
        invite = phone.expect_request("INVITE")
        assert invite.uri == PRIVATE_CONTACT
        phone.respond(invite, 486, to_tag="busy")
        final = carol.wait_response(transaction)
        assert final.status == 486, final


# ------------------------------------------------------------------ keep-alives


def test_crlf_keepalive_on_udp_is_absorbed_without_warning_or_answer(tmp_path: Path) -> None:
    with running_server(tmp_path / "server", config()) as server:
        assert udp_exchange(server.sip_port, b"\r\n", timeout=1.0) is None
        assert udp_exchange(server.sip_port, b"\r\n\r\n", timeout=1.0) is None
        reply = udp_exchange(server.sip_port, options_request(server.sip_port))
        assert reply is not None and reply.startswith(b"SIP/2.0 200 ")
        assert metric(server, "scaserver_keepalives_received_total", kind="crlf") == 2.0
        log = server.log()
        assert "empty message" not in log
        assert "[warn]" not in log.lower() and "warn" not in log.lower(), log[-2000:]


def test_stun_binding_request_gets_the_source_as_xor_mapped_address(tmp_path: Path) -> None:
    with running_server(tmp_path / "server", config()) as server:
        tid = uuid.uuid4().bytes[:12]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.settimeout(2.0)
            sock.sendto(stun.binding_request(tid, fingerprint=True), ("127.0.0.1", server.sip_port))
            reply = sock.recv(2048)
            source = sock.getsockname()
            # A broken one is dropped unanswered.
            sock.sendto(stun.binding_request(tid)[:-4], ("127.0.0.1", server.sip_port))
            sock.settimeout(1.0)
            with pytest.raises(TimeoutError):
                sock.recv(2048)
        message = stun.parse(reply)
        assert message.kind is stun.StunClass.SUCCESS and message.transaction_id == tid
        mapped = message.attribute(stun.XOR_MAPPED_ADDRESS)
        assert mapped is not None
        assert stun.read_xor_address(mapped, tid) == source
        assert metric(server, "scaserver_keepalives_received_total", kind="stun") == 1.0


def test_double_crlf_ping_on_tcp_gets_a_crlf_pong(tmp_path: Path) -> None:
    with running_server(tmp_path / "server", config()) as server:
        with socket.create_connection(("127.0.0.1", server.sip_port), timeout=2.0) as sock:
            sock.sendall(b"\r\n\r\n")
            assert sock.recv(16) == b"\r\n"
        wait_for(
            lambda: metric(server, "scaserver_keepalives_received_total", kind="double-crlf") == 1.0,
            5.0,
            "the ping counted",
        )


# ------------------------------------------------------------------ a NATed handset


def test_nated_handset_gets_invite_and_notify_at_its_flow_also_after_a_restart(
    tmp_path: Path, db_url: str
) -> None:
    with running_server(tmp_path / "first", config(), db_url=db_url) as first:
        port = first.sip_port
        with handsets(nated_alice(first)) as (alice,):
            assert alice.register(ALICE).status == 200
            response, dialog, _ = alice.subscribe("call-info")
            assert response.status == 202
            alice.wait_notify(lambda n: n.event == "call-info" and n.call_id == dialog.call_id)
            call_reaches(alice, first)
            assert metric(first, "scaserver_nat_bindings", transport="udp") == 1.0
            wait_for(lambda: ALICE in dict(location_rows(db_url)), 10, "the binding stored")
            time.sleep(0.5)  # the subscription's row follows in the same flush interval
            first.stop()
            before = len(alice.notifies)
            with running_server(tmp_path / "second", config(), db_url=db_url, sip_port=port) as second:
                # The restored subscription gets its full state at the flow it came from (10.3).
                alice.wait_notify(lambda n: n.call_id == dialog.call_id, after=before)
                call_reaches(alice, second)


def test_options_pings_reach_a_nated_handset_and_a_silent_one_is_dropped(tmp_path: Path) -> None:
    text = config("[sip]\nt1 = 0.05\n[nat]\nping_interval = 1.0\n")
    db_url = f"sqlite:///{tmp_path / 'nat.db'}"
    add_subscribers(db_url, [("alice", "a-secret"), ("bob", "b-secret"), ("carol", "c-secret")])
    with running_server(tmp_path / "server", text, db_url=db_url) as server:
        direct = Handset("bob", ("127.0.0.1", server.sip_port), line=LINE, contact_user="bob")
        with handsets(nated_alice(server), direct) as (alice, bob):
            assert alice.register(LINE).status == 200  # the line's only registered member
            assert bob.register(f"sip:bob@{DOMAIN}").status == 200
            response, _dialog, _ = alice.subscribe("call-info")
            assert response.status == 202
            arrivals: list[float] = []
            for _ in range(3):
                ping = alice.expect_request("OPTIONS", timeout=3.0)
                arrivals.append(time.monotonic())
                assert ping.uri == PRIVATE_CONTACT
                alice.respond(ping, 200)
            gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
            assert all(0.5 < gap < 2.0 for gap in gaps), gaps  # one per 1 s interval
            assert not [r for r in bob.requests if r.method == "OPTIONS"], "bob is not behind NAT"
            # Alice stops answering: the next ping times out (64*T1 = 3.2 s) and her flow fails.
            alice.mute()
            failure = f"flow udp:127.0.0.1:{alice.port} failed (ping-timeout)"
            wait_for(lambda: failure in server.log(), 10.0, "the flow failure")
            wait_for(lambda: LINE not in dict(location_rows(server.db_url)), 5.0, "the binding removed")
            assert metric(server, "scaserver_flow_failures_total", cause="ping-timeout") == 1.0
            assert (metric(server, "scaserver_nat_pings_failed_total") or 0) >= 1.0
            alice.vanish()
            _drain(alice.sock)
            # A call to the line now gets 480 (no member registered), and nothing (ping,
            # INVITE, NOTIFY) reaches her socket.
            with handsets(caller(server)) as (carol,):
                transaction, _ = carol.invite(LINE)
                assert carol.wait_response(transaction).status == 480
            seize, _, _ = bob.subscribe("line-seize", index=1, expires=10)
            assert seize.status == 200
            alice.sock.settimeout(3.0)
            with pytest.raises(TimeoutError):
                data = alice.sock.recv(65535)
                raise AssertionError(f"sent into the dead flow: {data[:80]!r}")
            # She comes back (a new mapping): registers and subscribes again, and gets the
            # line's state, the seize made while she was gone included.
            with handsets(nated_alice(server)) as (back,):
                assert back.register(LINE).status == 200
                response, dialog, _ = back.subscribe("call-info")
                assert response.status == 202
                back.wait_notify(lambda n: n.call_id == dialog.call_id and n.state_of(1) == "seized")


def _drain(sock: socket.socket) -> None:
    sock.settimeout(0.2)
    try:
        while True:
            sock.recv(65535)
    except TimeoutError:
        return


def test_in_dialog_requests_reach_a_nated_caller_over_its_flow(tmp_path: Path) -> None:
    """The callee's BYE is addressed to the caller's private Contact: it goes to the caller's
    flow, named by the flow token of our Record-Route (RFC 5626 section 5.3)."""
    with running_server(tmp_path / "server", config()) as server:
        callee = Handset("bob", ("127.0.0.1", server.sip_port), line=f"sip:bob@{DOMAIN}")
        with handsets(nated_alice(server), callee) as (alice, bob):
            assert alice.register(ALICE).status == 200
            assert bob.register().status == 200
            transaction, dialog = alice.invite(f"sip:bob@{DOMAIN}")
            invite = bob.expect_request("INVITE")
            assert ";ob;ob-a=" in (invite.headers.get("Record-Route") or "")
            theirs = bob.uas_dialog(invite)
            bob.respond(invite, 200, to_tag=theirs.local_tag, body=sdp(bob.port))
            ok = alice.wait_response(transaction)
            assert ok.status == 200
            alice.established(dialog, ok)
            alice.ack(dialog, transaction, ok)
            bob.expect_request("ACK")
            bye = bob.send_in_dialog(theirs, "BYE")
            arrived = alice.expect_request("BYE")
            assert arrived.uri == PRIVATE_CONTACT
            alice.respond(arrived, 200)
            assert bob.wait_response(bye).status == 200


def _register_over_tcp(sock: socket.socket, user: str, contact_params: str) -> bytes:
    local = sock.getsockname()
    request = (
        f"REGISTER sip:{DOMAIN} SIP/2.0\r\n"
        f"Via: SIP/2.0/TCP {local[0]}:{local[1]};branch=z9hG4bK{uuid.uuid4().hex};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:{user}@{DOMAIN}>;tag={uuid.uuid4().hex[:8]}\r\n"
        f"To: <sip:{user}@{DOMAIN}>\r\n"
        f"Call-ID: {uuid.uuid4().hex}\r\n"
        "CSeq: 1 REGISTER\r\n"
        "Supported: outbound, path\r\n"
        f"Contact: <sip:{user}@192.168.1.10:5060;transport=tcp;ob>{contact_params}\r\n"
        "Expires: 300\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    sock.sendall(request.encode())
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += sock.recv(4096)
    return answer


def test_outbound_register_over_tcp_requires_outbound_and_its_closed_flow_drops_the_binding(
    tmp_path: Path,
) -> None:
    """RFC 5626: the 200 to a REGISTER with +sip.instance and reg-id has Require: outbound; the
    flow answers the double-CRLF ping; when its connection closes the binding goes (the phone
    registers again over a new flow), while a plain TCP binding stays reachable by its Contact."""
    instance = ';+sip.instance="<urn:uuid:9f0ad2c4-2c1e-4d52-9a7e-0c5b1f6f0d11>";reg-id=1'
    with running_server(tmp_path / "server", config()) as server:
        address = ("127.0.0.1", server.sip_port)
        with (
            socket.create_connection(address, timeout=3.0) as outbound,
            socket.create_connection(address, timeout=3.0) as plain,
        ):
            answer = _register_over_tcp(outbound, "alice", instance)
            assert answer.startswith(b"SIP/2.0 200 ") and b"\r\nRequire: outbound\r\n" in answer, answer
            other = _register_over_tcp(plain, "bob", "")
            assert other.startswith(b"SIP/2.0 200 ") and b"Require" not in other, other
            outbound.sendall(b"\r\n\r\n")
            assert outbound.recv(16) == b"\r\n"
            flow = outbound.getsockname()
            wait_for(lambda: len(location_rows(server.db_url)) == 2, 5.0, "both bindings stored")
        failure = f"flow tcp:127.0.0.1:{flow[1]} failed (connection-closed): 1 binding(s)"
        wait_for(lambda: failure in server.log(), 5.0, "the outbound flow's failure")
        wait_for(lambda: ALICE not in dict(location_rows(server.db_url)), 5.0, "the outbound binding removed")
        assert f"sip:bob@{DOMAIN}" in dict(location_rows(server.db_url))
        assert metric(server, "scaserver_flow_failures_total", cause="connection-closed") == 1.0
