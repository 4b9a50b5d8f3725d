"""A shared line calling a shared line, end to end (sca.md 7.1 step 4, rule O19b; O14b): the
real scaserver process on loopback and simulated handsets, members of two lines, whose
Contact users are not their lines' and which refresh and end their call-info subscriptions
in-dialog as phones do.

A on line 2001 calls line 2002; X on 2002 answers (Y rings and is cancelled); A holds and B on
2001 picks the call up (INVITE with Replaces through the server).  X ends the replaced leg:
2002 stays active for every member while X talks to B, and goes idle after the final BYE.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import attrs
import pytest

from scaserver.sip.message import Request
from tests.system.handset import ClientTransaction, Dialog, Handset, handsets, sdp
from tests.system.server import RunningServer, running_server
from tests.system.test_sca import DOMAIN, LINE, all_idle, appearances, config, state_is
from tests.system.test_sca_lamps import join, leave, marks, seen

pytestmark = pytest.mark.system

LINE2 = f"sip:2002@{DOMAIN}"


def two_lines() -> str:
    return config() + f'\n[[sca.lines]]\naor = "{LINE2}"\nappearances = 2\nmembers = []\n'


def member(name: str, server: RunningServer, line: str, n: int) -> Handset:
    """A member of ``line`` whose Contact user (``desk-0x...``) names no line."""
    return Handset(name, ("127.0.0.1", server.sip_port), line=line, contact_user=f"desk-0x{n:08x}")


@attrs.frozen
class Members:
    first: tuple[Handset, Handset]  # A, B on 2001
    second: tuple[Handset, Handset]  # X, Y on 2002
    dialogs: dict[str, Dialog]

    @property
    def everyone(self) -> tuple[Handset, ...]:
        return (*self.first, *self.second)


@contextmanager
def members(server: RunningServer) -> Iterator[Members]:
    """Registered and subscribed to call-info; at the end each member un-subscribes in-dialog
    and sees its line idle."""
    first = (member("a", server, LINE, 1), member("b", server, LINE, 2))
    second = (member("x", server, LINE2, 3), member("y", server, LINE2, 4))
    with handsets(*first, *second):
        group = Members(first, second, {p.name: join(p) for p in (*first, *second)})
        yield group
        for p in group.everyone:
            leave(p, group.dialogs[p.name])


@attrs.frozen
class Call:
    """A's call to line 2002, answered by X: A's dialog and X's."""

    caller: Dialog
    callee: Dialog


def call_line2(group: Members) -> Call:
    """A calls 2002, which rings X and Y; X answers, Y is cancelled: both lines show active."""
    (a, _), (x, y) = group.first, group.second
    since = marks(group.everyone)
    tx, dialog = a.invite(LINE2)
    forked = {p.name: p.expect_request("INVITE") for p in (x, y)}
    rung = {p.name: p.uas_dialog(forked[p.name]) for p in (x, y)}
    for p in (x, y):
        p.respond(forked[p.name], 180, to_tag=rung[p.name].local_tag)
    x.respond(forked["x"], 200, to_tag=rung["x"].local_tag, body=sdp(x.port))
    y.respond(y.expect_request("CANCEL"), 200)
    y.respond(forked["y"], 487, to_tag=rung["y"].local_tag)
    ok = a.wait_response(tx, lambda r: 200 <= r.status < 300)
    a.established(dialog, ok)
    a.ack(dialog, tx, ok)
    x.expect_request("ACK")
    seen(group.everyone, since, state_is(1, "active"))
    return Call(dialog, rung["x"])


def reinvite(sender: Handset, dialog: Dialog, peer: Handset, direction: str, *extra: tuple[str, str]) -> None:
    """An in-dialog re-INVITE with SDP ``direction``, answered 200 and ACKed."""
    tx = sender.send_in_dialog(dialog, "INVITE", body=sdp(sender.port, direction), extra=extra)
    request = peer.expect_request("INVITE")
    peer.respond(request, 200, body=sdp(peer.port, "recvonly" if direction == "sendonly" else "sendrecv"))
    ok = sender.wait_response(tx)
    assert ok.status == 200, ok
    sender.ack(dialog, tx, ok)
    peer.expect_request("ACK")


def bye(sender: Handset, dialog: Dialog, peer: Handset) -> None:
    tx = sender.send_in_dialog(dialog, "BYE")
    peer.respond(peer.expect_request("BYE"), 200)
    assert sender.wait_response(tx).status == 200


