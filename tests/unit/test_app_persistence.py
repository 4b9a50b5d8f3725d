"""The persistence of the push mid-registrar and of push tokens (push-and-parking.md 3.5, 4.4,
race R21) as the composition root wires it: what reaches the write-behind queue, and what the
start-up restore makes of what the database held."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, TypeVar, cast

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock

from scaserver.edge.persistence import NOTIFY_CSEQ_BLOCK, Persistence, StoredState, restore_upstream
from scaserver.edge.stack import TimerClock
from scaserver.edge.writebehind import DELETED, Channel, Runner, Sink, WriteBehind
from scaserver.events import EventBus
from scaserver.push.policy import TokenInvalidated
from scaserver.registrar.binding import Binding, BindingKey, KeyKind
from scaserver.registrar.midregevents import UpstreamSaved, UpstreamSnapshot
from scaserver.registrar.midregistrar import REFRESH_TIMER
from scaserver.registrar.midregstate import AorKey
from scaserver.registrar.upstream import UpstreamState
from scaserver.sip.actions import StartTimer
from scaserver.sip.message import Peer, Transport
from scaserver.store.repository import TokenKey, token_key, upstream_key
from tests.push_rig import AOR, M1, M2, pn, rig

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

TOKEN = "a1b2c3d4e5f60718293a4b5c6d7e8f90"


def channel(name: str, key_of: Any) -> Channel[Any, Any]:
    writes = WriteBehind(cast(TimerClock, Clock()), cast(Runner, None))  # never flushed here
    return writes.channel(name, cast(Sink[object, object], None), key_of)


@attrs.define
class Wired:
    bus: EventBus
    upstream: Channel[str, UpstreamSnapshot]
    invalidated: Channel[TokenKey, TokenInvalidated]


def wired() -> Wired:
    upstream: Channel[str, UpstreamSnapshot] = channel("midreg_upstream", upstream_key)
    invalidated: Channel[TokenKey, TokenInvalidated] = channel("push_invalidation", token_key)
    persistence = Persistence(
        channel("location", lambda b: b.key),
        channel("subs", lambda s: s.key),
        channel("apps", lambda a: (a.line, a.index)),
        upstream=upstream,
        invalidated=invalidated,
    )
    bus = EventBus()
    persistence.attach(bus)
    return Wired(bus, upstream, invalidated)


def snapshot(**changes: Any) -> UpstreamSnapshot:
    base = UpstreamSnapshot(AOR, "reg-1", 0, UpstreamState.REGISTERED, 5000.0, 3600, False, 0)
    return attrs.evolve(base, **changes)


def written(queue: Channel[K, V]) -> list[V]:
    """What the next flush would upsert (and empties the queue, as a flush does)."""
    return [op for _, op in queue.take().operations if op is not DELETED]


def test_upstream_cseqs_are_stored_one_block_ahead_and_written_once_per_block() -> None:
    w = wired()
    assert NOTIFY_CSEQ_BLOCK == 32
    w.bus.publish(UpstreamSaved(snapshot(cseq=0)))
    assert written(w.upstream) == [snapshot(cseq=32)]
    w.bus.publish(UpstreamSaved(snapshot(cseq=1)))
    assert written(w.upstream) == [snapshot(cseq=64)]
    for number in range(2, 33):
        w.bus.publish(UpstreamSaved(snapshot(cseq=number)))
    assert written(w.upstream) == []  # CSeqs 2..32 are covered by the stored 64
    w.bus.publish(UpstreamSaved(snapshot(cseq=33)))
    assert written(w.upstream) == [snapshot(cseq=96)]


def test_a_crash_that_loses_the_last_write_never_repeats_a_cseq() -> None:
    """Each stored value is above the CSeq that caused it; the value before it is above that
    CSeq too, so losing the newest write (killed before the flush) is harmless."""
    w = wired()
    stored: list[int] = []
    for number in range(1, 200):
        w.bus.publish(UpstreamSaved(snapshot(cseq=number)))
        for value in written(w.upstream):
            if stored:
                assert stored[-1] > number, (stored, number)  # what a crash now would restore
            stored.append(value.cseq)
            assert value.cseq > number
    assert stored == [64, 96, 128, 160, 192, 224, 256]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.lists(st.integers(1, NOTIFY_CSEQ_BLOCK - 1), min_size=1, max_size=6), min_size=1, max_size=6)
)
def test_no_cseq_is_ever_sent_twice_across_crashes(runs: list[list[int]]) -> None:
    """Each run loads the stored dialog, reserves a block synchronously (as make_server does),
    sends CSeqs in stretches between flushes (fewer than a block each) and is killed with its
    last stretch unflushed.  Whatever the pattern, no CSeq repeats in the dialog."""
    database = snapshot(cseq=0)
    sent: list[int] = []
    for stretches in runs:
        loaded = database
        (database,) = stored((), upstream=(loaded,)).reserved_upstream()  # the synchronous write
        w, cseq = wired(), loaded.cseq  # the engine continues the loaded CSeq
        for number, stretch in enumerate(stretches):
            for _ in range(stretch):
                cseq += 1
                sent.append(cseq)
                w.bus.publish(UpstreamSaved(snapshot(cseq=cseq)))
            flushed = written(w.upstream)
            if number < len(stretches) - 1 and flushed:  # the last stretch dies with the process
                database = flushed[-1]
    assert len(sent) == len(set(sent)) and sent == sorted(sent)


def test_state_expiry_and_flag_changes_are_stored_within_a_block() -> None:
    w = wired()
    w.bus.publish(UpstreamSaved(snapshot(cseq=3)))
    written(w.upstream)
    w.bus.publish(UpstreamSaved(snapshot(cseq=3, state=UpstreamState.RETRYING)))
    assert written(w.upstream) == [snapshot(cseq=64, state=UpstreamState.RETRYING)]
    w.bus.publish(UpstreamSaved(snapshot(cseq=4, state=UpstreamState.RETRYING, upstream_auth_needed=True)))
    assert written(w.upstream) == [snapshot(cseq=64, state=UpstreamState.RETRYING, upstream_auth_needed=True)]
    w.bus.publish(UpstreamSaved(snapshot(aor="sip:201@example.com", cseq=4)))
    assert written(w.upstream) == [snapshot(aor="sip:201@example.com", cseq=64)]


def test_invalidated_tokens_are_stored_as_declared() -> None:
    w = wired()
    event = TokenInvalidated("apns", TOKEN, 1234.5)
    w.bus.publish(event)
    assert w.invalidated.pending(("apns", TOKEN)) == event
    assert TOKEN not in repr(event)  # never shown whole


# ---------------------------------------------------------------------- start-up


def binding(peer: Peer, token: str | None, *, updated_at: float, aor: str = AOR) -> Binding:
    contact = f"sip:200@{peer.host}:{peer.port}" + (f";{pn(token)}" if token else "")
    push = (("pn-provider", "apns"), ("pn-prid", token), ("pn-param", "T.app.voip")) if token else ()
    kind, value = (KeyKind.PUSH, f"apns {token} T.app.voip") if token else (KeyKind.URI, contact)
    return Binding(
        BindingKey(aor, kind, value),
        contact,
        updated_at + 600,
        f"call-{peer.port}",
        1,
        peer,
        push=push,
        registered_at=updated_at,
        updated_at=updated_at,
    )


def stored(
    bindings: tuple[Binding, ...],
    invalidated: tuple[TokenInvalidated, ...] = (),
    *,
    upstream: tuple[UpstreamSnapshot, ...] = (),
) -> StoredState:
    return StoredState((), (), (), bindings, (), (), upstream, invalidated)


def test_only_invalidations_that_still_affect_a_stored_binding_are_kept() -> None:
    old = binding(M1, "TOK-OLD", updated_at=1000.0)
    renewed = binding(M2, "TOK-NEW", updated_at=3000.0)
    affecting = TokenInvalidated("apns", "TOK-OLD", 2000.0)
    state = stored(
        (old, renewed, binding(Peer(Transport.UDP, "192.0.2.9", 5060), None, updated_at=1.0)),
        (
            affecting,
            TokenInvalidated("apns", "TOK-NEW", 2000.0),  # its binding re-registered since
            TokenInvalidated("apns", "TOK-GONE", 2000.0),  # no binding carries it any more
            TokenInvalidated("fcm", "TOK-OLD", 2000.0),  # same token text, other provider
        ),
    )
    assert [token_key(item) for item in state.obsolete_invalidations()] == [
        ("apns", "TOK-NEW"),
        ("apns", "TOK-GONE"),
        ("fcm", "TOK-OLD"),
    ]


def test_restored_bindings_confirmed_before_their_token_died_are_not_push_capable() -> None:
    r = rig()
    now = 5000.0
    dead = binding(M1, "TOK1", updated_at=now - 100)
    fresh = binding(M2, "TOK2", updated_at=now - 10)
    r.push.restore(
        [dead, fresh],
        now,
        invalidated=[TokenInvalidated("apns", "TOK1", now - 50), TokenInvalidated("apns", "TOK2", now - 50)],
    )
    lost, kept = r.push.device(dead.key), r.push.device(fresh.key)
    assert lost is not None and not lost.push_capable and lost.invalidated_at == now - 50
    assert kept is not None and kept.push_capable and kept.invalidated_at is None  # R13


def test_restore_upstream_continues_saved_dialogs_and_opens_one_for_bindings_without() -> None:
    r = rig()
    now = 5000.0
    other = "sip:201@example.com"
    bindings = (binding(M1, "TOK1", updated_at=now - 10), binding(M2, None, updated_at=now - 10, aor=other))
    r.core.registrar.restore(bindings, now)
    saved = snapshot(call_id="kept", cseq=64, expires_at=now + 1000)
    gone = snapshot(aor="sip:202@example.com", call_id="idle", state=UpstreamState.IDLE)
    actions = restore_upstream(r.core, [saved, gone], bindings, now)
    assert actions == [
        StartTimer(AorKey(AOR), REFRESH_TIMER, 30.0),  # random() 0.5 of startup_spread 60
        StartTimer(AorKey(other), REFRESH_TIMER, 30.0),
    ]
    fresh = r.midregistrar.registration(other)
    assert fresh is not None and (fresh.call_id, fresh.cseq, fresh.state) == (
        f"reg-{other}",
        0,
        UpstreamState.LOST,
    )
    r.run(r.core.run(actions, now))
    r.advance(30.0)
    kept, opened = r.new_to(r.midregistrar.settings.upstream, "REGISTER")
    assert (kept.call_id, kept.headers.get("CSeq")) == ("kept", "65 REGISTER")
    assert (opened.call_id, opened.headers.get("CSeq")) == (f"reg-{other}", "1 REGISTER")


def test_restore_upstream_without_a_mid_registrar_does_nothing() -> None:
    r = rig()
    r.core.push = None
    r.core.parking = None
    assert restore_upstream(r.core, [snapshot()], (), 0.0) == []
