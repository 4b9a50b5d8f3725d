"""contrib/fail2ban/scaserver.conf matches the security lines the server writes, and nothing
else: the lines come from the real log observer fed by :class:`FactLog`."""

from __future__ import annotations

import configparser
import io
import re
import shutil
import subprocess
from pathlib import Path
from typing import cast

import pytest
from twisted.logger import ILogObserver, globalLogPublisher, textFileLogObserver

from scaserver.edge.factlog import FactLog
from scaserver.events import EventBus
from scaserver.guard.sources import Ban, BanReason
from scaserver.router.authentication import AuthenticationRejected
from scaserver.sip.digest import RejectCause
from scaserver.sip.message import Peer, Transport

FILTER = Path(__file__).resolve().parents[2] / "contrib" / "fail2ban" / "scaserver.conf"
GUESSER = Peer(Transport.UDP, "192.0.2.66", 5070)
PHONE = Peer(Transport.UDP, "192.0.2.10", 5060)


def log_lines(*facts: object) -> list[str]:
    """What the server's text log observer writes for ``facts`` published on the bus."""
    stream = io.StringIO()
    observer = cast(ILogObserver, textFileLogObserver(stream))
    globalLogPublisher.addObserver(observer)
    try:
        bus = EventBus()
        FactLog().attach(bus)
        for fact in facts:
            bus.publish(fact)
    finally:
        globalLogPublisher.removeObserver(observer)
    return [line for line in stream.getvalue().splitlines() if "[scaserver.edge.factlog.FactLog#" in line]


def rejected(cause: RejectCause, peer: Peer = GUESSER, user: str | None = "alice") -> AuthenticationRejected:
    return AuthenticationRejected(peer, "REGISTER", 401, False, cause, user, "example.test")


def failregexes() -> list[re.Pattern[str]]:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(FILTER)
    lines = [line.strip() for line in parser["Definition"]["failregex"].splitlines() if line.strip()]
    # fail2ban's <HOST> and its date handling: the pattern is applied after the time stamp.
    return [re.compile(line.replace("<HOST>", r"(?P<host>\S+)")) for line in lines]


def hosts_found(lines: list[str]) -> list[str]:
    found = []
    for line in lines:
        rest = line.split(" ", 1)[1]  # the time stamp, which fail2ban's datepattern takes off
        for pattern in failregexes():
            match = pattern.search(rest)
            if match:
                found.append(match["host"])
                break
    return found


FAILURES = [RejectCause.WRONG_PASSWORD, RejectCause.UNKNOWN_USER, RejectCause.REPLAY, RejectCause.MALFORMED]


def test_the_security_line_names_source_user_realm_and_reason() -> None:
    [line] = log_lines(rejected(RejectCause.WRONG_PASSWORD))
    assert line.endswith(
        "[scaserver.edge.factlog.FactLog#warn] security: auth failure source=192.0.2.66 user=alice"
        " realm=example.test reason=wrong-password method=REGISTER status=401"
    )


def test_the_filter_matches_every_failure_and_ban_line() -> None:
    ban = Ban(GUESSER.host, BanReason.AUTH, 0.0, 60.0)
    lines = log_lines(*(rejected(cause) for cause in FAILURES), ban)
    assert hosts_found(lines) == [GUESSER.host] * 5


def test_the_filter_ignores_first_challenges_and_stale_nonces() -> None:
    lines = log_lines(rejected(RejectCause.CHALLENGE, PHONE, None), rejected(RejectCause.STALE, PHONE))
    assert len(lines) == 2
    assert hosts_found(lines) == []


def test_a_username_cannot_forge_the_source() -> None:
    lines = log_lines(rejected(RejectCause.WRONG_PASSWORD, user="x source=198.51.100.1 user=y"))
    assert hosts_found(lines) == [GUESSER.host]
    assert "user=x\\x20source=198.51.100.1" in lines[0]


@pytest.mark.skipif(shutil.which("fail2ban-regex") is None, reason="fail2ban (Debian) is not installed")
def test_fail2ban_regex_counts_the_failures(tmp_path: Path) -> None:
    lines = log_lines(
        rejected(RejectCause.CHALLENGE, PHONE, None),
        *(rejected(cause) for cause in FAILURES),
        rejected(RejectCause.STALE, PHONE),
        Ban(GUESSER.host, BanReason.AUTH, 0.0, 60.0),
    )
    log = tmp_path / "scaserver.log"
    log.write_text("\n".join(lines) + "\n")
    result = subprocess.run(
        ["fail2ban-regex", "--print-all-matched", str(log), str(FILTER)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert re.search(r"Lines: 7 lines, 0 ignored, 5 matched, 2 missed", result.stdout), result.stdout
    assert "192.0.2.10" not in result.stdout.split("Lines:")[0]
