"""The router of scaserver, the transaction user of its SIP stack: bytes in, actions out.

:class:`SipRouter` is the pure core the edge drives (``receive``, ``on_timer``,
``connection_lost``; :class:`scaserver.edge.stack.DrivenCore`).  What arrives passes the
front door of :mod:`scaserver.sip.endpoint` (RFC 3261 8.2 and 18 checks, stateless answers)
and runs through the transaction layer (:mod:`scaserver.router.actionloop`); each new request
comes back here and goes to the engine whose job it is (after the RFC 3261 16.3 checks):

- REGISTER for a local domain -> the registrar (after digest authentication,
  :mod:`scaserver.router.authentication`);
- SUBSCRIBE with ``Event: call-info`` or ``line-seize`` -> the SCA engine
  (:mod:`scaserver.router.subscriptions`);
- OPTIONS to the server itself -> answered here (:mod:`scaserver.router.options`);
- a mid-dialog request or an ACK -> along its Route set (:mod:`scaserver.router.indialog`);
- everything else -> the stateful proxy, with targets from the location service
  or the configured upstream, and the SCA engine told about every call it relays (a call to
  push devices is parked first, :mod:`scaserver.router.parkedcalls`).

Engines never import each other; this module is where their outputs meet.  An
engine returns :data:`~scaserver.sip.actions.EngineAction` values, which the action loop runs:
``Respond`` and ``SendRequest`` through the transaction layer (the outcome of a request goes
to the owner registered for its context type, :mod:`scaserver.owners`, by way of
:mod:`scaserver.router.clients`), an instruction or a fact back to the router, which carries
the instruction out and hands the fact to the engines that consume it, and what is left (Send,
timers, Deliver) to the edge.  Nothing here performs I/O or reads a clock.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Final, assert_never

import attrs

from scaserver.guard.sources import SourceGuard
from scaserver.owners import ClientOwners
from scaserver.parking.calls import CallParking
from scaserver.proxy.context import BranchKey, CancelBranch
from scaserver.proxy.events import AckForwarded, CallCancelled, RequestForwarded, ResponseRelayed
from scaserver.proxy.proxy import Proxy
from scaserver.proxy.relay import (
    check_initial,
    check_next_hop,
    every_host,
)
from scaserver.proxy.routing import (
    ProxyIdentity,
    check_proxy_require,
    preprocess_route,
)
from scaserver.proxy.sessiontimer import (
    SessionTimerPolicy,
)
from scaserver.proxy.target import Target
from scaserver.push.gateway import Answer, PushRequest
from scaserver.push.service import PushService
from scaserver.registrar.binding import BindingKey
from scaserver.registrar.midregevents import (
    DropBinding,
    PutBinding,
    RegisterFinished,
    RegisterForwarded,
    UpstreamGaveUp,
)
from scaserver.registrar.nat import FlowFailure
from scaserver.registrar.registrar import Registrar
from scaserver.router.actionloop import ActionLoop
from scaserver.router.addressing import is_for_us, is_local_domain, origin
from scaserver.router.authentication import asserting, authenticate, consume_credentials, refuse
from scaserver.router.clients import ClientTransactions
from scaserver.router.disclosure import Disclosure
from scaserver.router.flows import flow_dead
from scaserver.router.indialog import relay_ack, relay_in_dialog
from scaserver.router.options import (
    SCA_EVENTS,
    is_options_for_us,
    names_shared_line,
    options_response,
    published_event,
)
from scaserver.router.parkedcalls import ParkingInstruction, carry_out, park_initial
from scaserver.router.sessions import SessionTimers
from scaserver.router.settings import CoreSettings
from scaserver.router.subscriptions import other_event_on_line, subscribe
from scaserver.router.transport import secure_targets
from scaserver.sca.engine import ScaEngine
from scaserver.sca.line import SharedLine
from scaserver.sip import headers
from scaserver.sip.actions import (
    Action,
    Deliver,
    EngineAction,
    Fact,
    Instruction,
    Respond,
)
from scaserver.sip.digest import (
    Authenticator,
    CredentialLookup,
    Rejected,
)
from scaserver.sip.domains import DomainPolicy
from scaserver.sip.errors import (
    BadEvent,
    BadRequest,
    Forbidden,
    LoopDetected,
    MethodNotAllowed,
    NotFound,
    NotImplementedMethod,
    ProtocolStateError,
    SipError,
    TemporarilyUnavailable,
    TooManyHops,
    UnsupportedUriScheme,
)
from scaserver.sip.keys import ClientKey, ServerKey
from scaserver.sip.message import KNOWN_METHODS, Headers, Peer, Request, Response
from scaserver.sip.responses import make_response, response_for
from scaserver.sip.transactions import (
    CancelReceived,
    TransactionLayer,
)
from scaserver.sip.trust import (
    TrustedPeers,
)
from scaserver.sip.uri import NameAddr, SipUri, TelUri, parse_uri

RouterInstruction = (
    CancelBranch
    | UpstreamGaveUp
    | PutBinding
    | DropBinding
    | RegisterForwarded
    | RegisterFinished
    | ParkingInstruction
)
"""Every instruction the router has carried out: a proxy branch to cancel, an upstream
REGISTER to forget, the mid-registrar's bindings, and call parking's branches and pushes."""


class _DeliveredSort(enum.Enum):
    """What :meth:`SipRouter.deliver` makes of an event's class."""

    __hash__ = object.__hash__  # members are singletons: identity hash in C, not Enum.__hash__

    REACTED_FACT = "a fact _on_fact hands to an engine"
    PLAIN_FACT = "a fact only push and parking may react to"
    OTHER = "an instruction, or an event of no type the parts react to"


