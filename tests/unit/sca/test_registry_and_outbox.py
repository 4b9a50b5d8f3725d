"""The subscription registry and the NOTIFY outbox on their own (sca.md 3.5, section 4)."""

from __future__ import annotations

import attrs
import pytest

from scaserver.sca.notify import SubscriptionStatus, build_notify
from scaserver.sca.outbox import Content, NotifyContext, NotifyOutbox, Pending
from scaserver.sca.registry import SubscriptionLimit, SubscriptionRegistry
from scaserver.sca.subscription import (
    DialogKey,
    Identity,
    Package,
    Subscription,
    SubscriptionKey,
    SubscriptionNotified,
    SubscriptionRemoved,
    SubscriptionState,
)
from scaserver.sip.actions import Deliver, EngineAction, SendRequest
from scaserver.sip.message import Peer, Response, Transport

AOR = "sip:2000@example.com"
PEER = Peer(Transport.UDP, "192.0.2.10", 5060)


def _sub(contact: str = "sip:2001@192.0.2.10", *, tag: str = "a", owner: str = "2001") -> Subscription:
    return Subscription(
        subscriber=contact,
        aor=AOR,
        event=Package.CALL_INFO,
        expires=3600.0,
        call_id=f"call-{tag}",
        from_tag=tag,
        to_tag=f"ours-{tag}",
        peer=PEER,
        owner=owner,
    )


def test_registry_finds_a_subscription_by_dialog_replacement_and_line() -> None:
    registry = SubscriptionRegistry()
    sub = _sub()
    registry.store(sub)
    assert registry.by_dialog(sub.dialog) == sub
    assert registry.by_replacement(sub.replacement) == sub
    assert list(registry.of_line(AOR)) == [sub]
    assert registry.has_call_info(AOR)


def test_update_current_replaces_only_a_live_subscription_its_dialog_leads_to() -> None:
    registry = SubscriptionRegistry()
    sub = _sub()
    registry.store(sub)
    bumped = sub.with_notify_cseq(1)
    assert registry.update_current(bumped, sub.dialog)
    assert registry.get(sub.key) is bumped
    assert not registry.update_current(bumped.with_notify_cseq(2), _sub(tag="b").dialog)  # another dialog
    registry.forget_dialog(sub)  # replaced (3.5): its dialog no longer leads to it
    assert not registry.update_current(bumped.with_notify_cseq(2), sub.dialog)
    assert registry.get(sub.key) is bumped
    registry.store(sub)
    registry.remove(sub, "timeout")
    assert not registry.update_current(bumped.with_notify_cseq(3), sub.dialog)
    assert registry.get(sub.key) is None


def test_registry_removal_forgets_the_expiry_once() -> None:
    registry = SubscriptionRegistry()
    sub = _sub()
    registry.store(sub)
    registry.arm_expiry(sub, 0.0)
    assert registry.expiries.expires_at(sub.key) == sub.expires
    assert registry.remove(sub, "timeout") == [Deliver(SubscriptionRemoved(sub, "timeout"))]
    assert registry.expiries.expires_at(sub.key) is None
    assert registry.remove(sub, "timeout") == []
    assert registry.by_dialog(sub.dialog) is None
    assert not registry.has_call_info(AOR)


def test_registry_caps_the_subscriptions_of_one_identity_but_not_its_replacements() -> None:
    registry = SubscriptionRegistry(max_per_identity=1)
    first = _sub()
    registry.store(first)
    with pytest.raises(SubscriptionLimit):
        registry.check_cap(_sub("sip:2001@192.0.2.11", tag="b").replacement, Identity.authenticated("2001"))
    registry.check_cap(first.replacement, Identity.authenticated("2001"))  # the same one again
    registry.check_cap(
        _sub("sip:x@192.0.2.11", tag="c").replacement, Identity.trusted_peer("192.0.2.1", None)
    )


def test_registry_remembers_a_lost_subscription_for_reboot_memory_only() -> None:
    registry = SubscriptionRegistry(reboot_memory_s=60.0)
    sub = _sub()
    registry.remember_loss(sub, now=0.0)
    assert registry.was_lost(sub, now=30.0)
    assert not registry.was_lost(sub, now=30.0)  # forgotten once used
    registry.remember_loss(sub, now=0.0)
    assert not registry.was_lost(sub, now=61.0)


def _outbox(registry: SubscriptionRegistry, lost: list[Subscription]) -> NotifyOutbox:
    def render(sub: Subscription, content: Content) -> str:
        return f"<sip:example.com>;appearance-index=*;state={content.value}-{len(lost)}"

    def on_lost(sub: Subscription, now: float) -> list[EngineAction]:
        lost.append(sub)
        return []

    return NotifyOutbox(registry, "sip:sca@192.0.2.1", render, on_lost)


def _sent(actions: list[EngineAction]) -> list[int]:
    """The CSeq numbers of the NOTIFYs among ``actions``."""
    return [
        action.context.cseq
        for action in actions
        if isinstance(action, SendRequest) and isinstance(action.context, NotifyContext)
    ]


