"""The batched writes of ``store/writes.py`` store the same rows whichever path runs them: the
driver's ``executemany`` of a cached compiled statement with positional parameters (SQLite's
``?``, psycopg's ``%s``) or SQLAlchemy's ``Connection.execute`` (any statement the cache
cannot take)."""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterator

import pytest
from sqlalchemy import Column, Float, Integer, MetaData, String, Table, create_engine, insert, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.postgresql.psycopg import dialect as postgresql_dialect
from sqlalchemy.dialects.sqlite import dialect as sqlite_dialect
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from scaserver.store import tables
from scaserver.store.engine import make_engine
from scaserver.store.writes import _driver_statement, _upsert_statement, insert_rows, upsert_rows
from tests.conftest import pg_schema


def _location_row(n: int, generation: int) -> dict[str, object]:
    return {
        "ruid": f"ruid-{n}",
        "aor": f"sip:{n}@example.com",
        "key_kind": "contact",
        "key_value": f"sip:{n}@192.0.2.1:5060",
        "username": str(n),
        "domain": "example.com",
        "contact": f"<sip:{n}@192.0.2.1:5060>",
        "received": "sip:192.0.2.1:5060",
        "path": None if n % 2 else "<sip:edge.example.com;lr>",
        "expires": 1_800_000_000 + generation,  # an int in a Float column: the processor's float
        "q": None if n % 3 else 0.5,
        "callid": f"call-{n}",
        "cseq": generation,
        "last_modified": 1_700_000_000.25 + generation,
        "registered_at": 1_700_000_000,
        "flags": 0,
        "user_agent": "phone" if n % 4 else "Phone\udcff\x00",  # escaped on either path
        "socket": None,
        "instance": None,
        "reg_id": None,
        "params": "[]",
        "push": "[]",
    }


def _stored(url: str, table: Table) -> list[tuple[object, ...]]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(select(table).order_by(table.c.id))]
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def two_databases(request: pytest.FixtureRequest, tmp_path: object) -> Iterator[tuple[str, str]]:
    """Two empty databases of the same kind, the tables made."""
    if request.param == "sqlite":
        urls = (f"sqlite:///{tmp_path}/driver.db", f"sqlite:///{tmp_path}/sqlalchemy.db")
        for url in urls:
            tables.metadata.create_all(create_engine(url))
        yield urls
        return
    database: str = request.getfixturevalue("pg_database")
    with pg_schema(database, "driver") as driver, pg_schema(database, "sqlalchemy") as sqlalchemy:
        for url in (driver, sqlalchemy):
            engine = create_engine(url)
            tables.metadata.create_all(engine)
            engine.dispose()
        yield driver, sqlalchemy


def test_an_upsert_by_the_driver_stores_what_sqlalchemy_stores(two_databases: tuple[str, str]) -> None:
    driver_url, sqlalchemy_url = two_databases
    first = [_location_row(n, 1) for n in range(7)]
    second = [_location_row(n, 2) for n in range(3, 10)]  # 3..6 updated, 7..9 new
    engine = make_engine(driver_url)
    assert _driver_statement(engine.dialect, tables.location, tuple(first[0]), ("ruid",)) is not None
    for rows in (first, second):
        with engine.begin() as conn:
            upsert_rows(conn, tables.location, ("ruid",), rows)
    engine.dispose()
    engine = make_engine(sqlalchemy_url)
    upsert = postgresql_insert if engine.dialect.name == "postgresql" else sqlite_insert
    for rows in (first, second):
        statement = upsert(tables.location)
        updates = {name: statement.excluded[name] for name in rows[0] if name != "ruid"}
        with engine.begin() as conn:
            conn.execute(statement.on_conflict_do_update(index_elements=["ruid"], set_=updates), rows)
    engine.dispose()
    stored = _stored(driver_url, tables.location)
    assert len(stored) == 10
    assert stored == _stored(sqlalchemy_url, tables.location)
    assert all(isinstance(row[tables.location.c.keys().index("expires")], float) for row in stored)
    assert {row[tables.location.c.keys().index("user_agent")] for row in stored} == {
        "phone",
        "Phone\\xff\\x00",
    }


def test_an_insert_by_the_driver_applies_the_column_types(two_databases: tuple[str, str]) -> None:
    url = two_databases[0]
    when = datetime.datetime(2026, 12, 7, 3, 42, 50, 250_000, tzinfo=datetime.UTC)
    row: dict[str, object] = {
        "event_at": when,
        "event_ms": 1_796_615_000_250,
        "aor": "sip:alice@example.com",
        "contact": "<sip:alice@192.0.2.1>",
        "instance_id": None,
        "reg_id": None,
        "event": "registered",
        "expires_s": 3600,
        "user_agent": "phone",
        "source_addr": "udp:192.0.2.1:5060",
        "device_mac": None,
        "push_provider": None,
        "wakeup_id": None,
    }
    engine = make_engine(url)
    with engine.begin() as conn:
        insert_rows(conn, tables.registration_events, [row, {**row, "event_ms": 1_796_615_000_251}])
        conn.execute(insert(tables.registration_events), [{**row, "event_ms": 1_796_615_000_252}])
    with engine.connect() as conn:
        stored = conn.execute(
            select(tables.registration_events).order_by(tables.registration_events.c.id)
        ).all()
    engine.dispose()
    assert [r.event_ms for r in stored] == [1_796_615_000_250, 1_796_615_000_251, 1_796_615_000_252]
    assert stored[0].event_at == stored[1].event_at == stored[2].event_at


def test_statements_the_driver_path_cannot_take_go_through_sqlalchemy() -> None:
    with_default = Table(
        "defaulted",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("name", String(16), unique=True),
        Column("weight", Float, default=1.0),  # a Python-side default: SQLAlchemy adds its bind
    )
    assert _driver_statement(sqlite_dialect(), with_default, ("name",), None) is None
    assert _driver_statement(sqlite_dialect(), with_default, ("name",), ("name",)) is None
    assert _driver_statement(sqlite_dialect(), with_default, ("name", "weight"), ("name",)) is not None
    assert _driver_statement(postgresql_dialect(), with_default, ("name",), ("name",)) is None  # type: ignore[no-untyped-call]


def test_postgresql_statements_bind_by_position_what_sqlalchemy_binds_by_name() -> None:
    # psycopg takes %s as well as %(name)s: the statement is SQLAlchemy's, casts and all.
    postgresql = postgresql_dialect()  # type: ignore[no-untyped-call]
    columns = tuple(column.name for column in tables.location.columns if column.name != "id")
    driver = _driver_statement(postgresql, tables.location, columns, ("ruid",))
    assert driver is not None
    assert driver.names == columns
    named = _upsert_statement("postgresql", tables.location, columns, ("ruid",))
    compiled = named.compile(dialect=postgresql, column_keys=list(columns), for_executemany=True)
    assert re.sub(r"%\(\w+\)s", "%s", compiled.string) == driver.sql
    assert "%s::VARCHAR" in driver.sql
    assert postgresql.paramstyle == "pyformat"  # the engine's own dialect is left as it was
