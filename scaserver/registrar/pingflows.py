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

_OnFlow = dict[BindingKey, Binding]
"""The pingable bindings on one flow, in the order they came onto it (a dict keeps that order
and takes one out in constant time: all the bindings behind an SBC or a proxy without Path,
tens of thousands, share one flow)."""


def _pingable(binding: Binding) -> bool:
    return binding.received.transport is Transport.UDP and not binding.path


@attrs.define
class PingFlows:
    """The pingable flows, by turn of a ping interval cut into ``slots`` turns."""

    slots: int = SLOTS
    _turns: list[dict[Peer, _OnFlow]] = attrs.field(init=False)
    _nat: Counter[Transport] = attrs.field(init=False, factory=Counter)
    # The keys of the bindings behind NAT (those counted in _nat).
    _behind: set[BindingKey] = attrs.field(init=False, factory=set)
    # The pingable bindings behind NAT, by flow: the one a turn names without ``ping_all``.
    _behind_on_flow: dict[Peer, _OnFlow] = attrs.field(init=False, factory=dict)

    def __attrs_post_init__(self) -> None:
        self._turns = [{} for _ in range(self.slots)]

    def add(self, binding: Binding) -> None:
        """``binding`` is stored (new, or replacing the one with its key, which
        :meth:`discard` took out first)."""
        pingable = _pingable(binding)
        if behind_nat(binding):
            self._behind.add(binding.key)
            self._nat[binding.received.transport] += 1
            if pingable:
                self._behind_on_flow.setdefault(binding.received, {})[binding.key] = binding
        if pingable:
            flow = binding.received
            turn = self._turns[ping_slot(flow, self.slots)]
            on_flow = turn.get(flow)
            if on_flow is None:
                turn[flow] = {binding.key: binding}
            else:
                on_flow[binding.key] = binding

    def discard(self, binding: Binding) -> None:
        """``binding`` is no longer stored (removed, expired, replaced by a refresh)."""
        key, flow = binding.key, binding.received
        if key in self._behind:
            self._behind.discard(key)
            self._nat[flow.transport] -= 1
            _take(self._behind_on_flow, flow, key)
        if _pingable(binding):
            _take(self._turns[ping_slot(flow, self.slots)], flow, key)

    def replace(self, previous: Binding, binding: Binding) -> None:
        """``binding`` replaces ``previous`` (same key) at the same place: the same Contact,
        flow and Path, so the same turn and the same NAT verdict (the usual refresh)."""
        flow = binding.received
        if flow.transport is Transport.UDP and not binding.path:  # _pingable(binding)
            key = binding.key
            turn = self._turns[ping_slot(flow, self.slots)]
            for on_flow in (turn.get(flow), self._behind_on_flow.get(flow)):
                if on_flow is not None and key in on_flow:
                    on_flow[key] = binding  # keeps its place in the order

    def targets(self, slot: int, *, ping_all: bool) -> dict[Peer, Binding]:
        """The flows of turn ``slot`` to ping, each with one binding on it (the
        :func:`~scaserver.registrar.nat.ping_targets` of this turn, without a walk)."""
        found: dict[Peer, Binding] = {}
        behind_on_flow = self._behind_on_flow
        for flow, on_flow in self._turns[slot].items():
            named = on_flow if ping_all else behind_on_flow.get(flow)
            if named:
                found[flow] = next(iter(named.values()))
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


def _take(table: dict[Peer, _OnFlow], flow: Peer, key: BindingKey) -> None:
    """Take binding ``key`` off ``flow`` in ``table``, and the flow with its last binding."""
    on_flow = table.get(flow)
    if on_flow is not None and on_flow.pop(key, None) is not None and not on_flow:
        del table[flow]
