"""DNS for SIP (RFC 3263): NAPTR, SRV and A/AAAA through ``twisted.names``, cached by TTL.

:class:`ServerLocator` turns a :class:`~scaserver.sip.serverlocation.Query` into the ordered
list of :class:`~scaserver.sip.serverlocation.Target` to try.  The RFC 3263 decisions are the
pure functions of :mod:`scaserver.sip.serverlocation`; this module only asks DNS, never with a
blocking call: the resolver is a ``twisted.names.client.Resolver`` on the reactor, with the
servers of ``[dns] servers`` or of ``/etc/resolv.conf``.

* The hosts file comes first for A/AAAA (a name there is never asked of DNS); numeric hosts
  need no look-up at all.
* Every record set is cached on the injected clock for its TTL (clamped to
  ``[dns] min_ttl``..``max_ttl``); a name that does not exist (NXDOMAIN) or has no record of
  the type is cached for ``negative_ttl``; a time-out or server failure is not cached.  The
  cache holds at most ``cache_size`` record sets (least recently used out first).
* Hostile answers: at most ``max_records`` records are taken from one answer (the rest are
  logged and ignored); a CNAME chain is followed inside the answer up to ``max_cname_depth``
  links, a loop or a longer chain gives nothing (logged); only terminal NAPTR records are
  used, so a NAPTR loop cannot be followed; a truncated UDP answer is asked again over TCP
  (``twisted.names``); every look-up ends within ``timeout`` seconds.
* Failed targets (RFC 3263 4.3) are held down for ``failed_target_hold`` seconds: a target
  list puts them last (:func:`~scaserver.sip.serverlocation.without_held`).

Where resolution happens, and why.  The core keeps sending to a ``Peer`` whose host may be a
name (port 0: "SRV decides"); the edge (:class:`~scaserver.edge.stack.Transports`) locates it,
queues the message while a look-up runs, sends it to the first target not held down, and pins
the client transaction (its Via branch) to that target so that retransmissions, the ACK of a
failure and a CANCEL follow the request.  Failover needs a new client transaction, which only
the core can create: the router (``scaserver.router``) sees the 503, the time-out or the
transport error of a transaction to a name, asks the edge through an injected query
(``has_alternative``, like ``known_host``) whether another target remains, and if so emits
``Deliver(NextHopFailed)`` (the edge holds that branch's target down) followed by the same
``SendRequest`` for the same owner, which gets a new branch and the next target.  So the core
stays pure (no DNS records, no clock), the owner (a proxy branch, the mid-registrar) never
sees a failure that was failed over, and Timer B/F keep their meaning per target.  The one
thing the edge cannot choose per message is the transport (the Via already names it): a
configured upstream with ``transport = ""`` gets it from :class:`TransportChoice` ahead of
time.
"""

from __future__ import annotations

import enum
import random
import socket
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, Protocol, cast

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.logger import Logger
from twisted.names import dns
from twisted.names.client import Resolver
from twisted.names.error import DNSNameError, DNSQueryTimeoutError
from typing_extensions import override

from scaserver.edge.resolver import HostsTable
from scaserver.sip.message import Peer, Transport
from scaserver.sip.serverlocation import (
    DEFAULT_PORTS,
    NaptrRecord,
    Query,
    RandomSource,
    SrvRecord,
    Target,
    bare_host,
    default_transport,
    is_numeric,
    naptr_services,
    order_srv,
    srv_names,
    targets_for,
)

RECORD_TYPES: Final = ("NAPTR", "SRV", "A", "AAAA")
LATENCY_BUCKETS: Final = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
"""Upper bounds (seconds) of the locate latency histogram."""
OUTCOMES: Final = ("answer", "nxdomain", "timeout", "error")
_TYPE_CODES: Final = {"NAPTR": dns.NAPTR, "SRV": dns.SRV, "A": dns.A, "AAAA": dns.AAAA}


