"""The SQLAlchemy engine for a database URL (``sqlite:///path`` or ``postgresql+psycopg://...``).

Kept apart from the repositories so that migrations and start-up checks need nothing but
SQLAlchemy.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url

__all__ = ["DatabaseReadOnlyError", "MissingDriverError", "is_sqlite", "make_engine", "probe_writable"]


class MissingDriverError(Exception):
    """The URL names a database whose driver is an extra that is not installed."""


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def _sqlite_on_connect(dbapi_connection: Any, _record: object) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def make_engine(url: str, *, pool_size: int = 4, connect_timeout_s: float = 5.0) -> Engine:
    """The engine for ``url``.

    SQLite: WAL journal and enforced foreign keys on every connection, ``connect_timeout_s``
    as the busy time-out.  PostgreSQL: a pool of ``pool_size`` connections checked with a
    ping before use (so connections broken by a server restart are replaced), and a
    connect time-out so a down server fails a flush quickly instead of hanging a worker.
    """
    if is_sqlite(url):
        engine = create_engine(
            url,
            pool_size=pool_size,
            pool_pre_ping=True,
            connect_args={"timeout": connect_timeout_s},
        )
        event.listen(engine, "connect", _sqlite_on_connect)
        return engine
    try:
        import psycopg  # noqa: F401, PLC0415 (the driver of postgresql+psycopg://, an optional extra)
    except ImportError:
        raise MissingDriverError(
            f"{make_url(url).render_as_string()}: the PostgreSQL driver is not installed: "
            "install scaserver with the postgresql extra (pip install 'scaserver[postgresql]')"
        ) from None
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=0,
        pool_pre_ping=True,
        connect_args={"connect_timeout": max(1, round(connect_timeout_s))},
    )


class DatabaseReadOnlyError(Exception):
    """The database answers but would refuse writes (a hot standby, a read-only session)."""


def probe_writable(engine: Engine) -> None:
    """One cheap round trip that fails unless the database takes writes: PostgreSQL's
    ``transaction_read_only`` (on for a standby or ``default_transaction_read_only``),
    SQLite's ``query_only``.  Raises the driver's error when the server cannot be reached."""
    query = "PRAGMA query_only" if is_sqlite(str(engine.url)) else "SHOW transaction_read_only"
    with engine.connect() as conn:
        value = conn.execute(text(query)).scalar()
    if str(value).lower() in ("1", "on", "true"):
        raise DatabaseReadOnlyError(f"{query}: {value}")
