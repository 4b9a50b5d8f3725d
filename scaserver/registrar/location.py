"""The location service: AoR -> bindings, in memory (RFC 3261 section 10.3 and 16.5).

Pure: every change returns the actions it implies.  Each binding has its own expiry timer,
keyed by its :class:`~scaserver.registrar.binding.BindingKey` and named :data:`EXPIRY_TIMER`;
re-arming on refresh replaces the previous timer (StartTimer semantics), so bindings expire
on time and nothing polls.  Persistence subscribes to the binding events.

The transport addresses the bindings are reached at (:attr:`Binding.reached_at`) are indexed
as they change, so "is anything registered at this address?" (relay rule R7) costs one
dictionary look-up, whatever the number of bindings; so are the UDP flows NAT pings keep open
(:class:`~scaserver.registrar.pingflows.PingFlows`), so that a ping turn walks no binding.

A push binding past its expiry may be kept *dormant* (push-and-parking.md 4.5): reached by
push only, it is no target and no counted contact, and stays apart from the live bindings
until a confirmation wakes it or its retention ends (:meth:`LocationService.retain`,
:meth:`LocationService.release`); who retains what is the push coordinator's decision.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import Final

import attrs

from scaserver.registrar.binding import (
    Binding,
    BindingAdded,
    BindingExpired,
    BindingKey,
    BindingRefreshed,
    BindingRemoved,
    RemovalReason,
    address_key,
)
from scaserver.registrar.pingflows import PingFlows
from scaserver.sip.actions import CancelTimer, Deliver, EngineAction, StartTimer
from scaserver.sip.message import Peer, Transport

EXPIRY_TIMER: Final = "binding-expiry"
_NONE: Final[Mapping[BindingKey, Binding]] = MappingProxyType({})


def _order(binding: Binding) -> tuple[float, float]:
    # Highest q first; among equal q the most recently refreshed first.
    return (-binding.sort_q, -binding.updated_at)


def _flow_key(flow: Peer) -> tuple[Transport, str, int]:
    """A flow as :func:`~scaserver.registrar.nat.same_flow` compares it: transport, host (any
    spelling) and port."""
    host, port = address_key(flow.host, flow.port)
    return flow.transport, host, port


@attrs.define
class ReachableAddresses:
    """How many bindings are reached at each transport address (:attr:`Binding.reached_at`):
    a count, so that one of two bindings at an address going away leaves it reachable."""

    _counts: dict[tuple[str, int], int] = attrs.field(factory=dict)

    def add(self, binding: Binding) -> None:
        for address in binding.reached_at:
            self._counts[address] = self._counts.get(address, 0) + 1

    def discard(self, binding: Binding) -> None:
        for address in binding.reached_at:
            left = self._counts.get(address, 0) - 1
            if left > 0:
                self._counts[address] = left
            else:
                self._counts.pop(address, None)

    def reaches(self, host: str, port: int) -> bool:
        """Whether some binding is reached at ``host:port`` (any case, IPv6 with or without
        brackets)."""
        return address_key(host, port) in self._counts

    def __len__(self) -> int:
        return len(self._counts)


@attrs.define
class LocationService:
    """Bindings per AoR; each AoR's bindings are indexed by key, and the addresses they are
    reached at by :class:`ReachableAddresses`."""

    _aors: dict[str, dict[BindingKey, Binding]] = attrs.field(factory=dict)
    _reachable: ReachableAddresses = attrs.field(factory=ReachableAddresses)
    # The UDP flows NAT pings keep open, by turn: kept with the bindings, read by the pinger.
    ping_flows: PingFlows = attrs.field(factory=PingFlows)
    # The keys of the bindings registered over each flow (their ``received``), in the order
    # they came (a dict: one flow may carry every binding behind an SBC, and a binding leaves
    # it in constant time): a failed flow finds its bindings without a walk.
    _on_flow: dict[tuple[Transport, str, int], dict[BindingKey, None]] = attrs.field(factory=dict)
    # Dormant bindings (push-and-parking.md 4.5): past their expiry, kept for push only; they
    # are no targets, no counted contacts and none of ``bindings``, ``aors`` or ``reaches``.
    _dormant: dict[str, dict[BindingKey, Binding]] = attrs.field(factory=dict)
    _dormant_reachable: ReachableAddresses = attrs.field(factory=ReachableAddresses)

    def reaches(self, host: str, port: int) -> bool:
        """Whether a binding (of any AoR) is reached at ``host:port``: its Contact address,
        the address it registered from or its first Path hop."""
        return self._reachable.reaches(host, port)

    def bindings(self, aor: str) -> tuple[Binding, ...]:
        """Every binding of ``aor`` (expired ones have been removed by their timers)."""
        return tuple(sorted(self._aors.get(aor, {}).values(), key=_order))

    def keyed(self, aor: str) -> Mapping[BindingKey, Binding]:
        """Every binding of ``aor`` by key, in the order they were first stored (read only:
        a view of the table, which the next change of the AoR changes)."""
        return self._aors.get(aor) or _NONE

    def lookup(self, aor: str, now: float) -> tuple[Binding, ...]:
        """The targets for the proxy: unexpired bindings of ``aor``, highest q first
        (RFC 3261 section 16.5/16.6 ordering by q)."""
        return tuple(binding for binding in self.bindings(aor) if binding.expires_at > now)

    def get(self, key: BindingKey) -> Binding | None:
        return self._aors.get(key.aor, {}).get(key)

    def aors(self) -> tuple[str, ...]:
        return tuple(self._aors)

    def all_bindings(self) -> Iterator[Binding]:
        for bindings in self._aors.values():
            yield from bindings.values()

    def on_flow(self, flow: Peer) -> list[Binding]:
        """The bindings registered over ``flow`` (same transport, host in any spelling and
        port), in the order they came onto it."""
        found: list[Binding] = []
        for key in self._on_flow.get(_flow_key(flow), ()):
            binding = self.get(key)
            if binding is not None:
                found.append(binding)
        return found

    def count(self, aor: str | None = None) -> int:
        if aor is not None:
            return len(self._aors.get(aor, {}))
        return sum(len(bindings) for bindings in self._aors.values())

    def __len__(self) -> int:
        return self.count()

    def put(self, binding: Binding, now: float) -> list[EngineAction]:
        """Insert or replace the binding with ``binding.key``; arm its expiry timer."""
        previous = self._store(binding)
        event: BindingAdded | BindingRefreshed = (
            BindingAdded(binding, now) if previous is None else BindingRefreshed(binding, previous, now)
        )
        return [
            StartTimer(binding.key, EXPIRY_TIMER, max(0.0, binding.expires_at - now)),
            Deliver(event),
        ]

    def remove(self, key: BindingKey, reason: RemovalReason, now: float) -> list[EngineAction]:
        """Remove one binding (de-registration or an operator); nothing if it is gone."""
        binding = self._pop(key)
        if binding is None:
            return []
        return [CancelTimer(key, EXPIRY_TIMER), Deliver(BindingRemoved(binding, reason, now))]

    def remove_aor(self, aor: str, reason: RemovalReason, now: float) -> list[EngineAction]:
        actions: list[EngineAction] = []
        for binding in self.bindings(aor):
            actions += self.remove(binding.key, reason, now)
        return actions

    def on_timer(self, key: BindingKey, name: str, now: float) -> list[EngineAction]:
        """An expiry timer fired: expire the binding, or re-arm if it was refreshed since."""
        if name != EXPIRY_TIMER:
            return []
        binding = self.get(key)
        if binding is None:
            return []  # removed meanwhile; the cancel lost the race
        if binding.expires_at > now:
            return [StartTimer(key, EXPIRY_TIMER, binding.expires_at - now)]
        self._pop(key)
        return [Deliver(BindingExpired(binding, now))]

    def restore(self, bindings: Iterable[Binding], now: float) -> list[EngineAction]:
        """Load bindings saved before a restart: live ones get their timers back (no events:
        nothing changed), ones that lapsed while we were down are reported expired."""
        actions: list[EngineAction] = []
        for binding in bindings:
            if binding.expires_at <= now:
                actions.append(Deliver(BindingExpired(binding, now)))
                continue
            self._store(binding)
            actions.append(StartTimer(binding.key, EXPIRY_TIMER, binding.expires_at - now))
        return actions

    def _store(self, binding: Binding) -> Binding | None:
        key = binding.key
        table = self._aors.setdefault(key.aor, {})
        previous = table.get(key)
        table[key] = binding
        # Reached at the same addresses and flow (Contact, source and Path alike: what the
        # indexes know of a binding), the usual refresh.
        if (
            previous is not None
            and previous.contact == binding.contact
            and previous.received == binding.received
            and previous.path == binding.path
        ):
            self.ping_flows.replace(previous, binding)
            return previous
        if previous is not None:
            self._reachable.discard(previous)
            self.ping_flows.discard(previous)
            self._leave_flow(previous)
        self._reachable.add(binding)
        self.ping_flows.add(binding)
        self._on_flow.setdefault(_flow_key(binding.received), {})[binding.key] = None
        return previous

    def _leave_flow(self, binding: Binding) -> None:
        flow = _flow_key(binding.received)
        keys = self._on_flow.get(flow)
        if keys is None:
            return
        keys.pop(binding.key, None)
        if not keys:
            del self._on_flow[flow]

    def _pop(self, key: BindingKey) -> Binding | None:
        table = self._aors.get(key.aor)
        if table is None:
            return None
        binding = table.pop(key, None)
        if binding is not None:
            self._reachable.discard(binding)
            self.ping_flows.discard(binding)
            self._leave_flow(binding)
        if not table:
            del self._aors[key.aor]
        return binding

    # ------------------------------------------------------------------ dormant bindings

    def retain(self, binding: Binding) -> None:
        """Keep an expired ``binding`` dormant: reached by push only, until :meth:`wake` (a
        confirmation) or :meth:`release` (its retention is over)."""
        table = self._dormant.setdefault(binding.aor, {})
        previous = table.get(binding.key)
        if previous is not None:
            self._dormant_reachable.discard(previous)
        table[binding.key] = binding
        self._dormant_reachable.add(binding)

    def release(self, key: BindingKey) -> Binding | None:
        """The dormant binding with ``key`` is dormant no more; it, or None if there was none."""
        table = self._dormant.get(key.aor)
        if table is None:
            return None
        binding = table.pop(key, None)
        if binding is not None:
            self._dormant_reachable.discard(binding)
        if not table:
            del self._dormant[key.aor]
        return binding

    def dormant(self, aor: str) -> tuple[Binding, ...]:
        """The dormant bindings of ``aor``: pushed for calls, never rung."""
        return tuple(self._dormant.get(aor, {}).values())

    def dormant_binding(self, key: BindingKey) -> Binding | None:
        return self._dormant.get(key.aor, {}).get(key)

    def dormant_aors(self) -> frozenset[str]:
        return frozenset(self._dormant)

    def reaches_dormant(self, host: str, port: int) -> bool:
        """Whether a dormant binding is reached at ``host:port``: it is still registered, so
        its dialogs' in-dialog requests may go there (relay rule R7)."""
        return self._dormant_reachable.reaches(host, port)

    def with_dormant(self, aor: str) -> tuple[Binding, ...]:
        """Every binding of ``aor``: live ones first (in :meth:`bindings` order), then dormant ones."""
        return self.bindings(aor) + self.dormant(aor)
