"""Reports over history written by the real server from real calls (reporting.md section 7).

Members of a shared line make calls through the running server: one answered, held, and
retrieved by another member; one refused busy by the callee; a seize with no call; and two
calls to the line from outside, one answered and one abandoned by its caller.  After a
clean stop (the write-behind queue's final flush) ``scaserver report`` must count exactly
that, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from scaserver.sip import headers
from scaserver.sip.message import Request
from tests.system.handset import Dialog, Handset, handsets, sdp
from tests.system.server import ROOT, SCASERVER, running_server
from tests.system.test_sca import (
    CALLEE,
    LINE,
    config,
    hold,
    member,
    place_call,
    retrieve_and_hang_up,
    rpc,
    subscribed,
)

pytestmark = pytest.mark.system


def report(db_url: str, name: str) -> list[dict[str, Any]]:
    done = subprocess.run(
        [
            *SCASERVER,
            "report",
            name,
            "--line",
            LINE,
            "--format",
            "json",
            "--since",
            "2020-01-01",
            "--db",
            db_url,
        ],
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    rows: list[dict[str, Any]] = json.loads(done.stdout)["rows"]
    return rows


def busy_call(a: Handset, callee: Handset) -> None:
    """A calls the callee on the line without seizing first; the callee answers 486."""
    tx, _ = a.invite(CALLEE, index=2)
    invite = callee.expect_request("INVITE")
    callee.respond(invite, 486)
    final = a.wait_response(tx)
    assert final.status == 486, final


def ring_members(members: tuple[Handset, ...]) -> dict[str, tuple[Request, Dialog]]:
    """Each member gets the forked INVITE to the line and answers 180."""
    ringing: dict[str, tuple[Request, Dialog]] = {}
    for phone in members:
        invite = phone.expect_request("INVITE")
        dialog = phone.uas_dialog(invite)
        phone.respond(invite, 180, to_tag=dialog.local_tag)
        ringing[phone.name] = (invite, dialog)
    return ringing


def cancelled(phone: Handset, invite: Request, dialog: Dialog) -> None:
    """The server CANCELs this member's branch: 200 to the CANCEL, 487 to the INVITE."""
    cancel = phone.expect_request("CANCEL")
    phone.respond(cancel, 200)
    phone.respond(invite, 487, to_tag=dialog.local_tag)


def inbound_answered(outside: Handset, a: Handset, c: Handset) -> None:
    """A call to the shared line rings A and C; A answers (C's branch is cancelled), then hangs up."""
    tx, caller = outside.invite(LINE)
    ringing = ring_members((a, c))
    invite, answering = ringing["a"]
    a.respond(invite, 200, to_tag=answering.local_tag, body=sdp(a.port))
    ok = outside.wait_response(tx)
    assert ok.status == 200, ok
    outside.established(caller, ok)
    outside.ack(caller, tx, ok)
    cancelled(c, *ringing["c"])
    a.expect_request("ACK")
    bye_tx = a.send_in_dialog(answering, "BYE")
    outside.respond(outside.expect_request("BYE"), 200)
    assert a.wait_response(bye_tx).status == 200


def inbound_abandoned(outside: Handset, a: Handset, c: Handset) -> None:
    """A call to the shared line rings A and C; the caller gives up (CANCEL) before anyone answers."""
    tx, caller = outside.invite(LINE)
    ringing = ring_members((a, c))
    outside.wait_response(tx, lambda r: r.status == 180)
    cancel = outside.build(
        "CANCEL",
        LINE,
        from_=f"<{outside.line}>;tag={caller.local_tag}",
        to=f"<{LINE}>",
        call_id=caller.call_id,
        cseq=1,
        branch=headers.top_via(tx.request).branch,
    )
    assert outside.request(cancel).status == 200
    for phone in (a, c):
        cancelled(phone, *ringing[phone.name])
    assert outside.wait_response(tx).status == 487


def test_reports_count_the_calls_that_went_through_the_server(tmp_path: Path, db_url: str) -> None:
    with running_server(tmp_path / "server", config(), db_url=db_url) as server:
        a, c = member("a", server), member("c", server)
        callee = Handset("callee", ("127.0.0.1", server.sip_port), line=CALLEE)
        with handsets(a, c, callee):
            for phone in (a, c, callee):
                assert phone.register().status == 200
            for phone in (a, c):
                subscribed(phone)
            call = place_call(a, callee, (c,))
            hold(a, callee, call, (a, c))
            retrieve_and_hang_up(server, a, c, callee=callee, call=call, watchers=())
            busy_call(a, callee)
            inbound_answered(callee, a, c)
            inbound_abandoned(callee, a, c)
            assert rpc(server, "sca.seize_appearance", LINE, c.contact)["index"] == 1
            assert rpc(server, "sca.release_appearance", LINE, 1)["state"] == "idle"
        assert server.stop(signal.SIGTERM) == 0
    [calls] = report(db_url, "line-calls")  # calls offered to the line: the two inbound ones
    assert (calls["offered"], calls["answered"], calls["abandoned"]) == (2, 1, 1)
    [holds] = report(db_url, "holds")
    assert holds["holds"] == 1 and holds["still_held"] == 0
    [pickups] = report(db_url, "pickups")
    assert pickups["pickups"] == 1
    # The RPC seize that was released, and the busy call's appearance: it failed before any
    # ringing, which the spec's v_seize_without_call counts as a seize without a call.
    seizes = report(db_url, "seize-without-call")
    assert sum(row["seizes_without_call"] for row in seizes) == 2
