"""Registrations survive a restart, and SIP keeps working while the database is away.

Issue: ``kill -TERM`` then restart: registrations are still there.  With the database
stopped for 30 s under traffic, SIP keeps working and nothing queued is lost when it
comes back.  Both on SQLite and on a real PostgreSQL server (the outage on PostgreSQL,
the server the test command starts, both taken down at once).
"""

from __future__ import annotations

import re
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import attrs
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import PgServer
from tests.system.accounts import CONFIG, DOMAIN, add_subscribers, location_rows
from tests.system.server import RunningServer, free_port, options_request, running_server, udp_exchange
from tests.system.sipp import (
    Sipp,
    SippResult,
    register,
    require_ok,
    start_callee,
    start_caller,
    start_register,
)

pytestmark = pytest.mark.system

ALICE = ("alice", "alice-secret")
BOB = ("bob", "bob-secret")
CAROL = ("carol", "carol-secret")
OUTAGE_S = 30.0


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.25)


def aors(db_url: str) -> set[str]:
    return {aor for aor, _contact in location_rows(db_url)}


def wait_for_aors(db_url: str, expected: set[str], timeout: float) -> None:
    """Wait until the ``location`` table holds bindings of exactly the ``expected`` AoRs."""
    wait_for(lambda: aors(db_url) == expected, timeout, f"the bindings in {db_url}")


def test_registrations_survive_sigterm_and_restart(tmp_path: Path, db_url: str) -> None:
    """Bob registers over UDP and carol over TCP; SIGTERM (exit 0 within 5 s); a new server
    on the same database routes calls to both contacts."""
    add_subscribers(db_url, [ALICE, BOB, CAROL])
    phones = {"udp": (BOB, free_port()), "tcp": (CAROL, free_port())}
    with running_server(tmp_path / "first", CONFIG, db_url=db_url) as first:
        for transport, ((user, password), port) in phones.items():
            require_ok(first, register(first, tmp_path, user, password, transport=transport, port=port))
        started = time.monotonic()
        assert first.stop(signal.SIGTERM, timeout=5.0) == 0, first.log()[-3000:]
        assert time.monotonic() - started < 5.0
    rows = dict(location_rows(db_url))
    assert set(rows) == {f"sip:bob@{DOMAIN}", f"sip:carol@{DOMAIN}"}
    assert f"127.0.0.1:{phones['udp'][1]}" in rows[f"sip:bob@{DOMAIN}"]
    assert f"127.0.0.1:{phones['tcp'][1]}" in rows[f"sip:carol@{DOMAIN}"]

    with running_server(tmp_path / "second", CONFIG, db_url=db_url) as second:
        for transport, ((user, _), port) in phones.items():
            callee = start_callee("uas-answer.xml", second, tmp_path, port, transport=transport)
            caller = start_caller("uac-call.xml", second, tmp_path, ALICE, user, transport=transport)
            require_ok(second, caller.wait(), callee.wait())
        assert aors(db_url) == set(rows)


@attrs.frozen
class Outage:
    """A database and the means to take it away: PostgreSQL stops its cluster; SQLite is
    held under an exclusive lock (every write of the server fails once its busy time-out
    expires, the nearest a file database comes to being down)."""

    db_url: str
    pg: PgServer | None = None

    @contextmanager
    def down(self) -> Iterator[None]:
        if self.pg is not None:
            self.pg.stop()
            try:
                yield
            finally:
                self.pg.start()
            return
        connection = sqlite3.connect(make_url(self.db_url).database or "", isolation_level=None)
        try:
            connection.execute("BEGIN EXCLUSIVE")
            yield
            connection.execute("ROLLBACK")
        finally:
            connection.close()


@pytest.fixture
def outages(request: pytest.FixtureRequest) -> list[Outage]:
    """SQLite, and PostgreSQL when the session has a cluster of its own to stop.

    One test takes both databases down at the same time (30 s once, not twice).  Without
    PostgreSQL it runs on SQLite alone where ``tests/conftest.py`` would skip, and fails
    where it would fail (CI, ``SCASERVER_REQUIRE_PG=1``)."""
    found = [Outage(request.getfixturevalue("sqlite_url"))]
    try:
        pg: PgServer = request.getfixturevalue("pg")
    except pytest.skip.Exception:
        return found
    if pg.owned:
        found.append(Outage(request.getfixturevalue("pg_url"), pg))
    return found


@attrs.define
class Site:
    """A server on one of the databases, with bob registered at ``bob_port``."""

    outage: Outage
    server: RunningServer
    bob_port: int
    traffic: list[Sipp] = attrs.field(factory=list)
    results: list[SippResult] = attrs.field(factory=list)
    pong: bytes | None = None

    def start_traffic(self, workdir: Path) -> None:
        """40 registrations (UDP and TCP, 2 per second) and 5 authenticated calls to bob
        (one every 4 s), bounded to 27 s."""
        server = self.server
        self.traffic = [
            start_register(server, workdir, USERS[:20], transport="udp", rate=1.0, timeout_s=27),
            start_register(server, workdir, USERS[20:], transport="tcp", rate=1.0, timeout_s=27),
            start_callee("uas-answer.xml", server, workdir, self.bob_port, calls=5, timeout_s=27),
            start_caller("uac-call.xml", server, workdir, ALICE, "bob", calls=5, rate=0.25, timeout_s=27),
        ]

    def finish_traffic(self) -> None:
        self.results = [sipp.wait(timeout=30) for sipp in self.traffic]
        self.pong = udp_exchange(self.server.sip_port, options_request(self.server.sip_port))


USERS = [(f"u{index:03}", f"pw-{index:03}") for index in range(40)]


def test_sip_keeps_working_through_a_30s_database_outage_and_nothing_is_lost(
    tmp_path: Path, outages: list[Outage]
) -> None:
    with ExitStack() as servers:
        sites: list[Site] = []
        for number, outage in enumerate(outages):
            add_subscribers(outage.db_url, [ALICE, BOB, *USERS])
            server = servers.enter_context(
                running_server(tmp_path / f"server{number}", CONFIG, db_url=outage.db_url)
            )
            site = Site(outage, server, free_port())
            require_ok(server, register(server, tmp_path, *BOB, port=site.bob_port))
            wait_for_aors(outage.db_url, {f"sip:bob@{DOMAIN}"}, 10)
            sites.append(site)

        with ExitStack() as down:
            for site in sites:
                down.enter_context(site.outage.down())
            stopped = time.monotonic()
            for site in sites:
                site.start_traffic(tmp_path / f"traffic{sites.index(site)}")
            for site in sites:
                site.finish_traffic()
            assert time.monotonic() - stopped < OUTAGE_S, "the traffic outlasted the outage"
            time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped)))

        expected = {f"sip:{user}@{DOMAIN}" for user, _ in USERS} | {f"sip:bob@{DOMAIN}"}
        for site in sites:
            require_ok(site.server, *site.results)
            assert site.pong is not None and site.pong.startswith(b"SIP/2.0 200 "), site.pong
        for site in sites:
            # The write-behind queue retries with back-off (at most 32 s apart after 30 s down).
            wait_for_aors(site.outage.db_url, expected, 45)
            assert re.search(r"write-behind flush of \d+ writes failed", site.server.log()), (
                "no flush failed: no outage"
            )
