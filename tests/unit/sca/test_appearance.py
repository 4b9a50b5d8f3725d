"""The transition table and hold detection of sca.md section 6."""

from __future__ import annotations

import attrs
import pytest

from scaserver.sca.appearance import (
    GUARDS,
    TRANSITIONS,
    Appearance,
    AppearanceChanged,
    AppearanceState,
    CallLeg,
    Previous,
    Role,
    Trigger,
    TriggerIgnored,
    apply,
    sdp_hold,
)

S = AppearanceState
ROWS = sorted(TRANSITIONS.items(), key=lambda item: (item[1][0], item[0][0].value, item[0][1].value))


@pytest.mark.parametrize(("row", "outcome"), ROWS, ids=[f"{o[0]}-{r[0].value}-{r[1].value}" for r, o in ROWS])
def test_every_row_moves_to_its_target_and_names_its_rule(
    row: tuple[AppearanceState, Trigger], outcome: tuple[str, AppearanceState]
) -> None:
    state, trigger = row
    rule, target = outcome
    app = Appearance("sip:2001@pbx.example.com", 1, state, owner="sip:a@h", changed_at=5.0, created_at=5.0)
    guard = GUARDS.get(row)
    if guard is not None and not guard(app):
        app = attrs.evolve(app, leg=CallLeg("c1", "ma", None, Role.CALLER))
    step = apply(app, trigger, 10.0)
    assert step.rule == rule
    assert step.appearance.state is target
    assert step.fact == AppearanceChanged(app.line, 1, state, target, rule, "sip:a@h", app.call_id, 10.0)
    assert step.appearance.touched_at == 10.0
    assert step.appearance.changed_at == (10.0 if target is not state else 5.0)


def test_the_fact_carries_the_appearance_as_the_change_left_it() -> None:
    app = Appearance("sip:2001@pbx.example.com", 1, S.SEIZED, owner="sip:a@h", changed_at=5.0, created_at=5.0)
    step = apply(app, Trigger.SEIZE_RELEASED, 10.0)
    assert isinstance(step.fact, AppearanceChanged)
    assert step.fact.appearance == step.appearance
    assert step.fact.appearance is not None and step.fact.appearance.state is S.IDLE


def test_o3_o4_o20_guards_the_seize_ends_only_before_the_invite_and_the_early_ttl_only_after() -> None:
    seize = Appearance("sip:2001@pbx.example.com", 1, S.SEIZED)
    dialled = attrs.evolve(seize, leg=CallLeg("c1", "ma", None, Role.CALLER))
    assert apply(seize, Trigger.SEIZE_EXPIRED, 1.0).rule == "O4"
    assert apply(seize, Trigger.SEIZE_RELEASED, 1.0).rule == "O3"
    assert isinstance(apply(seize, Trigger.EARLY_EXPIRED, 1.0).fact, TriggerIgnored)
    for trigger in (Trigger.SEIZE_EXPIRED, Trigger.SEIZE_RELEASED):
        step = apply(dialled, trigger, 1.0)
        assert step.rule is None and step.appearance.state is S.SEIZED
        assert isinstance(step.fact, TriggerIgnored)
    assert apply(dialled, Trigger.EARLY_EXPIRED, 1.0).rule == "O20"


def test_moved_keeps_every_other_field() -> None:
    """``moved`` calls the constructor with every field: a field added to Appearance must be
    carried over there too."""
    leg = CallLeg("call-1", "m1", "r1", Role.CALLER)
    values: dict[str, object] = {
        "line": "sip:2001@example.com",
        "index": 2,
        "state": S.ACTIVE,
        "owner": "sip:2001@192.0.2.10",
        "leg": leg,
        "remote_contact": "sip:far@192.0.2.99",
        "remote_uri": "sip:far@example.net",
        "rollback": (S.HELD, 7),
        "previous": Previous("sip:2001@192.0.2.11", leg, None),
        "created_at": 1.0,
        "changed_at": 2.0,
        "touched_at": 3.0,
    }
    assert set(values) == {field.name for field in attrs.fields(Appearance)}
    appearance = Appearance(**values)  # type: ignore[arg-type]
    moved = appearance.moved(S.HELD, changed_at=5.0, touched_at=6.0, created_at=4.0)
    assert moved == attrs.evolve(appearance, state=S.HELD, changed_at=5.0, touched_at=6.0, created_at=4.0)


