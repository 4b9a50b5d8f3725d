"""``scaserver subscriber|trusted|line``: the operator's directory, on SQLite and PostgreSQL."""

from __future__ import annotations

import io

import pytest

from scaserver.cli import main
from scaserver.sca.line import LineAlias
from scaserver.sip.digest import Algorithm, compute_ha1
from scaserver.store.directory import directory_generation
from scaserver.store.sql import SqlStore


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_subscriber_add_list_rm_stores_ha1_never_the_password(
    migrated_db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        run(capsys, "subscriber", "add", "alice@Example.COM", "--password", "pw", "--db", migrated_db_url)[0]
        == 0
    )
    store = SqlStore(migrated_db_url)
    try:
        [credentials] = store.subscribers.load_all()
    finally:
        store.close()
    assert (credentials.username, credentials.realm) == ("alice", "example.com")
    assert credentials.ha1_sha256 == compute_ha1(Algorithm.SHA_256, "alice", "example.com", "pw")
    assert credentials.ha1_md5 == compute_ha1(Algorithm.MD5, "alice", "example.com", "pw")
    assert run(capsys, "subscriber", "list", "--db", migrated_db_url)[1] == "alice@example.com\n"
    assert run(capsys, "subscriber", "rm", "alice@example.com", "--db", migrated_db_url)[0] == 0
    assert run(capsys, "subscriber", "list", "--db", migrated_db_url)[1] == ""


def test_subscriber_password_from_stdin(
    migrated_db_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("from-stdin\n"))
    assert run(capsys, "subscriber", "add", "bob@example.com", "--db", migrated_db_url)[0] == 0
    store = SqlStore(migrated_db_url)
    try:
        [credentials] = store.subscribers.load_all()
    finally:
        store.close()
    assert credentials.ha1_sha256 == compute_ha1(Algorithm.SHA_256, "bob", "example.com", "from-stdin")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("subscriber", "add", "no-domain", "--password", "x"), "expected USER@DOMAIN"),
        (("subscriber", "add", "a@b", "--password", ""), "must not be empty"),
        (("subscriber", "rm", "ghost@example.com"), "no subscriber ghost@example.com"),
        (("trusted", "add", "not-an-address"), "not-an-address"),
        (("trusted", "rm", "192.0.2.0/24"), "no trusted peer 192.0.2.0/24"),
        (("line", "add", "sip:2001@example.com", "--appearances", "0"), "at least one appearance"),
        (("line", "rm", "sip:9999@example.com"), "no shared line sip:9999@example.com"),
        (("line", "members", "sip:9999@example.com", "--add", "x"), "no shared line"),
        (("line", "add", "tel:+123"), "expected a SIP AoR"),
        (("line", "alias", "add", "sip:100@example.com", "sip:9999@example.com"), "no shared line"),
        (("line", "alias", "add", "tel:+100", "sip:9999@example.com"), "expected a SIP AoR"),
        (("line", "alias", "rm", "sip:100@example.com"), "no alias sip:100@example.com"),
    ],
)
def test_directory_errors_exit_1_with_one_line(
    migrated_db_url: str, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], message: str
) -> None:
    status, out, err = run(capsys, *argv, "--db", migrated_db_url)
    assert status == 1
    assert message in err and err.count("\n") == 1
    assert out == ""