@attrs.frozen
class DnsSettings:
    """``[dns]``: locating SIP servers by name (RFC 3263: NAPTR, SRV, A/AAAA), non-blocking.

    ``servers``: ``HOST`` or ``HOST:PORT`` addresses of recursive DNS servers (IPv6 in
    brackets); empty = the nameservers of /etc/resolv.conf.  The hosts file is always read
    first.  ``timeout``: seconds a look-up may take.  Record sets are cached for their TTL,
    clamped to ``min_ttl``..``max_ttl``; a name that does not exist for ``negative_ttl``;
    at most ``cache_size`` record sets.  ``max_records``: records taken from one answer;
    ``max_cname_depth``: CNAME links followed.  ``failed_target_hold``: seconds a target that
    answered 503, timed out or refused the connection is avoided (RFC 3263 4.3)."""

    servers: tuple[str, ...] = ()
    timeout: float = 5.0
    min_ttl: float = 0.0
    max_ttl: float = 3600.0
    negative_ttl: float = 30.0
    cache_size: int = 4096
    max_records: int = 32
    max_cname_depth: int = 8
    failed_target_hold: float = 60.0


class Clock(Protocol):
    def seconds(self) -> float: ...

    def callLater(  # noqa: N802 (Twisted's spelling)
        self, delay: float, callable: Callable[..., object], *args: object, **kw: object
    ) -> Any: ...


class DnsResolver(Protocol):
    """The part of ``twisted.names``' ``IResolver`` used here."""

    def lookupNamingAuthorityPointer(  # noqa: N802
        self, name: str, timeout: Sequence[int] | None = None
    ) -> Deferred[Any]: ...

    def lookupService(self, name: str, timeout: Sequence[int] | None = None) -> Deferred[Any]: ...  # noqa: N802

    def lookupAddress(self, name: str, timeout: Sequence[int] | None = None) -> Deferred[Any]: ...  # noqa: N802

    def lookupIPV6Address(self, name: str, timeout: Sequence[int] | None = None) -> Deferred[Any]: ...  # noqa: N802


class Outcome(enum.Enum):
    ANSWER = "answer"
    NXDOMAIN = "nxdomain"
    TIMEOUT = "timeout"
    ERROR = "error"


@attrs.define
class DnsStatistics:
    """Counters read by the metrics collector at scrape time."""

    lookups: dict[tuple[str, str], int] = attrs.Factory(
        lambda: {(kind, outcome): 0 for kind in RECORD_TYPES for outcome in OUTCOMES}
    )
    latency_counts: list[int] = attrs.Factory(lambda: [0] * (len(LATENCY_BUCKETS) + 1))  # last: +Inf
    latency_sum: float = 0.0
    cache_hits: int = 0
    failovers: int = 0
    held: dict[Peer, float] = attrs.Factory(dict)  # target -> until

    def observe(self, seconds: float) -> None:
        """One look-up that asked DNS took ``seconds``."""
        index = next((i for i, bound in enumerate(LATENCY_BUCKETS) if seconds <= bound), len(LATENCY_BUCKETS))
        self.latency_counts[index] += 1
        self.latency_sum += seconds

    def latency_buckets(self) -> list[tuple[str, int]]:
        """Cumulative (le, count) pairs, Prometheus style."""
        result, running = [], 0
        for bound, count in zip((*map(str, LATENCY_BUCKETS), "+Inf"), self.latency_counts, strict=True):
            running += count
            result.append((bound, running))
        return result

    def targets_held(self, now: float) -> int:
        return sum(1 for until in self.held.values() if until > now)


@attrs.frozen
class _Entry:
    expires: float
    records: tuple[Any, ...]