def pickup(group: Members, call: Call) -> tuple[ClientTransaction, Dialog, Request]:
    """B picks up index 1 of 2001: X gets the INVITE with Replaces naming A's leg."""
    b, x = group.first[1], group.second[0]
    tx, dialog = b.invite(LINE, index=1)
    invite = x.expect_request("INVITE")
    expected = f"{call.caller.call_id};to-tag={call.callee.local_tag};from-tag={call.caller.local_tag}"
    assert invite.headers.get("Replaces") == expected
    return tx, dialog, invite


def rows(server: RunningServer) -> list[tuple[str, int, str, str]]:
    """The appearances in use, sorted by line: (line, index, state, owner)."""
    return sorted((x["aor"], x["index"], x["state"], x["owner"]) for x in appearances(server))


def refreshed_active(phones: tuple[Handset, ...], dialogs: dict[str, Dialog]) -> None:
    """Each phone refreshes its subscription in-dialog; the full state it gets shows index 1 active."""
    for p in phones:
        mark = len(p.notifies)
        response, _, _ = p.subscribe("call-info", expires=600, dialog=dialogs[p.name])
        assert response.status == 202, response
        p.wait_notify(
            lambda n: n.event == "call-info" and n.subscription_state.startswith("active"), after=mark
        )
        final = [n for n in p.notifies[mark:] if n.event == "call-info"][-1]
        assert final.state_of(1) == "active", (p.name, final.call_info)


def shown_states(phone: Handset, since: int) -> list[str | None]:
    return [n.state_of(1) for n in phone.notifies[since:] if n.event == "call-info"]


@pytest.mark.parametrize("order", ["bye-first", "answer-first"])
def test_o19b_line_calling_line_pickup_keeps_the_far_line_active_until_the_final_bye(
    tmp_path: Path, db_url: str, order: str
) -> None:
    """The replaced leg's BYE (before the pickup's 200, as Polycom sends it, or after) leaves
    2002 active for X and Y while X talks to B; the final BYE idles both lines for all."""
    with running_server(tmp_path / "server", two_lines(), db_url=db_url) as server, members(server) as group:
        (a, b), (x, _y) = group.first, group.second
        call = call_line2(group)
        since = marks(group.everyone)
        reinvite(a, call.caller, x, "sendonly")
        seen(group.first, since, state_is(1, "held"))
        assert rows(server) == [(LINE, 1, "held", a.contact), (LINE2, 1, "active", x.contact)]
        window = marks(group.everyone)
        tx, picked, invite = pickup(group, call)
        answered = x.uas_dialog(invite)

        def answer() -> None:
            x.respond(invite, 200, to_tag=answered.local_tag, body=sdp(x.port))
            ok = b.wait_response(tx, lambda r: 200 <= r.status < 300)
            b.established(picked, ok)
            b.ack(picked, tx, ok)
            x.expect_request("ACK")

        if order == "answer-first":
            answer()
        bye(x, call.callee, a)  # X ends the replaced leg
        if order == "bye-first":
            answer()
        assert rows(server) == [(LINE, 1, "active", b.contact), (LINE2, 1, "active", x.contact)]
        refreshed_active(group.everyone, group.dialogs)
        for p in group.everyone:
            assert None not in shown_states(p, window[p.name]), (p.name, shown_states(p, window[p.name]))
        since = marks(group.everyone)
        bye(x, answered, b)
        seen(group.everyone, since, all_idle)
        assert appearances(server) == []


def test_o14b_private_hold_made_public_and_private_again_for_every_member(
    tmp_path: Path, db_url: str
) -> None:
    """A holds privately (Call-Info appearance-state=held-private), then publicly, then
    privately again: every member sees held-private, held, held-private; B's pickup is refused
    403 while private."""
    with running_server(tmp_path / "server", two_lines(), db_url=db_url) as server, members(server) as group:
        (a, b), (x, _y) = group.first, group.second
        call = call_line2(group)
        info = f"<sip:{DOMAIN}>;appearance-index=1;appearance-state="
        for state in ("held-private", "held", "held-private"):
            since = marks(group.everyone)
            reinvite(a, call.caller, x, "sendonly", ("Call-Info", info + state))
            seen(group.first, since, state_is(1, state))
            assert rows(server)[0] == (LINE, 1, state, a.contact)
        tx, _ = b.invite(LINE, index=1)
        refused = b.wait_response(tx, lambda r: r.status >= 200)
        assert refused.status == 403, refused
        since = marks(group.everyone)
        bye(a, call.caller, x)
        seen(group.everyone, since, all_idle)
        assert appearances(server) == []
