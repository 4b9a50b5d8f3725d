"""Alembic environment for scaserver.

``target_metadata`` is the one ``MetaData`` of ``scaserver/store/tables.py``.  Each migration
runs in its own transaction (``transaction_per_migration``); on SQLite, ALTERs go through
batch mode (``render_as_batch``), since SQLite cannot alter most constraints in place.  On
PostgreSQL the run holds a session advisory lock, so two nodes starting together migrate one
after the other, and statement/lock time-outs keep a migration from queueing forever behind
application locks.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, text

from scaserver.store.engine import make_engine
from scaserver.store.tables import metadata

#: Key of the PostgreSQL advisory lock held while migrating.
ADVISORY_LOCK = "SELECT pg_advisory_lock(hashtext('scaserver-migrations'))"
ADVISORY_UNLOCK = "SELECT pg_advisory_unlock(hashtext('scaserver-migrations'))"
DEFAULT_STATEMENT_TIMEOUT_MS = 60_000
DEFAULT_LOCK_TIMEOUT_MS = 10_000


def _timeout_ms(name: str, default: int) -> int:
    return int(context.config.attributes.get(name, default))


def _url() -> str:
    url = context.config.attributes.get("url") or context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database URL given to the migration environment")
    return str(url)


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        transaction_per_migration=True,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    url = _url()
    context.configure(
        url=url,
        target_metadata=metadata,
        literal_binds=True,
        transaction_per_migration=True,
        render_as_batch=url.startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    given = context.config.attributes.get("connection")
    if isinstance(given, Connection):
        _run(given)
        return
    engine = make_engine(_url(), pool_size=1)
    try:
        with engine.connect() as connection:
            if connection.dialect.name != "postgresql":
                _run(connection)
                connection.commit()
                return
            statement_ms = _timeout_ms("statement_timeout_ms", DEFAULT_STATEMENT_TIMEOUT_MS)
            lock_ms = _timeout_ms("lock_timeout_ms", DEFAULT_LOCK_TIMEOUT_MS)
            connection.execute(text(f"SET statement_timeout = {statement_ms}"))
            connection.execute(text(f"SET lock_timeout = {lock_ms}"))
            connection.execute(text(ADVISORY_LOCK))
            connection.commit()
            try:
                _run(connection)
                connection.commit()
            finally:
                connection.rollback()
                connection.execute(text(ADVISORY_UNLOCK))
                connection.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
