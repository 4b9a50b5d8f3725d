"""SQL repositories of registrations (``store/repository.py``): the registrar's bindings
(``location``, Kamailio usrloc's columns), the push mid-registrar's upstream registrations and
the push tokens a gateway invalidated.  Synchronous and blocking: called from the database
thread pool (``edge/dbpool.py``)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import NamedTuple

from sqlalchemy import Engine, select
from sqlalchemy import delete as sql_delete
from sqlalchemy.engine import RowMapping

from scaserver.push.policy import TokenInvalidated
from scaserver.registrar.binding import Binding, BindingKey, KeyKind
from scaserver.registrar.midregevents import UpstreamSnapshot
from scaserver.registrar.upstream import UpstreamState
from scaserver.sip.message import Peer, Transport, split_list
from scaserver.store import tables
from scaserver.store.repository import TokenKey
from scaserver.store.writes import delete_keys, upsert, upsert_values

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


def _json_pairs(pairs: Sequence[tuple[str, str | None]]) -> str:
    """The JSON list of ``[name, value]`` lists of ``location.params``/``push``; most bindings
    have no push parameters (the text of an empty list, without ``json.dumps``)."""
    return json.dumps([list(pair) for pair in pairs]) if pairs else "[]"


class LocationRow(NamedTuple):
    """The ``location`` columns a binding writes, in the table's order (the statement's)."""

    ruid: str
    aor: str
    key_kind: str
    key_value: str
    username: str
    domain: str | None
    contact: str
    received: str
    path: str | None
    expires: float
    q: float | None
    callid: str
    cseq: int
    last_modified: float
    registered_at: float
    user_agent: str | None
    instance: str | None
    reg_id: int | None
    params: str
    push: str


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
                LocationRow(
                    ruid=ruid(b.key),
                    aor=b.aor,
                    key_kind=b.key.kind.value,
                    key_value=b.key.value,
                    username=username,
                    domain=domain,
                    contact=b.contact,
                    received=received_uri(b.received),
                    path=", ".join(b.path) if b.path else None,
                    expires=b.expires_at,
                    q=b.q,
                    callid=b.call_id,
                    cseq=b.cseq,
                    last_modified=b.updated_at,
                    registered_at=b.registered_at,
                    user_agent=b.user_agent,
                    instance=b.instance,
                    reg_id=b.reg_id,
                    params=_json_pairs(b.params),
                    push=_json_pairs(b.push),
                )
            )
        with self._engine.begin() as conn:
            upsert_values(conn, tables.location, LocationRow._fields, ("ruid",), rows)

    def delete(self, keys: Sequence[BindingKey], /) -> None:
        delete_keys(self._engine, tables.location, [{"ruid": ruid(key)} for key in keys])

    def purge_expired(self, now: float, /) -> int:
        with self._engine.begin() as conn:
            return conn.execute(sql_delete(tables.location).where(tables.location.c.expires <= now)).rowcount


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
        upsert(self._engine, tables.midreg_upstream, ("aor",), rows)

    def delete(self, keys: Sequence[str], /) -> None:
        delete_keys(self._engine, tables.midreg_upstream, [{"aor": aor} for aor in keys])


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
        upsert(self._engine, tables.push_invalidation, ("provider", "prid_sha256"), rows)

    def delete(self, keys: Sequence[TokenKey], /) -> None:
        delete_keys(
            self._engine,
            tables.push_invalidation,
            [{"provider": provider, "prid_sha256": _token_sha256(prid)} for provider, prid in keys],
        )