def test_changed_sets_the_named_fields_and_keeps_every_other_one() -> None:
    """``changed`` calls the constructor with every field, as ``attrs.evolve`` would, and
    refuses a name that is no field as it does."""
    leg = CallLeg("call-1", "m1", "r1", Role.CALLER)
    appearance = Appearance(
        "sip:2001@example.com",
        2,
        S.ACTIVE,
        "sip:2001@192.0.2.10",
        leg,
        "sip:far@192.0.2.99",
        "sip:far@example.net",
        (S.HELD, 7),
        Previous("sip:2001@192.0.2.11", leg, None),
        1.0,
        2.0,
        3.0,
    )
    for changes in ({}, {"rollback": None}, {"owner": "other", "leg": None, "touched_at": 9.0}):
        assert appearance.changed(changes) == attrs.evolve(appearance, **changes)
    other = Appearance("sip:2002@example.com", 5, S.SEIZED, created_at=7.0)
    assert appearance.changed(attrs.asdict(other, recurse=False)) == other  # every field set
    with pytest.raises(TypeError):
        appearance.changed({"colour": "red"})


def test_changed_names_every_field_of_appearance() -> None:
    """``changed`` copies the fields by name: a field added to Appearance with a default would
    be reset by it, unseen by the comparison above, unless ``changed`` names it too."""
    marked = {field.name: object() for field in attrs.fields(Appearance)}
    appearance = Appearance.__new__(Appearance)
    for name, mark in marked.items():
        object.__setattr__(appearance, name, mark)
    copy = appearance.changed({})
    assert {name: getattr(copy, name) for name in marked} == marked


def test_pair_outside_the_table_is_an_explicit_ignore() -> None:
    app = Appearance("sip:2001@pbx.example.com", 2, S.HELD_PRIVATE)
    step = apply(app, Trigger.RETRIEVE_BY_MEMBER, 3.0)
    assert step.rule is None
    assert step.appearance is app
    assert step.fact == TriggerIgnored(app.line, 2, S.HELD_PRIVATE, Trigger.RETRIEVE_BY_MEMBER, 3.0)


def test_table_carries_every_rule_id_of_sections_6_3_and_6_4() -> None:
    rules = {rule for rule, _ in TRANSITIONS.values()}
    expected = (
        {f"O{n}" for n in range(1, 21)}
        | {"O5b", "O9b", "O14b", "O19b"}
        | {f"I{n}" for n in (*range(1, 7), 8)}
    )
    expected |= {"Q18"}
    assert expected <= rules
    assert rules - expected == {"7.1", "3.5", "4028", "RPC"}


def test_no_row_leaves_idle_except_seize_invite_incoming_answer_and_admin() -> None:
    leaving_idle = {trigger for (state, trigger), (_, target) in TRANSITIONS.items() if state is S.IDLE}
    assert leaving_idle == {
        Trigger.SEIZE,
        Trigger.INVITE_IMPLICIT,
        Trigger.INCOMING,
        Trigger.MEMBER_ANSWERED,
        Trigger.ADMIN_SEIZE,
        Trigger.ADMIN_SET_SEIZED,
        Trigger.ADMIN_SET_PROGRESSING,
        Trigger.ADMIN_SET_ALERTING,
        Trigger.ADMIN_SET_ACTIVE,
        Trigger.ADMIN_SET_HELD,
        Trigger.ADMIN_SET_HELD_PRIVATE,
    }


