"""RFC 3263 against a real DNS server: the upstream reached by name, SRV failover, TTLs, and
hostile answers, with the real scaserver process on loopback.

The DNS server is ``tests/system/dnszone.py`` (``twisted.names``, UDP and TCP) on 127.0.0.1 and
a free port, serving the ``pbx.test`` zone from a JSON file it re-reads on SIGHUP.  The
upstreams are the relay tests' ``Victim`` (a UDP and TCP listener on 127.0.0.3 answering 200);
the caller is a trusted peer on 127.0.0.2 calling a foreign domain, so its requests go to
``[upstream]``.  127.0.0.4 has nothing listening: a dead target.
"""

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

from tests.system.server import ROOT, SCASERVER, RunningServer, free_port, running_server
from tests.system.test_relay import Peer, Victim

pytestmark = pytest.mark.system

CALLER_HOST = "127.0.0.2"
DEAD_HOST = "127.0.0.4"
FOREIGN = "sip:bob@elsewhere.example.net"
TTL = 2


class Zone:
    """The DNS server process and its zone file."""

    def __init__(self, workdir: Path) -> None:
        self.path = workdir / "zone.json"
        self.port = free_port()
        self.rows: list[list[object]] = []
        self.write([])
        self.queries = workdir / "queries.log"
        with self.queries.open("wb") as queries:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.system.dnszone", "127.0.0.1", str(self.port), str(self.path)],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=queries,
            )
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == b"ready"

    def write(self, rows: list[list[object]]) -> None:
        self.rows = rows
        self.path.write_text(json.dumps(rows))

    def change(self, rows: list[list[object]]) -> None:
        self.write(rows)
        self.process.send_signal(signal.SIGHUP)

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(5)


def config(zone: Zone, transport: str) -> str:
    return f"""
[server]
domains = ["example.test"]
[auth]
require = false
[upstream]
host = "pbx.test"
port = 0
transport = "{transport}"
[dns]
servers = ["127.0.0.1:{zone.port}"]
timeout = 2.0
failed_target_hold = 60
"""


@pytest.fixture
def zone(tmp_path: Path) -> Iterator[Zone]:
    started = Zone(tmp_path)
    try:
        yield started
    finally:
        started.close()


@pytest.fixture
def victims() -> Iterator[tuple[Victim, Victim]]:
    first, second = Victim(), Victim()
    try:
        yield first, second
    finally:
        first.close()
        second.close()


def start(tmp_path: Path, zone: Zone, transport: str) -> Iterator[RunningServer]:
    workdir = tmp_path / "server"
    db_url = f"sqlite:///{tmp_path / 'scaserver.db'}"
    subprocess.run([*SCASERVER, "db", "upgrade", "--db", db_url], check=True, cwd=ROOT, capture_output=True)
    subprocess.run(
        [*SCASERVER, "trusted", "add", f"{CALLER_HOST}/32", "--tag", "caller", "--db", db_url],
        check=True,
        cwd=ROOT,
        capture_output=True,
    )
    with running_server(workdir, config(zone, transport), db_url=db_url) as server:
        yield server


def message(caller: Peer, *, routes: tuple[str, ...] = ()) -> int:
    call_id = uuid.uuid4().hex
    caller.send(caller.request("MESSAGE", FOREIGN, call_id=call_id, routes=routes))
    return caller.final(call_id).status


def wait_for_log(server: RunningServer, text: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in server.log():
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} never logged:\n{server.log()}")
        time.sleep(0.05)


def test_the_upstream_is_reached_by_name_through_srv_and_a_and_follows_a_ttl_change(
    tmp_path: Path, zone: Zone, victims: tuple[Victim, Victim]
) -> None:
    first, second = victims
    zone.change(
        [
            ["_sip._udp.pbx.test", "SRV", TTL, 10, 0, first.port, "one.pbx.test"],
            ["one.pbx.test", "A", TTL, "127.0.0.3"],
        ]
    )
    for server in start(tmp_path, zone, "udp"):
        caller = Peer(server, CALLER_HOST, "udp")
        try:
            assert message(caller) == 200
            assert [r.method for _, r in first.received] == ["MESSAGE"]
            zone.change(
                [
                    ["_sip._udp.pbx.test", "SRV", TTL, 10, 0, second.port, "one.pbx.test"],
                    ["one.pbx.test", "A", TTL, "127.0.0.3"],
                ]
            )
            assert message(caller) == 200  # still cached: the old target
            assert len(first.received) == 2 and second.received == []
            time.sleep(TTL + 0.5)  # the real DNS server's TTL must pass in real time
            assert message(caller) == 200
            assert [r.method for _, r in second.received] == ["MESSAGE"]
            assert len(first.received) == 2
        finally:
            caller.close()


