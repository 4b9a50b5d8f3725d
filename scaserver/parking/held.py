"""Mid-dialog requests held while a ``pn-purr`` device wakes (push-and-parking.md 6.10).

A request routed by our ``pn-purr`` to a device that must be woken first is held while a
``reg-refresh`` push (reason ``mid-<METHOD>``) wakes it; it is relayed on the device's
confirmation (:class:`~scaserver.parking.instructions.RelayHeld`), else answered 480 after
``wake_timeout``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Final

import attrs

from scaserver.parking.instructions import PushKind, PushTarget, RelayHeld, SendPush
from scaserver.sip.actions import CancelTimer, Deliver, EngineAction, Respond, StartTimer
from scaserver.sip.errors import ProtocolStateError
from scaserver.sip.keys import ServerKey
from scaserver.sip.message import Request
from scaserver.sip.responses import make_response

HOLD_TIMER: Final = "purr-hold"


@attrs.frozen
class HoldKey:
    """Timer key of a mid-dialog request held for a ``pn-purr`` wake (6.10)."""

    server_tx: ServerKey


@attrs.define
class HeldRequest:
    """A mid-dialog request held for a ``pn-purr`` wake (6.10)."""

    server_tx: ServerKey
    request: Request
    binding: Hashable
    aor: str


@attrs.define
class HeldRequests:
    """Every mid-dialog request held for a wake, by server transaction."""

    id_factory: Callable[[], str]  # push attempt ids
    _held: dict[ServerKey, HeldRequest] = attrs.field(init=False, factory=dict)

    def hold(
        self,
        server_tx: ServerKey,
        request: Request,
        *,
        aor: str,
        target: PushTarget,
        binding: Hashable,
        now: float,
        wake_timeout: float,
    ) -> list[EngineAction]:
        if server_tx in self._held:
            raise ProtocolStateError(f"{server_tx!r} is already held")
        self._held[server_tx] = HeldRequest(server_tx, request, binding, aor)
        push = SendPush(
            attempt=self.id_factory(),
            kind=PushKind.REG_REFRESH,
            target=target,
            aor=aor,
            park_id=None,
            call_id=request.call_id,
            from_uri=None,
            to_uri=None,
            from_display=None,
            line=None,
            ttl=max(0, int(wake_timeout)),
            reason=f"mid-{request.method}",
            deadline=now + wake_timeout,
        )
        return [Deliver(push), StartTimer(HoldKey(server_tx), HOLD_TIMER, wake_timeout)]

    def on_binding_confirmed(self, aor: str, binding: Hashable) -> list[EngineAction]:
        """Relay every request held for ``binding`` of ``aor``: its device woke."""
        actions: list[EngineAction] = []
        for server_tx, held in list(self._held.items()):
            if held.aor == aor and held.binding == binding:
                del self._held[server_tx]
                actions += [CancelTimer(HoldKey(server_tx), HOLD_TIMER), Deliver(RelayHeld(server_tx))]
        return actions

    def on_timer(self, key: HoldKey) -> list[EngineAction]:
        """``wake_timeout`` passed: the held request is answered 480."""
        held = self._held.pop(key.server_tx, None)
        if held is None:
            return []
        return [Respond(held.server_tx, make_response(held.request, 480, to_tag=None))]

    def server_txs(self) -> tuple[ServerKey, ...]:
        return tuple(self._held)
