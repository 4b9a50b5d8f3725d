"""Settings: the frozen attrs values one TOML file is structured into, one class per table.

Each subsystem that has a settings class of its own (``[registrar]``, ``[push]``, ``[tls]``
...) is structured straight into it; the tables left here are those of the server as a
whole.  Every key has a default, so a missing table (or no file at all) gives a server
listening on 127.0.0.1:5060 over UDP and TCP with its HTTP interface on 127.0.0.1:8080.
Settings are passed down explicitly; there is no module-level instance.
"""

from __future__ import annotations

import enum
from typing import Final

import attrs

from scaserver import __version__
from scaserver.config.listen import DEFAULT_HTTP_PORT, DEFAULT_SIP_PORT
from scaserver.edge.dns import DnsSettings
from scaserver.edge.endpoint import Endpoint
from scaserver.edge.http import RpcSettings
from scaserver.edge.tls import TlsSettings
from scaserver.guard.sources import SecuritySettings
from scaserver.parking.parked import ParkingSettings
from scaserver.provisioning.settings import ProvisioningSettings
from scaserver.push.settings import PushSettings
from scaserver.registrar.midregsettings import MidRegistrarSettings
from scaserver.registrar.nat import NatSettings
from scaserver.registrar.registrar import RegistrarSettings
from scaserver.reporting.settings import ReportingSettings
from scaserver.sca.settings import ScaSettings
from scaserver.sip.message import Transport
from scaserver.sip.timers import TimerConfig
from scaserver.tomlkeys import INLINE


class LogLevelName(enum.Enum):
    DEBUG = "debug"
    INFO = "info"
    WARN = "warn"
    ERROR = "error"
    CRITICAL = "critical"


@attrs.frozen
class ServerSettings:
    """``[server]``: where SIP is served and how this server names itself.

    ``listen`` entries are ``"HOST:PORT"``, ``"[IPV6]:PORT"`` or ``"IFNAME:PORT"`` (every
    usable address of the interface); each binds UDP and TCP.  ``advertised_host`` and
    ``advertised_port`` go into Via, Contact and Record-Route; empty/0 means the first
    listen address.  ``domains`` are the SIP domains this server is responsible for.
    ``secret_file`` holds the server secret (created with a random one at the first start):
    it keys the Record-Route signatures, digest nonces and PURRs, so calls, challenges and
    push routes in progress survive a restart; "" = a new secret for every process.
    """

    listen: tuple[Endpoint, ...] = (Endpoint("127.0.0.1", DEFAULT_SIP_PORT),)
    advertised_host: str = ""
    advertised_port: int = 0
    domains: tuple[str, ...] = ()
    user_agent: str = f"scaserver/{__version__}"
    secret_file: str = "var/scaserver.secret"

    def advertised(self) -> tuple[str, int]:
        """The (host, port) written into our Via, Contact and Record-Route headers."""
        first = self.listen[0]
        return (self.advertised_host or first.host, self.advertised_port or first.port)


@attrs.frozen
class SipSettings:
    """``[sip]``: RFC 3261 timers (section 17.1.1.1, table 4; keys ``t1``, ``t2`` and ``t4`` of
    the table, structured straight into the transaction layer's own settings), message and TCP
    connection limits."""

    timers: TimerConfig = attrs.field(factory=TimerConfig, metadata={INLINE: ("t1", "t2", "t4")})
    max_message_size: int = 65535
    tcp_idle_timeout: float = 600.0
    tcp_slow_sender_timeout: float = 10.0
    trace: bool = False


@attrs.frozen
class DatabaseSettings:
    """``[database]``: SQLAlchemy URL (SQLite or PostgreSQL), write-behind flush period, pool size."""

    url: str = "sqlite:///var/scaserver.db"
    flush_interval: float = 1.0
    pool_size: int = 4


@attrs.frozen
class DirectorySettings:
    """``[directory]``: how often the running server looks for changes of the subscribers,
    trusted peers and shared lines in the database (seconds; 0: only on SIGHUP or the
    ``directory.reload`` RPC)."""

    poll_interval: float = attrs.field(default=2.0, validator=attrs.validators.ge(0))