def test_a_dead_first_srv_target_fails_over_to_the_second_and_is_then_avoided(
    tmp_path: Path, zone: Zone, victims: tuple[Victim, Victim]
) -> None:
    live, _ = victims
    dead_port = free_port(DEAD_HOST)
    zone.change(
        [
            ["_sip._tcp.pbx.test", "SRV", 60, 10, 0, dead_port, "dead.pbx.test"],
            ["_sip._tcp.pbx.test", "SRV", 60, 20, 0, live.port, "live.pbx.test"],
            ["dead.pbx.test", "A", 60, DEAD_HOST],
            ["live.pbx.test", "A", 60, "127.0.0.3"],
        ]
    )
    for server in start(tmp_path, zone, "tcp"):
        caller = Peer(server, CALLER_HOST, "udp")
        try:
            started = time.monotonic()
            assert message(caller) == 200
            assert time.monotonic() - started < 32  # within one transaction time-out (Timer F)
            assert [(t, r.method) for t, r in live.received] == [("tcp", "MESSAGE")]
            assert f"cannot connect to tcp:{DEAD_HOST}:{dead_port}" in server.log()
            assert "failed over from" in server.log() or "held down" in server.log()
            assert message(caller) == 200  # the next request goes straight to the live one
            assert len(live.received) == 2
            assert server.log().count(f"cannot connect to tcp:{DEAD_HOST}:{dead_port}") == 1
        finally:
            caller.close()


@pytest.mark.parametrize(
    ("rows", "route", "logged"),
    [
        (
            [
                ["loop.pbx.test", "CNAME", 60, "loop2.pbx.test"],
                ["loop2.pbx.test", "CNAME", 60, "loop.pbx.test"],
            ],
            "<sip:loop.pbx.test:5060;lr>",
            "CNAME loop or chain longer than",
        ),
        (
            [["big.pbx.test", "A", 60, "127.0.0.3"] for _ in range(300)],  # far over 512 bytes
            "<sip:big.pbx.test:{port};lr>",
            "has 300 records: only 32 used",
        ),
    ],
    ids=["cname-loop", "oversized-truncated"],
)
def test_hostile_answers_are_refused_with_a_log_line_and_the_server_keeps_serving(
    tmp_path: Path,
    *,
    zone: Zone,
    victims: tuple[Victim, Victim],
    rows: list[list[object]],
    route: str,
    logged: str,
) -> None:
    live, _ = victims
    upstream = [
        ["_sip._udp.pbx.test", "SRV", 60, 10, 0, live.port, "one.pbx.test"],
        ["one.pbx.test", "A", 60, "127.0.0.3"],
    ]
    zone.change([*upstream, *rows])
    for server in start(tmp_path, zone, "udp"):
        caller = Peer(server, CALLER_HOST, "udp")
        try:
            status = message(caller, routes=(route.format(port=live.port),))
            wait_for_log(server, logged)
            if "big" in route:
                assert status == 200  # 32 of the addresses were used
                # The UDP answer was truncated: the locator asked again over TCP.
                assert "tcp big.pbx.test" in zone.queries.read_text().splitlines()
            else:
                assert status == 500  # RFC 3261 16.7 step 6: our 503 becomes a 500
            caller.barrier()
            assert message(caller) == 200  # the upstream by name still works
            assert server.process.poll() is None
        finally:
            caller.close()


def test_naptr_chooses_the_upstream_transport(
    tmp_path: Path, zone: Zone, victims: tuple[Victim, Victim]
) -> None:
    live, _ = victims
    zone.change(
        [
            ["pbx.test", "NAPTR", 60, 10, 10, "s", "SIP+D2T", "_sip._tcp.pbx.test"],
            ["pbx.test", "NAPTR", 60, 20, 10, "s", "SIP+D2U", "_sip._udp.pbx.test"],
            ["_sip._tcp.pbx.test", "SRV", 60, 10, 0, live.port, "live.pbx.test"],
            ["_sip._udp.pbx.test", "SRV", 60, 10, 0, live.port, "live.pbx.test"],
            ["live.pbx.test", "A", 60, "127.0.0.3"],
        ]
    )
    for server in start(tmp_path, zone, ""):
        wait_for_log(server, "pbx.test: RFC 3263 chose TCP")
        caller = Peer(server, CALLER_HOST, "udp")
        try:
            assert message(caller) == 200
            assert [(t, r.method) for t, r in live.received] == [("tcp", "MESSAGE")]
        finally:
            caller.close()


def test_a_naptr_loop_is_not_followed_and_the_server_keeps_serving(
    tmp_path: Path, zone: Zone, victims: tuple[Victim, Victim]
) -> None:
    live, _ = victims
    zone.change(
        [
            ["pbx.test", "NAPTR", 60, 10, 10, "", "SIP+D2T", "pbx.test"],  # non-terminal, to itself
            ["pbx.test", "NAPTR", 60, 20, 10, "", "SIP+D2U", "pbx.test"],
            ["_sip._udp.pbx.test", "SRV", 60, 10, 0, live.port, "live.pbx.test"],
            ["live.pbx.test", "A", 60, "127.0.0.3"],
        ]
    )
    for server in start(tmp_path, zone, ""):
        wait_for_log(server, "NAPTR of pbx.test: no usable SIP service")
        caller = Peer(server, CALLER_HOST, "udp")
        try:
            assert message(caller) == 200  # SRV _sip._udp, as with no NAPTR at all
            assert [(t, r.method) for t, r in live.received] == [("udp", "MESSAGE")]
            naptr_queries = [q for q in zone.queries.read_text().splitlines() if q.endswith(" pbx.test")]
            assert len(naptr_queries) == 1  # asked once, never followed
        finally:
            caller.close()