class ServerLocator:
    """RFC 3263 look-ups with a TTL cache and a hold-down list of failed targets."""

    _log = Logger()

    def __init__(
        self,
        resolver: DnsResolver,
        clock: Clock,
        *,
        hosts: HostsTable | None = None,
        policy: DnsSettings = DnsSettings(),
        served: frozenset[Transport] = frozenset({Transport.UDP, Transport.TCP}),
        random_source: RandomSource = random.random,
    ) -> None:
        self._resolver, self._clock = resolver, clock
        self._hosts = hosts if hosts is not None else HostsTable()
        self.policy, self.served, self._random = policy, served, random_source
        self._cache: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self._located: OrderedDict[Query, tuple[float, tuple[Target, ...]]] = OrderedDict()
        self.statistics = DnsStatistics()

    # ------------------------------------------------------------------ targets

    def cached(self, query: Query) -> tuple[Target, ...] | None:
        """The targets of ``query`` when known without asking DNS (numeric, hosts file, or
        every record still in the cache); None when a look-up is needed."""
        if is_numeric(query.host) or self._hosts.lookup(bare_host(query.host)):
            return self._direct(query)
        entry = self._located.get(query)
        if entry is not None and entry[0] > self._clock.seconds():
            self._located.move_to_end(query)
            self.statistics.cache_hits += 1
            return entry[1]
        return None

    def last_known(self, query: Query) -> tuple[Target, ...]:
        """The targets last found for ``query``, expired or not (for failover decisions)."""
        direct = self.cached(query)
        if direct is not None:
            return direct
        entry = self._located.get(query)
        return () if entry is None else entry[1]

    def locate(self, query: Query) -> Deferred[tuple[Target, ...]]:
        """The targets of ``query`` in RFC 3263 order (empty: the name resolves nowhere)."""
        known = self.cached(query)
        if known is not None:
            return Deferred.fromCoroutine(_ready(known))
        return Deferred.fromCoroutine(self._locate(query))

    def targets_held(self) -> int:
        return self.statistics.targets_held(self._clock.seconds())

    def hold(self, peer: Peer) -> None:
        """``peer`` failed (503, time-out, transport error): avoid it for a while (4.3)."""
        now = self._clock.seconds()
        for stale in [p for p, until in self.statistics.held.items() if until <= now]:
            del self.statistics.held[stale]
        self.statistics.held[peer] = now + self.policy.failed_target_hold
        self._log.info(
            "target {peer} held down for {seconds} s", peer=str(peer), seconds=self.policy.failed_target_hold
        )

    def is_held(self, peer: Peer) -> bool:
        until = self.statistics.held.get(peer)
        return until is not None and until > self._clock.seconds()

    def _direct(self, query: Query) -> tuple[Target, ...]:
        transport = default_transport(query)
        port = query.port or DEFAULT_PORTS[transport]
        host = bare_host(query.host)
        addresses = (host,) if is_numeric(host) else self._hosts.lookup(host)
        return tuple(targets_for(transport, addresses, port, host))

    async def _locate(self, query: Query) -> tuple[Target, ...]:
        started = self._clock.seconds()
        expiries: list[float] = [started + self.policy.max_ttl]
        domain = bare_host(query.host).rstrip(".").lower()
        choices: list[tuple[Transport, str]] = []
        if query.port is None and query.transport is None:
            naptr = await self._records(domain, "NAPTR", expiries)
            records = [
                NaptrRecord(
                    r.order,
                    r.preference,
                    _text(r.flags),
                    _text(r.service),
                    str(r.replacement),
                    _text(r.regexp),
                )
                for r in naptr
            ]
            choices = naptr_services(records, secure=query.secure, served=self.served)
            if records and not choices:
                self._log.info("NAPTR of {domain}: no usable SIP service", domain=domain)
        if query.port is None and not choices:
            choices = srv_names(query, self.served)
        targets: list[Target] = []
        for transport, name in choices:
            srv = [
                SrvRecord(r.priority, r.weight, r.port, str(r.target))
                for r in await self._records(name, "SRV", expiries)
            ]
            for record in order_srv(srv, self._random):
                addresses = await self._addresses(record.target.rstrip("."), expiries)
                targets += targets_for(transport, addresses, record.port, domain)
            if targets:
                break
        if not targets:
            transport = default_transport(query)
            port = query.port or DEFAULT_PORTS[transport]
            targets = targets_for(transport, await self._addresses(domain, expiries), port, domain)
        located = tuple(targets)
        self._located[query] = (min(expiries), located)
        while len(self._located) > self.policy.cache_size:
            self._located.popitem(last=False)
        self.statistics.observe(self._clock.seconds() - started)
        return located

    async def _addresses(self, name: str, expiries: list[float]) -> tuple[str, ...]:
        listed = self._hosts.lookup(name)
        if listed:
            return listed
        # Both families asked at once: one round trip, not two.
        v4 = Deferred.fromCoroutine(self._records(name, "A", expiries))
        v6 = Deferred.fromCoroutine(self._records(name, "AAAA", expiries))
        found = [record.dottedQuad() for record in await v4]
        found += [_ipv6(record) for record in await v6]
        return tuple(found)

    async def _records(self, name: str, kind: str, expiries: list[float]) -> tuple[Any, ...]:
        """The records of ``kind`` for ``name``: from the cache, or asked of DNS and cached."""
        key = (name.lower(), kind)
        now = self._clock.seconds()
        entry = self._cache.get(key)
        if entry is not None and entry.expires > now:
            self._cache.move_to_end(key)
            self.statistics.cache_hits += 1
            expiries.append(entry.expires)
            return entry.records
        lookup = {
            "NAPTR": self._resolver.lookupNamingAuthorityPointer,
            "SRV": self._resolver.lookupService,
            "A": self._resolver.lookupAddress,
            "AAAA": self._resolver.lookupIPV6Address,
        }[kind]
        query = lookup(name, (max(1, int(self.policy.timeout)),))
        query.addTimeout(self.policy.timeout, self._clock)  # type: ignore[arg-type]
        try:
            answers, _authority, _additional = await query
        except DNSNameError:
            return self._store(key, (), self.policy.negative_ttl, Outcome.NXDOMAIN, expiries)
        except (DNSQueryTimeoutError, DeferredTimeoutError):
            self._count(kind, Outcome.TIMEOUT)
            self._log.warn("DNS {kind} query for {name} timed out", kind=kind, name=name)
            expiries.append(now)  # nothing learnt: ask again next time
            return ()
        except Exception as error:  # a server failure, a refusal, a broken answer: not cached
            self._count(kind, Outcome.ERROR)
            self._log.warn(
                "DNS {kind} query for {name} failed: {error}", kind=kind, name=name, error=repr(error)
            )
            expiries.append(now)
            return ()
        records, ttl = self._taken(name, _TYPE_CODES[kind], answers, kind)
        if not records:
            return self._store(key, (), self.policy.negative_ttl, Outcome.ANSWER, expiries)
        return self._store(key, records, ttl, Outcome.ANSWER, expiries)

    def _taken(
        self, name: str, code: int, answers: Sequence[Any], kind: str
    ) -> tuple[tuple[Any, ...], float]:
        """The records of type ``code`` owned by ``name`` or the end of its CNAME chain in the
        answer, at most ``max_records``, and their smallest TTL."""
        aliases = {
            str(rr.name).lower(): str(rr.payload.name).lower() for rr in answers if rr.type == dns.CNAME
        }
        owner, seen = name.lower(), {name.lower()}
        while owner in aliases:
            owner = aliases[owner]
            if owner in seen or len(seen) > self.policy.max_cname_depth:
                self._log.warn(
                    "DNS {kind} answer for {name} refused: CNAME loop or chain longer than {depth}",
                    kind=kind,
                    name=name,
                    depth=self.policy.max_cname_depth,
                )
                return (), self.policy.negative_ttl
            seen.add(owner)
        matching = [rr for rr in answers if rr.type == code and str(rr.name).lower() in seen]
        if len(matching) > self.policy.max_records:
            self._log.warn(
                "DNS {kind} answer for {name} has {count} records: only {limit} used",
                kind=kind,
                name=name,
                count=len(matching),
                limit=self.policy.max_records,
            )
            matching = matching[: self.policy.max_records]
        ttl = min((float(rr.ttl) for rr in matching), default=self.policy.negative_ttl)
        return tuple(rr.payload for rr in matching), ttl

    def _store(
        self,
        key: tuple[str, str],
        records: tuple[Any, ...],
        ttl: float,
        outcome: Outcome,
        expiries: list[float],
    ) -> tuple[Any, ...]:
        self._count(key[1], outcome)
        ttl = min(max(ttl, self.policy.min_ttl), self.policy.max_ttl)
        expires = self._clock.seconds() + ttl
        expiries.append(expires)
        self._cache[key] = _Entry(expires, records)
        self._cache.move_to_end(key)
        while len(self._cache) > self.policy.cache_size:
            self._cache.popitem(last=False)
        return records

    def _count(self, kind: str, outcome: Outcome) -> None:
        self.statistics.lookups[kind, outcome.value] += 1


