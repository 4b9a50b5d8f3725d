"""Nothing a peer sends can stop the database: the real server process on loopback, on
SQLite and PostgreSQL.

A REGISTER with ``User-Agent: Phone\\xff``, a display name, a Contact parameter and an
instance id holding octets that are not UTF-8 (and an INVITE whose caller display name does)
used to be answered 200 and then to fail every write-behind flush for ever: every later
binding, subscription and history row was lost.  Here the poisoned messages come first, then
ordinary REGISTERs and SUBSCRIBEs; after SIGTERM the database holds every row, the poisoned
text escaped (``\\xff``), and the log reports no lost or refused write.
"""

from __future__ import annotations

import signal
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import func, select

from scaserver.sip.message import Request
from scaserver.sip.parser import parse_message
from scaserver.sip.responses import make_response
from scaserver.sip.serializer import serialize
from scaserver.store import tables
from scaserver.store.sql import SqlStore
from tests.system.handset import Handset, handsets
from tests.system.server import RunningServer, running_server

pytestmark = pytest.mark.system

DOMAIN = "example.test"
LINE = f"sip:2001@{DOMAIN}"
CONFIG = f"""
[server]
domains = ["{DOMAIN}"]
[auth]
require = false
[database]
flush_interval = 0.3
[[sca.lines]]
aor = "{LINE}"
appearances = 2
members = []
"""
USERS = 12


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.2)


class RawPhone:
    """A UDP socket that sends hand-written messages, octets as they are."""

    def __init__(self, server: RunningServer) -> None:
        self.server = ("127.0.0.1", server.sip_port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(3.0)
        self.port: int = self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, self.server)

    def receive(self) -> bytes:
        """The next message that is not a provisional response."""
        while True:
            data, _ = self.sock.recvfrom(65535)
            if not data.startswith(b"SIP/2.0 1"):
                return data

    def register(
        self, user: str, *, user_agent: bytes, display: bytes = b"", instance: bytes = b"1"
    ) -> bytes:
        head = (
            f"REGISTER sip:{DOMAIN} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{uuid.uuid4().hex};rport\r\n"
            "Max-Forwards: 70\r\n"
        ).encode()
        message = (
            head
            + b'From: "' + display + f'" <sip:{user}@{DOMAIN}>;tag={uuid.uuid4().hex[:8]}\r\n'.encode()
            + b'To: "' + display + f'" <sip:{user}@{DOMAIN}>\r\n'.encode()
            + f"Call-ID: {uuid.uuid4().hex}\r\nCSeq: 1 REGISTER\r\n".encode()
            # %FE%FF: octets that are not UTF-8 reach a Contact URI %-escaped (RFC 3261 19.1.2)
            + f"Contact: <sip:{user}@127.0.0.1:{self.port};x=%FE%FF>".encode()
            + b';+sip.instance="<urn:uuid:' + instance + b'>";reg-id=1\r\n'
            + b"User-Agent: " + user_agent + b"\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n"
        )  # fmt: skip
        self.send(message)
        return self.receive()


def count(store: SqlStore, table: object) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())  # type: ignore[arg-type]


