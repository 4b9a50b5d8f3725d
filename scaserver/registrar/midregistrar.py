"""The push mid-registrar (push-and-parking.md section 3) as a pure engine.

scaserver sits between devices and an upstream registrar.  In AoR-throttling mode (``aor``)
the upstream sees one aggregate contact per AoR and many device refreshes are absorbed
locally (3.2, 3.3.3); in ``mirror`` mode every device REGISTER is forwarded with a rewritten
contact (3.7).  Local bindings are written only when the upstream answered 2xx, or for an
absorbed refresh (3.3.2, 3.3.3): the engine never touches the location service, it returns
instructions the dispatcher carries out, delivered as ``Deliver(...)`` and never published:

* :class:`PutBinding` -> ``LocationService.put(binding, now)``;
* :class:`DropBinding` -> ``LocationService.remove(key, reason, now)``.

Facts it publishes: :class:`BindingConfirmed` (``binding.confirmed``, parking's only input
from registration), :class:`RegisterDecided` (every forward/absorb decision with its rule),
:class:`RegisterForwarded` / :class:`RegisterFinished` (forwards in flight, for parking's
6.3 case 3 and R12), :class:`UpstreamChanged`, :class:`UpstreamAuthNeeded` (3.5: once per
AoR when a challenge to our own REGISTER cannot be answered; the edge logs it as an error),
:class:`UpstreamSaved` (R21: a registration changed in what a restart must bring back; the
edge stores it).
Challenges to our own REGISTERs are answered through the injected ``credentials(aor, realm)``
(``upstream_auth``, 3.1) with the client side of :mod:`scaserver.sip.digest`.

One :class:`UpstreamRegistration` per AoR holds the upstream state
(``IDLE|REGISTERING|REGISTERED|RETRYING|LOST|REJECTED``, moved only by the transition table of
:mod:`scaserver.registrar.upstream`), the registration dialog of 3.5
(Call-ID kept, CSeq increasing) and the FIFO of forwards (3.8: one upstream REGISTER per
AoR in flight, 8 queued at most).  Timers (``StartTimer`` keys :class:`ForwardKey` and
:class:`AorKey`) come back through :meth:`MidRegistrar.on_timer`.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
from collections import deque
from collections.abc import Callable, Hashable, Mapping, Sequence
from email.utils import formatdate
from typing import Final

import attrs

from scaserver.registrar.binding import Binding, BindingKey, KeyKind
from scaserver.registrar.registrar import contact_line, response_tag
from scaserver.registrar.upstream import UpstreamInput, UpstreamState, next_state
from scaserver.sip.actions import (
    CancelTimer,
    Deliver,
    EngineAction,
    Fact,
    Instruction,
    Respond,
    SendRequest,
    StartTimer,
)
from scaserver.sip.digest import Challenge, ClientCredentials, authorize, parse_challenges, select_challenge
from scaserver.sip.errors import (
    BadRequest,
    IntervalTooBrief,
    MalformedMessage,
    ProtocolStateError,
    ServiceUnavailable,
    SipError,
)
from scaserver.sip.headers import Star, contacts, cseq, expires, parse_uint32, to_addr
from scaserver.sip.keys import ServerKey
from scaserver.sip.message import Headers, Peer, Request, Response
from scaserver.sip.responses import make_response, response_for
from scaserver.sip.uri import NameAddr, SipUri, parse_uri

UPSTREAM_TIMEOUT: Final = "midreg-upstream-timeout"
REFRESH_TIMER: Final = "midreg-refresh"
UNREGISTER_TIMER: Final = "midreg-unregister"

COPIED_FROM_UPSTREAM: Final = ("Date", "Service-Route", "P-Associated-URI", "Supported", "Allow")
RETRY_STATUSES: Final = frozenset({408, 429})
QUEUE_LIMIT: Final = 8


class PushNotSupported(SipError, status=555, reason="Push Notification Service Not Supported"):
    """RFC 8599 section 4.1.1: a ``pn-provider`` we do not push for (4.1 table)."""


class TooManyForwards(ServiceUnavailable, status=503, reason="Service Unavailable"):
    """3.8: the AoR's upstream queue is full; sent with ``Retry-After: 1``."""


class Mode(enum.Enum):
    AOR = "aor"
    MIRROR = "mirror"


@attrs.frozen
class MidRegSettings:
    """``midreg.*`` (3.1).  ``upstream`` is the next hop, ``upstream_domain`` the R-URI host of
    our own REGISTERs, ``advertised`` the host[:port] of the aggregate contact."""

    upstream: Peer
    upstream_domain: str
    advertised: str
    mode: Mode = Mode.AOR
    outgoing_expires: int = 3600
    refresh_fraction: float = 0.33
    refresh_floor: float = 32.0
    jitter: float = 0.05
    upstream_timeout: float = 5.0
    retry_backoff: float = 5.0
    retry_cap: float = 300.0
    absorb_requires_same_callid: bool = True
    device_min_expires: int = 60
    device_max_expires: int = 3600
    device_default_expires: int = 3600
    max_contacts: int = 10
    unregister_grace: float = 0.0
    startup_spread: float = 60.0
    multi_domain: bool = False  # escape the AoR's "@" as "%40" in the aggregate user part


@attrs.frozen
class PushTyping:
    """What device typing (push/pnparams, run by the dispatcher) said about one REGISTER.

    ``reject``: the unsupported provider (-> 555); ``reply_caps``: Feature-Caps values for our
    200; ``upstream_caps``: Feature-Caps values for the forwarded REGISTER; ``legacy_keys``:
    contact URI text -> "provider token" for legacy push devices (3.6 rule 3);
    ``legacy_push``: contact URI text -> the push coordinates stored with such a binding
    (4.3), in the ``pn-*`` form RFC 8599 bindings carry.
    """

    reject: str | None = None
    reply_caps: tuple[str, ...] = ()
    upstream_caps: tuple[str, ...] = ()
    legacy_keys: Mapping[str, str] = attrs.field(factory=dict)
    legacy_push: Mapping[str, tuple[tuple[str, str], ...]] = attrs.field(factory=dict)


