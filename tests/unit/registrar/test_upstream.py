"""The transition table of the upstream registration (push-and-parking.md 3.5): every
allowed transition enters the state written here, every other (state, input) is refused."""

from __future__ import annotations

import itertools
from typing import Final

import pytest

from scaserver.registrar.upstream import UPSTREAM_TRANSITIONS, UpstreamInput, UpstreamState, next_state
from scaserver.sip.errors import ProtocolStateError

S, In = UpstreamState, UpstreamInput

#: The state each input leads to, from each state that accepts it.
ALLOWED: Final = {
    (S.IDLE, In.SENT): S.REGISTERING,
    (S.REJECTED, In.SENT): S.REGISTERING,
    (S.REGISTERING, In.SENT): S.REGISTERING,
    (S.REGISTERED, In.SENT): S.REGISTERED,
    (S.RETRYING, In.SENT): S.RETRYING,
    (S.LOST, In.SENT): S.LOST,
    **{(state, In.ACCEPTED): S.REGISTERED for state in (S.REGISTERING, S.REGISTERED, S.RETRYING, S.LOST)},
    **{(state, In.REMOVED): S.IDLE for state in (S.REGISTERING, S.REGISTERED, S.RETRYING, S.LOST)},
    **{(state, In.REFUSED): S.REJECTED for state in (S.REGISTERING, S.REGISTERED, S.RETRYING, S.LOST)},
    **{(state, In.FAILED): S.RETRYING for state in (S.REGISTERING, S.REGISTERED, S.RETRYING, S.LOST)},
    **{(state, In.LAPSED): S.LOST for state in (S.REGISTERING, S.REGISTERED, S.RETRYING, S.LOST)},
    (S.REGISTERED, In.EXPIRED): S.LOST,
    (S.RETRYING, In.EXPIRED): S.LOST,
}

REFUSED: Final = sorted(
    (pair for pair in itertools.product(UpstreamState, UpstreamInput) if pair not in ALLOWED),
    key=lambda pair: (pair[0].value, pair[1].value),
)


def test_the_table_is_exactly_the_allowed_transitions() -> None:
    assert UPSTREAM_TRANSITIONS == ALLOWED


@pytest.mark.parametrize(("state", "given"), list(ALLOWED), ids=lambda v: v.value)
def test_an_allowed_transition_enters_its_state(state: UpstreamState, given: UpstreamInput) -> None:
    assert next_state("sip:alice@example.com", state, given) is ALLOWED[state, given]


@pytest.mark.parametrize(("state", "given"), REFUSED, ids=lambda v: v.value)
def test_a_transition_outside_the_table_is_our_bug(state: UpstreamState, given: UpstreamInput) -> None:
    with pytest.raises(ProtocolStateError, match=f"sip:alice@example.com: {given.value} in {state.value}"):
        next_state("sip:alice@example.com", state, given)


def test_no_answer_is_taken_in_a_state_without_a_register_in_flight() -> None:
    answers = (In.ACCEPTED, In.REMOVED, In.REFUSED, In.FAILED, In.LAPSED, In.EXPIRED)
    assert [(s, i) for s in (S.IDLE, S.REJECTED) for i in answers if (s, i) in UPSTREAM_TRANSITIONS] == []
