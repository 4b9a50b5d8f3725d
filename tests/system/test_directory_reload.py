"""The running server follows the directory: subscribers, lines and trusted peers changed
with the command line while it runs take effect without a restart (``directory.poll_interval``,
SIGHUP).  The real process on loopback, started with no configuration file and an empty
database, as on an operator's first day."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from scaserver.sip import headers
from tests.system.handset import Handset, new_tag
from tests.system.server import ROOT, SCASERVER, RunningServer, running_server, upgrade_database

pytestmark = pytest.mark.system

DOMAIN = "example.test"
PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw"}
RELOADED = "directory reloaded"
RELOAD_DEADLINE_S = 10.0  # the default poll interval is 2 s


def scaserver(server: RunningServer, *args: str) -> str:
    done = subprocess.run(
        [*SCASERVER, *args, "--db", server.db_url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def log_size(server: RunningServer) -> int:
    return len(server.log())


def wait_for_reload(server: RunningServer, after: int, counts: str = "") -> None:
    """Until the server logs a reload (whose line has ``counts``) past offset ``after`` of its
    log, or the deadline passes: the assertions that follow then say what did not happen."""
    deadline = time.monotonic() + RELOAD_DEADLINE_S
    while time.monotonic() < deadline:
        if any(counts in line for line in server.log()[after:].splitlines() if RELOADED in line):
            return
        time.sleep(0.1)


def phone(server: RunningServer, user: str, *, line: str | None = None) -> Handset:
    return Handset(
        user,
        ("127.0.0.1", server.sip_port),
        line=line or f"sip:{user}@{DOMAIN}",
        username=user,
        password=PASSWORDS[user],
    )


@pytest.fixture
def empty_server(tmp_path: Path) -> Iterator[RunningServer]:
    """No configuration file, no subscriber, no line."""
    with running_server(tmp_path / "server", None) as server:
        yield server


def test_subscribers_added_and_removed_with_the_cli_take_effect_while_running(
    empty_server: RunningServer,
) -> None:
    seen = log_size(empty_server)
    for user, password in PASSWORDS.items():
        scaserver(empty_server, "subscriber", "add", f"{user}@{DOMAIN}", "--password", password)
    wait_for_reload(empty_server, seen, "2 subscribers")
    alice, bob = phone(empty_server, "alice"), phone(empty_server, "bob")
    try:
        assert alice.register().status == 200, empty_server.log()
        assert bob.register().status == 200, empty_server.log()
        invite = alice.build(
            "INVITE",
            f"sip:bob@{DOMAIN}",
            from_=f"<sip:alice@{DOMAIN}>;tag={new_tag()}",
            to=f"<sip:bob@{DOMAIN}>",
            call_id=uuid.uuid4().hex,
            cseq=1,
        )
        challenge = alice.wait_response(alice.start(invite))
        assert challenge.status == 407
        alice.start(alice.with_credentials(invite, challenge))
        reached = bob.expect_request("INVITE")
        assert headers.from_addr(reached).uri.user == "alice"  # type: ignore[union-attr]

        seen = log_size(empty_server)
        scaserver(empty_server, "subscriber", "rm", f"bob@{DOMAIN}")
        wait_for_reload(empty_server, seen, "1 subscribers")
        refused = bob.register()
        assert refused.status in (401, 403), empty_server.log()
        assert "subscribers (+0 -1 ~0)" in empty_server.log()
        assert alice.register().status == 200  # the others are untouched
    finally:
        alice.close()
        bob.close()


def test_a_line_added_with_the_cli_while_running_is_a_shared_line(tmp_path: Path) -> None:
    """alice is a subscriber from the start; the line and its membership come while running."""
    db_url = f"sqlite:///{tmp_path / 'scaserver.db'}"
    upgrade_database(db_url)
    add = [*SCASERVER, "subscriber", "add", f"alice@{DOMAIN}", "--password", PASSWORDS["alice"]]
    subprocess.run([*add, "--db", db_url], cwd=ROOT, check=True, capture_output=True, timeout=60)
    with running_server(tmp_path / "server", None, db_url=db_url) as server:
        seen = log_size(server)
        scaserver(server, "line", "add", f"sip:2001@{DOMAIN}", "--member", "alice")
        wait_for_reload(server, seen, "1 shared lines (+1 -0 ~0)")
        member = phone(server, "alice", line=f"sip:2001@{DOMAIN}")
        try:
            response, _, _ = member.subscribe("call-info")
            assert response.status in (200, 202), server.log()
            member.wait_notify(lambda n: n.event == "call-info")
        finally:
            member.close()


def scactl(server: RunningServer, *argv: str) -> str:
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "rpc" / "scactl"),
            "-s",
            f"http://127.0.0.1:{server.http_port}/RPC",
            *argv,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_with_polling_off_sighup_and_scactl_reload_the_directory_at_once(tmp_path: Path) -> None:
    with running_server(tmp_path / "server", "[directory]\npoll_interval = 0\n") as server:
        scaserver(server, "subscriber", "add", f"alice@{DOMAIN}", "--password", PASSWORDS["alice"])
        seen = log_size(server)
        server.process.send_signal(signal.SIGHUP)
        wait_for_reload(server, seen, "1 subscribers")
        assert "directory reloaded (SIGHUP)" in server.log()
        scaserver(server, "subscriber", "add", f"bob@{DOMAIN}", "--password", PASSWORDS["bob"])
        reloaded = json.loads(scactl(server, "-F", "json", "directory.reload"))
        assert reloaded["subscribers"] == 2
        assert reloaded["subscribers_added"] == 1
        assert "directory reloaded (directory.reload)" in server.log()
        assert "bob-pw" not in server.log()
        alice, bob = phone(server, "alice"), phone(server, "bob")
        try:
            assert alice.register().status == 200, server.log()
            assert bob.register().status == 200, server.log()
        finally:
            alice.close()
            bob.close()
