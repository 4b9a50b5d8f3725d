"""When to push, and how push bindings live and die (push-and-parking.md sections 4.4, 4.5,
5.3 dedup and 6.1 step 2).

Push knows nothing of the registrar's types (engines are peers): the dispatcher describes
each binding of an AoR as a :class:`DevicePush` (its opaque ``binding`` id is the registrar's
binding key) and applies the decisions returned here.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable, Iterable, Sequence
from typing import Final

import attrs

from scaserver.push.pnparams import Keepalive, PushCoordinates, token_hash
from scaserver.sip.actions import Fact

REFRESH_PUSH_TIMER: Final = "push-reg-refresh"
DORMANT_TIMER: Final = "push-dormant"
RETENTION_TIMER: Final = "push-retention"


@attrs.frozen
class PushPolicySettings:
    """``push.refresh_trigger`` (4.5 ``wake``), ``push.extend_max_age`` (4.5 ``extend``),
    ``parking.fresh_window`` and ``parking.ring_open_flows`` (6.1 step 2); seconds."""

    refresh_trigger: float = 120.0
    extend_max_age: float = 7 * 24 * 3600.0
    fresh_window: float = 0.0
    ring_open_flows: bool = True


@attrs.frozen
class DevicePush:
    """The push view of one binding (section 4.3).

    ``binding`` is the registrar's binding key (opaque here); ``expires_at`` the expiry the
    device asked for; ``confirmed_at`` the time of its last confirmation (3.3.2, 3.3.3).
    """

    binding: Hashable
    aor: str
    coordinates: PushCoordinates
    confirmed_at: float
    expires_at: float
    push_capable: bool = True
    invalidated_at: float | None = None
    last_push_at: float | None = None
    last_wake_ms: int | None = None

    @property
    def token(self) -> tuple[str, str]:
        return self.coordinates.token

    def dormant(self, now: float) -> bool:
        """An ``extend`` binding past its requested expiry: pushed, never rung directly (4.5)."""
        return self.coordinates.keepalive is Keepalive.EXTEND and now >= self.expires_at

    def retained_until(self, settings: PushPolicySettings) -> float:
        """When the binding really ends: its expiry, or for a push-capable ``extend`` binding
        ``extend_max_age`` after its last confirmation (4.5), whichever is later."""
        if self.coordinates.keepalive is Keepalive.EXTEND and self.push_capable:
            return max(self.expires_at, self.confirmed_at + settings.extend_max_age)
        return self.expires_at

    def alive(self, now: float, settings: PushPolicySettings) -> bool:
        return now < self.retained_until(settings)


@attrs.frozen
class TokenInvalidated(Fact):
    """``push.token_invalidated`` (section 4.4): the provider declared ``prid`` dead at ``at``."""

    provider: str
    prid: str = attrs.field(repr=lambda prid: token_hash(prid)[:12])
    at: float


@attrs.frozen
class Invalidation:
    """What section 4.4 decides for a token invalidated at ``at``.

    ``updated``: bindings confirmed before ``at`` that lose their push capability;
    ``removed``: the dormant ``extend`` bindings among them (reachable only by push), to be
    removed with ``reason="token-invalid"``; ``kept``: bindings of that token confirmed at or
    after ``at`` (race R13).
    """

    event: TokenInvalidated
    updated: tuple[DevicePush, ...]
    removed: tuple[Hashable, ...]
    kept: tuple[Hashable, ...]


def invalidate(
    devices: Iterable[DevicePush], provider: str, prid: str, at: float, now: float
) -> Invalidation:
    """Section 4.4 for every binding carrying (provider, prid)."""
    updated: list[DevicePush] = []
    removed: list[Hashable] = []
    kept: list[Hashable] = []
    for device in devices:
        if device.token != (provider, prid):
            continue
        if device.confirmed_at >= at:
            kept.append(device.binding)
            continue
        if not device.push_capable:
            continue
        if device.dormant(now):
            removed.append(device.binding)
        else:
            updated.append(attrs.evolve(device, push_capable=False, invalidated_at=at))
    return Invalidation(TokenInvalidated(provider, prid, at), tuple(updated), tuple(removed), tuple(kept))


class Role(enum.Enum):
    """How a binding takes part in a call (section 6.1 step 2)."""

    DIRECT = "direct"  # a branch only
    PUSH = "push"  # a push only
    BOTH = "both"  # a push and a branch (open TCP/TLS flow, ring_open_flows)
    NONE = "none"  # expired, not usable


def call_role(
    device: DevicePush | None,
    *,
    expires_at: float,
    flow_open: bool,
    now: float,
    settings: PushPolicySettings,
) -> Role:
    """Section 6.1 step 2 for one binding; ``device`` None means not push-capable at all.

    Expired non-push bindings take no part (race R22); dormant ``extend`` bindings are pushed.
    """
    if device is None or not device.push_capable:
        return Role.DIRECT if now < expires_at else Role.NONE
    if not device.alive(now, settings):
        return Role.NONE
    dormant = device.dormant(now)
    if not dormant and settings.fresh_window > 0 and now - device.confirmed_at <= settings.fresh_window:
        return Role.DIRECT
    if not dormant and flow_open and settings.ring_open_flows:
        return Role.BOTH
    return Role.PUSH


def call_push_targets(devices: Sequence[DevicePush]) -> tuple[PushCoordinates, ...]:
    """One ``call`` push per distinct (provider, prid) (section 5.3 dedup, race R15), in the
    order the devices are given."""
    seen: set[tuple[str, str]] = set()
    targets: list[PushCoordinates] = []
    for device in devices:
        if device.push_capable and device.token not in seen:
            seen.add(device.token)
            targets.append(device.coordinates)
    return tuple(targets)


@attrs.frozen
class KeepalivePlan:
    """Absolute times of the keep-alive steps of one binding (section 4.5); None: no such step.

    ``refresh_push_at``: send a ``reg-refresh`` push (``wake``, device without
    ``+sip.pnsreg``); ``dormant_at``: an ``extend`` binding stops getting direct branches;
    ``remove_at``: the binding ends.
    """

    refresh_push_at: float | None
    dormant_at: float | None
    remove_at: float


def keepalive_plan(device: DevicePush, settings: PushPolicySettings) -> KeepalivePlan:
    """The keep-alive schedule of a push binding after a confirmation (section 4.5)."""
    remove_at = device.retained_until(settings)
    if not device.push_capable:
        return KeepalivePlan(None, None, remove_at)
    if device.coordinates.keepalive is Keepalive.EXTEND:
        return KeepalivePlan(None, device.expires_at, remove_at)
    if device.coordinates.pnsreg:
        return KeepalivePlan(None, None, remove_at)
    refresh_at = max(device.confirmed_at, device.expires_at - settings.refresh_trigger)
    return KeepalivePlan(refresh_at, None, remove_at)


@attrs.define
class RefreshLimiter:
    """At most one ``reg-refresh`` push per token per ``refresh_trigger`` window (5.3)."""

    window: float
    _last: dict[tuple[str, str], float] = attrs.field(factory=dict)

    def allow(self, token: tuple[str, str], now: float) -> bool:
        last = self._last.get(token)
        if last is not None and now - last < self.window:
            return False
        self._last[token] = now
        return True

    def forget(self, token: tuple[str, str]) -> None:
        self._last.pop(token, None)

    def prune(self, now: float) -> None:
        """Drop entries whose window has passed (keeps the table bounded)."""
        for token in [token for token, last in self._last.items() if now - last >= self.window]:
            del self._last[token]
