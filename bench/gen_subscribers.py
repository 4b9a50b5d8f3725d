"""Seed digest subscribers (``USER@127.0.0.1`` with one password) for the REGISTER-with-auth figure.

    python -m bench.gen_subscribers scaserver DB_URL USERS PASSWORD [--first USER]
    python -m bench.gen_subscribers kamailio SQLITE_FILE USERS PASSWORD [--first USER]

scaserver keeps HA1 values (``subscriber`` table, through its store); Kamailio's reference
configuration reads the clear-text ``password`` column (``calculate_ha1 yes``).
"""

from __future__ import annotations

import argparse
import sqlite3
from pathlib import Path

from bench.gen_aors import DEFAULT_FIRST_USER
from scaserver.sip.digest import Credentials
from scaserver.store.sql import SqlStore

DOMAIN = "127.0.0.1"


def seed_scaserver(db_url: str, users: int, password: str, first: int = DEFAULT_FIRST_USER) -> None:
    store = SqlStore(db_url)
    try:
        store.subscribers.upsert(
            [Credentials.from_password(str(first + n), DOMAIN, password) for n in range(users)]
        )
    finally:
        store.close()


def seed_kamailio(db_file: Path, users: int, password: str, first: int = DEFAULT_FIRST_USER) -> None:
    conn = sqlite3.connect(db_file)
    try:
        conn.executemany(
            "INSERT OR REPLACE INTO subscriber (username, domain, password) VALUES (?, ?, ?)",
            [(str(first + n), DOMAIN, password) for n in range(users)],
        )
        conn.commit()
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("server", choices=["scaserver", "kamailio"])
    parser.add_argument("database")
    parser.add_argument("users", type=int)
    parser.add_argument("password")
    parser.add_argument("--first", type=int, default=DEFAULT_FIRST_USER)
    args = parser.parse_args(argv)
    if args.server == "scaserver":
        seed_scaserver(args.database, args.users, args.password, args.first)
    else:
        seed_kamailio(Path(args.database), args.users, args.password, args.first)


if __name__ == "__main__":
    main()
