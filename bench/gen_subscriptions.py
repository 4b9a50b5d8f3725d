"""Seed ``sca_subscriptions`` rows for the restart-restore and memory figures.

    python -m bench.gen_subscriptions DB_FILE COUNT SINK_PORT [--kamailio-schema SQL] [--members N]

Both servers use Kamailio's table (sca.md section 10.1), so one writer serves both:
``COUNT`` active ``call-info`` subscriptions (``event`` 1, ``state`` 0) expiring in an
hour, ``--members`` per line (default 2), each subscriber a Contact on ``127.0.0.1:SINK_PORT``
so that the full-state NOTIFYs scaserver sends after a restore (section 10.3) reach a sink.
``record_route`` is written as "" (no route set): Kamailio 5.6's sca restore crashes
(SIGSEGV in sca.so) on a NULL there.
With ``--kamailio-schema`` the file is created from that DDL first (Kamailio's reference
schema); otherwise it must already hold scaserver's schema (``scaserver db upgrade``).
"""

from __future__ import annotations

import argparse
import sqlite3
import time
from pathlib import Path

from bench.gen_aors import DEFAULT_FIRST_USER, member_tag

CALL_INFO_EVENT = 1
HOST = "127.0.0.1"


def seed(
    db_file: Path,
    count: int,
    sink_port: int,
    *,
    members: int = 2,
    schema: Path | None = None,
    first: int = DEFAULT_FIRST_USER,
    lifetime_s: int = 3600,
) -> None:
    """Insert ``count`` call-info subscriptions into ``db_file``."""
    expires = int(time.time()) + lifetime_s
    conn = sqlite3.connect(db_file)
    try:
        if schema is not None:
            conn.executescript(schema.read_text())
        rows = []
        for n in range(count):
            line, member = divmod(n, members) if members else (n, 0)
            user = first + line
            tag = member_tag(member)
            rows.append(
                (
                    f"sip:{user}@{HOST}:{sink_port};member={tag}",
                    f"sip:{user}@{HOST}",
                    CALL_INFO_EVENT,
                    expires,
                    0,
                    0,
                    f"restore-{n}@bench",
                    f"ft{n}",
                    f"tt{n}",
                    "",
                    2,
                    2,
                    0,
                )
            )
        conn.executemany(
            "INSERT INTO sca_subscriptions (subscriber, aor, event, expires, state, app_idx, call_id,"
            " from_tag, to_tag, record_route, notify_cseq, subscribe_cseq, server_id)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        conn.commit()
        # a WAL-mode file (scaserver's) is copied as one file: fold the log into it
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("db_file", type=Path)
    parser.add_argument("count", type=int)
    parser.add_argument("sink_port", type=int)
    parser.add_argument("--kamailio-schema", type=Path)
    parser.add_argument("--members", type=int, default=2)
    args = parser.parse_args(argv)
    seed(args.db_file, args.count, args.sink_port, members=args.members, schema=args.kamailio_schema)


if __name__ == "__main__":
    main()
