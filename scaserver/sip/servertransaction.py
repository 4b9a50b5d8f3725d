"""The two server transaction machines of RFC 3261 section 17.2 (INVITE 17.2.1 with the
RFC 6026 Accepted state, non-INVITE 17.2.2).

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
from scaserver.sip.keys import ServerKey
from scaserver.sip.message import Headers, Peer, Request, Response
from scaserver.sip.responses import make_response
from scaserver.sip.timers import TimerConfig, TimerLedger, TimerName
from scaserver.sip.transaction import (
    AckReceived,
    TransactionTerminated,
    TransactionTimedOut,
    TransportFailed,
    response_class,
)

# ============================================== INVITE server (17.2.1, RFC 6026)


class IstState(enum.Enum):
    __hash__ = object.__hash__  # members are singletons: identity hash in C, not Enum.__hash__

    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"
    TERMINATED = "Terminated"


class IstInput(enum.Enum):
    __hash__ = object.__hash__  # members are singletons: identity hash in C, not Enum.__hash__

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
    _armed: TimerLedger = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._armed = TimerLedger(self.key)

    @property
    def terminated(self) -> bool:
        return self.state is IstState.TERMINATED

    @property
    def settled(self) -> bool:
        """The final response is sent: the transaction only absorbs retransmissions and
        waits for the ACK or its timers (G, H, I, L)."""
        return self.state is not IstState.PROCEEDING and self.state is not IstState.TERMINATED

    def start(self) -> list[Action]:
        """Arm the 100 Trying timer: the TU has ``trying_delay`` to answer first (17.2.1)."""
        return [self._armed.start(TimerName.TRYING_100, self.timers.trying_delay)]

    def on_request_retransmission(self) -> list[Action]:
        return self._apply(IstInput.RETRANSMISSION, None, None)

    def on_ack(self, ack: Request, peer: Peer) -> list[Action]:
        return self._apply(IstInput.ACK, None, AckReceived(ack, peer))

    def on_response_from_tu(self, response: Response) -> list[Action]:
        given = (IstInput.TU_PROVISIONAL, IstInput.TU_SUCCESS, IstInput.TU_FAILURE)[
            response_class(response.status) - 1
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
    __hash__ = object.__hash__  # members are singletons: identity hash in C, not Enum.__hash__

    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    TERMINATED = "Terminated"


class NistInput(enum.Enum):
    __hash__ = object.__hash__  # members are singletons: identity hash in C, not Enum.__hash__

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


KeptResponse = tuple[int, str, tuple[tuple[str, str], ...], bytes, str, str | None, str | None]
"""A response's fields, its headers' pairs among them: status, reason, header fields, body,
version, detail, cause."""


def kept_response(response: Response) -> KeptResponse:
    """``response`` as the plain tuple of its fields."""
    return (
        response.status,
        response.reason,
        response.headers.fields,
        response.body,
        response.version,
        response.detail,
        response.cause,
    )


@attrs.define
class NonInviteServerTransaction:
    """RFC 3261 section 17.2.2.

    It keeps no request: the transaction user has it from ``RequestReceived``, and a
    retransmission is matched by the key and answered with ``last_response``.  Timer J
    keeps a completed transaction for 32 s on UDP, so under load most of the live
    transactions are completed ones, and each request kept would be a dozen objects more
    for the garbage collector to scan (bench/RESULTS.md).  The last response is kept as the
    plain tuple of its fields (:data:`KeptResponse`), which the collector stops tracking
    after one pass, not as the Response and Headers it tracks until timer J."""

    key: ServerKey
    peer: Peer  # where responses go (18.2.2)
    reliable: bool
    timers: TimerConfig
    state: NistState = NistState.TRYING
    _kept: KeptResponse | None = attrs.field(default=None, init=False)
    _armed: TimerLedger = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._armed = TimerLedger(self.key)

    @property
    def last_response(self) -> Response | None:
        """The response retransmissions are answered with (equal to the one sent)."""
        kept = self._kept
        if kept is None:
            return None
        status, reason, fields, body, version, detail, cause = kept
        return Response(status, reason, Headers(fields), body, version, detail=detail, cause=cause)

    @property
    def terminated(self) -> bool:
        return self.state is NistState.TERMINATED

    @property
    def settled(self) -> bool:
        """The final response is sent: the transaction only answers retransmissions until
        timer J."""
        return self.state is NistState.COMPLETED

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
                last = self.last_response
                if last is not None:
                    actions.append(Send(last, self.peer))
            case NistStep.SEND_PROVISIONAL:
                assert response is not None
                self._kept = kept_response(response)
                actions.append(Send(response, self.peer))
            case NistStep.COMPLETE:
                assert response is not None
                self._kept = kept_response(response)
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


ServerTransaction = InviteServerTransaction | NonInviteServerTransaction
