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

import gc
import ipaddress
import os
import random
import re
import secrets
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Final, Protocol, cast

import attrs
from prometheus_client import CollectorRegistry
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.interfaces import (
    IOpenSSLServerConnectionCreator,
    IProtocolFactory,
    IReactorFromThreads,
    IReactorTime,
)
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.web.resource import IResource
from twisted.web.server import Site
from typing_extensions import override

from scaserver.config import (
    LegacyPushRule,
    MidRegistrarSettings,
    ScaSettings,
    Settings,
    UpstreamCredential,
)
from scaserver.control.catalogue import build_registry
from scaserver.control.dispatcher import DispatchOptions
from scaserver.control.registry import Scope
from scaserver.control.system import ServerInfo, product_version
from scaserver.edge.controlplane import (
    EngineParkingGauges,
    EngineRegistrarGauges,
    EngineScaControl,
    EngineScaGauges,
    GuardView,
    MetricsStatistics,
    MobileParkingAdmin,
    RegistrarLocationControl,
    ResyncContext,
    RpcDirectory,
    SipProvisioningControl,
)
from scaserver.edge.dbpool import DatabasePool
from scaserver.edge.directorywatch import Directory, DirectoryWatch, load_directory
from scaserver.edge.dns import DnsSettings, ServerLocator, TransportChoice, make_resolver, nameservers
from scaserver.edge.factlog import FactLog
from scaserver.edge.health import HealthResource, Readiness, ReadyResource
from scaserver.edge.historyfeed import HistoryFeed
from scaserver.edge.http import BearerTokens, HttpPolicy, build_root, check_rpc_bind, rpc_dispatcher
from scaserver.edge.kernelfilter import KernelBanFilter
from scaserver.edge.looplag import LoopLagProbe
from scaserver.edge.metricsfeed import MetricsFeed
from scaserver.edge.natping import NatFigures, NatPinger
from scaserver.edge.periodic import Periodic
from scaserver.edge.persistence import (
    Persistence,
    StoredState,
    restore_upstream,
)
from scaserver.edge.provisioning import ProvisioningPolicy, ProvisioningResource, mount
from scaserver.edge.pushdispatch import PushDispatch
from scaserver.edge.pushgateway import PushGatewayClient, treq_client
from scaserver.edge.resolver import HostsTable, UnresolvableTargetError, addresses_of
from scaserver.edge.rpcdgram import RpcDatagramProtocol, listen_unix_datagram
from scaserver.edge.stack import DrivenCore, SipStack, TimerClock, Transports
from scaserver.edge.systemd import SystemdNotifier
from scaserver.edge.tcp import SipStreamFactory, StreamLimits, TcpDialer, TcpListener, TcpReactor
from scaserver.edge.tls import TlsCertificates, TlsEdge, TlsListener
from scaserver.edge.udp import UdpListener, UdpReactor, UdpTransport
from scaserver.edge.writebehind import WriteBehind
from scaserver.events import EventBus
from scaserver.guard.sources import Ban, SourceGuard
from scaserver.logs import MessageTrace
from scaserver.metrics import Metrics
from scaserver.mobile import (
    Mobile,
    MobileSettings,
)
from scaserver.owners import (
    AnsweredOnBus,
    ClientOwners,
    NatPings,
    ProxyBranches,
    ScaNotifies,
    UpstreamForwards,
)
from scaserver.parking.parked import ParkingLot
from scaserver.provisioning.mac import canonical_mac
from scaserver.provisioning.profile import SipTransport, SiteSettings
from scaserver.proxy.proxy import BranchKey, Proxy, ProxySettings
from scaserver.proxy.relay import derive_route_key, every_host
from scaserver.proxy.routing import Interface, ProxyIdentity, uri_destination
from scaserver.proxy.sessiontimer import SessionTimerPolicy
from scaserver.push.gateway import RetryPolicy
from scaserver.push.pnparams import (
    Keepalive,
    LegacyRule,
    TypingSettings,
    ValueSource,
)
from scaserver.push.policy import PushPolicySettings
from scaserver.registrar.midregistrar import (
    ForwardKey,
    MidRegistrar,
    MidRegSettings,
    Mode,
    UpstreamCredentials,
)
from scaserver.registrar.nat import NatPing
from scaserver.registrar.registrar import Registrar, RegistrarPolicy
from scaserver.reporting.history import HistoryRecorder
from scaserver.reporting.retention import HISTORY_TABLES, RetentionPolicy, purge
from scaserver.router.router import (
    SipRouter,
)
from scaserver.router.settings import CoreSettings
from scaserver.sca.engine import EngineSettings, NotifyContext, ScaEngine
from scaserver.sca.line import LineAlias, SharedLine, canonical_aor
from scaserver.sip.digest import (
    Algorithm,
    Authenticator,
    ClientCredentials,
    CredentialLookup,
    Credentials,
    NonceFactory,
)
from scaserver.sip.domains import DomainPolicy
from scaserver.sip.message import Peer, Transport
from scaserver.sip.serverlocation import Query, is_numeric
from scaserver.sip.timers import TimerConfig
from scaserver.sip.transactions import TransactionLayer
from scaserver.sip.trust import TrustedPeer, TrustedPeers
from scaserver.sip.uri import SipUri, format_host, parse_uri
from scaserver.store.engine import probe_writable
from scaserver.store.history import SqlHistoryRepository, history_key
from scaserver.store.migrate import check_up_to_date
from scaserver.store.provisioning import SqlProvisioningRepository
from scaserver.store.repository import (
    appearance_key,
    binding_key,
    binding_key_text,
    subscription_key,
    token_key,
    token_key_text,
    upstream_key,
)
from scaserver.store.sql import SqlStore, directory_generation


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
        self.streams: SipStreamFactory | None = None
        self.tls: TlsEdge | None = None
        self.tls_listeners: list[TlsListener] = []
        self.guard: SourceGuard | None = None
        self.kernel_filter: KernelBanFilter | None = None

    def adopt(self, service: Service) -> None:
        """Add a child service (started in adoption order, stopped in reverse)."""
        self.addService(service)  # type: ignore[no-untyped-call]


def _report_handler_error(event: object, error: BaseException) -> None:
    # The event's type only: its fields may hold contacts with push tokens.
    SipService._log.error(
        "event handler failed on {event}: {error!r}", event=type(event).__name__, error=error
    )


