"""The composition root: settings in, one running server out (STYLE.md P5), the way
Twisted's ``names/tap.py`` ``makeService`` builds its tree.

:func:`make_core` builds the pure SIP core (router, transaction layer, engines) from the
settings and the directory; :func:`make_server` restores the stored state and builds the
service tree around it: the database pool and write-behind queue, the SIP service
(:mod:`scaserver.siproot`), the start-up restore, the NAT pings and the control plane
(:mod:`scaserver.controlroot`).  Nothing below this module imports upwards.
"""

from __future__ import annotations

import functools
import os
import random
import re
import secrets
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import cast

import attrs
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime
from twisted.logger import Logger

from scaserver.config.schema import Settings
from scaserver.controlroot import control_services
from scaserver.directory import (
    configured_lines,
    credential_lookup,
    directory_domains,
    line_aliases,
    member_of,
    merged_lines,
)
from scaserver.edge.certificatetrust import CertificateTrust
from scaserver.edge.controlplane import ResyncContext
from scaserver.edge.dbpool import DatabasePool
from scaserver.edge.directorywatch import Directory, DirectoryWatch, load_directory
from scaserver.edge.dns import ServerLocator, TransportChoice, nameservers
from scaserver.edge.factlog import FactLog
from scaserver.edge.health import Readiness
from scaserver.edge.history import history_services
from scaserver.edge.pacing import RESTORE_NOTIFY_WINDOW, Paced
from scaserver.edge.persistence import Persistence, StoredState, restore_upstream
from scaserver.edge.pushdispatch import PushDispatch
from scaserver.edge.pushgateway import PushGatewayClient, treq_client
from scaserver.edge.resolver import HostsTable, resolvable_in
from scaserver.edge.secret import server_secret
from scaserver.edge.services import Reactor, Restore, ServerService, report_handler_error
from scaserver.edge.stack import TimerClock
from scaserver.edge.systemd import SystemdNotifier
from scaserver.edge.writebehind import WriteBehind
from scaserver.events import EventBus
from scaserver.guard.sources import SourceGuard
from scaserver.logs import LEVELS
from scaserver.owners import (
    AnsweredOnBus,
    ClientOwners,
    NatPings,
    ProxyBranches,
    ScaNotifies,
    UpstreamForwards,
)
from scaserver.parking.calls import CallParking
from scaserver.parking.parked import ParkingLot
from scaserver.proxy.context import BranchKey
from scaserver.proxy.proxy import Proxy, ProxySettings
from scaserver.proxy.relay import derive_route_key, every_host
from scaserver.proxy.routing import Interface, ProxyIdentity, uri_destination
from scaserver.push.gateway import RetryPolicy
from scaserver.push.pnparams import (
    Keepalive,
    LegacyRule,
    TypingSettings,
    ValueSource,
)
from scaserver.push.policy import PushPolicySettings
from scaserver.push.service import PushService, PushServiceSettings
from scaserver.push.settings import LegacyPushRule
from scaserver.registrar.midregengine import MidRegistrar
from scaserver.registrar.midregistrar import MidRegSettings, UpstreamCredentials
from scaserver.registrar.midregsettings import MidRegistrarSettings, UpstreamCredential
from scaserver.registrar.midregstate import ForwardKey
from scaserver.registrar.nat import NatPing
from scaserver.registrar.registrar import Registrar, RegistrarPolicy
from scaserver.router.flows import flow_dead
from scaserver.router.router import (
    SipRouter,
)
from scaserver.router.settings import CoreSettings
from scaserver.sca.engine import NotifyContext, ScaEngine
from scaserver.sca.line import SharedLine
from scaserver.sca.settings import ServerRole
from scaserver.sca.subscription import DialogKey
from scaserver.sip.digest import Algorithm, Authenticator, CredentialLookup, Credentials, NonceFactory
from scaserver.sip.digestclient import ClientCredentials
from scaserver.sip.domains import DomainPolicy
from scaserver.sip.message import Peer, Transport
from scaserver.sip.serverlocation import Query, is_numeric
from scaserver.sip.transactions import TransactionLayer
from scaserver.sip.trust import TrustedPeer, TrustedPeers
from scaserver.sip.uri import SipUri, format_host, parse_uri
from scaserver.siproot import make_service, nat_pinger
from scaserver.store.directory import directory_generation
from scaserver.store.engine import probe_writable
from scaserver.store.migrate import check_up_to_date
from scaserver.store.repository import (
    appearance_key,
    binding_key,
    binding_key_text,
    subscription_key,
    token_key,
    token_key_text,
    upstream_key,
)
from scaserver.store.sql import SqlStore


