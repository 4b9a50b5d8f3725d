"""What the SQL repositories write, column by column (Kamailio compatibility, sca.md
section 10), and the engine settings, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import attrs
import pytest
from sqlalchemy import Engine, insert, select, text
from sqlalchemy.exc import IntegrityError, OperationalError

from scaserver.registrar.binding import Binding, BindingKey, KeyKind
from scaserver.sca.line import SharedLine
from scaserver.sca.subscription import Package, Subscription, SubscriptionState
from scaserver.sip.message import Peer, Transport
from scaserver.store import migrate, tables
from scaserver.store.directory import SqlSharedLineRepository
from scaserver.store.engine import make_engine
from scaserver.store.registrations import SqlBindingRepository, ruid
from scaserver.store.sca import SqlSubscriptionRepository
from tests.conftest import PgServer


@pytest.fixture
def engine(migrated_db_url: str) -> Iterator[Engine]:
    engine = make_engine(migrated_db_url)
    try:
        yield engine
    finally:
        engine.dispose()


def subscription(**changes: Any) -> Subscription:
    base = Subscription(
        subscriber="sip:alice@192.0.2.10:5062",
        aor="sip:line1@example.com",
        event=Package.CALL_INFO,
        expires=1_800_003_600.0,
        call_id="sub-1",
        from_tag="their-tag",
        to_tag="our-tag",
        record_route=("<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"),
        notify_cseq=3,
        subscribe_cseq=2,
        server_id=7,
    )
    return attrs.evolve(base, **changes)


def rows(engine: Engine, table: str) -> list[dict[str, object]]:
    with engine.connect() as conn:
        return [dict(row) for row in conn.execute(select(tables.metadata.tables[table])).mappings()]


def test_subscription_row_is_written_as_kamailio_writes_it(engine: Engine) -> None:
    SqlSubscriptionRepository(engine, server_id=7).upsert(
        [subscription(event=Package.LINE_SEIZE, index=3, state=SubscriptionState.TERMINATED_TIMEOUT)]
    )
    (row,) = rows(engine, "sca_subscriptions")
    del row["id"]
    assert row == {
        "subscriber": "sip:alice@192.0.2.10:5062",
        "aor": "sip:line1@example.com",
        "event": 2,
        "expires": 1_800_003_600,
        "state": 8,
        "app_idx": 3,
        "call_id": "sub-1",
        "from_tag": "their-tag",
        "to_tag": "our-tag",
        "record_route": "<sip:p1.example.com;lr>, <sip:p2.example.com;lr>",
        "notify_cseq": 4,
        "subscribe_cseq": 3,
        "server_id": 7,
        "owner": "",
        "flow_transport": "",
        "flow_host": "",
        "flow_port": 0,
        "local_uri": None,
        "remote_uri": None,
    }


def test_subscription_refresh_updates_record_route_and_cseqs(engine: Engine) -> None:
    repo = SqlSubscriptionRepository(engine, server_id=7)
    repo.upsert([subscription()])
    repo.upsert([subscription(record_route=(), notify_cseq=10, expires=1_800_009_000.0)])
    (row,) = rows(engine, "sca_subscriptions")
    assert (row["record_route"], row["notify_cseq"], row["expires"]) == (None, 11, 1_800_009_000)


def test_subscription_expiry_is_stored_in_whole_seconds(engine: Engine) -> None:
    repo = SqlSubscriptionRepository(engine, server_id=7)
    repo.upsert([subscription(expires=1_800_000_000.4)])
    assert [s.expires for s in repo.load_all()] == [1_800_000_000.0]


def test_subscription_owner_flow_and_uris_are_stored(engine: Engine) -> None:
    repo = SqlSubscriptionRepository(engine, server_id=7)
    stored = subscription(
        local_uri="sip:line1@example.com",
        remote_uri="sip:alice@example.com",
        peer=Peer(Transport.TCP, "2001:db8::7", 40123),
        owner="user:alice",
    )
    repo.upsert([stored])
    assert repo.load_all() == [stored]
    (row,) = rows(engine, "sca_subscriptions")
    assert (row["flow_transport"], row["flow_host"], row["flow_port"]) == ("TCP", "2001:db8::7", 40123)


def test_rows_written_by_kamailio_are_restored(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(tables.sca_subscriptions).values(
                subscriber="sip:bob@192.0.2.11",
                aor="sip:line1@example.com",
                event=1,
                expires=1_800_000_100,
                state=0,
                app_idx=0,
                call_id="k1",
                from_tag="f",
                to_tag="t",
                record_route=None,
                notify_cseq=1,
                subscribe_cseq=1,
                server_id=0,
            )
        )
    (restored,) = SqlSubscriptionRepository(engine, server_id=0).load_all()
    assert restored == Subscription(
        subscriber="sip:bob@192.0.2.11",
        aor="sip:line1@example.com",
        event=Package.CALL_INFO,
        expires=1_800_000_100.0,
        call_id="k1",
        from_tag="f",
        to_tag="t",
        notify_cseq=0,
        subscribe_cseq=0,
    )


def test_subscription_dialog_is_unique_like_kamailio(engine: Engine) -> None:
    repo = SqlSubscriptionRepository(engine, server_id=7)
    repo.upsert([subscription()])
    repo.upsert([subscription(aor="sip:line2@example.com")])  # same subscriber and dialog: one row
    assert [row["aor"] for row in rows(engine, "sca_subscriptions")] == ["sip:line2@example.com"]
    with engine.begin() as conn, pytest.raises(IntegrityError):
        conn.execute(
            insert(tables.sca_subscriptions).values(**rows(engine, "sca_subscriptions")[0] | {"id": 99})
        )


def test_two_subscriptions_may_share_subscriber_aor_and_event(engine: Engine) -> None:
    repo = SqlSubscriptionRepository(engine, server_id=7)
    first = subscription(peer=Peer(Transport.UDP, "198.51.100.1", 5060), owner="user:alice")
    second = subscription(call_id="sub-2", peer=Peer(Transport.UDP, "203.0.113.2", 5060), owner="user:bob")
    repo.upsert([first, second])
    assert sorted(repo.load_all(), key=lambda s: s.call_id) == [first, second]
    repo.delete([first.key])
    assert repo.load_all() == [second]


def test_location_row_uses_usrloc_column_names(engine: Engine) -> None:
    binding = Binding(
        key=BindingKey("sip:alice@example.com", KeyKind.URI, "sip:alice@[2001:db8::1]:5062"),
        contact="sip:alice@[2001:db8::1]:5062",
        expires_at=1_800_000_060.5,
        call_id="reg-1",
        cseq=5,
        received=Peer(Transport.TLS, "2001:db8::1", 40000),
        path=("<sip:edge.example.com;lr>",),
        updated_at=1_800_000_000.5,
        registered_at=1_799_999_000.0,
    )
    SqlBindingRepository(engine).upsert([binding])
    (row,) = rows(engine, "location")
    assert row["ruid"] == ruid(binding.key)
    assert len(str(row["ruid"])) == 64
    assert (row["username"], row["domain"]) == ("alice", "example.com")
    assert row["received"] == "sip:[2001:db8::1]:40000;transport=tls"
    assert (row["callid"], row["cseq"], row["expires"], row["last_modified"]) == (
        "reg-1",
        5,
        1_800_000_060.5,
        1_800_000_000.5,
    )
    assert row["path"] == "<sip:edge.example.com;lr>"
    assert (row["q"], row["user_agent"], row["instance"], row["reg_id"]) == (None, None, None, None)
    assert (row["params"], row["push"]) == ("[]", "[]")


def test_line_members_are_deleted_with_their_line(engine: Engine) -> None:
    repo = SqlSharedLineRepository(engine)
    repo.upsert([SharedLine("sip:line1@example.com", 2, frozenset({"alice", "bob"}))])
    repo.delete(["sip:line1@example.com"])
    assert rows(engine, "sca_line_member") == []


def test_member_of_an_unknown_line_is_refused(engine: Engine) -> None:
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(insert(tables.sca_line_member).values(line_aor="sip:none@example.com", member="alice"))


def test_sqlite_connections_use_wal_and_foreign_keys(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    finally:
        engine.dispose()


def test_sqlite_engine_is_usable_from_worker_threads(sqlite_url: str) -> None:
    migrate.upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    results: list[int] = []

    def work() -> None:
        with engine.connect() as conn:
            results.append(len(conn.execute(select(tables.version)).all()))

    try:
        threads = [threading.Thread(target=work) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        engine.dispose()
    assert results == [1, 1, 1, 1]


def test_migration_waits_for_the_advisory_lock_then_gives_up(pg: PgServer, pg_url: str) -> None:
    holder = make_engine(pg_url)
    try:
        with holder.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(hashtext('scaserver-migrations'))"))
            with pytest.raises(OperationalError, match="lock timeout"):
                migrate.upgrade(pg_url, lock_timeout_ms=100)
            conn.execute(text("SELECT pg_advisory_unlock(hashtext('scaserver-migrations'))"))
            conn.commit()
        assert migrate.current_revision(pg_url) is None
        migrate.upgrade(pg_url, lock_timeout_ms=100)
        migrate.check_up_to_date(pg_url)
    finally:
        holder.dispose()


def test_connecting_to_a_closed_port_fails_fast() -> None:
    engine = make_engine("postgresql+psycopg://nobody@127.0.0.1:9/none", connect_timeout_s=1.0)
    try:
        with pytest.raises(OperationalError), engine.connect():
            pass
    finally:
        engine.dispose()