@attrs.frozen
class HttpSettings:
    """``[http]``: the JSON-RPC, metrics and provisioning listener.  ``tls``: "on" serves HTTPS
    with the ``[tls]`` certificate (which it then needs), "off" plain HTTP, "auto" HTTPS when
    ``[tls]`` has a certificate and key, else HTTP."""

    listen: Endpoint = Endpoint("127.0.0.1", DEFAULT_HTTP_PORT)
    tls: str = "auto"

    def https(self, tls: TlsSettings) -> bool:
        """Whether the listener speaks HTTPS under ``tls``."""
        return self.tls == "on" or (self.tls == "auto" and tls.enabled)


TLS_VERSIONS: Final = ("1.2", "1.3")


DIGEST_ALGORITHMS: Final = ("SHA-256", "SHA-512-256", "MD5")


@attrs.frozen
class UserAgentAlgorithms:
    """``[[auth.user_agents]]``: the digest algorithms offered to devices whose User-Agent
    contains ``match`` (case-insensitive), most preferred first."""

    match: str
    algorithms: tuple[str, ...]


@attrs.frozen
class AuthSettings:
    """``[auth]``: digest authentication (RFC 7616, RFC 8760).

    ``realm`` empty means the realm of a challenge is the domain of the request's AoR (To of
    a REGISTER, From otherwise) when it is ours, else the advertised host; a value forces one
    realm for every challenge.  ``algorithms`` are offered in the given order, one challenge
    each, to subscribers without a policy of their own and devices no ``user_agents`` rule
    matches.  MD5 alone by default: some phones give up on any challenge that offers
    SHA-256 (baresip 1.0), and others keep the algorithm they enrolled with.  ``require``
    false serves every peer without a challenge (a closed lab network only).
    """

    realm: str = ""
    nonce_ttl: float = 300.0
    algorithms: tuple[str, ...] = ("MD5",)
    user_agents: tuple[UserAgentAlgorithms, ...] = ()
    require: bool = True


@attrs.frozen
class UpstreamSettings:
    """``[upstream]``: the next hop (registrar/proxy) requests leave through; empty host = none.
    ``host`` may be a DNS name (RFC 3263); ``port = 0`` leaves the port to its SRV records (the
    transport's default port for an address or a name without SRV); ``transport = ""`` leaves
    the transport to its NAPTR (then SRV) records (UDP until they answer, and for an address)."""

    host: str = ""
    port: int = DEFAULT_SIP_PORT
    transport: Transport | None = Transport.UDP


@attrs.frozen
class LogSettings:
    """``[log]``: minimum level and output format (text lines or JSON lines) on stderr."""

    level: LogLevelName = LogLevelName.INFO
    json: bool = False


@attrs.frozen
class Settings:
    server: ServerSettings = ServerSettings()
    sip: SipSettings = SipSettings()
    database: DatabaseSettings = DatabaseSettings()
    directory: DirectorySettings = DirectorySettings()
    http: HttpSettings = HttpSettings()
    rpc: RpcSettings = attrs.field(factory=RpcSettings)
    reporting: ReportingSettings = attrs.field(factory=ReportingSettings)
    provisioning: ProvisioningSettings = attrs.field(factory=ProvisioningSettings)
    auth: AuthSettings = AuthSettings()
    security: SecuritySettings = attrs.field(factory=SecuritySettings)
    registrar: RegistrarSettings = attrs.field(factory=RegistrarSettings)
    sca: ScaSettings = attrs.field(factory=ScaSettings)
    upstream: UpstreamSettings = UpstreamSettings()
    log: LogSettings = LogSettings()
    push: PushSettings = attrs.field(factory=PushSettings)
    midregistrar: MidRegistrarSettings = attrs.field(factory=MidRegistrarSettings)
    parking: ParkingSettings = attrs.field(factory=ParkingSettings)
    nat: NatSettings = attrs.field(factory=NatSettings)
    tls: TlsSettings = attrs.field(factory=TlsSettings)
    dns: DnsSettings = attrs.field(factory=DnsSettings)
