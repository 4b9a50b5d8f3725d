"""No stuck lamp, end to end: the real scaserver process on loopback and simulated handsets
whose Contact users are not the line's (as baresip's ``2001-0x...``), which refresh and end
their call-info subscriptions in-dialog as phones do (sca.md O3/O4, O7, O8, O20, I3, Q18).

Cases: cancelled calls (more of them than the line has appearances); a seize whose
subscription ends (expiry, un-subscribe) between the INVITE and the first 18x; a restart with
calls still ringing, after SIGTERM and after kill -9 (a CANCEL and a late 2xx whose
transactions the restart lost, the early TTL of a call nobody ends, the stale-call sweep of a
call whose BYE never comes); a call to the line answered by a member whose Contact user is
not the line's, with ``alerting_state`` on.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import attrs
import pytest
import sqlalchemy

from scaserver.sip.message import Headers, Request
from scaserver.store.tables import appearance_events
from tests.system.handset import ClientTransaction, Dialog, Handset, Notify, handsets, sdp
from tests.system.server import RunningServer, running_server
from tests.system.test_sca import CALLEE, DOMAIN, LINE, all_idle, appearances, config, state_is

pytestmark = pytest.mark.system


def phone(name: str, server: RunningServer, n: int) -> Handset:
    """A member whose Contact user is ``2001-0x...`` (baresip's shape), not the line's ``2001``."""
    return Handset(name, ("127.0.0.1", server.sip_port), line=LINE, contact_user=f"2001-0x{n:08x}")


def party(name: str, server: RunningServer, user: str = "callee") -> Handset:
    return Handset(name, ("127.0.0.1", server.sip_port), line=f"sip:{user}@{DOMAIN}")


def join(phone_: Handset) -> Dialog:
    """REGISTER, SUBSCRIBE to call-info, wait for the full state, refresh in-dialog."""
    assert phone_.register().status == 200
    response, dialog, _ = phone_.subscribe("call-info", expires=600)
    assert response.status == 202, response
    phone_.wait_notify(lambda n: n.event == "call-info" and n.call_id == dialog.call_id)
    refreshed, _, _ = phone_.subscribe("call-info", expires=600, dialog=dialog)
    assert refreshed.status == 202, refreshed
    return dialog


def leave(phone_: Handset, dialog: Dialog) -> None:
    """Un-subscribe in-dialog; the terminating NOTIFY shows the line idle."""
    mark = len(phone_.notifies)
    response, _, _ = phone_.subscribe("call-info", expires=0, dialog=dialog)
    assert response.status in (200, 202), response
    final = phone_.wait_notify(lambda n: n.event == "call-info" and n.terminated, after=mark)
    assert all_idle(final), final.call_info


@contextmanager
def group(server: RunningServer, *names: str) -> Iterator[tuple[tuple[Handset, ...], dict[str, Dialog]]]:
    phones = tuple(phone(name, server, n + 1) for n, name in enumerate(names))
    with handsets(*phones):
        dialogs = {p.name: join(p) for p in phones}
        yield phones, dialogs


def marks(phones: tuple[Handset, ...]) -> dict[str, int]:
    return {p.name: len(p.notifies) for p in phones}


def seen(
    phones: tuple[Handset, ...], since: dict[str, int], accept: Callable[[Notify], bool], timeout: float = 5.0
) -> None:
    """Every phone gets, after ``since``, a call-info NOTIFY that ``accept``s."""
    for p in phones:
        p.wait_notify(lambda n: n.event == "call-info" and accept(n), timeout, after=since[p.name])


def cancel(caller: Handset, invite_tx: ClientTransaction) -> ClientTransaction:
    """CANCEL of an INVITE the caller sent (RFC 3261 9.1: same Via, From, To, Call-ID, CSeq number)."""
    invite = invite_tx.request
    number = (invite.headers.get("CSeq") or "1").split()[0]
    request = Request(
        "CANCEL",
        invite.uri,
        Headers.of(
            ("Via", invite.headers.get("Via") or ""),
            ("Max-Forwards", "70"),
            ("From", invite.headers.get("From") or ""),
            ("To", invite.headers.get("To") or ""),
            ("Call-ID", invite.call_id or ""),
            ("CSeq", f"{number} CANCEL"),
        ),
    )
    return caller.start(request)


@attrs.frozen
class Ringing:
    """A call from a member that rings: the INVITE transaction and dialog of the caller, the
    INVITE the callee got and the callee's dialog."""

    tx: ClientTransaction
    dialog: Dialog
    invite: Request
    callee_dialog: Dialog


def ring(caller: Handset, callee: Handset, *, index: int | None = None) -> Ringing:
    """The caller calls the callee, which rings (180)."""
    tx, dialog = caller.invite(CALLEE, index=index)
    invite = callee.expect_request("INVITE")
    ringing = callee.uas_dialog(invite)
    callee.respond(invite, 180, to_tag=ringing.local_tag)
    caller.wait_response(tx, lambda r: r.status == 180)
    return Ringing(tx, dialog, invite, ringing)


def answer(caller: Handset, callee: Handset, call: Ringing) -> None:
    callee.respond(call.invite, 200, to_tag=call.callee_dialog.local_tag, body=sdp(callee.port))
    ok = caller.wait_response(call.tx, lambda r: 200 <= r.status < 300)
    caller.established(call.dialog, ok)
    caller.ack(call.dialog, call.tx, ok)
    callee.expect_request("ACK")


def hang_up(caller: Handset, callee: Handset, dialog: Dialog) -> None:
    bye_tx = caller.send_in_dialog(dialog, "BYE")
    callee.respond(callee.expect_request("BYE"), 200)
    assert caller.wait_response(bye_tx).status == 200


# -- O8: a cancelled call ----------------------------------------------------------------------


def test_o8_cancelled_calls_leave_the_line_idle_for_every_member(tmp_path: Path, db_url: str) -> None:
    """Three calls cancelled before the answer on a line of two appearances: after each one
    every member sees the line idle, and the third call still gets an appearance."""
    with (
        running_server(tmp_path / "server", config(), db_url=db_url) as server,
        group(server, "a", "b") as (
            phones,
            dialogs,
        ),
    ):
        a, _b = phones
        callee = party("callee", server)
        with handsets(callee):
            assert callee.register().status == 200
            for attempt in range(3):
                since = marks(phones)
                call = ring(a, callee)
                tx = call.tx
                seen(phones, since, state_is(1, "progressing"))
                since = marks(phones)
                cancelled = cancel(a, tx)
                callee.respond(callee.expect_request("CANCEL"), 200)
                callee.respond(call.invite, 487, to_tag=call.callee_dialog.local_tag)
                assert a.wait_response(cancelled).status == 200
                final = a.wait_response(tx, lambda r: r.status >= 300)
                assert final.status == 487, (attempt, final)
                a.ack(Dialog("", "", None, "", "", ""), tx, final)
                seen(phones, since, all_idle)
                assert appearances(server) == [], attempt
        for p in phones:
            leave(p, dialogs[p.name])


# -- O3/O4: the seize ends between the INVITE and the first 18x --------------------------------


def call_after_seize_ended(a: Handset, b: Handset, callee: Handset, server: RunningServer, end: str) -> None:
    phones = (a, b)
    response, seize, _ = a.subscribe("line-seize", expires=2, index=1)
    assert response.status == 200, response
    a.wait_notify(lambda n: n.event == "line-seize" and n.call_id == seize.call_id)
    tx, dialog = a.invite(CALLEE, index=1)
    invite = callee.expect_request("INVITE")
    mark = len(a.notifies)
    if end == "unsubscribe":
        released, _, _ = a.subscribe("line-seize", expires=0, index=1, dialog=seize)
        assert released.status == 200, released
    a.wait_notify(lambda n: n.event == "line-seize" and n.terminated, timeout=6.0, after=mark)
    assert [(x["index"], x["state"]) for x in appearances(server)] == [(1, "seized")]
    since = marks(phones)
    ringing = callee.uas_dialog(invite)
    callee.respond(invite, 180, to_tag=ringing.local_tag)
    a.wait_response(tx, lambda r: r.status == 180)
    seen(phones, since, state_is(1, "progressing"))
    since = marks(phones)
    answer(a, callee, Ringing(tx, dialog, invite, ringing))
    seen(phones, since, state_is(1, "active"))
    since = marks(phones)
    hang_up(a, callee, dialog)
    seen(phones, since, all_idle)


@pytest.mark.parametrize("end", ["expiry", "unsubscribe"])
def test_o3_o4_seize_ending_after_the_invite_leaves_the_call_tracked(tmp_path: Path, end: str) -> None:
    """The line-seize subscription (2 s) expires, or is ended by the phone, after the INVITE
    and before the first 18x: the group still sees progressing, active, idle."""
    with (
        running_server(tmp_path / "server", config(seize_expires=2)) as server,
        group(server, "a", "b") as (
            phones,
            dialogs,
        ),
    ):
        a, b = phones
        callee = party("callee", server)
        with handsets(callee):
            assert callee.register().status == 200
            call_after_seize_ended(a, b, callee, server, end)
        for p in phones:
            leave(p, dialogs[p.name])


# -- O7, O8, O20, Q18: calls across a restart --------------------------------------------------


EARLY_TTL = 8.0  # counted from the restart: the CANCEL right after it comes first


def lamps_config(extra: str = "") -> str:
    return config(extra=f"early_ttl = {EARLY_TTL}\n{extra}")


@contextmanager
def restart(
    tmp_path: Path, db_url: str, server: RunningServer, how: signal.Signals, text: str
) -> Iterator[RunningServer]:
    """Stop ``server`` (SIGTERM, or kill -9 after the write-behind interval) and start it
    again on the same database and SIP port, where the phones' route sets point."""
    if how is signal.SIGKILL:
        time.sleep(1.0)  # more than database.flush_interval: the rows are written
        server.process.kill()
        server.process.wait(5)
    else:
        assert server.stop(signal.SIGTERM) == 0
    with running_server(
        tmp_path / f"again-{how.name}", text, db_url=db_url, sip_port=server.sip_port
    ) as again:
        yield again


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill-9"])
def test_o8_o20_calls_ringing_across_a_restart_end_for_every_member(
    tmp_path: Path, db_url: str, how: signal.Signals
) -> None:
    """Two calls ring when the server stops.  After the restart A's CANCEL (its INVITE
    transaction is gone: 481) frees index 1 and nobody ends B's call, which the early TTL
    (8 s from the restart) frees: every member sees the line idle."""
    text = lamps_config()
    with (
        running_server(tmp_path / "server", text, db_url=db_url) as server,
        group(server, "a", "b") as (
            phones,
            _,
        ),
    ):
        a, b = phones
        callee = party("callee", server)
        with handsets(callee):
            assert callee.register().status == 200
            since = marks(phones)
            tx_a = ring(a, callee).tx
            tx_b, _ = b.invite(CALLEE)
            invite_b = callee.expect_request("INVITE")
            callee.respond(invite_b, 180, to_tag="ringing-b")
            b.wait_response(tx_b, lambda r: r.status == 180)
            seen(phones, since, lambda n: n.state_of(1) == n.state_of(2) == "progressing")
            since = marks(phones)
            with restart(tmp_path, db_url, server, how, text) as again:
                seen(phones, since, lambda n: n.state_of(1) == n.state_of(2) == "progressing")
                since = marks(phones)
                assert a.wait_response(cancel(a, tx_a)).status == 481
                seen(phones, since, lambda n: n.state_of(1) is None)
                seen(phones, since, all_idle, timeout=EARLY_TTL + 4)
                assert appearances(again) == []


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill-9"])
def test_o7_o18_late_answer_after_a_restart_is_tracked_until_the_bye(
    tmp_path: Path, db_url: str, how: signal.Signals
) -> None:
    """The callee answers while the server restarts: its 2xx, forwarded statelessly since
    the INVITE transaction is gone, makes the line active; the BYE makes it idle."""
    text = lamps_config()
    with (
        running_server(tmp_path / "server", text, db_url=db_url) as server,
        group(server, "a", "b") as (
            phones,
            _,
        ),
    ):
        a, _b = phones
        callee = party("callee", server)
        with handsets(callee):
            assert callee.register().status == 200
            since = marks(phones)
            call = ring(a, callee)
            seen(phones, since, state_is(1, "progressing"))
            since = marks(phones)
            with restart(tmp_path, db_url, server, how, text):
                seen(phones, since, state_is(1, "progressing"))
                since = marks(phones)
                answer(a, callee, call)
                seen(phones, since, state_is(1, "active"))
                since = marks(phones)
                hang_up(a, callee, call.dialog)
                seen(phones, since, all_idle)


def causes(db_url: str) -> list[tuple[str, str, str]]:
    engine = sqlalchemy.create_engine(db_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                sqlalchemy.select(
                    appearance_events.c.old_state, appearance_events.c.new_state, appearance_events.c.cause
                ).order_by(appearance_events.c.event_ms, appearance_events.c.id)
            )
            return [(row[0], row[1], row[2]) for row in rows]
    finally:
        engine.dispose()


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill-9"])
def test_q18_call_whose_bye_never_comes_is_idled_after_max_call_age(
    tmp_path: Path, db_url: str, how: signal.Signals
) -> None:
    """An answered call whose parties vanish (no BYE ever), across a restart: the stale-call
    sweep (max_call_age = 4 s since the last signalling) idles it for every member, and the
    reporting history says why (cause ``stale``)."""
    text = lamps_config("max_call_age = 4.0")
    with (
        running_server(tmp_path / "server", text, db_url=db_url) as server,
        group(server, "a", "b") as (
            phones,
            _,
        ),
    ):
        a, _b = phones
        callee = party("callee", server)
        with handsets(callee):
            assert callee.register().status == 200
            since = marks(phones)
            answer(a, callee, ring(a, callee))
            seen(phones, since, state_is(1, "active"))
            since = marks(phones)
            with restart(tmp_path, db_url, server, how, text) as again:
                # Restored with its last signalling time: swept at once when the restart took
                # longer than max_call_age, else a few seconds later.
                seen(phones, since, all_idle, timeout=8.0)
                assert appearances(again) == []
                assert again.stop(signal.SIGTERM) == 0
    assert ("active", "idle", "stale") in causes(db_url)


# -- section 1, I1-I4, O18: a member whose Contact user is not the line's answers -------------


def test_i3_i4_o18_call_to_the_line_answered_by_a_member_whose_contact_user_is_not_the_line(
    tmp_path: Path, db_url: str
) -> None:
    """With alerting_state on, a call to the line rings both members (Contact users
    ``2001-0x...``) with the appearance index in Call-Info; B answers: every member sees
    alerting, active after the ACK, idle after the caller's BYE."""
    text = config(extra="alerting_state = true")
    with (
        running_server(tmp_path / "server", text, db_url=db_url) as server,
        group(server, "a", "b") as (
            phones,
            dialogs,
        ),
    ):
        a, b = phones
        carol = party("carol", server, "carol")
        with handsets(carol):
            since = marks(phones)
            tx, dialog = carol.invite(LINE)
            forked = {p.name: p.expect_request("INVITE") for p in phones}
            for invite in forked.values():  # BroadWorks: the key the call rings on
                assert invite.headers.lines("Call-Info") == (f"<sip:{DOMAIN}>;appearance-index=1",)
            rung = {p.name: p.uas_dialog(forked[p.name]) for p in phones}
            for p in phones:
                p.respond(forked[p.name], 180, to_tag=rung[p.name].local_tag)
            seen(phones, since, state_is(1, "alerting"))
            since = marks(phones)
            b.respond(forked["b"], 200, to_tag=rung["b"].local_tag, body=sdp(b.port))
            a.respond(a.expect_request("CANCEL"), 200)
            a.respond(forked["a"], 487, to_tag=rung["a"].local_tag)
            ok = carol.wait_response(tx, lambda r: 200 <= r.status < 300)
            carol.established(dialog, ok)
            carol.ack(dialog, tx, ok)
            b.expect_request("ACK")
            seen(phones, since, state_is(1, "active"))
            [row] = appearances(server)
            assert (row["index"], row["state"], row["owner"]) == (1, "active", b.contact)
            since = marks(phones)
            bye = carol.send_in_dialog(dialog, "BYE")
            b.respond(b.expect_request("BYE"), 200)
            assert carol.wait_response(bye).status == 200
            seen(phones, since, all_idle)
            assert appearances(server) == []
        for p in phones:
            leave(p, dialogs[p.name])


# -- PUBLISH to one's own AoR ------------------------------------------------------------------


def test_publish_to_ones_own_aor_is_answered_489_by_the_server(tmp_path: Path) -> None:
    """A member publishing its presence to its own AoR gets 489 from the server with the
    packages it serves, and none of its own contacts gets the PUBLISH."""
    with running_server(tmp_path / "server", config()) as server, group(server, "a") as (phones, _):
        [a] = phones
        request = a.build(
            "PUBLISH",
            LINE,
            from_=f"<{LINE}>;tag=pub1",
            to=f"<{LINE}>",
            call_id="publish-1",
            cseq=1,
            extra=(("Event", "presence"), ("Expires", "3600")),
        )
        response = a.request(request)
        assert response.status == 489, response
        assert response.headers.get("Allow-Events") == "call-info, line-seize"
        assert not [r for r in a.requests if r.method == "PUBLISH"]
