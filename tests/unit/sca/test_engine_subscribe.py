"""SUBSCRIBE handling of sca.md section 3: the check order of 3.2, expires 3.3, dialogs 3.5-3.7."""

from __future__ import annotations

import attrs
import pytest

from scaserver.sca.appearance import AppearanceChanged, AppearanceState
from scaserver.sca.engine import EXPIRY_TIMER, SWEEP_KEY, TTL_TIMER, AppearanceKey, NotifyContext
from scaserver.sca.line import SharedLine
from scaserver.sca.subscription import (
    DialogKey,
    Package,
    Subscription,
    SubscriptionAdded,
    SubscriptionKey,
    SubscriptionNotified,
    SubscriptionRemoved,
)
from scaserver.sip.actions import Deliver, SendRequest, StartTimer
from scaserver.sip.message import Headers, Request

from .scenario import (
    CA,
    CB,
    IDLE_ONLY,
    LINE,
    PEER_A,
    SERVER,
    TX,
    Harness,
    engine,
    full,
    notifies,
    responses,
    seize_info,
    state_entry,
    subscribe,
)

KEY_A = SubscriptionKey(LINE, Package.CALL_INFO, CA, "sub-a", "fa", "sca1")
NOW = 1000.0


def _notify(dialog: tuple[str, str, str], cseq: int, event: str, call_info: str, state: str) -> Request:
    call_id, local, remote = dialog
    return Request(
        "NOTIFY",
        CA,
        Headers.of(
            ("Max-Forwards", "70"),
            ("From", f"<{LINE}>;tag={local}"),
            ("To", f"<{LINE}>;tag={remote}"),
            ("Call-ID", call_id),
            ("CSeq", f"{cseq} NOTIFY"),
            ("Contact", f"<{SERVER}>"),
            ("Call-Info", call_info),
            ("Event", event),
            ("Subscription-State", state),
        ),
    )


def test_s1_initial_call_info_subscribe_exact_actions() -> None:
    sca = engine()
    request = subscribe()
    actions = sca.on_subscribe(request, TX, NOW, peer=PEER_A)
    sub = Subscription(
        subscriber=CA,
        aor=LINE,
        event=Package.CALL_INFO,
        expires=NOW + 3600,
        call_id="sub-a",
        from_tag="fa",
        to_tag="sca1",
        subscribe_cseq=1,
        local_uri=LINE,
        remote_uri=LINE,
        peer=PEER_A,
        owner=f"aor:{LINE}",
    )
    ok = Headers.of(
        ("Via", "SIP/2.0/UDP 192.0.2.11:5060;branch=z9hG4bKsub-a1"),
        ("From", f"<{LINE}>;tag=fa"),
        ("To", f"<{LINE}>;tag=sca1"),
        ("Call-ID", "sub-a"),
        ("CSeq", "1 SUBSCRIBE"),
        ("Event", "call-info"),
        ("Expires", "3600"),
        ("Contact", f"<{SERVER}>"),
        ("Allow-Events", "call-info, line-seize"),
    )
    assert [type(a).__name__ for a in actions] == [
        "Respond",
        "Deliver",
        "StartTimer",
        "SendRequest",
        "Deliver",
    ]
    (response,) = responses(actions)
    assert response.status == 202
    assert response.headers == ok
    assert actions[1:] == [
        actions[1],
        StartTimer(SWEEP_KEY, EXPIRY_TIMER, 3600.0),  # the sweep, at the first expiry
        SendRequest(
            _notify(("sub-a", "sca1", "fa"), 1, "call-info", IDLE_ONLY, "active;expires=3600"),
            PEER_A,
            NotifyContext(DialogKey("sub-a", "fa", "sca1"), 1),
        ),
        Deliver(SubscriptionNotified(attrs.evolve(sub, notify_cseq=1))),
    ]
    assert actions[1] == Deliver(SubscriptionAdded(sub))


def _status(request: Request, **kw: object) -> tuple[int, str, Headers]:
    sca = engine(**kw)
    (response,) = responses(sca.on_subscribe(request, TX, NOW))
    return response.status, response.reason, response.headers


