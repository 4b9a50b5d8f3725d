"""The server secret survives a restart: kept in ``server.secret_file``, created once."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from scaserver.app import make_core
from scaserver.config.schema import AuthSettings, ServerSettings, Settings
from scaserver.edge.resolver import HostsTable, resolvable_in
from scaserver.edge.secret import SecretFileError, server_secret
from scaserver.proxy.relay import derive_route_key
from scaserver.sip.message import Peer, Request, Response, Transport
from scaserver.sip.trust import TrustedPeers
from tests.builders import Wire


def test_the_secret_is_created_once_private_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "var" / "scaserver.secret"
    first = server_secret(str(path))
    assert len(first) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert server_secret(str(path)) == first  # the next start
    assert [p.name for p in path.parent.iterdir()] == ["scaserver.secret"]  # nothing left aside


def test_an_operator_secret_is_used_as_written(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("a passphrase of the operator's own\n")
    assert server_secret(str(path)) == b"a passphrase of the operator's own"


def test_no_file_means_a_new_secret_for_each_process() -> None:
    assert server_secret("") != server_secret("")


def test_a_short_secret_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("short\n")
    with pytest.raises(SecretFileError, match="at least 16 bytes"):
        server_secret(str(path))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_secret_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("0" * 64)
    path.chmod(0)
    with pytest.raises(SecretFileError, match="Permission denied"):
        server_secret(str(path))


def test_the_core_signs_record_routes_with_a_key_derived_from_the_secret() -> None:
    settings = Settings(server=ServerSettings(domains=("a.test",)))

    def core(secret: bytes) -> bytes:
        made = make_core(
            settings, credentials=lambda user, realm: None, trusted=TrustedPeers(()), lines=[], secret=secret
        )
        return made.identity.route_key

    assert core(b"s" * 32) == derive_route_key(b"s" * 32) == core(b"s" * 32)
    assert core(b"s" * 32) != core(b"t" * 32)


def test_a_dialog_record_routed_before_a_restart_is_relayed_after_it(tmp_path: Path) -> None:
    settings = Settings(server=ServerSettings(domains=("a.test",)), auth=AuthSettings(require=False))
    secret_file = str(tmp_path / "scaserver.secret")

    def start() -> Wire:
        return Wire(
            make_core(
                settings,
                credentials=lambda user, realm: None,
                trusted=TrustedPeers(()),
                lines=[],
                secret=server_secret(secret_file),
            )
        )

    before = start()
    register = message("REGISTER", "sip:a.test", BOB, "bob", extra="Expires: 600\r\n")
    assert [m.status for m, _ in before.deliver(register, BOB) if isinstance(m, Response)] == [200]
    [(invite, _)] = before.deliver(message("INVITE", "sip:bob@a.test", ALICE, "alice"), ALICE)
    assert isinstance(invite, Request)
    route = invite.headers.get("Record-Route") or ""
    bye = message(
        "BYE", f"sip:bob@{BOB.host}:{BOB.port}", ALICE, "alice", to_tag="b1", extra=f"Route: {route}\r\n"
    )
    after = start()  # a new process: no transaction, only the secret file and the stored bindings
    after.core.registrar.restore(list(before.core.registrar.location.all_bindings()), after.now)
    assert [(m.method, p) for m, p in after.deliver(bye, ALICE) if isinstance(m, Request)] == [("BYE", BOB)]
    forged = bye.replace("rrsig=", "rrsig=0").replace("z9hG4bKBYE", "z9hG4bKBYE2")
    assert [m.status for m, _ in after.deliver(forged, ALICE) if isinstance(m, Response)] == [403]
    elsewhere = Wire(
        make_core(
            settings,
            credentials=lambda user, realm: None,
            trusted=TrustedPeers(()),
            lines=[],
            secret=b"x" * 32,
        )
    )
    assert [m.status for m, _ in elsewhere.deliver(bye, ALICE) if isinstance(m, Response)] == [403]


ALICE = Peer(Transport.UDP, "198.51.100.10", 5062)
BOB = Peer(Transport.UDP, "198.51.100.20", 5064)


def message(method: str, uri: str, peer: Peer, user: str, *, to_tag: str = "", extra: str = "") -> str:
    to = f"<{uri}>" + (f";tag={to_tag}" if to_tag else "")
    if method == "REGISTER":
        to = f"<sip:{user}@a.test>"
    return (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {peer.host}:{peer.port};branch=z9hG4bK{method}{to_tag};rport\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:{user}@a.test>;tag=ft1\r\nTo: {to}\r\n"
        f"Call-ID: restart-{method if method == 'REGISTER' else 'call'}\r\nCSeq: 1 {method}\r\n"
        f"Contact: <sip:{user}@{peer.host}:{peer.port}>\r\n{extra}Content-Length: 0\r\n\r\n"
    )


def test_the_core_knows_numeric_hosts_and_the_names_of_the_hosts_file() -> None:
    known = resolvable_in(HostsTable.parse("192.0.2.7 pbx.example.net\n"))
    assert known("pbx.example.net")
    assert known("198.51.100.1")
    assert known("[2001:db8::1]")
    assert not known("nowhere.invalid")