def test_wire_names() -> None:
    assert S.ACTIVE_PENDING.wire == "active"
    assert S.HELD_PRIVATE.wire == "held-private"
    assert S.from_wire("HELD-private") is S.HELD_PRIVATE
    assert S.from_wire("bridge-active") is None
    assert S.from_wire("ringing") is None
    assert S.from_wire("active-pending") is None


def test_call_leg_matches_both_tag_orders_by_role() -> None:
    caller = CallLeg("c", "m", "r", Role.CALLER)
    assert (caller.from_tag, caller.to_tag) == ("m", "r")
    callee = CallLeg("c", "m", "r", Role.CALLEE)
    assert (callee.from_tag, callee.to_tag) == ("r", "m")
    assert caller.matches("c", "m", "r")
    assert caller.matches("c", "r", "m")
    assert not caller.matches("c", "m", "x")
    assert not caller.matches("other", "m", "r")
    early = CallLeg("c", "m", None, Role.CALLER)
    assert early.matches("c", "m", None)
    assert not CallLeg("c", None, "r", Role.CALLEE).matches("c", "r", None)


def _sdp(*lines: str) -> bytes:
    return ("\r\n".join(("v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", *lines)) + "\r\n").encode()


@pytest.mark.parametrize(
    ("body", "held"),
    [
        (b"", None),
        (b"hello", None),
        (_sdp("c=IN IP4 192.0.2.1", "t=0 0", "m=audio 4000 RTP/AVP 0", "a=sendonly"), True),
        (_sdp("c=IN IP4 192.0.2.1", "t=0 0", "m=audio 4000 RTP/AVP 0", "a=inactive"), True),
        (_sdp("c=IN IP4 192.0.2.1", "t=0 0", "m=audio 4000 RTP/AVP 0", "a=sendrecv"), False),
        (_sdp("c=IN IP4 192.0.2.1", "t=0 0", "m=audio 4000 RTP/AVP 0"), False),
        (_sdp("c=IN IP4 192.0.2.1", "t=0 0", "m=audio 4000 RTP/AVP 0", "a=recvonly"), False),
        # Session-level direction applies to streams without their own (Q13).
        (_sdp("c=IN IP4 192.0.2.1", "t=0 0", "a=sendonly", "m=audio 4000 RTP/AVP 0"), True),
        # Media level overrides session level.
        (_sdp("c=IN IP4 192.0.2.1", "t=0 0", "a=sendonly", "m=audio 4000 RTP/AVP 0", "a=sendrecv"), False),
        # RFC 2543 hold.
        (_sdp("c=IN IP4 0.0.0.0", "t=0 0", "m=audio 4000 RTP/AVP 0"), True),
        (_sdp("c=IN IP4 192.0.2.1", "t=0 0", "m=audio 4000 RTP/AVP 0", "c=IN IP4 0.0.0.0"), True),
        # Trickle ICE placeholder is not hold.
        (_sdp("c=IN IP4 0.0.0.0", "t=0 0", "m=audio 9 UDP/TLS/RTP/SAVPF 0"), False),
        # Every active audio stream must be held.
        (
            _sdp(
                "c=IN IP4 192.0.2.1",
                "t=0 0",
                "m=audio 4000 RTP/AVP 0",
                "a=sendonly",
                "m=audio 4002 RTP/AVP 0",
            ),
            False,
        ),
        # A disabled stream (port 0) does not count; video does not count.
        (
            _sdp(
                "c=IN IP4 192.0.2.1", "t=0 0", "m=audio 0 RTP/AVP 0", "m=audio 4002 RTP/AVP 0", "a=inactive"
            ),
            True,
        ),
        (_sdp("c=IN IP4 192.0.2.1", "t=0 0", "m=video 4000 RTP/AVP 96", "a=sendonly"), False),
    ],
)
def test_sdp_hold_detection(body: bytes, held: bool | None) -> None:
    assert sdp_hold(body) is held
