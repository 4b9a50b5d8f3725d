"""The push mid-registrar's side toward the upstream registrar (push-and-parking.md 3.4, 3.5,
3.8): one :class:`UpstreamRegistration` per AoR, moved only by the transition table of
:mod:`scaserver.registrar.upstream`; the FIFO of forwards (one upstream REGISTER per AoR in
flight, 8 queued at most); our own refreshes and unregisters, the answers to them (423 floor,
digest challenges through the injected ``credentials(aor, realm)``, back-off) and their
timers."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Hashable, Sequence

import attrs

from scaserver.registrar.binding import Binding
from scaserver.registrar.midregevents import (
    DropBinding,
    RegisterFinished,
    RegisterForwarded,
    UpstreamAuthNeeded,
    UpstreamChanged,
    UpstreamGaveUp,
    UpstreamSaved,
    UpstreamSnapshot,
)
from scaserver.registrar.midregistrar import (
    QUEUE_LIMIT,
    REFRESH_TIMER,
    RETRY_STATUSES,
    UNREGISTER_TIMER,
    UPSTREAM_TIMEOUT,
    MidRegSettings,
    TooManyForwards,
    UpstreamCredentials,
)
from scaserver.registrar.midregsettings import Mode
from scaserver.registrar.midregstate import AorKey, Forward, ForwardKey, ForwardKind, UpstreamRegistration
from scaserver.registrar.registrar import response_tag
from scaserver.registrar.upstream import UpstreamInput, UpstreamState, next_state
from scaserver.registrar.upstreammessages import (
    aggregate_expiry,
    kept_contacts,
    min_expires,
    upstream_request,
)
from scaserver.sip.actions import CancelTimer, Deliver, EngineAction, Respond, SendRequest, StartTimer
from scaserver.sip.digestclient import parse_challenges, select_challenge
from scaserver.sip.errors import MalformedMessage
from scaserver.sip.headers import parse_uint32
from scaserver.sip.message import Headers, Response
from scaserver.sip.responses import make_response, response_for


@attrs.define
class UpstreamClient:
    """The upstream registrations of every AoR and the forwards in flight (3.5, 3.8)."""

    settings: MidRegSettings
    bindings: Callable[[str], tuple[Binding, ...]]
    call_id_factory: Callable[[str], str]
    random: Callable[[], float]
    credentials: UpstreamCredentials | None = None
    cnonce: Callable[[], str] | None = None
    _aors: dict[str, UpstreamRegistration] = attrs.field(init=False, factory=dict)
    _forwards: dict[ForwardKey, Forward] = attrs.field(init=False, factory=dict)
    _seq: int = attrs.field(init=False, default=0)
    _saved: dict[str, UpstreamSnapshot] = attrs.field(init=False, factory=dict)  # last UpstreamSaved

    def forward(self, context: ForwardKey) -> Forward | None:
        """The forward in flight under ``context``."""
        return self._forwards.get(context)

    def forget(self, context: ForwardKey) -> None:
        """The forward of ``context`` got its final answer."""
        del self._forwards[context]

    def _cnonce(self) -> str:
        return self.cnonce() if self.cnonce is not None else f"{int(self.random() * 2**64):016x}"

    def kept_contacts(self, aor: str, now: float) -> tuple[str, ...]:
        """3.7 mirror mode: the mirrored contacts of the AoR's dormant push bindings."""
        return kept_contacts(self.settings, self.bindings(aor), now)

    def registration(self, aor: str) -> UpstreamRegistration | None:
        """``pushreg.lookup``: the upstream registration of ``aor``."""
        return self._aors.get(aor)

    def registrations(self) -> tuple[UpstreamRegistration, ...]:
        return tuple(self._aors.values())

    def saving(self, reg: UpstreamRegistration | None, actions: list[EngineAction]) -> list[EngineAction]:
        """``actions`` and, when ``reg`` changed in what a restart brings back since it was last
        reported, :class:`UpstreamSaved` (3.5, R21)."""
        if reg is None:
            return actions
        snapshot = UpstreamSnapshot.of(reg)
        if self._saved.get(reg.aor) != snapshot:
            self._saved[reg.aor] = snapshot
            actions.append(Deliver(UpstreamSaved(snapshot)))
        return actions

    def registration_for(self, aor: str) -> UpstreamRegistration:
        reg = self._aors.get(aor)
        if reg is None:
            reg = self._aors[aor] = UpstreamRegistration(aor, self.call_id_factory(aor))
        return reg

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def enqueue(self, reg: UpstreamRegistration, forward: Forward, now: float) -> list[EngineAction]:
        if reg.inflight is None:
            return self._send(reg, forward, now)
        if len(reg.queue) >= QUEUE_LIMIT:
            if forward.kind is ForwardKind.DEVICE and forward.request is not None:
                error = TooManyForwards("upstream queue full", headers=Headers.of(("Retry-After", "1")))
                response = response_for(forward.request, error, to_tag=response_tag(forward.request))
                return [Respond(forward.device_transaction(), response)]
            return []
        reg.queue.append(forward)
        return []

    def _send(self, reg: UpstreamRegistration, forward: Forward, now: float) -> list[EngineAction]:
        renewed = reg.renewed_at > forward.queued_at
        if forward.kind is ForwardKind.REFRESH and renewed and reg.is_fresh(self.settings, now):
            return self.send_next(reg, now)  # R17: a piggy-back refresh made it unnecessary
        reg.inflight = forward
        request = upstream_request(self.settings, reg, forward, self.bindings, self._cnonce)
        forward.sent = request
        key = ForwardKey(reg.aor, forward.seq)
        self._forwards[key] = forward
        actions: list[EngineAction] = []
        actions += self.enter(reg, UpstreamInput.SENT, now)
        keys = tuple(change.key for change in forward.changes)
        actions += [
            SendRequest(request, self.settings.upstream, key),
            StartTimer(key, UPSTREAM_TIMEOUT, self.settings.table.upstream_timeout),
        ]
        if keys:
            actions.append(Deliver(RegisterForwarded(reg.aor, keys)))
        return actions

    def send_next(self, reg: UpstreamRegistration, now: float) -> list[EngineAction]:
        reg.inflight = None
        while reg.queue:
            actions = self._send(reg, reg.queue.popleft(), now)
            if reg.inflight is not None or actions:
                return actions
        return []

    def failed(self, context: ForwardKey, status: int, now: float) -> list[EngineAction]:
        forward = self._forwards.pop(context, None)
        reg = self._aors.get(context.aor)
        if forward is None or reg is None:
            return []
        actions: list[EngineAction] = [CancelTimer(context, UPSTREAM_TIMEOUT)]
        if forward.kind is ForwardKind.DEVICE:
            assert forward.request is not None
            headers = Headers.of(("Retry-After", "30")) if status == 503 else Headers.EMPTY
            response = make_response(
                forward.request, status, headers=headers, to_tag=response_tag(forward.request)
            )
            actions += [
                Respond(forward.device_transaction(), response),
                *self.finished(reg, forward, confirmed=False),
            ]
        else:
            actions += self._own_failure(reg, forward, None, now)
        if reg.inflight is forward:
            actions += self.send_next(reg, now)
        return actions

    def finished(self, reg: UpstreamRegistration, forward: Forward, *, confirmed: bool) -> list[EngineAction]:
        keys = tuple(change.key for change in forward.changes)
        return [Deliver(RegisterFinished(reg.aor, keys, confirmed))] if keys else []

    def resend(self, reg: UpstreamRegistration, forward: Forward) -> list[EngineAction]:
        """3.3.4: the same forward once more with the larger Expires (the device never sees it)."""
        forward.seq = self.next_seq()
        request = upstream_request(self.settings, reg, forward, self.bindings, self._cnonce)
        forward.sent = request
        key = ForwardKey(reg.aor, forward.seq)
        self._forwards[key] = forward
        reg.inflight = forward
        return [
            SendRequest(request, self.settings.upstream, key),
            StartTimer(key, UPSTREAM_TIMEOUT, self.settings.table.upstream_timeout),
        ]

    def registered(
        self, reg: UpstreamRegistration, granted: int | None, now: float, requested: int
    ) -> list[EngineAction]:
        """3.3.2 step 1: the aggregate is registered (or removed, for Expires 0)."""
        lifetime = requested if granted is None else granted
        reg.failures = 0
        reg.last_error = None
        if lifetime <= 0:
            reg.granted, reg.expires_at = 0, 0.0
            return [
                CancelTimer(AorKey(reg.aor), REFRESH_TIMER),
                *self.enter(reg, UpstreamInput.REMOVED, now),
            ]
        reg.granted, reg.expires_at, reg.renewed_at = lifetime, now + lifetime, now
        delay = max(0.0, lifetime - reg.refresh_threshold(self.settings))
        delay *= 1.0 + self.settings.jitter * (2.0 * self.random() - 1.0)
        delay = min(delay, max(0.0, lifetime - self.settings.refresh_floor))
        return [
            StartTimer(AorKey(reg.aor), REFRESH_TIMER, delay),
            *self.enter(reg, UpstreamInput.ACCEPTED, now),
        ]

    def enter(self, reg: UpstreamRegistration, given: UpstreamInput, now: float) -> list[EngineAction]:
        """Move ``reg`` by the transition table; a change of state is published."""
        old, reg.state = reg.state, next_state(reg.aor, reg.state, given)
        return [] if reg.state is old else [Deliver(UpstreamChanged(reg.aor, old, reg.state, now))]

    def own_answer(
        self, reg: UpstreamRegistration, forward: Forward, response: Response, now: float
    ) -> list[EngineAction]:
        status = response.status
        if 200 <= status < 300:
            reg.upstream_auth_needed = False
            if forward.kind is ForwardKind.UNREGISTER:
                reg.unregister_failures = 0
                if self.settings.table.mode is Mode.MIRROR:
                    return []  # one dormant contact removed; the others stay (3.7)
                return self.registered(reg, 0, now, 0)
            return self.registered(reg, aggregate_expiry(response, forward.expires), now, forward.expires)
        if status in (401, 407):
            return self._challenged(reg, forward, response, now)
        if status == 423 and forward.kind is ForwardKind.REFRESH:
            minimum = min_expires(response)
            if minimum is not None and minimum > forward.expires and not forward.retried_423:
                reg.floor = minimum
                forward.retried_423 = True
                return self.resend(reg, forward)
        return self._own_failure(reg, forward, response, now)

    def _challenged(
        self, reg: UpstreamRegistration, forward: Forward, response: Response, now: float
    ) -> list[EngineAction]:
        """3.5 ``upstream_auth``: answer a 401/407 to our own REGISTER with CSeq + 1 of the same
        registration dialog, once; once more only when the new challenge says ``stale=true``
        (RFC 7616 section 3.3: the credentials were right, the nonce old).  Otherwise the AoR
        is flagged and the piggy-back path refreshes it."""
        status = response.status
        if self.credentials is None:
            return self._auth_needed(reg, status, "challenge to our own REGISTER", now)
        lookup = self.credentials
        chosen = select_challenge(parse_challenges(response), functools.partial(lookup, reg.aor))
        if chosen is None:
            realms = ", ".join(sorted({c.realm for c in parse_challenges(response)})) or "none"
            return self._auth_needed(reg, status, f"no credentials for realm {realms}", now)
        challenge, secret = chosen
        if forward.challenges_answered >= 2 or (forward.challenges_answered == 1 and not challenge.stale):
            return self._auth_needed(reg, status, "our credentials were refused", now)
        forward.challenge, forward.secret = challenge, secret
        forward.challenges_answered += 1
        reg.auth_realm, reg.auth_username = challenge.realm, secret.username
        return self.resend(reg, forward)

    def _auth_needed(
        self, reg: UpstreamRegistration, status: int, detail: str, now: float
    ) -> list[EngineAction]:
        reg.last_error = f"{status} {detail}"
        if reg.upstream_auth_needed:
            return []  # told once per AoR
        reg.upstream_auth_needed = True
        return [Deliver(UpstreamAuthNeeded(reg.aor, status, detail, now))]

    def _own_failure(
        self, reg: UpstreamRegistration, forward: Forward, response: Response | None, now: float
    ) -> list[EngineAction]:
        status = None if response is None else response.status
        reg.last_error = "timeout" if status is None else str(status)
        if forward.kind is ForwardKind.UNREGISTER:
            reg.unregister_failures += 1
            if reg.unregister_failures <= 2 and self.settings.table.mode is Mode.AOR:
                return [StartTimer(AorKey(reg.aor), UNREGISTER_TIMER, self.settings.table.retry_backoff)]
            return []  # the upstream binding lapses at its own expiry (3.4)
        transient = status is None or status in RETRY_STATUSES or 500 <= status < 600
        if not transient:
            actions = self.enter(reg, UpstreamInput.REFUSED, now)
            actions.append(CancelTimer(AorKey(reg.aor), REFRESH_TIMER))
            for binding in self.bindings(reg.aor):
                actions.append(Deliver(DropBinding(binding.key, "upstream-rejected")))
            return actions
        reg.failures += 1
        table = self.settings.table
        delay = min(table.retry_cap, table.retry_backoff * 2 ** (reg.failures - 1))
        retry_after = response.headers.get("Retry-After") if response is not None else None
        if retry_after is not None:
            with contextlib.suppress(MalformedMessage):  # an unreadable Retry-After is ignored
                delay = max(delay, float(parse_uint32(retry_after.split(";")[0].strip(), "Retry-After")))
        actions = self.enter(reg, UpstreamInput.FAILED if now < reg.expires_at else UpstreamInput.LAPSED, now)
        if reg.state is UpstreamState.LOST and not self.bindings(reg.aor):
            return actions  # 3.5: retries continue only while a local binding is valid
        actions.append(StartTimer(AorKey(reg.aor), REFRESH_TIMER, delay))
        return actions

    def on_timer(self, key: Hashable, name: str, now: float) -> list[EngineAction]:
        actions = self._timer(key, name, now)
        aor = key.aor if isinstance(key, ForwardKey | AorKey) else None
        return self.saving(None if aor is None else self._aors.get(aor), actions)

    def _timer(self, key: Hashable, name: str, now: float) -> list[EngineAction]:
        if isinstance(key, ForwardKey) and name == UPSTREAM_TIMEOUT:
            if key not in self._forwards:
                return []
            return [Deliver(UpstreamGaveUp(key)), *self.failed(key, 408, now)]
        if not isinstance(key, AorKey) or key.aor not in self._aors:
            return []
        reg = self._aors[key.aor]
        if name == REFRESH_TIMER:
            if reg.state is UpstreamState.REGISTERED and now >= reg.expires_at:
                self.enter(reg, UpstreamInput.EXPIRED, now)  # unpublished, as it always was
            if reg.state in (UpstreamState.IDLE, UpstreamState.REJECTED):
                return []
            if reg.state is UpstreamState.RETRYING and now >= reg.expires_at:
                actions = self.enter(reg, UpstreamInput.EXPIRED, now)
            else:
                actions = []
            if reg.state is UpstreamState.LOST and not self.bindings(reg.aor):
                return actions
            contacts: tuple[str, ...] = ()
            if self.settings.table.mode is Mode.MIRROR:
                contacts = self.kept_contacts(reg.aor, now)
                if not contacts:
                    return actions  # every kept device registers by itself again, or is gone
            refresh = Forward(ForwardKind.REFRESH, self.next_seq(), queued_at=now, contacts=contacts)
            return actions + self.enqueue(reg, refresh, now)
        if name == UNREGISTER_TIMER:
            if self.bindings(reg.aor) or reg.state in (UpstreamState.IDLE, UpstreamState.REJECTED):
                return []  # a device came back during the grace
            return self.enqueue(reg, Forward(ForwardKind.UNREGISTER, self.next_seq()), now)
        return []

    def restore(
        self, saved: Sequence[UpstreamRegistration | UpstreamSnapshot], now: float
    ) -> list[EngineAction]:
        """Start-up (3.5, R21): registration dialogs come back from the store; every AoR with
        valid local bindings is re-registered once, spread over ``startup_spread``."""
        actions: list[EngineAction] = []
        for item in saved:
            reg = UpstreamRegistration(
                item.aor,
                item.call_id,
                cseq=item.cseq,
                state=item.state,
                expires_at=item.expires_at,
                granted=item.granted,
                upstream_auth_needed=item.upstream_auth_needed,
                floor=item.floor,
            )
            self._aors[item.aor] = reg
            self._saved[item.aor] = UpstreamSnapshot.of(reg)
            mirrored = self.settings.table.mode is Mode.MIRROR and self.kept_contacts(item.aor, now)
            if (self.bindings(item.aor) and self.settings.table.mode is Mode.AOR) or mirrored:
                delay = self.random() * self.settings.table.startup_spread
                actions.append(StartTimer(AorKey(item.aor), REFRESH_TIMER, delay))
        return actions
