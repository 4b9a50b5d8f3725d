"""Migrations against SQLite and PostgreSQL: head matches ``tables.metadata``, up/down/up
works, and ``check_up_to_date`` names the command to run."""

from __future__ import annotations

import ast
import re

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select

from scaserver.store import migrate, tables
from scaserver.store.engine import make_engine


def test_fresh_database_has_no_revision_and_is_reported_out_of_date(db_url: str) -> None:
    assert migrate.current_revision(db_url) is None
    with pytest.raises(migrate.SchemaOutOfDateError, match=re.escape("run `scaserver db upgrade`")) as raised:
        migrate.check_up_to_date(db_url)
    assert raised.value.current is None
    assert raised.value.head == migrate.head_revision()
    assert "has no scaserver schema" in str(raised.value)


def test_upgrade_to_head_is_up_to_date_and_idempotent(db_url: str) -> None:
    migrate.upgrade(db_url)
    migrate.upgrade(db_url)
    assert migrate.current_revision(db_url) == migrate.head_revision()
    migrate.check_up_to_date(db_url)


def test_head_schema_matches_the_metadata(migrated_db_url: str) -> None:
    # alembic check raises when autogenerate finds any difference
    command.check(migrate.alembic_config(migrated_db_url))


def test_head_creates_every_table_of_the_metadata(migrated_db_url: str) -> None:
    engine = make_engine(migrated_db_url)
    try:
        names = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert set(tables.metadata.tables) | {"alembic_version"} == names


def test_kamailio_version_row_is_present(migrated_db_url: str) -> None:
    engine = make_engine(migrated_db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(tables.version.c.table_name, tables.version.c.table_version)).all()
    finally:
        engine.dispose()
    assert [tuple(row) for row in rows] == [("sca_subscriptions", tables.SCA_SUBSCRIPTIONS_TABLE_VERSION)]


def test_kamailio_index_names_are_kept(migrated_db_url: str) -> None:
    engine = make_engine(migrated_db_url)
    try:
        inspector = inspect(engine)
        indexes = {ix["name"] for ix in inspector.get_indexes("sca_subscriptions")}
        uniques = {uq["name"] for uq in inspector.get_unique_constraints("sca_subscriptions")}
    finally:
        engine.dispose()
    assert {"sca_expires_idx", "sca_subscribers_idx", "sca_subscriptions_key_idx"} <= indexes
    assert "sca_subscriptions_idx" in uniques | indexes


def test_downgrade_to_base_and_upgrade_again(db_url: str) -> None:
    migrate.upgrade(db_url)
    migrate.downgrade(db_url, "base")
    assert migrate.current_revision(db_url) is None
    engine = make_engine(db_url)
    try:
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    finally:
        engine.dispose()
    migrate.upgrade(db_url)
    migrate.check_up_to_date(db_url)


def test_database_behind_head_names_the_upgrade_command(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    migrate.upgrade(db_url)
    head = migrate.head_revision()
    monkeypatch.setattr(migrate, "head_revision", lambda: "0099")
    with pytest.raises(migrate.SchemaOutOfDateError) as raised:
        migrate.check_up_to_date(db_url)
    assert str(raised.value) == (
        f"the database is at schema revision {head}, this scaserver needs revision 0099: "
        "run `scaserver db upgrade` first"
    )


def test_history_is_one_linear_chain_and_migrations_never_import_tables() -> None:
    script = ScriptDirectory.from_config(migrate.alembic_config("sqlite://"))
    assert len(script.get_heads()) == 1
    assert len(script.get_bases()) == 1
    revisions = list(script.walk_revisions())
    assert all(not isinstance(rev.down_revision, tuple) for rev in revisions)
    versions = [item for item in (migrate.MIGRATIONS_DIR / "versions").iterdir() if item.name.endswith(".py")]
    assert versions
    for path in versions:
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
        assert not any(name.startswith("scaserver") for name in imported), path.name


def test_offline_sql_script_can_be_rendered(capsys: pytest.CaptureFixture[str]) -> None:
    config = migrate.alembic_config("postgresql+psycopg://scaserver@db.invalid/scaserver")
    command.upgrade(config, "head", sql=True)
    out = capsys.readouterr().out
    assert "CREATE TABLE sca_subscriptions" in out
    assert "INSERT INTO alembic_version" in out