NO_PUSH: Final = PushTyping()


# ------------------------------------------------------------------ instructions, events


@attrs.frozen
class PutBinding(Instruction):
    binding: Binding


@attrs.frozen
class DropBinding(Instruction):
    """Remove a binding; ``reason`` is ``unregistered``, ``upstream-rejected`` (3.5) or
    ``token-invalid`` (4.4)."""

    key: BindingKey
    reason: str


@attrs.frozen
class BindingConfirmed(Fact):
    """``binding.confirmed`` (section 1): the upstream accepted it, or it was absorbed."""

    aor: str
    key: BindingKey
    binding: Binding
    first_seen: float
    confirmed_at: float


@attrs.frozen
class RegisterDecided(Fact):
    """A device REGISTER was forwarded (``rule`` 1-5 of 3.2, ``mirror``, ``queued``) or
    absorbed (``absorb``), or answered locally (``555``, ``423``, ``503``...)."""

    aor: str
    rule: str
    at: float


@attrs.frozen
class RegisterForwarded(Instruction):
    aor: str
    keys: tuple[BindingKey, ...]


@attrs.frozen
class RegisterFinished(Instruction):
    """A forward ended; ``confirmed`` when a 2xx wrote the bindings."""

    aor: str
    keys: tuple[BindingKey, ...]
    confirmed: bool


@attrs.frozen
class UpstreamChanged(Fact):
    aor: str
    old: UpstreamState
    new: UpstreamState
    at: float


@attrs.frozen
class UpstreamAuthNeeded(Fact):
    """3.5: a challenge to our own REGISTER for ``aor`` could not be answered (``upstream_auth``
    ``none``, no credentials for the realm, or the upstream refused ours).  Published once, when
    the AoR's ``upstream_auth_needed`` flag is set; the edge logs it at error level."""

    aor: str
    status: int
    detail: str
    at: float


@attrs.frozen
class UpstreamSnapshot:
    """What a restart brings back of one upstream registration (3.5, R21): the registration
    dialog (Call-ID, last CSeq used), the state, expiry and granted lifetime, and what was
    learned from the upstream (``upstream_auth_needed``, ``floor`` from a 423)."""

    aor: str
    call_id: str
    cseq: int
    state: UpstreamState
    expires_at: float
    granted: int
    upstream_auth_needed: bool
    floor: int

    @classmethod
    def of(cls, reg: UpstreamRegistration) -> UpstreamSnapshot:
        return cls(
            reg.aor,
            reg.call_id,
            reg.cseq,
            reg.state,
            reg.expires_at,
            reg.granted,
            reg.upstream_auth_needed,
            reg.floor,
        )


@attrs.frozen
class UpstreamSaved(Fact):
    """Fact: an upstream registration changed in what a restart must bring back (its CSeq,
    state, expiry or flags); the edge stores ``snapshot`` (3.5: Call-ID and CSeq persisted)."""

    snapshot: UpstreamSnapshot


UpstreamCredentials = Callable[[str, str], ClientCredentials | None]
"""``credentials(aor, realm)``: what answers a challenge of ``realm`` to our own REGISTER for
``aor`` (3.1 ``upstream_auth``), or None."""


# ------------------------------------------------------------------------- keys


@attrs.frozen
class ForwardKey:
    """SendRequest context and upstream-timeout timer key of one upstream REGISTER."""

    aor: str
    seq: int


@attrs.frozen
class AorKey:
    """Timer key of an AoR's refresh / retry and unregister timers."""

    aor: str


# ------------------------------------------------------------------------- state


@attrs.frozen
class _Change:
    key: BindingKey
    contact: NameAddr | None  # None: remove
    requested: int  # seconds, 0 for removal


class ForwardKind(enum.Enum):
    DEVICE = "device"  # a device REGISTER relayed
    REFRESH = "refresh"  # our own refresh (3.5)
    UNREGISTER = "unregister"  # our own Expires 0 (3.4)


@attrs.define
class Forward:
    kind: ForwardKind
    seq: int
    request: Request | None = None  # the device's REGISTER (DEVICE)
    peer: Peer | None = None
    transaction: ServerKey | None = None
    changes: tuple[_Change, ...] = ()
    typing: PushTyping = NO_PUSH
    sent: Request | None = None
    expires: int = 0
    retried_423: bool = False
    queued_at: float = 0.0
    # 3.7 mirror mode, our own REGISTERs: the mirrored contacts of dormant push bindings.
    contacts: tuple[str, ...] = ()
    # 3.5 upstream_auth: the challenge answered (our own REGISTERs) and how many were.
    challenge: Challenge | None = None
    secret: ClientCredentials | None = attrs.field(default=None, repr=False)
    challenges_answered: int = 0

    def device_transaction(self) -> ServerKey:
        """The server transaction of the device's REGISTER this forward answers."""
        if self.transaction is None:
            raise ProtocolStateError(f"a {self.kind.name} forward has no device transaction to answer")
        return self.transaction


