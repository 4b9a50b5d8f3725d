"""Schema migrations, driven from code (``scaserver db upgrade``, start-up checks, tests).

The Alembic environment lives in the top-level ``migrations/`` directory (one linear
history), shipped inside the package as ``scaserver/migrations`` and found by Alembic through
``importlib.resources`` (``script_location = scaserver:migrations``), in a source tree and an
installed wheel alike.  The database URL is handed to ``migrations/env.py`` through
``Config.attributes`` rather than the ini option, so passwords with ``%`` survive.
"""

from __future__ import annotations

import importlib.resources
from importlib.resources.abc import Traversable
from typing import Final

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from scaserver.store.engine import make_engine

#: The package resource holding the Alembic environment (``env.py``, ``versions/``).
SCRIPT_LOCATION: Final = "scaserver:migrations"
MIGRATIONS_DIR: Final[Traversable] = importlib.resources.files("scaserver") / "migrations"

UPGRADE_COMMAND: Final = "scaserver db upgrade"


class SchemaOutOfDateError(Exception):
    """The database is not at the revision this code expects; the message says what to run."""

    def __init__(self, current: str | None, head: str) -> None:
        self.current, self.head = current, head
        where = "has no scaserver schema" if current is None else f"is at schema revision {current}"
        super().__init__(
            f"the database {where}, this scaserver needs revision {head}: run `{UPGRADE_COMMAND}` first"
        )


def alembic_config(url: str, *, lock_timeout_ms: int = 10_000, statement_timeout_ms: int = 60_000) -> Config:
    """The Alembic configuration for ``url``.  On PostgreSQL the time-outs bound the wait
    for the migration advisory lock and for table locks (``lock_timeout``) and any single
    statement (``statement_timeout``)."""
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    config.attributes["url"] = url
    config.attributes["lock_timeout_ms"] = lock_timeout_ms
    config.attributes["statement_timeout_ms"] = statement_timeout_ms
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    if head is None:
        raise RuntimeError(f"no migrations found in {MIGRATIONS_DIR}")
    return head


def current_revision(url: str) -> str | None:
    """The revision stamped in the database, or None for a database never migrated."""
    engine = make_engine(url, pool_size=1)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def upgrade(url: str, revision: str = "head", *, lock_timeout_ms: int = 10_000) -> None:
    """Migrate the database at ``url`` up to ``revision`` (idempotent at head).

    On PostgreSQL, waits at most ``lock_timeout_ms`` for another node's migration run.
    """
    command.upgrade(alembic_config(url, lock_timeout_ms=lock_timeout_ms), revision)


def downgrade(url: str, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)


def check_up_to_date(url: str) -> None:
    """Raise ``SchemaOutOfDateError`` unless the database is exactly at the head revision."""
    current, head = current_revision(url), head_revision()
    if current != head:
        raise SchemaOutOfDateError(current, head)
