"""SQLAlchemy 2 Core implementations of the repositories (``store/repository.py``).

Everything here is synchronous and blocking: the edge calls it from the database thread
pool (``edge/dbpool.py``), never from the reactor thread.

``make_engine`` and ``is_sqlite`` live in ``store/engine.py`` and are re-exported here.

Each call is one transaction.  Upserts are batched ``INSERT ... ON CONFLICT DO UPDATE`` on
the key's unique constraint (PostgreSQL and SQLite); a key with a nullable column
(``trusted_peer.transport``) uses "update, else insert" with ``IS NOT DISTINCT FROM``.
Upserts and deletes are idempotent, which is what the write-behind queue's retries rely on.

Every row written goes through :func:`fitted`: its text is escaped as ``store/engine.py``
describes (``\\xNN`` for an octet that was not UTF-8) and cut to its column's length, so no
header a peer sends, however long or whatever its octets, makes the database refuse a row.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, Table, and_, insert, select, tuple_, update
from sqlalchemy import delete as sql_delete
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import RowMapping
from sqlalchemy.sql.elements import ColumnElement

from scaserver.push.policy import TokenInvalidated
from scaserver.registrar.binding import Binding, BindingKey, KeyKind
from scaserver.registrar.midregevents import UpstreamSnapshot
from scaserver.registrar.upstream import UpstreamState
from scaserver.sca.appearance import Appearance, AppearanceState, CallLeg, Previous, Role
from scaserver.sca.line import LineAlias, SharedLine
from scaserver.sca.subscription import Package, Subscription, SubscriptionKey, SubscriptionState
from scaserver.sip.digest import Algorithm, Credentials
from scaserver.sip.message import Peer, Transport, split_list
from scaserver.sip.trust import TrustedPeer
from scaserver.store import tables
from scaserver.store.engine import is_sqlite, make_engine, stored_text
from scaserver.store.repository import AppearanceKey, SubscriberKey, TokenKey, TrustedPeerKey

__all__ = [
    "SqlAppearanceRepository",
    "SqlBindingRepository",
    "SqlLineAliasRepository",
    "SqlSharedLineRepository",
    "SqlSubscriberRepository",
    "SqlSubscriptionRepository",
    "SqlTokenInvalidationRepository",
    "SqlTrustedPeerRepository",
    "SqlUpstreamRegistrationRepository",
    "bump_directory_generation",
    "delete_rows",
    "directory_generation",
    "fitted",
    "is_sqlite",
    "make_engine",
    "parse_received",
    "received_uri",
    "ruid",
    "upsert_rows",
]


T = TypeVar("T")


def _key_clause(table: Table, key: Mapping[str, object]) -> ColumnElement[bool]:
    return and_(*(table.c[name].is_not_distinct_from(value) for name, value in key.items()))


#: Rows per statement on the batched paths (well under SQLite's parameter limit).
CHUNK = 500


def _chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@functools.cache
def _lengths(table: Table) -> Mapping[str, int]:
    lengths = {column.name: getattr(column.type, "length", None) for column in table.columns}
    return {name: length for name, length in lengths.items() if isinstance(length, int)}


def fitted(table: Table, row: Mapping[str, object]) -> dict[str, object]:
    """``row`` as ``table`` can hold it: text escaped (``stored_text``) and cut to the
    length of its column (``String(n)``, ``CHAR(n)``; ``Text`` is not cut)."""
    lengths = _lengths(table)
    out = dict(row)
    for name, value in row.items():
        if not isinstance(value, str):
            continue
        length = lengths.get(name)
        if value.isascii() and "\x00" not in value and (length is None or len(value) <= length):
            continue  # the common case: nothing to do
        text = stored_text(value)
        out[name] = text[:length] if length is not None and len(text) > length else text
    return out


def upsert_rows(
    conn: Connection,
    table: Table,
    key_columns: Sequence[str],
    rows: Sequence[Mapping[str, object]],
    *,
    nullable_key: bool = False,
) -> None:
    """Insert each row, or update the row with its key; the last row wins for a repeated key.

    The key columns must carry a unique constraint.  On PostgreSQL and SQLite this is one
    batched ``INSERT ... ON CONFLICT (key) DO UPDATE``; a key with a nullable column
    (``nullable_key``; NULLs never conflict) takes the portable update-else-insert path.
    """
    fitted_rows = [fitted(table, row) for row in rows]
    latest = list({tuple(row[name] for name in key_columns): row for row in fitted_rows}.values())
    if not latest:
        return
    if not nullable_key and conn.dialect.name in ("postgresql", "sqlite"):
        statement = (postgresql_insert if conn.dialect.name == "postgresql" else sqlite_insert)(table)
        updates = {name: statement.excluded[name] for name in latest[0] if name not in key_columns}
        keys = [table.c[name] for name in key_columns]
        upsert = (
            statement.on_conflict_do_update(index_elements=keys, set_=updates)
            if updates
            else statement.on_conflict_do_nothing(index_elements=keys)
        )
        for chunk in _chunks(latest):
            conn.execute(upsert, [dict(row) for row in chunk])
        return
    for row in latest:
        key = {name: row[name] for name in key_columns}
        values = {name: value for name, value in row.items() if name not in key_columns}
        clause = _key_clause(table, key)
        if values:
            if conn.execute(update(table).where(clause).values(values)).rowcount > 0:
                continue
        elif conn.execute(select(table.c.id).where(clause)).first() is not None:
            continue
        conn.execute(insert(table).values(dict(row)))


def delete_rows(
    conn: Connection, table: Table, keys: Sequence[Mapping[str, object]], *, nullable_key: bool = False
) -> None:
    """Delete the rows with these keys (all mappings name the same columns); missing keys are
    ignored.  Batched as ``(k1, k2) IN (...)`` unless a key column may be NULL."""
    if not keys:
        return
    if nullable_key:
        for key in keys:
            conn.execute(sql_delete(table).where(_key_clause(table, key)))
        return
    names = list(keys[0])
    columns = [table.c[name] for name in names]
    target = columns[0] if len(columns) == 1 else tuple_(*columns)
    for chunk in _chunks(keys):
        values = (
            [key[names[0]] for key in chunk]
            if len(columns) == 1
            else [tuple(key[n] for n in names) for key in chunk]
        )
        conn.execute(sql_delete(table).where(target.in_(values)))


def _delete_keys(
    engine: Engine,
    table: Table,
    keys: Sequence[Mapping[str, object]],
    *,
    nullable_key: bool = False,
    directory: bool = False,
) -> None:
    if keys:
        with engine.begin() as conn:
            delete_rows(conn, table, keys, nullable_key=nullable_key)
            if directory:
                bump_directory_generation(conn)


def _upsert(
    engine: Engine,
    table: Table,
    key_columns: Sequence[str],
    rows: Sequence[Mapping[str, object]],
    *,
    nullable_key: bool = False,
    directory: bool = False,
) -> None:
    if rows:
        with engine.begin() as conn:
            upsert_rows(conn, table, key_columns, rows, nullable_key=nullable_key)
            if directory:
                bump_directory_generation(conn)


# -- the directory's change marker -------------------------------------------------------


def bump_directory_generation(conn: Connection) -> None:
    """Count one change of the directory, in the caller's transaction (the row is created
    when a schema made without the migrations lacks it)."""
    t = tables.directory_generation
    changed = conn.execute(update(t).where(t.c.id == 1).values(generation=t.c.generation + 1))
    if changed.rowcount == 0:
        conn.execute(insert(t).values(id=1, generation=1))


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
        _upsert(self._engine, tables.subscriber, ("username", "domain"), rows, directory=True)

    def delete(self, keys: Sequence[SubscriberKey], /) -> None:
        _delete_keys(
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
        _upsert(
            self._engine, tables.trusted_peer, ("cidr", "transport"), rows, nullable_key=True, directory=True
        )

    def delete(self, keys: Sequence[TrustedPeerKey], /) -> None:
        _delete_keys(
            self._engine,
            tables.trusted_peer,
            [{"cidr": cidr, "transport": None if t is None else t.value} for cidr, t in keys],
            nullable_key=True,
            directory=True,
        )


# -- registrar bindings ------------------------------------------------------------------


def ruid(key: BindingKey) -> str:
    """The ``location.ruid`` of a binding: a digest of its identity (64 hex digits)."""
    identity = f"{key.aor}\0{key.kind.value}\0{key.value}"
    return hashlib.sha256(identity.encode("utf-8", "surrogatepass")).hexdigest()


def received_uri(peer: Peer) -> str:
    """A source address as Kamailio writes ``location.received``: ``sip:host:port;transport=udp``."""
    host = f"[{peer.host}]" if ":" in peer.host else peer.host
    return f"sip:{host}:{peer.port};transport={peer.transport.value.lower()}"


def parse_received(text: str) -> Peer:
    """The inverse of ``received_uri``; raises ValueError for anything else."""
    address, _, params = text.removeprefix("sip:").partition(";")
    transport = Transport.UDP
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.lower() == "transport" and value:
            transport = Transport(value.upper())
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"not a received address: {text!r}")
    return Peer(transport, host.removeprefix("[").removesuffix("]"), int(port))


def _aor_user_domain(aor: str) -> tuple[str, str | None]:
    rest = aor.partition(":")[2] if ":" in aor else aor
    user, at, host = rest.rpartition("@")
    return (user, host) if at else ("", rest)


class SqlBindingRepository:
    """``location`` rows (column names of Kamailio's usrloc, see ``store/tables.py``)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def load_all(self) -> list[Binding]:
        t = tables.location
        with self._engine.connect() as conn:
            rows = conn.execute(select(t).order_by(t.c.id)).mappings().all()
        return [self._binding(row) for row in rows]

    @staticmethod
    def _binding(row: RowMapping) -> Binding:
        return Binding(
            key=BindingKey(row["aor"], KeyKind(row["key_kind"]), row["key_value"]),
            contact=row["contact"],
            expires_at=row["expires"],
            call_id=row["callid"],
            cseq=row["cseq"],
            received=parse_received(row["received"]),
            q=row["q"],
            user_agent=row["user_agent"],
            path=tuple(split_list(row["path"])) if row["path"] else (),
            instance=row["instance"],
            reg_id=row["reg_id"],
            params=tuple((str(n), None if v is None else str(v)) for n, v in json.loads(row["params"])),
            push=tuple((str(n), str(v)) for n, v in json.loads(row["push"])),
            registered_at=row["registered_at"],
            updated_at=row["last_modified"],
        )

    def upsert(self, values: Sequence[Binding], /) -> None:
        rows = []
        for b in values:
            username, domain = _aor_user_domain(b.aor)
            rows.append(
                {
                    "ruid": ruid(b.key),
                    "aor": b.aor,
                    "key_kind": b.key.kind.value,
                    "key_value": b.key.value,
                    "username": username,
                    "domain": domain,
                    "contact": b.contact,
                    "received": received_uri(b.received),
                    "path": ", ".join(b.path) if b.path else None,
                    "expires": b.expires_at,
                    "q": b.q,
                    "callid": b.call_id,
                    "cseq": b.cseq,
                    "last_modified": b.updated_at,
                    "registered_at": b.registered_at,
                    "user_agent": b.user_agent,
                    "instance": b.instance,
                    "reg_id": b.reg_id,
                    "params": json.dumps([list(p) for p in b.params]),
                    "push": json.dumps([list(p) for p in b.push]),
                }
            )
        _upsert(self._engine, tables.location, ("ruid",), rows)

    def delete(self, keys: Sequence[BindingKey], /) -> None:
        _delete_keys(self._engine, tables.location, [{"ruid": ruid(key)} for key in keys])

    def purge_expired(self, now: float, /) -> int:
        with self._engine.begin() as conn:
            return conn.execute(sql_delete(tables.location).where(tables.location.c.expires <= now)).rowcount


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
        _delete_keys(self._engine, tables.sca_line, [{"aor": aor} for aor in keys], directory=True)


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
        _upsert(self._engine, tables.sca_line_alias, ("alias",), rows, directory=True)

    def delete(self, keys: Sequence[str], /) -> None:
        _delete_keys(self._engine, tables.sca_line_alias, [{"alias": a} for a in keys], directory=True)


# -- SCA subscriptions -------------------------------------------------------------------


def _flow(transport: str, host: str, port: int) -> Peer | None:
    """The stored flow of a subscription, or None when the row has none."""
    if not transport or not host:
        return None
    try:
        return Peer(Transport(transport), host, port)
    except ValueError:
        return None


class SqlSubscriptionRepository:
    """``sca_subscriptions`` rows of one ``server_id`` (sca.md section 10).

    Written as Kamailio does: ``event`` and ``state`` as codes, ``expires`` whole epoch
    seconds (rounded), ``record_route`` the comma-joined route set, ``notify_cseq`` and
    ``subscribe_cseq`` stored as value + 1 (read back as column - 1), ``app_idx`` the seized
    index.  Rows are keyed on the subscriber and its dialog (``sca_subscriptions_idx``) and
    updates include record_route (section 10.3).  Our columns after Kamailio's keep the
    ``owner``, the flow (``peer``: ``flow_transport``/``flow_host``/``flow_port``, empty
    for none) and ``local_uri``/``remote_uri``; a row Kamailio wrote has them empty, and
    comes back with no owner, no flow and the AoR as NOTIFY From/To.
    """

    def __init__(self, engine: Engine, server_id: int = 0) -> None:
        self._engine = engine
        self.server_id = server_id

    def load_all(self) -> list[Subscription]:
        t = tables.sca_subscriptions
        with self._engine.connect() as conn:
            rows = (
                conn.execute(select(t).where(t.c.server_id == self.server_id).order_by(t.c.id))
                .mappings()
                .all()
            )
        return [
            Subscription(
                subscriber=row["subscriber"],
                aor=row["aor"],
                event=Package.from_code(row["event"]),
                expires=float(row["expires"]),
                call_id=row["call_id"],
                from_tag=row["from_tag"],
                to_tag=row["to_tag"],
                state=SubscriptionState(row["state"]),
                record_route=tuple(split_list(row["record_route"])) if row["record_route"] else (),
                notify_cseq=max(0, row["notify_cseq"] - 1),
                subscribe_cseq=max(0, row["subscribe_cseq"] - 1),
                server_id=row["server_id"],
                index=row["app_idx"],
                local_uri=row["local_uri"] or "",
                remote_uri=row["remote_uri"] or "",
                peer=_flow(row["flow_transport"], row["flow_host"], row["flow_port"]),
                owner=row["owner"],
            )
            for row in rows
        ]

    def upsert(self, values: Sequence[Subscription], /) -> None:
        rows = [
            {
                "subscriber": s.subscriber,
                "aor": s.aor,
                "event": s.event.code,
                "expires": round(s.expires),
                "state": s.state.value,
                "app_idx": s.index,
                "call_id": s.call_id,
                "from_tag": s.from_tag,
                "to_tag": s.to_tag,
                "record_route": s.record_route_text or None,
                "notify_cseq": s.notify_cseq + 1,
                "subscribe_cseq": s.subscribe_cseq + 1,
                "server_id": s.server_id,
                "owner": s.owner,
                "flow_transport": s.peer.transport.value if s.peer is not None else "",
                "flow_host": s.peer.host if s.peer is not None else "",
                "flow_port": s.peer.port if s.peer is not None else 0,
                "local_uri": s.local_uri or None,
                "remote_uri": s.remote_uri or None,
            }
            for s in values
        ]
        _upsert(self._engine, tables.sca_subscriptions, ("subscriber", "call_id", "from_tag", "to_tag"), rows)

    def delete(self, keys: Sequence[SubscriptionKey], /) -> None:
        _delete_keys(
            self._engine,
            tables.sca_subscriptions,
            [
                {
                    "subscriber": k.subscriber,
                    "call_id": k.call_id,
                    "from_tag": k.from_tag,
                    "to_tag": k.to_tag,
                    "server_id": self.server_id,
                }
                for k in keys
            ],
        )

    def purge_expired(self, now: float, /) -> int:
        t = tables.sca_subscriptions
        with self._engine.begin() as conn:
            result = conn.execute(sql_delete(t).where(t.c.server_id == self.server_id, t.c.expires < now))
            return result.rowcount


# -- SCA appearances ---------------------------------------------------------------------


def _leg_json(leg: CallLeg | None) -> object:
    if leg is None:
        return None
    return {
        "call_id": leg.call_id,
        "member_tag": leg.member_tag,
        "remote_tag": leg.remote_tag,
        "role": leg.role.value,
    }


def _leg_from_json(data: Any) -> CallLeg | None:
    if data is None:
        return None
    return CallLeg(data["call_id"], data["member_tag"], data["remote_tag"], Role(data["role"]))


class SqlAppearanceRepository:
    """``sca_appearance`` rows: one per appearance in use (sca.md section 10.3)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def load_all(self) -> list[Appearance]:
        t = tables.sca_appearance
        with self._engine.connect() as conn:
            rows = conn.execute(select(t).order_by(t.c.aor, t.c.appearance_index)).mappings().all()
        return [self._appearance(row) for row in rows]

    @staticmethod
    def _appearance(row: RowMapping) -> Appearance:
        leg = None
        if row["call_id"] is not None and row["role"] is not None:
            role = Role(row["role"])
            caller = role is Role.CALLER
            member_tag = row["from_tag"] if caller else row["to_tag"]
            remote_tag = row["to_tag"] if caller else row["from_tag"]
            leg = CallLeg(row["call_id"], member_tag, remote_tag, role)
        rollback = None
        if row["rollback_state"] is not None and row["rollback_cseq"] is not None:
            rollback = (AppearanceState(row["rollback_state"]), row["rollback_cseq"])
        previous = None
        if row["previous"] is not None:
            data = json.loads(row["previous"])
            previous = Previous(data["owner"], _leg_from_json(data["leg"]), data["remote_contact"])
        return Appearance(
            line=row["aor"],
            index=row["appearance_index"],
            state=AppearanceState(row["state"]),
            owner=row["owner"],
            leg=leg,
            remote_contact=row["remote_contact"],
            remote_uri=row["uri"],
            rollback=rollback,
            previous=previous,
            created_at=row["created_at"],
            changed_at=row["changed_at"],
            touched_at=row["touched_at"],
        )

    def upsert(self, values: Sequence[Appearance], /) -> None:
        rows = []
        for a in values:
            previous = (
                None
                if a.previous is None
                else json.dumps(
                    {
                        "owner": a.previous.owner,
                        "leg": _leg_json(a.previous.leg),
                        "remote_contact": a.previous.remote_contact,
                    }
                )
            )
            rows.append(
                {
                    "aor": a.line,
                    "appearance_index": a.index,
                    "state": a.state.value,
                    "owner": a.owner,
                    "role": None if a.leg is None else a.leg.role.value,
                    "call_id": None if a.leg is None else a.leg.call_id,
                    "from_tag": None if a.leg is None else a.leg.from_tag,
                    "to_tag": None if a.leg is None else a.leg.to_tag,
                    "remote_contact": a.remote_contact,
                    "uri": a.remote_uri,
                    "rollback_state": None if a.rollback is None else a.rollback[0].value,
                    "rollback_cseq": None if a.rollback is None else a.rollback[1],
                    "previous": previous,
                    "created_at": a.created_at,
                    "changed_at": a.changed_at,
                    "touched_at": a.touched_at,
                }
            )
        _upsert(self._engine, tables.sca_appearance, ("aor", "appearance_index"), rows)

    def delete(self, keys: Sequence[AppearanceKey], /) -> None:
        _delete_keys(
            self._engine,
            tables.sca_appearance,
            [{"aor": aor, "appearance_index": index} for aor, index in keys],
        )


# -- push mid-registrar -------------------------------------------------------------------


class SqlUpstreamRegistrationRepository:
    """``midreg_upstream`` rows, one per AoR (push-and-parking.md 3.5, R21); ``min_expires``
    holds the snapshot's ``floor``."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def load_all(self) -> list[UpstreamSnapshot]:
        t = tables.midreg_upstream
        with self._engine.connect() as conn:
            rows = conn.execute(select(t).order_by(t.c.id)).mappings().all()
        return [
            UpstreamSnapshot(
                aor=row["aor"],
                call_id=row["call_id"],
                cseq=row["cseq"],
                state=UpstreamState(row["state"]),
                expires_at=row["expires_at"],
                granted=row["granted"],
                upstream_auth_needed=bool(row["upstream_auth_needed"]),
                floor=row["min_expires"],
            )
            for row in rows
        ]

    def upsert(self, values: Sequence[UpstreamSnapshot], /) -> None:
        rows = [
            {
                "aor": v.aor,
                "call_id": v.call_id,
                "cseq": v.cseq,
                "state": v.state.value,
                "expires_at": v.expires_at,
                "granted": v.granted,
                "upstream_auth_needed": v.upstream_auth_needed,
                "min_expires": v.floor,
            }
            for v in values
        ]
        _upsert(self._engine, tables.midreg_upstream, ("aor",), rows)

    def delete(self, keys: Sequence[str], /) -> None:
        _delete_keys(self._engine, tables.midreg_upstream, [{"aor": aor} for aor in keys])


def _token_sha256(prid: str) -> str:
    return hashlib.sha256(prid.encode("utf-8", "surrogatepass")).hexdigest()


class SqlTokenInvalidationRepository:
    """``push_invalidation`` rows (push-and-parking.md 4.4), keyed by (provider, SHA-256 of
    the token); the token itself is stored to match bindings at start-up."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def load_all(self) -> list[TokenInvalidated]:
        t = tables.push_invalidation
        with self._engine.connect() as conn:
            rows = conn.execute(select(t).order_by(t.c.id)).mappings().all()
        return [TokenInvalidated(row["provider"], row["prid"], row["invalidated_at"]) for row in rows]

    def upsert(self, values: Sequence[TokenInvalidated], /) -> None:
        rows = [
            {
                "provider": v.provider,
                "prid_sha256": _token_sha256(v.prid),
                "prid": v.prid,
                "invalidated_at": v.at,
            }
            for v in values
        ]
        _upsert(self._engine, tables.push_invalidation, ("provider", "prid_sha256"), rows)

    def delete(self, keys: Sequence[TokenKey], /) -> None:
        _delete_keys(
            self._engine,
            tables.push_invalidation,
            [{"provider": provider, "prid_sha256": _token_sha256(prid)} for provider, prid in keys],
        )


class SqlStore:
    """Every repository of one database, sharing one engine."""

    def __init__(self, url: str, *, pool_size: int = 4, server_id: int = 0) -> None:
        self.url = url
        self.engine = make_engine(url, pool_size=pool_size)
        self.subscribers = SqlSubscriberRepository(self.engine)
        self.trusted_peers = SqlTrustedPeerRepository(self.engine)
        self.bindings = SqlBindingRepository(self.engine)
        self.lines = SqlSharedLineRepository(self.engine)
        self.line_aliases = SqlLineAliasRepository(self.engine)
        self.subscriptions = SqlSubscriptionRepository(self.engine, server_id)
        self.appearances = SqlAppearanceRepository(self.engine)
        self.upstream_registrations = SqlUpstreamRegistrationRepository(self.engine)
        self.token_invalidations = SqlTokenInvalidationRepository(self.engine)

    def close(self) -> None:
        self.engine.dispose()
