"""baresip from Debian, a real SIP phone, as a member of a shared line (real-uas.md): its
Contact user is ``2001-0x<pointer>``, not the line's.  The other members are simulated
handsets that watch the line through call-info (refreshed and ended in-dialog).

It places a call and cancels it before the answer (sca.md O5b, O6, O8), and answers a call
to the line that rings every member with ``alerting_state`` on (I1, I3, I4, O18): at the end
every other member sees the line idle.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from scaserver.sip import headers
from tests.system.baresip import Baresip
from tests.system.handset import handsets
from tests.system.server import RunningServer, running_server
from tests.system.test_sca import CALLEE, DOMAIN, LINE, all_idle, appearances, config, state_is
from tests.system.test_sca_lamps import group, leave, marks, party, seen

pytestmark = pytest.mark.system


@contextmanager
def baresip_member(server: RunningServer, workdir: Path) -> Iterator[Baresip]:
    phone = Baresip(workdir, user="2001", domain=DOMAIN, server_port=server.sip_port)
    try:
        phone.wait_registered()
        yield phone
    finally:
        phone.stop()


def contact_user(message_contact: str) -> str:
    return message_contact.partition(":")[2].partition("@")[0]


def test_o8_baresip_member_dials_and_cancels_the_other_members_see_idle(tmp_path: Path) -> None:
    with (
        running_server(tmp_path / "server", config()) as server,
        group(server, "a", "b") as (watchers, dialogs),
        baresip_member(server, tmp_path / "baresip") as phone,
    ):
        callee = party("callee", server)
        with handsets(callee):
            assert callee.register().status == 200
            for attempt in range(3):  # more cancelled calls than the line's two appearances
                since = marks(watchers)
                phone.command("dial", CALLEE)
                invite = callee.expect_request("INVITE")
                [contact] = headers.contacts(invite)  # type: ignore[misc]
                assert contact_user(str(contact.uri)).startswith("2001-0x"), contact
                ringing = callee.uas_dialog(invite)
                callee.respond(invite, 180, to_tag=ringing.local_tag)
                seen(watchers, since, state_is(1, "progressing"))
                since = marks(watchers)
                phone.command("hangup")
                callee.respond(callee.expect_request("CANCEL"), 200)
                callee.respond(invite, 487, to_tag=ringing.local_tag)
                seen(watchers, since, all_idle)
                phone.wait_event("CALL_CLOSED")
                assert appearances(server) == [], attempt
        for watcher in watchers:
            leave(watcher, dialogs[watcher.name])


def test_i3_baresip_member_answers_a_call_to_the_line_the_other_members_see_active_then_idle(
    tmp_path: Path,
) -> None:
    with (
        running_server(tmp_path / "server", config(extra="alerting_state = true")) as server,
        group(server, "a", "b") as (watchers, dialogs),
        baresip_member(server, tmp_path / "baresip") as phone,
    ):
        carol = party("carol", server, "carol")
        with handsets(carol):
            since = marks(watchers)
            tx, dialog = carol.invite(LINE)
            forked = {w.name: w.expect_request("INVITE") for w in watchers}
            rung = {w.name: w.uas_dialog(forked[w.name]) for w in watchers}
            for w in watchers:
                w.respond(forked[w.name], 180, to_tag=rung[w.name].local_tag)
            phone.wait_event("CALL_INCOMING")
            seen(watchers, since, state_is(1, "alerting"))
            since = marks(watchers)
            phone.command("accept")
            ok = carol.wait_response(tx, lambda r: 200 <= r.status < 300, timeout=10.0)
            [contact] = headers.contacts(ok)  # type: ignore[misc]
            assert contact_user(str(contact.uri)).startswith("2001-0x"), contact
            carol.established(dialog, ok)
            carol.ack(dialog, tx, ok)
            for w in watchers:
                w.respond(w.expect_request("CANCEL"), 200)
                w.respond(forked[w.name], 487, to_tag=rung[w.name].local_tag)
            seen(watchers, since, state_is(1, "active"))
            [row] = appearances(server)
            assert row["state"] == "active" and contact_user(row["owner"]).startswith("2001-0x"), row
            since = marks(watchers)
            bye = carol.send_in_dialog(dialog, "BYE")
            assert carol.wait_response(bye).status == 200
            seen(watchers, since, all_idle)
            phone.wait_event("CALL_CLOSED")
            assert appearances(server) == []
        for watcher in watchers:
            leave(watcher, dialogs[watcher.name])