def test_row2_missing_event_is_400_missing_event() -> None:
    assert _status(subscribe(event=None))[:2] == (400, "Missing Event")


@pytest.mark.parametrize("event", ["presence", "dialog", "call-info-x", "bad event;;"])
def test_row3_unknown_package_is_489_with_allow_events(event: str) -> None:
    status, reason, headers = _status(subscribe(event=event))
    assert (status, reason) == (489, "Bad Event")
    assert headers.get("Allow-Events") == "call-info, line-seize"


@pytest.mark.parametrize("event", ["CALL-INFO", "call-info;id=5", "Line-Seize ; id=1"])
def test_row3_package_token_compare_is_case_insensitive_and_ignores_params(event: str) -> None:
    request = subscribe(event=event, call_info=seize_info(0), expires=15)
    assert _status(request)[0] in (200, 202)


def test_row4_bad_dialog_headers_are_400() -> None:
    base = subscribe()
    cases = [
        base.with_headers(base.headers.remove("Call-ID")),
        base.with_headers(base.headers.set("CSeq", "x SUBSCRIBE")),
        base.with_headers(base.headers.set("CSeq", "1 NOTIFY")),
        base.with_headers(base.headers.set("From", f"<{LINE}>")),
        base.with_headers(base.headers.remove("To")),
        base.with_headers(base.headers.remove("Contact")),
        base.with_headers(base.headers.set("Contact", "*")),
        base.with_headers(base.headers.set("Contact", f"<{CA}>, <{CB}>")),
        base.with_headers(base.headers.set("Contact", "<tel:+15551234>")),
        subscribe(uri="sip:pbx.example.com"),
        subscribe(uri="tel:+15551234"),
    ]
    for request in cases:
        assert _status(request)[0] == 400, request


def test_row5_unreadable_expires_is_400() -> None:
    assert _status(subscribe(extra=[]).with_headers(subscribe().headers.set("Expires", "soon")))[0] == 400


def test_row6_member_by_user_name_or_own_user_passes_anybody_else_is_403() -> None:
    line = SharedLine(LINE, 4, frozenset({"alice", "sip:bob@pbx.example.com"}))
    sca = engine()
    sca.provision([line])
    assert responses(sca.on_subscribe(subscribe(), TX, NOW, authenticated_user="mallory"))[0].status == 403
    assert responses(sca.on_subscribe(subscribe(), TX, NOW, authenticated_user="alice"))[0].status == 202
    assert (
        responses(sca.on_subscribe(subscribe(call_id="b"), TX, NOW, authenticated_user="2001"))[0].status
        == 202
    )
    # The Contact proves nothing: a listed contact AoR from an unlisted user is refused.
    contact = subscribe(contact="sip:bob@pbx.example.com", call_id="c")
    assert responses(sca.on_subscribe(contact, TX, NOW, authenticated_user="eve"))[0].status == 403


def test_row7_provisioned_only_unknown_line_is_404() -> None:
    assert _status(subscribe(), provisioned_only=True)[0] == 404
    sca = engine(provisioned_only=True)
    sca.provision([SharedLine(LINE)])
    assert responses(sca.on_subscribe(subscribe(), TX, NOW))[0].status == 202


def test_row8_expires_below_minimum_is_423_with_min_expires() -> None:
    status, _, headers = _status(subscribe(expires=30), min_expires=60)
    assert status == 423
    assert headers.get("Min-Expires") == "60"
    assert _status(subscribe(expires=0), min_expires=60)[0] == 202  # an un-subscribe is never too brief


def test_row9_line_seize_without_call_info_is_400_missing_call_info() -> None:
    assert _status(subscribe("line-seize", expires=15))[:2] == (400, "Missing Call-Info")


@pytest.mark.parametrize("value", [seize_info("*"), seize_info("x"), seize_info(-1)])
def test_row10_line_seize_with_invalid_call_info_is_400(value: str) -> None:
    assert _status(subscribe("line-seize", expires=15, call_info=value))[:2] == (400, "Invalid Call-Info")


