"""The UDP flows that NAT pings keep open, indexed by the turn they are pinged in.

:func:`~scaserver.registrar.nat.ping_targets` answers "which flows does this turn ping?" by
walking every binding; :class:`PingFlows` keeps the answer up to date instead, as the
location service stores and drops bindings (registration, refresh, removal, expiry, flow
failure, restore), so that a turn costs in proportion to the flows of that turn, not to all
bindings.  The same rules: a UDP flow without a Path, pinged when a binding on it is behind
NAT (:func:`~scaserver.registrar.nat.behind_nat`) or, with ``ping_all``, whatever its
bindings; each flow in one turn of the interval (:func:`~scaserver.registrar.nat.ping_slot`)
with one binding on it for the OPTIONS Request-URI: the one that has been on the flow the
longest (among those behind NAT, without ``ping_all``).

It also counts the bindings behind NAT by the transport of their flow (the metrics read it),
so a scrape walks no binding either.
"""

from __future__ import annotations

from collections import Counter

import attrs

from scaserver.registrar.binding import Binding, BindingKey
from scaserver.registrar.nat import SLOTS, behind_nat, ping_slot
from scaserver.sip.message import Peer, Transport

_OnFlow = list[Binding]
"""The pingable bindings on one flow, in the order they came (a list: a flow has one or a few,
and a list of one is a third of the memory of a dict of one)."""


def _pingable(binding: Binding) -> bool:
    return binding.received.transport is Transport.UDP and not binding.path


def _position(on_flow: _OnFlow | None, key: BindingKey) -> int | None:
    for index, binding in enumerate(on_flow or ()):
        if binding.key == key:
            return index
    return None


@attrs.define
class PingFlows:
    """The pingable flows, by turn of a ping interval cut into ``slots`` turns."""

    slots: int = SLOTS
    _turns: list[dict[Peer, _OnFlow]] = attrs.field(init=False)
    _nat: Counter[Transport] = attrs.field(init=False, factory=Counter)
    # The keys of the bindings behind NAT (those counted in _nat).
    _behind: set[BindingKey] = attrs.field(init=False, factory=set)

    def __attrs_post_init__(self) -> None:
        self._turns = [{} for _ in range(self.slots)]

    def add(self, binding: Binding) -> None:
        """``binding`` is stored (new, or replacing the one with its key, which
        :meth:`discard` took out first)."""
        if behind_nat(binding):
            self._behind.add(binding.key)
            self._nat[binding.received.transport] += 1
        if _pingable(binding):
            flow = binding.received
            turn = self._turns[ping_slot(flow, self.slots)]
            on_flow = turn.get(flow)
            if on_flow is None:
                turn[flow] = [binding]
            else:
                on_flow.append(binding)

    def discard(self, binding: Binding) -> None:
        """``binding`` is no longer stored (removed, expired, replaced by a refresh)."""
        if binding.key in self._behind:
            self._behind.discard(binding.key)
            self._nat[binding.received.transport] -= 1
        if _pingable(binding):
            flow = binding.received
            turn = self._turns[ping_slot(flow, self.slots)]
            on_flow = turn.get(flow)
            index = _position(on_flow, binding.key)
            if on_flow is not None and index is not None:
                del on_flow[index]
                if not on_flow:
                    del turn[flow]

    def replace(self, previous: Binding, binding: Binding) -> None:
        """``binding`` replaces ``previous`` (same key) at the same place: the same Contact,
        flow and Path, so the same turn and the same NAT verdict (the usual refresh)."""
        if _pingable(binding):
            on_flow = self._turns[ping_slot(binding.received, self.slots)].get(binding.received)
            index = _position(on_flow, binding.key)
            if on_flow is not None and index is not None:
                on_flow[index] = binding

    def targets(self, slot: int, *, ping_all: bool) -> dict[Peer, Binding]:
        """The flows of turn ``slot`` to ping, each with one binding on it (the
        :func:`~scaserver.registrar.nat.ping_targets` of this turn, without a walk)."""
        found: dict[Peer, Binding] = {}
        behind = self._behind
        for flow, on_flow in self._turns[slot].items():
            for binding in on_flow:
                if ping_all or binding.key in behind:
                    found[flow] = binding
                    break
        return found

    def use_slots(self, slots: int) -> None:
        """Cut the interval into ``slots`` turns (the pinger's); the flows are dealt again."""
        if slots == self.slots:
            return
        flows = [item for turn in self._turns for item in turn.items()]
        self.slots = slots
        self._turns = [{} for _ in range(slots)]
        for flow, on_flow in flows:
            self._turns[ping_slot(flow, slots)][flow] = on_flow

    def flows_in(self, slot: int) -> int:
        """How many pingable flows turn ``slot`` holds (NAT or not)."""
        return len(self._turns[slot])

    def nat_bindings(self) -> dict[str, int]:
        """Bindings behind NAT now, by the transport of their flow."""
        return {transport.value.lower(): self._nat[transport] for transport in Transport}
