"""The push mid-registrar (push-and-parking.md section 3) as a pure engine.

scaserver sits between devices and an upstream registrar.  In AoR-throttling mode (``aor``)
the upstream sees one aggregate contact per AoR and many device refreshes are absorbed
locally (3.2, 3.3.3); in ``mirror`` mode every device REGISTER is forwarded with a rewritten
contact (3.7).  Local bindings are written only when the upstream answered 2xx, or for an
absorbed refresh (3.3.2, 3.3.3): the engine never touches the location service, it returns
the instructions and facts of :mod:`scaserver.registrar.midregevents`.

:class:`MidRegistrar` takes the device REGISTERs and decides them with
:mod:`scaserver.registrar.deviceregister`; its :class:`UpstreamClient` holds one
:class:`UpstreamRegistration` per AoR, sends the REGISTERs of
:mod:`scaserver.registrar.upstreammessages` one at a time per AoR (3.8) and answers for our
own (3.4, 3.5).  Timers (``StartTimer`` keys :class:`ForwardKey` and :class:`AorKey`) come back
through :meth:`MidRegistrar.on_timer`.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

import attrs

from scaserver.registrar.binding import Binding, BindingKey
from scaserver.registrar.deviceregister import (
    check_limits,
    device_aor,
    forward_rule,
    registered_ok,
    requested_changes,
    written_bindings,
)
from scaserver.registrar.midregevents import RegisterDecided, UpstreamSnapshot
from scaserver.registrar.midregistrar import (
    NO_PUSH,
    REFRESH_TIMER,
    UNREGISTER_TIMER,
    UPSTREAM_TIMEOUT,
    MidRegSettings,
    PushNotSupported,
    PushTyping,
    UpstreamCredentials,
)
from scaserver.registrar.midregsettings import Mode
from scaserver.registrar.midregstate import AorKey, Forward, ForwardKey, ForwardKind, UpstreamRegistration
from scaserver.registrar.registrar import response_tag
from scaserver.registrar.upstream import UpstreamInput, UpstreamState
from scaserver.registrar.upstreamclient import UpstreamClient
from scaserver.registrar.upstreammessages import (
    aggregate_contact,
    aggregate_expiry,
    min_expires,
    mirror_grants,
    mirrored_uri,
    safe_aor,
    strip_our_via,
)
from scaserver.sip.actions import CancelTimer, Deliver, EngineAction, Respond, StartTimer
from scaserver.sip.errors import SipError
from scaserver.sip.headers import to_addr
from scaserver.sip.keys import ServerKey
from scaserver.sip.message import Peer, Request, Response
from scaserver.sip.responses import response_for
from scaserver.sip.uri import SipUri, parse_uri


@attrs.define
class MidRegistrar:
    """Section 3 over a read-only view of the local bindings (``bindings(aor)``)."""

    settings: MidRegSettings
    bindings: Callable[[str], tuple[Binding, ...]]
    call_id_factory: Callable[[str], str]
    random: Callable[[], float]
    # 3.1 upstream_auth: None is "none" (the upstream trusts our address); cnonce: a fresh
    # random token per authorized REGISTER (None: drawn from ``random``).
    credentials: UpstreamCredentials | None = None
    cnonce: Callable[[], str] | None = None
    upstream: UpstreamClient = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.upstream = UpstreamClient(
            self.settings, self.bindings, self.call_id_factory, self.random, self.credentials, self.cnonce
        )

    # ------------------------------------------------------------------ views

    def registration(self, aor: str) -> UpstreamRegistration | None:
        """``pushreg.lookup``: the upstream registration of ``aor``."""
        return self.upstream.registration(aor)

    def registrations(self) -> tuple[UpstreamRegistration, ...]:
        return self.upstream.registrations()

    def aggregate_contact(self, aor: str) -> str:
        """3.2: ``<sip:{user}@{advertised};transport={t}>`` for the AoR."""
        return aggregate_contact(self.settings, aor)

    # -------------------------------------------------------------- device REGISTER

    def on_device_register(
        self,
        request: Request,
        peer: Peer,
        transaction: ServerKey,
        now: float,
        *,
        typing: PushTyping = NO_PUSH,
    ) -> list[EngineAction]:
        """A REGISTER from a device (the dispatcher has validated it and knows the AoR is
        ours).  Returns the absorb (3.3.3) or forward (3.2, 3.7) actions."""
        try:
            aor = device_aor(request)
            if typing.reject is not None:
                raise PushNotSupported(f"pn-provider {typing.reject!r}")
            current = self.bindings(aor)
            changes = requested_changes(self.settings, request, aor, current, typing)
            check_limits(self.settings, changes, current)
        except SipError as error:
            refusal = response_for(request, error, to_tag=response_tag(request))
            decided = RegisterDecided(safe_aor(request), str(error.status), now)
            return [Respond(transaction, refusal), Deliver(decided)]
        up = self.upstream
        reg = up.registration_for(aor)
        rule = forward_rule(
            self.settings, request, peer=peer, reg=reg, changes=changes, current=current, now=now
        )
        if rule is None:
            bindings, writes = written_bindings(request, peer, aor, changes, current, now=now, typing=typing)
            response = registered_ok(request, bindings, now, typing, to_tag=response_tag(request))
            return [Deliver(RegisterDecided(aor, "absorb", now)), *writes, Respond(transaction, response)]
        forward = Forward(
            ForwardKind.DEVICE, up.next_seq(), request, peer, transaction, tuple(changes), typing
        )
        return up.saving(reg, [Deliver(RegisterDecided(aor, rule, now)), *up.enqueue(reg, forward, now)])

    def keep_mirrored(self, aor: str, now: float) -> list[EngineAction]:
        """3.7: a binding of ``aor`` became dormant (4.5) in mirror mode: register the AoR's
        dormant contacts upstream in our own registration dialog of the AoR now, and keep
        refreshing them like an aggregate (3.5) while any is left."""
        if self.settings.table.mode is not Mode.MIRROR:
            return []
        up = self.upstream
        contacts = up.kept_contacts(aor, now)
        if not contacts:
            return []
        reg = up.registration_for(aor)
        pending = [reg.inflight, *reg.queue] if reg.inflight is not None else list(reg.queue)
        if any(f is not None and f.kind is ForwardKind.REFRESH and f.contacts == contacts for f in pending):
            return []  # the same contacts are on their way already
        refresh = Forward(ForwardKind.REFRESH, up.next_seq(), queued_at=now, contacts=contacts)
        return up.saving(reg, up.enqueue(reg, refresh, now))

    # --------------------------------------------------------------- upstream answers

    def on_upstream_response(self, context: ForwardKey, response: Response, now: float) -> list[EngineAction]:
        """A response to one of our upstream REGISTERs (3.3, 3.5)."""
        up = self.upstream
        forward = up.forward(context)
        reg = up.registration(context.aor)
        if forward is None or reg is None or response.status < 200:
            return []
        up.forget(context)
        actions: list[EngineAction] = [CancelTimer(context, UPSTREAM_TIMEOUT)]
        if forward.kind is ForwardKind.DEVICE:
            actions += self._device_answer(reg, forward, response, now)
        else:
            actions += up.own_answer(reg, forward, response, now)
        if reg.inflight is forward and up.forward(ForwardKey(reg.aor, forward.seq)) is None:
            actions += up.send_next(reg, now)  # unless it was re-sent (423, challenge)
        reg.written = None
        return up.saving(reg, actions)

    def on_upstream_timeout(self, context: ForwardKey, now: float) -> list[EngineAction]:
        """The client transaction timed out (or ``upstream_timeout`` fired): 408 (3.3.5)."""
        up = self.upstream
        return up.saving(up.registration(context.aor), up.failed(context, 408, now))

    def on_upstream_failure(self, context: ForwardKey, now: float) -> list[EngineAction]:
        """The upstream could not be reached: 503 with Retry-After 30 (3.3.5)."""
        up = self.upstream
        return up.saving(up.registration(context.aor), up.failed(context, 503, now))

    def _device_answer(
        self, reg: UpstreamRegistration, forward: Forward, response: Response, now: float
    ) -> list[EngineAction]:
        assert forward.request is not None and forward.peer is not None
        up = self.upstream
        request = forward.request
        relayed = strip_our_via(response, forward.sent or request)
        if response.status == 423 and not forward.retried_423 and self.settings.table.mode is Mode.AOR:
            minimum = min_expires(response)
            if minimum is not None and minimum > forward.expires:
                reg.floor = minimum
                forward.retried_423 = True
                return up.resend(reg, forward)
        if not 200 <= response.status < 300:
            answer = Respond(forward.device_transaction(), relayed)
            return [answer, *up.finished(reg, forward, confirmed=False)]
        actions: list[EngineAction] = []
        granted: dict[BindingKey, int] | None = None
        if self.settings.table.mode is Mode.AOR:
            actions += up.registered(reg, aggregate_expiry(response, forward.expires), now, forward.expires)
        else:
            granted = mirror_grants(response, forward)
            actions += up.enter(reg, UpstreamInput.ACCEPTED, now)
        bindings, writes = written_bindings(
            request,
            forward.peer,
            reg.aor,
            forward.changes,
            self.bindings(reg.aor),
            now=now,
            granted=granted,
            typing=forward.typing,
        )
        actions += writes
        reg.written = bindings
        to_tag = to_addr(response).tag or response_tag(request)
        ok = registered_ok(request, bindings, now, forward.typing, to_tag=to_tag, upstream=response)
        actions += [Respond(forward.device_transaction(), ok), *up.finished(reg, forward, confirmed=True)]
        return actions

    # ------------------------------------------------------------------ timers

    def on_timer(self, key: Hashable, name: str, now: float) -> list[EngineAction]:
        return self.upstream.on_timer(key, name, now)

    def refresh_now(self, aor: str, now: float) -> list[EngineAction] | None:
        """``uac.reg_refresh`` (rpc.md 3.5): an operator's early refresh of the aggregate of
        ``aor`` (3.5), queued behind a forward in flight like the refresh timer's (3.8).

        None when ``aor`` has no upstream registration.  In mirror mode only the contacts
        scaserver keeps for dormant bindings are refreshed (each live device refreshes its
        own, 3.7); nothing to do when no local binding is left (the AoR is being unregistered,
        3.4).  The refresh timer stays armed: a 2xx re-arms it, a failure leaves the next
        attempt where it was.
        """
        up = self.upstream
        reg = up.registration(aor)
        if reg is None:
            return None
        if not self.bindings(aor):
            return []
        if self.settings.table.mode is Mode.MIRROR:
            return self.keep_mirrored(aor, now)
        return up.enqueue(reg, Forward(ForwardKind.REFRESH, up.next_seq(), queued_at=now), now)

    # ------------------------------------------------------- bindings leaving, restart

    def on_binding_gone(self, aor: str, now: float, binding: Binding | None = None) -> list[EngineAction]:
        """A local binding of ``aor`` expired or was removed other than by a forwarded
        REGISTER: when none is left, unregister upstream after ``unregister_grace`` (3.4).  In
        mirror mode a dormant ``binding`` we kept registered is unregistered upstream (3.7)."""
        up = self.upstream
        reg = up.registration(aor)
        if reg is not None and self.settings.table.mode is Mode.MIRROR:
            uri = None if binding is None else parse_uri(binding.contact)
            if binding is None or binding.expires_at > now or not isinstance(uri, SipUri):
                return []  # a device's own upstream binding lapses with it
            contact = str(mirrored_uri(self.settings, uri, binding.key))
            forward = Forward(ForwardKind.UNREGISTER, up.next_seq(), queued_at=now, contacts=(contact,))
            return up.saving(reg, up.enqueue(reg, forward, now))
        if reg is None or self.bindings(aor) or self.settings.table.mode is Mode.MIRROR:
            return []
        if reg.state in (UpstreamState.IDLE, UpstreamState.REJECTED):
            return []
        reg.unregister_failures = 0
        return [
            CancelTimer(AorKey(aor), REFRESH_TIMER),
            StartTimer(AorKey(aor), UNREGISTER_TIMER, self.settings.table.unregister_grace),
        ]

    def restore(
        self, saved: Sequence[UpstreamRegistration | UpstreamSnapshot], now: float
    ) -> list[EngineAction]:
        """Start-up (3.5, R21): registration dialogs come back from the store; every AoR with
        valid local bindings is re-registered once, spread over ``startup_spread``."""
        return self.upstream.restore(saved, now)