_REACTED_FACTS: Final = (RequestForwarded, ResponseRelayed, AckForwarded, CallCancelled)
"""The facts the router hands to an engine whatever the parts it runs (``_on_fact``)."""

_DELIVERED_SORTS: dict[type, _DeliveredSort] = {}
"""The sort of each class :meth:`SipRouter.deliver` has met (a bounded set: classes)."""


def _sort_of(kind: type) -> _DeliveredSort:
    """The sort of events of class ``kind``, remembered in :data:`_DELIVERED_SORTS`."""
    if issubclass(kind, _REACTED_FACTS):
        sort = _DeliveredSort.REACTED_FACT
    elif issubclass(kind, Fact):
        sort = _DeliveredSort.PLAIN_FACT
    else:
        sort = _DeliveredSort.OTHER
    _DELIVERED_SORTS[kind] = sort
    return sort


@attrs.define
class SipRouter:
    """The pure SIP core behind the edge (it is a ``scaserver.edge.stack.DrivenCore``)."""

    settings: CoreSettings
    layer: TransactionLayer
    identity: ProxyIdentity
    authenticator: Authenticator
    trusted: TrustedPeers
    registrar: Registrar
    proxy: Proxy
    sca: ScaEngine
    unique: Callable[[], str]
    push: PushService | None = None  # push mid-registrar devices (push-and-parking.md 3-5)
    parking: CallParking | None = None  # call parking over the push devices (push-and-parking.md 6)
    known_host: Callable[[str], bool] = every_host  # a host name the edge can send to (relay rule R6)
    guard: SourceGuard | None = None  # authentication failures counted towards bans and lockouts
    session_timer: SessionTimerPolicy | None = None  # RFC 4028 proxy for calls of shared lines
    clients: ClientTransactions = attrs.field(init=False)
    sessions: SessionTimers = attrs.field(init=False)
    disclosure: Disclosure = attrs.field(init=False)
    loop: ActionLoop = attrs.field(init=False)
    _aliases: dict[str, str] = attrs.field(factory=dict, init=False)  # sca.md Q26

    def __attrs_post_init__(self) -> None:
        self.clients = ClientTransactions(self.layer, self.unique)
        self.sessions = SessionTimers(self.sca)
        self.disclosure = Disclosure(self.sca)
        self.loop = ActionLoop(self, self.layer, self.unique, self.clients, self.sessions, self.disclosure)

    @property
    def owners(self) -> ClientOwners:
        """Who hears how each request sent with ``SendRequest`` ended, by the type of its
        context (registered by the composition root)."""
        return self.clients.owners

    @owners.setter
    def owners(self, owners: ClientOwners) -> None:
        self.clients.owners = owners

    @property
    def has_alternative(self) -> Callable[[Peer, str], bool]:
        """Whether a request to a named destination that failed on the transaction of Via
        branch ``branch`` has another target to try (RFC 3263 4.3; the edge's locator answers)."""
        return self.clients.has_alternative

    @has_alternative.setter
    def has_alternative(self, query: Callable[[Peer, str], bool]) -> None:
        self.clients.has_alternative = query

    # ------------------------------------------------------------------ edge entry points

    def replace_directory(
        self,
        *,
        credentials: CredentialLookup,
        trusted: TrustedPeers,
        domains: DomainPolicy,
        lines: Iterable[SharedLine],
    ) -> None:
        """A reloaded directory, swapped in at once between two messages: the digest
        credentials, the trusted peers, which domains are ours (registrar, proxy, digest)
        and the shared lines.  Lines that stay keep their subscriptions and appearances."""
        self.settings = attrs.evolve(self.settings, domains=domains)
        self.authenticator.use_directory(credentials, domains)
        self.registrar.use_domains(domains)
        self.trusted = trusted
        self.sca.provision(lines)

    def set_aliases(self, aliases: Mapping[str, str]) -> None:
        """The other names of the shared lines (sca.md Q26, alias AoR -> line AoR), for the
        proxy (an INVITE to an alias rings the line) and the SCA engine alike."""
        self._aliases = dict(aliases)
        self.sca.set_aliases(dict(aliases))

    def aliases(self) -> Mapping[str, str]:
        """The alias map now (alias AoR -> line AoR)."""
        return self._aliases

    def _line_of(self, aor: str) -> str:
        """The shared line an AoR is another name of, else the AoR itself."""
        return self._aliases.get(aor, aor)

    def receive(self, data: bytes, peer: Peer, now: float) -> list[Action]:
        """One datagram, or one framed stream message, from ``peer``."""
        return self.loop.receive(data, peer, now)

    def on_timer(self, key: Hashable, name: str, now: float) -> list[Action]:
        """A timer one of the parts asked for has fired: hand it back to its owner."""
        kind = type(key)  # by the exact class first: most timers are transactions'
        if kind is ClientKey or kind is ServerKey or isinstance(key, ServerKey | ClientKey):
            return self.loop.run(self.layer.on_timer(key, name, now), now)  # type: ignore[arg-type]
        if isinstance(key, BindingKey):
            return self.loop.run(self.registrar.on_timer(key, name, now), now)
        if isinstance(key, BranchKey):
            return self.loop.run(self.proxy.on_timer(key, name, now), now)
        if self.push is not None and self.push.owns_timer(key):
            return self.loop.run(self.push.on_timer(key, name, now), now)
        if self.parking is not None and self.parking.owns_timer(key):
            return self.loop.run(self.parking.on_timer(key, name, now), now)
        return self.loop.run(self.sca.on_timer(key, name, now), now)

    def connection_lost(self, peer: Peer, now: float) -> list[Action]:
        """A stream connection closed: its transactions fail over to their transport error path
        (RFC 3261 17.1.4, 17.2.4)."""
        actions: list[Action] = []
        if self.push is not None:
            self.push.flow_closed(peer)
        for key in self.layer.keys_for(peer):
            actions += self.layer.transport_failed(key, now)
        return self.loop.run(actions, now)

    def flow_failed(self, flow: Peer, cause: FlowFailure, now: float) -> list[Action]:
        """The flow ``flow`` is dead (:mod:`scaserver.registrar.nat`): the bindings registered
        over it are removed and the SCA subscriptions on it end, so that nothing is sent into
        it any more.  A closed connection only counts for RFC 5626 outbound bindings (a phone
        without outbound is reached by dialling its Contact again); nothing is published when
        it was the flow of none."""
        return self.loop.run(flow_dead(self.registrar, self.sca, flow, cause, now), now)

    def run(self, actions: Iterable[EngineAction], now: float) -> list[Action]:
        """Run engine actions produced outside a SIP input (an RPC seizing an appearance)."""
        return self.loop.run(actions, now)

    def push_delivered(self, request: PushRequest, answer: Answer, dropped: bool, now: float) -> list[Action]:
        """The push gateway client's last word on one push attempt (push-and-parking.md 5.2)."""
        if self.push is None:
            return []
        actions = self.push.on_push_delivered(request, answer, dropped, now)
        if self.parking is not None:
            actions += self.parking.on_push_delivered(request, answer, dropped, now)
        return self.loop.run(actions, now)

    def push_retrying(self, request: PushRequest, now: float) -> list[Action]:
        """A push attempt is waiting to be retried (5.3)."""
        if self.push is None:
            return []
        actions = self.push.on_push_retrying(request, now)
        if self.parking is not None:
            actions += self.parking.on_push_retrying(request, now)
        return self.loop.run(actions, now)

    # ------------------------------------------------------------------ what is delivered

    def deliver(self, delivered: Deliver, now: float) -> list[Action]:
        """An instruction the engines ask the router to carry out, or a fact they report
        (``delivered.event``); a fact is published with ``delivered`` itself."""
        event = delivered.event
        kind = type(event)
        # The most frequent: a fact, told by its class remembered (no isinstance per fact);
        # one no engine reacts to is published as it is (no _on_fact call).
        sort = _DELIVERED_SORTS[kind] if kind in _DELIVERED_SORTS else _sort_of(kind)
        if sort is _DeliveredSort.PLAIN_FACT and self.push is None:
            return [delivered]
        if sort is not _DeliveredSort.OTHER:
            return self._on_fact(event, delivered, now)  # type: ignore[arg-type]
        if isinstance(event, RouterInstruction):
            return self._on_instruction(event, now)
        if isinstance(event, Instruction):
            raise ProtocolStateError(f"an instruction nobody carries out: {event!r}")
        return [delivered]  # of no type the parts react to: published as it is

    def on_stray_response(self, response: Response, now: float) -> list[EngineAction]:
        """A response no client transaction matched: the proxy's to relay or drop (RFC 3261 16.7)."""
        relayed = self.proxy.on_stray_response(response, now)
        if relayed:  # a late 2xx of ours, forwarded statelessly (a restart lost its transaction)
            relayed += self.sca.on_stray_answer(response, now)
        return relayed

    def _on_instruction(self, instruction: RouterInstruction, now: float) -> list[Action]:
        if isinstance(instruction, ParkingInstruction):
            return self.loop.run(carry_out(self, instruction, now), now)
        match instruction:
            case CancelBranch(branch=branch, reason=reason):
                client = self.clients.client_of(branch)
                if client is None:
                    return []
                return self.loop.run(self.layer.cancel(client, now, reason=reason), now)
            case UpstreamGaveUp(context=context):
                self.clients.abandon(context)  # its late answer is stray
                return []
            case PutBinding() | DropBinding() | RegisterForwarded() | RegisterFinished():
                if self.push is None:
                    raise ProtocolStateError(f"a mid-registrar instruction without push: {instruction!r}")
                carried = self.push.handle(instruction, now) if self.push.handles(instruction) else []
                if self.parking is not None and self.parking.handles(instruction):
                    carried += self.parking.handle(instruction, now)
                return self.loop.run(carried, now)
            case _:
                assert_never(instruction)

    def _on_fact(self, fact: Fact, published: Deliver, now: float) -> list[Action]:
        """A fact: published on the bus (``published``, the action that delivered it, not a new
        one), and handed to the parts that react to it (their actions run into the list that
        starts with it: no second list copied in)."""
        match fact:
            case RequestForwarded(request=request):
                return self.loop.run(self.sca.on_request_forwarded(request, now), now, [published])
            case ResponseRelayed(request=request, response=response, generated=generated):
                tracked = self.sca.on_response_forwarded(request, response, now, local=generated)
                tracked += self.sessions.learnt(request, response, now, self.session_timer)
                return self.loop.run(tracked, now, [published])
            case AckForwarded(ack=ack):
                return self.loop.run(self.sca.on_ack(ack, now), now, [published])
            case CallCancelled(cancel=cancel):
                return self.loop.run(self.sca.on_cancel(cancel, now), now, [published])
            case _ if self.push is not None and self.push.handles(fact):
                reacted = self.push.handle(fact, now)
                if self.parking is not None and self.parking.handles(fact):
                    reacted += self.parking.handle(fact, now)
                return self.loop.run(reacted, now, [published])
            case _:
                return [published]

    # ------------------------------------------------------------------ server side

    def on_cancel(self, event: CancelReceived, now: float) -> list[EngineAction]:
        """A CANCEL, answered by its server transaction's state (RFC 3261 9.2, 16.10)."""
        if event.invite_key is not None and event.invite_key in self.proxy:
            actions = self.proxy.on_cancel(event.cancel, event.key, event.invite_key, now)
            if self.parking is not None:
                actions += self.parking.on_cancel(event.invite_key, now)  # 6.5: 487 at once
            return actions
        if event.invite_key is not None:
            # RFC 3261 9.2: the INVITE's transaction exists and its final response is out
            # (race R9): the CANCEL has no effect and is answered 200.
            return [Respond(event.key, make_response(event.cancel, 200))]
        # No INVITE transaction (gone with a restart): 481, but the call's appearance is
        # released all the same (sca.md O8, I6).
        refused = Respond(event.key, make_response(event.cancel, 481, to_tag=self.unique()[:10]))
        return [refused, *self.sca.on_cancel(event.cancel, now)]

    def on_ack(self, ack: Request, peer: Peer, now: float) -> list[EngineAction]:
        """An ACK for a 2xx, relayed along its Route set (:mod:`scaserver.router.indialog`)."""
        return relay_ack(self, ack, peer, now)

    def on_request(self, request: Request, peer: Peer, key: ServerKey, now: float) -> list[EngineAction]:
        """Route a new request to the part of the server whose job it is."""
        try:
            return self._route(request, peer, key, now)
        except SipError as error:
            return [Respond(key, response_for(request, error, to_tag=self.unique()[:10]))]

    def _route(self, request: Request, peer: Peer, key: ServerKey, now: float) -> list[EngineAction]:
        method = request.method
        if method not in KNOWN_METHODS:
            raise NotImplementedMethod(method, headers=Headers.of(("Allow", ", ".join(KNOWN_METHODS))))
        uri = parse_uri(request.uri)
        if not isinstance(uri, SipUri | TelUri):
            raise UnsupportedUriScheme(uri.scheme)
        to = headers.to_addr(request)
        in_dialog = to.tag is not None
        event_header = headers.event(request) if method == "SUBSCRIBE" else None
        if method == "SUBSCRIBE" and event_header is not None and event_header.package.lower() in SCA_EVENTS:
            return subscribe(self, request, peer, key, in_dialog=in_dialog, now=now)
        if method == "SUBSCRIBE" and not in_dialog and names_shared_line(uri, self._line_of, self.sca.is_sca):
            return other_event_on_line(self, request, peer, key, event=event_header, now=now)
        if in_dialog:
            return relay_in_dialog(self, request, peer, key, now)
        if method == "PUBLISH" and is_local_domain(self, uri) and "Route" not in request.headers:
            # RFC 3903 section 6 step 2: the PUBLISH is for the state agent of an AoR of ours,
            # which is this server, and it composes no event state: 489 with the packages it
            # serves.  Forking it to the AoR's contacts would hand it back to the publisher.
            allow = Headers.of(("Allow-Events", ", ".join(SCA_EVENTS)))
            raise BadEvent(
                f"PUBLISH of {published_event(request)}: no event state composed here", headers=allow
            )
        if method == "REGISTER":
            return self._register(request, peer, key, to, now)
        if method == "OPTIONS" and is_options_for_us(uri, lambda local: is_local_domain(self, local)):
            return [Respond(key, options_response(request, self.settings, self.unique()[:10]))]
        to_server = isinstance(uri, SipUri) and not uri.user and is_for_us(self, request)
        if to_server and "Route" not in request.headers:
            allow = Headers.of(("Allow", "OPTIONS, REGISTER, SUBSCRIBE"))
            raise MethodNotAllowed(f"{method} to the server itself", headers=allow)
        return self._proxy_initial(request, peer, key, uri, now)

    # ------------------------------------------------------------------ registrations

    def _register(
        self, request: Request, peer: Peer, key: ServerKey, to: NameAddr, now: float
    ) -> list[EngineAction]:
        if not isinstance(to.uri, SipUri):
            # The AoR must be a SIP or SIPS URI (10.3 step 5, RFC 4475 3.3.4): no use challenging.
            raise BadRequest("the To of a REGISTER must be a sip: or sips: URI")
        if self.push is not None and self.push.midregistrar is not None:
            # The upstream registrar authenticates devices (push-and-parking.md 3.2).
            return self.push.on_register(request, peer, key, now)
        decision = authenticate(self, request, peer, now)
        if isinstance(decision, Rejected):
            return refuse(self, key, request, peer, decision, now=now, to_tag=self.unique()[:10])
        user = decision.username if decision is not None else None
        return self.registrar.on_register(request, peer, user, now, transaction=key)

    # ------------------------------------------------------------------ proxying

    def _proxy_initial(
        self, request: Request, peer: Peer, key: ServerKey, uri: SipUri | TelUri, now: float
    ) -> list[EngineAction]:
        # RFC 3261 16.3 order: Max-Forwards (item 3), Proxy-Require (item 5), then
        # Proxy-Authorization (item 6): a 420 is never preceded by a challenge.
        local = is_local_domain(self, uri)  # once: it reads the settings, which stay put here
        if not local and headers.max_forwards(request) == 0:
            raise TooManyHops("Max-Forwards exhausted")
        check_proxy_require(request, self.proxy.settings.supported)
        routed = preprocess_route(request, self.identity)
        if "Route" in routed.headers:
            # A pre-loaded Route beyond us: trusted peers only (relay rules R4, R6).
            upstream = self.settings.upstream
            check_initial(origin(self, peer), local=local, preloaded_route=True, upstream=upstream)
            check_next_hop(routed, self.identity, self.known_host)
            return self.proxy.on_request(request, key, peer, (), now)
        decision = authenticate(self, request, peer, now)
        if isinstance(decision, Rejected):
            return refuse(self, key, request, peer, decision, now=now, to_tag=self.unique()[:10])
        if decision is not None:
            request = consume_credentials(request, decision.realm)
        request = self.sessions.offer(request, key, self.session_timer)
        sender = origin(self, peer, decision)
        why_foreign = "" if local or not isinstance(uri, SipUri) else self.settings.domains.why_not(uri.host)
        upstream = self.settings.upstream
        check_initial(sender, local=local, preloaded_route=False, upstream=upstream, why_foreign=why_foreign)
        if not local:
            asserted = asserting(self, request, peer, decision, self.sca.caller_line)
            return self._to_upstream(asserted, peer, key, uri, now)
        assert isinstance(uri, SipUri)
        plan = self.sca.check_request(request, now)
        if plan.rejection is not None:
            raise plan.rejection
        if plan.target is not None:
            retargeted = request
            if plan.replaces is not None:
                retargeted = request.with_headers(request.headers.set("Replaces", plan.replaces))
            return self.proxy.on_request(retargeted, key, peer, (Target(plan.target),), now)
        aor = self._line_of(self.push.aor_of(uri) if self.push is not None else uri.aor())
        bindings = self.registrar.lookup(aor, now)
        if self.push is not None:
            bindings, dormant = self.push.targets(uri, aor, bindings)
            parked = park_initial(
                self, request, peer, key, aor=aor, bindings=bindings, dormant=dormant, now=now
            )
            if parked is not None:
                return parked
        if not bindings and request.method == "OPTIONS":
            return [Respond(key, options_response(request, self.settings, self.unique()[:10]))]
        if not bindings:
            if self.sca.is_sca(aor):
                raise TemporarilyUnavailable("no member of the shared line is registered")
            raise NotFound("no such user here")
        uris = [self.push.target_uri(b) if self.push is not None else b.contact for b in bindings]
        targets = [
            Target(contact, binding.sort_q, binding.path, binding.flow)
            for contact, binding in zip(uris, bindings, strict=True)
        ]
        if uri.secure:
            targets = secure_targets(targets)
        honour_6xx = not self.sca.is_sca(aor) or self.sca.settings.decline_ends_ringing
        return self.proxy.on_request(request, key, peer, targets, now, honour_6xx=honour_6xx)

    def _to_upstream(
        self, request: Request, peer: Peer, key: ServerKey, uri: SipUri | TelUri, now: float
    ) -> list[EngineAction]:
        """A request for another domain: to the configured upstream, from our own subscribers
        (authenticated) or trusted peers only.  No open relay (RFC 3261 16.3 item 6 policy)."""
        upstream = self.settings.upstream
        if upstream is None:
            host = uri.host if isinstance(uri, SipUri) else str(uri)
            raise Forbidden(f"no upstream to relay to: {self.settings.domains.why_not(host)}")
        if upstream == peer:
            raise LoopDetected("a request from the upstream for a foreign domain")
        return self.proxy.on_request(request, key, peer, (Target(str(uri), flow=upstream),), now)
