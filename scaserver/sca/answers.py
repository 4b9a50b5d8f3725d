"""Call tracking of the SCA engine, the responses: answers to a shared line's calls become
appearance triggers (sca.md sections 6.3, 6.4, 7.1).

:class:`AnswerTracker` is told of each response the proxy relays or generates to
a request of a call (and of a late 2xx forwarded statelessly) and runs the
matching trigger on the appearances that :class:`~scaserver.sca.calls.CallTracker`
set up: for an initial INVITE 18x O6/I2, 2xx O7/I3, 3xx O11, 401/407 O12, 487
O10, other failures O9/O13/I6; for a re-INVITE/UPDATE 2xx O17, failure O9b with
its rollback; 2xx to BYE O18.  Pure: every method takes ``now`` and returns its
actions.
"""

from __future__ import annotations

import attrs

from scaserver.sca.appearance import Appearance, AppearanceState, CallLeg, Role, Trigger, rollback_of
from scaserver.sca.calls import CallTracker, Side, address_text, call_info_of, first_contact, side
from scaserver.sca.line import canonical_aor
from scaserver.sip.actions import EngineAction
from scaserver.sip.errors import MalformedMessage
from scaserver.sip.headers import cseq, from_addr, to_addr
from scaserver.sip.message import Request, Response


