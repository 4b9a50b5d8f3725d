"""The two client transaction machines of RFC 3261 section 17.1 (INVITE 17.1.1 with the
RFC 6026 Accepted state, non-INVITE 17.1.2) and the ACK and CANCEL a client builds.

Each machine is a state enum plus one transition table ``(state, input) -> (step, target)``;
the code only carries out the step (see :mod:`scaserver.sip.transaction`).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Final, assert_never

import attrs

from scaserver.sip.actions import Action, Deliver, Send
from scaserver.sip.errors import ProtocolStateError
from scaserver.sip.headers import cseq
from scaserver.sip.keys import ClientKey
from scaserver.sip.message import Headers, Peer, Request, Response
from scaserver.sip.timers import TimerConfig, TimerLedger, TimerName
from scaserver.sip.transaction import (
    ResponseReceived,
    TransactionTerminated,
    TransactionTimedOut,
    TransportFailed,
    response_class,
)

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


# ============================================== INVITE client (17.1.1, RFC 6026)


class IctState(enum.Enum):
    __hash__ = object.__hash__  # members are singletons: identity hash in C, not Enum.__hash__

    CALLING = "Calling"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    ACCEPTED = "Accepted"
    TERMINATED = "Terminated"


class IctInput(enum.Enum):
    __hash__ = object.__hash__  # members are singletons: identity hash in C, not Enum.__hash__

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


@attrs.define
class InviteClientTransaction:
    """RFC 3261 section 17.1.1 with RFC 6026 section 8.4 (the Accepted state and timer M).

    ``request`` is the INVITE while it may be retransmitted or cancelled (Calling,
    Proceeding), None once a final response came or the transaction ended: timers D and M
    keep a settled transaction for 32 s on UDP, and the INVITE kept would be a dozen objects
    more per call for the garbage collector to scan (the transaction user has it)."""

    key: ClientKey
    request: Request | None
    peer: Peer
    reliable: bool
    timers: TimerConfig
    state: IctState = IctState.CALLING
    interval: float = 0.0  # current timer A interval
    ack: Request | None = None
    _armed: TimerLedger = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._armed = TimerLedger(self.key)

    @property
    def terminated(self) -> bool:
        return self.state is IctState.TERMINATED

    @property
    def settled(self) -> bool:
        """A final response arrived: the transaction only waits out its timers (D, M)."""
        return self.state is IctState.COMPLETED or self.state is IctState.ACCEPTED

    def start(self) -> list[Action]:
        """Send the INVITE; arm timer A (unreliable transports only) and timer B."""
        send = self._send_request()
        if self.reliable:
            return [send, self._armed.start(TimerName.B, self.timers.timeout)]
        self.interval = self.timers.t1
        return [send, *self._armed.start_both(TimerName.A, self.interval, TimerName.B, self.timers.timeout)]

    def on_response(self, response: Response) -> list[Action]:
        inputs = (IctInput.PROVISIONAL, IctInput.SUCCESS, IctInput.FAILURE)
        return self._apply(inputs[response_class(response.status) - 1], response)

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
                actions += [self._send_request(), self._armed.start(TimerName.A, self.interval)]
            case IctStep.PROCEED:
                assert response is not None
                actions += [*self._armed.cancel(TimerName.A, TimerName.B), self._up(response)]
            case IctStep.PASS_UP:
                assert response is not None
                actions.append(self._up(response))
            case IctStep.COMPLETE:
                assert response is not None and self.request is not None
                self.ack = build_ack(self.request, response)
                self.request = None
                actions += self._armed.cancel(TimerName.A, TimerName.B)
                actions += [
                    Send(self.ack, self.peer),
                    self._armed.start(TimerName.D, self.timers.timer_d(self.reliable)),
                    self._up(response),
                ]
            case IctStep.ACCEPT:
                assert response is not None
                self.request = None
                actions = self._armed.replace(TimerName.A, TimerName.B, TimerName.M, self.timers.timeout)
                actions.append(self._up(response))
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

    def _send_request(self) -> Send:
        assert self.request is not None  # Calling keeps the INVITE
        return Send(self.request, self.peer)


# ============================================================ non-INVITE client (17.1.2)


class NictState(enum.Enum):
    __hash__ = object.__hash__  # members are singletons: identity hash in C, not Enum.__hash__

    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    TERMINATED = "Terminated"


class NictInput(enum.Enum):
    __hash__ = object.__hash__  # members are singletons: identity hash in C, not Enum.__hash__

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
    """RFC 3261 section 17.1.2.

    ``request`` is the request while it may be retransmitted (Trying, Proceeding), None once
    a final response came or the transaction ended: timer K keeps a completed transaction for
    T4 on UDP, and under a burst of NOTIFYs (a restart's, a fan-out's) tens of thousands wait
    it out; each request kept there was about 4 KB of memory (bench/RESULTS.md)."""

    key: ClientKey
    request: Request | None
    peer: Peer
    reliable: bool
    timers: TimerConfig
    state: NictState = NictState.TRYING
    interval: float = 0.0  # current timer E interval
    _armed: TimerLedger = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._armed = TimerLedger(self.key)

    @property
    def terminated(self) -> bool:
        return self.state is NictState.TERMINATED

    @property
    def settled(self) -> bool:
        """A final response arrived: the transaction only waits out timer K."""
        return self.state is NictState.COMPLETED

    def start(self) -> list[Action]:
        """Send the request; arm timer E (unreliable transports only) and timer F."""
        send = self._send_request()
        if self.reliable:
            return [send, self._armed.start(TimerName.F, self.timers.timeout)]
        self.interval = self.timers.t1
        return [send, *self._armed.start_both(TimerName.E, self.interval, TimerName.F, self.timers.timeout)]

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
                actions += [self._send_request(), self._armed.start(TimerName.E, self.interval)]
            case NictStep.PASS_UP:
                assert response is not None
                actions.append(Deliver(ResponseReceived(response, self.key)))
            case NictStep.COMPLETE:
                assert response is not None
                self.request = None
                actions = self._armed.replace(
                    TimerName.E, TimerName.F, TimerName.K, self.timers.timer_k(self.reliable)
                )
                actions.append(Deliver(ResponseReceived(response, self.key)))
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

    def _send_request(self) -> Send:
        assert self.request is not None  # Trying and Proceeding keep the request
        return Send(self.request, self.peer)


ClientTransaction = InviteClientTransaction | NonInviteClientTransaction