def make_service(
    settings: Settings,
    reactor: Reactor,
    core: DrivenCore,
    *,
    bus: EventBus | None = None,
    hosts: HostsTable | None = None,
    guard: SourceGuard | None = None,
) -> SipService:
    """Wire the SIP edge (stack, UDP and TCP listeners) around ``core`` for ``settings``;
    ``guard`` is asked about every message and connection before anything else.

    Nothing is bound until the returned service is started.
    """
    bus = bus if bus is not None else EventBus(on_handler_error=_report_handler_error)
    hosts = hosts if hosts is not None else HostsTable.load()
    transports = Transports(hosts=hosts, locator=server_locator(settings.dns, reactor, hosts))
    trace = MessageTrace() if settings.sip.trace else None
    stack = SipStack(core, reactor, transports, bus, trace=trace, guard=guard)
    security = settings.security
    limits = StreamLimits(
        max_message_size=settings.sip.max_message_size,
        idle_timeout=settings.sip.tcp_idle_timeout,
        slow_sender_timeout=settings.sip.tcp_slow_sender_timeout,
        unvouched_idle_timeout=min(security.tcp_unvouched_idle_timeout, settings.sip.tcp_idle_timeout),
        max_connections_per_address=security.max_connections_per_address,
        max_connections=security.max_connections,
    )
    streams = SipStreamFactory(stack, transports, limits, reactor, guard, keepalives=stack.keepalives)
    transports.set_dialer(TcpDialer(reactor, streams))
    root = SipService(stack, transports, bus)
    root.streams, root.guard = streams, guard
    root.adopt(stack)
    for endpoint in settings.server.listen:
        datagrams = UdpTransport(
            stack, transports, endpoint.host, settings.sip.max_message_size, guard=guard, clock=reactor
        )
        udp = UdpListener(reactor, endpoint.host, endpoint.port, datagrams)
        tcp = TcpListener(reactor, endpoint.host, endpoint.port, streams)
        root.udp.append(udp)
        root.tcp.append(tcp)
        root.adopt(udp)
        root.adopt(tcp)
    tls = TlsEdge(settings.tls, streams, reactor)
    transports.set_dialer(tls.dial, Transport.TLS)
    root.tls = tls
    for endpoint in settings.tls.listen:
        listener = TlsListener(reactor, endpoint.host, endpoint.port, tls)
        root.tls_listeners.append(listener)
        root.adopt(listener)
    if guard is not None:
        kernel = KernelBanFilter(
            guard, reactor, lambda: [sock for udp in root.udp if (sock := udp.bound_socket) is not None]
        )
        bus.subscribe(Ban, kernel.banned)
        root.kernel_filter = kernel
    return root


# --------------------------------------------------------------------------- the whole server


def domain_policy(settings: Settings, directory: Iterable[str] = ()) -> DomainPolicy:
    """Which domains are ours (``scaserver.sip.domains``): ``server.domains``, else the
    ``directory`` domains (of the subscribers and lines in the database); the advertised host
    and the listen addresses always."""
    host, _ = settings.server.advertised()
    addresses = {host, *(endpoint.host for endpoint in settings.server.listen)}
    return DomainPolicy(settings.server.domains, frozenset(directory), frozenset(addresses))


def directory_domains(
    credentials: Iterable[Credentials], lines: Iterable[SharedLine], aliases: Iterable[str] = ()
) -> set[str]:
    """The domains of the subscribers (their realm), of the shared lines' AoRs and of the
    lines' aliases (a line reached by ``sip:100@pbx.example.com`` makes that domain ours)."""
    found = {c.realm for c in credentials}
    for aor in (*(line.aor for line in lines), *aliases):
        uri = parse_uri(aor)
        if isinstance(uri, SipUri):
            found.add(uri.host)
    return found


def line_aliases(
    settings: Settings, stored: Iterable[LineAlias], lines: Iterable[SharedLine]
) -> dict[str, str]:
    """The alias map (sca.md Q26): canonical alias AoR -> line AoR, from ``[[sca.aliases]]``
    and the database.  The configuration wins for the same alias; a stored alias that is a
    line, or that names an alias instead of a line, is left out.  Each is logged."""
    configured: dict[str, str] = {}
    for written in settings.sca.aliases:
        alias, target = canonical_aor(written.alias), canonical_aor(written.line)
        if alias is not None and target is not None:  # checked when the file was loaded
            configured[alias] = target
    names = {line.aor for line in lines}
    merged: dict[str, str] = {}
    for entry in stored:
        if entry.alias in configured:
            if configured[entry.alias] != entry.line:
                _log.warn(
                    "alias {alias}: the configuration's line {line} wins over {stored} of the database",
                    alias=entry.alias,
                    line=configured[entry.alias],
                    stored=entry.line,
                )
        elif entry.alias in names:
            _log.warn(
                "alias {alias} of {line} ignored: it is a shared line", alias=entry.alias, line=entry.line
            )
        elif entry.line in configured:
            _log.warn(
                "alias {alias} ignored: {line} is an alias, not a line", alias=entry.alias, line=entry.line
            )
        else:
            merged[entry.alias] = entry.line
    merged.update(configured)
    return merged


def upstream_peer(transport: Transport, host: str, port: int) -> Peer:
    """An upstream as the core sends to it: port 0 stays 0 for a name (SRV decides at the
    edge) and is the transport's default port for an address."""
    if port == 0 and is_numeric(host):
        port = 5061 if transport is Transport.TLS else 5060
    return Peer(transport, host, port)


def core_settings(settings: Settings, directory: Iterable[str] = ()) -> CoreSettings:
    upstream = settings.upstream
    return CoreSettings(
        domains=domain_policy(settings, directory),
        upstream=(
            upstream_peer(upstream.transport or Transport.UDP, upstream.host, upstream.port)
            if upstream.host
            else None
        ),
        require_auth=settings.auth.require,
        server=settings.server.user_agent,
        strip_call_info=settings.sca.strip_call_info,
        max_transactions=settings.security.max_transactions,
        insert_pai=settings.sca.insert_pai,
    )


def source_guard(settings: Settings, trusted: Callable[[], TrustedPeers]) -> SourceGuard | None:
    """The per-source limits of ``[security]`` (None when disabled); ``trusted()`` gives the
    trusted peers now (with the upstream), who are never limited, on any transport."""
    security = settings.security
    if not security.enabled:
        return None

    def is_trusted(host: str) -> bool:
        peers = trusted()
        return any(peers.match(Peer(transport, host, 0)) for transport in (Transport.UDP, Transport.TCP))

    return SourceGuard(security, is_trusted)


