"""SQL repositories of the directory (``store/repository.py``): subscribers, trusted peers,
shared lines and their aliases, and the directory's change marker the running server polls.
Synchronous and blocking: called from the database thread pool (``edge/dbpool.py``)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Engine, insert, select
from sqlalchemy import delete as sql_delete

from scaserver.sca.line import LineAlias, SharedLine
from scaserver.sip.digest import Algorithm, Credentials
from scaserver.sip.message import Transport
from scaserver.sip.trust import TrustedPeer
from scaserver.store import tables
from scaserver.store.repository import SubscriberKey, TrustedPeerKey
from scaserver.store.writes import bump_directory_generation, delete_keys, fitted, upsert, upsert_rows


def directory_generation(engine: Engine) -> int:
    """The directory's generation now: one indexed read, what the running server polls."""
    t = tables.directory_generation
    with engine.connect() as conn:
        value = conn.execute(select(t.c.generation).where(t.c.id == 1)).scalar()
    return int(value or 0)


# -- subscribers -------------------------------------------------------------------------


def algorithms_of(text: str | None) -> tuple[Algorithm, ...]:
    """A stored digest policy (``SHA-256,MD5``); unknown tokens are skipped, NULL is ()."""
    found = (Algorithm.from_token(token) for token in (text or "").split(",") if token.strip())
    return tuple(algorithm for algorithm in found if algorithm is not None)


class SqlSubscriberRepository:
    """``subscriber`` rows; ``domain`` holds the realm."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def load_all(self) -> list[Credentials]:
        t = tables.subscriber
        with self._engine.connect() as conn:
            rows = conn.execute(select(t).order_by(t.c.id)).mappings().all()
        return [
            Credentials(
                row["username"],
                row["domain"],
                row["ha1_md5"],
                row["ha1_sha256"],
                row["ha1_sha512_256"],
                algorithms=algorithms_of(row["algorithms"]),
            )
            for row in rows
        ]

    def upsert(self, values: Sequence[Credentials], /) -> None:
        rows = [
            {
                "username": c.username,
                "domain": c.realm,
                "ha1_md5": c.ha1_md5,
                "ha1_sha256": c.ha1_sha256,
                "ha1_sha512_256": c.ha1_sha512_256,
                "algorithms": ",".join(a.value for a in c.algorithms) or None,
            }
            for c in values
        ]
        upsert(self._engine, tables.subscriber, ("username", "domain"), rows, directory=True)

    def delete(self, keys: Sequence[SubscriberKey], /) -> None:
        delete_keys(
            self._engine,
            tables.subscriber,
            [{"username": u, "domain": d} for u, d in keys],
            directory=True,
        )


# -- trusted peers -----------------------------------------------------------------------


class SqlTrustedPeerRepository:
    """``trusted_peer`` rows; ``transport`` NULL matches every transport."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def load_all(self) -> list[TrustedPeer]:
        t = tables.trusted_peer
        with self._engine.connect() as conn:
            rows = conn.execute(select(t).order_by(t.c.id)).mappings().all()
        return [
            TrustedPeer(
                row["cidr"], None if row["transport"] is None else Transport(row["transport"]), row["tag"]
            )
            for row in rows
        ]

    def upsert(self, values: Sequence[TrustedPeer], /) -> None:
        rows = [
            {
                "cidr": str(p.cidr),
                "transport": None if p.transport is None else p.transport.value,
                "tag": p.tag,
            }
            for p in values
        ]
        upsert(
            self._engine, tables.trusted_peer, ("cidr", "transport"), rows, nullable_key=True, directory=True
        )

    def delete(self, keys: Sequence[TrustedPeerKey], /) -> None:
        delete_keys(
            self._engine,
            tables.trusted_peer,
            [{"cidr": cidr, "transport": None if t is None else t.value} for cidr, t in keys],
            nullable_key=True,
            directory=True,
        )


# -- shared lines ------------------------------------------------------------------------


class SqlSharedLineRepository:
    """``sca_line`` rows with their ``sca_line_member`` rows (deleted with the line)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def load_all(self) -> list[SharedLine]:
        line, member = tables.sca_line, tables.sca_line_member
        with self._engine.connect() as conn:
            lines = conn.execute(
                select(line.c.aor, line.c.appearances, line.c.push_members).order_by(line.c.id)
            ).all()
            members: dict[str, set[str]] = {}
            for aor, name in conn.execute(select(member.c.line_aor, member.c.member)):
                members.setdefault(aor, set()).add(name)
        return [
            SharedLine(aor, appearances, frozenset(members.get(aor, ())), bool(push))
            for aor, appearances, push in lines
        ]

    def upsert(self, values: Sequence[SharedLine], /) -> None:
        if not values:
            return
        member = tables.sca_line_member
        with self._engine.begin() as conn:
            upsert_rows(
                conn,
                tables.sca_line,
                ("aor",),
                [
                    {"aor": v.aor, "appearances": v.appearances, "push_members": v.push_members}
                    for v in values
                ],
            )
            for value in values:
                aor = fitted(member, {"line_aor": value.aor})["line_aor"]
                stored = set(conn.execute(select(member.c.member).where(member.c.line_aor == aor)).scalars())
                wanted = {str(fitted(member, {"member": m})["member"]) for m in value.members}
                gone = stored - wanted
                if gone:
                    conn.execute(
                        sql_delete(member).where(member.c.line_aor == aor, member.c.member.in_(sorted(gone)))
                    )
                added = wanted - stored
                if added:
                    conn.execute(insert(member), [{"line_aor": aor, "member": m} for m in sorted(added)])
            bump_directory_generation(conn)

    def delete(self, keys: Sequence[str], /) -> None:
        delete_keys(self._engine, tables.sca_line, [{"aor": aor} for aor in keys], directory=True)


class SqlLineAliasRepository:
    """``sca_line_alias`` rows (sca.md Q26); every change moves the directory generation."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def load_all(self) -> list[LineAlias]:
        t = tables.sca_line_alias
        with self._engine.connect() as conn:
            rows = conn.execute(select(t.c.alias, t.c.line_aor).order_by(t.c.alias)).all()
        return [LineAlias(alias, line) for alias, line in rows]

    def upsert(self, values: Sequence[LineAlias], /) -> None:
        rows = [{"alias": v.alias, "line_aor": v.line} for v in values]
        upsert(self._engine, tables.sca_line_alias, ("alias",), rows, directory=True)

    def delete(self, keys: Sequence[str], /) -> None:
        delete_keys(self._engine, tables.sca_line_alias, [{"alias": a} for a in keys], directory=True)
