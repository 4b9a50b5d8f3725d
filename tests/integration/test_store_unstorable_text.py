"""Nothing a peer sends can stop the database: every text field the store keeps, given octets
that are not UTF-8 (surrogate escapes), NUL and lone surrogates, goes through the write-behind
queue into SQLite and PostgreSQL and comes back escaped (``store/engine.py``); a row the
database refuses for its content is dead-lettered while its batch neighbours are stored.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import attrs
from sqlalchemy import String, Text, select
from twisted.internet import reactor
from twisted.internet.task import Clock

from scaserver.edge.dbpool import DatabasePool
from scaserver.edge.writebehind import WriteBehind
from scaserver.push.policy import TokenInvalidated
from scaserver.registrar.binding import Binding, BindingKey, KeyKind
from scaserver.registrar.midregevents import UpstreamSnapshot
from scaserver.registrar.upstream import UpstreamState
from scaserver.sca.appearance import Appearance, AppearanceState, CallLeg, Role
from scaserver.sca.line import SharedLine
from scaserver.sca.subscription import Package, Subscription, SubscriptionState
from scaserver.sip.message import Peer, Transport
from scaserver.store import sql, tables
from scaserver.store.history import (
    AccRecord,
    AppearanceEventRecord,
    CallRecord,
    Cause,
    Direction,
    LineSampleRecord,
    ParkedCallRecord,
    PushWakeupRecord,
    RegistrationEvent,
    RegistrationEventRecord,
    SqlHistoryRepository,
    history_key,
)
from scaserver.store.repository import (
    appearance_key,
    binding_key,
    line_key,
    subscription_key,
    token_key,
    upstream_key,
)
from tests.conftest import twisted_fixture, twisted_test

#: What a peer can put in a header: an octet that is not UTF-8 (as the parser decodes it),
#: NUL, and a lone surrogate (a JSON ``\ud800`` escape through the RPC).
BAD = b"\xff".decode("utf-8", "surrogateescape") + "\x00" + "\ud800"
#: How the database keeps it.
ESCAPED = "\\xff\\x00\\ud800"
T0 = 1_800_000_000.0
MS = 1_800_000_000_000


def binding(n: int, *, cseq: int = 7) -> Binding:
    contact = f"<sip:phone{n}{BAD}@192.0.2.10:5060;transport=udp;x={BAD}>"
    return Binding(
        key=BindingKey(f"sip:user{n}{BAD}@example.com", KeyKind.URI, contact),
        contact=contact,
        expires_at=T0 + 3600,
        call_id=f"reg-{n}{BAD}@192.0.2.10",
        cseq=cseq,
        received=Peer(Transport.UDP, "192.0.2.10", 5060),
        user_agent=f"Phone{BAD}",
        path=(f"<sip:edge{BAD}.example.com;lr>",),
        instance=f"<urn:uuid:{BAD}>",
        reg_id=1,
        params=(("+sip.instance", f'"<urn:uuid:{BAD}>"'),),
        push=(("pn-provider", "apns"), ("pn-prid", f"tok{BAD}"), ("pn-param", f"topic{BAD}")),
        registered_at=T0,
        updated_at=T0,
    )


def subscription(n: int) -> Subscription:
    return Subscription(
        subscriber=f"sip:alice{n}{BAD}@192.0.2.10:5062",
        aor=f"sip:line{BAD}@example.com",
        event=Package.CALL_INFO,
        expires=T0 + 3600,
        call_id=f"sub-{n}{BAD}",
        from_tag=f"from{BAD}",
        to_tag=f"to{BAD}",
        state=SubscriptionState.ACTIVE,
        record_route=(f"<sip:proxy{BAD}.example.com;lr>",),
        notify_cseq=1,
        subscribe_cseq=1,
    )


def appearance(n: int) -> Appearance:
    return Appearance(
        line=f"sip:line{BAD}@example.com",
        index=n,
        state=AppearanceState.ACTIVE,
        owner=f"sip:alice{BAD}@192.0.2.10:5062",
        leg=CallLeg(f"call{BAD}@192.0.2.10", f"member{BAD}", f"far{BAD}", Role.CALLER),
        remote_contact=f"sip:carol{BAD}@198.51.100.5",
        remote_uri=f"sip:carol{BAD}@example.net",
        created_at=T0,
        changed_at=T0,
        touched_at=T0,
    )


def call(n: int, *, hold_count: int = 0) -> CallRecord:
    return CallRecord(
        call_uuid=f"uuid-{n}",
        sip_call_id=f"call{BAD}-{n}",
        from_tag=f"from{BAD}",
        to_tag=f"to{BAD}",
        direction=Direction.INBOUND,
        line_aor=f"sip:line{BAD}@example.com",
        appearance_index=1,
        caller_uri=f"sip:carol{BAD}@example.net",
        caller_display=f"Carol {BAD}",
        callee_uri=f"sip:line{BAD}@example.com",
        origin_device=None,
        answered_contact=f"sip:alice{BAD}@192.0.2.10",
        answered_device=None,
        started_ms=MS + n,
        final_sip_reason=f"Busy {BAD}",
        hold_count=hold_count,
    )


def history_rows() -> list[object]:
    return [
        call(1),
        PushWakeupRecord(MS, f"sip:user{BAD}@example.com", "apns", "0" * 64, f"call {BAD}", "uuid-1"),
        ParkedCallRecord("uuid-1", f"sip:user{BAD}@example.com", MS),
        RegistrationEventRecord(
            seq=1,
            event_ms=MS,
            aor=f"sip:user{BAD}@example.com",
            contact=f"<sip:phone{BAD}@192.0.2.10>",
            instance_id=f"<urn:uuid:{BAD}>",
            reg_id=1,
            event=RegistrationEvent.REGISTERED,
            expires_s=600,
            user_agent=f"Phone{BAD}",
            source_addr="192.0.2.10:5060",
            device_mac=None,
            push_provider=f"apns{BAD}",
        ),
        AppearanceEventRecord(
            seq=2,
            event_ms=MS,
            line_aor=f"sip:line{BAD}@example.com",
            appearance_index=1,
            old_state=None,
            new_state="active",
            cause=Cause.ANSWERED,
            owner_contact=f"sip:alice{BAD}@192.0.2.10",
            owner_device=None,
            call_uuid="uuid-1",
        ),
        LineSampleRecord(f"sip:line{BAD}@example.com", MS, 1, 1, 0),
        AccRecord(
            seq=3,
            time_ms=MS,
            method="INVITE",
            from_tag=f"from{BAD}",
            to_tag=f"to{BAD}",
            callid=f"call{BAD}",
            sip_code="200",
            sip_reason=f"OK {BAD}",
            src_user=f"carol{BAD}",
            src_domain=f"example{BAD}.net",
            dst_user=f"line{BAD}",
        ),
    ]


@attrs.define
class Store:
    engine: object
    store: sql.SqlStore
    clock: Clock
    pool: DatabasePool
    queue: WriteBehind

    async def flush(self) -> None:
        self.clock.advance(5.0)
        await self.queue.wait_idle()


@twisted_fixture
async def store(migrated_db_url: str) -> AsyncIterator[Store]:
    made = sql.SqlStore(migrated_db_url)
    clock = Clock()
    pool = DatabasePool(reactor, max_threads=1)
    queue = WriteBehind(clock, pool, interval_s=5.0)
    pool.startService()
    queue.startService()
    yield Store(made.engine, made, clock, pool, queue)
    await queue.stopService()
    await pool.stopService()
    made.close()


def text_values(store: Store) -> dict[str, list[str]]:
    """Every text value of every table, by table."""
    found: dict[str, list[str]] = {}
    with store.store.engine.connect() as conn:
        for table in tables.metadata.sorted_tables:
            columns = [c for c in table.columns if isinstance(c.type, (String, Text))]
            if not columns:
                continue
            for row in conn.execute(select(*columns)):
                found.setdefault(table.name, []).extend(v for v in row if isinstance(v, str))
    return found


@twisted_test
async def test_every_text_field_is_stored_escaped(store: Store) -> None:
    s, q = store.store, store.queue
    q.channel("sca_line", s.lines, line_key).upsert(
        SharedLine(f"sip:line{BAD}@example.com", 2, frozenset({f"alice{BAD}"}))
    )
    q.channel("location", s.bindings, binding_key).upsert(binding(1))
    q.channel("sca_subscriptions", s.subscriptions, subscription_key).upsert(subscription(1))
    q.channel("sca_appearance", s.appearances, appearance_key).upsert(appearance(1))
    q.channel("midreg_upstream", s.upstream_registrations, upstream_key).upsert(
        UpstreamSnapshot(
            f"sip:user{BAD}@example.com", f"up{BAD}", 1, UpstreamState.REGISTERED, T0, 600, False, 0
        )
    )
    q.channel("push_invalidation", s.token_invalidations, token_key).upsert(
        TokenInvalidated(f"apns{BAD}", f"tok{BAD}", T0)
    )
    history = q.channel(
        "history", SqlHistoryRepository(s.engine), history_key, table_of=lambda key: str(key[0])
    )
    for row in history_rows():
        history.upsert(row)  # type: ignore[arg-type]
    await store.flush()

    assert q.consecutive_failures == 0
    assert q.dead_letters == {}
    assert q.depth == 0
    values = text_values(store)
    for table in (
        "sca_line", "sca_line_member", "location", "sca_subscriptions", "sca_appearance",
        "midreg_upstream", "push_invalidation", "calls", "push_wakeups", "parked_calls",
        "registration_events", "appearance_events", "line_samples", "acc",
    ):  # fmt: skip
        assert any(ESCAPED in value for value in values.get(table, [])), table
    for table, texts in values.items():
        for value in texts:
            assert "\x00" not in value, table
            value.encode("utf-8")  # no surrogate left

    (stored,) = s.bindings.load_all()
    assert stored.user_agent == f"Phone{ESCAPED}"
    assert stored.call_id == f"reg-1{ESCAPED}@192.0.2.10"
    assert stored.instance == f"<urn:uuid:{ESCAPED}>"
    (sub,) = s.subscriptions.load_all()
    assert (sub.subscriber, sub.from_tag) == (f"sip:alice1{ESCAPED}@192.0.2.10:5062", f"from{ESCAPED}")
    (line,) = s.lines.load_all()
    assert line.members == frozenset({f"alice{ESCAPED}"})


@twisted_test
async def test_a_row_written_with_a_surrogate_is_replaced_and_deleted_by_the_same_key(store: Store) -> None:
    s, q = store.store, store.queue
    channel = q.channel("location", s.bindings, binding_key)
    channel.upsert(binding(1))
    await store.flush()
    channel.upsert(attrs.evolve(binding(1), cseq=8))
    await store.flush()
    assert [b.cseq for b in s.bindings.load_all()] == [8]
    channel.delete(binding(1).key)
    await store.flush()
    assert s.bindings.load_all() == []


@twisted_test
async def test_a_refused_row_is_dead_lettered_and_its_neighbours_are_stored(store: Store) -> None:
    s, q = store.store, store.queue
    bindings = q.channel("location", s.bindings, binding_key)
    history = q.channel(
        "history", SqlHistoryRepository(s.engine), history_key, table_of=lambda key: str(key[0])
    )
    for n in range(5):  # binding 2's CSeq does not fit the column: the database refuses the row
        bindings.upsert(binding(n, cseq=2**70 if n == 2 else 7))
    for n in range(5):
        history.upsert(call(n, hold_count=2**70 if n == 3 else 0))
    for row in history_rows()[3:]:
        history.upsert(row)  # type: ignore[arg-type]
    await store.flush()

    assert q.dead_letters == {"location": 1, "calls": 1}
    assert q.consecutive_failures == 0
    assert q.depth == 0
    assert sorted(b.key.aor for b in s.bindings.load_all()) == [
        f"sip:user{n}{ESCAPED}@example.com" for n in (0, 1, 3, 4)
    ]
    with s.engine.connect() as conn:
        uuids = sorted(conn.execute(select(tables.calls.c.call_uuid)).scalars())
        assert uuids == ["uuid-0", "uuid-1", "uuid-2", "uuid-4"]
        for table in (tables.registration_events, tables.appearance_events, tables.acc, tables.line_samples):
            assert len(conn.execute(select(table)).all()) == 1, table.name
    await store.flush()  # the dead letter is not retried
    assert q.dead_letters == {"location": 1, "calls": 1}


@twisted_test
async def test_a_header_longer_than_its_column_is_stored_cut(store: Store) -> None:
    s, q = store.store, store.queue
    long = binding(1)
    long = attrs.evolve(long, user_agent="U" * 1000 + BAD, call_id="c" * 1000, instance="<urn:" + "i" * 1000)
    q.channel("location", s.bindings, binding_key).upsert(long)
    lines = q.channel("sca_line", s.lines, line_key)
    line_value = SharedLine("sip:line@example.com", 2, frozenset({"m" * 1000, f"alice{BAD}"}))
    lines.upsert(line_value)
    await store.flush()
    lines.upsert(line_value)  # written again, it keeps its members
    await store.flush()
    assert q.dead_letters == {}
    (stored,) = s.bindings.load_all()
    assert stored.user_agent == "U" * 255
    assert stored.call_id == "c" * 255
    (line,) = s.lines.load_all()
    assert line.members == frozenset({"m" * 255, f"alice{ESCAPED}"})