def test_outbox_keeps_one_notify_in_flight_and_only_the_newest_pending() -> None:
    registry, lost = SubscriptionRegistry(), list[Subscription]()
    outbox = _outbox(registry, lost)
    sub = _sub()
    registry.store(sub)
    outbox.open(sub)
    first = outbox.queue(sub.dialog, Pending(Content.FULL_STATE, force=True), 0.0)
    assert _sent(first) == [1]
    assert isinstance(first[1], Deliver) and isinstance(first[1].event, SubscriptionNotified)
    assert outbox.queue(sub.dialog, Pending(Content.FULL_STATE, force=True), 0.0) == []
    assert outbox.queue(sub.dialog, Pending(Content.FULL_STATE, force=True), 0.0) == []
    answered = outbox.on_response(NotifyContext(sub.dialog, 1), Response(200, "OK"), 1.0)
    assert _sent(answered) == [2]  # the two pending ones went as one


def test_outbox_sends_nothing_after_a_terminating_notify() -> None:
    registry, lost = SubscriptionRegistry(), list[Subscription]()
    outbox = _outbox(registry, lost)
    sub = _sub()
    registry.store(sub)
    outbox.open(sub)
    outbox.queue(sub.dialog, Pending(Content.FULL_STATE, force=True), 0.0)
    outbox.queue(sub.dialog, Pending(Content.FULL_STATE, terminated=True, reason="timeout", force=True), 0.0)
    outbox.queue(sub.dialog, Pending(Content.FULL_STATE, force=True), 0.0)
    answered = outbox.on_response(NotifyContext(sub.dialog, 1), Response(200, "OK"), 1.0)
    [final] = [action for action in answered if isinstance(action, SendRequest)]
    assert final.request.headers.get("Subscription-State") == "terminated;reason=timeout"


def test_outbox_removes_the_subscription_whose_notify_failed_and_reports_the_loss() -> None:
    registry, lost = SubscriptionRegistry(), list[Subscription]()
    outbox = _outbox(registry, lost)
    sub = _sub()
    registry.store(sub)
    outbox.open(sub)
    outbox.queue(sub.dialog, Pending(Content.FULL_STATE, force=True), 0.0)
    stored = registry.by_dialog(sub.dialog)
    assert stored is not None
    assert outbox.on_failed(NotifyContext(sub.dialog, 1), 32.0) == [
        Deliver(SubscriptionRemoved(stored, "notify-failed")),
    ]
    assert lost == [stored]
    assert registry.by_dialog(sub.dialog) is None
    assert outbox.on_failed(NotifyContext(sub.dialog, 1), 33.0) == []  # a stale outcome


def test_a_subscription_holds_the_key_of_its_dialog_built_from_its_fields() -> None:
    """``dialog`` is built with the value from its Call-ID and tags (anew by ``attrs.evolve``),
    and is no part of the value's equality, hash or repr."""
    sub = Subscription("sip:2001@192.0.2.10", AOR, Package.CALL_INFO, 3600.0, "call-x", "a", "b")
    assert sub.dialog == DialogKey("call-x", "a", "b")
    assert sub.with_notify_cseq(2).dialog == DialogKey("call-x", "a", "b")
    assert sub.ending(index=1, expires=9.0).dialog == DialogKey("call-x", "a", "b")
    assert attrs.evolve(sub, to_tag="c").dialog == DialogKey("call-x", "a", "c")
    assert attrs.evolve(sub, from_tag="d", call_id="call-y").dialog == DialogKey("call-y", "d", "b")
    twin = Subscription("sip:2001@192.0.2.10", AOR, Package.CALL_INFO, 3600.0, "call-x", "a", "b")
    assert twin == sub and hash(twin) == hash(sub) and twin.dialog is not sub.dialog
    assert "dialog" not in repr(sub)
    assert hash(DialogKey("call-x", "a", "b")) == hash(sub.dialog)


def test_with_notify_cseq_and_ending_keep_every_other_field() -> None:
    """``with_notify_cseq`` and ``ending`` call the constructor with every field: a field added to
    Subscription must be carried over there too."""
    values: dict[str, object] = {
        "subscriber": "sip:2001@192.0.2.10",
        "aor": AOR,
        "event": Package.LINE_SEIZE,
        "expires": 3600.0,
        "call_id": "call-x",
        "from_tag": "a",
        "to_tag": "b",
        "state": SubscriptionState.PENDING,
        "record_route": ("<sip:p1;lr>",),
        "notify_cseq": 4,
        "subscribe_cseq": 7,
        "server_id": 3,
        "index": 2,
        "local_uri": "sip:local@example.com",
        "remote_uri": "sip:remote@example.com",
        "peer": PEER,
        "owner": "2001",
    }
    assert set(values) == {field.name for field in attrs.fields(Subscription) if field.init}
    sub = Subscription(**values)  # type: ignore[arg-type]
    bumped = sub.with_notify_cseq(5)
    assert bumped == attrs.evolve(sub, notify_cseq=5)
    assert sub.notify_cseq == 4
    ended = sub.ending(index=1, expires=99.0)
    assert ended == attrs.evolve(sub, index=1, expires=99.0)


