"""The control plane's part of the composition root: the JSON-RPC registry over the running
engines, the metrics, the health and provisioning resources, and the HTTP site and datagram
socket serving them (rpc.md, provisioning.md section 4)."""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path
from typing import cast

from prometheus_client import CollectorRegistry
from twisted.application.service import Service
from twisted.web.resource import IResource
from twisted.web.server import Site

from scaserver.config.schema import Settings
from scaserver.control.catalogue import build_registry
from scaserver.control.dispatcher import DispatchOptions
from scaserver.control.locationview import EngineRegistrarGauges
from scaserver.control.parkingview import EngineParkingGauges
from scaserver.control.registry import Scope
from scaserver.control.scaview import EngineScaGauges
from scaserver.control.statistics import MetricsStatistics
from scaserver.control.system import ServerInfo, product_version
from scaserver.edge.collector import PauseWatch
from scaserver.edge.controlplane import (
    EngineScaControl,
    MobileParkingAdmin,
    RegistrarLocationControl,
    RpcDirectory,
    SipProvisioningControl,
)
from scaserver.edge.dbpool import DatabasePool
from scaserver.edge.directorywatch import DirectoryWatch
from scaserver.edge.guardview import GuardView
from scaserver.edge.health import HealthResource, Readiness, ReadyResource
from scaserver.edge.http import BearerTokens, HttpPolicy, build_root, check_rpc_bind, rpc_dispatcher
from scaserver.edge.looplag import LoopLagProbe
from scaserver.edge.metricsfeed import MetricsFeed
from scaserver.edge.natping import NatFigures
from scaserver.edge.periodic import Periodic
from scaserver.edge.provisioning import (
    DeviceLines,
    ProvisioningPolicy,
    ProvisioningResource,
    device_lines,
    mount,
)
from scaserver.edge.rpcdgram import RpcDatagramProtocol
from scaserver.edge.services import ControlPlane, Reactor, SipService, TlsView
from scaserver.edge.writebehind import WriteBehind
from scaserver.metrics import NAMESPACE
from scaserver.metrics.counters import Metrics
from scaserver.provisioning.profile import SipTransport, SiteSettings
from scaserver.router.router import SipRouter
from scaserver.sip.digest import NonceFactory
from scaserver.sip.uri import format_host
from scaserver.store.provisioning import SqlProvisioningRepository
from scaserver.store.sql import SqlStore


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
        statistics=MetricsStatistics(metrics.registry, NAMESPACE),
        security=security,
        directory=RpcDirectory(directory) if directory is not None else None,
    )
    dispatcher = rpc_dispatcher(
        registry, options=DispatchOptions(http_status_always_200=rpc.http_status_always_200)
    )
    policy = HttpPolicy(tokens, rpc)
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
    plane = ControlPlane(reactor, settings.http.listen, site, dgram, rpc.dgram_socket)
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


def provisioning_resource(
    settings: Settings, reactor: Reactor, store: SqlStore, pool: DatabasePool
) -> ProvisioningResource:
    """The handset provisioning endpoint (provisioning.md section 4)."""
    prov = settings.provisioning
    policy = ProvisioningPolicy(site_settings(settings), prov)
    return ProvisioningResource(
        SqlProvisioningRepository(store.engine),
        pool,
        policy,
        clock=reactor,
        nonces=NonceFactory(secrets.token_bytes(32), os.urandom),
    )


def control_services(
    settings: Settings,
    reactor: Reactor,
    core: SipRouter,
    sip: SipService,
    *,
    writes: WriteBehind,
    store: SqlStore,
    pool: DatabasePool,
    readiness: Readiness,
    directory: DirectoryWatch,
    nat: NatFigures,
) -> list[Service]:
    """The control plane of the running server (with the provisioning endpoint when
    ``provisioning.enabled``), its metrics fed from the bus and sampled every second, and
    the reactor's lag probe and the garbage collector's pauses: the services to adopt, in
    start-up order."""
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
        directory=directory,
        nat=nat,
    )
    feed.attach(sip.bus)
    return [
        plane,
        Periodic(reactor, 1.0, feed.sample),
        LoopLagProbe(reactor, feed.reactor_lag),
        PauseWatch(time.perf_counter, feed.gc_pause),
    ]
