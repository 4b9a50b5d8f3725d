"""The device push registry (push-and-parking.md 4.3): the push state of every binding we
push for, by the registrar's binding key (opaque here).

The registry records confirmations, pushes sent and wake-ups observed, and applies a token's
invalidation (4.4); what a binding's push state means for calls is :mod:`scaserver.push.policy`'s.
"""

from __future__ import annotations

from collections.abc import Hashable

import attrs

from scaserver.push.pnparams import PushCoordinates
from scaserver.push.policy import DevicePush, Invalidation, invalidate

__all__ = ["DeviceRegistry"]


@attrs.define
class DeviceRegistry:
    _devices: dict[Hashable, DevicePush] = attrs.field(factory=dict)

    def get(self, key: Hashable) -> DevicePush | None:
        return self._devices.get(key)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._devices

    def all(self) -> tuple[DevicePush, ...]:
        return tuple(self._devices.values())

    def put(self, device: DevicePush) -> None:
        """A binding's push state as it stands (a registration to the core registrar, a restart)."""
        self._devices[device.binding] = device

    def confirmed(
        self, key: Hashable, aor: str, coordinates: PushCoordinates, confirmed_at: float, expires_at: float
    ) -> None:
        """A confirmed REGISTER with push coordinates (3.3.2, 3.3.3): the last push and wake-up
        are kept while the token stays the same."""
        before = self._devices.get(key)
        same_token = before is not None and before.token == coordinates.token
        self._devices[key] = DevicePush(
            key,
            aor,
            coordinates,
            confirmed_at,
            expires_at,
            last_push_at=before.last_push_at if before is not None and same_token else None,
            last_wake_ms=before.last_wake_ms if before is not None and same_token else None,
        )

    def reconfirmed(self, key: Hashable, confirmed_at: float, expires_at: float) -> None:
        """A confirmation without new coordinates (an absorbed refresh) of a binding we push for."""
        device = self._devices.get(key)
        if device is not None:
            self._devices[key] = attrs.evolve(device, confirmed_at=confirmed_at, expires_at=expires_at)

    def forget(self, key: Hashable) -> bool:
        """The binding is no longer pushed for; whether it was."""
        return self._devices.pop(key, None) is not None

    def pushed(self, key: Hashable, now: float) -> None:
        """A push went to the binding's device (4.3 ``last_push_at``)."""
        device = self._devices.get(key)
        if device is not None:
            self._devices[key] = attrs.evolve(device, last_push_at=now)

    def woke(self, key: Hashable, latency_ms: int | None) -> None:
        """A push woke the binding's device (4.3 ``last_wake_ms``)."""
        device = self._devices.get(key)
        if device is not None:
            self._devices[key] = attrs.evolve(device, last_wake_ms=latency_ms)

    def invalidate(self, provider: str, prid: str, at: float, now: float) -> Invalidation:
        """Section 4.4 for the token (provider, prid) declared dead at ``at``: the bindings
        confirmed before lose their push capability; the verdict says which must go."""
        verdict = invalidate(self._devices.values(), provider, prid, at, now)
        for device in verdict.updated:
            self._devices[device.binding] = device
        return verdict
