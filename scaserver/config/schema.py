"""Settings: one TOML file read with :mod:`tomllib` into frozen attrs values, one class per subsystem.

The file is validated once, at start-up.  Whatever is wrong with it (TOML syntax, an
unknown key, a value of the wrong type, an address that cannot be bound) becomes ONE
:class:`ConfigError` whose text is a single line naming the file and the dotted key::

    config/demo.toml: sca.lines[0].appearances: expected an integer, got "x"

Every key has a default, so a missing file section (or no file at all) gives a server
listening on 127.0.0.1:5060 over UDP and TCP with its HTTP interface on 127.0.0.1:8080.
Settings are passed down explicitly; there is no module-level instance.
"""

from __future__ import annotations

import enum
import ipaddress
import json
import re
import socket
import tomllib
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

import attrs
import cattrs
from cattrs.errors import (
    AttributeValidationNote,
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)
from cattrs.gen import make_dict_structure_fn
from pyroute2 import IPRoute

from scaserver import __version__
from scaserver.edge.dns import DnsSettings
from scaserver.edge.endpoint import Endpoint
from scaserver.edge.tls import TlsEndpoint, TlsSettings
from scaserver.guard.sources import SecuritySettings
from scaserver.parking.parked import EarlyMedia, ParkingSettings
from scaserver.proxy.sessiontimer import RFC_MIN_SE
from scaserver.push.settings import LegacyPushRule, PushSettings
from scaserver.registrar.nat import NatSettings, PingMethod
from scaserver.registrar.registrar import RegistrarSettings
from scaserver.sca.line import canonical_aor
from scaserver.sip.errors import MalformedMessage
from scaserver.sip.message import Transport
from scaserver.sip.uri import SipUri, parse_uri

T = TypeVar("T")

DEFAULT_SIP_PORT: Final = 5060
DEFAULT_HTTP_PORT: Final = 8080

InterfaceLookup = Callable[[str], "tuple[str, ...] | None"]
"""Addresses bound to a network interface by name, or None when there is no such interface."""


class ConfigError(Exception):
    """A configuration that cannot be used; ``str()`` is the one line shown to the operator."""

    def __init__(self, source: str, key: str, detail: str) -> None:
        self.source, self.key, self.detail = source, key, detail
        super().__init__(f"{source}: {key}: {detail}" if key else f"{source}: {detail}")


class _ValueError(ValueError):
    """A value rejected by one of our structuring hooks; its text is the operator-facing detail."""


# ---------------------------------------------------------------------------------------------
# Values


class LogLevelName(enum.Enum):
    DEBUG = "debug"
    INFO = "info"
    WARN = "warn"
    ERROR = "error"
    CRITICAL = "critical"


