"""Calls through the registrar and stateful forking proxy, between real user agents (SIPp),
with digest authentication, over UDP and TCP, on SQLite and PostgreSQL.

Issue: two UAs register with digest auth and call each other (INVITE, 180, 200, ACK,
re-INVITE, BYE, and CANCEL before answer); a UA with a wrong password is refused, and the
replies for a wrong password and an unknown user are byte-identical apart from nonce and
tags; an AoR with two contacts rings both, the first 200 wins and the other branch gets
CANCEL.
"""

from __future__ import annotations

import hashlib
import re
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import attrs
import pytest

from tests.conftest import pg_schema
from tests.system.accounts import CONFIG, DOMAIN, add_subscribers, location_rows
from tests.system.server import RunningServer, free_port, running_server
from tests.system.sipp import register, require_ok, start_callee, start_caller

# One server per database for the module: its tests stay in one pytest-xdist worker.
pytestmark = [pytest.mark.system, pytest.mark.xdist_group("calls")]

TRANSPORTS = ["udp", "tcp"]
ALICE = ("alice", "alice-secret")
CAROL = ("carol", "carol-secret")
POOL = [(f"user{index:02}", f"secret-{index:02}") for index in range(24)]
"""Subscribers handed out one per use, so no test calls a contact another test left behind."""


@attrs.define
class Deployment:
    """One server for the module (UDP and TCP on one port) and its unused subscribers."""

    server: RunningServer
    fresh: Iterator[tuple[str, str]]

    def user(self) -> tuple[str, str]:
        return next(self.fresh)


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def deployment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    """The server on a database of its own: a SQLite file, then a PostgreSQL schema."""
    workdir = tmp_path_factory.mktemp(f"calls-{request.param}")
    with module_database(request, workdir) as db_url:
        add_subscribers(db_url, [ALICE, CAROL, *POOL])
        with running_server(workdir / "server", CONFIG, db_url=db_url) as running:
            yield Deployment(running, iter(POOL))


