"""Call tracking of the SCA engine: the requests of a shared line's calls become
appearance triggers (sca.md sections 1, 2, 6.3-6.5, 7).

:class:`CallTracker` is told of each request the proxy relays (initial INVITE,
re-INVITE/UPDATE offers, BYE, CANCEL) and of end-to-end ACKs, finds the
appearances they concern (by Call-ID, role and tags) and runs the matching
trigger on the :class:`~scaserver.sca.board.AppearanceBoard`; the responses go
to :class:`~scaserver.sca.answers.AnswerTracker`.  It also classifies an initial
INVITE before it is forwarded (:meth:`CallTracker.check_request`: pickup from
hold 7.1, private hold 7.2, barge-in 7.6).  Where a trigger leads from an
appearance's state, and whether it has a row there at all, is asked of the
transition table (appearance.py).  Pure: every method takes ``now`` and returns
its actions.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from scaserver.sca.appearance import (
    IN_CALL_STATES,
    Appearance,
    AppearanceState,
    CallLeg,
    Previous,
    Role,
    Trigger,
    allowed,
    sdp_hold,
)
from scaserver.sca.board import AppearanceBoard
from scaserver.sca.callinfo import AppearanceInfo, CallInfo, CallInfoError
from scaserver.sca.line import SharedLine, canonical_aor, host_part, side_aor
from scaserver.sip.actions import EngineAction
from scaserver.sip.errors import Forbidden, MalformedMessage, SipError
from scaserver.sip.headers import Star, cseq, from_addr, parse_contacts, to_addr
from scaserver.sip.message import Request, Response
from scaserver.sip.uri import NameAddr, quote


class BargeNotSupported(SipError, status=403, reason="Barge-in not supported"):
    """A pickup-shaped INVITE aimed at an active appearance (sca.md 7.6, phase 1)."""


@attrs.frozen
class RequestPlan:
    """What the proxy must do with an initial INVITE before forwarding it (sca.md 7.1, 7.2, 7.6).

    ``rejection``: answer with ``response_for(request, rejection)`` and do not
    relay.  ``target``: send the INVITE to this one URI only (the held call's
    remote party), adding the ``Replaces`` header value ``replaces`` (RFC 3891).
    Both None: forward as usual.
    """

    rejection: SipError | None = None
    target: str | None = None
    replaces: str | None = None


@attrs.frozen
class Side:
    """What call tracking reads from a message's From or To."""

    uri: str
    display: str | None
    tag: str | None


def side(address: NameAddr) -> Side:
    return Side(str(address.uri), address.display_name, address.tag)


def first_contact(message: Request | Response) -> str | None:
    try:
        found = parse_contacts(message.headers.values("Contact"))
    except MalformedMessage:
        return None
    if isinstance(found, Star) or not found:
        return None
    return str(found[0].uri)


def call_info_of(message: Request | Response) -> AppearanceInfo | None:
    """The SCA Call-Info of a call message, read leniently (Q9): unreadable means absent."""
    try:
        return CallInfo.of(message.headers).first()
    except CallInfoError:
        return None


def address_text(display: str | None, uri: str) -> str:
    """An appearance-uri content: ``"display" <uri>`` or ``<uri>`` (5.1, 7.5), the URI as an AoR."""
    uri = canonical_aor(uri) or uri
    return f"<{uri}>" if not display else f"{quote(display)} <{uri}>"


def hint_or_sdp(hint: bool | None, body: bytes) -> bool | None:
    """The hold verdict of a message: the routing layer's hint, else its SDP (6.2)."""
    return hint if hint is not None else sdp_hold(body)


def _is_fresh(appearance: Appearance, call_id: str, member_tag: str) -> bool:
    leg = appearance.leg
    return leg is not None and leg.call_id == call_id and leg.member_tag == member_tag


