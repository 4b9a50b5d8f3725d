"""The RFC 4475 torture corpus over the wire, against the real server process.

Each message is one UDP datagram to the server.  Responses go where the top Via says
(RFC 3261 18.2.2 with ``received``), so each message is sent from 127.0.0.2 on the port
its top Via names (5060 when none): that is where its answer comes back.  Afterwards the
server must still answer, and its log must hold no traceback.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from tests.conformance.corpus import corpus_dir
from tests.conformance.test_rfc4475_server import EXPECTED
from tests.system.server import options_request, running_server, udp_exchange

pytestmark = pytest.mark.system

CONFIG = '[server]\ndomains = ["example.com"]\n'
SENDER = "127.0.0.2"
_VIA_LINE = re.compile(rb"^(?:Via|v)[ \t]*:(.*)$", re.IGNORECASE | re.MULTILINE)
_CSEQ = re.compile(rb"^CSeq[ \t]*:(.*)$", re.IGNORECASE | re.MULTILINE)
_CALL_ID = re.compile(rb"^(?:Call-ID|i)[ \t]*:(.*)$", re.IGNORECASE | re.MULTILINE)
_VIA_PORT = re.compile(
    rb"^(?:Via|v)\s*:\s*SIP\s*/\s*2\.0\s*/\s*(\w+)\s+[^\s;:,]+(?::(\d+))?", re.IGNORECASE | re.MULTILINE
)


def reply_port(data: bytes) -> int:
    """The top Via's port, or its transport's default (5061 for TLS, RFC 3261 18.2.2)."""
    found = _VIA_PORT.search(data)
    if found is None:
        return 5060
    if found.group(2):
        return int(found.group(2))
    return 5061 if found.group(1).upper() == b"TLS" else 5060


def call_id(data: bytes) -> bytes | None:
    found = _CALL_ID.search(data.split(b"\r\n\r\n", 1)[0])
    return found.group(1).strip() if found else None


def exchange(server_port: int, data: bytes) -> bytes | None:
    """Send ``data``; the answer to it (same Call-ID), skipping retransmitted answers to
    earlier messages (their INVITE transactions resend until timer H), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((SENDER, reply_port(data)))
        sock.settimeout(0.5)
        sock.sendto(data, ("127.0.0.1", server_port))
        wanted = call_id(data)
        for _ in range(20):
            try:
                reply = sock.recv(65535)
            except TimeoutError:
                return None
            if call_id(reply) == wanted:
                return reply
        return None


def transaction_of(data: bytes) -> bytes:
    """What identifies the message's server transaction (top Via branch and sent-by, CSeq
    method: RFC 3261 17.2.3); messages of the corpus that share it would be retransmissions
    of one another, so each goes to a server that has not seen the other."""
    head = data.split(b"\r\n\r\n", 1)[0]
    via = _VIA_LINE.search(head)
    cseq = _CSEQ.search(head)
    return (via.group(1).strip() if via else b"") + b"|" + (cseq.group(1).split()[-1] if cseq else b"")


def test_every_torture_message_gets_its_answer_and_the_server_survives(tmp_path: Path) -> None:
    corpus = corpus_dir("rfc4475")
    rounds: list[list[str]] = []
    for name in sorted(EXPECTED):
        key = transaction_of((corpus / name).read_bytes())
        for batch in rounds:
            if all(transaction_of((corpus / other).read_bytes()) != key for other in batch):
                batch.append(name)
                break
        else:
            rounds.append([name])
    got: dict[str, int | None] = {}
    for number, batch in enumerate(rounds):
        with running_server(tmp_path / f"server{number}", CONFIG) as server:
            for name in batch:
                reply = exchange(server.sip_port, (corpus / name).read_bytes())
                got[name] = None if reply is None else int(reply.split(b" ", 2)[1])
            for extra in sorted((corpus / "extra").glob("*.dat")):
                exchange(server.sip_port, extra.read_bytes())
            answer = udp_exchange(server.sip_port, options_request(server.sip_port))
            assert answer is not None and answer.startswith(b"SIP/2.0 200 ")
            assert server.process.poll() is None
            assert "Traceback" not in server.log()
    assert got == {name: statuses[0] for name, statuses in EXPECTED.items()}
