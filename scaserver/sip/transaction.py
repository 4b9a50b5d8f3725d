"""The four transaction state machines of RFC 3261 section 17, with the RFC 6026 corrections.

Each machine is a state enum plus one transition table ``(state, input) ->
(step, target)``; the code only carries out the step.  Machines do no I/O and
read no clock: every method returns the actions the caller must run (send,
arm or cancel a timer, deliver an event to the transaction user).

Inputs from the network or from timers that the table does not list for the
current state are absorbed (a retransmission, a late message), and so is a
timer the machine has not armed (one it cancelled that fired anyway).
Inputs from our own transaction user that the table does not list raise
:class:`~scaserver.sip.errors.ProtocolStateError`: that is a bug.

Timer keys are the transaction keys (frozen values); timer names are
:class:`~scaserver.sip.timers.TimerName` values.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Final, assert_never

import attrs

from scaserver.sip.actions import Action, CancelTimer, Deliver, Send, StartTimer
from scaserver.sip.errors import ProtocolStateError
from scaserver.sip.headers import cseq
from scaserver.sip.keys import ClientKey, ServerKey, TransactionKey
from scaserver.sip.message import Headers, Peer, Request, Response
from scaserver.sip.responses import make_response
from scaserver.sip.timers import TimerConfig, TimerName

# ------------------------------------------------------------------------ events


@attrs.frozen
class RequestReceived:
    """A new request created server transaction ``key``; answer it with ``respond(key, ...)``."""

    request: Request
    peer: Peer
    key: ServerKey


@attrs.frozen
class AckReceived:
    """An ACK for a 2xx (RFC 3261 section 13.3.1.4 and RFC 6026 section 8.7): a request of
    its own that belongs to the dialog, not to the INVITE transaction."""

    request: Request
    peer: Peer


@attrs.frozen
class CancelReceived:
    """A CANCEL created server transaction ``key`` (RFC 3261 section 9.2).

    ``invite_key`` is the INVITE server transaction it matches, or None: the TU
    answers the CANCEL itself (200, or 481 without a match) and, when the INVITE
    is still unanswered, answers the INVITE with 487.
    """

    cancel: Request
    peer: Peer
    key: ServerKey
    invite_key: ServerKey | None


@attrs.frozen
class ResponseReceived:
    """A response for client transaction ``key`` that the transaction user must see."""

    response: Response
    key: ClientKey


@attrs.frozen
class StrayResponse:
    """A response that matches no client transaction (RFC 3261 section 18.1.2 hands it to
    the core: a stateful proxy forwards a stray 2xx to INVITE, section 16.7)."""

    response: Response
    peer: Peer


@attrs.frozen
class TransactionTimedOut:
    """Timer B or F fired on a client transaction (no final response: the TU treats it as a
    408, RFC 3261 section 8.1.3.1), or timer H on an INVITE server transaction (the ACK for
    our non-2xx final response never came)."""

    key: TransactionKey


@attrs.frozen
class TransportFailed:
    """The transport reported a failure for this transaction (RFC 3261 sections 17.1.4 and
    17.2.4): a client TU treats it as a 503 (section 8.1.3.1)."""

    key: TransactionKey


@attrs.frozen
class TransactionTerminated:
    """The transaction reached the Terminated state and is gone."""

    key: TransactionKey


TransactionEvent = (
    RequestReceived
    | AckReceived
    | CancelReceived
    | ResponseReceived
    | StrayResponse
    | TransactionTimedOut
    | TransportFailed
    | TransactionTerminated
)
"""What the transaction layer hands its transaction user (``Deliver(event)``)."""


# -------------------------------------------------------------- message builders


def build_ack(request: Request, response: Response) -> Request:
    """The ACK for a non-2xx final response to ``request`` (RFC 3261 section 17.1.1.3).

    Same Request-URI, Call-ID and From as the INVITE, the To of the response (with
    its tag), the CSeq number of the INVITE with method ACK, one Via equal to the
    INVITE's top Via, and the INVITE's Route header fields.
    """
    fields: list[tuple[str, str]] = []
    top_via = request.headers.first_value("Via")
    if top_via is not None:
        fields.append(("Via", top_via))
    fields.extend(("Route", value) for value in request.headers.lines("Route"))
    fields.append(("Max-Forwards", "70"))
    for name, source in (("From", request.headers), ("To", response.headers), ("Call-ID", request.headers)):
        value = source.get(name)
        if value is not None:
            fields.append((name, value))
    fields.append(("CSeq", f"{cseq(request).number} ACK"))
    return Request("ACK", request.uri, Headers.of(*fields))


def build_cancel(invite: Request) -> Request:
    """The CANCEL for a pending INVITE we sent (RFC 3261 section 9.1).

    Request-URI, Call-ID, To, From and the CSeq number equal the INVITE's, the
    CSeq method is CANCEL, the single Via is the INVITE's top Via (so the CANCEL
    travels through the same branch), and the INVITE's Route header fields are kept.
    """
    fields: list[tuple[str, str]] = []
    top_via = invite.headers.first_value("Via")
    if top_via is not None:
        fields.append(("Via", top_via))
    fields.extend(("Route", value) for value in invite.headers.lines("Route"))
    fields.append(("Max-Forwards", "70"))
    for name in ("From", "To", "Call-ID"):
        value = invite.headers.get(name)
        if value is not None:
            fields.append((name, value))
    fields.append(("CSeq", f"{cseq(invite).number} CANCEL"))
    return Request("CANCEL", invite.uri, Headers.of(*fields))


# ------------------------------------------------------------------ timer ledger


@attrs.define
class _Timers:
    """Which timers a machine has armed, so that leaving a state cancels what is pending."""

    key: TransactionKey
    armed: set[TimerName] = attrs.Factory(set)

    def start(self, name: TimerName, delay: float) -> StartTimer:
        self.armed.add(name)
        return StartTimer(self.key, name, delay)

    def cancel(self, *names: TimerName) -> list[Action]:
        cancelled: list[Action] = []
        for name in names:
            if name in self.armed:
                self.armed.discard(name)
                cancelled.append(CancelTimer(self.key, name))
        return cancelled

    def cancel_all(self) -> list[Action]:
        return self.cancel(*(name for name in TimerName if name in self.armed))

    def fired(self, name: TimerName) -> bool:
        """Disarm ``name``; False when it was not armed (cancelled, yet it fired: a race)."""
        if name not in self.armed:
            return False
        self.armed.discard(name)
        return True


# ============================================== INVITE client (17.1.1, RFC 6026)


class IctState(enum.Enum):
    CALLING = "Calling"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    ACCEPTED = "Accepted"
    TERMINATED = "Terminated"


class IctInput(enum.Enum):
    PROVISIONAL = "1xx"
    SUCCESS = "2xx"
    FAILURE = "300-699"
    TIMER_A = "timer A"
    TIMER_B = "timer B"
    TIMER_D = "timer D"
    TIMER_M = "timer M"
    TRANSPORT_ERROR = "transport error"


class IctStep(enum.Enum):
    RETRANSMIT = "retransmit the INVITE, double timer A"
    PROCEED = "stop timers A and B, pass the response up"
    PASS_UP = "pass the response up"
    COMPLETE = "send ACK, start timer D, pass the response up"
    ACCEPT = "start timer M, pass the 2xx up"
    RESEND_ACK = "retransmit the ACK"
    TIME_OUT = "inform the TU of the time-out"
    FAIL = "inform the TU of the transport failure"
    TERMINATE = "terminate"
    ABSORB = "absorb"


ICT_TRANSITIONS: Final[Mapping[tuple[IctState, IctInput], tuple[IctStep, IctState]]] = {
    (IctState.CALLING, IctInput.TIMER_A): (IctStep.RETRANSMIT, IctState.CALLING),
    (IctState.CALLING, IctInput.TIMER_B): (IctStep.TIME_OUT, IctState.TERMINATED),
    (IctState.CALLING, IctInput.PROVISIONAL): (IctStep.PROCEED, IctState.PROCEEDING),
    (IctState.CALLING, IctInput.SUCCESS): (IctStep.ACCEPT, IctState.ACCEPTED),
    (IctState.CALLING, IctInput.FAILURE): (IctStep.COMPLETE, IctState.COMPLETED),
    (IctState.CALLING, IctInput.TRANSPORT_ERROR): (IctStep.FAIL, IctState.TERMINATED),
    (IctState.PROCEEDING, IctInput.PROVISIONAL): (IctStep.PASS_UP, IctState.PROCEEDING),
    (IctState.PROCEEDING, IctInput.SUCCESS): (IctStep.ACCEPT, IctState.ACCEPTED),
    (IctState.PROCEEDING, IctInput.FAILURE): (IctStep.COMPLETE, IctState.COMPLETED),
    (IctState.PROCEEDING, IctInput.TRANSPORT_ERROR): (IctStep.FAIL, IctState.TERMINATED),
    # RFC 3261 section 9.1: 64*T1 after our CANCEL without a final response, the INVITE gives up.
    (IctState.PROCEEDING, IctInput.TIMER_B): (IctStep.TIME_OUT, IctState.TERMINATED),
    (IctState.COMPLETED, IctInput.PROVISIONAL): (IctStep.ABSORB, IctState.COMPLETED),
    (IctState.COMPLETED, IctInput.SUCCESS): (IctStep.ABSORB, IctState.COMPLETED),
    (IctState.COMPLETED, IctInput.FAILURE): (IctStep.RESEND_ACK, IctState.COMPLETED),
    (IctState.COMPLETED, IctInput.TIMER_D): (IctStep.TERMINATE, IctState.TERMINATED),
    (IctState.COMPLETED, IctInput.TRANSPORT_ERROR): (IctStep.FAIL, IctState.TERMINATED),
    # RFC 6026 section 7.2: every 2xx (retransmission or another fork) goes up; the TU ACKs it.
    (IctState.ACCEPTED, IctInput.PROVISIONAL): (IctStep.ABSORB, IctState.ACCEPTED),
    (IctState.ACCEPTED, IctInput.SUCCESS): (IctStep.PASS_UP, IctState.ACCEPTED),
    (IctState.ACCEPTED, IctInput.FAILURE): (IctStep.ABSORB, IctState.ACCEPTED),
    (IctState.ACCEPTED, IctInput.TIMER_M): (IctStep.TERMINATE, IctState.TERMINATED),
    (IctState.ACCEPTED, IctInput.TRANSPORT_ERROR): (IctStep.ABSORB, IctState.ACCEPTED),
}

_ICT_TIMER_INPUTS: Final = {
    TimerName.A: IctInput.TIMER_A,
    TimerName.B: IctInput.TIMER_B,
    TimerName.D: IctInput.TIMER_D,
    TimerName.M: IctInput.TIMER_M,
}


def _response_class(status: int) -> int:
    return 1 if status < 200 else 2 if status < 300 else 3


@attrs.define
class InviteClientTransaction:
    """RFC 3261 section 17.1.1 with RFC 6026 section 8.4 (the Accepted state and timer M)."""

    key: ClientKey
    request: Request
    peer: Peer
    reliable: bool
    timers: TimerConfig
    state: IctState = IctState.CALLING
    interval: float = 0.0  # current timer A interval
    ack: Request | None = None
    _armed: _Timers = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._armed = _Timers(self.key)

    @property
    def terminated(self) -> bool:
        return self.state is IctState.TERMINATED

    def start(self) -> list[Action]:
        """Send the INVITE; arm timer A (unreliable transports only) and timer B."""
        actions: list[Action] = [Send(self.request, self.peer)]
        if not self.reliable:
            self.interval = self.timers.t1
            actions.append(self._armed.start(TimerName.A, self.interval))
        actions.append(self._armed.start(TimerName.B, self.timers.timeout))
        return actions

    def on_response(self, response: Response) -> list[Action]:
        inputs = (IctInput.PROVISIONAL, IctInput.SUCCESS, IctInput.FAILURE)
        return self._apply(inputs[_response_class(response.status) - 1], response)

    def on_timer(self, name: TimerName) -> list[Action]:
        timer_input = _ICT_TIMER_INPUTS.get(name)
        if timer_input is None or not self._armed.fired(name):
            return []
        return self._apply(timer_input, None)

    def on_transport_error(self) -> list[Action]:
        return self._apply(IctInput.TRANSPORT_ERROR, None)

    def on_cancel_sent(self) -> list[Action]:
        """A CANCEL for this INVITE went out (RFC 3261 section 9.1): re-arm timer B, so that
        without a final response 64*T1 later the transaction times out."""
        if self.state is not IctState.PROCEEDING:
            raise ProtocolStateError(f"INVITE client transaction {self.key}: CANCEL in {self.state.value}")
        return [self._armed.start(TimerName.B, self.timers.timeout)]

    def _apply(self, given: IctInput, response: Response | None) -> list[Action]:
        row = ICT_TRANSITIONS.get((self.state, given))
        if row is None:
            return []  # a late timer or a message after termination
        step, self.state = row
        actions: list[Action] = []
        match step:
            case IctStep.RETRANSMIT:
                self.interval *= 2
                actions += [Send(self.request, self.peer), self._armed.start(TimerName.A, self.interval)]
            case IctStep.PROCEED:
                assert response is not None
                actions += [*self._armed.cancel(TimerName.A, TimerName.B), self._up(response)]
            case IctStep.PASS_UP:
                assert response is not None
                actions.append(self._up(response))
            case IctStep.COMPLETE:
                assert response is not None
                self.ack = build_ack(self.request, response)
                actions += self._armed.cancel(TimerName.A, TimerName.B)
                actions += [
                    Send(self.ack, self.peer),
                    self._armed.start(TimerName.D, self.timers.timer_d(self.reliable)),
                    self._up(response),
                ]
            case IctStep.ACCEPT:
                assert response is not None
                actions += self._armed.cancel(TimerName.A, TimerName.B)
                actions += [self._armed.start(TimerName.M, self.timers.timeout), self._up(response)]
            case IctStep.RESEND_ACK:
                assert self.ack is not None
                actions.append(Send(self.ack, self.peer))
            case IctStep.TIME_OUT:
                actions += [*self._armed.cancel_all(), Deliver(TransactionTimedOut(self.key))]
                actions.append(Deliver(TransactionTerminated(self.key)))
            case IctStep.FAIL:
                actions += [*self._armed.cancel_all(), Deliver(TransportFailed(self.key))]
                actions.append(Deliver(TransactionTerminated(self.key)))
            case IctStep.TERMINATE:
                actions += [*self._armed.cancel_all(), Deliver(TransactionTerminated(self.key))]
            case IctStep.ABSORB:
                pass
            case _:
                assert_never(step)
        return actions

    def _up(self, response: Response) -> Deliver:
        return Deliver(ResponseReceived(response, self.key))


# ============================================================ non-INVITE client (17.1.2)


class NictState(enum.Enum):
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    TERMINATED = "Terminated"


class NictInput(enum.Enum):
    PROVISIONAL = "1xx"
    FINAL = "200-699"
    TIMER_E = "timer E"
    TIMER_F = "timer F"
    TIMER_K = "timer K"
    TRANSPORT_ERROR = "transport error"


class NictStep(enum.Enum):
    RETRANSMIT = "retransmit the request, timer E = min(2E, T2)"
    RETRANSMIT_AT_T2 = "retransmit the request, timer E = T2"
    PASS_UP = "pass the response up"
    COMPLETE = "stop timers E and F, start timer K, pass the response up"
    TIME_OUT = "inform the TU of the time-out"
    FAIL = "inform the TU of the transport failure"
    TERMINATE = "terminate"
    ABSORB = "absorb"


NICT_TRANSITIONS: Final[Mapping[tuple[NictState, NictInput], tuple[NictStep, NictState]]] = {
    (NictState.TRYING, NictInput.TIMER_E): (NictStep.RETRANSMIT, NictState.TRYING),
    (NictState.TRYING, NictInput.TIMER_F): (NictStep.TIME_OUT, NictState.TERMINATED),
    (NictState.TRYING, NictInput.PROVISIONAL): (NictStep.PASS_UP, NictState.PROCEEDING),
    (NictState.TRYING, NictInput.FINAL): (NictStep.COMPLETE, NictState.COMPLETED),
    (NictState.TRYING, NictInput.TRANSPORT_ERROR): (NictStep.FAIL, NictState.TERMINATED),
    (NictState.PROCEEDING, NictInput.TIMER_E): (NictStep.RETRANSMIT_AT_T2, NictState.PROCEEDING),
    (NictState.PROCEEDING, NictInput.TIMER_F): (NictStep.TIME_OUT, NictState.TERMINATED),
    (NictState.PROCEEDING, NictInput.PROVISIONAL): (NictStep.PASS_UP, NictState.PROCEEDING),
    (NictState.PROCEEDING, NictInput.FINAL): (NictStep.COMPLETE, NictState.COMPLETED),
    (NictState.PROCEEDING, NictInput.TRANSPORT_ERROR): (NictStep.FAIL, NictState.TERMINATED),
    (NictState.COMPLETED, NictInput.PROVISIONAL): (NictStep.ABSORB, NictState.COMPLETED),
    (NictState.COMPLETED, NictInput.FINAL): (NictStep.ABSORB, NictState.COMPLETED),
    (NictState.COMPLETED, NictInput.TIMER_K): (NictStep.TERMINATE, NictState.TERMINATED),
    (NictState.COMPLETED, NictInput.TRANSPORT_ERROR): (NictStep.ABSORB, NictState.COMPLETED),
}

_NICT_TIMER_INPUTS: Final = {
    TimerName.E: NictInput.TIMER_E,
    TimerName.F: NictInput.TIMER_F,
    TimerName.K: NictInput.TIMER_K,
}


@attrs.define
class NonInviteClientTransaction:
    """RFC 3261 section 17.1.2."""

    key: ClientKey
    request: Request
    peer: Peer
    reliable: bool
    timers: TimerConfig
    state: NictState = NictState.TRYING
    interval: float = 0.0  # current timer E interval
    _armed: _Timers = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._armed = _Timers(self.key)

    @property
    def terminated(self) -> bool:
        return self.state is NictState.TERMINATED

    def start(self) -> list[Action]:
        """Send the request; arm timer E (unreliable transports only) and timer F."""
        actions: list[Action] = [Send(self.request, self.peer)]
        if not self.reliable:
            self.interval = self.timers.t1
            actions.append(self._armed.start(TimerName.E, self.interval))
        actions.append(self._armed.start(TimerName.F, self.timers.timeout))
        return actions

    def on_response(self, response: Response) -> list[Action]:
        given = NictInput.PROVISIONAL if response.status < 200 else NictInput.FINAL
        return self._apply(given, response)

    def on_timer(self, name: TimerName) -> list[Action]:
        timer_input = _NICT_TIMER_INPUTS.get(name)
        if timer_input is None or not self._armed.fired(name):
            return []
        return self._apply(timer_input, None)

    def on_transport_error(self) -> list[Action]:
        return self._apply(NictInput.TRANSPORT_ERROR, None)

    def _apply(self, given: NictInput, response: Response | None) -> list[Action]:
        row = NICT_TRANSITIONS.get((self.state, given))
        if row is None:
            return []
        step, self.state = row
        actions: list[Action] = []
        match step:
            case NictStep.RETRANSMIT | NictStep.RETRANSMIT_AT_T2:
                doubled = min(2 * self.interval, self.timers.t2)
                self.interval = doubled if step is NictStep.RETRANSMIT else self.timers.t2
                actions += [Send(self.request, self.peer), self._armed.start(TimerName.E, self.interval)]
            case NictStep.PASS_UP:
                assert response is not None
                actions.append(Deliver(ResponseReceived(response, self.key)))
            case NictStep.COMPLETE:
                assert response is not None
                actions += self._armed.cancel(TimerName.E, TimerName.F)
                actions += [
                    self._armed.start(TimerName.K, self.timers.timer_k(self.reliable)),
                    Deliver(ResponseReceived(response, self.key)),
                ]
            case NictStep.TIME_OUT:
                actions += [*self._armed.cancel_all(), Deliver(TransactionTimedOut(self.key))]
                actions.append(Deliver(TransactionTerminated(self.key)))
            case NictStep.FAIL:
                actions += [*self._armed.cancel_all(), Deliver(TransportFailed(self.key))]
                actions.append(Deliver(TransactionTerminated(self.key)))
            case NictStep.TERMINATE:
                actions += [*self._armed.cancel_all(), Deliver(TransactionTerminated(self.key))]
            case NictStep.ABSORB:
                pass
            case _:
                assert_never(step)
        return actions


# ============================================== INVITE server (17.2.1, RFC 6026)


class IstState(enum.Enum):
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"
    TERMINATED = "Terminated"


class IstInput(enum.Enum):
    RETRANSMISSION = "INVITE retransmission"
    ACK = "ACK"
    TU_PROVISIONAL = "1xx from TU"
    TU_SUCCESS = "2xx from TU"
    TU_FAILURE = "300-699 from TU"
    TIMER_TRYING = "200 ms without a TU response"
    TIMER_G = "timer G"
    TIMER_H = "timer H"
    TIMER_I = "timer I"
    TIMER_L = "timer L"
    TRANSPORT_ERROR = "transport error"


class IstStep(enum.Enum):
    SEND_TRYING = "send 100 Trying"
    RESEND = "resend the last response"
    SEND_PROVISIONAL = "send the provisional response"
    ACCEPT = "send the 2xx, start timer L"
    SEND_SUCCESS = "send the 2xx retransmission"
    COMPLETE = "send the final response, start timers G and H"
    RETRANSMIT = "resend the final response, timer G = min(2G, T2)"
    CONFIRM = "stop timers G and H, start timer I"
    PASS_ACK_UP = "pass the ACK up"
    TIME_OUT = "inform the TU that no ACK came"
    FAIL = "inform the TU of the transport failure"
    TERMINATE = "terminate"
    ABSORB = "absorb"
    DISCARD = "discard the TU's response"


IST_TRANSITIONS: Final[Mapping[tuple[IstState, IstInput], tuple[IstStep, IstState]]] = {
    (IstState.PROCEEDING, IstInput.TIMER_TRYING): (IstStep.SEND_TRYING, IstState.PROCEEDING),
    (IstState.PROCEEDING, IstInput.RETRANSMISSION): (IstStep.RESEND, IstState.PROCEEDING),
    (IstState.PROCEEDING, IstInput.ACK): (IstStep.ABSORB, IstState.PROCEEDING),
    (IstState.PROCEEDING, IstInput.TU_PROVISIONAL): (IstStep.SEND_PROVISIONAL, IstState.PROCEEDING),
    (IstState.PROCEEDING, IstInput.TU_SUCCESS): (IstStep.ACCEPT, IstState.ACCEPTED),
    (IstState.PROCEEDING, IstInput.TU_FAILURE): (IstStep.COMPLETE, IstState.COMPLETED),
    (IstState.PROCEEDING, IstInput.TRANSPORT_ERROR): (IstStep.FAIL, IstState.TERMINATED),
    (IstState.COMPLETED, IstInput.RETRANSMISSION): (IstStep.RESEND, IstState.COMPLETED),
    (IstState.COMPLETED, IstInput.TIMER_G): (IstStep.RETRANSMIT, IstState.COMPLETED),
    (IstState.COMPLETED, IstInput.ACK): (IstStep.CONFIRM, IstState.CONFIRMED),
    (IstState.COMPLETED, IstInput.TIMER_H): (IstStep.TIME_OUT, IstState.TERMINATED),
    (IstState.COMPLETED, IstInput.TU_FAILURE): (IstStep.DISCARD, IstState.COMPLETED),
    (IstState.COMPLETED, IstInput.TRANSPORT_ERROR): (IstStep.FAIL, IstState.TERMINATED),
    (IstState.CONFIRMED, IstInput.RETRANSMISSION): (IstStep.ABSORB, IstState.CONFIRMED),
    (IstState.CONFIRMED, IstInput.ACK): (IstStep.ABSORB, IstState.CONFIRMED),
    (IstState.CONFIRMED, IstInput.TU_FAILURE): (IstStep.DISCARD, IstState.CONFIRMED),
    (IstState.CONFIRMED, IstInput.TIMER_I): (IstStep.TERMINATE, IstState.TERMINATED),
    (IstState.CONFIRMED, IstInput.TRANSPORT_ERROR): (IstStep.ABSORB, IstState.CONFIRMED),
    # RFC 6026 section 7.1: retransmitted INVITEs are absorbed, ACKs go up, 2xx retransmissions
    # from the TU go out.
    (IstState.ACCEPTED, IstInput.RETRANSMISSION): (IstStep.ABSORB, IstState.ACCEPTED),
    (IstState.ACCEPTED, IstInput.ACK): (IstStep.PASS_ACK_UP, IstState.ACCEPTED),
    (IstState.ACCEPTED, IstInput.TU_SUCCESS): (IstStep.SEND_SUCCESS, IstState.ACCEPTED),
    (IstState.ACCEPTED, IstInput.TIMER_L): (IstStep.TERMINATE, IstState.TERMINATED),
    (IstState.ACCEPTED, IstInput.TRANSPORT_ERROR): (IstStep.ABSORB, IstState.ACCEPTED),
}

_IST_TIMER_INPUTS: Final = {
    TimerName.TRYING_100: IstInput.TIMER_TRYING,
    TimerName.G: IstInput.TIMER_G,
    TimerName.H: IstInput.TIMER_H,
    TimerName.I: IstInput.TIMER_I,
    TimerName.L: IstInput.TIMER_L,
}


@attrs.define
class InviteServerTransaction:
    """RFC 3261 section 17.2.1 with RFC 6026 section 8.5 (the Accepted state and timer L)."""

    key: ServerKey
    request: Request
    peer: Peer  # where responses go (18.2.2)
    reliable: bool
    timers: TimerConfig
    state: IstState = IstState.PROCEEDING
    last_response: Response | None = None
    interval: float = 0.0  # current timer G interval
    _armed: _Timers = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._armed = _Timers(self.key)

    @property
    def terminated(self) -> bool:
        return self.state is IstState.TERMINATED

    def start(self) -> list[Action]:
        """Arm the 100 Trying timer: the TU has ``trying_delay`` to answer first (17.2.1)."""
        return [self._armed.start(TimerName.TRYING_100, self.timers.trying_delay)]

    def on_request_retransmission(self) -> list[Action]:
        return self._apply(IstInput.RETRANSMISSION, None, None)

    def on_ack(self, ack: Request, peer: Peer) -> list[Action]:
        return self._apply(IstInput.ACK, None, AckReceived(ack, peer))

    def on_response_from_tu(self, response: Response) -> list[Action]:
        given = (IstInput.TU_PROVISIONAL, IstInput.TU_SUCCESS, IstInput.TU_FAILURE)[
            _response_class(response.status) - 1
        ]
        if (self.state, given) not in IST_TRANSITIONS:
            raise ProtocolStateError(
                f"INVITE server transaction {self.key}: {response.status} from the TU in {self.state.value}"
            )
        return self._apply(given, response, None)

    def on_timer(self, name: TimerName) -> list[Action]:
        timer_input = _IST_TIMER_INPUTS.get(name)
        if timer_input is None or not self._armed.fired(name):
            return []
        return self._apply(timer_input, None, None)

    def on_transport_error(self) -> list[Action]:
        return self._apply(IstInput.TRANSPORT_ERROR, None, None)

    def _apply(self, given: IstInput, response: Response | None, ack: AckReceived | None) -> list[Action]:
        row = IST_TRANSITIONS.get((self.state, given))
        if row is None:
            return []
        step, self.state = row
        actions: list[Action] = []
        match step:
            case IstStep.SEND_TRYING:
                if self.last_response is None:
                    self.last_response = make_response(self.request, 100)
                    actions.append(Send(self.last_response, self.peer))
            case IstStep.RESEND:
                if self.last_response is not None:
                    actions.append(Send(self.last_response, self.peer))
            case IstStep.SEND_PROVISIONAL | IstStep.SEND_SUCCESS:
                assert response is not None
                self.last_response = response
                actions += [*self._armed.cancel(TimerName.TRYING_100), Send(response, self.peer)]
            case IstStep.ACCEPT:
                assert response is not None
                self.last_response = response
                actions += self._armed.cancel(TimerName.TRYING_100)
                actions += [Send(response, self.peer), self._armed.start(TimerName.L, self.timers.timeout)]
            case IstStep.COMPLETE:
                assert response is not None
                self.last_response = response
                actions += [*self._armed.cancel(TimerName.TRYING_100), Send(response, self.peer)]
                if not self.reliable:
                    self.interval = self.timers.t1
                    actions.append(self._armed.start(TimerName.G, self.interval))
                actions.append(self._armed.start(TimerName.H, self.timers.timeout))
            case IstStep.RETRANSMIT:
                assert self.last_response is not None
                self.interval = min(2 * self.interval, self.timers.t2)
                actions.append(Send(self.last_response, self.peer))
                actions.append(self._armed.start(TimerName.G, self.interval))
            case IstStep.CONFIRM:
                actions += self._armed.cancel(TimerName.G, TimerName.H)
                actions.append(self._armed.start(TimerName.I, self.timers.timer_i(self.reliable)))
            case IstStep.PASS_ACK_UP:
                assert ack is not None
                actions.append(Deliver(ack))
            case IstStep.TIME_OUT:
                actions += [*self._armed.cancel_all(), Deliver(TransactionTimedOut(self.key))]
                actions.append(Deliver(TransactionTerminated(self.key)))
            case IstStep.FAIL:
                actions += [*self._armed.cancel_all(), Deliver(TransportFailed(self.key))]
                actions.append(Deliver(TransactionTerminated(self.key)))
            case IstStep.TERMINATE:
                actions += [*self._armed.cancel_all(), Deliver(TransactionTerminated(self.key))]
            case IstStep.ABSORB | IstStep.DISCARD:
                pass
            case _:
                assert_never(step)
        return actions


# ============================================================ non-INVITE server (17.2.2)


class NistState(enum.Enum):
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    TERMINATED = "Terminated"


class NistInput(enum.Enum):
    RETRANSMISSION = "request retransmission"
    TU_PROVISIONAL = "1xx from TU"
    TU_FINAL = "200-699 from TU"
    TIMER_J = "timer J"
    TRANSPORT_ERROR = "transport error"


class NistStep(enum.Enum):
    RESEND = "resend the last response"
    SEND_PROVISIONAL = "send the provisional response"
    COMPLETE = "send the final response, start timer J"
    FAIL = "inform the TU of the transport failure"
    TERMINATE = "terminate"
    ABSORB = "absorb"
    DISCARD = "discard the TU's response"


NIST_TRANSITIONS: Final[Mapping[tuple[NistState, NistInput], tuple[NistStep, NistState]]] = {
    (NistState.TRYING, NistInput.RETRANSMISSION): (NistStep.ABSORB, NistState.TRYING),
    (NistState.TRYING, NistInput.TU_PROVISIONAL): (NistStep.SEND_PROVISIONAL, NistState.PROCEEDING),
    (NistState.TRYING, NistInput.TU_FINAL): (NistStep.COMPLETE, NistState.COMPLETED),
    (NistState.TRYING, NistInput.TRANSPORT_ERROR): (NistStep.FAIL, NistState.TERMINATED),
    (NistState.PROCEEDING, NistInput.RETRANSMISSION): (NistStep.RESEND, NistState.PROCEEDING),
    (NistState.PROCEEDING, NistInput.TU_PROVISIONAL): (NistStep.SEND_PROVISIONAL, NistState.PROCEEDING),
    (NistState.PROCEEDING, NistInput.TU_FINAL): (NistStep.COMPLETE, NistState.COMPLETED),
    (NistState.PROCEEDING, NistInput.TRANSPORT_ERROR): (NistStep.FAIL, NistState.TERMINATED),
    (NistState.COMPLETED, NistInput.RETRANSMISSION): (NistStep.RESEND, NistState.COMPLETED),
    (NistState.COMPLETED, NistInput.TU_FINAL): (NistStep.DISCARD, NistState.COMPLETED),
    (NistState.COMPLETED, NistInput.TIMER_J): (NistStep.TERMINATE, NistState.TERMINATED),
    (NistState.COMPLETED, NistInput.TRANSPORT_ERROR): (NistStep.FAIL, NistState.TERMINATED),
}


@attrs.define
class NonInviteServerTransaction:
    """RFC 3261 section 17.2.2."""

    key: ServerKey
    request: Request
    peer: Peer  # where responses go (18.2.2)
    reliable: bool
    timers: TimerConfig
    state: NistState = NistState.TRYING
    last_response: Response | None = None
    _armed: _Timers = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._armed = _Timers(self.key)

    @property
    def terminated(self) -> bool:
        return self.state is NistState.TERMINATED

    def start(self) -> list[Action]:
        return []

    def on_request_retransmission(self) -> list[Action]:
        return self._apply(NistInput.RETRANSMISSION, None)

    def on_response_from_tu(self, response: Response) -> list[Action]:
        given = NistInput.TU_PROVISIONAL if response.status < 200 else NistInput.TU_FINAL
        if (self.state, given) not in NIST_TRANSITIONS:
            raise ProtocolStateError(
                f"non-INVITE server transaction {self.key}: {response.status} from the TU in "
                f"{self.state.value}"
            )
        return self._apply(given, response)

    def on_timer(self, name: TimerName) -> list[Action]:
        if name is not TimerName.J or not self._armed.fired(name):
            return []
        return self._apply(NistInput.TIMER_J, None)

    def on_transport_error(self) -> list[Action]:
        return self._apply(NistInput.TRANSPORT_ERROR, None)

    def _apply(self, given: NistInput, response: Response | None) -> list[Action]:
        row = NIST_TRANSITIONS.get((self.state, given))
        if row is None:
            return []
        step, self.state = row
        actions: list[Action] = []
        match step:
            case NistStep.RESEND:
                if self.last_response is not None:
                    actions.append(Send(self.last_response, self.peer))
            case NistStep.SEND_PROVISIONAL:
                assert response is not None
                self.last_response = response
                actions.append(Send(response, self.peer))
            case NistStep.COMPLETE:
                assert response is not None
                self.last_response = response
                actions += [
                    Send(response, self.peer),
                    self._armed.start(TimerName.J, self.timers.timer_j(self.reliable)),
                ]
            case NistStep.FAIL:
                actions += [*self._armed.cancel_all(), Deliver(TransportFailed(self.key))]
                actions.append(Deliver(TransactionTerminated(self.key)))
            case NistStep.TERMINATE:
                actions += [*self._armed.cancel_all(), Deliver(TransactionTerminated(self.key))]
            case NistStep.ABSORB | NistStep.DISCARD:
                pass
            case _:
                assert_never(step)
        return actions


ClientTransaction = InviteClientTransaction | NonInviteClientTransaction
ServerTransaction = InviteServerTransaction | NonInviteServerTransaction
