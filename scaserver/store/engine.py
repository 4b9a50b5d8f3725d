"""The SQLAlchemy engine for a database URL (``sqlite:///path`` or ``postgresql+psycopg://...``).

Kept apart from the repositories so that migrations and start-up checks need nothing but
SQLAlchemy.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

__all__ = ["is_sqlite", "make_engine"]


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
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=0,
        pool_pre_ping=True,
        connect_args={"connect_timeout": max(1, round(connect_timeout_s))},
    )