def test_octets_that_are_not_utf8_never_stop_the_database_writes(tmp_path: Path, db_url: str) -> None:
    with running_server(tmp_path / "server", CONFIG, db_url=db_url) as server:
        poisoned, caller = RawPhone(server), RawPhone(server)
        try:
            reply = poisoned.register(
                "alice", user_agent=b"Phone\xff", display=b"Al\xffce", instance=b"\xfe\xff"
            )
            assert reply.startswith(b"SIP/2.0 200"), reply
            # A call to alice whose caller display name is not UTF-8: alice answers 486.
            caller.send(
                (
                    f"INVITE sip:alice@{DOMAIN} SIP/2.0\r\n"
                    f"Via: SIP/2.0/UDP 127.0.0.1:{caller.port};branch=z9hG4bK{uuid.uuid4().hex};rport\r\n"
                    "Max-Forwards: 70\r\n"
                ).encode()
                + f'From: "Car\xffol" <sip:carol@{DOMAIN}>;tag=c1\r\n'.encode("latin-1")
                + f"To: <sip:alice@{DOMAIN}>\r\nCall-ID: {uuid.uuid4().hex}\r\nCSeq: 1 INVITE\r\n".encode()
                + f"Contact: <sip:carol@127.0.0.1:{caller.port}>\r\nContent-Length: 0\r\n\r\n".encode()
            )
            invite = parse_message(poisoned.receive())
            assert isinstance(invite, Request) and invite.method == "INVITE"
            poisoned.send(serialize(make_response(invite, 486, to_tag="busy")))
            assert caller.receive().startswith(b"SIP/2.0 486")
            # Then everybody else, as on any day.
            plain = [RawPhone(server) for _ in range(USERS)]
            try:
                for n, phone in enumerate(plain):
                    reply = phone.register(f"user{n}", user_agent=b"PolycomVVX-VVX_450-UA/6.4.3")
                    assert reply.startswith(b"SIP/2.0 200"), reply
            finally:
                for phone in plain:
                    phone.close()
            with handsets(
                Handset("bob", ("127.0.0.1", server.sip_port), line=LINE, contact_user="bob"),
                Handset("carol", ("127.0.0.1", server.sip_port), line=LINE, contact_user="carol"),
            ) as phones:
                for handset in phones:
                    assert handset.register().status == 200
                    response, _, _ = handset.subscribe("call-info")
                    assert response.status in (200, 202)
                    handset.wait_notify(lambda n: n.event == "call-info")

                store = SqlStore(db_url)
                try:
                    wait_for(
                        lambda: (
                            count(store, tables.sca_subscriptions) == 2
                            and count(store, tables.location) == USERS + 3
                        ),
                        10.0,
                        "every binding and subscription stored",
                    )
                finally:
                    store.close()
                assert server.stop(signal.SIGTERM, timeout=10.0) == 0, server.log()[-3000:]
        finally:
            poisoned.close()
            caller.close()

    log = server.log()
    assert "were not stored" not in log, log[-3000:]
    assert "dead letter" not in log, log[-3000:]
    assert "flush of" not in log, log[-3000:]  # no failed flush at all
    store = SqlStore(db_url)
    try:
        with store.engine.connect() as conn:
            location = tables.location
            aors = set(conn.execute(select(location.c.aor)).scalars())
            # bob and carol register their contacts on the shared line
            assert aors == {f"sip:user{n}@{DOMAIN}" for n in range(USERS)} | {f"sip:alice@{DOMAIN}", LINE}
            alice = conn.execute(
                select(location.c.user_agent, location.c.contact, location.c.instance).where(
                    location.c.aor == f"sip:alice@{DOMAIN}"
                )
            ).one()
            assert alice.user_agent == "Phone\\xff"
            assert alice.instance == "<urn:uuid:\\xfe\\xff>"
            events = tables.registration_events
            registered = set(conn.execute(select(events.c.aor)).scalars())
            assert registered == aors
            assert "Phone\\xff" in set(conn.execute(select(events.c.user_agent)).scalars())
            displays = set(conn.execute(select(tables.calls.c.caller_display)).scalars())
            assert "Car\\xffol" in displays, displays
            assert count(store, tables.sca_subscriptions) == 2
    finally:
        store.close()


PUSH_CONFIG = f"""
[server]
domains = ["{DOMAIN}"]
[auth]
require = false
[database]
flush_interval = 0.3
[push]
enabled = true
gateway_url = "http://127.0.0.1:9/push"
"""


def test_a_push_token_with_octets_that_are_not_utf8_is_registered_and_stored(
    tmp_path: Path, db_url: str
) -> None:
    """RFC 8599 parameters %-escape what is not UTF-8: ``pn-prid=%FF%FE`` reaches the push
    core, the history and the store as surrogate escapes."""
    with running_server(tmp_path / "server", PUSH_CONFIG, db_url=db_url) as server:
        phone = RawPhone(server)
        try:
            head = (
                f"REGISTER sip:{DOMAIN} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{phone.port};branch=z9hG4bK{uuid.uuid4().hex};rport\r\n"
                "Max-Forwards: 70\r\n"
                f"From: <sip:mobile@{DOMAIN}>;tag=m1\r\nTo: <sip:mobile@{DOMAIN}>\r\n"
                f"Call-ID: {uuid.uuid4().hex}\r\nCSeq: 1 REGISTER\r\n"
                f"Contact: <sip:mobile@127.0.0.1:{phone.port};pn-provider=apns;pn-prid=tok%FF%FE;"
                "pn-param=ABCDE12345.com.acme.voip>\r\n"
            ).encode()
            phone.send(head + b"User-Agent: App\xff\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n")
            reply = phone.receive()
            assert reply.startswith(b"SIP/2.0 200"), reply
            plain = RawPhone(server)
            try:
                assert plain.register("user0", user_agent=b"Desk").startswith(b"SIP/2.0 200")
            finally:
                plain.close()
            store = SqlStore(db_url)
            try:
                wait_for(lambda: count(store, tables.location) == 2, 10.0, "both bindings stored")
            finally:
                store.close()
            assert server.stop(signal.SIGTERM, timeout=10.0) == 0, server.log()[-3000:]
        finally:
            phone.close()
    log = server.log()
    assert "were not stored" not in log and "dead letter" not in log and "flush of" not in log, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
