"""SQL repositories of the SCA engine's state (``store/repository.py``): subscriptions (per
server) and appearances.  Synchronous and blocking: called from the database thread pool
(``edge/dbpool.py``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy import delete as sql_delete
from sqlalchemy.engine import RowMapping

from scaserver.sca.appearance import Appearance, AppearanceState, CallLeg, Previous, Role
from scaserver.sca.subscription import Package, Subscription, SubscriptionKey, SubscriptionState
from scaserver.sip.message import Peer, Transport, split_list
from scaserver.store import tables
from scaserver.store.repository import AppearanceKey
from scaserver.store.writes import delete_keys, upsert

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
        upsert(self._engine, tables.sca_subscriptions, ("subscriber", "call_id", "from_tag", "to_tag"), rows)

    def delete(self, keys: Sequence[SubscriptionKey], /) -> None:
        delete_keys(
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
        upsert(self._engine, tables.sca_appearance, ("aor", "appearance_index"), rows)

    def delete(self, keys: Sequence[AppearanceKey], /) -> None:
        delete_keys(
            self._engine,
            tables.sca_appearance,
            [{"aor": aor, "appearance_index": index} for aor, index in keys],
        )