class CallInfoUri(enum.Enum):
    """What goes inside the angle brackets of an SCA Call-Info value (sca.md section 5.1)."""

    DOMAIN = "domain"
    AOR = "aor"


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
    """``[sip]``: RFC 3261 timers (section 17.1.1.1, table 4), message and TCP connection limits."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
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


DEFAULT_SIPS_PORT: Final = 5061
TLS_VERSIONS: Final = ("1.2", "1.3")


@attrs.frozen
class ProvisioningSettings:
    """``[provisioning]`` (provisioning.md section 4): handset profiles served under
    ``path_prefix`` on the ``[http]`` listener.

    ``sip_host``/``sip_port``/``sip_transport``: where the phones register (empty/0: the
    advertised SIP address); ``base_url``: how phones reach the provisioning server (empty:
    ``http://`` + the ``[http]`` listen address + ``path_prefix``); ``default_username`` and
    ``default_password``: site credentials for devices without their own; ``allow_from``:
    networks allowed to fetch (empty = any); ``upload_dir``: where phone uploads go (empty:
    uploads refused).  ``base_url`` is required when ``[http]`` listens on a wildcard address
    (the phones cannot be told to fetch from 0.0.0.0).  ``require_credentials``: a profile that
    carries SIP passwords is refused (403) to a device without provisioning credentials
    (its own or the site default); false serves it to anyone who asks for the MAC.
    """

    enabled: bool = True
    path_prefix: str = "/prov"
    realm: str = "scaserver-provisioning"
    sip_host: str = ""
    sip_port: int = 0
    sip_transport: str = "udp"
    outbound_proxy: str = ""
    base_url: str = ""
    default_username: str = ""
    default_password: str = ""
    allow_from: tuple[str, ...] = ()
    upload_dir: str = ""
    upload_max_bytes: int = 1024 * 1024
    upload_keep: int = 5
    serve_overrides: bool = False
    static_dir: str = ""
    unknown_mac_limit: int = 20
    registration_expires: int = 600
    resync_periodic: int = 3600
    firmware_path: str = "sip.ld"
    require_credentials: bool = True


@attrs.frozen
class ReportingSettings:
    """``[reporting]`` (reporting.md): call and appearance history for SQL reports.

    ``enabled`` false writes no history; ``retention_days`` is how long rows are kept
    (purged once a day); ``sample_interval`` the seconds between per-line busy samples.
    """

    enabled: bool = True
    retention_days: int = 90
    sample_interval: float = 60.0


@attrs.frozen
class RpcSettings:
    """``[rpc]`` (rpc.md section 2): access to the JSON-RPC control interface.

    ``admin_token_file``/``read_token_file``: files holding a bearer token of each scope
    (required for a non-loopback ``http.listen``); ``allow_from``: CIDRs allowed to call
    over TCP (empty = any); ``allowed_origins``: browser Origins accepted; ``dgram_socket``:
    path of the kamcmd-compatible UNIX datagram socket ("" = none);
    ``http_status_always_200``: answer every JSON-RPC reply with HTTP 200.
    """

    admin_token_file: str = ""
    read_token_file: str = ""
    allow_from: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    dgram_socket: str = ""
    http_status_always_200: bool = False


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
class SharedLine:
    """``[[sca.lines]]``: a shared line provisioned in the file (demo and small sites)."""

    aor: str
    appearances: int = 2
    members: tuple[str, ...] = ()
    push_members: bool = False


@attrs.frozen
class LineAlias:
    """``[[sca.aliases]]``: another name of a shared line (sca.md Q26), a number or URI that
    requests and subscriptions reach the line by (``alias = "sip:100@example.com"``,
    ``line = "sip:2001@example.com"``)."""

    alias: str
    line: str


@attrs.frozen
class ScaSettings:
    """``[sca]``: the parameters of sca.md section 12, under the same names.

    ``hash_table_size``, ``subs_table`` and ``state_table`` are accepted for parity and
    carry no behaviour of their own.  ``call_info_uri`` is ``"domain"``, ``"aor"`` or a
    fixed SIP URI; ``max_appearances`` 0 and ``min_expires`` 0 mean no limit;
    ``max_subscriptions_per_identity`` caps the live subscriptions of one subscriber (digest
    user, or From AoR without authentication; trusted peers are not capped; 0 = no cap);
    ``reboot_memory_s`` is how long a subscription removed after a failed NOTIFY is
    remembered so that the phone's next SUBSCRIBE counts as a reboot (sca.md 3.5).
    ``early_ttl``: seconds a call not answered yet keeps its appearance without signalling
    (O20, I8); ``max_call_age``: seconds a call in progress keeps it without signalling (the
    stale-call sweep of Q18), 0 = never.  ``session_timers``: act as an RFC 4028 session-timer
    proxy for calls of shared lines (``session_expires`` asked for and the largest let
    through, ``min_se`` the smallest accepted, both seconds, at least 90): a call whose
    session is not refreshed in time is idled with cause ``session-expired``; calls without
    a session timer keep ``max_call_age``.  ``decline_ends_ringing``: a 603 (any 6xx) from
    one member of a line stops the others ringing; off: it declines for that member only.
    ``insert_pai``: a call an authenticated subscriber places through a trusted ``[upstream]``
    carries ``P-Asserted-Identity`` of the shared line it is on (else of the subscriber),
    RFC 3325; a P-Asserted-Identity from a peer that is not trusted is never relayed.
    ``aliases``: other names of shared lines (Q26); with the aliases in the database, these
    win for the same alias.
    """

    call_info_max_expires: int = 3600
    line_seize_max_expires: int = 15
    purge_expired_interval: float = 120.0
    db_update_interval: float = 300.0
    hash_table_size: int = 9
    subs_table: str = "sca_subscriptions"
    state_table: str = "sca_state"
    server_address: str = ""
    contact_fallback: str = ""
    outbound_proxy: str = ""
    seized_ttl: float = 120.0
    active_pending_ttl: float = 35.0
    early_ttl: float = 200.0
    max_call_age: float = 0.0
    session_timers: bool = True
    session_expires: int = 1800
    min_se: int = RFC_MIN_SE
    seize_retry_after: int = 1
    max_appearances: int = 0
    max_subscriptions_per_identity: int = 32
    reboot_memory_s: float = 3600.0
    min_expires: int = 0
    call_info_ok_code: int = 202
    call_info_uri: str = CallInfoUri.DOMAIN.value
    alerting_state: bool = True
    decline_ends_ringing: bool = False
    strip_call_info: bool = True
    insert_pai: bool = False
    lines: tuple[SharedLine, ...] = ()
    aliases: tuple[LineAlias, ...] = ()


@attrs.frozen
class UpstreamSettings:
    """``[upstream]``: the next hop (registrar/proxy) requests leave through; empty host = none.
    ``host`` may be a DNS name (RFC 3263); ``port = 0`` leaves the port to its SRV records (the
    transport's default port for an address or a name without SRV); ``transport = ""`` leaves
    the transport to its NAPTR (then SRV) records (UDP until they answer, and for an address)."""

    host: str = ""
    port: int = DEFAULT_SIP_PORT
    transport: Transport | None = Transport.UDP


Secret = typing.NewType("Secret", str)
"""A password or HA1: a string never shown, not even in a configuration error."""

UPSTREAM_AUTH_MODES: Final = ("none", "subscriber", "static")


@attrs.frozen
class UpstreamCredential:
    """``[[midregistrar.credentials]]``: how scaserver answers a challenge to its own REGISTER
    for ``aor`` when ``upstream_auth = "static"`` (push-and-parking.md sections 3.1, 3.5).

    ``username`` "" is the AoR's user part; ``realm`` "" answers a challenge of any realm
    (with ``password`` only: an HA1 belongs to one realm).  Exactly one of ``password`` and
    ``ha1``, the hex H(username:realm:password) of ``ha1_algorithm`` (RFC 7616 section 3.4.2).
    """

    aor: str
    username: str = ""
    realm: str = ""
    password: Secret = attrs.field(default=Secret(""), repr=False)
    ha1: Secret = attrs.field(default=Secret(""), repr=False)
    ha1_algorithm: str = "MD5"


@attrs.frozen
class MidRegistrarSettings:
    """``[midregistrar]`` (push-and-parking.md section 3.1, keys ``midreg.*`` there).

    ``enabled`` false: scaserver is a plain registrar.  ``upstream`` is the registrar/PBX
    device REGISTERs go to, ``sip:host[:port][;transport=udp|tcp|tls]`` (its address is a
    trusted peer); ``upstream_domain`` the Request-URI domain of our own REGISTERs ("" = the
    upstream host); ``advertised`` the host[:port] of the aggregate contact ("" = the
    server's advertised address).  ``upstream_auth`` answers a challenge to our own REGISTER:
    ``none`` (the upstream trusts our address), ``subscriber`` (the subscriber table's HA1
    when the realm matches) or ``static`` (``credentials``).
    """

    enabled: bool = False
    mode: str = "aor"
    upstream: str = ""
    upstream_domain: str = ""
    advertised: str = ""
    outgoing_expires: int = 3600
    refresh_fraction: float = 0.33
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
    upstream_auth: str = "none"
    credentials: tuple[UpstreamCredential, ...] = ()


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
    rpc: RpcSettings = RpcSettings()
    reporting: ReportingSettings = ReportingSettings()
    provisioning: ProvisioningSettings = ProvisioningSettings()
    auth: AuthSettings = AuthSettings()
    security: SecuritySettings = attrs.field(factory=SecuritySettings)
    registrar: RegistrarSettings = attrs.field(factory=RegistrarSettings)
    sca: ScaSettings = ScaSettings()
    upstream: UpstreamSettings = UpstreamSettings()
    log: LogSettings = LogSettings()
    push: PushSettings = attrs.field(factory=PushSettings)
    midregistrar: MidRegistrarSettings = MidRegistrarSettings()
    parking: ParkingSettings = attrs.field(factory=ParkingSettings)
    nat: NatSettings = attrs.field(factory=NatSettings)
    tls: TlsSettings = attrs.field(factory=TlsSettings)
    dns: DnsSettings = attrs.field(factory=DnsSettings)


# ---------------------------------------------------------------------------------------------
# Addresses


def system_interfaces(name: str) -> tuple[str, ...] | None:
    """The addresses of interface ``name`` from the kernel (rtnetlink), or None if it does not exist.

    IPv4 addresses are matched by label (so ``eth0:1`` aliases work); IPv6 addresses by
    interface index, leaving out link-local ones (they cannot be bound without a scope).
    """
    with IPRoute() as ipr:
        addresses: list[str] = [str(message.get_attr("IFA_ADDRESS")) for message in ipr.get_addr(label=name)]
        indexes = ipr.link_lookup(ifname=name)
        if not indexes and not addresses:
            return None
        for index in indexes:
            for message in ipr.get_addr(index=index, family=socket.AF_INET6):
                if message["scope"] != 253:  # RT_SCOPE_LINK
                    addresses.append(str(message.get_attr("IFA_ADDRESS")))
    return tuple(addresses)


def _split_host_port(text: str, default_port: int) -> tuple[str, int]:
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise _ValueError(f"{_show(text)}: unterminated IPv6 bracket")
        host, rest = text[1:end], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise _ValueError(f"{_show(text)}: expected HOST:PORT")
        port_text = rest[1:] if rest else ""
    elif text.count(":") > 1:
        raise _ValueError(f"{_show(text)}: write IPv6 addresses in brackets, as [::1]:5060")
    else:
        host, _, port_text = text.partition(":")
    if not host:
        raise _ValueError(f"{_show(text)}: missing host")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise _ValueError(f"{_show(text)}: port must be a number from 0 to 65535")
    return host, int(port_text)


def parse_endpoints(text: str, default_port: int, interfaces: InterfaceLookup) -> tuple[Endpoint, ...]:
    """``HOST:PORT`` / ``[V6]:PORT`` / ``IFNAME:PORT`` -> the endpoints to bind (raises ValueError)."""
    host, port = _split_host_port(text, default_port)
    try:
        return (Endpoint(ipaddress.ip_address(host).compressed, port),)
    except ValueError:
        pass
    addresses = interfaces(host)
    if addresses is None:
        raise _ValueError(f"{_show(text)}: not an IP address or a network interface")
    if not addresses:
        raise _ValueError(f"{_show(text)}: interface {host} has no usable address")
    return tuple(Endpoint(ipaddress.ip_address(address).compressed, port) for address in addresses)


# ---------------------------------------------------------------------------------------------
# Structuring


def _show(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"


def _expected(what: str, value: object) -> _ValueError:
    return _ValueError(f"expected {what}, got {_show(value)}")


def _structure_int(value: object, _: type) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _expected("an integer", value)
    return value


def _structure_float(value: object, _: type) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _expected("a number", value)
    return float(value)


def _structure_str(value: object, _: type) -> str:
    if not isinstance(value, str):
        raise _expected("a string", value)
    return value


def _structure_secret(value: object, _: type) -> Secret:
    if not isinstance(value, str):
        raise _ValueError("expected a string (the value is not shown)")
    return Secret(value)


def _structure_bool(value: object, _: type) -> bool:
    if not isinstance(value, bool):
        raise _expected("true or false", value)
    return value


def _enum_hook(cls: type[enum.Enum]) -> Callable[[object, type], enum.Enum]:
    choices = [str(member.value).lower() for member in cls]

    def structure(value: object, _: type) -> enum.Enum:
        if isinstance(value, str):
            for member in cls:
                if str(member.value).lower() == value.lower():
                    return member
        raise _expected(" or ".join(json.dumps(choice) for choice in choices), value)

    return structure


def _make_converter(interfaces: InterfaceLookup) -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    converter.register_structure_hook(int, _structure_int)
    converter.register_structure_hook(float, _structure_float)
    converter.register_structure_hook(str, _structure_str)
    converter.register_structure_hook(bool, _structure_bool)
    converter.register_structure_hook(Secret, _structure_secret)
    for enum_type in (Transport, LogLevelName, PingMethod, EarlyMedia):
        converter.register_structure_hook(enum_type, _enum_hook(enum_type))
    transport_hook = _enum_hook(Transport)
    converter.register_structure_hook_func(
        lambda cls: cls == Transport | None,
        lambda value, _: None if value == "" else transport_hook(value, Transport),
    )

    def structure_endpoint(value: object, _: type) -> Endpoint:
        if not isinstance(value, str):
            raise _expected('a "HOST:PORT" string', value)
        return parse_endpoints(value, DEFAULT_HTTP_PORT, interfaces)[0]

    def structure_listen(value: object, _: type) -> tuple[Endpoint, ...]:
        if not isinstance(value, list):
            raise _expected('a list of "HOST:PORT" strings', value)
        if not value:
            raise _ValueError("at least one address is needed")
        return _endpoint_list(value, DEFAULT_SIP_PORT)

    def structure_tls_listen(value: object, _: type) -> tuple[TlsEndpoint, ...]:
        if not isinstance(value, list):
            raise _expected('a list of "HOST:PORT" strings', value)
        found = _endpoint_list(value, DEFAULT_SIPS_PORT)
        return tuple(TlsEndpoint(endpoint.host, endpoint.port) for endpoint in found)

    def _endpoint_list(value: list[object], default_port: int) -> tuple[Endpoint, ...]:
        result: list[Endpoint] = []
        errors: list[Exception] = []
        for index, item in enumerate(value):
            try:
                if not isinstance(item, str):
                    raise _expected('a "HOST:PORT" string', item)
                result.extend(parse_endpoints(item, default_port, interfaces))
            except _ValueError as error:
                error.add_note(IterableValidationNote(f"@ index {index}", index, str))
                errors.append(error)
        if errors:
            raise IterableValidationError("listen", errors, tuple)
        return tuple(result)

    converter.register_structure_hook(Endpoint, structure_endpoint)

    def tuple_factory(cls: Any) -> Callable[[object, type], tuple[object, ...]]:
        (element, _ellipsis) = typing.get_args(cls)

        def structure(value: object, _: type) -> tuple[object, ...]:
            if not isinstance(value, list):
                raise _expected("a list", value)
            items: list[object] = []
            errors: list[Exception] = []
            for index, item in enumerate(value):
                try:
                    items.append(converter.structure(item, element))
                except Exception as error:
                    error.add_note(IterableValidationNote(f"@ index {index}", index, element))
                    errors.append(error)
            if errors:
                raise IterableValidationError("list", errors, cls)
            return tuple(items)

        return structure

    def is_homogeneous_tuple(cls: Any) -> bool:
        args = typing.get_args(cls)
        return typing.get_origin(cls) is tuple and len(args) == 2 and args[1] is Ellipsis

    converter.register_structure_hook_factory(is_homogeneous_tuple, tuple_factory)
    # Registered after the generic tuple hook so that it wins for server.listen.
    converter.register_structure_hook_func(lambda cls: cls == tuple[Endpoint, ...], structure_listen)
    converter.register_structure_hook_func(lambda cls: cls == tuple[TlsEndpoint, ...], structure_tls_listen)

    def class_factory(cls: Any) -> Callable[[object, type], object]:
        generated = make_dict_structure_fn(cls, converter)

        def structure(value: object, _: type) -> object:
            if not isinstance(value, dict):
                raise _expected("a table", value)
            return generated(value, cls)

        return structure

    converter.register_structure_hook_factory(attrs.has, class_factory)
    return converter


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _locate(error: BaseException, path: str = "") -> tuple[str, str]:
    """The dotted key and the detail of the first leaf of a cattrs error tree."""
    if isinstance(error, ForbiddenExtraKeysError):
        return _join(path, sorted(error.extra_fields)[0]), "unknown key"
    if isinstance(error, ClassValidationError | IterableValidationError):
        sub = error.exceptions[0]
        step = path
        for note in getattr(sub, "__notes__", ()):
            if isinstance(note, AttributeValidationNote):
                step = _join(path, note.name)
            elif isinstance(note, IterableValidationNote):
                step = f"{path}[{note.index}]"
        return _locate(sub, step)
    if isinstance(error, KeyError):
        return path, "required key missing"
    if isinstance(error, _ValueError):
        return path, str(error)
    return path, f"invalid value ({error})"


# ---------------------------------------------------------------------------------------------
# Checks that span a value's range or several keys


def _is_network(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True


def _check(settings: Settings) -> None:
    """Raise ``_KeyedValueError`` for the first value that is well-typed but unusable."""
    server, sip, db, auth, reg, sca, up = (
        settings.server,
        settings.sip,
        settings.database,
        settings.auth,
        settings.registrar,
        settings.sca,
        settings.upstream,
    )
    checks: list[tuple[bool, str, str]] = [
        (0 <= server.advertised_port <= 65535, "server.advertised_port", "must be from 0 to 65535"),
        (sip.t1 > 0, "sip.t1", "must be positive"),
        (sip.t2 >= sip.t1, "sip.t2", "must not be below sip.t1"),
        (sip.t4 > 0, "sip.t4", "must be positive"),
        (
            1024 <= sip.max_message_size <= 16 * 1024 * 1024,
            "sip.max_message_size",
            "must be from 1024 to 16777216",
        ),
        (sip.tcp_idle_timeout > 0, "sip.tcp_idle_timeout", "must be positive"),
        (sip.tcp_slow_sender_timeout > 0, "sip.tcp_slow_sender_timeout", "must be positive"),
        (
            db.url.split("://", 1)[0].split("+", 1)[0] in ("sqlite", "postgresql"),
            "database.url",
            f"{_show(db.url)}: expected a sqlite:// or postgresql:// URL",
        ),
        (db.flush_interval > 0, "database.flush_interval", "must be positive"),
        (db.pool_size >= 1, "database.pool_size", "must be at least 1"),
        (auth.nonce_ttl > 0, "auth.nonce_ttl", "must be positive"),
        (bool(auth.algorithms), "auth.algorithms", "at least one algorithm is needed"),
        (reg.min_expires >= 0, "registrar.min_expires", "must not be negative"),
        (reg.max_expires >= reg.min_expires, "registrar.max_expires", "must not be below min_expires"),
        (
            reg.min_expires <= reg.default_expires <= reg.max_expires,
            "registrar.default_expires",
            "must be between min_expires and max_expires",
        ),
        (reg.max_contacts >= 0, "registrar.max_contacts", "must not be negative"),
        (sca.call_info_max_expires > 0, "sca.call_info_max_expires", "must be positive"),
        (sca.line_seize_max_expires > 0, "sca.line_seize_max_expires", "must be positive"),
        (sca.purge_expired_interval > 0, "sca.purge_expired_interval", "must be positive"),
        (sca.db_update_interval > 0, "sca.db_update_interval", "must be positive"),
        (sca.seized_ttl > 0, "sca.seized_ttl", "must be positive"),
        (sca.active_pending_ttl > 0, "sca.active_pending_ttl", "must be positive"),
        (sca.early_ttl > 0, "sca.early_ttl", "must be positive"),
        (sca.max_call_age >= 0, "sca.max_call_age", "must not be negative (0 = no stale-call sweep)"),
        (sca.min_se >= RFC_MIN_SE, "sca.min_se", f"must be at least {RFC_MIN_SE} (RFC 4028 section 4)"),
        (sca.session_expires >= sca.min_se, "sca.session_expires", "must not be below sca.min_se"),
        (sca.seize_retry_after >= 0, "sca.seize_retry_after", "must not be negative"),
        (sca.max_appearances >= 0, "sca.max_appearances", "must not be negative (0 = no limit)"),
        (
            sca.max_subscriptions_per_identity >= 0,
            "sca.max_subscriptions_per_identity",
            "must not be negative (0 = no cap)",
        ),
        (sca.reboot_memory_s >= 0, "sca.reboot_memory_s", "must not be negative"),
        (sca.min_expires >= 0, "sca.min_expires", "must not be negative (0 = no minimum)"),
        (sca.call_info_ok_code in (200, 202), "sca.call_info_ok_code", "must be 200 or 202"),
        (
            sca.call_info_uri in ("domain", "aor") or _is_sip_uri(sca.call_info_uri),
            "sca.call_info_uri",
            f'expected "domain", "aor" or a sip: URI, got {_show(sca.call_info_uri)}',
        ),
        (0 <= up.port <= 65535, "upstream.port", "must be from 0 (SRV decides) to 65535"),
        (settings.reporting.retention_days >= 1, "reporting.retention_days", "must be at least 1"),
        (
            settings.provisioning.sip_transport in ("udp", "tcp", "tls"),
            "provisioning.sip_transport",
            f'expected "udp", "tcp" or "tls", got {_show(settings.provisioning.sip_transport)}',
        ),
        (
            bool(settings.provisioning.path_prefix.strip("/")),
            "provisioning.path_prefix",
            "must name at least one path segment (the root is the RPC tree)",
        ),
        (0 <= settings.provisioning.sip_port <= 65535, "provisioning.sip_port", "must be from 0 to 65535"),
        (settings.provisioning.upload_max_bytes > 0, "provisioning.upload_max_bytes", "must be positive"),
        (settings.reporting.sample_interval > 0, "reporting.sample_interval", "must be positive"),
    ]
    checks += _mobile_checks(settings)
    checks += _upstream_auth_checks(settings.midregistrar)
    checks += _dns_checks(settings.dns)
    for index, rule in enumerate(auth.user_agents):
        checks.append((bool(rule.match), f"auth.user_agents[{index}].match", "must not be empty"))
        checks.append(
            (bool(rule.algorithms), f"auth.user_agents[{index}].algorithms", "at least one is needed")
        )
        for algorithm in rule.algorithms:
            checks.append(
                (
                    algorithm in DIGEST_ALGORITHMS,
                    f"auth.user_agents[{index}].algorithms",
                    f"{_show(algorithm)}: expected one of {', '.join(DIGEST_ALGORITHMS)}",
                )
            )
    for algorithm in auth.algorithms:
        checks.append(
            (
                algorithm in DIGEST_ALGORITHMS,
                "auth.algorithms",
                f"{_show(algorithm)}: expected one of {', '.join(DIGEST_ALGORITHMS)}",
            )
        )
    for index, cidr in enumerate(settings.provisioning.allow_from):
        checks.append(
            (
                _is_network(cidr),
                f"provisioning.allow_from[{index}]",
                f"{_show(cidr)}: expected an address or CIDR",
            )
        )
    sec = settings.security
    checks += [
        (sec.rate > 0, "security.rate", "must be positive"),
        (sec.burst >= 1, "security.burst", "must be at least 1"),
        (sec.ban_s > 0, "security.ban_s", "must be positive"),
        (sec.max_ban_s >= sec.ban_s, "security.max_ban_s", "must not be below ban_s"),
        (sec.auth_failures >= 1, "security.auth_failures", "must be at least 1"),
        (sec.auth_window_s > 0, "security.auth_window_s", "must be positive"),
        (sec.user_failures >= 1, "security.user_failures", "must be at least 1"),
        (sec.max_sources >= 1, "security.max_sources", "must be at least 1"),
        (sec.max_connections_per_address >= 1, "security.max_connections_per_address", "must be at least 1"),
        (sec.max_connections >= 1, "security.max_connections", "must be at least 1"),
        (sec.tcp_unvouched_idle_timeout > 0, "security.tcp_unvouched_idle_timeout", "must be positive"),
        (sec.max_transactions >= 1, "security.max_transactions", "must be at least 1"),
    ]
    for index, cidr in enumerate(sec.allow):
        checks.append(
            (_is_network(cidr), f"security.allow[{index}]", f"{_show(cidr)}: expected an address or CIDR")
        )
    for index, cidr in enumerate(settings.rpc.allow_from):
        checks.append(
            (_is_network(cidr), f"rpc.allow_from[{index}]", f"{_show(cidr)}: expected an address or CIDR")
        )
    for field in ("server_address", "contact_fallback", "outbound_proxy"):
        value = getattr(sca, field)
        checks.append(
            (not value or _is_sip_uri(value), f"sca.{field}", f"expected a sip: URI, got {_show(value)}")
        )
    if server.advertised_host == "":
        first = server.listen[0].host
        checks.append(
            (
                not ipaddress.ip_address(first).is_unspecified,
                "server.advertised_host",
                f"required when listening on the wildcard address {first}",
            )
        )
    prov, http = settings.provisioning, settings.http.listen
    if prov.enabled and not prov.base_url:
        checks.append(
            (
                not _is_wildcard(http.host),
                "provisioning.base_url",
                f"required when [http] listens on the wildcard address {http.host}: phones must be "
                "told a URL they can reach (or set provisioning.enabled = false)",
            )
        )
    seen: set[str] = set()
    for index, line in enumerate(sca.lines):
        key = f"sca.lines[{index}]"
        checks.append(
            (
                _is_sip_uri(line.aor) and "@" in line.aor and ";" not in line.aor,
                f"{key}.aor",
                f"expected a sip:user@host address of record, got {_show(line.aor)}",
            )
        )
        checks.append((line.aor.lower() not in seen, f"{key}.aor", f"{_show(line.aor)} is listed twice"))
        seen.add(line.aor.lower())
        checks.append((line.appearances >= 1, f"{key}.appearances", "must be at least 1"))
        for member_index, member in enumerate(line.members):
            checks.append(
                (
                    _is_sip_uri(member),
                    f"{key}.members[{member_index}]",
                    f"expected a sip: URI, got {_show(member)}",
                )
            )
    checks += _alias_checks(sca)
    checks += _tls_checks(settings)
    for ok, key, detail in checks:
        if not ok:
            raise _KeyedValueError(key, detail)


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _readable(path: str) -> bool:
    try:
        with Path(path).open("rb"):
            return True
    except OSError:
        return False


def _tls_checks(settings: Settings) -> list[tuple[bool, str, str]]:
    """``[tls]``: a listener, HTTPS or a TLS upstream needs a readable certificate and key."""
    tls = settings.tls
    users = [
        name
        for name, used in (
            ("tls.listen", bool(tls.listen)),
            ("http.tls", settings.http.tls == "on"),
        )
        if used
    ]
    checks: list[tuple[bool, str, str]] = [
        (settings.http.tls in ("auto", "on", "off"), "http.tls", 'expected "auto", "on" or "off"'),
        (
            bool(tls.certificate) == bool(tls.key),
            "tls.key" if tls.certificate else "tls.certificate",
            "tls.certificate and tls.key go together",
        ),
        (tls.min_version in TLS_VERSIONS, "tls.min_version", 'expected "1.2" or "1.3"'),
        (tls.handshake_timeout > 0, "tls.handshake_timeout", "must be positive"),
        (tls.connect_timeout > 0, "tls.connect_timeout", "must be positive"),
        (not tls.trusted_names or tls.verify_clients, "tls.trusted_names", "needs verify_clients = true"),
        (not tls.verify_clients or bool(tls.ca_file), "tls.verify_clients", "needs tls.ca_file"),
    ]
    if tls.ca_file:
        checks.append((_readable(tls.ca_file), "tls.ca_file", f"cannot read {_show(tls.ca_file)}"))
    up = settings.upstream
    if up.host and up.transport is Transport.TLS and _is_address(up.host):
        checks.append(
            (
                bool(tls.server_name) or not tls.verify_numeric_hosts,
                "upstream.host",
                "a numeric TLS upstream has no name to verify its certificate against: set "
                "tls.server_name (or tls.verify_numeric_hosts = false)",
            )
        )
    for name in users:
        for key, path in (("certificate", tls.certificate), ("key", tls.key)):
            checks.append((bool(path), f"tls.{key}", f"required by {name}"))
            if path:
                detail = f"cannot read {_show(path)} (needed by {name})"
                checks.append((_readable(path), f"tls.{key}", detail))
    return checks


def _alias_checks(sca: ScaSettings) -> list[tuple[bool, str, str]]:
    """``[[sca.aliases]]``: SIP AoRs, each alias once, naming a line that is no alias itself."""
    checks: list[tuple[bool, str, str]] = []
    aliases = {canonical_aor(entry.alias) for entry in sca.aliases} - {None}
    lines = {canonical_aor(line.aor) for line in sca.lines} - {None}
    seen: set[str] = set()
    for index, entry in enumerate(sca.aliases):
        key = f"sca.aliases[{index}]"
        alias, line = canonical_aor(entry.alias), canonical_aor(entry.line)
        expected = "expected a sip:user@host address of record, got"
        checks += [
            (alias is not None, f"{key}.alias", f"{expected} {_show(entry.alias)}"),
            (line is not None, f"{key}.line", f"{expected} {_show(entry.line)}"),
        ]
        if alias is None or line is None:
            continue
        checks += [
            (alias != line, f"{key}.line", f"{_show(entry.line)} is the alias itself"),
            (line not in aliases, f"{key}.line", f"{_show(entry.line)} is an alias, not a line"),
            (alias not in lines, f"{key}.alias", f"{_show(entry.alias)} is a line of sca.lines"),
            (alias not in seen, f"{key}.alias", f"{_show(entry.alias)} is listed twice"),
        ]
        seen.add(alias)
    return checks


def _is_wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def _mobile_checks(settings: Settings) -> list[tuple[bool, str, str]]:
    push, mid, park = settings.push, settings.midregistrar, settings.parking
    url = push.gateway_url
    return [
        (
            not push.enabled or url.startswith(("http://", "https://")),
            "push.gateway_url",
            f"expected an http:// or https:// URL when push is enabled, got {_show(url)}",
        ),
        (push.connect_timeout > 0, "push.connect_timeout", "must be positive"),
        (push.request_timeout > 0, "push.request_timeout", "must be positive"),
        (push.max_attempts >= 1, "push.max_attempts", "must be at least 1"),
        (push.max_inflight >= 1, "push.max_inflight", "must be at least 1"),
        (push.max_queue >= 1, "push.max_queue", "must be at least 1"),
        (push.pnsreg_interval >= 0, "push.pnsreg_interval", "must not be negative"),
        (push.refresh_trigger > 0, "push.refresh_trigger", "must be positive"),
        (push.extend_max_age >= 0, "push.extend_max_age", "must not be negative"),
        *_legacy_rule_checks(push),
        (
            mid.mode in ("aor", "mirror"),
            "midregistrar.mode",
            f'expected "aor" or "mirror", got {_show(mid.mode)}',
        ),
        (
            not mid.enabled or _is_sip_uri(mid.upstream),
            "midregistrar.upstream",
            f"expected a sip: URI of the upstream registrar, got {_show(mid.upstream)}",
        ),
        (mid.outgoing_expires > 0, "midregistrar.outgoing_expires", "must be positive"),
        (0 < mid.refresh_fraction < 1, "midregistrar.refresh_fraction", "must be between 0 and 1"),
        (mid.upstream_timeout > 0, "midregistrar.upstream_timeout", "must be positive"),
        (mid.retry_backoff > 0, "midregistrar.retry_backoff", "must be positive"),
        (
            0 < mid.device_min_expires <= mid.device_default_expires <= mid.device_max_expires,
            "midregistrar.device_default_expires",
            "must be between device_min_expires and device_max_expires",
        ),
        (mid.max_contacts >= 0, "midregistrar.max_contacts", "must not be negative"),
        (park.wake_timeout > 0, "parking.wake_timeout", "must be positive"),
        (park.park_timeout > 0, "parking.park_timeout", "must be positive"),
        (park.inflight_grace >= 0, "parking.inflight_grace", "must not be negative"),
        (400 <= park.timeout_response <= 699, "parking.timeout_response", "must be from 400 to 699"),
        (park.max_per_aor >= 1, "parking.max_per_aor", "must be at least 1"),
        (park.max_total >= 0, "parking.max_total", "must not be negative"),
        (park.max_branches >= 1, "parking.max_branches", "must be at least 1"),
    ]


def _legacy_rule_checks(push: PushSettings) -> list[tuple[bool, str, str]]:
    checks: list[tuple[bool, str, str]] = []
    for index, rule in enumerate(push.legacy_rules):
        key = f"push.legacy_rules[{index}]"
        try:
            re.compile(rule.user_agent)
            pattern_error = ""
        except re.error as error:
            pattern_error = str(error)
        checks.append((not pattern_error, f"{key}.user_agent", f"not a regular expression: {pattern_error}"))
        checks.append(
            (
                rule.provider.lower() in {p.lower() for p in push.providers},
                f"{key}.provider",
                f"{_show(rule.provider)} is not one of push.providers",
            )
        )
        for field in ("token_from", "param_from"):
            value = getattr(rule, field)
            kind, sep, name = value.partition(":")
            usable = (not value and field == "param_from") or (
                bool(sep) and kind in ("contact_param", "header") and bool(name.strip())
            )
            detail = f'expected "contact_param:NAME" or "header:NAME", got {_show(value)}'
            checks.append((usable, f"{key}.{field}", detail))
        checks.append(
            (
                rule.keepalive in ("", "wake", "extend"),
                f"{key}.keepalive",
                f'expected "wake" or "extend", got {_show(rule.keepalive)}',
            )
        )
    return checks


def _is_dns_server(text: str) -> bool:
    try:
        host, port = _split_host_port(text, 53)
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return 1 <= port <= 65535


def _dns_checks(dns: DnsSettings) -> list[tuple[bool, str, str]]:
    """``[dns]``: servers are addresses (a name server found by name would need DNS itself)."""
    checks = [
        (dns.timeout > 0, "dns.timeout", "must be positive"),
        (dns.min_ttl >= 0, "dns.min_ttl", "must not be negative"),
        (dns.max_ttl >= dns.min_ttl, "dns.max_ttl", "must not be below dns.min_ttl"),
        (dns.negative_ttl >= 0, "dns.negative_ttl", "must not be negative"),
        (dns.cache_size >= 1, "dns.cache_size", "must be at least 1"),
        (1 <= dns.max_records <= 1000, "dns.max_records", "must be from 1 to 1000"),
        (0 <= dns.max_cname_depth <= 32, "dns.max_cname_depth", "must be from 0 to 32"),
        (dns.failed_target_hold >= 0, "dns.failed_target_hold", "must not be negative"),
    ]
    for index, server in enumerate(dns.servers):
        checks.append(
            (
                _is_dns_server(server),
                f"dns.servers[{index}]",
                f'{_show(server)}: expected an IP address, "HOST:PORT" or "[V6]:PORT"',
            )
        )
    return checks


def _upstream_auth_checks(mid: MidRegistrarSettings) -> list[tuple[bool, str, str]]:
    """``midregistrar.upstream_auth`` and ``[[midregistrar.credentials]]`` (3.1); never quotes a
    password or HA1."""
    checks = [
        (
            mid.upstream_auth in UPSTREAM_AUTH_MODES,
            "midregistrar.upstream_auth",
            f'expected "none", "subscriber" or "static", got {_show(mid.upstream_auth)}',
        ),
        (
            not mid.credentials or mid.upstream_auth == "static",
            "midregistrar.credentials",
            'used only with upstream_auth = "static"',
        ),
    ]
    seen: set[tuple[str, str]] = set()
    for index, entry in enumerate(mid.credentials):
        key = f"midregistrar.credentials[{index}]"
        aor_ok = _is_sip_uri(entry.aor) and "@" in entry.aor and ";" not in entry.aor
        algorithm = entry.ha1_algorithm.upper()
        digits = 32 if algorithm == "MD5" else 64
        checks += [
            (aor_ok, f"{key}.aor", f"expected a sip:user@host address of record, got {_show(entry.aor)}"),
            (
                (entry.aor.lower(), entry.realm) not in seen,
                f"{key}.aor",
                f"{_show(entry.aor)} is listed twice for realm {_show(entry.realm)}",
            ),
            (bool(entry.password) or bool(entry.ha1), f"{key}.password", "password or ha1 is required"),
            (not (entry.password and entry.ha1), f"{key}.ha1", "give password or ha1, not both"),
            (
                algorithm in DIGEST_ALGORITHMS,
                f"{key}.ha1_algorithm",
                f"{_show(entry.ha1_algorithm)}: expected one of {', '.join(DIGEST_ALGORITHMS)}",
            ),
            (
                not entry.ha1 or (len(entry.ha1) == digits and _is_hex(entry.ha1)),
                f"{key}.ha1",
                f"expected {digits} hexadecimal digits (the {algorithm} HA1)",
            ),
            (
                not entry.ha1 or bool(entry.realm),
                f"{key}.realm",
                "required with ha1 (an HA1 covers one realm)",
            ),
        ]
        seen.add((entry.aor.lower(), entry.realm))
    return checks


def _is_hex(text: str) -> bool:
    return all(char in "0123456789abcdefABCDEF" for char in text)


class _KeyedValueError(ValueError):
    def __init__(self, key: str, detail: str) -> None:
        super().__init__(detail)
        self.key, self.detail = key, detail


def _is_sip_uri(text: str) -> bool:
    try:
        return isinstance(parse_uri(text), SipUri)
    except MalformedMessage:
        return False


# ---------------------------------------------------------------------------------------------
# Entry points


def settings_from_mapping(
    data: Mapping[str, object], source: str, *, interfaces: InterfaceLookup = system_interfaces
) -> Settings:
    """Structure and check an already-parsed TOML document; ``source`` names it in errors."""
    converter = _make_converter(interfaces)
    try:
        settings = converter.structure(dict(data), Settings)
    except (ClassValidationError, IterableValidationError, ForbiddenExtraKeysError, _ValueError) as error:
        key, detail = _locate(error)
        raise ConfigError(source, key, detail) from None
    try:
        _check(settings)
    except _KeyedValueError as error:
        raise ConfigError(source, error.key, error.detail) from None
    return settings


def load_settings(path: str | Path | None, *, interfaces: InterfaceLookup = system_interfaces) -> Settings:
    """Read and validate the TOML file at ``path``; ``None`` gives the defaults."""
    if path is None:
        return settings_from_mapping({}, "defaults", interfaces=interfaces)
    source = str(path)
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as error:
        raise ConfigError(source, "", f"cannot read: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise ConfigError(source, "", "not UTF-8 text") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(source, "", f"invalid TOML: {error}") from None
    return settings_from_mapping(data, source, interfaces=interfaces)


def with_overrides(
    settings: Settings,
    *,
    sip: Sequence[str] = (),
    http: str | None = None,
    db: str | None = None,
    log_json: bool | None = None,
    log_level: str | None = None,
    trace: bool | None = None,
    interfaces: InterfaceLookup = system_interfaces,
) -> Settings:
    """Apply command-line flags on top of the file; errors name the flag."""
    source = "command line"
    if sip:
        try:
            listen = tuple(e for text in sip for e in parse_endpoints(text, DEFAULT_SIP_PORT, interfaces))
        except _ValueError as error:
            raise ConfigError(source, "--sip", str(error)) from None
        settings = attrs.evolve(settings, server=attrs.evolve(settings.server, listen=listen))
    if http is not None:
        try:
            endpoint = parse_endpoints(http, DEFAULT_HTTP_PORT, interfaces)[0]
        except _ValueError as error:
            raise ConfigError(source, "--http", str(error)) from None
        settings = attrs.evolve(settings, http=attrs.evolve(settings.http, listen=endpoint))
    if db is not None:
        settings = attrs.evolve(settings, database=attrs.evolve(settings.database, url=db))
    log = settings.log
    if log_json is not None:
        log = attrs.evolve(log, json=log_json)
    if log_level is not None:
        log = attrs.evolve(log, level=LogLevelName(log_level))
    settings = attrs.evolve(settings, log=log)
    if trace is not None:
        settings = attrs.evolve(settings, sip=attrs.evolve(settings.sip, trace=trace))
    try:
        _check(settings)
    except _KeyedValueError as error:
        raise ConfigError(source, error.key, error.detail) from None
    return settings


__all__ = [
    "DIGEST_ALGORITHMS",
    "AuthSettings",
    "CallInfoUri",
    "ConfigError",
    "DatabaseSettings",
    "Endpoint",
    "HttpSettings",
    "InterfaceLookup",
    "LegacyPushRule",
    "LineAlias",
    "LogLevelName",
    "LogSettings",
    "MidRegistrarSettings",
    "ParkingSettings",
    "ProvisioningSettings",
    "PushSettings",
    "RegistrarSettings",
    "ReportingSettings",
    "RpcSettings",
    "ScaSettings",
    "ServerSettings",
    "Settings",
    "SharedLine",
    "SipSettings",
    "TlsEndpoint",
    "TlsSettings",
    "UpstreamCredential",
    "UpstreamSettings",
    "UserAgentAlgorithms",
    "load_settings",
    "parse_endpoints",
    "settings_from_mapping",
    "system_interfaces",
    "with_overrides",
]