def realm_of(settings: Settings) -> str:
    """The digest realm of a request whose AoR is not in one of our domains: ``auth.realm``,
    else the first domain, else the advertised host."""
    if settings.auth.realm:
        return settings.auth.realm
    if settings.server.domains:
        return settings.server.domains[0].lower()
    return settings.server.advertised()[0]


def configured_lines(settings: Settings, domains: DomainPolicy | frozenset[str]) -> list[SharedLine]:
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
        lines.append(SharedLine(aor, line.appearances, frozenset(members), line.push_members))
    return lines


def member_of(
    lines: Callable[[], Iterable[SharedLine]],
    domains: DomainPolicy | frozenset[str],
    aliases: Callable[[], Mapping[str, str]] = dict,
) -> Callable[[str, str], bool]:
    """``(digest user, identity user) -> bool``: the user is the identity, or a member of the
    shared line named by the identity in one of our domains (members register and call as the
    line), directly or by one of the line's ``aliases`` (alias AoR -> line AoR, sca.md Q26)."""

    def allowed(username: str, identity_user: str) -> bool:
        if username == identity_user:
            return True
        named = {line for alias, line in aliases().items() if _user_in(alias, identity_user, domains)}
        for line in lines():
            if (line.aor in named or _user_in(line.aor, identity_user, domains)) and line.admits(
                user=username
            ):
                return True
        return False

    return allowed


def _user_in(aor: str, user: str, domains: DomainPolicy | frozenset[str]) -> bool:
    """Whether canonical ``aor`` is ``user`` at one of our domains."""
    found, _, host = aor.partition(":")[2].partition("@")
    return found == user and host.lower() in domains


def make_core(
    settings: Settings,
    *,
    credentials: CredentialLookup,
    trusted: TrustedPeers,
    lines: Sequence[SharedLine],
    secret: bytes,
    entropy: Callable[[int], bytes] = os.urandom,
    unique: Callable[[], str] = lambda: secrets.token_hex(8),
    known_host: Callable[[str], bool] = every_host,
    directory: Iterable[str] = (),
) -> SipRouter:
    """The pure SIP core (dispatcher, transaction layer, engines) for ``settings``;
    ``known_host`` tells the host names the edge can send to (relay rule R6); ``directory``:
    the domains of the subscribers in the database (see :func:`domain_policy`; those of
    ``lines`` are added here)."""
    aliases = line_aliases(settings, (), lines)
    core = core_settings(settings, directory_domains((), lines, aliases) | set(directory))
    host, port = settings.server.advertised()
    interfaces = [
        Interface(transport, endpoint.host, endpoint.port)
        for endpoint in settings.server.listen
        for transport in (Transport.UDP, Transport.TCP)
    ]
    if (host, port) != (settings.server.listen[0].host, settings.server.listen[0].port):
        interfaces = [Interface(i.transport, host, port) for i in interfaces[:2]] + interfaces
    interfaces += [Interface(Transport.TLS, endpoint.host, endpoint.port) for endpoint in settings.tls.listen]
    identity = ProxyIdentity(
        tuple(interfaces), aliases=frozenset({host.lower()}), route_key=derive_route_key(secret)
    )

    def local_via(peer: Peer) -> tuple[str, str, int]:
        if peer.transport is Transport.TLS and settings.tls.listen:
            same_family = (e for e in settings.tls.listen if (":" in e.host) == (":" in peer.host))
            tls_endpoint = next(same_family, settings.tls.listen[0])
            return peer.transport.value, tls_endpoint.host, tls_endpoint.port
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
    tls_listen = settings.tls.listen
    contact_tls = (
        f"sip:{format_host(tls_listen[0].host)}:{tls_listen[0].port};transport=tls" if tls_listen else ""
    )
    engine = ScaEngine(
        EngineSettings(
            contact=contact,
            contact_tls=contact_tls,
            call_info_max_expires=sca.call_info_max_expires,
            line_seize_max_expires=sca.line_seize_max_expires,
            min_expires=sca.min_expires,
            call_info_ok_code=sca.call_info_ok_code,
            max_appearances=sca.max_appearances,
            alerting_state=sca.alerting_state,
            decline_ends_ringing=sca.decline_ends_ringing,
            call_info_uri=sca.call_info_uri,
            seized_ttl=sca.seized_ttl,
            active_pending_ttl=sca.active_pending_ttl,
            early_ttl=sca.early_ttl,
            max_call_age=sca.max_call_age,
            seize_retry_after=sca.seize_retry_after,
            contact_fallback=sca.contact_fallback,
            max_subscriptions_per_identity=sca.max_subscriptions_per_identity,
            reboot_memory_s=sca.reboot_memory_s,
        ),
        tag_factory=unique,
    )
    engine.provision(lines)

    def membership(username: str, identity_user: str) -> bool:
        # The domains now: a reloaded directory may have made a line's domain ours.
        allowed = member_of(engine.provisioned, sip_core.settings.domains, sip_core.aliases)
        return allowed(username, identity_user)

    def algorithms(names: Iterable[str]) -> tuple[Algorithm, ...]:
        return tuple(algorithm for name in names if (algorithm := Algorithm.from_token(name)) is not None)

    authenticator = Authenticator(
        credentials,
        NonceFactory(secret, entropy, ttl=settings.auth.nonce_ttl),
        realm_of(settings),
        domains=core.domains,
        algorithms=algorithms(settings.auth.algorithms),
        user_agent_algorithms=tuple(
            (rule.match, algorithms(rule.algorithms)) for rule in settings.auth.user_agents
        ),
        forced_realm=settings.auth.realm,
        may_act_as=lambda username, realm, user: membership(username, user),
    )
    registrar = Registrar(
        RegistrarPolicy(core.domains, settings.registrar),
        may_register=lambda user, aor: user is None or (aor.user is not None and membership(user, aor.user)),
    )
    proxy = Proxy(identity, ProxySettings())

    def subscriber(username: str, realm: str) -> Credentials | None:
        return authenticator.lookup(username, realm)  # the directory now: it is reloaded

    mobile = make_mobile(settings, registrar, proxy, identity, unique, credentials=subscriber, secret=secret)
    sip_core = SipRouter(
        core,
        layer,
        identity,
        authenticator,
        with_upstreams(trusted, core.upstream, mobile),
        registrar,
        proxy,
        engine,
        unique,
        mobile=mobile,
        known_host=known_host,
        session_timer=session_timer_policy(settings.sca),
    )
    sip_core.guard = source_guard(settings, lambda: sip_core.trusted)
    sip_core.set_aliases(aliases)
    sip_core.owners = client_owners(sip_core)
    return sip_core


