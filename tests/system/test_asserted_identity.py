"""RFC 3325 on the wire, against the real scaserver process: the trusted upstream (a PBX on
127.0.0.2, trusted as the configured upstream) hears the identity the server vouches for and
never one a phone made up.

A member of the shared line calls a foreign number: the INVITE reaching the upstream socket
carries ``P-Asserted-Identity: <sip:2001@example.test>`` (``sca.insert_pai``), whatever the
phone put there.  A phone that is no member forges a P-Asserted-Identity and a
P-Preferred-Identity: neither reaches the upstream, which sees the phone's own identity.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from scaserver.sip.message import Request
from tests.system.accounts import add_subscribers
from tests.system.handset import Handset
from tests.system.server import RunningServer, running_server

pytestmark = pytest.mark.system

DOMAIN = "example.test"
LINE = f"sip:2001@{DOMAIN}"
FOREIGN = "sip:+15551234@pstn.example.net"
FORGED = (
    ("P-Asserted-Identity", "<sip:ceo@example.test>"),
    ("P-Preferred-Identity", "<sip:ceo@example.test>"),
)


def config(upstream_port: int) -> str:
    return f"""
[server]
domains = ["{DOMAIN}"]
[auth]
require = true
algorithms = ["MD5"]
[database]
flush_interval = 0.3
[upstream]
host = "127.0.0.2"
port = {upstream_port}
[sca]
insert_pai = true
[[sca.lines]]
aor = "{LINE}"
appearances = 2
members = ["sip:alice@{DOMAIN}", "sip:bob@{DOMAIN}"]
"""


@pytest.fixture
def upstream() -> Iterator[Handset]:
    pbx = Handset("upstream", ("127.0.0.1", 0), line=f"sip:pbx@{DOMAIN}", host="127.0.0.2")
    try:
        yield pbx
    finally:
        pbx.close()


@pytest.fixture
def server(tmp_path: Path, upstream: Handset) -> Iterator[RunningServer]:
    db_url = f"sqlite:///{tmp_path / 'sca.db'}"
    add_subscribers(db_url, [("alice", "alice-secret"), ("carol", "carol-secret")])
    with running_server(tmp_path / "server", config(upstream.port), db_url=db_url) as running:
        yield running


def call_upstream(phone: Handset, upstream: Handset) -> Request:
    """``phone`` calls the foreign number with forged identities; the INVITE the upstream got
    (answered 486, so the call ends there)."""
    transaction, _ = phone.invite(FOREIGN, extra=FORGED)
    challenge = phone.wait_response(transaction)
    assert challenge.status == 407, challenge
    phone.start(phone.with_credentials(transaction.request, challenge))
    invite = upstream.expect_request("INVITE")
    upstream.respond(invite, 486)
    return invite


def test_a_members_call_reaches_the_trusted_upstream_with_the_lines_identity(
    server: RunningServer, upstream: Handset
) -> None:
    alice = Handset(
        "alice", ("127.0.0.1", server.sip_port), line=LINE, username="alice", password="alice-secret"
    )
    try:
        invite = call_upstream(alice, upstream)
    finally:
        alice.close()
    assert invite.headers.values("P-Asserted-Identity") == (f"<{LINE}>",), server.log()[-3000:]
    assert "P-Preferred-Identity" not in invite.headers


def test_a_forged_identity_of_an_untrusted_phone_never_reaches_the_upstream(
    server: RunningServer, upstream: Handset
) -> None:
    carol = Handset(
        "carol",
        ("127.0.0.1", server.sip_port),
        line=f"sip:carol@{DOMAIN}",
        username="carol",
        password="carol-secret",
    )
    try:
        invite = call_upstream(carol, upstream)
    finally:
        carol.close()
    assert invite.headers.values("P-Asserted-Identity") == (f"<sip:carol@{DOMAIN}>",), server.log()[-3000:]
    assert "P-Preferred-Identity" not in invite.headers
