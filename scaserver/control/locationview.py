"""What the control plane and the metrics read of the registrar's location service of a running
core (rpc.md 3.3, push-and-parking.md 4.5), and the removals ``ul.rm`` asks of it; the edge
(``edge.controlplane.RegistrarLocationControl``) runs the actions those return."""

from __future__ import annotations

from collections.abc import Sequence

from scaserver.control.seams import AorRecord
from scaserver.control.views import canonical_argument, contact_info, usrloc_aor
from scaserver.registrar.binding import Binding, BindingKey, RemovalReason
from scaserver.router.router import SipRouter
from scaserver.sip.actions import EngineAction


class LocationView:
    """The reads of ``control.seams.LocationControl`` over the location service, dormant
    push-only bindings included (they show ``Expires: "expired"``)."""

    def __init__(self, core: SipRouter, *, default_domain: str) -> None:
        self._core = core
        self._domain = default_domain.lower()

    def _bindings(self, aor: str) -> tuple[Binding, ...]:
        """The AoR's bindings, dormant push-only ones included (push-and-parking.md 4.5)."""
        push = self._core.push
        return self._core.registrar.location.bindings(aor) if push is None else push.bindings_of(aor)

    def _record(self, aor: str, now: float) -> AorRecord | None:
        bindings = self._bindings(aor)
        if not bindings:
            return None
        push = self._core.push
        contacts = tuple(
            contact_info(b, None if push is None else push.device(b.key), now=now) for b in bindings
        )
        return AorRecord(aor=usrloc_aor(aor), contacts=contacts)

    def _remove(self, key: BindingKey, now: float) -> list[EngineAction]:
        """Remove one binding administratively; the actions that carries out the removal."""
        push = self._core.push
        if push is None:
            return self._core.registrar.location.remove(key, RemovalReason.ADMINISTRATIVE, now)
        return push.drop_binding(key, RemovalReason.ADMINISTRATIVE, now)

    def _dump(self, now: float) -> Sequence[AorRecord]:
        aors = set(self._core.registrar.location.aors())
        if self._core.push is not None:
            aors |= self._core.push.dormant_aors()
        records = (self._record(aor, now) for aor in sorted(aors))
        return [record for record in records if record is not None]

    def _lookup(self, aor: str, now: float) -> AorRecord | None:
        canonical = canonical_argument(aor, self._domain)
        return None if canonical is None else self._record(canonical, now)


class EngineRegistrarGauges:
    """``metrics.collectors.RegistrarGauges`` over the location service (dormant push-only bindings, which
    are not reachable, are not counted)."""

    def __init__(self, core: SipRouter) -> None:
        self._core = core

    def registered_contacts(self) -> int:
        return len(self._core.registrar.location)