def test_row11_unknown_dialog_is_481() -> None:
    assert _status(subscribe(to_tag="nope"))[0] == 481


def test_in_dialog_subscribe_with_lower_cseq_is_500() -> None:
    h = Harness(engine())
    h.subscribe(subscribe(cseq=5))
    (response,) = responses(h.subscribe(subscribe(to_tag="sca1", cseq=4)))
    assert response.status == 500


def test_row12_busy_index_is_480_retry_after_1() -> None:
    h = Harness(engine())
    h.subscribe(subscribe("line-seize", expires=15, call_info=seize_info(1)))
    actions = h.subscribe(
        subscribe("line-seize", contact=CB, call_id="b", expires=15, call_info=seize_info(1))
    )
    (response,) = responses(actions)
    assert [type(a).__name__ for a in actions] == ["Respond", "Deliver"]
    assert (response.status, response.headers.get("Retry-After")) == (480, "1")


def test_row12_no_free_index_with_max_appearances_is_480() -> None:
    h = Harness(engine(max_appearances=1))
    h.subscribe(subscribe("line-seize", expires=15, call_info=seize_info(0)))
    (response,) = responses(
        h.subscribe(subscribe("line-seize", contact=CB, call_id="b", expires=15, call_info=seize_info(0)))
    )
    assert response.status == 480
    (response,) = responses(
        h.subscribe(subscribe("line-seize", contact=CB, call_id="c", expires=15, call_info=seize_info(2)))
    )
    assert response.status == 480


def test_row13_line_seize_without_call_info_subscribers_creates_the_line() -> None:
    h = Harness(engine())
    actions = h.subscribe(subscribe("line-seize", expires=15, call_info=seize_info(0)))
    assert responses(actions)[0].status == 200
    assert h.states() == {1: "seized"}


def test_row14_line_seize_unsubscribe_of_an_unused_index_is_200() -> None:
    h = Harness(engine())
    actions = h.subscribe(subscribe("line-seize", expires=0, call_info=seize_info(3)))
    assert responses(actions)[0].status == 200
    ((notify, _),) = notifies(actions)
    assert notify.headers.get("Subscription-State") == "terminated"
    assert notify.headers.get("Call-Info") == seize_info(3)
    assert h.engine.subscriptions() == []


def test_missing_expires_grants_the_package_maximum_not_an_unsubscribe() -> None:
    assert _status(subscribe(expires=None))[2].get("Expires") == "3600"
    status, _, headers = _status(subscribe("line-seize", expires=None, call_info=seize_info(0)))
    assert (status, headers.get("Expires")) == (200, "15")


def test_expires_is_clamped_to_the_package_maximum() -> None:
    assert _status(subscribe(expires=99999))[2].get("Expires") == "3600"
    assert _status(subscribe(expires=120))[2].get("Expires") == "120"
    assert _status(subscribe("line-seize", expires=60, call_info=seize_info(0)))[2].get("Expires") == "15"


def test_unsubscribe_in_dialog_answers_expires_0_sends_bare_terminated_and_removes() -> None:
    h = Harness(engine())
    h.subscribe(subscribe())
    actions = h.subscribe(subscribe(to_tag="sca1", cseq=2, expires=0))
    (response,) = responses(actions)
    assert (response.status, response.headers.get("Expires")) == (202, "0")
    ((notify, _),) = notifies(actions)
    assert notify.headers.get("Subscription-State") == "terminated"
    assert notify.headers.get("Call-Info") == IDLE_ONLY
    assert notify.headers.get("CSeq") == "2 NOTIFY"
    removed = [
        a.event for a in actions if isinstance(a, Deliver) and isinstance(a.event, SubscriptionRemoved)
    ]
    assert [r.reason for r in removed] == ["unsubscribed"]
    assert h.engine.subscriptions() == []


