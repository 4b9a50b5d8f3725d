"""A shared line reached by another name (sca.md Q26, Kamailio issue 103): the real scaserver
process on loopback, a line 2001 with two members in the database, and an alias
``sip:100@example.test`` added with the command line while the server runs.  A member's
call-info SUBSCRIBE to the alias is a subscription to the line; an INVITE from a trusted
gateway to the alias rings every member with the appearance index, and every member sees
the call on the line."""

from __future__ import annotations

import contextlib
import io
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from scaserver import cli
from tests.system.handset import Dialog, Handset, handsets, new_tag, sdp
from tests.system.server import ROOT, SCASERVER, RunningServer, running_server, upgrade_database
from tests.system.test_sca import all_idle, appearances, state_is
from tests.system.test_sca_lamps import leave, marks, seen

pytestmark = pytest.mark.system

DOMAIN = "example.test"
LINE = f"sip:2001@{DOMAIN}"
ALIAS = f"sip:100@{DOMAIN}"
PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw", "mallory": "mallory-pw"}
GATEWAY_HOST = "127.0.0.2"
RELOAD_DEADLINE_S = 10.0
CONFIG = """
[database]
flush_interval = 0.3
[directory]
poll_interval = 0.5
[sca]
call_info_uri = "aor"
"""


def scaserver(db_url: str, *args: str) -> str:
    done = subprocess.run(
        [*SCASERVER, *args, "--db", db_url], cwd=ROOT, capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def wait_for_reload(server: RunningServer, after: int) -> None:
    deadline = time.monotonic() + RELOAD_DEADLINE_S
    while time.monotonic() < deadline and "directory reloaded" not in server.log()[after:]:
        time.sleep(0.1)


def member(name: str, server: RunningServer, n: int) -> Handset:
    """A member registered as the line, authenticating as itself, Contact user not the line's."""
    return Handset(
        name,
        ("127.0.0.1", server.sip_port),
        line=LINE,
        contact_user=f"2001-0x{n:08x}",
        username=name,
        password=PASSWORDS[name],
    )


def subscribe_alias(phone: Handset) -> tuple[int, Dialog]:
    """An initial call-info SUBSCRIBE whose Request-URI and To are the alias (From the line)."""
    dialog = Dialog(uuid.uuid4().hex, new_tag(), None, phone.line, ALIAS, ALIAS)
    response, dialog, _ = phone.subscribe("call-info", expires=600, dialog=dialog)
    return response.status, dialog


def scaserver_here(db_url: str, *args: str) -> None:
    """``scaserver ARGS --db URL`` run in this process (the setup; the alias the test adds
    while the server runs is added by a process of its own)."""
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli.main([*args, "--db", db_url]) == 0


@pytest.fixture
def line_db(db_url: str) -> Iterator[str]:
    """Subscribers alice, bob and mallory; line 2001 for alice and bob; the gateway trusted."""
    upgrade_database(db_url)
    for user, password in PASSWORDS.items():
        scaserver_here(db_url, "subscriber", "add", f"{user}@{DOMAIN}", "--password", password)
    scaserver_here(db_url, "line", "add", LINE, "--appearances", "2", "--member", "alice", "--member", "bob")
    scaserver_here(db_url, "trusted", "add", f"{GATEWAY_HOST}/32", "--tag", "gateway")
    yield db_url


def test_q26_an_alias_added_while_running_reaches_the_line_for_subscriptions_and_calls(
    tmp_path: Path, line_db: str
) -> None:
    with running_server(tmp_path / "server", CONFIG, db_url=line_db) as server:
        a, b = member("alice", server, 1), member("bob", server, 2)
        gateway = Handset(
            "gateway", ("127.0.0.1", server.sip_port), line="sip:+15550100@pstn.test", host=GATEWAY_HOST
        )
        with handsets(a, b, gateway):
            for phone in (a, b):
                assert phone.register().status == 200, server.log()
            # No alias yet: sip:100 is nobody's line, and alice may not subscribe to it.
            assert subscribe_alias(a)[0] == 403, server.log()

            seen_at = len(server.log())
            scaserver(line_db, "line", "alias", "add", ALIAS, LINE)
            wait_for_reload(server, seen_at)
            assert scaserver(line_db, "line", "alias", "list") == f"{ALIAS}\t{LINE}\n"

            dialogs: dict[str, Dialog] = {}
            for phone in (a, b):
                status, dialogs[phone.name] = subscribe_alias(phone)
                assert status == 202, server.log()
                first = phone.wait_notify(lambda n: n.event == "call-info")
                assert first.call_info == f"<{LINE}>;appearance-index=*;appearance-state=idle"
            # A subscriber who is no member of the line is refused through the alias too.
            mallory = Handset(
                "mallory",
                ("127.0.0.1", server.sip_port),
                line=f"sip:mallory@{DOMAIN}",
                username="mallory",
                password=PASSWORDS["mallory"],
            )
            with handsets(mallory):
                assert subscribe_alias(mallory)[0] == 403

            phones = (a, b)
            since = marks(phones)
            tx, call = gateway.invite(ALIAS)
            forked = {p.name: p.expect_request("INVITE") for p in phones}
            for invite in forked.values():  # BroadWorks: the key the call rings on
                assert invite.headers.lines("Call-Info") == (f"<{LINE}>;appearance-index=1",)
            rung = {p.name: p.uas_dialog(forked[p.name]) for p in phones}
            for p in phones:
                p.respond(forked[p.name], 180, to_tag=rung[p.name].local_tag)
            seen(phones, since, state_is(1, "alerting"))
            [row] = appearances(server)
            assert (row["aor"], row["index"], row["state"]) == (LINE, 1, "alerting")

            since = marks(phones)
            b.respond(forked["bob"], 200, to_tag=rung["bob"].local_tag, body=sdp(b.port))
            a.respond(a.expect_request("CANCEL"), 200)
            a.respond(forked["alice"], 487, to_tag=rung["alice"].local_tag)
            ok = gateway.wait_response(tx, lambda r: 200 <= r.status < 300)
            gateway.established(call, ok)
            gateway.ack(call, tx, ok)
            b.expect_request("ACK")
            seen(phones, since, state_is(1, "active"))
            since = marks(phones)
            bye = gateway.send_in_dialog(call, "BYE")
            b.respond(b.expect_request("BYE"), 200)
            assert gateway.wait_response(bye).status == 200
            seen(phones, since, all_idle)
            for p in phones:
                leave(p, dialogs[p.name])