async def _ready(targets: tuple[Target, ...]) -> tuple[Target, ...]:
    return targets


def _text(value: object) -> str:
    return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value or "")


def _ipv6(record: Any) -> str:
    return socket.inet_ntop(socket.AF_INET6, record.address)


def nameservers(
    servers: Sequence[str], resolv_conf: str | Path = "/etc/resolv.conf"
) -> list[tuple[str, int]]:
    """``[dns] servers`` (``HOST`` or ``HOST:PORT``, IPv6 in brackets) as (host, port), else
    the nameservers of resolv.conf."""
    if not servers:
        try:
            text = Path(resolv_conf).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return []
        found = []
        for line in text.splitlines():
            fields = line.split()
            if len(fields) >= 2 and fields[0] == "nameserver":
                found.append((fields[1], 53))
        return found
    parsed: list[tuple[str, int]] = []
    for server in servers:
        if server.startswith("["):
            host, _, rest = server[1:].partition("]")
            parsed.append((host, int(rest[1:]) if rest.startswith(":") else 53))
        elif server.count(":") == 1:
            host, _, port = server.partition(":")
            parsed.append((host, int(port)))
        else:
            parsed.append((server, 53))
    return parsed


def make_resolver(servers: Sequence[tuple[str, int]], reactor: object) -> DnsResolver:
    """A non-blocking ``twisted.names`` client for ``servers`` (no cache of its own: the
    locator's cache is the one, on the injected clock)."""
    resolver: DnsResolver = Resolver(servers=list(servers), reactor=reactor)  # type: ignore[no-untyped-call]
    return resolver