def test_unsubscribe_out_of_dialog_for_unknown_subscription_answers_and_notifies_without_storing() -> None:
    h = Harness(engine())
    actions = h.subscribe(subscribe(expires=0))
    assert responses(actions)[0].headers.get("To") == f"<{LINE}>;tag=sca1"
    ((notify, context),) = notifies(actions)
    assert notify.headers.get("Subscription-State") == "terminated"
    assert notify.headers.get("From") == f"<{LINE}>;tag=sca1"
    assert context.cseq == 1
    assert h.engine.subscriptions() == []
    assert not [a for a in actions if isinstance(a, StartTimer)]


def test_s12_reboot_resubscribe_releases_owned_appearances_and_replaces_the_dialog() -> None:
    h = Harness(engine())
    h.subscribe(subscribe())
    h.subscribe(subscribe(contact=CB, call_id="sub-b", from_tag="fb"))
    h.subscribe(subscribe("line-seize", call_id="ls", from_tag="l1", expires=15, call_info=seize_info(0)))
    assert h.states() == {1: "seized"}
    actions = h.subscribe(subscribe(call_id="sub-a2", from_tag="fa2"))
    assert responses(actions)[0].status == 202
    changes = [a.event for a in actions if isinstance(a, Deliver) and isinstance(a.event, AppearanceChanged)]
    assert [(c.rule, c.to_state) for c in changes] == [("3.5", AppearanceState.IDLE)]
    assert h.states() == {}
    assert h.last_call_info(CB) == IDLE_ONLY
    # The old dialog is gone: its in-dialog SUBSCRIBE gets 481.
    assert responses(h.subscribe(subscribe(to_tag="sca1", cseq=2)))[0].status == 481


def test_s17_record_route_becomes_the_notify_route_set_and_a_new_one_replaces_it() -> None:
    h = Harness(engine())
    rr = ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
    actions = h.subscribe(subscribe(record_route=rr))
    ((notify, _),) = notifies(actions)
    assert notify.headers.values("Route") == tuple(rr)
    assert notify.uri == CA
    actions = h.subscribe(subscribe(call_id="new", from_tag="n", record_route=["<sip:p3.example.com;lr>"]))
    ((notify, _),) = notifies(actions)
    assert notify.headers.values("Route") == ("<sip:p3.example.com;lr>",)


def test_s3_line_seize_initial_exact_actions() -> None:
    h = Harness(engine())
    h.subscribe(subscribe(), peer=PEER_A)
    actions = h.subscribe(
        subscribe("line-seize", call_id="ls", from_tag="l1", expires=15, call_info=seize_info(0)), peer=PEER_A
    )
    names = [type(a).__name__ for a in actions]
    assert names == [
        "Respond",
        "Deliver",
        "StartTimer",
        "Deliver",
        "StartTimer",
        "SendRequest",
        "Deliver",
        "SendRequest",
        "Deliver",
    ]
    assert actions[2] == StartTimer(SWEEP_KEY, EXPIRY_TIMER, 15.0)  # the sweep moves to the earlier expiry
    assert actions[3] == Deliver(
        AppearanceChanged(LINE, 1, AppearanceState.IDLE, AppearanceState.SEIZED, "O1", CA, None, h.now)
    )
    assert actions[4] == StartTimer(AppearanceKey(LINE, 1), TTL_TIMER, 120.0)
    seize_notify = actions[5]
    assert isinstance(seize_notify, SendRequest) and isinstance(seize_notify.request, Request)
    assert seize_notify.request == _notify(
        ("ls", "sca2", "l1"), 1, "line-seize", seize_info(1), "active;expires=15"
    )
    group = actions[7]
    assert isinstance(group, SendRequest) and isinstance(group.request, Request)
    assert group.request == _notify(
        ("sub-a", "sca1", "fa"), 2, "call-info", full(state_entry(1, "seized")), "active;expires=3600"
    )


