"""What the router is handed with ``Deliver`` is told apart by type: transaction-layer events
go to the transaction user, instructions to the part that carries them out (never onto the
bus), and the rest is a fact for the bus.  An instruction nobody carries out is our own bug."""

from __future__ import annotations

import attrs
import pytest

from scaserver.parking.instructions import ReleaseCall
from scaserver.proxy.context import BranchKey, CancelBranch
from scaserver.router.facts import TransactionCompleted
from scaserver.sip.actions import Deliver, Instruction
from scaserver.sip.errors import ProtocolStateError
from scaserver.sip.keys import ServerKey
from tests.builders import make_core

INVITE_TX = ServerKey("z9hG4bK-invite", "192.0.2.7", 5060, "INVITE")


@attrs.frozen
class Unheard(Instruction):
    """An instruction of a part the router does not know."""

    detail: str


def test_an_instruction_nobody_carries_out_raises_instead_of_landing_on_the_bus() -> None:
    with pytest.raises(ProtocolStateError, match="nobody carries out"):
        make_core().run([Deliver(Unheard("lost"))], 0.0)


def test_a_parking_instruction_without_push_and_parking_raises() -> None:
    with pytest.raises(ProtocolStateError, match="without push"):
        make_core().run([Deliver(ReleaseCall(INVITE_TX, None))], 0.0)


def test_a_cancel_of_a_branch_without_a_transaction_is_carried_out_and_never_published() -> None:
    branch = BranchKey(INVITE_TX, 0, "hash")
    assert make_core().run([Deliver(CancelBranch(branch))], 0.0) == []


def test_a_fact_no_part_reacts_to_is_published() -> None:
    fact = TransactionCompleted("invite-client", "2xx")
    assert make_core().run([Deliver(fact)], 0.0) == [Deliver(fact)]
