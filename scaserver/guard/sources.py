"""Per-source rate limits, bans and authentication-failure lockout, in the manner of
Kamailio's pike and htable bans with fail2ban's counting.

:class:`SourceGuard` is consulted by the edge for every datagram and every framed stream
message, before anything is parsed: :meth:`SourceGuard.check` costs one table lookup and a
token-bucket update.  A source that sends faster than ``rate`` messages per second (with
``burst`` in hand) is banned for ``ban_s`` seconds, doubled for each repeat offence up to
``max_ban_s``; while banned, everything from it is dropped (and counted).  The dispatcher
reports authentication failures (:meth:`SourceGuard.auth_failed`): ``auth_failures`` of them
from one source within ``auth_window_s`` ban the source, ``user_failures`` for one user lock
the user out for ``ban_s`` (:meth:`SourceGuard.user_locked`).

Allowed sources (trusted peers, the upstream, configured networks) are never limited,
counted or banned.  Every table is bounded (least recently used entries go first), so a flood
from many addresses costs bounded memory.
"""

from __future__ import annotations

import enum
import ipaddress
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from typing import Final, TypeVar

import attrs

from scaserver.sip.actions import Fact

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

K = TypeVar("K")
V = TypeVar("V")


class BanReason(enum.Enum):
    """Why a source was banned (a log field and a metrics label)."""

    RATE = "rate"
    AUTH = "auth-failures"
    MANUAL = "manual"


RESPONSE_COST: Final = 0.125
"""What a response takes from its source's bucket: eight responses cost one request."""


@attrs.frozen
class SecuritySettings:
    """``[security]``: containment of floods and password guessing.

    ``rate`` messages per second per source address, with ``burst`` in hand; a source over
    it is banned for ``ban_s`` seconds, doubled for each repeat offence up to ``max_ban_s``.
    ``auth_failures`` failed authentications from one address within ``auth_window_s`` ban
    it; ``user_failures`` for one user lock that user out for ``ban_s``.  ``allow``: networks
    never limited nor banned (trusted peers and the upstream always are).  ``max_sources``
    bounds the tables.  TCP: ``max_connections_per_address``, ``max_connections`` in all,
    and ``tcp_unvouched_idle_timeout`` for connections that carried no authenticated or trusted
    request yet.  ``max_transactions``: transactions in progress (16 times as many held in all) beyond
    which new requests get 503.
    ``enabled`` false turns the rate limits and bans off.
    """

    enabled: bool = True
    rate: float = 20.0
    burst: float = 60.0
    ban_s: float = 60.0
    max_ban_s: float = 3600.0
    auth_failures: int = 5
    auth_window_s: float = 60.0
    user_failures: int = 10
    max_sources: int = 65536
    allow: tuple[str, ...] = ()
    max_connections_per_address: int = 32
    max_connections: int = 2000
    tcp_unvouched_idle_timeout: float = 30.0
    max_transactions: int = 20000


@attrs.frozen
class Ban(Fact):
    """``host`` is banned from ``since`` until ``until`` (the fact published when it starts)."""

    host: str
    reason: BanReason
    since: float
    until: float
    offence: int = 1

    @property
    def duration_s(self) -> float:
        return self.until - self.since


@attrs.frozen
class Verdict:
    """What to do with one message: ``admitted``, or dropped; ``ban`` is set when this very
    message started a ban."""

    admitted: bool
    ban: Ban | None = None


ADMITTED: Final = Verdict(True)
DROPPED: Final = Verdict(False)


@attrs.define
class _Bucket:
    tokens: float
    stamp: float


def _bare(host: str) -> str:
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    return text.split("%", 1)[0]


#: Hosts whose membership of the allowed networks a guard remembers (forgotten all at once).
ALLOWED_MEMORY: Final = 4096


def _in_networks(host: str, networks: tuple[IPNetwork, ...]) -> bool:
    """``host`` (an address; IPv4-mapped IPv6 counts as IPv4) is in one of ``networks``.
    About 7 us to work out: a guard remembers it per host (:meth:`SourceGuard.is_allowed`)."""
    try:
        address = ipaddress.ip_address(_bare(host))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address.version == net.version and address in net for net in networks)


