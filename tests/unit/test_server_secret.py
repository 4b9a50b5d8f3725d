"""The server secret survives a restart: kept in ``server.secret_file``, created once."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from scaserver.app import SecretFileError, make_core, server_secret
from scaserver.config import ServerSettings, Settings
from scaserver.proxy.relay import derive_route_key
from scaserver.sip.trust import TrustedPeers


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