@contextmanager
def module_database(request: pytest.FixtureRequest, workdir: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{workdir / 'scaserver.db'}"
        return
    database: str = request.getfixturevalue("pg_database")
    with pg_schema(database, "calls") as url:
        yield url


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_registered_users_call_each_other_with_reinvite_and_bye(
    deployment: Deployment, tmp_path: Path, transport: str
) -> None:
    server, one, other = deployment.server, deployment.user(), deployment.user()
    one_port, other_port = free_port(), free_port()
    require_ok(server, register(server, tmp_path, *one, transport=transport, port=one_port))
    require_ok(server, register(server, tmp_path, *other, transport=transport, port=other_port))
    callee = start_callee("uas-answer.xml", server, tmp_path, other_port, transport=transport)
    caller = start_caller("uac-call.xml", server, tmp_path, one, other[0], transport=transport)
    require_ok(server, caller.wait(), callee.wait())

    # And back: the callee calls the caller at their registered contact.
    callee = start_callee("uas-answer.xml", server, tmp_path, one_port, transport=transport)
    caller = start_caller("uac-call.xml", server, tmp_path, other, one[0], transport=transport)
    require_ok(server, caller.wait(), callee.wait())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_cancel_before_answer_reaches_the_ringing_callee(
    deployment: Deployment, tmp_path: Path, transport: str
) -> None:
    server, bob, port = deployment.server, deployment.user(), free_port()
    require_ok(server, register(server, tmp_path, *bob, transport=transport, port=port))
    callee = start_callee("uas-ring-cancelled.xml", server, tmp_path, port, transport=transport)
    caller = start_caller("uac-cancel.xml", server, tmp_path, ALICE, bob[0], transport=transport)
    require_ok(server, caller.wait(), callee.wait())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_forked_call_first_200_wins_and_the_other_branch_is_cancelled(
    deployment: Deployment, tmp_path: Path, transport: str
) -> None:
    server, bob = deployment.server, deployment.user()
    answering, ringing = free_port(), free_port()
    for port in (answering, ringing):
        require_ok(server, register(server, tmp_path, *bob, transport=transport, port=port))
    callee_a = start_callee(
        "uas-answer.xml", server, tmp_path, answering, transport=transport, answer_delay_ms=700
    )
    callee_b = start_callee("uas-ring-cancelled.xml", server, tmp_path, ringing, transport=transport)
    caller = start_caller("uac-call.xml", server, tmp_path, ALICE, bob[0], transport=transport)
    require_ok(server, caller.wait(), callee_a.wait(), callee_b.wait())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_wrong_password_is_refused(deployment: Deployment, tmp_path: Path, transport: str) -> None:
    server = deployment.server
    refused = register(server, tmp_path, "carol", "not-carols-password", transport=transport)
    assert not refused.ok
    # The second REGISTER, with credentials, got a 401 again instead of the 200 expected.
    assert re.search(r"received 'SIP/2\.0 401 Unauthorized.*?CSeq: 2 REGISTER", refused.output, re.S), (
        refused.report()
    )
    time.sleep(1.0)  # two write-behind flushes: a binding, had there been one, would be stored
    assert not [row for row in location_rows(server.db_url) if "carol" in row[0]]


# ------------------------------------------------------------------ byte-identical refusals


def _digest(username: str, password: str, nonce: str, uri: str) -> str:
    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    cnonce, nc = "0a4f113b", "00000001"
    response = md5(
        f"{md5(f'{username}:{DOMAIN}:{password}')}:{nonce}:{nc}:{cnonce}:auth:{md5(f'REGISTER:{uri}')}"
    )
    return (
        f'Digest username="{username}", realm="{DOMAIN}", nonce="{nonce}", uri="{uri}", '
        f'response="{response}", algorithm=MD5, qop=auth, nc={nc}, cnonce="{cnonce}"'
    )


class RawPhone:
    """A hand-written SIP client on one UDP socket or TCP connection."""

    def __init__(self, server: RunningServer, transport: str) -> None:
        self.transport = transport
        kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
        self.sock = socket.socket(socket.AF_INET, kind)
        self.sock.settimeout(5)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.connect(("127.0.0.1", server.sip_port))
        self.port: int = self.sock.getsockname()[1]
        self.buffer = b""

    def close(self) -> None:
        self.sock.close()

    def register(self, call_id: str, cseq: int, authorization: str | None = None) -> bytes:
        uri = f"sip:{DOMAIN}"
        branch = f"z9hG4bK{uuid.uuid4().hex}"
        lines = [
            f"REGISTER {uri} SIP/2.0",
            f"Via: SIP/2.0/{self.transport.upper()} 127.0.0.1:{self.port};branch={branch};rport",
            f"From: <sip:alice@{DOMAIN}>;tag=probe1",
            f"To: <sip:alice@{DOMAIN}>",
            f"Call-ID: {call_id}",
            f"CSeq: {cseq} REGISTER",
            f"Contact: <sip:alice@127.0.0.1:{self.port}>",
            "Max-Forwards: 70",
            "Expires: 600",
        ]
        if authorization:
            lines.append(f"Authorization: {authorization}")
        self.sock.sendall(("\r\n".join([*lines, "Content-Length: 0", "", ""])).encode())
        return self._response()

    def _response(self) -> bytes:
        if self.transport == "udp":
            return self.sock.recv(65535)
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self.sock.recv(65535)
        head, _, rest = self.buffer.partition(b"\r\n\r\n")
        match = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        assert match is not None, head
        length = int(match.group(1))
        while len(rest) < length:
            rest += self.sock.recv(65535)
        self.buffer = rest[length:]
        return head + b"\r\n\r\n" + rest[:length]


def _nonce(response: bytes) -> str:
    match = re.search(rb'nonce="([^"]+)"', response)
    assert match is not None, response
    return match.group(1).decode()


def _without_nonce_and_tags(response: bytes) -> bytes:
    """The response with what may differ blanked: nonces, To tags, and the Via branch we sent."""
    response = re.sub(rb'nonce="[^"]*"', b'nonce="*"', response)
    response = re.sub(rb"(?m)^(To:.*;tag=)[^;\r\n]*", rb"\1*", response)
    return re.sub(rb"branch=[^;,\r\n]*", b"branch=*", response)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_wrong_password_and_unknown_user_get_identical_replies(
    deployment: Deployment, transport: str
) -> None:
    phone = RawPhone(deployment.server, transport)
    try:
        call_id = uuid.uuid4().hex
        challenge = phone.register(call_id, 1)
        assert challenge.startswith(b"SIP/2.0 401 "), challenge
        uri = f"sip:{DOMAIN}"
        wrong_password = phone.register(call_id, 2, _digest("alice", "guess", _nonce(challenge), uri))
        challenge = phone.register(call_id, 3, None)
        unknown_user = phone.register(call_id, 4, _digest("mallory", "guess", _nonce(challenge), uri))
    finally:
        phone.close()
    assert wrong_password.split(b"\r\n", 1)[0] in (b"SIP/2.0 401 Unauthorized", b"SIP/2.0 403 Forbidden")
    normalized_wrong = _without_nonce_and_tags(wrong_password).replace(b"CSeq: 2 ", b"CSeq: N ")
    normalized_unknown = _without_nonce_and_tags(unknown_user).replace(b"CSeq: 4 ", b"CSeq: N ")
    assert normalized_wrong == normalized_unknown
    assert b"mallory" not in unknown_user