def _hold_trigger(info: AppearanceInfo | None) -> Trigger:
    """The trigger of a member's hold offer: the Call-Info ``appearance-state`` of the
    re-INVITE picks private (O14, O14b) or public hold explicitly (O14b); without it, a
    plain hold (O14), which leaves a held appearance's privacy as it is."""
    state = None if info is None else info.state
    if state is AppearanceState.HELD_PRIVATE:
        return Trigger.OWNER_PRIVATE_HOLD
    if state is AppearanceState.HELD:
        return Trigger.OWNER_PUBLIC_HOLD
    return Trigger.OWNER_HOLD


@attrs.define
class CallTracker:
    """The requests of calls on shared lines, turned into appearance triggers.

    ``resolve`` maps an AoR through the line aliases; ``is_sca`` and ``line`` say
    whether an AoR is a shared line and give its settings; ``end_seize`` ends the
    line-seize subscription that held an appearance once its call owns it (3.7).
    """

    board: AppearanceBoard
    resolve: Callable[[str | None], str | None]
    is_sca: Callable[[str], bool]
    line: Callable[[str], SharedLine]
    end_seize: Callable[[Appearance, float], list[EngineAction]]
    alerting_state: bool = True
    contact_fallback: str = ""

    # Which line a side of a call is on (section 1).

    def side_line(self, uri: str, contact: str | None) -> str | None:
        """The shared line one side of a call is on (sca.md section 1), or None.

        ``uri`` is the From of a request or the To of a response, ``contact`` its Contact.
        A Contact user that names a line in the From/To host is that line (Polycom lines
        registered under a separate line user); otherwise the From/To identity itself is
        the line when it is one.  A Contact user is only a hint: phones put anything there
        (baresip ``3000-0x...``, a push member's mobile), so a Contact user that names no
        line never hides the line of the From/To identity.
        """
        for candidate in (side_aor(uri, contact), canonical_aor(uri)):
            line = self.resolve(candidate)
            if line is not None and self.is_sca(line):
                return line
        return None

    def caller_line(self, request: Request, user: str) -> str | None:
        """The shared line an outgoing request of the authenticated ``user`` is placed on
        (its From and Contact, as call tracking maps them), or None when it is on no line
        or ``user`` (a name, or ``sip:user@line-host``) is no member of it (sca.md 3.2 row 6;
        a line without a member list admits everybody)."""
        try:
            sender = from_addr(request)
        except MalformedMessage:
            return None
        line = self.side_line(str(sender.uri), first_contact(request))
        if line is None:
            return None
        shared = self.line(line)
        own = canonical_aor(f"sip:{user}@{host_part(line)}")
        if shared.admits(user=user) or shared.lists(user=user, aor=own):
            return line
        return None

    def is_line_call(self, request: Request) -> bool:
        """An initial INVITE from a member of a shared line or to a line (section 1): a call
        whose appearance an RFC 4028 session timer can end."""
        try:
            sender, target = from_addr(request), to_addr(request)
        except MalformedMessage:
            return False
        if self.side_line(str(sender.uri), first_contact(request)) is not None:
            return True
        return any(
            line is not None and self.is_sca(line)
            for line in (
                self.resolve(canonical_aor(str(target.uri))),
                self.resolve(canonical_aor(request.uri)),
            )
        )

    # Pickup, private hold, barge-in (7.1, 7.2, 7.6).

    def check_request(self, request: Request) -> RequestPlan:
        """Classify an initial INVITE before it is forwarded (7.1 pickup, 7.2 private, 7.6 barge).

        Pure: changes nothing.  A pickup is an INVITE without To-tag whose
        Call-Info names index N of the line, with From AoR == To AoR == the line.
        """
        if request.method != "INVITE":
            return RequestPlan()
        app = self.pickup(request)
        if app is None:
            return RequestPlan()
        if app.state is AppearanceState.HELD_PRIVATE:
            return RequestPlan(rejection=Forbidden("appearance is on private hold"))
        if app.state is AppearanceState.ACTIVE:
            return RequestPlan(rejection=BargeNotSupported("barge-in on an active appearance"))
        if app.state is not AppearanceState.HELD or app.leg is None or app.remote_contact is None:
            return RequestPlan()
        leg = app.leg
        replaces = f"{leg.call_id};to-tag={leg.remote_tag};from-tag={leg.member_tag}"
        return RequestPlan(target=app.remote_contact, replaces=replaces)

    def pickup(self, request: Request) -> Appearance | None:
        """The appearance of another call an INVITE within its line picks up (7.1), or None."""
        try:
            sender, target = from_addr(request), to_addr(request)
        except MalformedMessage:
            return None
        if target.tag:
            return None
        info = call_info_of(request)
        if info is None or info.index is None:
            return None
        line = self.resolve(canonical_aor(str(sender.uri)))
        if line is None or line != self.resolve(canonical_aor(str(target.uri))):
            return None
        app = self.board.appearance(line, info.index)
        if app is None or app.state not in IN_CALL_STATES:
            return None
        leg = app.leg
        if leg is not None and leg.call_id == request.call_id:
            return None  # the appearance's own call
        return app

    # Requests relayed (section 2).

    def on_request_forwarded(
        self, request: Request, now: float, *, hold_hint: bool | None = None
    ) -> list[EngineAction]:
        """A request the proxy relayed: INVITE, re-INVITE, UPDATE, BYE, CANCEL, PRACK, REFER (section 2).

        ``hold_hint`` overrides SDP hold detection (the ``onhold_bflag`` hook, 6.2).
        """
        try:
            sender, target = from_addr(request), to_addr(request)
        except MalformedMessage:
            return []
        call_id = request.call_id
        if not call_id or sender.tag is None:
            return []
        # Only an initial INVITE reads more of From and To than their tags: the Side values
        # (a URI written out each) are built for it alone.
        method = request.method
        if method == "INVITE" and target.tag is None:
            return self._initial_invite(
                request, call_id=call_id, sender=side(sender), target=side(target), now=now
            )
        if method in ("INVITE", "UPDATE") and target.tag is not None:
            return self._offer(
                request,
                call_id=call_id,
                sender_tag=sender.tag,
                target_tag=target.tag,
                now=now,
                hint=hold_hint,
            )
        if method == "BYE":
            return self.bye(call_id, sender.tag, target.tag, now)
        if method == "CANCEL":
            return self.cancel(call_id, side(sender), now)
        return []

    def bye(
        self, call_id: str, sender_tag: str | None, target_tag: str | None, now: float
    ) -> list[EngineAction]:
        """A BYE of the dialog (or its 2xx, O18 as a backup), its From and To tags: the
        appearances it follows end."""
        out: list[EngineAction] = []
        for app in self.board.of_call(call_id):
            if app.leg is not None and app.leg.matches(call_id, sender_tag, target_tag):
                out += self.board.fire(app, Trigger.BYE, now)
        return out

    def on_cancel(self, cancel: Request, now: float) -> list[EngineAction]:
        """A CANCEL of a call the server knows: one the proxy applied to a forking INVITE, or
        one whose INVITE transaction is gone (a restart; answered 481): O8, I6, 7.1."""
        try:
            sender = side(from_addr(cancel))
        except MalformedMessage:
            return []
        if cancel.call_id and sender.tag is not None:
            return self.cancel(cancel.call_id, sender, now)
        return []

    def cancel(self, call_id: str, sender: Side, now: float) -> list[EngineAction]:
        """CANCEL, matched by Call-ID and From-tag (Q12): O8 for the caller, I6 for the callee line."""
        out: list[EngineAction] = []
        for app in self.board.of_call(call_id):
            leg = app.leg
            if leg is None:
                continue
            if app.callee_pending and leg.remote_tag == sender.tag:
                out += self.restore_far_end(app, now)  # the pickup moving it was cancelled (7.1)
            elif leg.role is Role.CALLER and leg.member_tag == sender.tag:
                if app.previous is not None and leg.remote_tag is None:
                    out += self.restore_pickup(app, now)
                else:
                    out += self.board.fire(app, Trigger.CANCELLED, now)
            elif leg.role is Role.CALLEE and leg.remote_tag == sender.tag and leg.member_tag is None:
                out += self.board.fire(app, Trigger.INCOMING_ENDED, now)
        return out

    def _initial_invite(
        self, request: Request, *, call_id: str, sender: Side, target: Side, now: float
    ) -> list[EngineAction]:
        contact = first_contact(request) or self.contact_fallback or None
        caller_line = self.side_line(sender.uri, contact)
        callee_line = self.resolve(canonical_aor(target.uri))
        out: list[EngineAction] = []
        if caller_line is not None and self.is_sca(caller_line):
            out += self._caller_invite(
                request,
                line=caller_line,
                callee_line=callee_line,
                sender=sender,
                target=target,
                contact=contact,
                now=now,
            )
        if (
            self.alerting_state
            and callee_line is not None
            and callee_line != caller_line
            and self.is_sca(callee_line)
        ):
            out += self._incoming(callee_line, call_id=call_id, sender=sender, contact=contact, now=now)
        return out

    def _incoming(
        self, line: str, *, call_id: str, sender: Side, contact: str | None, now: float
    ) -> list[EngineAction]:
        """An initial INVITE to the line: the lowest free appearance alerts (I1), once."""
        for app in self.board.of_call(call_id):
            if app.line == line and app.leg is not None and app.leg.remote_tag == sender.tag:
                return []
        free = self.board.lowest_free(self.line(line))
        if free is None:
            return []
        return self.board.fire(
            Appearance(line, free),
            Trigger.INCOMING,
            now,
            leg=CallLeg(call_id, None, sender.tag, Role.CALLEE),
            remote_contact=contact,
            remote_uri=address_text(sender.display, sender.uri),
        )

    def _caller_invite(
        self,
        request: Request,
        *,
        line: str,
        callee_line: str | None,
        sender: Side,
        target: Side,
        contact: str | None,
        now: float,
    ) -> list[EngineAction]:
        """An initial INVITE from a member of ``line``: O5 on its seize, O5b on a free index,
        O19 a pickup by another member (7.1); the same INVITE again after a 401/407 loops."""
        call_id, tag = request.call_id, sender.tag
        assert call_id is not None and tag is not None
        for app in self.board.of_call(call_id):
            if app.line == line and _is_fresh(app, call_id, tag):
                return self.board.fire(app, Trigger.INVITE, now)  # the same INVITE again
        remote_uri = address_text(target.display, target.uri)
        leg = CallLeg(call_id, tag, None, Role.CALLER)
        info = call_info_of(request)
        wanted = info.index if info is not None and info.index is not None else 0
        if wanted and callee_line == line:
            pickup = self.pickup(request)
            if pickup is not None:  # 7.1 retrieve by another member (O19); other states were refused
                return self._retrieve(pickup, leg, contact=contact, now=now)
        current = self.board.appearance(line, wanted) if wanted else None
        if (
            current is not None
            and allowed(current.state, Trigger.INVITE)
            and (current.leg is None or current.leg.call_id == call_id)
        ):
            owner = contact or current.owner
            return self.board.fire(current, Trigger.INVITE, now, owner=owner, leg=leg, remote_uri=remote_uri)
        free = self.board.lowest_free(self.line(line), wanted)
        if free is None:
            return []
        fresh = Appearance(line, free)
        return self.board.fire(
            fresh, Trigger.INVITE_IMPLICIT, now, owner=contact, leg=leg, remote_uri=remote_uri
        )  # O5b

    def _retrieve(
        self, pickup: Appearance, leg: CallLeg, *, contact: str | None, now: float
    ) -> list[EngineAction]:
        """O19: another member's INVITE takes over the held call of ``pickup`` (7.1)."""
        step, out = self.board.step(
            pickup,
            Trigger.RETRIEVE_BY_MEMBER,
            now,
            owner=contact,
            leg=leg,
            previous=Previous(pickup.owner, pickup.leg, pickup.remote_contact),
        )
        if step.rule is not None and pickup.leg is not None:
            out += self._replace_far_end(pickup, pickup.leg, leg, contact=contact, now=now)
        return out

    def _replace_far_end(
        self, pickup: Appearance, old: CallLeg, new: CallLeg, *, contact: str | None, now: float
    ) -> list[EngineAction]:
        """7.1 step 4 (O19b): the pickup INVITE carries Replaces for ``old`` to the far end, so an
        appearance of another line that follows ``old`` from the far end's side follows the
        pickup's dialog instead, where the far end is the callee; its tag there comes with the
        answer (:attr:`Appearance.callee_pending`).  Its remote party is the picking member."""
        out: list[EngineAction] = []
        for far in self.board.of_call(old.call_id):
            leg = far.leg
            if (
                (far.line, far.index) == (pickup.line, pickup.index)
                or leg is None
                or leg.member_tag is None
                or (leg.member_tag, leg.remote_tag) != (old.remote_tag, old.member_tag)
            ):
                continue
            out += self.board.fire(
                far,
                Trigger.FAR_END_REPLACED,
                now,
                leg=CallLeg(new.call_id, None, new.member_tag, Role.CALLEE),
                remote_contact=contact,
                previous=Previous(far.owner, leg, far.remote_contact),
            )
        return out

    def restore_far_end(self, app: Appearance, now: float) -> list[EngineAction]:
        """The pickup that moved ``app`` failed or was cancelled: back on the replaced dialog."""
        return self._back_to_previous(app, Trigger.FAR_END_REPLACE_FAILED, now)

    def restore_pickup(self, app: Appearance, now: float) -> list[EngineAction]:
        """A member's pickup of ``app`` failed or was cancelled: the held call is back (7.1)."""
        return self._back_to_previous(app, Trigger.RETRIEVE_FAILED, now)

    def _back_to_previous(self, app: Appearance, trigger: Trigger, now: float) -> list[EngineAction]:
        """``app`` returns to the owner, dialog and Contact it had before a pickup (7.1)."""
        previous = app.previous
        assert previous is not None
        return self.board.fire(
            app,
            trigger,
            now,
            owner=previous.owner,
            leg=previous.leg,
            remote_contact=previous.remote_contact,
            previous=None,
        )

    def _offer(
        self,
        request: Request,
        *,
        call_id: str,
        sender_tag: str | None,
        target_tag: str | None,
        now: float,
        hint: bool | None,
    ) -> list[EngineAction]:
        """An in-dialog offer (re-INVITE, UPDATE) from the member: hold or retrieve (O14, O16, 6.5)."""
        hold = hint_or_sdp(hint, request.body)
        if hold is None:
            return []  # a body-less re-INVITE changes nothing (Q14)
        info = call_info_of(request)
        try:
            number = cseq(request).number
        except MalformedMessage:
            return []
        out: list[EngineAction] = []
        for app in self.board.of_call(call_id):
            leg = app.leg
            if (
                leg is None
                or leg.member_tag != sender_tag
                or not leg.matches(call_id, sender_tag, target_tag)
            ):
                continue  # remote hold changes nothing (6.2, 7.4)
            trigger = _hold_trigger(info) if hold else Trigger.OWNER_RETRIEVE
            rollback = (app.state, number) if request.method == "INVITE" else None
            out += self.board.fire(app, trigger, now, rollback=rollback)
        return out

    def on_ack(self, request: Request, now: float, *, hold_hint: bool | None = None) -> list[EngineAction]:
        """An end-to-end ACK the proxy relayed: I4 (caller's ACK), O15/O16 (member's late-offer SDP)."""
        try:
            sender, target = from_addr(request), to_addr(request)  # their tags
        except MalformedMessage:
            return []
        call_id = request.call_id
        if not call_id:
            return []
        hold = hint_or_sdp(hold_hint, request.body)
        out: list[EngineAction] = []
        for app in self.board.of_call(call_id):
            leg = app.leg
            if leg is None or not leg.matches(call_id, sender.tag, target.tag):
                continue
            if leg.member_tag == target.tag and allowed(app.state, Trigger.CALLER_ACK):
                out += self.board.fire(app, Trigger.CALLER_ACK, now)  # I4
            elif leg.member_tag == sender.tag and hold is not None:
                out += self.board.fire(app, Trigger.ACK_HOLD if hold else Trigger.ACK_RETRIEVE, now)
        return out