@attrs.define
class AnswerTracker:
    """The responses of calls on shared lines, turned into appearance triggers."""

    calls: CallTracker

    def on_response_forwarded(
        self, request: Request, response: Response, now: float, *, local: bool = False
    ) -> list[EngineAction]:
        """A response the proxy relayed (or, ``local=True``, generated itself) to ``request``."""
        try:
            sender, target = from_addr(request), to_addr(request)
            answered = to_addr(response)
            number = cseq(response).number
        except MalformedMessage:
            return []
        call_id = request.call_id
        if not call_id or sender.tag is None:
            return []
        # A BYE's or an offer's answer is matched by the tags alone: the Side values (a URI
        # written out each) are built for an initial INVITE's answers only.
        status = response.status
        if request.method == "BYE":
            return self.calls.bye(call_id, sender.tag, target.tag, now) if 200 <= status < 300 else []
        if request.method in ("INVITE", "UPDATE") and target.tag is not None:
            return self._offer_answered(
                call_id, sender_tag=sender.tag, target_tag=target.tag, status=status, number=number, now=now
            )
        if request.method == "INVITE" and status > 100:
            return self._invite_answered(
                request,
                response=response,
                call_id=call_id,
                sender=side(sender),
                answered=side(answered),
                local=local,
                now=now,
            )
        return []

    def on_stray_answer(self, response: Response, now: float) -> list[EngineAction]:
        """A 2xx to an INVITE that matched no proxy transaction and was forwarded statelessly
        (RFC 6026 8.4): a late answer to a call whose transaction a restart lost (O7, I3).
        A retransmitted 2xx of a dialog already tracked changes nothing."""
        try:
            sender, answered = side(from_addr(response)), side(to_addr(response))
            method = cseq(response).method
        except MalformedMessage:
            return []
        call_id = response.call_id
        if not call_id or sender.tag is None or method != "INVITE" or not 200 <= response.status < 300:
            return []
        for app in self.calls.board.of_call(call_id):
            leg = app.leg
            if (
                leg is not None
                and leg.remote_tag is not None
                and leg.matches(call_id, sender.tag, answered.tag)
            ):
                return []
        return self._invite_answered(
            None, response=response, call_id=call_id, sender=sender, answered=answered, local=False, now=now
        )

    def _offer_answered(
        self,
        call_id: str,
        *,
        sender_tag: str | None,
        target_tag: str | None,
        status: int,
        number: int,
        now: float,
    ) -> list[EngineAction]:
        """The final response to a member's offer: O17 on 2xx, else O9b, rolled back when the
        failed offer is a re-INVITE that changed the appearance tentatively."""
        if status < 200:
            return []
        board = self.calls.board
        out: list[EngineAction] = []
        for app in board.of_call(call_id):
            if app.leg is None or not app.leg.matches(call_id, sender_tag, target_tag):
                continue
            pending = app.rollback if app.rollback is not None and app.rollback[1] == number else None
            if status < 300:
                out += board.fire(app, Trigger.REINVITE_ANSWERED, now, rollback=None)  # O17
            elif pending is None:
                out += board.fire(app, Trigger.REINVITE_FAILED, now)  # O9b
            else:
                trigger = rollback_of(pending[0])
                out += board.fire(app, trigger, now, rollback=None)
        return out

    def _invite_answered(
        self,
        request: Request | None,
        *,
        response: Response,
        call_id: str,
        sender: Side,
        answered: Side,
        local: bool,
        now: float,
    ) -> list[EngineAction]:
        status = response.status
        out: list[EngineAction] = []
        for app in self.calls.board.of_call(call_id):
            leg = app.leg
            if leg is None:
                continue
            if app.callee_pending and leg.remote_tag == sender.tag:
                out += self._far_end_answered(app, status=status, answered=answered, now=now)
            elif leg.role is Role.CALLER and leg.member_tag == sender.tag:
                out += self._caller_answered(app, response=response, answered=answered, local=local, now=now)
        out += self._callee_answered(
            request, response=response, call_id=call_id, sender=sender, answered=answered, now=now
        )
        return out

    def _far_end_answered(
        self, app: Appearance, *, status: int, answered: Side, now: float
    ) -> list[EngineAction]:
        """The far end answered the pickup that moved ``app`` (O19b): 2xx gives our member's tag
        in the new dialog; a failure puts ``app`` back on the replaced dialog (7.1)."""
        leg = app.leg
        assert leg is not None
        if 200 <= status < 300:
            new_leg = attrs.evolve(leg, member_tag=answered.tag)
            return self.calls.board.fire(
                app, Trigger.FAR_END_REPLACE_ANSWERED, now, leg=new_leg, previous=None
            )
        if status >= 300:
            return self.calls.restore_far_end(app, now)
        return []

    def _caller_answered(
        self, app: Appearance, *, response: Response, answered: Side, local: bool, now: float
    ) -> list[EngineAction]:
        """A response to a member's initial INVITE (6.3)."""
        leg = app.leg
        assert leg is not None
        if app.previous is not None and leg.remote_tag is None:  # the pickup INVITE (7.1)
            return self._pickup_answered(app, response=response, answered=answered, now=now)
        status = response.status
        board = self.calls.board
        if status < 200:
            step, out = board.step(app, Trigger.PROGRESS, now)  # O6
            return out + self.calls.end_seize(step.appearance, now) if step.changed_state else out
        if status < 300:
            if leg.remote_tag is not None and app.state is not AppearanceState.SEIZED:
                return []  # another branch's 2xx: the first one won
            step, out = board.step(
                app,
                Trigger.ANSWERED,
                now,
                leg=attrs.evolve(leg, remote_tag=answered.tag),
                remote_contact=first_contact(response),
                remote_uri=address_text(answered.display, answered.uri),
            )  # O7
            return out + self.calls.end_seize(step.appearance, now) if step.rule is not None else out
        if local and status >= 400 and status not in (401, 407, 487):
            step, out = board.step(app, Trigger.LOCAL_FAILURE, now)  # O13
            return out + self.calls.end_seize(app, now) if step.rule is not None else out
        return board.fire(app, _failure_trigger(status), now)

    def _pickup_answered(
        self, app: Appearance, *, response: Response, answered: Side, now: float
    ) -> list[EngineAction]:
        """The final response to a member's pickup INVITE (7.1): O19's call is taken, or back."""
        leg = app.leg
        assert leg is not None
        status = response.status
        if 200 <= status < 300:
            return self.calls.board.fire(
                app,
                Trigger.RETRIEVE_ANSWERED,
                now,
                leg=attrs.evolve(leg, remote_tag=answered.tag),
                remote_contact=first_contact(response) or app.remote_contact,
                previous=None,
            )
        if status >= 300:
            return self.calls.restore_pickup(app, now)
        return []

    def _callee_answered(
        self,
        request: Request | None,
        *,
        response: Response,
        call_id: str,
        sender: Side,
        answered: Side,
        now: float,
    ) -> list[EngineAction]:
        """The line is the callee (6.4): I2 on 18x, I3 on a member's 2xx, I6 on the final failure."""
        board = self.calls.board
        mine = [
            app
            for app in board.of_call(call_id)
            if app.leg is not None
            and app.leg.role is Role.CALLEE
            and app.leg.remote_tag == sender.tag
            and not app.callee_pending  # moved by a pickup on the far line (O19b), not ringing here
        ]
        alerting = [app for app in mine if app.leg is not None and app.leg.member_tag is None]
        status = response.status
        if not 200 <= status < 300:
            trigger = Trigger.MEMBER_RINGING if status < 200 else Trigger.INCOMING_ENDED
            out: list[EngineAction] = []
            for app in alerting:
                out += board.fire(app, trigger, now)
            return out
        if answered.tag is None or any(
            app.leg is not None and app.leg.member_tag == answered.tag for app in mine
        ):
            return []
        return self._member_answered(
            request,
            response=response,
            call_id=call_id,
            alerting=alerting,
            sender=sender,
            answered=answered,
            now=now,
        )

    def _member_answered(
        self,
        request: Request | None,
        *,
        response: Response,
        call_id: str,
        alerting: list[Appearance],
        sender: Side,
        answered: Side,
        now: float,
    ) -> list[EngineAction]:
        """I3: a member's 2xx to a call to its line takes the appearance that alerted for the
        call on that line, else a free one (the index of the 2xx's Call-Info when free)."""
        member = first_contact(response)
        line_aor = alerting[0].line if alerting else self.calls.side_line(answered.uri, member)
        if line_aor is None:
            return []
        caller = sender
        resolve = self.calls.resolve
        if resolve(canonical_aor(answered.uri)) == resolve(canonical_aor(caller.uri)):
            return []  # a call within the line (a pickup, an intercom): tracked on the caller side only
        info = call_info_of(response)
        wanted = info.index if info is not None and info.index is not None else 0
        reuse = next((app for app in alerting if app.line == line_aor), None)
        if reuse is None:
            free = self.calls.board.lowest_free(self.calls.line(line_aor), wanted)
            if free is None:
                return []
            reuse = Appearance(line_aor, free)
        assert answered.tag is not None
        return self.calls.board.fire(
            reuse,
            Trigger.MEMBER_ANSWERED,
            now,
            owner=member,
            leg=CallLeg(call_id, answered.tag, sender.tag, Role.CALLEE),
            remote_contact=(None if request is None else first_contact(request)) or reuse.remote_contact,
            remote_uri=address_text(caller.display, caller.uri),
        )  # I3: no NOTIFY until the ACK


def _failure_trigger(status: int) -> Trigger:
    """The trigger of a final non-2xx to a member's INVITE: O11, O12, O10, else O9."""
    if status < 400:
        return Trigger.REDIRECTED
    if status in (401, 407):
        return Trigger.CHALLENGED
    if status == 487:
        return Trigger.TERMINATED_487
    return Trigger.FAILED