class TransportChoice(Service):
    """RFC 3263 4.1 for a configured next hop whose transport is left to DNS (``[upstream]
    transport = ""``): NAPTR (then SRV) is asked at start and every ``interval`` seconds (the
    cache answers until the records' TTL ends), and ``chosen`` is called with the transport of
    the best target whenever it changes.  Until the first answer the default (UDP) stands.

    The transport must be known before the core builds a request (its Via names it), so it
    is chosen here ahead of time rather than per message."""

    _log = Logger()

    def __init__(
        self,
        locator: ServerLocator,
        clock: Clock,
        query: Query,
        chosen: Callable[[Transport], None],
        *,
        interval: float = 30.0,
    ) -> None:
        self._locator, self._clock, self._query, self._chosen = locator, clock, query, chosen
        self._interval = interval
        self._current: Transport | None = None
        self._call: Any = None

    @override
    def startService(self) -> None:
        self.running = True
        self._check()

    @override
    def stopService(self) -> None:
        self.running = False
        if self._call is not None and self._call.active():
            self._call.cancel()

    def _check(self) -> None:
        self._call = None
        lookup = self._locator.locate(self._query)
        lookup.addCallback(self._located)
        lookup.addErrback(
            lambda failure: self._log.failure("locating {host}", failure, host=self._query.host)
        )
        lookup.addBoth(lambda _: self._schedule())

    def _schedule(self) -> None:
        if self.running:
            self._call = self._clock.callLater(self._interval, self._check)

    def _located(self, targets: tuple[Target, ...]) -> None:
        if not targets:
            self._log.warn("{host}: no SIP server found by DNS; transport unchanged", host=self._query.host)
            return
        transport = targets[0].peer.transport
        if transport is not self._current:
            self._log.info(
                "{host}: RFC 3263 chose {transport}", host=self._query.host, transport=transport.value
            )
            self._current = transport
            self._chosen(transport)


log = Logger(namespace="scaserver.dns")


def server_locator(dns: DnsSettings, reactor: object, hosts: HostsTable) -> ServerLocator | None:
    """The RFC 3263 locator on ``[dns] servers`` (or resolv.conf's); None when no name server
    is known (names then come from the hosts file alone)."""
    servers = nameservers(dns.servers)
    if not servers:
        log.warn("no DNS server configured: host names are looked up in the hosts file only")
        return None
    clock = cast(Clock, reactor)
    return ServerLocator(make_resolver(servers, reactor), clock, hosts=hosts, policy=dns)
