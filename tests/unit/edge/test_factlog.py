"""The fact log subscribes only the handlers whose lines the configured level lets through:
at ``warn`` a registration or an appearance change costs no log record, and what is logged at
warn (drops, security lines) is still logged."""

from __future__ import annotations

import io
from typing import cast

from twisted.logger import ILogObserver, LogLevel, globalLogPublisher, textFileLogObserver

from scaserver.edge.factlog import FactLog
from scaserver.events import EventBus
from scaserver.registrar.binding import Binding, BindingAdded, BindingKey, KeyKind
from scaserver.router.authentication import AuthenticationRejected
from scaserver.sip.digest import RejectCause
from scaserver.sip.endpoint import MessageDropped, RequestRefused
from scaserver.sip.message import Peer, Transport

PHONE = Peer(Transport.UDP, "192.0.2.10", 5060)
ADDED = BindingAdded(
    Binding(
        BindingKey("sip:alice@example.com", KeyKind.URI, "sip:alice@192.0.2.10"),
        "sip:alice@192.0.2.10",
        3600.0,
        "call-1",
        1,
        PHONE,
    ),
    0.0,
)
DROPPED = MessageDropped(PHONE, "unparsable")


def lines(minimum: LogLevel, *facts: object) -> list[str]:
    stream = io.StringIO()
    observer = cast(ILogObserver, textFileLogObserver(stream))
    globalLogPublisher.addObserver(observer)
    try:
        bus = EventBus()
        FactLog(minimum).attach(bus)
        for fact in facts:
            bus.publish(fact)
    finally:
        globalLogPublisher.removeObserver(observer)
    return [line for line in stream.getvalue().splitlines() if "FactLog#" in line]


def test_at_info_a_new_binding_and_a_drop_are_both_logged() -> None:
    logged = lines(LogLevel.info, ADDED, DROPPED)
    assert any("binding added: sip:alice@example.com -> sip:alice@192.0.2.10" in line for line in logged)
    assert any("dropped: unparsable" in line for line in logged)


def test_at_warn_the_info_handlers_are_not_subscribed_and_warnings_still_are() -> None:
    logged = lines(LogLevel.warn, ADDED, DROPPED)
    assert not any("binding added" in line for line in logged)
    assert any("dropped: unparsable" in line for line in logged)


CHALLENGED = AuthenticationRejected(PHONE, "REGISTER", 401, False)
REFUSED_401 = RequestRefused("REGISTER", PHONE, 401, "digest-challenge", "digest credentials needed", "c1")
WRONG_PASSWORD = AuthenticationRejected(
    PHONE, "REGISTER", 401, False, RejectCause.WRONG_PASSWORD, "alice", "example.com"
)


def test_at_info_a_challenge_and_its_401_are_logged() -> None:
    logged = lines(LogLevel.info, CHALLENGED, REFUSED_401)
    assert any("REGISTER from" in line and "refused 401 (challenge, stale=False)" in line for line in logged)
    assert any(
        "refused 401 (digest-challenge): digest credentials needed call-id=c1" in line for line in logged
    )


def test_at_warn_a_challenge_and_its_401_log_nothing_and_an_auth_failure_still_does() -> None:
    logged = lines(LogLevel.warn, CHALLENGED, REFUSED_401, WRONG_PASSWORD)
    assert len(logged) == 1
    assert "security: auth failure source=" in logged[0]
    assert "user=alice realm=example.com reason=wrong-password method=REGISTER status=401" in logged[0]