def test_trusted_peers_add_list_rm(migrated_db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    db = ("--db", migrated_db_url)
    assert run(capsys, "trusted", "add", "203.0.113.0/24", "--transport", "udp", "--tag", "pstn", *db)[0] == 0
    assert run(capsys, "trusted", "add", "2001:db8::/32", *db)[0] == 0
    listed = run(capsys, "trusted", "list", *db)[1].splitlines()
    assert sorted(listed) == ["2001:db8::/32\tany\t", "203.0.113.0/24\tudp\tpstn"]
    assert run(capsys, "trusted", "rm", "203.0.113.0/24", "--transport", "udp", *db)[0] == 0
    assert run(capsys, "trusted", "list", *db)[1] == "2001:db8::/32\tany\t\n"


def test_lines_and_members(migrated_db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    db = ("--db", migrated_db_url)
    assert (
        run(capsys, "line", "add", "2001@Example.com", "--appearances", "3", "--member", "alice", *db)[0] == 0
    )
    assert run(capsys, "line", "members", "sip:2001@example.com", "--add", "bob", "--remove", "alice", *db)[
        1
    ] == ("bob\n")
    assert run(capsys, "line", "list", *db)[1] == "sip:2001@example.com\t3\tbob\t-\t-\n"
    pushed = ("line", "add", "sip:2001@example.com", "--member", "bob", "--push-members")
    assert run(capsys, *pushed, *db)[0] == 0
    assert run(capsys, "line", "list", *db)[1] == "sip:2001@example.com\t2\tbob\tpush-members\t-\n"
    assert run(capsys, "line", "rm", "sip:2001@example.com", *db)[0] == 0
    assert run(capsys, "line", "list", *db)[1] == ""


def test_line_aliases_add_list_rm_and_go_with_their_line(
    migrated_db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    db = ("--db", migrated_db_url)
    assert run(capsys, "line", "add", "sip:2001@example.com", "--member", "alice", *db)[0] == 0
    store = SqlStore(migrated_db_url)
    try:
        before = directory_generation(store.engine)
        assert run(capsys, "line", "alias", "add", "100@Example.COM", "sip:2001@example.com", *db)[1] == (
            "alias sip:100@example.com of line sip:2001@example.com saved\n"
        )
        assert directory_generation(store.engine) == before + 1
        assert (
            run(capsys, "line", "alias", "add", "sip:+15551000@gw.example.net:5060", "2001@example.com", *db)[
                0
            ]
            == 0
        )
        assert store.line_aliases.load_all() == [
            LineAlias("sip:+15551000@gw.example.net", "sip:2001@example.com"),
            LineAlias("sip:100@example.com", "sip:2001@example.com"),
        ]
        assert run(capsys, "line", "alias", "list", *db)[1] == (
            "sip:+15551000@gw.example.net\tsip:2001@example.com\nsip:100@example.com\tsip:2001@example.com\n"
        )
        assert run(capsys, "line", "list", *db)[1] == (
            "sip:2001@example.com\t2\talice\t-\tsip:+15551000@gw.example.net,sip:100@example.com\n"
        )
        assert run(capsys, "line", "alias", "rm", "sip:+15551000@gw.example.net", *db)[0] == 0
        assert run(capsys, "line", "alias", "list", *db)[1] == "sip:100@example.com\tsip:2001@example.com\n"
        moved = directory_generation(store.engine)
        assert run(capsys, "line", "rm", "sip:2001@example.com", *db)[0] == 0
        assert store.line_aliases.load_all() == []
        assert directory_generation(store.engine) == moved + 1
    finally:
        store.close()


@pytest.mark.parametrize(
    ("alias", "line", "message"),
    [
        ("sip:2001@example.com", "sip:2001@example.com", "sip:2001@example.com cannot be an alias of itself"),
        ("sip:2002@example.com", "sip:2001@example.com", "sip:2002@example.com is a shared line"),
        ("sip:300@example.com", "sip:100@example.com", "no shared line sip:100@example.com"),
    ],
)
def test_line_alias_refusals(
    migrated_db_url: str, capsys: pytest.CaptureFixture[str], alias: str, line: str, message: str
) -> None:
    db = ("--db", migrated_db_url)
    for aor in ("sip:2001@example.com", "sip:2002@example.com"):
        assert run(capsys, "line", "add", aor, *db)[0] == 0
    assert run(capsys, "line", "alias", "add", "sip:100@example.com", "sip:2001@example.com", *db)[0] == 0
    status, out, err = run(capsys, "line", "alias", "add", alias, line, *db)
    assert (status, out) == (1, "")
    assert err == f"scaserver line alias: {message}\n"
    assert run(capsys, "line", "alias", "list", *db)[1] == "sip:100@example.com\tsip:2001@example.com\n"


def test_directory_refuses_a_database_that_is_behind(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = run(capsys, "subscriber", "list", "--db", sqlite_url)
    assert status == 1
    assert "scaserver db upgrade" in err
