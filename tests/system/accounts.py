"""Subscribers written into the database before the server starts, and the bindings the
server wrote into ``location`` (read straight from the table, as an operator would)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from sqlalchemy import select

from scaserver.sip.digest import Credentials
from scaserver.store import migrate
from scaserver.store.sql import SqlStore
from scaserver.store.tables import location

DOMAIN = "example.test"

CONFIG = f"""
[server]
domains = ["{DOMAIN}"]
[auth]
require = true
algorithms = ["MD5"]
[database]
flush_interval = 0.5
"""
"""Digest with MD5 (what SIPp 3.6 computes); a fast write-behind flush so tests wait little."""


def add_subscribers(db_url: str, users: Iterable[tuple[str, str]], realm: str = DOMAIN) -> None:
    """Create the schema if needed and store ``(user, password)`` subscribers (HA1 only)."""
    migrate.upgrade(db_url)
    store = SqlStore(db_url)
    try:
        store.subscribers.upsert(
            [Credentials.from_password(user, realm, password) for user, password in users]
        )
    finally:
        store.close()


def location_rows(db_url: str) -> list[tuple[str, str]]:
    """``(aor, contact)`` of every row of the ``location`` table."""
    store = SqlStore(db_url)
    try:
        with store.engine.connect() as conn:
            rows = conn.execute(select(location.c.aor, location.c.contact)).all()
    finally:
        store.close()
    return sorted((str(aor), str(contact)) for aor, contact in rows)


def injection_file(path: Path, users: Iterable[tuple[str, str]]) -> Path:
    """A SIPp ``-inf`` file read in sequence, one call per row: field0 the user, field1 the
    ``[authentication]`` keyword with that user's password (SIPp expands keywords in fields)."""
    rows = (f"{user};[authentication username={user} password={password}]\n" for user, password in users)
    path.write_text("SEQUENTIAL\n" + "".join(rows))
    return path
