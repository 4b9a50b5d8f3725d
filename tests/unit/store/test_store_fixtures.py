"""The database fixtures' policy when PostgreSQL is unavailable (tests/conftest.py)."""

from __future__ import annotations

import pytest

from tests.conftest import PgServer, _require_pg

REASON = "PostgreSQL unavailable: no PostgreSQL server binaries"


@pytest.mark.parametrize(("name", "value"), [("CI", "true"), ("CI", "TRUE"), ("SCASERVER_REQUIRE_PG", "1")])
def test_missing_postgres_fails_when_required(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("SCASERVER_REQUIRE_PG", raising=False)
    monkeypatch.setenv(name, value)
    with pytest.raises(pytest.fail.Exception, match=REASON):
        _require_pg(REASON)


def test_missing_postgres_skips_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "false")
    monkeypatch.delenv("SCASERVER_REQUIRE_PG", raising=False)
    with pytest.raises(pytest.skip.Exception, match=REASON):
        _require_pg(REASON)


def test_available_server_is_returned() -> None:
    server = PgServer("postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    assert _require_pg(server) is server
    assert not server.owned