def test_dialog_and_subscription_keys_differing_in_any_field_are_different_keys() -> None:
    """Equality compares every field of a dialog key and of a subscription key."""
    dialog = DialogKey("call-x", "a", "b")
    others = [DialogKey("call-y", "a", "b"), DialogKey("call-x", "c", "b"), DialogKey("call-x", "a", "d")]
    table = {key: n for n, key in enumerate([dialog, *others])}
    assert len(table) == 4 and table[DialogKey("call-x", "a", "b")] == 0
    key = SubscriptionKey(AOR, Package.CALL_INFO, "sip:2001@192.0.2.10", "call-x", "a", "b")
    variants = [
        key._replace(aor="sip:other@example.com"),
        key._replace(event=Package.LINE_SEIZE),
        key._replace(subscriber="sip:2002@192.0.2.10"),
        key._replace(call_id="call-y"),
        key._replace(from_tag="c"),
        key._replace(to_tag="d"),
    ]
    keys = {k: n for n, k in enumerate([key, *variants])}
    assert len(keys) == 7
    assert keys[SubscriptionKey(AOR, Package.CALL_INFO, "sip:2001@192.0.2.10", "call-x", "a", "b")] == 0


def test_call_info_dialogs_are_those_of_the_call_info_subscriptions_in_stored_order() -> None:
    registry = SubscriptionRegistry()
    first, seize, second = _sub(tag="a"), attrs.evolve(_sub(tag="s"), event=Package.LINE_SEIZE), _sub(tag="b")
    for sub in (first, seize, second):
        registry.store(sub)
    registry.store(attrs.evolve(_sub(tag="o"), aor="sip:other@example.com"))
    assert registry.call_info_dialogs(AOR) == [first.dialog, second.dialog]
    registry.remove(first, "unsubscribed")
    assert registry.call_info_dialogs(AOR) == [second.dialog]
    assert registry.call_info_dialogs("sip:nobody@example.com") == []


@pytest.mark.parametrize(
    "routes", [(), ("<sip:p1.example.com;lr>",), ("<sip:p1.example.com>", "<sip:p2;lr>")]
)
@pytest.mark.parametrize("transport", [Transport.UDP, Transport.TLS])
@pytest.mark.parametrize(
    "pending",
    [
        Pending(Content.INDEX, force=True),
        Pending(Content.FULL_STATE, True, None, True),
        Pending(Content.FULL_STATE, True, "timeout", True),
    ],
)
def test_outbox_notify_is_the_one_build_notify_writes(
    routes: tuple[str, ...], transport: Transport, pending: Pending
) -> None:
    """The outbox writes the Contact (over TLS, and otherwise) and the Subscription-State once
    per outbox or in line: the NOTIFY is the one :func:`build_notify` writes field by field."""
    registry = SubscriptionRegistry()
    outbox = NotifyOutbox(
        registry,
        "sip:sca@192.0.2.1",
        lambda sub, content: content.value,
        lambda *_: [],
        contact_tls="sip:sca@192.0.2.1;transport=tls",
    )
    sub = attrs.evolve(_sub(), record_route=routes, peer=Peer(transport, "192.0.2.10", 5061))
    registry.store(sub)
    outbox.open(sub)
    [send, *_] = outbox.queue(sub.dialog, pending, 3000.4)
    assert isinstance(send, SendRequest)
    contact = "sip:sca@192.0.2.1;transport=tls" if transport is Transport.TLS else "sip:sca@192.0.2.1"
    status = SubscriptionStatus(pending.terminated, 600, pending.reason)  # 3600 - 3000.4, rounded
    assert send.request == build_notify(
        sub, cseq=1, contact=contact, call_info=pending.content.value, status=status
    )


def test_a_plain_pending_queued_behind_a_forced_one_stays_forced() -> None:
    """Two pending NOTIFYs go as one, forced when either was (the same Call-Info is sent again)."""
    registry, lost = SubscriptionRegistry(), list[Subscription]()
    outbox = _outbox(registry, lost)
    sub = _sub()
    registry.store(sub)
    outbox.open(sub)
    assert _sent(outbox.queue(sub.dialog, Pending(Content.FULL_STATE), 0.0)) == [1]
    outbox.queue(sub.dialog, Pending(Content.FULL_STATE, force=True), 0.0)
    outbox.queue(sub.dialog, Pending(Content.FULL_STATE), 0.0)
    assert _sent(outbox.on_response(NotifyContext(sub.dialog, 1), Response(200, "OK"), 1.0)) == [2]
    outbox.queue(sub.dialog, Pending(Content.FULL_STATE), 0.0)  # nothing new, not forced
    assert _sent(outbox.on_response(NotifyContext(sub.dialog, 2), Response(200, "OK"), 2.0)) == []