def test_s4_seize_race_exactly_one_wins_the_other_gets_480_retry_after_1() -> None:
    h = Harness(engine(max_appearances=2))
    first = h.subscribe(subscribe("line-seize", call_id="a", expires=15, call_info=seize_info(1)))
    second = h.subscribe(
        subscribe("line-seize", contact=CB, call_id="b", expires=15, call_info=seize_info(1))
    )
    assert responses(first)[0].status == 200
    assert [(r.status, r.headers.get("Retry-After")) for r in responses(second)] == [(480, "1")]
    assert [a.owner for a in h.engine.appearances()] == [CA]
    # B asks for any index: gets 2 (gap filling), then the line is full.
    third = h.subscribe(subscribe("line-seize", contact=CB, call_id="c", expires=15, call_info=seize_info(0)))
    assert notifies(third)[0][0].headers.get("Call-Info") == seize_info(2)
    fourth = h.subscribe(
        subscribe(
            "line-seize", contact="sip:2001@192.0.2.13", call_id="d", expires=15, call_info=seize_info(0)
        )
    )
    assert responses(fourth)[0].status == 480


def test_lowest_free_index_fills_gaps() -> None:
    h = Harness(engine())
    for n, contact in ((1, CA), (3, CB)):
        h.subscribe(
            subscribe("line-seize", contact=contact, call_id=f"s{n}", expires=15, call_info=seize_info(n))
        )
    h.subscribe(
        subscribe(
            "line-seize", contact="sip:2001@192.0.2.13", call_id="s2", expires=15, call_info=seize_info(0)
        )
    )
    assert h.states() == {1: "seized", 2: "seized", 3: "seized"}


def test_line_seize_refresh_keeps_index_and_refreshes_ttl() -> None:
    h = Harness(engine())
    h.subscribe(subscribe("line-seize", call_id="ls", from_tag="l1", expires=15, call_info=seize_info(0)))
    h.now += 10
    actions = h.subscribe(
        subscribe(
            "line-seize",
            call_id="ls",
            from_tag="l1",
            to_tag="sca1",
            cseq=2,
            expires=15,
            call_info=seize_info(0),
        )
    )
    assert responses(actions)[0].status == 200
    ((notify, _),) = notifies(actions)
    assert notify.headers.get("Call-Info") == seize_info(1)
    assert StartTimer(AppearanceKey(LINE, 1), TTL_TIMER, 120.0) in actions
    assert h.engine.appearances()[0].touched_at == h.now


def test_out_of_dialog_reseize_by_the_same_contact_keeps_its_index() -> None:
    h = Harness(engine())
    h.subscribe(subscribe("line-seize", call_id="ls", expires=15, call_info=seize_info(2)))
    actions = h.subscribe(
        subscribe("line-seize", call_id="ls2", from_tag="x", expires=15, call_info=seize_info(0))
    )
    assert responses(actions)[0].status == 200
    assert notifies(actions)[0][0].headers.get("Call-Info") == seize_info(2)
    assert h.states() == {2: "seized"}


def test_s5_o3_line_seize_unsubscribe_releases_and_notifies_group() -> None:
    h = Harness(engine())
    h.subscribe(subscribe())
    h.subscribe(subscribe("line-seize", call_id="ls", from_tag="l1", expires=15, call_info=seize_info(0)))
    actions = h.subscribe(
        subscribe(
            "line-seize",
            call_id="ls",
            from_tag="l1",
            to_tag="sca2",
            cseq=2,
            expires=0,
            call_info=seize_info(1),
        )
    )
    assert responses(actions)[0].status == 200
    sent = [
        (n.headers.get("Event"), n.headers.get("Subscription-State"), n.headers.get("Call-Info"))
        for n, _ in notifies(actions)
    ]
    assert sent == [
        ("line-seize", "terminated", seize_info(1)),
        ("call-info", "active;expires=3600", IDLE_ONLY),
    ]
    changes = [a.event for a in actions if isinstance(a, Deliver) and isinstance(a.event, AppearanceChanged)]
    assert [(c.rule, c.to_state) for c in changes] == [("O3", AppearanceState.IDLE)]


def test_unsubscribe_does_not_release_another_members_seize() -> None:
    h = Harness(engine())
    h.subscribe(subscribe("line-seize", call_id="ls", expires=15, call_info=seize_info(1)))
    h.subscribe(subscribe("line-seize", contact=CB, call_id="other", expires=0, call_info=seize_info(1)))
    assert h.states() == {1: "seized"}