def client_owners(core: SipRouter) -> ClientOwners:
    """Who hears how each request the core sends ends, by the type of its context: the
    proxy's branches, the SCA NOTIFYs, the NAT pings, the check-sync NOTIFYs of the control
    plane and, with push, the mid-registrar's upstream REGISTERs."""
    owners = ClientOwners()
    owners.register(BranchKey, ProxyBranches(core.proxy, core.mobile))
    owners.register(NotifyContext, ScaNotifies(core.sca))
    owners.register(NatPing, NatPings(core.flow_dead))
    owners.register(ResyncContext, AnsweredOnBus())
    if core.mobile is not None:
        owners.register(ForwardKey, UpstreamForwards(core.mobile))
    return owners


def session_timer_policy(sca: ScaSettings) -> SessionTimerPolicy | None:
    """The RFC 4028 proxy policy of ``[sca]``, None when session timers are off."""
    if not sca.session_timers:
        return None
    return SessionTimerPolicy(session_expires=sca.session_expires, min_se=sca.min_se)


def resolvable_in(hosts: HostsTable, *, dns: bool = False) -> Callable[[str], bool]:
    """Whether the edge can send to a host: numeric, a name in the hosts table, or with
    ``dns`` (name servers configured) any host name, looked up when a message goes there."""

    def known(host: str) -> bool:
        try:
            addresses_of(host, hosts)
        except UnresolvableTargetError:
            return dns and _is_host_name(host)
        return True

    return known


_LABEL = r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9])?"
_HOST_NAME = re.compile(rf"(?i)^(?=.{{1,253}}\.?$)({_LABEL}\.)*{_LABEL}\.?$")


def _is_host_name(host: str) -> bool:
    """A syntactically valid DNS name that may resolve (RFC 6761 6.4: ``.invalid`` never does)."""
    name = host.lower().rstrip(".")
    return bool(_HOST_NAME.match(host)) and name != "invalid" and not name.endswith(".invalid")


def server_locator(dns: DnsSettings, reactor: object, hosts: HostsTable) -> ServerLocator | None:
    """The RFC 3263 locator on ``[dns] servers`` (or resolv.conf's); None when no name server
    is known (names then come from the hosts file alone)."""
    servers = nameservers(dns.servers)
    if not servers:
        _log.warn("no DNS server configured: host names are looked up in the hosts file only")
        return None
    clock = cast(TimerClock, reactor)
    return ServerLocator(make_resolver(servers, reactor), clock, hosts=hosts, policy=dns)


def upstream_transport_choice(
    settings: Settings, core: SipRouter, locator: ServerLocator | None, clock: TimerClock
) -> TransportChoice | None:
    """``[upstream] transport = ""`` on a name: the core's upstream takes the transport RFC 3263
    chooses (NAPTR, then SRV), kept up to date."""
    up = settings.upstream
    if up.transport is not None or not up.host or is_numeric(up.host) or locator is None:
        return None

    def chosen(transport: Transport) -> None:
        peer = upstream_peer(transport, up.host, up.port)
        core.settings = attrs.evolve(core.settings, upstream=peer)

    query = Query(up.host, None, up.port or None)
    return TransportChoice(locator, clock, query, chosen)


def upstream_problems(
    settings: Settings, hosts: HostsTable, *, resolv_conf: str | Path = "/etc/resolv.conf"
) -> list[tuple[str, str]]:
    """What ``check-config`` refuses about the upstreams that the file's syntax allows: a host
    name that the hosts file does not know while no DNS server is configured, or that is not a
    host name at all.  A name cannot be checked offline: with DNS it is accepted
    (an answer today says nothing of tomorrow; the server logs each failed look-up)."""
    problems: list[tuple[str, str]] = []
    dns = bool(nameservers(settings.dns.servers, resolv_conf))
    known = resolvable_in(hosts, dns=dns)
    up = settings.upstream
    unknown = "not in the hosts file and no DNS server is configured"
    if up.host and not known(up.host):
        problems.append(("upstream.host", f"{up.host}: {'not a host name' if dns else unknown}"))
    mid = settings.midregistrar
    if mid.enabled:
        uri = parse_uri(mid.upstream)
        if isinstance(uri, SipUri) and not known(uri.host):
            problems.append(("midregistrar.upstream", f"{uri.host}: {unknown}"))
    return problems


def make_mobile(
    settings: Settings,
    registrar: Registrar,
    proxy: Proxy,
    identity: ProxyIdentity,
    unique: Callable[[], str],
    *,
    credentials: CredentialLookup | None = None,
    secret: bytes = b"",
) -> Mobile | None:
    """The push mid-registrar and call parking (push-and-parking.md), None when both are off.
    ``credentials``: the subscriber table, for ``upstream_auth = "subscriber"``; ``secret``
    keys the PURRs issued when ``push.purr`` is on (6.10)."""
    push, mid, park = settings.push, settings.midregistrar, settings.parking
    if not push.enabled and not mid.enabled:
        return None
    midregistrar: MidRegistrar | None = None
    if mid.enabled:
        upstream = parse_uri(mid.upstream)
        assert isinstance(upstream, SipUri)  # checked by config
        registrar_peer = uri_destination(upstream)
        assert registrar_peer is not None  # checked by config
        host, port = settings.server.advertised()
        midregistrar = MidRegistrar(
            MidRegSettings(
                upstream=registrar_peer,
                upstream_domain=mid.upstream_domain or upstream.host,
                advertised=mid.advertised or f"{format_host(host)}:{port}",
                mode=Mode(mid.mode),
                outgoing_expires=mid.outgoing_expires,
                refresh_fraction=mid.refresh_fraction,
                upstream_timeout=mid.upstream_timeout,
                retry_backoff=mid.retry_backoff,
                retry_cap=mid.retry_cap,
                absorb_requires_same_callid=mid.absorb_requires_same_callid,
                device_min_expires=mid.device_min_expires,
                device_max_expires=mid.device_max_expires,
                device_default_expires=mid.device_default_expires,
                max_contacts=mid.max_contacts,
                unregister_grace=mid.unregister_grace,
                startup_spread=mid.startup_spread,
                multi_domain=len(settings.server.domains) > 1,
            ),
            registrar.location.with_dormant,  # dormant push bindings keep the AoR registered (4.5)
            lambda aor: f"{unique()}{unique()}@{host}",
            random=random.random,
            credentials=upstream_credentials(mid, credentials),
            cnonce=lambda: secrets.token_hex(8),
        )
    lot = ParkingLot(
        park,
        id_factory=lambda: str(uuid.uuid4()),
    )
    typing = TypingSettings(
        providers=frozenset(p.lower() for p in push.providers),
        legacy_rules=tuple(legacy_rule(rule) for rule in push.legacy_rules),
        pnsreg_interval=push.pnsreg_interval,
        purr=push.purr,
    )
    policy = PushPolicySettings(
        refresh_trigger=push.refresh_trigger,
        extend_max_age=push.extend_max_age,
        fresh_window=park.fresh_window,
        ring_open_flows=park.ring_open_flows,
    )
    return Mobile(
        MobileSettings(typing, policy, parking_enabled=push.enabled, purr_secret=secret),
        registrar.location,
        proxy,
        identity,
        lot,
        midregistrar,
    )


