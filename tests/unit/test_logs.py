"""Logging: the per-message trace lines, the level filter, text and JSON output, the stdlib bridge."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, cast

import pytest
from twisted.logger import ILogObserver, Logger, LogLevel, PredicateResult, globalLogPublisher

from scaserver.config.schema import LogLevelName, LogSettings
from scaserver.logs import (
    DnsClientChatter,
    MessageSummary,
    MessageTrace,
    StdlibBridge,
    make_observer,
    summarize,
)
from scaserver.sip.message import Peer, Transport
from tests.unit.edge.doubles import LogCapture

INVITE = (
    b"INVITE sip:2001@demo.scaserver.test SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-1\r\n"
    b"i: abc@192.0.2.10\r\n"
    b"CSeq: 7 INVITE\r\n"
    b"Content-Length: 4\r\n\r\nv=0\n"
)
RINGING = b"SIP/2.0 180 Ringing\r\nCall-ID: abc@192.0.2.10\r\nCSeq: 7 INVITE\r\n\r\n"
PEER = Peer(Transport.UDP, "192.0.2.10", 5060)


@pytest.mark.parametrize(
    ("data", "summary"),
    [
        (INVITE, MessageSummary("INVITE", "abc@192.0.2.10", "7 INVITE")),
        (RINGING, MessageSummary("180 Ringing", "abc@192.0.2.10", "7 INVITE")),
        (b"garbage", MessageSummary("garbage", "-", "-")),
        (b"", MessageSummary("-", "-", "-")),
        (b"\xff\xfe OPTIONS\r\n\r\n", MessageSummary("\ufffd\ufffd", "-", "-")),
    ],
)
def test_summarize(data: bytes, summary: MessageSummary) -> None:
    assert summarize(data) == summary


def test_trace_writes_one_info_line_and_the_full_text_at_debug() -> None:
    capture = LogCapture()
    trace = MessageTrace()
    trace.log = capture.logger("scaserver.trace")
    trace("in", INVITE, PEER)
    trace("out", RINGING, PEER)
    assert capture.levels() == ["info", "debug", "info", "debug"]
    texts = capture.texts()
    assert (
        texts[0]
        == f"in <- udp:192.0.2.10:5060 INVITE Call-ID=abc@192.0.2.10 CSeq=7 INVITE ({len(INVITE)} bytes)"
    )
    assert texts[1] == "in <- udp:192.0.2.10:5060 (verbatim):\n" + INVITE.decode()
    assert texts[2] == (
        f"out -> udp:192.0.2.10:5060 180 Ringing Call-ID=abc@192.0.2.10 CSeq=7 INVITE ({len(RINGING)} bytes)"
    )
    assert capture.events[0]["call_id"] == "abc@192.0.2.10"
    assert capture.events[0]["direction"] == "in"


def test_trace_lines_use_the_trace_namespace() -> None:
    assert MessageTrace().log.namespace == "scaserver.trace"


def test_trace_says_when_it_starts_that_it_shows_messages_verbatim() -> None:
    events: list[dict[str, object]] = []
    observer = cast(ILogObserver, events.append)
    globalLogPublisher.addObserver(observer)
    try:
        MessageTrace()
    finally:
        globalLogPublisher.removeObserver(observer)
    (started,) = [e for e in events if e.get("log_namespace") == "scaserver.trace"]
    assert started["log_level"] is LogLevel.warn
    assert "verbatim" in str(started["log_format"])
    assert "credentials and push tokens included" in str(started["log_format"])


def emit_all(settings: LogSettings) -> str:
    stream = io.StringIO()
    log = Logger(namespace="scaserver.test", observer=cast(ILogObserver, make_observer(settings, stream)))
    log.debug("debug {n}", n=1)
    log.info("info {n}", n=2)
    log.warn("warn {n}", n=3)
    return stream.getvalue()


def test_text_observer_filters_below_the_level() -> None:
    lines = emit_all(LogSettings(level=LogLevelName.INFO)).splitlines()
    assert [line.split("] ", 1)[1] for line in lines] == ["info 2", "warn 3"]
    assert "[scaserver.test#info]" in lines[0]


def test_json_observer_writes_one_object_per_line_with_the_fields() -> None:
    output = emit_all(LogSettings(level=LogLevelName.DEBUG, json=True))
    assert "\x1e" not in output and output.endswith("\n")
    records = [json.loads(line) for line in output.splitlines()]
    assert [record["n"] for record in records] == [1, 2, 3]
    assert [record["level"] for record in records] == ["debug", "info", "warn"]
    assert [record["message"] for record in records] == ["debug 1", "info 2", "warn 3"]
    assert records[1]["namespace"] == "scaserver.test"
    assert datetime.fromisoformat(records[1]["time"]).utcoffset() == timedelta(0)
    assert not any(key.startswith("log_") for record in records for key in record)


def json_records(emit: Callable[[Logger], None]) -> list[dict[str, Any]]:
    stream = io.StringIO()
    settings = LogSettings(level=LogLevelName.DEBUG, json=True)
    emit(Logger(namespace="scaserver.test", observer=cast(ILogObserver, make_observer(settings, stream))))
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_failure_carries_the_traceback_as_a_field() -> None:
    def emit(log: Logger) -> None:
        try:
            raise ValueError("bad\nthing")
        except ValueError:
            log.failure("handler of {method} failed", method="INVITE")

    (record,) = json_records(emit)
    assert record["level"] == "critical" and record["message"] == "handler of INVITE failed"
    assert record["error_type"] == "ValueError" and record["error"] == "bad\nthing"
    assert "Traceback" in record["traceback"] and 'raise ValueError("bad\\nthing")' in record["traceback"]
    assert record["method"] == "INVITE"


def test_json_fields_that_json_cannot_write_and_clashing_names() -> None:
    def emit(log: Logger) -> None:
        fields = {"data": b"\xff\r\n", "peer": ("127.0.0.1", 5060), "namespace": object(), "time": 1}
        log.info("{data!r} {peer} {namespace}", **fields)

    (record,) = json_records(emit)
    assert record["data"] == "\ufffd\r\n" and record["peer"] == ["127.0.0.1", 5060]
    assert record["namespace"] == "scaserver.test" and record["field_namespace"].startswith("<object")
    assert record["field_time"] == 1


def test_json_unformattable_event_still_one_line() -> None:
    (record,) = json_records(lambda log: log.info("{missing} {", present=1))
    assert "Unable to format event" in record["message"] and record["present"] == 1


def test_stdlib_records_are_reemitted_with_the_logger_name(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, str, str]] = []

    def emit(self: Logger, level: LogLevel, format: str | None = None, **kwargs: object) -> None:
        seen.append((self.namespace, level.name, str(kwargs["text"])))

    monkeypatch.setattr(Logger, "emit", emit)
    bridge = StdlibBridge.install(LogLevel.info, names=["alembic.runtime"])
    stdlib = logging.getLogger("alembic.runtime")
    try:
        stdlib.debug("hidden %s", 1)
        stdlib.info("Running upgrade %s -> %s", "base", "0001")
        stdlib.warning("careful")
        stdlib.error("failed: %s", "disk full")
    finally:
        stdlib.removeHandler(bridge)
    assert seen == [
        ("alembic.runtime", "info", "Running upgrade base -> 0001"),
        ("alembic.runtime", "warn", "careful"),
        ("alembic.runtime", "error", "failed: disk full"),
    ]


def test_the_dns_clients_per_query_port_lines_are_dropped_but_other_ports_closing_are_not() -> None:
    chatter = DnsClientChatter()

    def legacy(text: str) -> dict[str, object]:
        return {"log_namespace": "log_legacy", "log_format": "{log_text}", "log_text": text}

    assert chatter(legacy("DNSDatagramProtocol starting on 40001")) is PredicateResult.no
    assert chatter(legacy("Starting protocol <twisted.names.dns.DNSDatagramProtocol object at 0x1>")) is (
        PredicateResult.no
    )
    assert chatter(legacy("Stopping protocol <twisted.names.dns.DNSDatagramProtocol object at 0x1>")) is (
        PredicateResult.no
    )
    assert chatter(legacy("(UDP Port 40001 Closed)")) is PredicateResult.no
    assert chatter(legacy("(UDP Port 5060 Closed)")) is PredicateResult.maybe  # a SIP port
    assert chatter(legacy("UdpTransport starting on 5060")) is PredicateResult.maybe
    assert chatter({"log_namespace": "scaserver", "log_format": "DNSDatagramProtocol starting on 1"}) is (
        PredicateResult.maybe
    )