def domain_policy(settings: Settings, directory: Iterable[str] = ()) -> DomainPolicy:
    """Which domains are ours (``scaserver.sip.domains``): ``server.domains``, else the
    ``directory`` domains (of the subscribers and lines in the database); the advertised host
    and the listen addresses always."""
    host, _ = settings.server.advertised()
    addresses = {host, *(endpoint.host for endpoint in settings.server.listen)}
    return DomainPolicy(settings.server.domains, frozenset(directory), frozenset(addresses))


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
    aliases = line_aliases(settings.sca.aliases, (), lines)
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

    transport_names = {transport: transport.value for transport in Transport}  # no enum property per request

    def local_via(peer: Peer) -> tuple[str, str, int]:
        if peer.transport is Transport.TLS and settings.tls.listen:
            same_family = (e for e in settings.tls.listen if (":" in e.host) == (":" in peer.host))
            tls_endpoint = next(same_family, settings.tls.listen[0])
            return peer.transport.value, tls_endpoint.host, tls_endpoint.port
        if ":" in peer.host:
            for endpoint in settings.server.listen:
                if ":" in endpoint.host:
                    return peer.transport.value, endpoint.host, endpoint.port
        return transport_names[peer.transport], host, port

    layer = TransactionLayer(
        settings.sip.timers,
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
        sca,
        ServerRole(contact=contact, contact_tls=contact_tls),
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

    push = make_push(settings, registrar, identity, unique, credentials=subscriber, secret=secret)
    sip_core = SipRouter(
        core,
        layer,
        identity,
        authenticator,
        with_upstreams(trusted, core.upstream, push),
        registrar,
        proxy,
        engine,
        unique,
        push=push,
        parking=make_parking(settings, push, identity),
        known_host=known_host,
        session_timer=settings.sca.session_intervals if settings.sca.session_timers else None,
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
    owners.register(BranchKey, ProxyBranches(core.proxy, core.parking))
    owners.register(NotifyContext, ScaNotifies(core.sca))
    owners.register(NatPing, NatPings(functools.partial(flow_dead, core.registrar, core.sca)))
    owners.register(ResyncContext, AnsweredOnBus())
    if core.push is not None and core.push.midregistrar is not None:
        owners.register(ForwardKey, UpstreamForwards(core.push.midregistrar))
    return owners


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


def make_push(
    settings: Settings,
    registrar: Registrar,
    identity: ProxyIdentity,
    unique: Callable[[], str],
    *,
    credentials: CredentialLookup | None = None,
    secret: bytes = b"",
) -> PushService | None:
    """The push mid-registrar's device side (push-and-parking.md 3-5), None when push and the
    mid-registrar are both off.  ``credentials``: the subscriber table, for
    ``upstream_auth = "subscriber"``; ``secret`` keys the PURRs issued when ``push.purr`` is
    on (6.10)."""
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
                table=mid,
                multi_domain=len(settings.server.domains) > 1,
            ),
            registrar.location.with_dormant,  # dormant push bindings keep the AoR registered (4.5)
            lambda aor: f"{unique()}{unique()}@{host}",
            random=random.random,
            credentials=upstream_credentials(mid, credentials),
            cnonce=lambda: secrets.token_hex(8),
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
    return PushService(
        PushServiceSettings(typing, policy, purr_secret=secret),
        registrar.location,
        identity,
        id_factory=lambda: str(uuid.uuid4()),
        midregistrar=midregistrar,
    )


def make_parking(settings: Settings, push: PushService | None, identity: ProxyIdentity) -> CallParking | None:
    """Call parking over the push service's devices (push-and-parking.md 6), None without
    them; with ``push.enabled`` false every call is ordinary forking."""
    if push is None:
        return None
    lot = ParkingLot(settings.parking, id_factory=lambda: str(uuid.uuid4()))
    return CallParking(lot, push, identity, enabled=settings.push.enabled)


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


def with_upstreams(trusted: TrustedPeers, upstream: Peer | None, push: PushService | None) -> TrustedPeers:
    """The trusted peers of the directory, and the upstream and mid-registrar upstream."""
    if upstream is not None:
        trusted = trusted_upstream(trusted, upstream, "upstream")
    if push is not None and push.midregistrar is not None:
        trusted = trusted_upstream(trusted, push.midregistrar.settings.upstream, "midregistrar-upstream")
    return trusted


def apply_directory(
    settings: Settings, core: SipRouter, directory: Directory, certified: CertificateTrust | None = None
) -> None:
    """Swap a reloaded directory into the running core, computed the way
    :func:`make_server` computes the one read at start-up (with the peers trusted now by their
    certificate, ``certified``)."""
    stored = directory_domains(directory.credentials, directory.lines)
    configured = configured_lines(settings.sca.lines, domain_policy(settings, stored))
    lines = merged_lines(configured, directory.lines)
    aliases = line_aliases(settings.sca.aliases, directory.aliases, lines)
    domains = domain_policy(settings, directory_domains(directory.credentials, lines, aliases))
    core.replace_directory(
        credentials=credential_lookup(directory.credentials),
        trusted=with_upstreams(TrustedPeers(directory.trusted), core.settings.upstream, core.push),
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


_log = Logger(namespace="scaserver.app")


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
    lines = merged_lines(configured_lines(settings.sca.lines, domains), state.lines)
    aliases = line_aliases(settings.sca.aliases, state.aliases, lines)
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
    bus = EventBus(on_handler_error=report_handler_error)
    sip = make_service(settings, reactor, core, bus=bus, hosts=hosts, guard=core.guard)
    core.has_alternative = sip.transports.has_alternative
    choice = upstream_transport_choice(settings, core, sip.transports.locator, reactor)
    if choice is not None:
        sip.adopt(choice)
    if core.push is not None and settings.push.enabled:
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
        writes.channel("location", store.bindings, binding_key, key_text=binding_key_text),
        writes.channel("sca_subscriptions", store.subscriptions, subscription_key),
        writes.channel("sca_appearance", store.appearances, appearance_key),
        upstream=writes.channel("midreg_upstream", store.upstream_registrations, upstream_key),
        invalidated=invalidated,
    ).attach(bus)
    FactLog(LEVELS[settings.log.level]).attach(bus)
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

    def notify_restored(dialogs: Sequence[DialogKey], now: float) -> None:
        sip.stack.run(core.run(core.sca.notify_restored(dialogs, now), now))

    def restore() -> None:
        now = reactor.seconds()
        # Push state first: the location service then reports lapsed bindings expired, and
        # dormant ``extend`` bindings are retained instead (push-and-parking.md 4.5).
        actions = (
            core.push.restore(state.bindings, now, invalidated=state.invalidated)
            if core.push is not None
            else []
        )
        actions += core.registrar.restore(state.bindings, now)
        restored_sca, owed = core.sca.restore_state(lines, state.subscriptions, state.appearances, now)
        sip.stack.run(core.run(actions + restored_sca, now))
        # The full-state NOTIFYs (10.3), a batch per turn while the answers keep up.
        def room() -> bool:
            return core.layer.in_progress < RESTORE_NOTIFY_WINDOW

        Paced(reactor, owed, notify_restored, room=room).start()
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
        # Registered last: a batch whose history rows were written is never retried for another table.
        history = history_services(
            settings.reporting,
            core,
            bus,
            writes=writes,
            store=store,
            pool=pool,
            reactor=reactor,
            local_domains=domains,
        )
        for service in history:
            server.adopt(service)
    control = control_services(
        settings,
        reactor,
        core,
        sip,
        writes=writes,
        store=store,
        pool=pool,
        readiness=readiness,
        directory=watch,
        nat=nat.figures,
    )
    for service in control:
        server.adopt(service)
    # Last: started when everything else is (listeners bound, state restored), stopped first.
    server.adopt(SystemdNotifier(reactor, readiness.ready))
    return server
