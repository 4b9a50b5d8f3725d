"""``--log-json``: every line the real server writes is one JSON object, through a normal
exchange, a malformed message, a refusal and the message trace."""

from __future__ import annotations

import json
import socket
import uuid
from datetime import datetime
from pathlib import Path

import pytest

from tests.system.server import options_request, running_server, udp_exchange

pytestmark = pytest.mark.system


def _register(port: int, user: str) -> bytes:
    return (
        f"REGISTER sip:example.test SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK{uuid.uuid4().hex};rport\r\n"
        f"From: <sip:{user}@example.test>;tag=1\r\nTo: <sip:{user}@example.test>\r\n"
        f"Call-ID: {uuid.uuid4().hex}\r\nCSeq: 1 REGISTER\r\nMax-Forwards: 70\r\n"
        f"Contact: <sip:{user}@127.0.0.1:9>\r\nExpires: 60\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def test_every_line_is_a_json_object(tmp_path: Path) -> None:
    with running_server(tmp_path, extra_args=("--log-json", "--log-level", "debug", "--trace")) as server:
        port = server.sip_port
        assert udp_exchange(port, options_request(port)) is not None
        refused = udp_exchange(port, _register(port, "nobody"))
        assert refused is not None and not refused.startswith(b"SIP/2.0 200")
        # Malformed: no Via/Call-ID, a bad start line, bytes that are not UTF-8.
        for junk in (b"INVITE sip:x SIP/2.0\r\nContent-Length: 0\r\n\r\n", b"\xff\xfe\x00garbage\r\n\r\n"):
            udp_exchange(port, junk, timeout=0.3)
        with socket.create_connection(("127.0.0.1", port), timeout=2) as tcp:
            tcp.sendall(b"NOT SIP AT ALL\r\nContent-Length: 99999999\r\n\r\n")
            assert tcp.recv(4096) == b""  # closed: framing lost
        assert udp_exchange(port, options_request(port)) is not None
        assert server.stop() == 0
    text = server.log()
    assert "\x1e" not in text
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        record = json.loads(line)  # any line that is not JSON fails here
        assert isinstance(record, dict), f"line {number}: {line}"
        assert {"time", "level", "namespace", "message"} <= record.keys(), f"line {number}: {line}"
        assert datetime.fromisoformat(record["time"]).tzinfo is not None
        records.append(record)
    levels = {record["level"] for record in records}
    assert {"debug", "info"} <= levels
    assert any(
        record["namespace"] == "scaserver.trace" and "REGISTER" in record["message"] for record in records
    )
    assert any("\r\n" in record["message"] for record in records)  # full message text, escaped
    assert any(record.get("status") == 401 and record.get("method") == "REGISTER" for record in records)
    drops = [record for record in records if record["level"] == "warn" and "reason" in record]
    assert len(drops) >= 3  # the two malformed datagrams and the TCP stream that lost framing
    assert not any(key.startswith("log_") for record in records for key in record)
    assert len(records) > 10