@attrs.define
class UpstreamRegistration:
    """Our view of the upstream binding of one AoR (3.5) and its registration dialog."""

    aor: str
    call_id: str
    cseq: int = 0
    state: UpstreamState = UpstreamState.IDLE
    expires_at: float = 0.0
    granted: int = 0
    upstream_auth_needed: bool = False
    floor: int = 0  # Min-Expires learned from a 423 (3.3.4)
    failures: int = 0
    unregister_failures: int = 0
    inflight: Forward | None = None
    queue: deque[Forward] = attrs.Factory(deque)
    last_error: str | None = None
    renewed_at: float = float("-inf")  # last 2xx for the aggregate
    digest_nonce: str = ""  # the last upstream nonce we answered, and requests sent with it (nc)
    auth_realm: str = ""  # the realm and user name we last answered a challenge with (uac.*)
    auth_username: str = ""
    digest_nc: int = 0
    # The AoR's bindings as just written, while the dispatcher has not applied the writes yet.
    written: tuple[Binding, ...] | None = None

    def degraded(self) -> bool:
        return self.state in (UpstreamState.RETRYING, UpstreamState.LOST)


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def binding_key(
    aor: str, contact: NameAddr, current: Sequence[Binding], legacy: Mapping[str, str]
) -> BindingKey:
    """Section 3.6: instance (+reg-id), RFC 8599 triple, legacy (provider, token), URI."""
    uri = contact.uri
    instance = contact.param("+sip.instance")
    if instance:
        value = _unquote(instance)
        reg_id = contact.param("reg-id")
        return BindingKey(aor, KeyKind.INSTANCE, value if not reg_id else f"{value};reg-id={reg_id}")
    if isinstance(uri, SipUri) and uri.param("pn-provider") and uri.param("pn-prid"):
        triple = (uri.param("pn-provider") or "", uri.param("pn-prid") or "", uri.param("pn-param") or "")
        return BindingKey(aor, KeyKind.PUSH, " ".join(triple))
    legacy_value = legacy.get(str(uri))
    if legacy_value:
        return BindingKey(aor, KeyKind.PUSH, legacy_value)
    for binding in current:
        if (
            binding.key.kind is KeyKind.URI
            and isinstance(uri, SipUri)
            and uri.matches(parse_uri(binding.contact))
        ):
            return binding.key
    return BindingKey(aor, KeyKind.URI, str(uri))


