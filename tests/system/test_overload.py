"""The transaction bounds against the real server: answered requests leave settled
transactions behind (Timer J keeps each 32 s on UDP) that do not count as work in progress;
requests left without a final response do, and beyond ``security.max_transactions`` of
them a new request gets 503 with Retry-After, logged with the bound it met."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.system.handset import Handset, handsets
from tests.system.server import RunningServer, running_server

pytestmark = pytest.mark.system

DOMAIN = "example.test"
MAX_IN_PROGRESS = 4


def config() -> str:
    return f"""
[server]
domains = ["{DOMAIN}"]
[auth]
require = false
[security]
allow = ["127.0.0.0/8"]
max_transactions = {MAX_IN_PROGRESS}
"""


def phone(server: RunningServer, name: str) -> Handset:
    return Handset(name, ("127.0.0.1", server.sip_port), line=f"sip:{name}@{DOMAIN}")


@contextmanager
def silent_socket() -> Iterator[socket.socket]:
    """A UDP address that receives and never answers: a phone gone quiet."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock
    finally:
        sock.close()


def test_answered_requests_many_times_max_transactions_are_all_answered(tmp_path: Path) -> None:
    with (
        running_server(tmp_path / "server", config()) as server,
        handsets(phone(server, "alice")) as (alice,),
    ):
        statuses = [alice.register().status for _ in range(10 * MAX_IN_PROGRESS)]
    assert statuses == [200] * (10 * MAX_IN_PROGRESS)


def test_requests_without_a_final_response_fill_the_bound_and_the_next_gets_503(tmp_path: Path) -> None:
    with running_server(tmp_path / "server", config()) as server, silent_socket() as quiet:
        with handsets(phone(server, "alice"), phone(server, "bob")) as (alice, bob):
            alice.contact = f"sip:alice@127.0.0.1:{quiet.getsockname()[1]}"
            assert alice.register().status == 200
            # Each INVITE relayed to alice's silent phone: a server and a client
            # transaction in progress, until Timer B/C (the test ends well before).
            ringing = [bob.invite(f"sip:alice@{DOMAIN}")[0] for _ in range(MAX_IN_PROGRESS // 2)]
            for transaction in ringing:
                assert bob.wait_response(transaction, lambda r: r.status == 100).status == 100
            refused = bob.register()
        log = server.log()
    assert refused.status == 503
    assert refused.headers.get("Retry-After") == "5"
    assert f"refused 503 (service-unavailable): {MAX_IN_PROGRESS} transactions in progress" in log