def legacy_rule(rule: LegacyPushRule) -> LegacyRule:
    """One ``[[push.legacy_rules]]`` entry as device typing uses it (4.2; checked by config)."""
    return LegacyRule(
        name=rule.name,
        user_agent=re.compile(rule.user_agent),
        provider=rule.provider.lower(),
        token_from=ValueSource.parse(rule.token_from),
        param_from=ValueSource.parse(rule.param_from) if rule.param_from else None,
        param=rule.param,
        device_type=rule.device_type or None,
        keepalive=Keepalive(rule.keepalive) if rule.keepalive else None,
    )


def with_upstreams(trusted: TrustedPeers, upstream: Peer | None, mobile: Mobile | None) -> TrustedPeers:
    """The trusted peers of the directory, and the upstream and mid-registrar upstream."""
    if upstream is not None:
        trusted = trusted_upstream(trusted, upstream, "upstream")
    if mobile is not None and mobile.midregistrar is not None:
        trusted = trusted_upstream(trusted, mobile.midregistrar.settings.upstream, "midregistrar-upstream")
    return trusted


class CertificateTrust:
    """Peers trusted by their TLS client certificate (``[tls] trusted_names``): while a
    connection whose verified certificate names a trusted peer is open, its source address is a
    trusted peer on TLS (tag ``tls-certificate:NAME``), beside the directory's entries."""

    TAG: Final = "tls-certificate:"

    def __init__(self, core: SipRouter) -> None:
        self._core = core
        self._names: dict[Peer, str] = {}

    def identified(self, peer: Peer, name: str | None) -> None:
        if name is None:
            self._names.pop(peer, None)
        else:
            self._names[peer] = name
        self.apply()

    def apply(self) -> None:
        """Put the current certificate entries into the core's trusted peers."""
        kept = [entry for entry in self._core.trusted.peers if not entry.tag.startswith(self.TAG)]
        added: dict[str, TrustedPeer] = {}
        for peer, name in self._names.items():
            if peer.host not in added:
                added[peer.host] = TrustedPeer(peer.host, Transport.TLS, self.TAG + name)
        self._core.trusted = TrustedPeers((*kept, *added.values()))


def apply_directory(
    settings: Settings, core: SipRouter, directory: Directory, certified: CertificateTrust | None = None
) -> None:
    """Swap a reloaded directory into the running core, computed the way
    :func:`make_server` computes the one read at start-up (with the peers trusted now by their
    certificate, ``certified``)."""
    stored = directory_domains(directory.credentials, directory.lines)
    lines = merged_lines(configured_lines(settings, domain_policy(settings, stored)), directory.lines)
    aliases = line_aliases(settings, directory.aliases, lines)
    domains = domain_policy(settings, directory_domains(directory.credentials, lines, aliases))
    core.replace_directory(
        credentials=credential_lookup(directory.credentials),
        trusted=with_upstreams(TrustedPeers(directory.trusted), core.settings.upstream, core.mobile),
        domains=domains,
        lines=lines,
    )
    core.set_aliases(aliases)
    if certified is not None:
        certified.apply()


def trusted_upstream(trusted: TrustedPeers, upstream: Peer, tag: str) -> TrustedPeers:
    """The configured upstream (PBX or PSTN gateway) and the mid-registrar's upstream are
    trusted by source address (requests from them are not challenged; push-and-parking.md
    3.1)."""
    try:
        entry = TrustedPeer(upstream.host, None, tag)
    except ValueError:
        return trusted  # a host name: trust comes from the configured peers only
    return TrustedPeers((*trusted.peers, entry))


def upstream_credentials(
    mid: MidRegistrarSettings, subscribers: CredentialLookup | None
) -> UpstreamCredentials | None:
    """``midregistrar.upstream_auth`` (push-and-parking.md 3.1, 3.5) as the mid-registrar's
    ``credentials(aor, realm)``: None for ``none``; for ``subscriber`` the subscriber table's
    HA1 of the AoR's user part when its realm is the challenge's; for ``static`` the first
    ``[[midregistrar.credentials]]`` entry of the AoR for that realm, else one for any realm."""
    if mid.upstream_auth == "subscriber" and subscribers is not None:
        lookup = subscribers

        def from_subscribers(aor: str, realm: str) -> ClientCredentials | None:
            uri = parse_uri(aor)
            user = uri.user if isinstance(uri, SipUri) else None
            found = lookup(user, realm) if user else None
            return ClientCredentials.of(found) if found is not None and found.realm == realm else None

        return from_subscribers
    if mid.upstream_auth != "static":
        return None
    entries: dict[str, list[UpstreamCredential]] = {}
    for entry in mid.credentials:
        uri = parse_uri(entry.aor)
        assert isinstance(uri, SipUri)  # checked by config
        entries.setdefault(uri.aor(), []).append(entry)

    def from_config(aor: str, realm: str) -> ClientCredentials | None:
        candidates = entries.get(aor, [])
        chosen = next((e for e in candidates if e.realm == realm), None)
        chosen = chosen or next((e for e in candidates if not e.realm), None)
        if chosen is None:
            return None
        uri = parse_uri(aor)
        username = chosen.username or (uri.user if isinstance(uri, SipUri) and uri.user else "")
        if chosen.password:
            return ClientCredentials.from_password(username, realm, chosen.password)
        algorithm = Algorithm.from_token(chosen.ha1_algorithm)
        assert algorithm is not None  # checked by config
        return ClientCredentials.with_ha1(username, realm, algorithm, chosen.ha1)

    return from_config


