"""The SIP part of the composition root: the SIP service for a core (STYLE.md P5).

:func:`make_service` builds a :class:`~twisted.application.service.MultiService`
holding the :class:`~scaserver.edge.stack.SipStack` (which owns the SIP timers)
and, for each ``server.listen`` address, a UDP and a TCP listener feeding it.
The SIP core is injected into the stack; nothing below this module imports
upwards.  Start-up order is the order of :meth:`SipService.addService`; the
MultiService stops its children in reverse, so listeners close first and the
stack (timers, open TCP connections) last.
"""

from __future__ import annotations

from scaserver.config.schema import Settings
from scaserver.edge.dns import server_locator
from scaserver.edge.kernelfilter import KernelBanFilter
from scaserver.edge.natping import NatFigures, NatPinger
from scaserver.edge.resolver import HostsTable
from scaserver.edge.services import Reactor, SipService, report_handler_error
from scaserver.edge.stack import DrivenCore, SipStack, Transports
from scaserver.edge.tcp import SipStreamFactory, StreamLimits, TcpDialer, TcpListener
from scaserver.edge.tls import TlsEdge, TlsListener
from scaserver.edge.udp import UdpListener, UdpTransport
from scaserver.events import EventBus
from scaserver.guard.sources import Ban, SourceGuard
from scaserver.logs import MessageTrace
from scaserver.router.router import SipRouter
from scaserver.sip.message import Transport
from scaserver.sip.uri import format_host


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
    bus = bus if bus is not None else EventBus(on_handler_error=report_handler_error)
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


def nat_pinger(settings: Settings, reactor: Reactor, core: SipRouter, sip: SipService) -> NatPinger:
    """The ``[nat]`` pings over the running core, with the keep-alive figures of the edge."""
    host, port = settings.server.advertised()
    flows = core.registrar.location.ping_flows
    pinger = NatPinger(
        core,
        flows,
        execute=sip.stack.run,
        send_raw=sip.transports.send,
        clock=reactor,
        settings=settings.nat,
        local_uri=f"sip:{settings.nat.ping_from}@{format_host(host)}:{port}",
        unique=core.unique,
        figures=NatFigures(sip.stack.keepalives, flows),
    )
    pinger.attach(sip.bus)
    return pinger