def mrct_of(key: BindingKey) -> str:
    """The opaque ``mrct`` parameter that maps an upstream contact back to a binding (3.7)."""
    identity = f"{key.aor}\x00{key.kind.value}\x00{key.value}"
    return hashlib.sha256(identity.encode("utf-8", "surrogatepass")).hexdigest()[:16]


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
    _aors: dict[str, UpstreamRegistration] = attrs.field(init=False, factory=dict)
    _forwards: dict[ForwardKey, Forward] = attrs.field(init=False, factory=dict)
    _seq: int = attrs.field(init=False, default=0)
    _saved: dict[str, UpstreamSnapshot] = attrs.field(init=False, factory=dict)  # last UpstreamSaved

    # ------------------------------------------------------------------ views

    def registration(self, aor: str) -> UpstreamRegistration | None:
        """``pushreg.lookup``: the upstream registration of ``aor``."""
        return self._aors.get(aor)

    def registrations(self) -> tuple[UpstreamRegistration, ...]:
        return tuple(self._aors.values())

    def _saving(self, reg: UpstreamRegistration | None, actions: list[EngineAction]) -> list[EngineAction]:
        """``actions`` and, when ``reg`` changed in what a restart brings back since it was last
        reported, :class:`UpstreamSaved` (3.5, R21)."""
        if reg is None:
            return actions
        snapshot = UpstreamSnapshot.of(reg)
        if self._saved.get(reg.aor) != snapshot:
            self._saved[reg.aor] = snapshot
            actions.append(Deliver(UpstreamSaved(snapshot)))
        return actions

    def _reg(self, aor: str) -> UpstreamRegistration:
        reg = self._aors.get(aor)
        if reg is None:
            reg = self._aors[aor] = UpstreamRegistration(aor, self.call_id_factory(aor))
        return reg

    def aggregate_contact(self, aor: str) -> str:
        """3.2: ``<sip:{user}@{advertised};transport={t}>`` for the AoR."""
        uri = parse_uri(aor)
        assert isinstance(uri, SipUri)
        user = uri.user or ""
        if self.settings.multi_domain:
            user = f"{user}%40{uri.host}"
        transport = self.settings.upstream.transport.value.lower()
        return f"<sip:{user}@{self.settings.advertised};transport={transport}>"

    def refresh_threshold(self, reg: UpstreamRegistration) -> float:
        """Seconds before expiry at which the aggregate is refreshed (3.1 ``refresh_fraction``,
        never later than ``refresh_floor`` before expiry)."""
        return max(self.settings.refresh_floor, self.settings.refresh_fraction * reg.granted)

    def _fresh(self, reg: UpstreamRegistration, now: float) -> bool:
        return reg.state is UpstreamState.REGISTERED and reg.expires_at - now > self.refresh_threshold(reg)

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
            aor = self._aor(request)
            if typing.reject is not None:
                raise PushNotSupported(f"pn-provider {typing.reject!r}")
            current = self.bindings(aor)
            changes = self._changes(request, aor, current, typing)
            self._check_limits(changes, current)
        except SipError as error:
            refusal = response_for(request, error, to_tag=response_tag(request))
            decided = RegisterDecided(_safe_aor(request), str(error.status), now)
            return [Respond(transaction, refusal), Deliver(decided)]
        reg = self._reg(aor)
        rule = self._forward_rule(request, peer=peer, reg=reg, changes=changes, current=current, now=now)
        if rule is None:
            bindings, writes = self._apply(request, peer, aor, changes, current, now=now, typing=typing)
            response = self._ok(request, bindings, now, typing, to_tag=response_tag(request))
            return [Deliver(RegisterDecided(aor, "absorb", now)), *writes, Respond(transaction, response)]
        forward = Forward(
            ForwardKind.DEVICE, self._next_seq(), request, peer, transaction, tuple(changes), typing
        )
        return self._saving(
            reg, [Deliver(RegisterDecided(aor, rule, now)), *self._enqueue(reg, forward, now)]
        )

    def _aor(self, request: Request) -> str:
        uri = to_addr(request).uri
        if not isinstance(uri, SipUri):
            raise BadRequest("address-of-record is not a SIP or SIPS URI")
        return uri.aor()

    def _changes(
        self, request: Request, aor: str, current: Sequence[Binding], typing: PushTyping
    ) -> list[_Change]:
        found = contacts(request)
        header_expires = expires(request)
        if isinstance(found, Star):
            if header_expires != 0:
                raise BadRequest("Contact '*' requires Expires: 0")
            return [_Change(binding.key, None, 0) for binding in current]
        changes: list[_Change] = []
        for contact in found:
            if not isinstance(contact.uri, SipUri):
                raise BadRequest(f"Contact {contact} is not a SIP or SIPS URI")
            param = contact.param("expires")
            requested = parse_uint32(param, "Contact expires") if param else header_expires
            if requested is None:
                requested = self.settings.device_default_expires
            if 0 < requested < self.settings.device_min_expires:
                raise IntervalTooBrief(
                    "expiry under the minimum",
                    headers=Headers.of(("Min-Expires", str(self.settings.device_min_expires))),
                )
            requested = min(requested, self.settings.device_max_expires)
            key = binding_key(aor, contact, current, typing.legacy_keys)
            changes = [change for change in changes if change.key != key]
            changes.append(_Change(key, contact if requested else None, requested))
        return changes

    def _check_limits(self, changes: Sequence[_Change], current: Sequence[Binding]) -> None:
        final = {binding.key for binding in current}
        for change in changes:
            if change.contact is None:
                final.discard(change.key)
            else:
                final.add(change.key)
        limit = self.settings.max_contacts
        if limit and len(final) > limit and len(final) > len(current):
            raise ServiceUnavailable("too many registered contacts")

    def _forward_rule(
        self,
        request: Request,
        *,
        peer: Peer,
        reg: UpstreamRegistration,
        changes: Sequence[_Change],
        current: Sequence[Binding],
        now: float,
    ) -> str | None:
        """Section 3.2 rules 1-5 in order; None means absorb (3.3.3)."""
        if self.settings.mode is Mode.MIRROR:
            return "mirror"
        known = {binding.key: binding for binding in current}
        if not changes:
            return "query"  # a query is answered only after the upstream authenticated it
        if any(change.contact is not None and change.key not in known for change in changes):
            return "1"
        if "Authorization" in request.headers or "Proxy-Authorization" in request.headers:
            return "2"
        if any(change.contact is None for change in changes):
            return "3"
        if not self._fresh(reg, now) or reg.upstream_auth_needed or reg.inflight is not None or reg.queue:
            return "4"
        call_id, number = request.call_id, cseq(request).number
        for change in changes:
            stored = known[change.key]
            if self.settings.absorb_requires_same_callid and (
                stored.call_id != call_id or number <= stored.cseq
            ):
                return "5"
            if stored.received != peer:
                return "5"
        return None

    def _apply(
        self,
        request: Request,
        peer: Peer,
        aor: str,
        changes: Sequence[_Change],
        current: Sequence[Binding],
        *,
        now: float,
        granted: Mapping[BindingKey, int] | None = None,
        typing: PushTyping = NO_PUSH,
    ) -> tuple[tuple[Binding, ...], list[EngineAction]]:
        """Write ``changes`` (as instructions) and return the AoR's bindings afterwards."""
        table = {binding.key: binding for binding in current}
        actions: list[EngineAction] = []
        call_id = request.call_id or ""
        number = cseq(request).number
        for change in changes:
            if change.contact is None:
                if table.pop(change.key, None) is not None:
                    actions.append(Deliver(DropBinding(change.key, "unregistered")))
                continue
            previous = table.get(change.key)
            lifetime = change.requested if granted is None else granted.get(change.key, change.requested)
            binding = _binding(
                change,
                request,
                peer,
                call_id=call_id,
                number=number,
                expires_at=now + lifetime,
                previous=previous,
                now=now,
            )
            assert change.contact is not None
            legacy = typing.legacy_push.get(str(change.contact.uri))
            if legacy is not None:
                binding = attrs.evolve(binding, push=legacy)
            table[change.key] = binding
            actions += [
                Deliver(PutBinding(binding)),
                Deliver(BindingConfirmed(aor, change.key, binding, binding.registered_at, now)),
            ]
        ordered = tuple(sorted(table.values(), key=lambda b: (-b.sort_q, -b.updated_at)))
        return ordered, actions

    def _ok(
        self,
        request: Request,
        bindings: Sequence[Binding],
        now: float,
        typing: PushTyping,
        *,
        to_tag: str,
        upstream: Response | None = None,
    ) -> Response:
        """3.3.2 step 4: our 200 listing the local bindings."""
        headers = Headers.EMPTY
        for binding in bindings:
            headers = headers.add("Contact", contact_line(binding, now))
        for value in typing.reply_caps:
            headers = headers.add("Feature-Caps", value)
        copied = False
        if upstream is not None:
            for name in COPIED_FROM_UPSTREAM:
                for value in upstream.headers.lines(name):
                    headers = headers.add(name, value)
                    copied = copied or name == "Date"
        if not copied:
            headers = headers.add("Date", formatdate(now, usegmt=True))
        return make_response(request, 200, headers=headers, to_tag=to_tag)

    # ---------------------------------------------------------------- 3.8 queue

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _enqueue(self, reg: UpstreamRegistration, forward: Forward, now: float) -> list[EngineAction]:
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
        if forward.kind is ForwardKind.REFRESH and renewed and self._fresh(reg, now):
            return self._next(reg, now)  # R17: a piggy-back refresh made it unnecessary
        reg.inflight = forward
        request = self._upstream_request(reg, forward)
        forward.sent = request
        key = ForwardKey(reg.aor, forward.seq)
        self._forwards[key] = forward
        actions: list[EngineAction] = []
        actions += self._enter(reg, UpstreamInput.SENT, now)
        keys = tuple(change.key for change in forward.changes)
        actions += [
            SendRequest(request, self.settings.upstream, key),
            StartTimer(key, UPSTREAM_TIMEOUT, self.settings.upstream_timeout),
        ]
        if keys:
            actions.append(Deliver(RegisterForwarded(reg.aor, keys)))
        return actions

    def _next(self, reg: UpstreamRegistration, now: float) -> list[EngineAction]:
        reg.inflight = None
        while reg.queue:
            actions = self._send(reg, reg.queue.popleft(), now)
            if reg.inflight is not None or actions:
                return actions
        return []

    # -------------------------------------------------------- building upstream REGISTERs

    def _upstream_request(self, reg: UpstreamRegistration, forward: Forward) -> Request:
        if forward.kind is ForwardKind.DEVICE:
            assert forward.request is not None
            if self.settings.mode is Mode.MIRROR:
                return self._mirror_request(forward)
            forward.expires = self._aggregate_expires(reg, forward)
            headers = forward.request.headers.remove("Contact").remove("Expires").remove("Path")
            headers = headers.remove("Feature-Caps")
            headers = headers.add("Contact", self.aggregate_contact(reg.aor))
            headers = headers.add("Expires", str(forward.expires))
            for value in forward.typing.upstream_caps:
                headers = headers.add("Feature-Caps", value)
            headers = _decrement_max_forwards(headers)
            return attrs.evolve(forward.request, headers=headers)
        reg.cseq += 1
        forward.expires = 0 if forward.kind is ForwardKind.UNREGISTER else self._outgoing(reg)
        uri = parse_uri(reg.aor)
        assert isinstance(uri, SipUri)
        if self.settings.mode is Mode.MIRROR:
            contact_lines = [f"<{contact}>" for contact in forward.contacts]  # 3.7 kept devices
        else:
            contact_lines = [self.aggregate_contact(reg.aor)]
        headers = Headers.of(
            ("From", f"<{reg.aor}>;tag={hashlib.sha256(reg.call_id.encode()).hexdigest()[:10]}"),
            ("To", f"<{reg.aor}>"),
            ("Call-ID", reg.call_id),
            ("CSeq", f"{reg.cseq} REGISTER"),
            ("Max-Forwards", "70"),
            *(("Contact", line) for line in contact_lines),
            ("Expires", str(forward.expires)),
        )
        request = Request("REGISTER", f"sip:{self.settings.upstream_domain}", headers, b"")
        return self._authorized(reg, forward, request)

    def _outgoing(self, reg: UpstreamRegistration) -> int:
        return max(self.settings.outgoing_expires, reg.floor)

    def _aggregate_expires(self, reg: UpstreamRegistration, forward: Forward) -> int:
        """3.4: 0 only when the forward removes the last binding and no other forward is
        pending for the AoR (R16); else a (piggy-back) refresh of the aggregate."""
        removes = {change.key for change in forward.changes if change.contact is None}
        adds = any(change.contact is not None for change in forward.changes)
        if not removes or adds:
            return self._outgoing(reg)
        current = reg.written if reg.written is not None else self.bindings(reg.aor)
        remaining = [binding for binding in current if binding.key not in removes]
        others = [f for f in reg.queue if f.kind is ForwardKind.DEVICE]
        return 0 if not remaining and not others else self._outgoing(reg)

    def _mirror_request(self, forward: Forward) -> Request:
        """3.7: contact host:port replaced by ``advertised`` plus ``mrct``; Expires unchanged."""
        assert forward.request is not None
        request = forward.request
        headers = request.headers.remove("Contact").remove("Path")
        found = contacts(request)
        if isinstance(found, Star):
            headers = headers.add("Contact", "*")
        else:
            for change, contact in zip(forward.changes, found, strict=False):
                uri = contact.uri
                assert isinstance(uri, SipUri)
                rewritten = self._mirrored_uri(uri, change.key)
                headers = headers.add("Contact", str(attrs.evolve(contact, uri=rewritten)))
        for value in forward.typing.upstream_caps:
            headers = headers.add("Feature-Caps", value)
        return attrs.evolve(request, headers=_decrement_max_forwards(headers))

    def _mirrored_uri(self, uri: SipUri, key: BindingKey) -> SipUri:
        """3.7: a device contact as the upstream sees it: ``advertised`` host:port, ``mrct``."""
        host, _, port = self.settings.advertised.partition(":")
        return attrs.evolve(uri, host=host, port=int(port) if port else None).with_params(
            ("mrct", mrct_of(key))
        )

    def _kept_contacts(self, aor: str, now: float) -> tuple[str, ...]:
        """3.7 mirror mode: the mirrored contacts of the AoR's dormant push bindings (4.5),
        which no device refreshes any more, so scaserver keeps them registered upstream."""
        kept: list[str] = []
        for binding in self.bindings(aor):
            uri = parse_uri(binding.contact)
            if binding.expires_at <= now and isinstance(uri, SipUri):
                kept.append(str(self._mirrored_uri(uri, binding.key)))
        return tuple(sorted(kept))

    def keep_mirrored(self, aor: str, now: float) -> list[EngineAction]:
        """3.7: a binding of ``aor`` became dormant (4.5) in mirror mode: register the AoR's
        dormant contacts upstream in our own registration dialog of the AoR now, and keep
        refreshing them like an aggregate (3.5) while any is left."""
        if self.settings.mode is not Mode.MIRROR:
            return []
        contacts = self._kept_contacts(aor, now)
        if not contacts:
            return []
        reg = self._reg(aor)
        pending = [reg.inflight, *reg.queue] if reg.inflight is not None else list(reg.queue)
        if any(f is not None and f.kind is ForwardKind.REFRESH and f.contacts == contacts for f in pending):
            return []  # the same contacts are on their way already
        refresh = Forward(ForwardKind.REFRESH, self._next_seq(), queued_at=now, contacts=contacts)
        return self._saving(reg, self._enqueue(reg, refresh, now))

    # --------------------------------------------------------------- upstream answers

    def on_upstream_response(self, context: ForwardKey, response: Response, now: float) -> list[EngineAction]:
        """A response to one of our upstream REGISTERs (3.3, 3.5)."""
        forward = self._forwards.get(context)
        reg = self._aors.get(context.aor)
        if forward is None or reg is None or response.status < 200:
            return []
        del self._forwards[context]
        actions: list[EngineAction] = [CancelTimer(context, UPSTREAM_TIMEOUT)]
        if forward.kind is ForwardKind.DEVICE:
            actions += self._device_answer(reg, forward, response, now)
        else:
            actions += self._own_answer(reg, forward, response, now)
        if reg.inflight is forward and ForwardKey(reg.aor, forward.seq) not in self._forwards:
            actions += self._next(reg, now)  # unless it was re-sent (423, challenge)
        reg.written = None
        return self._saving(reg, actions)

    def on_upstream_timeout(self, context: ForwardKey, now: float) -> list[EngineAction]:
        """The client transaction timed out (or ``upstream_timeout`` fired): 408 (3.3.5)."""
        return self._saving(self._aors.get(context.aor), self._failed(context, 408, now))

    def on_upstream_failure(self, context: ForwardKey, now: float) -> list[EngineAction]:
        """The upstream could not be reached: 503 with Retry-After 30 (3.3.5)."""
        return self._saving(self._aors.get(context.aor), self._failed(context, 503, now))

    def _failed(self, context: ForwardKey, status: int, now: float) -> list[EngineAction]:
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
                *self._finished(reg, forward, confirmed=False),
            ]
        else:
            actions += self._own_failure(reg, forward, None, now)
        if reg.inflight is forward:
            actions += self._next(reg, now)
        return actions

    def _finished(
        self, reg: UpstreamRegistration, forward: Forward, *, confirmed: bool
    ) -> list[EngineAction]:
        keys = tuple(change.key for change in forward.changes)
        return [Deliver(RegisterFinished(reg.aor, keys, confirmed))] if keys else []

    def _device_answer(
        self, reg: UpstreamRegistration, forward: Forward, response: Response, now: float
    ) -> list[EngineAction]:
        assert forward.request is not None and forward.peer is not None
        request = forward.request
        relayed = _strip_our_via(response, forward.sent or request)
        if response.status == 423 and not forward.retried_423 and self.settings.mode is Mode.AOR:
            minimum = _min_expires(response)
            if minimum is not None and minimum > forward.expires:
                reg.floor = minimum
                forward.retried_423 = True
                return self._resend(reg, forward)
        if not 200 <= response.status < 300:
            answer = Respond(forward.device_transaction(), relayed)
            return [answer, *self._finished(reg, forward, confirmed=False)]
        actions: list[EngineAction] = []
        granted: dict[BindingKey, int] | None = None
        if self.settings.mode is Mode.AOR:
            actions += self._registered(
                reg, _aggregate_expiry(response, forward.expires), now, forward.expires
            )
        else:
            granted = _mirror_grants(response, forward)
            actions += self._enter(reg, UpstreamInput.ACCEPTED, now)
        bindings, writes = self._apply(
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
        ok = self._ok(request, bindings, now, forward.typing, to_tag=to_tag, upstream=response)
        actions += [Respond(forward.device_transaction(), ok), *self._finished(reg, forward, confirmed=True)]
        return actions

    def _resend(self, reg: UpstreamRegistration, forward: Forward) -> list[EngineAction]:
        """3.3.4: the same forward once more with the larger Expires (the device never sees it)."""
        forward.seq = self._next_seq()
        request = self._upstream_request(reg, forward)
        forward.sent = request
        key = ForwardKey(reg.aor, forward.seq)
        self._forwards[key] = forward
        reg.inflight = forward
        return [
            SendRequest(request, self.settings.upstream, key),
            StartTimer(key, UPSTREAM_TIMEOUT, self.settings.upstream_timeout),
        ]

    def _registered(
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
                *self._enter(reg, UpstreamInput.REMOVED, now),
            ]
        reg.granted, reg.expires_at, reg.renewed_at = lifetime, now + lifetime, now
        delay = max(0.0, lifetime - self.refresh_threshold(reg))
        delay *= 1.0 + self.settings.jitter * (2.0 * self.random() - 1.0)
        delay = min(delay, max(0.0, lifetime - self.settings.refresh_floor))
        return [
            StartTimer(AorKey(reg.aor), REFRESH_TIMER, delay),
            *self._enter(reg, UpstreamInput.ACCEPTED, now),
        ]

    def _enter(self, reg: UpstreamRegistration, given: UpstreamInput, now: float) -> list[EngineAction]:
        """Move ``reg`` by the transition table; a change of state is published."""
        old, reg.state = reg.state, next_state(reg.aor, reg.state, given)
        return [] if reg.state is old else [Deliver(UpstreamChanged(reg.aor, old, reg.state, now))]

    # -------------------------------------------------- 3.5 our own REGISTERs

    def _own_answer(
        self, reg: UpstreamRegistration, forward: Forward, response: Response, now: float
    ) -> list[EngineAction]:
        status = response.status
        if 200 <= status < 300:
            reg.upstream_auth_needed = False
            if forward.kind is ForwardKind.UNREGISTER:
                reg.unregister_failures = 0
                if self.settings.mode is Mode.MIRROR:
                    return []  # one dormant contact removed; the others stay (3.7)
                return self._registered(reg, 0, now, 0)
            return self._registered(reg, _aggregate_expiry(response, forward.expires), now, forward.expires)
        if status in (401, 407):
            return self._challenged(reg, forward, response, now)
        if status == 423 and forward.kind is ForwardKind.REFRESH:
            minimum = _min_expires(response)
            if minimum is not None and minimum > forward.expires and not forward.retried_423:
                reg.floor = minimum
                forward.retried_423 = True
                return self._resend(reg, forward)
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
        chosen = select_challenge(parse_challenges(response), lambda realm: lookup(reg.aor, realm))
        if chosen is None:
            realms = ", ".join(sorted({c.realm for c in parse_challenges(response)})) or "none"
            return self._auth_needed(reg, status, f"no credentials for realm {realms}", now)
        challenge, secret = chosen
        if forward.challenges_answered >= 2 or (forward.challenges_answered == 1 and not challenge.stale):
            return self._auth_needed(reg, status, "our credentials were refused", now)
        forward.challenge, forward.secret = challenge, secret
        forward.challenges_answered += 1
        reg.auth_realm, reg.auth_username = challenge.realm, secret.username
        return self._resend(reg, forward)

    def _auth_needed(
        self, reg: UpstreamRegistration, status: int, detail: str, now: float
    ) -> list[EngineAction]:
        reg.last_error = f"{status} {detail}"
        if reg.upstream_auth_needed:
            return []  # told once per AoR
        reg.upstream_auth_needed = True
        return [Deliver(UpstreamAuthNeeded(reg.aor, status, detail, now))]

    def _authorized(self, reg: UpstreamRegistration, forward: Forward, request: Request) -> Request:
        """Our own REGISTER with the answer to the challenge its forward met (3.5); ``nc``
        counts the requests sent with one nonce (RFC 7616 section 3.4)."""
        if forward.challenge is None or forward.secret is None:
            return request
        if reg.digest_nonce != forward.challenge.nonce:
            reg.digest_nonce, reg.digest_nc = forward.challenge.nonce, 0
        reg.digest_nc += 1
        cnonce = self.cnonce() if self.cnonce is not None else f"{int(self.random() * 2**64):016x}"
        return authorize(request, forward.challenge, forward.secret, nc=reg.digest_nc, cnonce=cnonce)

    def _own_failure(
        self, reg: UpstreamRegistration, forward: Forward, response: Response | None, now: float
    ) -> list[EngineAction]:
        status = None if response is None else response.status
        reg.last_error = "timeout" if status is None else str(status)
        if forward.kind is ForwardKind.UNREGISTER:
            reg.unregister_failures += 1
            if reg.unregister_failures <= 2 and self.settings.mode is Mode.AOR:
                return [StartTimer(AorKey(reg.aor), UNREGISTER_TIMER, self.settings.retry_backoff)]
            return []  # the upstream binding lapses at its own expiry (3.4)
        transient = status is None or status in RETRY_STATUSES or 500 <= status < 600
        if not transient:
            actions = self._enter(reg, UpstreamInput.REFUSED, now)
            actions.append(CancelTimer(AorKey(reg.aor), REFRESH_TIMER))
            for binding in self.bindings(reg.aor):
                actions.append(Deliver(DropBinding(binding.key, "upstream-rejected")))
            return actions
        reg.failures += 1
        delay = min(self.settings.retry_cap, self.settings.retry_backoff * 2 ** (reg.failures - 1))
        retry_after = response.headers.get("Retry-After") if response is not None else None
        if retry_after is not None:
            with contextlib.suppress(MalformedMessage):  # an unreadable Retry-After is ignored
                delay = max(delay, float(parse_uint32(retry_after.split(";")[0].strip(), "Retry-After")))
        actions = self._enter(
            reg, UpstreamInput.FAILED if now < reg.expires_at else UpstreamInput.LAPSED, now
        )
        if reg.state is UpstreamState.LOST and not self.bindings(reg.aor):
            return actions  # 3.5: retries continue only while a local binding is valid
        actions.append(StartTimer(AorKey(reg.aor), REFRESH_TIMER, delay))
        return actions

    # ------------------------------------------------------------------ timers

    def on_timer(self, key: Hashable, name: str, now: float) -> list[EngineAction]:
        actions = self._timer(key, name, now)
        aor = key.aor if isinstance(key, ForwardKey | AorKey) else None
        return self._saving(None if aor is None else self._aors.get(aor), actions)

    def _timer(self, key: Hashable, name: str, now: float) -> list[EngineAction]:
        if isinstance(key, ForwardKey) and name == UPSTREAM_TIMEOUT:
            if key not in self._forwards:
                return []
            return [Deliver(UpstreamGaveUp(key)), *self._failed(key, 408, now)]
        if not isinstance(key, AorKey) or key.aor not in self._aors:
            return []
        reg = self._aors[key.aor]
        if name == REFRESH_TIMER:
            if reg.state is UpstreamState.REGISTERED and now >= reg.expires_at:
                self._enter(reg, UpstreamInput.EXPIRED, now)  # unpublished, as it always was
            if reg.state in (UpstreamState.IDLE, UpstreamState.REJECTED):
                return []
            if reg.state is UpstreamState.RETRYING and now >= reg.expires_at:
                actions = self._enter(reg, UpstreamInput.EXPIRED, now)
            else:
                actions = []
            if reg.state is UpstreamState.LOST and not self.bindings(reg.aor):
                return actions
            contacts: tuple[str, ...] = ()
            if self.settings.mode is Mode.MIRROR:
                contacts = self._kept_contacts(reg.aor, now)
                if not contacts:
                    return actions  # every kept device registers by itself again, or is gone
            refresh = Forward(ForwardKind.REFRESH, self._next_seq(), queued_at=now, contacts=contacts)
            return actions + self._enqueue(reg, refresh, now)
        if name == UNREGISTER_TIMER:
            if self.bindings(reg.aor) or reg.state in (UpstreamState.IDLE, UpstreamState.REJECTED):
                return []  # a device came back during the grace
            return self._enqueue(reg, Forward(ForwardKind.UNREGISTER, self._next_seq()), now)
        return []

    def refresh_now(self, aor: str, now: float) -> list[EngineAction] | None:
        """``uac.reg_refresh`` (rpc.md 3.5): an operator's early refresh of the aggregate of
        ``aor`` (3.5), queued behind a forward in flight like the refresh timer's (3.8).

        None when ``aor`` has no upstream registration.  In mirror mode only the contacts
        scaserver keeps for dormant bindings are refreshed (each live device refreshes its
        own, 3.7); nothing to do when no local binding is left (the AoR is being unregistered,
        3.4).  The refresh timer stays armed: a 2xx re-arms it, a failure leaves the next
        attempt where it was.
        """
        reg = self._aors.get(aor)
        if reg is None:
            return None
        if not self.bindings(aor):
            return []
        if self.settings.mode is Mode.MIRROR:
            return self.keep_mirrored(aor, now)
        return self._enqueue(reg, Forward(ForwardKind.REFRESH, self._next_seq(), queued_at=now), now)

    # ------------------------------------------------------- bindings leaving, restart

    def on_binding_gone(self, aor: str, now: float, binding: Binding | None = None) -> list[EngineAction]:
        """A local binding of ``aor`` expired or was removed other than by a forwarded
        REGISTER: when none is left, unregister upstream after ``unregister_grace`` (3.4).  In
        mirror mode a dormant ``binding`` we kept registered is unregistered upstream (3.7)."""
        reg = self._aors.get(aor)
        if reg is not None and self.settings.mode is Mode.MIRROR:
            uri = None if binding is None else parse_uri(binding.contact)
            if binding is None or binding.expires_at > now or not isinstance(uri, SipUri):
                return []  # a device's own upstream binding lapses with it
            contact = str(self._mirrored_uri(uri, binding.key))
            forward = Forward(ForwardKind.UNREGISTER, self._next_seq(), queued_at=now, contacts=(contact,))
            return self._saving(reg, self._enqueue(reg, forward, now))
        if reg is None or self.bindings(aor) or self.settings.mode is Mode.MIRROR:
            return []
        if reg.state in (UpstreamState.IDLE, UpstreamState.REJECTED):
            return []
        reg.unregister_failures = 0
        return [
            CancelTimer(AorKey(aor), REFRESH_TIMER),
            StartTimer(AorKey(aor), UNREGISTER_TIMER, self.settings.unregister_grace),
        ]

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
            mirrored = self.settings.mode is Mode.MIRROR and self._kept_contacts(item.aor, now)
            if (self.bindings(item.aor) and self.settings.mode is Mode.AOR) or mirrored:
                delay = self.random() * self.settings.startup_spread
                actions.append(StartTimer(AorKey(item.aor), REFRESH_TIMER, delay))
        return actions


@attrs.frozen
class UpstreamGaveUp(Instruction):
    """Instruction: ``upstream_timeout`` fired before the transaction layer's own timer F;
    the dispatcher forgets the client transaction of ``context`` (late answers are stray)."""

    context: ForwardKey


# ------------------------------------------------------------------------- helpers


def _safe_aor(request: Request) -> str:
    try:
        uri = to_addr(request).uri
    except MalformedMessage:
        return ""
    return uri.aor() if isinstance(uri, SipUri) else str(uri)


def _decrement_max_forwards(headers: Headers) -> Headers:
    value = headers.get("Max-Forwards")
    if value is None or not value.strip().isdigit():
        return headers.set("Max-Forwards", "70")
    return headers.set("Max-Forwards", str(max(0, int(value) - 1)))


def _strip_our_via(response: Response, sent: Request) -> Response:
    if len(response.headers.values("Via")) > len(sent.headers.values("Via")):
        return response.with_headers(response.headers.remove_first_value("Via"))
    return response


def _min_expires(response: Response) -> int | None:
    value = response.headers.get("Min-Expires")
    try:
        return None if value is None else parse_uint32(value.strip(), "Min-Expires")
    except MalformedMessage:
        return None


def _aggregate_expiry(response: Response, requested: int) -> int | None:
    """3.3.2 step 1: the aggregate contact's ``expires``, else Expires, else None (requested)."""
    try:
        found = contacts(response)
    except MalformedMessage:
        found = []
    if not isinstance(found, Star):
        for contact in found:
            param = contact.param("expires")
            if param:
                try:
                    return parse_uint32(param, "expires")
                except MalformedMessage:
                    continue
    try:
        header = expires(response)
    except MalformedMessage:
        header = None
    return header if header is not None else (requested or None)


def _mirror_grants(response: Response, forward: Forward) -> dict[BindingKey, int]:
    """3.7: the expiry the upstream granted each contact, matched by ``mrct``."""
    by_mrct = {mrct_of(change.key): change.key for change in forward.changes}
    grants: dict[BindingKey, int] = {}
    try:
        found = contacts(response)
    except MalformedMessage:
        return grants
    if isinstance(found, Star):
        return grants
    for contact in found:
        uri = contact.uri
        mrct = uri.param("mrct") if isinstance(uri, SipUri) else None
        param = contact.param("expires")
        if mrct in by_mrct and param:
            try:
                grants[by_mrct[mrct]] = parse_uint32(param, "expires")
            except MalformedMessage:
                continue
    return grants


def _binding(
    change: _Change,
    request: Request,
    peer: Peer,
    *,
    call_id: str,
    number: int,
    expires_at: float,
    previous: Binding | None,
    now: float,
) -> Binding:
    """3.3.2 step 2: the stored binding (device expiry, never the upstream's)."""
    contact = change.contact
    assert contact is not None
    uri = contact.uri
    assert isinstance(uri, SipUri)
    instance = contact.param("+sip.instance")
    reg_id = contact.param("reg-id")
    q = contact.param("q")
    return Binding(
        key=change.key,
        contact=str(uri),
        expires_at=expires_at,
        call_id=call_id,
        cseq=number,
        received=peer,
        q=float(q) if q else None,
        user_agent=request.headers.get("User-Agent"),
        path=tuple(request.headers.values("Path")),
        instance=_unquote(instance) if instance else None,
        reg_id=int(reg_id) if reg_id and reg_id.isdigit() else None,
        params=tuple((n, v) for n, v in contact.params if n.lower() not in ("expires", "q")),
        push=tuple((n.lower(), v or "") for n, v in uri.params if n.lower().startswith("pn-")),
        registered_at=previous.registered_at if previous is not None else now,
        updated_at=now,
    )