def _put(table: OrderedDict[K, V], key: K, value: V, limit: int) -> None:
    table[key] = value
    table.move_to_end(key)
    while len(table) > limit:
        table.popitem(last=False)


@attrs.define
class SourceGuard:
    """The per-source accounting; ``trusted(host)`` adds allowed sources known elsewhere (the
    trusted peers, which can change while running)."""

    settings: SecuritySettings = SecuritySettings()
    trusted: Callable[[str], bool] = attrs.field(default=lambda host: False)
    max_bans: int = 16384  # bans held at most (the oldest go first)
    _allow: tuple[IPNetwork, ...] = attrs.field(init=False)
    dropped_total: int = attrs.field(default=0, init=False)
    bans_total: dict[BanReason, int] = attrs.field(init=False, factory=lambda: dict.fromkeys(BanReason, 0))
    _buckets: OrderedDict[str, _Bucket] = attrs.field(init=False, factory=OrderedDict)
    _bans: OrderedDict[str, Ban] = attrs.field(init=False, factory=OrderedDict)
    _offences: OrderedDict[str, tuple[int, float]] = attrs.field(init=False, factory=OrderedDict)
    _failures: OrderedDict[str, deque[float]] = attrs.field(init=False, factory=OrderedDict)
    _user_failures: OrderedDict[str, deque[float]] = attrs.field(init=False, factory=OrderedDict)
    _locked: OrderedDict[str, float] = attrs.field(init=False, factory=OrderedDict)
    _in_allowed: dict[str, bool] = attrs.field(init=False, factory=dict)
    """Whether each host seen is in ``_allow``: looked up by the host string alone (its hash
    is cached), where a cache keyed by the host and the networks hashed every network (two
    ``int()`` in Python per network) on every message."""

    @_allow.default
    def _networks(self) -> tuple[IPNetwork, ...]:
        return networks(self.settings.allow)

    def is_allowed(self, host: str) -> bool:
        """Never limited nor banned: a configured network or a trusted peer."""
        if self._allow:
            inside = self._in_allowed.get(host)
            if inside is None:
                if len(self._in_allowed) >= ALLOWED_MEMORY:
                    self._in_allowed.clear()
                inside = self._in_allowed[host] = _in_networks(host, self._allow)
            if inside:
                return True
        return self.trusted(host)

    def check(self, host: str, now: float, *, cost: float = 1.0) -> Verdict:
        """One message from ``host``: admitted, or dropped (banned, or over its rate).

        ``cost`` is what the message takes from the source's bucket: 1 for a request,
        :data:`RESPONSE_COST` for a response (the answers of a phone, or of an office behind
        one NAT address, to a NOTIFY fan-out come in bursts the server itself caused)."""
        ban = self._bans.get(host)
        if ban is not None:
            if ban.until > now:
                self.dropped_total += 1
                return DROPPED
            del self._bans[host]
        settings = self.settings
        bucket = self._buckets.get(host)
        if bucket is None:
            # An allowed network's host already seen is answered from its memory, without a call.
            if self._in_allowed.get(host) or self.is_allowed(host):
                return ADMITTED
            _put(self._buckets, host, _Bucket(settings.burst - cost, now), settings.max_sources)
            return ADMITTED
        self._buckets.move_to_end(host)
        tokens = min(settings.burst, bucket.tokens + (now - bucket.stamp) * settings.rate) - cost
        bucket.stamp = now
        if tokens >= 0.0:
            bucket.tokens = tokens
            return ADMITTED
        if self.is_allowed(host):
            bucket.tokens = settings.burst  # a trusted peer is never held back
            return ADMITTED
        self.dropped_total += 1
        return Verdict(False, self.ban(host, BanReason.RATE, now))

    @property
    def ban_table(self) -> Mapping[str, Ban]:
        """The bans by host, expired ones included until they are next looked at: the same
        mapping for the guard's life, so that a socket's read loop can keep it and look a
        source up without a call (:meth:`drop_banned` when it is there)."""
        return self._bans

    def drop_banned(self, host: str, now: float) -> bool:
        """True (and counted as dropped) when ``host`` is banned: the cheapest test, for the
        socket's read loop, before anything is allocated for the message."""
        ban = self._bans.get(host)
        if ban is not None and ban.until > now:
            self.dropped_total += 1
            return True
        return False

    def ban(self, host: str, reason: BanReason, now: float, duration_s: float | None = None) -> Ban:
        """Ban ``host`` now: for ``duration_s``, else ``ban_s`` doubled per earlier offence
        (offences are forgotten ``max_ban_s`` after the last one)."""
        settings = self.settings
        count, last = self._offences.get(host, (0, now))
        if now - last > settings.max_ban_s:
            count = 0
        count += 1
        _put(self._offences, host, (count, now), settings.max_sources)
        if duration_s is None:
            duration_s = min(settings.max_ban_s, settings.ban_s * 2 ** min(count - 1, 32))
        ban = Ban(host, reason, now, now + duration_s, count)
        _put(self._bans, host, ban, self.max_bans)
        self._buckets.pop(host, None)
        self._failures.pop(host, None)
        self.bans_total[reason] += 1
        return ban

    def is_banned(self, host: str, now: float) -> bool:
        ban = self._bans.get(host)
        return ban is not None and ban.until > now

    def unban(self, host: str) -> bool:
        """Lift the ban on ``host`` and forget its history; False when it was not banned."""
        for table in (self._buckets, self._offences, self._failures):
            table.pop(host, None)
        return self._bans.pop(host, None) is not None

    def bans(self, now: float) -> list[Ban]:
        """The bans in force, soonest to end first (expired ones are forgotten)."""
        for host in [host for host, ban in self._bans.items() if ban.until <= now]:
            del self._bans[host]
        return sorted(self._bans.values(), key=lambda ban: (ban.until, ban.host))

    def active_bans(self, now: float) -> int:
        return sum(1 for ban in self._bans.values() if ban.until > now)

    # Authentication failures.

    def auth_failed(self, host: str, user: str | None, realm: str, now: float) -> Ban | None:
        """Count one failed authentication; the ban it caused, if any."""
        settings = self.settings
        if user:
            key = f"{user}@{realm}"
            if self._window(self._user_failures, key, settings.user_failures, now):
                _put(self._locked, key, now + settings.ban_s, settings.max_sources)
                self._user_failures.pop(key, None)
        if self.is_allowed(host) or self.is_banned(host, now):
            return None
        if self._window(self._failures, host, settings.auth_failures, now):
            return self.ban(host, BanReason.AUTH, now)
        return None

    def user_locked(self, user: str, realm: str, now: float) -> bool:
        key = f"{user}@{realm}"
        until = self._locked.get(key)
        if until is None:
            return False
        if until > now:
            return True
        del self._locked[key]
        return False

    def _window(self, table: OrderedDict[str, deque[float]], key: str, limit: int, now: float) -> bool:
        """Record a failure at ``now``; True when ``limit`` of them fall within the window."""
        times = table.get(key)
        if times is None or times.maxlen != limit:
            times = deque(maxlen=max(limit, 1))
        times.append(now)
        _put(table, key, times, self.settings.max_sources)
        return len(times) >= limit and now - times[0] <= self.settings.auth_window_s

    @property
    def tracked_sources(self) -> int:
        return len(self._buckets)

    @property
    def tables(self) -> dict[str, int]:
        """The size of every table (bounded by ``max_sources`` / ``max_bans``)."""
        return {
            "buckets": len(self._buckets),
            "bans": len(self._bans),
            "offences": len(self._offences),
            "failures": len(self._failures),
            "user_failures": len(self._user_failures),
            "locked_users": len(self._locked),
        }


def networks(cidrs: Iterable[str]) -> tuple[IPNetwork, ...]:
    """Parse CIDR blocks (``192.0.2.10/24`` means the /24 around it); raises ValueError."""
    return tuple(ipaddress.ip_network(cidr.strip(), strict=False) for cidr in cidrs)