def push_client(settings: Settings, reactor: Reactor, dispatch: PushDispatch) -> PushGatewayClient:
    """The treq push gateway client for ``[push]`` (5.1, 5.3)."""
    push = settings.push
    post, read_body = treq_client(reactor, push.connect_timeout)
    return PushGatewayClient(
        RetryPolicy(push),
        reactor,
        post,
        read_body,
        random=random.random,
        on_retrying=dispatch.retrying,
        on_activity=dispatch.activity,
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


class Restore(Service):
    """Runs the start-up restore (re-armed expiry timers, full-state NOTIFYs) once the
    listeners are bound."""

    def __init__(self, run: Callable[[], None]) -> None:
        self._run = run
        self.done = False  # readiness: the state is back

    @override
    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self._run()
        self.done = True


class ServerService(MultiService):
    """The whole server: database pool (with the write-behind queue) and SIP service.

    The pool is started first and stopped last, so the write-behind queue's final
    flush runs after the listeners have closed (a clean shutdown loses nothing).
    """

    def __init__(self, sip: SipService, core: SipRouter, writes: WriteBehind, store: SqlStore) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.sip, self.core, self.writes, self.store = sip, core, writes, store
        self.directory: DirectoryWatch | None = None  # reloads on SIGHUP and directory.reload

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
        self.certificates: TlsCertificates | None = None  # HTTPS when set

    @override
    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        listen = self._settings.http.listen
        tcp = cast(_HttpReactor, self._reactor)
        factory: Site = self._site
        if self.certificates is not None:
            tls = TLSMemoryBIOFactory(
                cast(IOpenSSLServerConnectionCreator, self.certificates),
                False,
                cast(IProtocolFactory, factory),
            )
            factory = cast(Site, tls)
        self._ports.append(tcp.listenTCP(listen.port, factory, interface=listen.host))
        self._log.info(
            "{scheme} (JSON-RPC, metrics) on {host} port {port}",
            scheme="HTTPS" if self.certificates is not None else "HTTP",
            host=listen.host,
            port=listen.port,
        )
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


def nat_pinger(settings: Settings, reactor: Reactor, core: SipRouter, sip: SipService) -> NatPinger:
    """The ``[nat]`` pings over the running core, with the keep-alive figures of the edge."""
    host, port = settings.server.advertised()
    bindings = core.registrar.location.all_bindings
    pinger = NatPinger(
        core,
        bindings,
        execute=sip.stack.run,
        send_raw=sip.transports.send,
        clock=reactor,
        settings=settings.nat,
        local_uri=f"sip:{settings.nat.ping_from}@{format_host(host)}:{port}",
        unique=core.unique,
        figures=NatFigures(sip.stack.keepalives, bindings),
    )
    pinger.attach(sip.bus)
    return pinger


class TlsView:
    """The TLS edge's handshake counters and the open connections by transport, for metrics."""

    def __init__(self, sip: SipService) -> None:
        self._sip = sip

    def tls_handshakes(self) -> int:
        return self._sip.tls.stats.completed if self._sip.tls is not None else 0

    def tls_handshake_failures(self) -> dict[str, int]:
        return dict(self._sip.tls.stats.failed) if self._sip.tls is not None else {}

    def open_connections(self) -> dict[str, int]:
        found = {"tcp": 0, "tls": 0}
        for connection in self._sip.transports.streams:
            found[connection.peer.transport.value.lower()] += 1
        return found


def control_plane(
    settings: Settings,
    reactor: Reactor,
    core: SipRouter,
    sip: SipService,
    writes: WriteBehind,
    *,
    provisioning: ProvisioningResource | None = None,
    devices: DeviceLines | None = None,
    readiness: Readiness | None = None,
    directory: DirectoryWatch | None = None,
    nat: NatFigures | None = None,
) -> tuple[ControlPlane, MetricsFeed]:
    """The JSON-RPC registry over the running engines, its HTTP site and datagram endpoint,
    and the metrics.  Raises ``TokenFileError`` or ``InsecureRpcBindError`` (rpc.md 2.4)."""
    rpc = settings.rpc
    files = {Scope.ADMIN: rpc.admin_token_file, Scope.READ: rpc.read_token_file}
    tokens = BearerTokens.from_files({scope: Path(name) for scope, name in files.items() if name})
    check_rpc_bind(settings.http.listen.host, tokens)
    domains = settings.server.domains
    known = sorted(core.settings.domains.names)
    default_domain = domains[0] if domains else (known[0] if known else settings.server.advertised()[0])

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
    parking = MobileParkingAdmin(core, sip.stack.run, sip.bus, reactor, default_domain=default_domain)
    resync = None
    if devices is not None:
        host, port = settings.server.advertised()
        resync = SipProvisioningControl(
            core,
            sip.stack.run,
            sip.bus,
            reactor,
            device_lines=devices,
            local_uri=f"sip:{format_host(host)}:{port}",
            unique=core.unique,
        )
    kernel = sip.kernel_filter
    security = GuardView(core.guard, sip.streams, reactor.seconds, kernel.refresh if kernel else lambda: None)
    metrics = Metrics(
        CollectorRegistry(),
        sca=EngineScaGauges(core),
        registrar=EngineRegistrarGauges(core),
        parking=EngineParkingGauges(core),
        process=True,
        security=security,
        nat=nat,
        tls=TlsView(sip),
    )
    if sip.transports.locator is not None:
        metrics.watch_dns(sip.transports.locator)
    registry = build_registry(
        sca=sca,
        location=location,
        server=server,
        clock=reactor.seconds,
        parking=parking,
        provisioning=resync,
        statistics=MetricsStatistics(metrics.registry),
        security=security,
        directory=RpcDirectory(directory) if directory is not None else None,
    )
    dispatcher = rpc_dispatcher(
        registry, options=DispatchOptions(http_status_always_200=rpc.http_status_always_200)
    )
    networks = tuple(ipaddress.ip_network(cidr, strict=False) for cidr in rpc.allow_from)
    policy = HttpPolicy(tokens=tokens, allowed_origins=frozenset(rpc.allowed_origins), allow_from=networks)
    root = build_root(dispatcher, policy, metrics.registry)
    if provisioning is not None:
        mount(root, settings.provisioning.path_prefix, cast(IResource, provisioning))
    # Outside the RPC guard: probes carry no token (README "Health checks").
    health = HealthResource(product_version(), reactor.seconds(), reactor.seconds)
    root.putChild(b"health", cast(IResource, health))
    if readiness is not None:
        root.putChild(b"ready", cast(IResource, ReadyResource(readiness)))
    site = Site(root)  # type: ignore[no-untyped-call]
    site.displayTracebacks = False
    dgram = RpcDatagramProtocol(dispatcher) if rpc.dgram_socket else None
    plane = ControlPlane(reactor, settings, site, dgram)
    if settings.http.https(settings.tls) and sip.tls is not None:
        plane.certificates = sip.tls.certificates  # shared with SIP: one SIGHUP reloads both
    return plane, MetricsFeed(metrics, writes)


def site_settings(settings: Settings) -> SiteSettings:
    """What the handset profiles say about this server (provisioning.md section 3)."""
    prov = settings.provisioning
    host, port = settings.server.advertised()
    listen = settings.http.listen
    scheme = "https" if settings.http.https(settings.tls) else "http"
    prefix = prov.path_prefix.strip("/")
    base = prov.base_url or f"{scheme}://{format_host(listen.host)}:{listen.port}/{prefix}"
    tls_port = settings.tls.listen[0].port if prov.sip_transport == "tls" and settings.tls.listen else 0
    proxy: tuple[str, int] | None = None
    if prov.outbound_proxy:
        proxy_host, _, proxy_port = prov.outbound_proxy.rpartition(":")
        proxy = (proxy_host, int(proxy_port)) if proxy_port.isdigit() else (prov.outbound_proxy, 5060)
    return SiteSettings(
        sip_host=prov.sip_host or host,
        prov_base_url=base,
        sip_port=prov.sip_port or tls_port or port,
        sip_transport=SipTransport(prov.sip_transport),
        outbound_proxy=proxy,
        registration_expires=prov.registration_expires,
        line_seize_expires=settings.sca.line_seize_max_expires,
        call_info_expires=settings.sca.call_info_max_expires,
        resync_periodic=prov.resync_periodic,
        firmware_path=prov.firmware_path,
        shared_lines=tuple((line.aor, line.appearances) for line in settings.sca.lines),
        site_credentials=bool(prov.default_username and prov.default_password),
    )


DeviceLines = Callable[[str], Awaitable[Sequence[str] | None]]
"""MAC -> the AoRs of the device's lines, None for an unknown device (read off the reactor)."""


def device_lines(repository: SqlProvisioningRepository, pool: DatabasePool) -> DeviceLines:
    def read(mac: str) -> list[str] | None:
        device = repository.device(mac)
        return None if device is None else [placed.line.aor for placed in device.lines]

    async def lines(text: str) -> Sequence[str] | None:
        mac = canonical_mac(text)
        if mac is None:
            return None
        found: list[str] | None = await pool.run(read, mac)
        return found

    return lines


def provisioning_resource(
    settings: Settings, reactor: Reactor, store: SqlStore, pool: DatabasePool
) -> ProvisioningResource:
    """The handset provisioning endpoint (provisioning.md section 4)."""
    prov = settings.provisioning
    policy = ProvisioningPolicy(
        site=site_settings(settings),
        realm=prov.realm,
        default_username=prov.default_username or None,
        default_password=prov.default_password or None,
        allow_from=tuple(ipaddress.ip_network(cidr, strict=False) for cidr in prov.allow_from),
        upload_dir=Path(prov.upload_dir) if prov.upload_dir else None,
        upload_max_bytes=prov.upload_max_bytes,
        upload_keep=prov.upload_keep,
        serve_overrides=prov.serve_overrides,
        static_dir=Path(prov.static_dir) if prov.static_dir else None,
        unknown_mac_limit=prov.unknown_mac_limit,
        require_credentials=prov.require_credentials,
    )
    return ProvisioningResource(
        SqlProvisioningRepository(store.engine),
        pool,
        policy,
        clock=reactor,
        nonces=NonceFactory(secrets.token_bytes(32), os.urandom),
    )


GC_THRESHOLDS: Final = (50_000, 20, 100)
"""Generation thresholds of the cyclic garbage collector for a running server (CPython's
defaults are (700, 10, 10))."""


def tune_garbage_collector() -> None:
    """Keep full garbage collections off the SIP path.

    Transactions live for seconds (timer J is 32 s on UDP), so under load hundreds of
    thousands of message objects reach the oldest generation, and CPython's default
    thresholds then scan all of them every few seconds: a 100-500 ms stop of the reactor
    (bench/RESULTS.md).  The start-up state (imports, restored subscriptions and bindings) is
    frozen out of collection; young cycles are still collected often (every 50 000
    allocations), the oldest generation rarely.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


DAY_S: Final = 86_400.0
_log = Logger(namespace="scaserver.app")


SECRET_BYTES: Final = 32


class SecretFileError(Exception):
    """``server.secret_file`` cannot be read, created, or holds too short a secret."""


def server_secret(path: str) -> bytes:
    """The server secret kept in ``path`` (``server.secret_file``): read when the file exists,
    else a random one written there first (mode 0600, hex); "" means a new secret for this
    process only.  Two servers starting at once on the same file end up with the same secret:
    the file appears whole or not at all (written aside, then hard-linked into place)."""
    if not path:
        return secrets.token_bytes(SECRET_BYTES)
    target = Path(path)
    try:
        if not target.exists():
            _create_secret_file(target)
        text = target.read_text().strip()
    except OSError as error:
        raise SecretFileError(f"{path}: {error.strerror}") from None
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        secret = text.encode()  # an operator's own secret, as written
    if len(secret) < 16:
        raise SecretFileError(f"{path}: the server secret must have at least 16 bytes")
    return secret


def _create_secret_file(target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    aside = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_hex(SECRET_BYTES) + "\n")
        os.link(aside, target)
    except FileExistsError:
        pass  # another process was first: its secret is the one
    finally:
        aside.unlink()


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
    generation = directory_generation(store.engine)  # first: a change while loading is seen again
    state = StoredState.load(store)
    store.upstream_registrations.upsert(state.reserved_upstream())  # before anything is sent
    stored_domains = directory_domains(state.credentials, state.lines)
    domains = core_settings(settings, stored_domains).domains
    lines = merged_lines(configured_lines(settings, domains), state.lines)
    aliases = line_aliases(settings, state.aliases, lines)
    directory = directory_domains(state.credentials, state.lines, aliases)
    hosts = hosts if hosts is not None else HostsTable.load()
    core = make_core(
        settings,
        credentials=credential_lookup(state.credentials),
        trusted=TrustedPeers(state.trusted),
        lines=lines,
        secret=secret if secret is not None else server_secret(settings.server.secret_file),
        known_host=resolvable_in(hosts, dns=bool(nameservers(settings.dns.servers))),
        directory=directory,
    )
    core.set_aliases(aliases)
    _log.info(
        "local domains: {domains} ({rule})",
        domains=", ".join(sorted(core.settings.domains.names)) or "none",
        rule="server.domains" if settings.server.domains else "the subscribers and lines in the database",
    )
    bus = EventBus(on_handler_error=_report_handler_error)
    sip = make_service(settings, reactor, core, bus=bus, hosts=hosts, guard=core.guard)
    core.has_alternative = sip.transports.has_alternative
    choice = upstream_transport_choice(settings, core, sip.transports.locator, reactor)
    if choice is not None:
        sip.adopt(choice)
    if core.mobile is not None and settings.push.enabled:
        pushes = PushDispatch(core, sip.stack, reactor)
        pushes.client = push_client(settings, reactor, pushes)
        pushes.attach(bus)
    pool = DatabasePool(cast(IReactorFromThreads, reactor), max_threads=settings.database.pool_size)
    writes = WriteBehind(reactor, pool, interval_s=settings.database.flush_interval)
    invalidated = writes.channel(
        "push_invalidation", store.token_invalidations, token_key, key_text=token_key_text
    )
    for obsolete in state.obsolete_invalidations():
        invalidated.delete(token_key(obsolete))
    Persistence(
        core,
        writes.channel("location", store.bindings, binding_key, key_text=binding_key_text),
        writes.channel("sca_subscriptions", store.subscriptions, subscription_key),
        writes.channel("sca_appearance", store.appearances, appearance_key),
        upstream=writes.channel("midreg_upstream", store.upstream_registrations, upstream_key),
        invalidated=invalidated,
    ).attach(bus)
    FactLog().attach(bus)
    pool.add_dependent(writes)
    certified = CertificateTrust(core)
    if sip.tls is not None:
        sip.tls.on_identity = certified.identified
    watch = DirectoryWatch(
        cast(IReactorTime, reactor),
        pool,
        current=Directory(generation, state.credentials, state.trusted, state.lines, state.aliases),
        read_generation=lambda: directory_generation(store.engine),
        load=lambda: load_directory(store),
        apply=lambda directory: apply_directory(settings, core, directory, certified),
        interval_s=settings.directory.poll_interval,
    )
    pool.add_dependent(watch)
    server = ServerService(sip, core, writes, store)
    server.directory = watch
    server.adopt(pool)
    server.adopt(sip)

    def restore() -> None:
        now = reactor.seconds()
        # Push state first: the location service then reports lapsed bindings expired, and
        # dormant ``extend`` bindings are retained instead (push-and-parking.md 4.5).
        actions = (
            core.mobile.restore(state.bindings, now, invalidated=state.invalidated)
            if core.mobile is not None
            else []
        )
        actions += core.registrar.restore(state.bindings, now)
        actions += core.sca.restore(lines, state.subscriptions, state.appearances, now)
        sip.stack.run(core.run(actions, now))
        # After the bindings are back (dormant ones retained): an AoR kept only by dormant
        # bindings is re-registered upstream as well.
        sip.stack.run(core.run(restore_upstream(core, state.upstream, state.bindings, now), now))

    restored = Restore(restore)
    server.adopt(restored)
    nat = nat_pinger(settings, reactor, core, sip)
    server.adopt(nat)
    readiness = Readiness(
        cast(IReactorTime, reactor),
        probe_database=lambda: pool.run(probe_writable, store.engine),
        restored=lambda: restored.done,
        queue_depth=lambda: writes.depth,
        queue_limit=writes.max_pending,
    )
    if settings.reporting.enabled:
        recorder = HistoryRecorder(
            line_of=lambda aor: aor if core.sca.is_sca(aor) else None, local_domains=domains
        )
        # Registered last: a batch whose history rows were written is never retried for another table.
        history = HistoryFeed(
            recorder,
            writes.channel(
                "history",
                SqlHistoryRepository(store.engine),
                history_key,
                table_of=lambda key: str(key[0]),
                key_text=lambda key: " ".join(map(str, key)),
            ),
            core,
            clock=reactor.seconds,
        )
        history.attach(bus)
        server.adopt(
            Periodic(reactor, settings.reporting.sample_interval, lambda: history.sample(reactor.seconds()))
        )
        retention = RetentionPolicy(days=dict.fromkeys(HISTORY_TABLES, settings.reporting.retention_days))

        def purge_history() -> None:
            purged = pool.run(purge, store.engine, retention, reactor.seconds())
            purged.addErrback(lambda failure: _log.failure("history purge failed", failure=failure))

        server.adopt(Periodic(reactor, DAY_S, purge_history))
    resource = (
        provisioning_resource(settings, reactor, store, pool) if settings.provisioning.enabled else None
    )
    devices = device_lines(SqlProvisioningRepository(store.engine), pool) if resource is not None else None
    plane, feed = control_plane(
        settings,
        reactor,
        core,
        sip,
        writes,
        provisioning=resource,
        devices=devices,
        readiness=readiness,
        directory=watch,
        nat=nat.figures,
    )
    feed.attach(bus)
    server.adopt(plane)
    server.adopt(Periodic(reactor, 1.0, feed.sample))
    server.adopt(LoopLagProbe(reactor, feed.reactor_lag))
    # Last: started when everything else is (listeners bound, state restored), stopped first.
    server.adopt(SystemdNotifier(reactor, readiness.ready))
    return server
