"""The repository contract, run against memory, SQLite and PostgreSQL (STYLE.md section 8).

Every backend must give back exactly the values it was given (for the values the
Kamailio-compatible ``sca_subscriptions`` table can hold: whole-second expiry, no
local/remote URI or peer), replace by key, delete by key idempotently, and keep
other nodes' subscriptions out of reach.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from scaserver.push.policy import TokenInvalidated
from scaserver.registrar.binding import Binding, BindingKey, KeyKind
from scaserver.registrar.midregevents import UpstreamSnapshot
from scaserver.registrar.upstream import UpstreamState
from scaserver.sca.appearance import Appearance, AppearanceState, CallLeg, Previous, Role
from scaserver.sca.line import SharedLine
from scaserver.sca.subscription import Package, Subscription, SubscriptionKey, SubscriptionState
from scaserver.sip.digest import Credentials
from scaserver.sip.message import Peer, Transport
from scaserver.sip.trust import TrustedPeer
from scaserver.store import memory
from scaserver.store.directory import (
    SqlSharedLineRepository,
    SqlSubscriberRepository,
    SqlTrustedPeerRepository,
)
from scaserver.store.engine import make_engine
from scaserver.store.migrate import upgrade
from scaserver.store.registrations import (
    SqlBindingRepository,
    SqlTokenInvalidationRepository,
    SqlUpstreamRegistrationRepository,
)
from scaserver.store.repository import (
    AppearanceRepository,
    BindingRepository,
    SharedLineRepository,
    SubscriberRepository,
    SubscriptionRepository,
    TokenInvalidationRepository,
    TrustedPeerRepository,
    UpstreamRegistrationRepository,
)
from scaserver.store.sca import SqlAppearanceRepository, SqlSubscriptionRepository


@attrs.frozen
class Repositories:
    subscribers: SubscriberRepository
    trusted_peers: TrustedPeerRepository
    bindings: BindingRepository
    lines: SharedLineRepository
    subscriptions: SubscriptionRepository
    other_node_subscriptions: SubscriptionRepository
    appearances: AppearanceRepository
    upstream: UpstreamRegistrationRepository
    invalidations: TokenInvalidationRepository


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def repos(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Repositories]:
    if request.param == "memory":
        table: dict[SubscriptionKey, Subscription] = {}  # one table seen by two nodes
        node = memory.MemorySubscriptionRepository(server_id=0, table=table)
        other = memory.MemorySubscriptionRepository(server_id=1, table=table)
        yield Repositories(
            memory.MemorySubscriberRepository(),
            memory.MemoryTrustedPeerRepository(),
            memory.MemoryBindingRepository(),
            memory.MemorySharedLineRepository(),
            node,
            other,
            memory.MemoryAppearanceRepository(),
            memory.MemoryUpstreamRegistrationRepository(),
            memory.MemoryTokenInvalidationRepository(),
        )
        return
    url: str = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")
    upgrade(url)
    engine = make_engine(url)
    try:
        yield Repositories(
            SqlSubscriberRepository(engine),
            SqlTrustedPeerRepository(engine),
            SqlBindingRepository(engine),
            SqlSharedLineRepository(engine),
            SqlSubscriptionRepository(engine, server_id=0),
            SqlSubscriptionRepository(engine, server_id=1),
            SqlAppearanceRepository(engine),
            SqlUpstreamRegistrationRepository(engine),
            SqlTokenInvalidationRepository(engine),
        )
    finally:
        engine.dispose()


# -- builders ----------------------------------------------------------------------------


def credentials(user: str = "alice", realm: str = "example.com", *, sha512: bool = True) -> Credentials:
    made = Credentials.from_password(user, realm, f"secret-{user}")
    return made if sha512 else attrs.evolve(made, ha1_sha512_256=None)


def binding(aor: str = "sip:alice@example.com", value: str = "<urn:uuid:1>", **changes: Any) -> Binding:
    full = Binding(
        key=BindingKey(aor, KeyKind.INSTANCE, value),
        contact="sip:alice@192.0.2.10:5062;transport=tcp;ob",
        expires_at=1_800_003_600.25,
        call_id="reg-call-1@192.0.2.10",
        cseq=7,
        received=Peer(Transport.TCP, "192.0.2.10", 40123),
        q=0.5,
        user_agent="PolycomVVX-VVX_450-UA/6.4.3",
        path=("<sip:edge1.example.com;lr>", "<sip:edge2.example.com;lr;ob>"),
        instance="<urn:uuid:1>",
        reg_id=1,
        params=(("+sip.instance", '"<urn:uuid:1>"'), ("reg-id", "1"), ("audio", None)),
        push=(("pn-provider", "apns"), ("pn-prid", "token-1"), ("pn-param", "ABCD.com.example.voip")),
        registered_at=1_800_000_000.5,
        updated_at=1_800_000_000.75,
    )
    return attrs.evolve(full, **changes)


def minimal_binding() -> Binding:
    return Binding(
        key=BindingKey("sip:bob@example.com", KeyKind.URI, "sip:bob@[2001:db8::7]:5060"),
        contact="sip:bob@[2001:db8::7]:5060",
        expires_at=1_800_000_060.0,
        call_id="c2",
        cseq=1,
        received=Peer(Transport.UDP, "2001:db8::7", 5060),
    )


def subscription(
    subscriber: str = "sip:alice@192.0.2.10:5062",
    aor: str = "sip:line1@example.com",
    event: Package = Package.CALL_INFO,
    **changes: Any,
) -> Subscription:
    base = Subscription(
        subscriber=subscriber,
        aor=aor,
        event=event,
        expires=1_800_003_600.0,
        call_id=f"sub-{subscriber}-{aor}-{event.value}",
        from_tag="their-tag",
        to_tag="our-tag",
        state=SubscriptionState.ACTIVE,
        record_route=("<sip:proxy1.example.com;lr>", "<sip:proxy2.example.com;lr>"),
        notify_cseq=3,
        subscribe_cseq=2,
    )
    return attrs.evolve(base, **changes)


def appearance(line: str = "sip:line1@example.com", index: int = 1, **changes: Any) -> Appearance:
    base = Appearance(
        line=line,
        index=index,
        state=AppearanceState.ACTIVE,
        owner="sip:alice@192.0.2.10:5062",
        leg=CallLeg("call-1@192.0.2.10", "member-tag", "far-tag", Role.CALLER),
        remote_contact="sip:carol@198.51.100.5",
        remote_uri="sip:carol@example.net",
        created_at=1_800_000_000.5,
        changed_at=1_800_000_001.25,
        touched_at=1_800_000_002.0,
    )
    return attrs.evolve(base, **changes)


# -- every repository starts empty ---------------------------------------------------------


def test_every_repository_starts_empty(repos: Repositories) -> None:
    assert repos.subscribers.load_all() == []
    assert repos.trusted_peers.load_all() == []
    assert repos.bindings.load_all() == []
    assert repos.lines.load_all() == []
    assert repos.subscriptions.load_all() == []
    assert repos.appearances.load_all() == []
    assert repos.upstream.load_all() == []
    assert repos.invalidations.load_all() == []


def test_empty_writes_are_accepted(repos: Repositories) -> None:
    repos.subscribers.upsert([])
    repos.subscribers.delete([])
    repos.lines.upsert([])
    repos.appearances.delete([])
    assert repos.subscribers.load_all() == []


# -- subscribers ---------------------------------------------------------------------------


def test_subscribers_round_trip(repos: Repositories) -> None:
    values = [credentials("alice"), credentials("bob", sha512=False), credentials("alice", "other.example")]
    repos.subscribers.upsert(values)
    assert sorted(repos.subscribers.load_all(), key=repr) == sorted(values, key=repr)


def test_subscriber_upsert_replaces_by_username_and_realm(repos: Repositories) -> None:
    repos.subscribers.upsert([credentials("alice")])
    changed = Credentials.from_password("alice", "example.com", "new password")
    repos.subscribers.upsert([changed])
    assert repos.subscribers.load_all() == [changed]


def test_subscriber_delete_is_by_key_and_idempotent(repos: Repositories) -> None:
    repos.subscribers.upsert([credentials("alice"), credentials("bob")])
    repos.subscribers.delete([("alice", "example.com"), ("nobody", "example.com")])
    repos.subscribers.delete([("alice", "example.com")])
    assert repos.subscribers.load_all() == [credentials("bob")]


# -- trusted peers -------------------------------------------------------------------------


def test_trusted_peers_round_trip(repos: Repositories) -> None:
    values = [
        TrustedPeer("192.0.2.0/24", None, "upstream"),
        TrustedPeer("192.0.2.0/24", Transport.TCP, "upstream-tcp"),
        TrustedPeer("2001:db8::/32", Transport.TLS, "v6"),
    ]
    repos.trusted_peers.upsert(values)
    assert sorted(repos.trusted_peers.load_all(), key=repr) == sorted(values, key=repr)


def test_trusted_peer_with_any_transport_is_replaced_not_duplicated(repos: Repositories) -> None:
    repos.trusted_peers.upsert([TrustedPeer("192.0.2.0/24", None, "old")])
    repos.trusted_peers.upsert([TrustedPeer("192.0.2.0/24", None, "new")])
    assert repos.trusted_peers.load_all() == [TrustedPeer("192.0.2.0/24", None, "new")]


def test_trusted_peer_delete_distinguishes_any_transport(repos: Repositories) -> None:
    any_transport = TrustedPeer("192.0.2.0/24", None, "a")
    udp_only = TrustedPeer("192.0.2.0/24", Transport.UDP, "b")
    repos.trusted_peers.upsert([any_transport, udp_only])
    repos.trusted_peers.delete([("192.0.2.0/24", None)])
    assert repos.trusted_peers.load_all() == [udp_only]
    repos.trusted_peers.delete([("192.0.2.0/24", Transport.UDP), ("192.0.2.0/24", Transport.UDP)])
    assert repos.trusted_peers.load_all() == []


# -- bindings ------------------------------------------------------------------------------


def test_bindings_round_trip_with_every_field(repos: Repositories) -> None:
    values = [binding(), minimal_binding()]
    repos.bindings.upsert(values)
    assert sorted(repos.bindings.load_all(), key=repr) == sorted(values, key=repr)


def test_binding_refresh_replaces_the_row_of_its_key(repos: Repositories) -> None:
    repos.bindings.upsert([binding()])
    moved = binding(
        contact="sip:alice@192.0.2.99:5070", received=Peer(Transport.UDP, "192.0.2.99", 5070), cseq=8
    )
    repos.bindings.upsert([moved])
    assert repos.bindings.load_all() == [moved]


def test_bindings_of_one_aor_with_different_keys_coexist(repos: Repositories) -> None:
    first, second = binding(value="<urn:uuid:1>"), binding(value="<urn:uuid:2>")
    repos.bindings.upsert([first, second])
    assert sorted(repos.bindings.load_all(), key=repr) == sorted([first, second], key=repr)
    repos.bindings.delete([first.key, first.key])
    assert repos.bindings.load_all() == [second]


def test_purge_expired_bindings(repos: Repositories) -> None:
    live, lapsed = binding(expires_at=2000.0), binding(value="<urn:uuid:9>", expires_at=1000.0)
    repos.bindings.upsert([live, lapsed])
    assert repos.bindings.purge_expired(1000.0) == 1
    assert repos.bindings.load_all() == [live]


# -- shared lines --------------------------------------------------------------------------


def test_lines_round_trip_with_members(repos: Repositories) -> None:
    values = [
        SharedLine("sip:line1@example.com", 2, frozenset({"alice", "sip:bob@example.com"})),
        SharedLine("sip:line2@example.com", 0, frozenset()),
    ]
    repos.lines.upsert(values)
    assert sorted(repos.lines.load_all(), key=repr) == sorted(values, key=repr)


def test_line_upsert_replaces_appearances_and_members(repos: Repositories) -> None:
    repos.lines.upsert([SharedLine("sip:line1@example.com", 2, frozenset({"alice", "bob"}))])
    changed = SharedLine("sip:line1@example.com", 4, frozenset({"bob", "carol"}), push_members=True)
    repos.lines.upsert([changed])
    assert repos.lines.load_all() == [changed]
    back = SharedLine("sip:line1@example.com", 4, frozenset({"bob", "carol"}))
    repos.lines.upsert([back])
    assert repos.lines.load_all() == [back]


def test_line_delete_removes_its_members(repos: Repositories) -> None:
    repos.lines.upsert([SharedLine("sip:line1@example.com", 2, frozenset({"alice"}))])
    repos.lines.delete(["sip:line1@example.com", "sip:none@example.com"])
    assert repos.lines.load_all() == []
    repos.lines.upsert([SharedLine("sip:line1@example.com", 1, frozenset())])
    assert repos.lines.load_all() == [SharedLine("sip:line1@example.com", 1, frozenset())]


# -- subscriptions -------------------------------------------------------------------------


def test_subscriptions_round_trip(repos: Repositories) -> None:
    values = [
        subscription(),
        subscription(event=Package.LINE_SEIZE, index=2, record_route=(), notify_cseq=0, subscribe_cseq=0),
        subscription(aor="sip:line2@example.com", state=SubscriptionState.PENDING),
    ]
    repos.subscriptions.upsert(values)
    assert sorted(repos.subscriptions.load_all(), key=repr) == sorted(values, key=repr)


def test_subscription_key_is_subscriber_and_dialog(repos: Repositories) -> None:
    first = subscription()
    refreshed = attrs.evolve(
        first,
        expires=1_800_007_200.0,
        notify_cseq=9,
        subscribe_cseq=4,
        record_route=("<sip:proxy3.example.com;lr>",),
    )
    repos.subscriptions.upsert([first])
    repos.subscriptions.upsert([refreshed])
    assert repos.subscriptions.load_all() == [refreshed]
    # The same Contact in another dialog (another phone behind another NAT) is another row.
    twin = attrs.evolve(first, call_id="new-dialog", peer=Peer(Transport.UDP, "203.0.113.9", 40000))
    repos.subscriptions.upsert([twin])
    assert sorted(s.call_id for s in repos.subscriptions.load_all()) == ["new-dialog", first.call_id]


def test_subscription_delete_is_by_key(repos: Repositories) -> None:
    keep = subscription(event=Package.LINE_SEIZE)
    gone = subscription()
    repos.subscriptions.upsert([keep, gone])
    repos.subscriptions.delete([gone.key, gone.key])
    assert repos.subscriptions.load_all() == [keep]


def test_subscriptions_of_another_node_are_neither_loaded_nor_deleted(repos: Repositories) -> None:
    mine = subscription()
    theirs = subscription(subscriber="sip:dave@192.0.2.20", server_id=1)
    repos.subscriptions.upsert([mine])
    repos.other_node_subscriptions.upsert([theirs])
    assert repos.subscriptions.load_all() == [mine]
    assert repos.other_node_subscriptions.load_all() == [theirs]
    repos.subscriptions.delete([theirs.key])
    assert repos.subscriptions.purge_expired(2_000_000_000.0) == 1
    assert repos.subscriptions.load_all() == []
    assert repos.other_node_subscriptions.load_all() == [theirs]


def test_purge_expired_subscriptions_keeps_live_ones(repos: Repositories) -> None:
    live = subscription(expires=2000.0)
    lapsed = subscription(aor="sip:line2@example.com", expires=999.0)
    repos.subscriptions.upsert([live, lapsed])
    assert repos.subscriptions.purge_expired(1000.0) == 1
    assert repos.subscriptions.load_all() == [live]


# -- appearances ---------------------------------------------------------------------------


def test_appearances_round_trip(repos: Repositories) -> None:
    values = [
        appearance(),
        appearance(index=2, state=AppearanceState.SEIZED, leg=None, remote_contact=None, remote_uri=None),
        appearance(
            index=3,
            state=AppearanceState.ALERTING,
            leg=CallLeg("call-3", "member-3", None, Role.CALLEE),
        ),
        appearance(
            line="sip:line2@example.com",
            state=AppearanceState.HELD,
            leg=CallLeg("call-4", "m4", "r4", Role.CALLEE),
            rollback=(AppearanceState.ACTIVE, 102),
            previous=Previous("sip:bob@192.0.2.11", CallLeg("call-0", "m0", "r0", Role.CALLER), "sip:x@y"),
        ),
        appearance(line="sip:line3@example.com", owner=None, previous=Previous(None, None, None)),
    ]
    repos.appearances.upsert(values)
    assert sorted(repos.appearances.load_all(), key=repr) == sorted(values, key=repr)


def test_appearance_upsert_replaces_by_line_and_index(repos: Repositories) -> None:
    repos.appearances.upsert([appearance(state=AppearanceState.ACTIVE)])
    held = appearance(state=AppearanceState.HELD_PRIVATE, changed_at=1_800_000_100.0)
    repos.appearances.upsert([held])
    assert repos.appearances.load_all() == [held]


def test_appearance_delete_is_by_line_and_index(repos: Repositories) -> None:
    one, two = appearance(index=1), appearance(index=2)
    repos.appearances.upsert([one, two])
    repos.appearances.delete([("sip:line1@example.com", 1), ("sip:line1@example.com", 1)])
    assert repos.appearances.load_all() == [two]


# -- upstream registrations (push-and-parking.md 3.5, R21) -----------------------------------


def upstream(aor: str = "sip:200@example.com", **changes: Any) -> UpstreamSnapshot:
    base = UpstreamSnapshot(
        aor=aor,
        call_id="5f1e0c9a2b7d4e3f@192.0.2.1",
        cseq=64,
        state=UpstreamState.REGISTERED,
        expires_at=1_800_003_600.125,
        granted=3600,
        upstream_auth_needed=False,
        floor=0,
    )
    return attrs.evolve(base, **changes)


def test_upstream_registrations_round_trip(repos: Repositories) -> None:
    values = [
        upstream(),
        upstream("sip:201@example.com", state=UpstreamState.RETRYING, upstream_auth_needed=True, floor=1800),
        upstream("sip:202@example.com", cseq=0, state=UpstreamState.IDLE, expires_at=0.0, granted=0),
        upstream("sip:203@example.com", cseq=2**31 - 1, state=UpstreamState.LOST),
    ]
    repos.upstream.upsert(values)
    assert sorted(repos.upstream.load_all(), key=repr) == sorted(values, key=repr)


def test_upstream_registration_is_replaced_by_aor(repos: Repositories) -> None:
    repos.upstream.upsert([upstream()])
    later = upstream(cseq=96, state=UpstreamState.REJECTED, expires_at=1_800_007_200.0, granted=1800)
    repos.upstream.upsert([upstream(cseq=95), later])
    assert repos.upstream.load_all() == [later]


def test_upstream_registration_delete_is_by_aor_and_idempotent(repos: Repositories) -> None:
    keep, gone = upstream("sip:201@example.com"), upstream()
    repos.upstream.upsert([keep, gone])
    repos.upstream.delete([gone.aor, gone.aor, "sip:nobody@example.com"])
    repos.upstream.delete([gone.aor])
    assert repos.upstream.load_all() == [keep]


# -- push token invalidations (push-and-parking.md 4.4) ------------------------------------

#: A Web Push subscription as a token: longer than any indexable column.
WEBPUSH_TOKEN = '{"endpoint":"https://push.example.net/' + "x" * 600 + '","keys":{"auth":"a"}}'


def test_token_invalidations_round_trip_with_long_tokens(repos: Repositories) -> None:
    values = [
        TokenInvalidated("apns", "a1b2c3d4e5f60718293a4b5c6d7e8f90", 1_800_000_000.5),
        TokenInvalidated("fcm", "a1b2c3d4e5f60718293a4b5c6d7e8f90", 1_800_000_001.25),  # other provider
        TokenInvalidated("webpush", WEBPUSH_TOKEN, 1_800_000_002.0),
    ]
    repos.invalidations.upsert(values)
    loaded = repos.invalidations.load_all()
    assert sorted(loaded, key=lambda v: v.provider) == values
    assert [v.prid for v in loaded if v.provider == "webpush"] == [WEBPUSH_TOKEN]


def test_token_invalidation_is_replaced_by_provider_and_token(repos: Repositories) -> None:
    repos.invalidations.upsert([TokenInvalidated("apns", "tok-1", 1000.0)])
    later = TokenInvalidated("apns", "tok-1", 2000.0)
    repos.invalidations.upsert([later])
    assert repos.invalidations.load_all() == [later]


def test_token_invalidation_delete_is_by_provider_and_token(repos: Repositories) -> None:
    apns, fcm = TokenInvalidated("apns", "tok-1", 1000.0), TokenInvalidated("fcm", "tok-1", 1000.0)
    repos.invalidations.upsert([apns, fcm, TokenInvalidated("webpush", WEBPUSH_TOKEN, 3.0)])
    repos.invalidations.delete([("apns", "tok-1"), ("apns", "tok-1"), ("webpush", WEBPUSH_TOKEN)])
    repos.invalidations.delete([("apns", "never-seen")])
    assert repos.invalidations.load_all() == [fcm]


# -- batches -------------------------------------------------------------------------------


def test_repeated_key_in_one_upsert_keeps_the_last(repos: Repositories) -> None:
    first, last = credentials("alice"), Credentials.from_password("alice", "example.com", "later")
    repos.subscribers.upsert([first, last])
    assert repos.subscribers.load_all() == [last]
    peers = [TrustedPeer("192.0.2.0/24", None, "first"), TrustedPeer("192.0.2.0/24", None, "last")]
    repos.trusted_peers.upsert(peers)
    assert repos.trusted_peers.load_all() == [peers[1]]


def test_large_batches_are_written_and_deleted_whole(repos: Repositories) -> None:
    values = [subscription(subscriber=f"sip:u{n}@192.0.2.1", call_id=f"c{n}") for n in range(1201)]
    repos.subscriptions.upsert(values)
    assert len(repos.subscriptions.load_all()) == 1201
    repos.subscriptions.upsert([attrs.evolve(v, notify_cseq=99) for v in values])
    assert {s.notify_cseq for s in repos.subscriptions.load_all()} == {99}
    repos.subscriptions.delete([v.key for v in values[:1200]])
    assert repos.subscriptions.load_all() == [attrs.evolve(values[1200], notify_cseq=99)]
