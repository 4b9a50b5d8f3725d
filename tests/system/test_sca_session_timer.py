"""Dead calls end by RFC 4028 session timer, end to end: the real scaserver process on
loopback as the session-timer proxy of a shared line's calls, members whose Contact users
are not the line's (baresip's ``2001-0x...``) refreshing their call-info subscriptions
in-dialog.

Cases: the INVITE of a member that supports ``timer`` reaches the callee with the server's
``Session-Expires`` and ``Min-SE``; a callee without session timers gets its 2xx relayed with
``Session-Expires: N;refresher=uac`` and ``Require: timer`` (RFC 4028 8.2); a caller
without ``timer`` gets nothing inserted; a call whose parties vanish without BYE is idled
for every member when its session interval passes without a refresh, and the reporting
history gives the cause ``session-expired``.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from scaserver.sip.message import Request, Response
from tests.system.handset import Handset, handsets, sdp
from tests.system.server import running_server
from tests.system.test_sca import CALLEE, all_idle, appearances, config, state_is
from tests.system.test_sca_lamps import causes, group, marks, party, seen

pytestmark = pytest.mark.system

TIMER = (("Supported", "replaces, timer"),)
INTERVAL = 90  # the smallest interval RFC 4028 allows; the session ends 60 s after the 2xx


def timer_config(session_expires: int = 1800) -> str:
    return config(extra=f"session_timers = true\nsession_expires = {session_expires}\nmin_se = 90")


def call(
    caller: Handset,
    callee: Handset,
    *,
    caller_extra: tuple[tuple[str, str], ...],
    answer_extra: tuple[tuple[str, str], ...],
) -> tuple[Request, Response]:
    """The caller calls the callee, which answers with ``answer_extra``; both ACKed.  The
    INVITE the callee got and the 2xx the caller got."""
    tx, dialog = caller.invite(CALLEE, extra=caller_extra)
    invite = callee.expect_request("INVITE")
    uas = callee.uas_dialog(invite)
    callee.respond(invite, 200, to_tag=uas.local_tag, body=sdp(callee.port), extra=answer_extra)
    ok = caller.wait_response(tx, lambda r: 200 <= r.status < 300)
    caller.established(dialog, ok)
    caller.ack(dialog, tx, ok)
    callee.expect_request("ACK")
    return invite, ok


def test_server_asks_for_a_session_timer_and_answers_it_for_a_callee_without_one(
    tmp_path: Path, db_url: str
) -> None:
    with (
        running_server(tmp_path / "server", timer_config(), db_url=db_url) as server,
        group(server, "a", "b") as (phones, _),
    ):
        a, _b = phones
        callee = party("callee", server)
        with handsets(callee):
            assert callee.register().status == 200
            since = marks(phones)
            invite, ok = call(a, callee, caller_extra=TIMER, answer_extra=())
            seen(phones, since, state_is(1, "active"))
            assert invite.headers.get("Session-Expires") == "1800"
            assert invite.headers.get("Min-SE") == "90"
            assert ok.headers.get("Session-Expires") == "1800;refresher=uac"
            assert "timer" in ok.headers.values("Require")


def test_caller_without_timer_gets_no_session_timer(tmp_path: Path, db_url: str) -> None:
    with (
        running_server(tmp_path / "server", timer_config(), db_url=db_url) as server,
        group(server, "a", "b") as (phones, _),
    ):
        a, _b = phones
        callee = party("callee", server)
        with handsets(callee):
            assert callee.register().status == 200
            invite, ok = call(a, callee, caller_extra=(("Supported", "replaces"),), answer_extra=())
            assert "Session-Expires" not in invite.headers
            assert "Session-Expires" not in ok.headers


@pytest.mark.timeout(150)
def test_call_whose_parties_vanish_is_idled_when_its_session_expires(tmp_path: Path, db_url: str) -> None:
    """The callee's 200 carries ``Session-Expires: 90;refresher=uac``; then caller and callee
    vanish without BYE nor refresh.  60 s after the 2xx (90 - min(32, 90/3), RFC 4028 section
    10) every member sees the line idle, and the history says ``session-expired``."""
    with (
        running_server(tmp_path / "server", timer_config(INTERVAL), db_url=db_url) as server,
        group(server, "a", "b") as (phones, _),
    ):
        a, _b = phones
        callee = party("callee", server)
        with handsets(callee):
            assert callee.register().status == 200
            since = marks(phones)
            answered = (("Session-Expires", f"{INTERVAL};refresher=uac"), ("Require", "timer"))
            invite, ok = call(a, callee, caller_extra=TIMER, answer_extra=answered)
            assert invite.headers.get("Session-Expires") == str(INTERVAL)
            assert ok.headers.get("Session-Expires") == f"{INTERVAL};refresher=uac"
            seen(phones, since, state_is(1, "active"))
        since = marks(phones)  # the callee is gone; the caller sends nothing more
        seen(phones, since, all_idle, timeout=75.0)
        assert appearances(server) == []
        assert server.stop(signal.SIGTERM) == 0
    assert ("active", "idle", "session-expired") in causes(db_url)
