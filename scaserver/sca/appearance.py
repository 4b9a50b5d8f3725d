"""Appearances of a shared line and their state machine (sca.md section 6).

An appearance is one numbered call slot of a line (``appearance-index`` >= 1).
Its life is driven by :class:`Trigger` inputs, which the engine derives from
SUBSCRIBEs, forwarded requests and responses, ACKs, timers and RPCs.  Every
legal ``(state, trigger)`` pair is one row of :data:`TRANSITIONS`, labelled
with the rule id the spec gives it (``O1``... for the line as caller, section
6.3; ``I1``... for the line as callee, section 6.4).  A pair outside the table
changes nothing and yields a :class:`TriggerIgnored` fact that the edge logs.

Hold detection from SDP (section 6.2) lives here too: :func:`sdp_hold`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import Any, Final

import attrs

from scaserver.sip.actions import Fact


class AppearanceState(enum.Enum):
    """The internal appearance states of sca.md section 6.1."""

    __hash__ = object.__hash__  # members are singletons: identity hash in C, not Enum.__hash__

    IDLE = "idle"
    SEIZED = "seized"
    PROGRESSING = "progressing"
    ALERTING = "alerting"
    ACTIVE_PENDING = "active-pending"
    ACTIVE = "active"
    HELD = "held"
    HELD_PRIVATE = "held-private"

    @property
    def wire(self) -> str:
        """The ``appearance-state`` token sent for this state (section 6.1: ACTIVE_PENDING is ``active``)."""
        return "active" if self is AppearanceState.ACTIVE_PENDING else self.value

    @classmethod
    def from_wire(cls, token: str) -> AppearanceState | None:
        """The state an ``appearance-state`` token names, or None for a token we do not
        track (``bridge-active``, ``bridge-held``, anything unknown: section 5.2)."""
        state = _WIRE_STATES.get(token.lower())
        return state


_WIRE_STATES: Final[Mapping[str, AppearanceState]] = {
    state.value: state for state in AppearanceState if state is not AppearanceState.ACTIVE_PENDING
}

WIRE_TOKENS: Final[Mapping[AppearanceState, str]] = {state: state.wire for state in AppearanceState}
""":attr:`AppearanceState.wire` of each state, looked up (the property reads the enum's
``value``, itself a Python property: three calls per appearance of every full state)."""

HELD_STATES: Final = frozenset({AppearanceState.HELD, AppearanceState.HELD_PRIVATE})
IN_CALL_STATES: Final = frozenset({AppearanceState.ACTIVE, *HELD_STATES})


class Role(enum.Enum):
    """Which side of the call the member owning the appearance is on (section 6.1)."""

    CALLER = "caller"
    CALLEE = "callee"


class Trigger(enum.Enum):
    """Inputs of the appearance state machine, named after the event of section 6.3/6.4."""

    __hash__ = object.__hash__  # as AppearanceState's: TRANSITIONS and GUARDS are keyed by both

    SEIZE = "seize"  # initial line-seize SUBSCRIBE (O1, O2)
    SEIZE_RELEASED = "seize-released"  # line-seize un-subscribe (O3)
    SEIZE_EXPIRED = "seize-expired"  # line-seize expiry or seized TTL (O4)
    INVITE = "invite"  # initial INVITE from the line naming a seized index (O5)
    INVITE_IMPLICIT = "invite-implicit"  # initial INVITE from the line, index not seized (O5b)
    PROGRESS = "progress"  # 180/183 to the member's INVITE (O6)
    ANSWERED = "answered"  # 2xx to the member's initial INVITE (O7)
    CANCELLED = "cancelled"  # CANCEL from the member (O8)
    FAILED = "failed"  # final 4xx-6xx except 487 to the initial INVITE (O9)
    REINVITE_FAILED = "reinvite-failed"  # final >= 300 to a re-INVITE, nothing to roll back (O9b)
    ROLLBACK_HOLD = "rollback-hold"  # failed hold re-INVITE: back to active (O9b)
    ROLLBACK_RETRIEVE = "rollback-retrieve"  # failed retrieve re-INVITE: back to held (O9b)
    ROLLBACK_RETRIEVE_PRIVATE = "rollback-retrieve-private"  # ... back to held-private (O9b)
    TERMINATED_487 = "terminated-487"  # 487 to the INVITE (O10)
    REDIRECTED = "redirected"  # 3xx to the INVITE (O11)
    CHALLENGED = "challenged"  # 401/407 to the INVITE (O12)
    LOCAL_FAILURE = "local-failure"  # the proxy itself rejected the INVITE with >= 400 (O13)
    OWNER_HOLD = "owner-hold"  # re-INVITE/UPDATE from the member with hold SDP (O14)
    OWNER_PRIVATE_HOLD = "owner-private-hold"  # ... with Call-Info appearance-state=held-private (O14, O14b)
    OWNER_PUBLIC_HOLD = "owner-public-hold"  # ... with Call-Info appearance-state=held (O14, O14b)
    ACK_HOLD = "ack-hold"  # ACK from the member carrying hold SDP (O15)
    OWNER_RETRIEVE = "owner-retrieve"  # re-INVITE/UPDATE from the member with non-hold SDP (O16)
    ACK_RETRIEVE = "ack-retrieve"  # ACK from the member carrying non-hold SDP (late offer, O16)
    REINVITE_ANSWERED = "reinvite-answered"  # 2xx to a re-INVITE (O17)
    BYE = "bye"  # BYE in the appearance's dialog, either direction (O18)
    RETRIEVE_BY_MEMBER = "retrieve-by-member"  # pickup from hold by another member (O19, section 7.1)
    RETRIEVE_ANSWERED = "retrieve-answered"  # 2xx to the pickup INVITE (O19)
    RETRIEVE_FAILED = "retrieve-failed"  # final non-2xx to the pickup INVITE (section 7.1, Q17)
    FAR_END_REPLACED = "far-end-replaced"  # a pickup on the far line replaces this call's dialog (O19b)
    FAR_END_REPLACE_ANSWERED = "far-end-replace-answered"  # 2xx to that pickup INVITE (O19b)
    FAR_END_REPLACE_FAILED = "far-end-replace-failed"  # that pickup failed: the old dialog again (7.1)
    MEMBER_REBOOTED = "member-rebooted"  # out-of-dialog call-info SUBSCRIBE from the owner (3.5)
    INCOMING = "incoming"  # initial INVITE to the line, option alerting_state (I1)
    MEMBER_RINGING = "member-ringing"  # 180/183 from a member (I2)
    MEMBER_ANSWERED = "member-answered"  # 200 OK from a member (I3)
    CALLER_ACK = "caller-ack"  # e2e ACK from the caller (I4)
    PENDING_EXPIRED = "pending-expired"  # no ACK within active_pending_ttl (I5)
    INCOMING_ENDED = "incoming-ended"  # CANCEL from the caller / every branch failed (I6)
    EARLY_EXPIRED = "early-expired"  # no final answer nor CANCEL within early_ttl (O20, I8)
    CALL_STALE = "call-stale"  # no signalling of the call within max_call_age (Q18)
    SESSION_EXPIRED = "session-expired"  # no refresh within the session interval (RFC 4028 10)
    ADMIN_SEIZE = "admin-seize"  # RPC sca.seize_appearance (section 11)
    ADMIN_RELEASE = "admin-release"  # RPC sca.release_appearance (section 11)
    ADMIN_SET_SEIZED = "admin-set-seized"  # RPC sca.update_appearance ... (section 11)
    ADMIN_SET_PROGRESSING = "admin-set-progressing"
    ADMIN_SET_ALERTING = "admin-set-alerting"
    ADMIN_SET_ACTIVE = "admin-set-active"
    ADMIN_SET_HELD = "admin-set-held"
    ADMIN_SET_HELD_PRIVATE = "admin-set-held-private"


S = AppearanceState
T = Trigger
_NON_IDLE: Final = tuple(state for state in S if state is not S.IDLE)
_SEIZED_OR_PROGRESSING: Final = (S.SEIZED, S.PROGRESSING)
_ACTIVE_OR_HELD: Final = (S.ACTIVE, S.HELD, S.HELD_PRIVATE)

#: The target state of each ``sca.update_appearance`` trigger (section 11).
ADMIN_SET_TARGETS: Final[Mapping[Trigger, AppearanceState]] = {
    T.ADMIN_SET_SEIZED: S.SEIZED,
    T.ADMIN_SET_PROGRESSING: S.PROGRESSING,
    T.ADMIN_SET_ALERTING: S.ALERTING,
    T.ADMIN_SET_ACTIVE: S.ACTIVE,
    T.ADMIN_SET_HELD: S.HELD,
    T.ADMIN_SET_HELD_PRIVATE: S.HELD_PRIVATE,
}


_Rows = dict[tuple[AppearanceState, Trigger], tuple[str, AppearanceState]]


def _rows() -> _Rows:
    rows: _Rows = {**_caller_rows(), **_callee_rows()}
    for state in _SEIZED_OR_PROGRESSING:
        rows[state, T.ANSWERED] = ("O7", S.ACTIVE)
        rows[state, T.CANCELLED] = ("O8", S.IDLE)
        rows[state, T.FAILED] = ("O9", S.IDLE)
        rows[state, T.LOCAL_FAILURE] = ("O13", S.IDLE)
        rows[state, T.EARLY_EXPIRED] = ("O20", S.IDLE)
    for state in _ACTIVE_OR_HELD:
        rows[state, T.REINVITE_FAILED] = ("O9b", state)
        rows[state, T.REINVITE_ANSWERED] = ("O17", state)
        rows[state, T.CALL_STALE] = ("Q18", S.IDLE)
        rows[state, T.FAR_END_REPLACED] = ("O19b", state)
        rows[state, T.FAR_END_REPLACE_ANSWERED] = ("O19b", state)
        rows[state, T.FAR_END_REPLACE_FAILED] = ("7.1", state)
        rows[state, T.SESSION_EXPIRED] = ("4028", S.IDLE)
    for state in _NON_IDLE:
        rows[state, T.SEIZE] = ("O2", state)  # the engine answers 480 + Retry-After
        rows[state, T.TERMINATED_487] = ("O10", state)
        rows[state, T.REDIRECTED] = ("O11", state)
        rows[state, T.BYE] = ("O18", S.IDLE)
        rows[state, T.ADMIN_RELEASE] = ("RPC", S.IDLE)
        rows[state, T.MEMBER_REBOOTED] = ("3.5", S.IDLE)
    for trigger, target in ADMIN_SET_TARGETS.items():
        for state in S:
            rows[state, trigger] = ("RPC", target)
    return rows


def _caller_rows() -> _Rows:
    """6.3: the line is the caller (the rows of one state and trigger)."""
    return {
        (S.IDLE, T.SEIZE): ("O1", S.SEIZED),
        (S.SEIZED, T.SEIZE_RELEASED): ("O3", S.IDLE),
        (S.SEIZED, T.SEIZE_EXPIRED): ("O4", S.IDLE),
        (S.SEIZED, T.INVITE): ("O5", S.SEIZED),
        (S.IDLE, T.INVITE_IMPLICIT): ("O5b", S.SEIZED),
        (S.SEIZED, T.PROGRESS): ("O6", S.PROGRESSING),
        (S.PROGRESSING, T.PROGRESS): ("O6", S.PROGRESSING),  # a later 18x: the call is alive
        (S.SEIZED, T.CHALLENGED): ("O12", S.SEIZED),
        (S.ACTIVE, T.OWNER_HOLD): ("O14", S.HELD),
        (S.ACTIVE, T.OWNER_PRIVATE_HOLD): ("O14", S.HELD_PRIVATE),
        (S.ACTIVE, T.OWNER_PUBLIC_HOLD): ("O14", S.HELD),
        (S.HELD, T.OWNER_PRIVATE_HOLD): ("O14b", S.HELD_PRIVATE),  # a public hold made private
        (S.HELD_PRIVATE, T.OWNER_PUBLIC_HOLD): ("O14b", S.HELD),  # a private hold made public
        (S.ACTIVE, T.ACK_HOLD): ("O15", S.HELD),
        (S.HELD, T.OWNER_RETRIEVE): ("O16", S.ACTIVE),
        (S.HELD_PRIVATE, T.OWNER_RETRIEVE): ("O16", S.ACTIVE),
        (S.HELD, T.ACK_RETRIEVE): ("O16", S.ACTIVE),
        (S.HELD_PRIVATE, T.ACK_RETRIEVE): ("O16", S.ACTIVE),
        (S.HELD, T.ROLLBACK_HOLD): ("O9b", S.ACTIVE),
        (S.HELD_PRIVATE, T.ROLLBACK_HOLD): ("O9b", S.ACTIVE),
        (S.ACTIVE, T.ROLLBACK_RETRIEVE): ("O9b", S.HELD),
        (S.ACTIVE, T.ROLLBACK_RETRIEVE_PRIVATE): ("O9b", S.HELD_PRIVATE),
        (S.HELD_PRIVATE, T.ROLLBACK_RETRIEVE): ("O9b", S.HELD),  # failed O14b re-INVITE
        (S.HELD, T.ROLLBACK_RETRIEVE_PRIVATE): ("O9b", S.HELD_PRIVATE),  # failed O14b re-INVITE
        (S.HELD, T.RETRIEVE_BY_MEMBER): ("O19", S.ACTIVE),
        (S.ACTIVE, T.RETRIEVE_ANSWERED): ("O19", S.ACTIVE),
        (S.ACTIVE, T.RETRIEVE_FAILED): ("7.1", S.HELD),
    }


def _callee_rows() -> _Rows:
    """6.4: the line is the callee; 11: management (the rows of one state and trigger)."""
    return {
        (S.IDLE, T.INCOMING): ("I1", S.ALERTING),
        (S.ALERTING, T.MEMBER_RINGING): ("I2", S.ALERTING),
        (S.IDLE, T.MEMBER_ANSWERED): ("I3", S.ACTIVE_PENDING),
        (S.ALERTING, T.MEMBER_ANSWERED): ("I3", S.ACTIVE_PENDING),
        (S.ACTIVE_PENDING, T.CALLER_ACK): ("I4", S.ACTIVE),
        (S.ACTIVE_PENDING, T.PENDING_EXPIRED): ("I5", S.IDLE),
        (S.ALERTING, T.INCOMING_ENDED): ("I6", S.IDLE),
        (S.ALERTING, T.EARLY_EXPIRED): ("I8", S.IDLE),
        # 11: management.
        (S.IDLE, T.ADMIN_SEIZE): ("RPC", S.SEIZED),
    }


#: The one transition table: ``(state, trigger) -> (rule id, target state)`` (sca.md 6.3, 6.4, 7.1, 11).
TRANSITIONS: Final[Mapping[tuple[AppearanceState, Trigger], tuple[str, AppearanceState]]] = _rows()


@attrs.frozen
class CallLeg:
    """The dialog of the call on an appearance, seen from the member (sca.md 6.1, 6.4).

    ``member_tag`` is the tag of the member's side, ``remote_tag`` the far end's
    (None until known); ``role`` says whether the member is the caller (UAC of
    the initial INVITE) or the callee.
    """

    call_id: str
    member_tag: str | None
    remote_tag: str | None
    role: Role

    @property
    def from_tag(self) -> str | None:
        """The From-tag of requests the caller sends in this dialog."""
        return self.member_tag if self.role is Role.CALLER else self.remote_tag

    @property
    def to_tag(self) -> str | None:
        """The To-tag of requests the caller sends in this dialog."""
        return self.remote_tag if self.role is Role.CALLER else self.member_tag

    def matches(self, call_id: str | None, tag_a: str | None, tag_b: str | None) -> bool:
        """True when a message with ``call_id`` and the tags ``tag_a``/``tag_b`` (From and To
        tags, in either order) belongs to this dialog (role-aware matching, Q10, Q18)."""
        if call_id != self.call_id or self.member_tag is None:
            return False
        tags = {tag_a, tag_b}
        if self.member_tag not in tags:
            return False
        return self.remote_tag is None or self.remote_tag in tags


@attrs.frozen
class Previous:
    """What a pickup from hold replaced, restored when the pickup fails (section 7.1, Q17)."""

    owner: str | None
    leg: CallLeg | None
    remote_contact: str | None


@attrs.frozen
class Appearance:
    """One in-use appearance of a line (sca.md 6.1).  Idle appearances are not stored.

    ``owner`` is the member contact using it; ``leg`` the dialog of its call;
    ``remote_contact`` the far end's Contact (the target of a pickup, 7.1);
    ``remote_uri`` the appearance-uri shown to the group (7.5);
    ``rollback`` the state before a tentative hold/retrieve whose re-INVITE is
    still pending, with that re-INVITE's CSeq (O9b); ``previous`` what a pickup
    replaced (7.1).  Times are float seconds on the engine's clock:
    ``created_at``, ``changed_at`` (last state change) and ``touched_at`` (last
    activity, which the seized TTL counts from, Q2).
    """

    line: str
    index: int
    state: AppearanceState = AppearanceState.IDLE
    owner: str | None = None
    leg: CallLeg | None = None
    remote_contact: str | None = None
    remote_uri: str | None = None
    rollback: tuple[AppearanceState, int] | None = None
    previous: Previous | None = None
    created_at: float = 0.0
    changed_at: float = 0.0
    touched_at: float = 0.0

    @property
    def call_id(self) -> str | None:
        return None if self.leg is None else self.leg.call_id

    @property
    def callee_pending(self) -> bool:
        """A pickup on the far line moved this appearance to the pickup's dialog (O19b,
        section 7.1 step 4) and the far end's answer, which gives our member's tag in that
        dialog, is still awaited; ``previous`` is the dialog to go back to if it fails."""
        return self.previous is not None and self.leg is not None and self.leg.member_tag is None

    def changed(self, changes: Mapping[str, Any]) -> Appearance:
        """This appearance with the fields named in ``changes`` set (a trigger's new owner, leg,
        remote party...): the constructor with every field, not ``attrs.evolve`` (which reads
        the class's fields and each value by ``getattr``)."""
        fields: dict[str, Any] = {
            "line": self.line,
            "index": self.index,
            "state": self.state,
            "owner": self.owner,
            "leg": self.leg,
            "remote_contact": self.remote_contact,
            "remote_uri": self.remote_uri,
            "rollback": self.rollback,
            "previous": self.previous,
            "created_at": self.created_at,
            "changed_at": self.changed_at,
            "touched_at": self.touched_at,
        }
        fields.update(changes)
        return Appearance(**fields)

    def moved(
        self, state: AppearanceState, *, changed_at: float, touched_at: float, created_at: float
    ) -> Appearance:
        """This appearance in ``state`` with its times stamped (once per trigger applied): the
        constructor with every field, not ``attrs.evolve`` (3.4-4.3 -> 1.6-1.7 us)."""
        return Appearance(
            self.line,
            self.index,
            state,
            self.owner,
            self.leg,
            self.remote_contact,
            self.remote_uri,
            self.rollback,
            self.previous,
            created_at,
            changed_at,
            touched_at,
        )


def _seize_only(appearance: Appearance) -> bool:
    """The member has not sent its INVITE on the seized index yet."""
    return appearance.leg is None


def _dialled(appearance: Appearance) -> bool:
    """The member's INVITE went out on the seized index: the call owns it now."""
    return appearance.leg is not None


#: Conditions on the appearance's fields that a row of :data:`TRANSITIONS` needs besides its
#: state.  Once the INVITE is sent on a seized appearance the call owns it, not the line-seize
#: subscription: the end of that subscription (un-subscribe O3, expiry O4) no longer frees it,
#: only the call's own signalling or its early TTL (O20) does (sca.md 6.3).
GUARDS: Final[Mapping[tuple[AppearanceState, Trigger], Callable[[Appearance], bool]]] = {
    (S.SEIZED, T.SEIZE_RELEASED): _seize_only,
    (S.SEIZED, T.SEIZE_EXPIRED): _seize_only,
    (S.SEIZED, T.EARLY_EXPIRED): _dialled,
}


#: The trigger that undoes a member's re-INVITE whose final response failed (O9b), by the
#: state the appearance had before the re-INVITE (``Appearance.rollback``): a hold goes
#: back to active, a retrieve back to the hold it left.
ROLLBACKS: Final[Mapping[AppearanceState, Trigger]] = {
    S.ACTIVE: T.ROLLBACK_HOLD,
    S.HELD: T.ROLLBACK_RETRIEVE,
    S.HELD_PRIVATE: T.ROLLBACK_RETRIEVE_PRIVATE,
}


def rollback_of(before: AppearanceState) -> Trigger:
    """The :data:`ROLLBACKS` trigger for ``before`` (a plain retrieve roll-back otherwise)."""
    return ROLLBACKS.get(before, T.ROLLBACK_RETRIEVE)


def timeout_of(appearance: Appearance) -> Trigger | None:
    """The trigger an appearance's TTL timer fires in its current state (sca.md 9), or None
    when the state has no TTL: a seize not dialled yet O4; a call not answered yet (dialled
    seize, progressing, alerting) O20/I8; a member's answer not ACKed I5; a call in progress
    the stale-call sweep Q18."""
    state = appearance.state
    if state is S.SEIZED:
        return T.SEIZE_EXPIRED if _seize_only(appearance) else T.EARLY_EXPIRED
    if state in (S.PROGRESSING, S.ALERTING):
        return T.EARLY_EXPIRED
    if state is S.ACTIVE_PENDING:
        return T.PENDING_EXPIRED
    if state in _ACTIVE_OR_HELD:
        return T.CALL_STALE
    return None


@attrs.frozen
class AppearanceChanged(Fact):
    """Fact: an appearance went through a row of :data:`TRANSITIONS` (loops included).

    ``appearance`` is the appearance as this change left it (idle when it ended), what the
    consumers that store it need; it is not part of the fact's equality (the transition is).
    """

    line: str
    index: int
    from_state: AppearanceState
    to_state: AppearanceState
    rule: str
    owner: str | None
    call_id: str | None
    time: float
    appearance: Appearance | None = attrs.field(default=None, eq=False, kw_only=True)


@attrs.frozen
class TriggerIgnored(Fact):
    """Fact: a trigger arrived in a state with no row for it; nothing changed (STYLE P4)."""

    line: str
    index: int
    state: AppearanceState
    trigger: Trigger
    time: float


@attrs.frozen
class Step:
    """The outcome of :func:`apply`: the new value, the rule taken (None when ignored) and the fact."""

    appearance: Appearance
    rule: str | None
    fact: AppearanceChanged | TriggerIgnored

    @property
    def changed_state(self) -> bool:
        return isinstance(self.fact, AppearanceChanged) and self.fact.from_state is not self.fact.to_state


def allowed(state: AppearanceState, trigger: Trigger) -> bool:
    """True when ``trigger`` has a row in ``state``."""
    return (state, trigger) in TRANSITIONS


def apply(appearance: Appearance, trigger: Trigger, now: float) -> Step:
    """Run ``trigger`` through :data:`TRANSITIONS` (and the row's :data:`GUARDS` condition).

    The caller sets the fields a row changes (owner, leg...) on ``appearance``
    before calling; this function moves the state, stamps the times and says
    what happened.
    """
    row = TRANSITIONS.get((appearance.state, trigger))
    guard = GUARDS.get((appearance.state, trigger))
    if row is None or (guard is not None and not guard(appearance)):
        ignored = TriggerIgnored(appearance.line, appearance.index, appearance.state, trigger, now)
        return Step(appearance, None, ignored)
    rule, target = row
    changed = target is not appearance.state
    new = appearance.moved(
        target,
        changed_at=now if changed else appearance.changed_at,
        touched_at=now,
        created_at=now if appearance.state is AppearanceState.IDLE else appearance.created_at,
    )
    fact = AppearanceChanged(
        appearance.line,
        appearance.index,
        appearance.state,
        target,
        rule,
        new.owner,
        new.call_id,
        now,
        appearance=new,
    )
    return Step(new, rule, fact)


# Section 6.2: hold detection.

_HOLD_DIRECTIONS: Final = frozenset({"sendonly", "inactive"})
_DIRECTIONS: Final = frozenset({"sendonly", "inactive", "recvonly", "sendrecv"})
_TRICKLE_PORT: Final = 9


@attrs.frozen
class _Stream:
    media: str
    port: int
    direction: str | None
    address: str | None


def _connection_address(value: str) -> str | None:
    parts = value.split()
    if len(parts) < 3:
        return None
    return parts[2].split("/", 1)[0]


def sdp_hold(body: bytes) -> bool | None:
    """Whether an SDP offer puts the call on hold (sca.md 6.2, RFC 3264 section 8.4).

    None when ``body`` holds no session description (a body-less re-INVITE is
    "unknown", Q14).  Otherwise True exactly when there is at least one active
    (port != 0) audio stream and every active audio stream is held: its
    direction, the media-level ``a=`` overriding the session-level one (Q13),
    is ``sendonly`` or ``inactive``, or its connection address (media-level
    ``c=`` overriding session-level) is ``0.0.0.0`` other than the trickle-ICE
    port-9 placeholder (RFC 8840).  ``recvonly`` is not hold: RFC 3264 8.4 holds
    a recvonly stream by making it inactive.
    """
    text = body.decode("utf-8", "replace")
    session_direction: str | None = None
    session_address: str | None = None
    streams: list[_Stream] = []
    seen_sdp = False
    for raw in text.splitlines():
        line = raw.strip()
        if len(line) < 2 or line[1] != "=":
            continue
        kind, value = line[0], line[2:].strip()
        if kind == "v":
            seen_sdp = True
        elif kind == "m":
            seen_sdp = True
            fields = value.split()
            port_text = fields[1].split("/", 1)[0] if len(fields) > 1 else ""
            port = int(port_text) if port_text.isdigit() else 0
            streams.append(_Stream(fields[0].lower() if fields else "", port, None, None))
        elif kind == "a" and value.lower() in _DIRECTIONS:
            if streams:  # the constructor, not attrs.evolve
                last = streams[-1]
                streams[-1] = _Stream(last.media, last.port, value.lower(), last.address)
            else:
                session_direction = value.lower()
        elif kind == "c":
            address = _connection_address(value)
            if streams:
                last = streams[-1]
                streams[-1] = _Stream(last.media, last.port, last.direction, address)
            else:
                session_address = address
    if not seen_sdp:
        return None
    active = [stream for stream in streams if stream.media == "audio" and stream.port != 0]
    if not active:
        return False
    for stream in active:
        direction = stream.direction or session_direction or "sendrecv"
        address = stream.address or session_address
        zero = address == "0.0.0.0" and stream.port != _TRICKLE_PORT
        if direction not in _HOLD_DIRECTIONS and not zero:
            return False
    return True
