"""Logging: twisted.logger observers, a level filter, the stdlib bridge and the message trace.

* :func:`start_logging` installs one observer on the global log beginner: text
  lines (the default) or JSON lines (``[log] json = true`` / ``--log-json``),
  on stderr, filtered by the configured minimum level.
* :func:`json_line` is the JSON form of one event: one object per line (no record
  separator), with ``time`` (ISO-8601, UTC), ``level``, ``namespace``, ``message`` (the
  rendered text) and the event's own fields; a failure adds ``error_type``, ``error`` and
  ``traceback``.  Every line is ``json.loads``-able.
* :class:`StdlibBridge` forwards records of the stdlib :mod:`logging` package
  (Alembic, SQLAlchemy) into twisted.logger, with the logger name as namespace.
* :class:`MessageTrace` is the per-message trace switch (``[sip] trace``): one
  info line per SIP message read or written (direction, method or status,
  Call-ID, CSeq, peer), and the full message text at debug level.  The stack
  calls it with the raw bytes; it reads only the start line and two headers,
  so a message the parser would reject is traced too.  The trace is the one
  place where messages are logged verbatim, credentials (Authorization) and
  push tokens included: it says so when it starts and on every message line.
  Every other log line masks push tokens (``push.pnparams.masked_pn_params``)
  and never shows a password, an HA1, a digest response or a bearer token.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import IO, Final, cast

import attrs
from twisted.logger import (
    FileLogObserver,
    FilteringLogObserver,
    ILogFilterPredicate,
    ILogObserver,
    LogBeginner,
    LogEvent,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    PredicateResult,
    formatEvent,
    globalLogBeginner,
    textFileLogObserver,
)
from twisted.python.failure import Failure

from scaserver.config.schema import LogLevelName, LogSettings
from scaserver.edge.stack import Direction
from scaserver.sip.message import Peer, canonical_name

LEVELS: Final[dict[LogLevelName, LogLevel]] = {
    LogLevelName.DEBUG: LogLevel.debug,
    LogLevelName.INFO: LogLevel.info,
    LogLevelName.WARN: LogLevel.warn,
    LogLevelName.ERROR: LogLevel.error,
    LogLevelName.CRITICAL: LogLevel.critical,
}

_STDLIB_LEVELS: Final[tuple[tuple[int, LogLevel], ...]] = (
    (logging.CRITICAL, LogLevel.critical),
    (logging.ERROR, LogLevel.error),
    (logging.WARNING, LogLevel.warn),
    (logging.INFO, LogLevel.info),
)

_STDLIB_THRESHOLDS: Final[dict[LogLevel, int]] = {
    LogLevel.debug: logging.DEBUG,
    LogLevel.info: logging.INFO,
    LogLevel.warn: logging.WARNING,
    LogLevel.error: logging.ERROR,
    LogLevel.critical: logging.CRITICAL,
}


_BASE_KEYS: Final = ("time", "level", "namespace", "message")
_FAILURE_KEYS: Final = ("error_type", "error", "traceback")
#: What events of twisted.python.log (``Site starting on 8080``) carry besides their text.
_LEGACY_KEYS: Final = frozenset({"message", "time", "format", "isError", "system", "why", "failure"})


def _json_value(value: object) -> object:
    """What ``json.dumps`` cannot write itself: bytes as text, anything else as ``str()``."""
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def json_line(event: LogEvent) -> str:
    """One event as one line of JSON (see the module docstring)."""
    level = event.get("log_level")
    when = datetime.fromtimestamp(float(event.get("log_time", 0.0)), UTC)
    record: dict[str, object] = {
        "time": when.isoformat(timespec="microseconds"),
        "level": str(getattr(level, "name", level)),  # a LogLevel constant: "info", "warn"
        "namespace": str(event.get("log_namespace", "")),
        "message": formatEvent(event),
    }
    failure = event.get("log_failure")
    if isinstance(failure, Failure):
        record["error_type"] = failure.type.__name__ if failure.type is not None else "error"
        record["error"] = failure.getErrorMessage()
        record["traceback"] = failure.getTraceback()
    legacy = event.get("log_namespace") == "log_legacy"
    for key, value in event.items():
        if key.startswith(("log_", "_")) or (legacy and key in _LEGACY_KEYS):
            continue
        name = f"field_{key}" if key in _BASE_KEYS or key in _FAILURE_KEYS else key
        record[name] = value
    # ASCII: undecodable peer bytes (lone surrogates) and control characters are escaped.
    return json.dumps(record, default=_json_value) + "\n"


def make_observer(settings: LogSettings, stream: IO[str]) -> FilteringLogObserver:
    """The filtered text or JSON observer writing to ``stream``."""
    # The casts state what zope.interface declares (the classes implement these interfaces).
    base = cast(
        ILogObserver, FileLogObserver(stream, json_line) if settings.json else textFileLogObserver(stream)
    )
    predicate = cast(ILogFilterPredicate, LogLevelFilterPredicate(defaultLogLevel=LEVELS[settings.level]))
    quiet = (
        cast(ILogFilterPredicate, DnsClientChatter()) if settings.level is not LogLevelName.DEBUG else None
    )
    return FilteringLogObserver(base, [predicate] if quiet is None else [predicate, quiet])


class DnsClientChatter:
    """Drops the five legacy lines ``twisted.names``' client writes per DNS query (it binds a
    UDP port per query: "starting on", "Starting protocol", "Stopping protocol", "Closed");
    the locator logs what matters.  Shown at debug level."""

    _OPENED = re.compile(r"^DNSDatagramProtocol starting on (\d+)$")
    _PROTOCOL = re.compile(r"^(Starting|Stopping) protocol <twisted\.names\.dns\.DNSDatagramProtocol ")
    _CLOSED = re.compile(r"^\(UDP Port (\d+) Closed\)$")

    def __init__(self) -> None:
        self._ports: set[str] = set()

    def __call__(self, event: LogEvent) -> object:  # a PredicateResult constant (untyped)
        if event.get("log_namespace") != "log_legacy":
            return PredicateResult.maybe
        text = formatEvent(event)
        if (opened := self._OPENED.match(text)) is not None:
            if len(self._ports) < 10000:
                self._ports.add(opened.group(1))
            return PredicateResult.no
        if self._PROTOCOL.match(text) is not None:
            return PredicateResult.no
        if (closed := self._CLOSED.match(text)) is not None and closed.group(1) in self._ports:
            self._ports.discard(closed.group(1))
            return PredicateResult.no
        return PredicateResult.maybe


def start_logging(
    settings: LogSettings,
    *,
    stream: IO[str] | None = None,
    beginner: LogBeginner = globalLogBeginner,
) -> FilteringLogObserver:
    """Begin logging to ``stream`` (stderr) and bridge the stdlib loggers; returns the observer."""
    observer = make_observer(settings, stream if stream is not None else sys.stderr)
    beginner.beginLoggingTo([cast(ILogObserver, observer)], redirectStandardIO=False)
    StdlibBridge.install(LEVELS[settings.level])
    return observer


class StdlibBridge(logging.Handler):
    """A stdlib handler that re-emits records as twisted.logger events (namespace = logger name)."""

    def emit(self, record: logging.LogRecord) -> None:
        level = next((level for number, level in _STDLIB_LEVELS if record.levelno >= number), LogLevel.debug)
        try:
            text = record.getMessage()
        except (TypeError, ValueError):
            text = str(record.msg)
        Logger(namespace=record.name).emit(level, "{text}", text=text)

    @classmethod
    def install(cls, level: LogLevel, names: Iterable[str] = ("",)) -> StdlibBridge:
        """Attach one bridge to the named stdlib loggers (the root logger by default)."""
        bridge = cls(level=_STDLIB_THRESHOLDS[level])
        for name in names:
            target = logging.getLogger(name)
            for handler in [h for h in target.handlers if isinstance(h, StdlibBridge)]:
                target.removeHandler(handler)
            target.addHandler(bridge)
            target.setLevel(_STDLIB_THRESHOLDS[level])
        return bridge


@attrs.frozen
class MessageSummary:
    """What the trace line says about one message."""

    kind: str  # the method of a request, or "<status> <reason>" of a response
    call_id: str
    cseq: str


_SCAN_LIMIT: Final = 8192  # the trace reads headers from the first 8 KiB only


def summarize(data: bytes) -> MessageSummary:
    """Start line, Call-ID and CSeq read from raw bytes (``-`` where absent or unreadable)."""
    head = data[:_SCAN_LIMIT].split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    lines = head.split("\r\n")
    first = lines[0].strip()
    if first.startswith("SIP/"):
        kind = first.split(" ", 1)[1] if " " in first else first
    elif " " in first:
        kind = first.split(" ", 1)[0]
    else:
        kind = first[:32] or "-"
    wanted = {"Call-ID": "-", "CSeq": "-"}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon:
            continue
        canonical = canonical_name(name.strip())
        if canonical in wanted and wanted[canonical] == "-":
            wanted[canonical] = value.strip()
    return MessageSummary(kind, wanted["Call-ID"], wanted["CSeq"])


class MessageTrace:
    """The trace switch's observer of every message in and out (``SipStack(trace=...)``)."""

    def __init__(self) -> None:
        # An instance attribute: a Logger on the class would take the class's namespace.
        self.log = Logger(namespace="scaserver.trace")
        self.log.warn(
            "SIP message trace is on: every message is logged verbatim at debug level, "
            "credentials and push tokens included"
        )

    def __call__(self, direction: Direction, data: bytes, peer: Peer) -> None:
        summary = summarize(data)
        arrow = "<-" if direction == "in" else "->"
        self.log.info(
            "{direction} {arrow} {peer} {kind} Call-ID={call_id} CSeq={cseq} ({size} bytes)",
            direction=direction,
            arrow=arrow,
            peer=str(peer),
            kind=summary.kind,
            call_id=summary.call_id,
            cseq=summary.cseq,
            size=len(data),
        )
        self.log.debug(
            "{direction} {arrow} {peer} (verbatim):\n{text}",
            direction=direction,
            arrow=arrow,
            peer=str(peer),
            text=data.decode("utf-8", "replace"),
        )
