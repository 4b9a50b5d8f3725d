"""The composition root: settings in, one running service tree out (STYLE.md P5).

:func:`make_service` builds a :class:`~twisted.application.service.MultiService`
holding the :class:`~scaserver.edge.stack.SipStack` (which owns the SIP timers)
and, for each ``server.listen`` address, a UDP and a TCP listener feeding it.
The SIP core is injected into the stack; nothing below this module imports
upwards.  Start-up order is the order of :meth:`SipService.addService`; the
MultiService stops its children in reverse, so listeners close first and the
stack (timers, open TCP connections) last.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Protocol, cast

import attrs
from prometheus_client import CollectorRegistry
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.server import Site
from typing_extensions import override

from scaserver.config import Settings
from scaserver.control.catalogue import build_registry
from scaserver.control.dispatcher import DispatchOptions
from scaserver.control.registry import Scope
from scaserver.control.system import ServerInfo, product_version
from scaserver.dispatch import AuthenticationRejected, CoreSettings, MessageDropped, SipCore, StatelessReply
from scaserver.edge.controlplane import EngineScaControl, EngineScaGauges, RegistrarLocationControl
from scaserver.edge.dbpool import DatabasePool
from scaserver.edge.http import BearerTokens, HttpPolicy, build_site, check_rpc_bind, rpc_dispatcher
from scaserver.edge.resolver import HostsTable
from scaserver.edge.rpcdgram import RpcDatagramProtocol, listen_unix_datagram
from scaserver.edge.stack import SipCore as CoreProtocol
from scaserver.edge.stack import SipStack, TimerClock, Transports
from scaserver.edge.tcp import SipStreamFactory, StreamLimits, TcpDialer, TcpListener, TcpReactor
from scaserver.edge.udp import UdpListener, UdpReactor, UdpTransport
from scaserver.edge.writebehind import Channel, WriteBehind
from scaserver.events import EventBus
from scaserver.logs import MessageTrace
from scaserver.metrics import Metrics
from scaserver.proxy.proxy import Proxy, ProxySettings
from scaserver.proxy.routing import Interface, ProxyIdentity
from scaserver.registrar.binding import (
    Binding,
    BindingAdded,
    BindingExpired,
    BindingKey,
    BindingRefreshed,
    BindingRemoved,
)
from scaserver.registrar.registrar import Registrar, RegistrarPolicy
from scaserver.sca.appearance import Appearance, AppearanceChanged, AppearanceState, TriggerIgnored
from scaserver.sca.engine import EngineSettings, ScaEngine
from scaserver.sca.line import SharedLine, canonical_aor
from scaserver.sca.subscription import (
    Subscription,
    SubscriptionAdded,
    SubscriptionKey,
    SubscriptionNotified,
    SubscriptionRefreshed,
    SubscriptionRemoved,
)
from scaserver.sip.digest import Algorithm, Authenticator, CredentialLookup, Credentials, NonceFactory
from scaserver.sip.message import Peer, Transport
from scaserver.sip.timers import TimerConfig
from scaserver.sip.transactions import TransactionLayer
from scaserver.sip.trust import TrustedPeer, TrustedPeers
from scaserver.sip.uri import format_host
from scaserver.store.migrate import check_up_to_date
from scaserver.store.repository import AppearanceKey, appearance_key, binding_key, subscription_key
from scaserver.store.sql import SqlStore


class Reactor(TimerClock, UdpReactor, TcpReactor, Protocol):
    """What the service tree needs from the reactor."""

    def callFromThread(self, callable: Callable[..., object], *args: object, **kw: object) -> None: ...  # noqa: N802


class SipService(MultiService):
    """The root service, with handles on the parts the composition root wires together."""

    _log = Logger()

    def __init__(self, stack: SipStack, transports: Transports, bus: EventBus) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.stack, self.transports, self.bus = stack, transports, bus
        self.udp: list[UdpListener] = []
        self.tcp: list[TcpListener] = []

    def adopt(self, service: Service) -> None:
        """Add a child service (started in adoption order, stopped in reverse)."""
        self.addService(service)  # type: ignore[no-untyped-call]


def _report_handler_error(event: object, error: BaseException) -> None:
    SipService._log.error("event handler failed on {event}: {error!r}", event=repr(event), error=error)


def make_service(
    settings: Settings,
    reactor: Reactor,
    core: CoreProtocol,
    *,
    bus: EventBus | None = None,
    hosts: HostsTable | None = None,
) -> SipService:
    """Wire the SIP edge (stack, UDP and TCP listeners) around ``core`` for ``settings``.

    Nothing is bound until the returned service is started.
    """
    bus = bus if bus is not None else EventBus(on_handler_error=_report_handler_error)
    transports = Transports(hosts=hosts if hosts is not None else HostsTable.load())
    trace = MessageTrace() if settings.sip.trace else None
    stack = SipStack(core, reactor, transports, bus, trace=trace)
    limits = StreamLimits(
        max_message_size=settings.sip.max_message_size,
        idle_timeout=settings.sip.tcp_idle_timeout,
        slow_sender_timeout=settings.sip.tcp_slow_sender_timeout,
    )
    streams = SipStreamFactory(stack, transports, limits, reactor)
    transports.set_dialer(TcpDialer(reactor, streams))
    root = SipService(stack, transports, bus)
    root.adopt(stack)
    for endpoint in settings.server.listen:
        datagrams = UdpTransport(stack, transports, endpoint.host, settings.sip.max_message_size)
        udp = UdpListener(reactor, endpoint.host, endpoint.port, datagrams)
        tcp = TcpListener(reactor, endpoint.host, endpoint.port, streams)
        root.udp.append(udp)
        root.tcp.append(tcp)
        root.adopt(udp)
        root.adopt(tcp)
    return root


# --------------------------------------------------------------------------- the whole server


def core_settings(settings: Settings) -> CoreSettings:
    upstream = settings.upstream
    return CoreSettings(
        domains=frozenset(domain.lower() for domain in settings.server.domains),
        upstream=Peer(upstream.transport, upstream.host, upstream.port) if upstream.host else None,
        require_auth=settings.auth.require,
        server=settings.server.user_agent,
        strip_call_info=settings.sca.strip_call_info,
    )


def realm_of(settings: Settings) -> str:
    """The digest realm: ``auth.realm``, else the first domain, else the advertised host."""
    if settings.auth.realm:
        return settings.auth.realm
    if settings.server.domains:
        return settings.server.domains[0].lower()
    return settings.server.advertised()[0]


def configured_lines(settings: Settings, domains: frozenset[str]) -> list[SharedLine]:
    """The ``[[sca.lines]]`` of the configuration as engine values.

    A member written as a SIP URI of a local domain also admits the digest user of
    that URI, so ``sip:2001a@example.com`` lets subscriber ``2001a`` on the line.
    """
    lines: list[SharedLine] = []
    for line in settings.sca.lines:
        aor = canonical_aor(line.aor) or line.aor
        members: set[str] = set()
        for member in line.members:
            members.add(member)
            uri = canonical_aor(member)
            if uri is not None:
                members.add(uri)
                user, _, host = uri.partition(":")[2].partition("@")
                if host.lower() in domains:
                    members.add(user)
        lines.append(SharedLine(aor, line.appearances, frozenset(members)))
    return lines


def member_of(
    lines: Callable[[], Iterable[SharedLine]], domains: frozenset[str]
) -> Callable[[str, str], bool]:
    """``(digest user, identity user) -> bool``: the user is the identity, or a member of the
    shared line named by the identity in one of our domains (members register and call as the line)."""

    def allowed(username: str, identity_user: str) -> bool:
        if username == identity_user:
            return True
        for line in lines():
            user, _, host = line.aor.partition(":")[2].partition("@")
            if user == identity_user and host.lower() in domains and line.admits(user=username):
                return True
        return False

    return allowed


def make_core(
    settings: Settings,
    *,
    credentials: CredentialLookup,
    trusted: TrustedPeers,
    lines: Sequence[SharedLine],
    secret: bytes,
    entropy: Callable[[int], bytes] = os.urandom,
    unique: Callable[[], str] = lambda: secrets.token_hex(8),
) -> SipCore:
    """The pure SIP core (dispatcher, transaction layer, engines) for ``settings``."""
    core = core_settings(settings)
    host, port = settings.server.advertised()
    interfaces = [
        Interface(transport, endpoint.host, endpoint.port)
        for endpoint in settings.server.listen
        for transport in (Transport.UDP, Transport.TCP)
    ]
    if (host, port) != (settings.server.listen[0].host, settings.server.listen[0].port):
        interfaces = [Interface(i.transport, host, port) for i in interfaces[:2]] + interfaces
    identity = ProxyIdentity(tuple(interfaces), aliases=frozenset({host.lower()}))

    def local_via(peer: Peer) -> tuple[str, str, int]:
        if ":" in peer.host:
            for endpoint in settings.server.listen:
                if ":" in endpoint.host:
                    return peer.transport.value, endpoint.host, endpoint.port
        return peer.transport.value, host, port

    layer = TransactionLayer(
        TimerConfig(t1=settings.sip.t1, t2=settings.sip.t2, t4=settings.sip.t4),
        branch_factory=unique,
        local_via=local_via,
    )
    sca = settings.sca
    contact = sca.server_address or f"sip:{format_host(host)}:{port}"
    engine = ScaEngine(
        EngineSettings(
            contact=contact,
            call_info_max_expires=sca.call_info_max_expires,
            line_seize_max_expires=sca.line_seize_max_expires,
            min_expires=sca.min_expires,
            call_info_ok_code=sca.call_info_ok_code,
            max_appearances=sca.max_appearances,
            alerting_state=sca.alerting_state,
            call_info_uri=sca.call_info_uri,
            seized_ttl=sca.seized_ttl,
            active_pending_ttl=sca.active_pending_ttl,
            seize_retry_after=sca.seize_retry_after,
            contact_fallback=sca.contact_fallback,
        ),
        tag_factory=unique,
    )
    engine.provision(lines)
    membership = member_of(lambda: list(engine.provisioned()), core.domains)
    algorithms = tuple(
        algorithm
        for name in settings.auth.algorithms
        if (algorithm := Algorithm.from_token(name)) is not None
    )
    authenticator = Authenticator(
        credentials,
        NonceFactory(secret, entropy, ttl=settings.auth.nonce_ttl),
        realm_of(settings),
        domains=core.domains,
        algorithms=algorithms,
        may_act_as=lambda username, realm, user: membership(username, user),
    )
    reg = settings.registrar
    registrar = Registrar(
        RegistrarPolicy(
            core.domains,
            min_expires=reg.min_expires,
            max_expires=reg.max_expires,
            default_expires=reg.default_expires,
            max_contacts=reg.max_contacts,
        ),
        may_register=lambda user, aor: user is None or (aor.user is not None and membership(user, aor.user)),
    )
    return SipCore(
        core,
        layer,
        identity,
        authenticator,
        trusted,
        registrar,
        Proxy(identity, ProxySettings()),
        engine,
        unique,
    )


@attrs.frozen
class StoredState:
    """What the database holds at start-up (read once, before the server serves)."""

    credentials: tuple[Credentials, ...]
    trusted: tuple[TrustedPeer, ...]
    lines: tuple[SharedLine, ...]
    bindings: tuple[Binding, ...]
    subscriptions: tuple[Subscription, ...]
    appearances: tuple[Appearance, ...]

    @classmethod
    def load(cls, store: SqlStore) -> StoredState:
        return cls(
            tuple(store.subscribers.load_all()),
            tuple(store.trusted_peers.load_all()),
            tuple(store.lines.load_all()),
            tuple(store.bindings.load_all()),
            tuple(store.subscriptions.load_all()),
            tuple(store.appearances.load_all()),
        )


def credential_lookup(credentials: Iterable[Credentials]) -> CredentialLookup:
    table = {(c.username, c.realm.lower()): c for c in credentials}

    def lookup(username: str, realm: str) -> Credentials | None:
        return table.get((username, realm.lower()))

    return lookup


def merged_lines(configured: Sequence[SharedLine], stored: Sequence[SharedLine]) -> list[SharedLine]:
    """Lines of the database, and of the configuration (which wins for the same AoR)."""
    lines = {line.aor: line for line in stored}
    lines.update((line.aor, line) for line in configured)
    return list(lines.values())


class Persistence:
    """Feeds the write-behind queue from the facts on the bus (STYLE P6): bindings,
    subscriptions and appearances leave the SIP path without waiting for the database."""

    def __init__(
        self,
        core: SipCore,
        bindings: Channel[BindingKey, Binding],
        subscriptions: Channel[SubscriptionKey, Subscription],
        appearances: Channel[AppearanceKey, Appearance],
    ) -> None:
        self._core = core
        self._bindings, self._subscriptions, self._appearances = bindings, subscriptions, appearances

    def attach(self, bus: EventBus) -> None:
        bus.subscribe(BindingAdded, self._binding_kept)
        bus.subscribe(BindingRefreshed, self._binding_kept)
        bus.subscribe(BindingRemoved, self._binding_gone)
        bus.subscribe(BindingExpired, self._binding_gone)
        bus.subscribe(SubscriptionAdded, self._subscription_kept)
        bus.subscribe(SubscriptionRefreshed, self._subscription_kept)
        bus.subscribe(SubscriptionNotified, self._subscription_kept)
        bus.subscribe(SubscriptionRemoved, self._subscription_gone)
        bus.subscribe(AppearanceChanged, self._appearance_changed)

    def _binding_kept(self, event: BindingAdded | BindingRefreshed) -> None:
        self._bindings.upsert(event.binding)

    def _binding_gone(self, event: BindingRemoved | BindingExpired) -> None:
        self._bindings.delete(event.binding.key)

    def _subscription_kept(
        self, event: SubscriptionAdded | SubscriptionRefreshed | SubscriptionNotified
    ) -> None:
        self._subscriptions.upsert(event.subscription)

    def _subscription_gone(self, event: SubscriptionRemoved) -> None:
        self._subscriptions.delete(event.subscription.key)

    def _appearance_changed(self, event: AppearanceChanged) -> None:
        current = self._core.sca.appearance(event.line, event.index)
        if current is None or current.state is AppearanceState.IDLE:
            self._appearances.delete((event.line, event.index))
        else:
            self._appearances.upsert(current)


class FactLog:
    """Logs the facts an operator follows: appearance transitions, subscriptions, bindings,
    drops and refusals (structured fields, STYLE section 6)."""

    _log = Logger(namespace="scaserver.facts")

    def attach(self, bus: EventBus) -> None:
        bus.subscribe(AppearanceChanged, self._appearance)
        bus.subscribe(TriggerIgnored, self._ignored)
        bus.subscribe(SubscriptionAdded, lambda e: self._subscription("added", e.subscription, ""))
        bus.subscribe(SubscriptionRemoved, lambda e: self._subscription("removed", e.subscription, e.reason))
        bus.subscribe(BindingAdded, lambda e: self._binding("added", e.binding))
        bus.subscribe(BindingRemoved, lambda e: self._binding("removed", e.binding))
        bus.subscribe(BindingExpired, lambda e: self._binding("expired", e.binding))
        bus.subscribe(MessageDropped, self._dropped)
        bus.subscribe(StatelessReply, self._stateless)
        bus.subscribe(AuthenticationRejected, self._auth)

    def _appearance(self, e: AppearanceChanged) -> None:
        self._log.info(
            "appearance {line} #{index} {from_state} -> {to_state} ({rule}) owner={owner} call={call_id}",
            line=e.line,
            index=e.index,
            from_state=e.from_state.value,
            to_state=e.to_state.value,
            rule=e.rule,
            owner=e.owner,
            call_id=e.call_id,
            at=e.time,
        )

    def _ignored(self, e: TriggerIgnored) -> None:
        self._log.debug(
            "appearance {line} #{index}: {trigger} ignored in {state}",
            line=e.line,
            index=e.index,
            trigger=e.trigger.value,
            state=e.state.value,
        )

    def _subscription(self, what: str, sub: Subscription, reason: str) -> None:
        self._log.info(
            "subscription {what}: {event} {aor} from {subscriber} {reason}",
            what=what,
            event=sub.event.value,
            aor=sub.aor,
            subscriber=sub.subscriber,
            reason=reason,
        )

    def _binding(self, what: str, binding: Binding) -> None:
        self._log.info(
            "binding {what}: {aor} -> {contact}", what=what, aor=binding.aor, contact=binding.contact
        )

    def _dropped(self, e: MessageDropped) -> None:
        self._log.warn("message from {peer} dropped: {reason}", peer=str(e.peer), reason=e.reason)

    def _stateless(self, e: StatelessReply) -> None:
        self._log.info("{status} to {peer}: {detail}", status=e.status, peer=str(e.peer), detail=e.detail)

    def _auth(self, e: AuthenticationRejected) -> None:
        self._log.info(
            "{method} from {peer} refused {status} (stale={stale})",
            method=e.method,
            peer=str(e.peer),
            status=e.status,
            stale=e.stale,
        )


class Restore(Service):
    """Runs the start-up restore (re-armed expiry timers, full-state NOTIFYs) once the
    listeners are bound."""

    def __init__(self, run: Callable[[], None]) -> None:
        self._run = run

    @override
    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self._run()


class Periodic(Service):
    """Calls ``function`` every ``interval_s`` seconds while running (metrics sampling)."""

    def __init__(self, reactor: Reactor, interval_s: float, function: Callable[[], None]) -> None:
        self._loop = LoopingCall(function)
        self._loop.clock = cast(IReactorTime, reactor)
        self._interval_s = interval_s

    @override
    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self._loop.start(self._interval_s, now=False)

    @override
    def stopService(self) -> None:
        super().stopService()  # type: ignore[no-untyped-call]
        if self._loop.running:
            self._loop.stop()


class ServerService(MultiService):
    """The whole server: database pool (with the write-behind queue) and SIP service.

    The pool is started first and stopped last, so the write-behind queue's final
    flush runs after the listeners have closed (a clean shutdown loses nothing).
    """

    def __init__(self, sip: SipService, core: SipCore, writes: WriteBehind, store: SqlStore) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.sip, self.core, self.writes, self.store = sip, core, writes, store

    def adopt(self, service: Service) -> None:
        self.addService(service)  # type: ignore[no-untyped-call]

    @override
    def stopService(self) -> Deferred[None]:
        stopped: Deferred[None] = maybeDeferred(super().stopService)
        stopped.addBoth(self._dispose)
        return stopped

    def _dispose(self, result: object) -> object:
        self.store.close()
        return result


class ControlPlane(Service):
    """The HTTP listener (``/RPC``, ``/jsonrpc``, ``/metrics``) and the optional kamcmd-style
    UNIX datagram socket, both answering through one JSON-RPC dispatcher."""

    _log = Logger()

    def __init__(
        self, reactor: Reactor, settings: Settings, site: Site, dgram: RpcDatagramProtocol | None
    ) -> None:
        self._reactor, self._settings, self._site, self._dgram = reactor, settings, site, dgram
        self._ports: list[object] = []

    @override
    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        listen = self._settings.http.listen
        tcp = cast(_HttpReactor, self._reactor)
        self._ports.append(tcp.listenTCP(listen.port, self._site, interface=listen.host))
        self._log.info("HTTP (JSON-RPC, metrics) on {host} port {port}", host=listen.host, port=listen.port)
        if self._dgram is not None and self._settings.rpc.dgram_socket:
            path = Path(self._settings.rpc.dgram_socket)
            self._ports.append(listen_unix_datagram(self._reactor, path, self._dgram))
            self._log.info("JSON-RPC datagram socket at {path}", path=str(path))

    @override
    def stopService(self) -> Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]
        stopping = [maybeDeferred(cast(_Port, port).stopListening) for port in self._ports]
        self._ports.clear()
        done: Deferred[None] = DeferredList(stopping, consumeErrors=True).addCallback(lambda _: None)
        return done


class _HttpReactor(Protocol):
    def listenTCP(self, port: int, factory: Site, backlog: int = 50, interface: str = "") -> object: ...  # noqa: N802


class _Port(Protocol):
    def stopListening(self) -> Deferred[None] | None: ...  # noqa: N802


class MetricsFeed:
    """Counts the facts on the bus into the Prometheus collectors, and samples the write-behind
    queue (depth, flush latency) every second."""

    def __init__(self, metrics: Metrics, writes: WriteBehind) -> None:
        self._metrics, self._writes = metrics, writes
        self._flushes = 0
        self._written = 0

    def attach(self, bus: EventBus) -> None:
        bus.subscribe(SubscriptionNotified, lambda e: self._metrics.notify_sent(e.subscription.event.value))
        bus.subscribe(SubscriptionRemoved, self._removed)
        bus.subscribe(BindingAdded, lambda _: self._metrics.registration("added"))
        bus.subscribe(BindingRefreshed, lambda _: self._metrics.registration("refreshed"))
        bus.subscribe(BindingRemoved, lambda _: self._metrics.registration("removed"))
        bus.subscribe(BindingExpired, lambda _: self._metrics.registration("expired"))
        bus.subscribe(MessageDropped, self._dropped)
        bus.subscribe(StatelessReply, self._stateless)

    def _removed(self, event: SubscriptionRemoved) -> None:
        if event.reason == "notify-failed":
            self._metrics.notify_failed(event.subscription.event.value)

    def _dropped(self, event: MessageDropped) -> None:
        self._metrics.message_dropped(event.kind)
        if event.kind == "unparsable":
            self._metrics.parse_error(event.peer.transport.value.lower())

    def _stateless(self, event: StatelessReply) -> None:
        if event.status == 400:
            self._metrics.parse_error(event.peer.transport.value.lower())

    def sample(self) -> None:
        writes = self._writes
        self._metrics.db_queue_depth("sql", writes.depth)
        if writes.flushes_total != self._flushes and writes.last_flush_latency_s is not None:
            self._metrics.db_flushed("sql", writes.last_flush_latency_s, writes.written_total - self._written)
        self._flushes, self._written = writes.flushes_total, writes.written_total


def control_plane(
    settings: Settings,
    reactor: Reactor,
    core: SipCore,
    sip: SipService,
    writes: WriteBehind,
) -> tuple[ControlPlane, MetricsFeed]:
    """The JSON-RPC registry over the running engines, its HTTP site and datagram endpoint,
    and the metrics.  Raises ``TokenFileError`` or ``InsecureRpcBindError`` (rpc.md 2.4)."""
    rpc = settings.rpc
    files = {Scope.ADMIN: rpc.admin_token_file, Scope.READ: rpc.read_token_file}
    tokens = BearerTokens.from_files({scope: Path(name) for scope, name in files.items() if name})
    check_rpc_bind(settings.http.listen.host, tokens)
    domains = settings.server.domains
    default_domain = domains[0] if domains else settings.server.advertised()[0]

    async def flush_subscriptions() -> int:
        before = writes.written_total
        await writes.flush()
        return writes.written_total - before

    async def flush_bindings() -> None:
        await writes.flush()

    sca = EngineScaControl(
        core, sip.stack.run, sip.bus, reactor, default_domain=default_domain, flush=flush_subscriptions
    )
    location = RegistrarLocationControl(
        core, sip.stack.run, reactor, default_domain=default_domain, flush=flush_bindings
    )
    listen = tuple(f"udp:{e.host}:{e.port}" for e in settings.server.listen) + tuple(
        f"tcp:{e.host}:{e.port}" for e in settings.server.listen
    )
    server = ServerInfo(product_version(), os.getpid(), listen, settings.database.url, reactor.seconds())
    registry = build_registry(sca=sca, location=location, server=server, clock=reactor.seconds)
    dispatcher = rpc_dispatcher(
        registry, options=DispatchOptions(http_status_always_200=rpc.http_status_always_200)
    )
    networks = tuple(ipaddress.ip_network(cidr, strict=False) for cidr in rpc.allow_from)
    policy = HttpPolicy(tokens=tokens, allowed_origins=frozenset(rpc.allowed_origins), allow_from=networks)
    metrics = Metrics(CollectorRegistry(), sca=EngineScaGauges(core))
    site = build_site(dispatcher, policy, metrics.registry)
    dgram = RpcDatagramProtocol(dispatcher) if rpc.dgram_socket else None
    return ControlPlane(reactor, settings, site, dgram), MetricsFeed(metrics, writes)


def make_server(
    settings: Settings,
    reactor: Reactor,
    *,
    hosts: HostsTable | None = None,
    secret: bytes | None = None,
) -> ServerService:
    """The running server for ``settings``: state restored from the database, the SIP core,
    listeners, and the write-behind persistence.  Raises ``SchemaOutOfDateError`` when the
    database needs ``scaserver db upgrade``."""
    url = settings.database.url
    check_up_to_date(url)
    store = SqlStore(url, pool_size=settings.database.pool_size)
    state = StoredState.load(store)
    domains = core_settings(settings).domains
    lines = merged_lines(configured_lines(settings, domains), state.lines)
    core = make_core(
        settings,
        credentials=credential_lookup(state.credentials),
        trusted=TrustedPeers(state.trusted),
        lines=lines,
        secret=secret if secret is not None else secrets.token_bytes(32),
    )
    bus = EventBus(on_handler_error=_report_handler_error)
    sip = make_service(settings, reactor, core, bus=bus, hosts=hosts)
    pool = DatabasePool(cast(IReactorFromThreads, reactor), max_threads=settings.database.pool_size)
    writes = WriteBehind(reactor, pool, interval_s=settings.database.flush_interval)
    Persistence(
        core,
        writes.channel("location", store.bindings, binding_key),
        writes.channel("sca_subscriptions", store.subscriptions, subscription_key),
        writes.channel("sca_appearance", store.appearances, appearance_key),
    ).attach(bus)
    FactLog().attach(bus)
    pool.add_dependent(writes)
    server = ServerService(sip, core, writes, store)
    server.adopt(pool)
    server.adopt(sip)

    def restore() -> None:
        now = reactor.seconds()
        actions = core.registrar.restore(state.bindings, now)
        actions += core.sca.restore(lines, state.subscriptions, state.appearances, now)
        sip.stack.run(core.run(actions, now))

    server.adopt(Restore(restore))
    plane, feed = control_plane(settings, reactor, core, sip, writes)
    feed.attach(bus)
    server.adopt(plane)
    server.adopt(Periodic(reactor, 1.0, feed.sample))
    return server
