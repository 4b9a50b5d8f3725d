"""Checks that span a value's range or several keys, run once the file is structured: the
first value that is well-typed but unusable raises :class:`KeyedValueError`."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

from scaserver.config.errors import KeyedValueError, show
from scaserver.config.listen import split_host_port
from scaserver.config.schema import (
    DIGEST_ALGORITHMS,
    TLS_VERSIONS,
    Settings,
)
from scaserver.edge.dns import DnsSettings, nameservers
from scaserver.edge.resolver import HostsTable, resolvable_in
from scaserver.push.settings import PushSettings
from scaserver.registrar.midregsettings import UPSTREAM_AUTH_MODES, MidRegistrarSettings
from scaserver.sca.line import canonical_aor
from scaserver.sca.settings import ScaSettings
from scaserver.sip.errors import MalformedMessage
from scaserver.sip.message import Transport
from scaserver.sip.sessiontimer import RFC_MIN_SE
from scaserver.sip.uri import SipUri, parse_uri


def _is_network(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True


def check(settings: Settings) -> None:
    """Raise ``KeyedValueError`` for the first value that is well-typed but unusable."""
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
        (sip.timers.t1 > 0, "sip.t1", "must be positive"),
        (sip.timers.t2 >= sip.timers.t1, "sip.t2", "must not be below sip.t1"),
        (sip.timers.t4 > 0, "sip.t4", "must be positive"),
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
            f"{show(db.url)}: expected a sqlite:// or postgresql:// URL",
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
        (
            sca.session_intervals.min_se >= RFC_MIN_SE,
            "sca.min_se",
            f"must be at least {RFC_MIN_SE} (RFC 4028 section 4)",
        ),
        (
            sca.session_intervals.session_expires >= sca.session_intervals.min_se,
            "sca.session_expires",
            "must not be below sca.min_se",
        ),
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
            f'expected "domain", "aor" or a sip: URI, got {show(sca.call_info_uri)}',
        ),
        (0 <= up.port <= 65535, "upstream.port", "must be from 0 (SRV decides) to 65535"),
        (settings.reporting.retention_days >= 1, "reporting.retention_days", "must be at least 1"),
        (
            settings.provisioning.sip_transport in ("udp", "tcp", "tls"),
            "provisioning.sip_transport",
            f'expected "udp", "tcp" or "tls", got {show(settings.provisioning.sip_transport)}',
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
                    f"{show(algorithm)}: expected one of {', '.join(DIGEST_ALGORITHMS)}",
                )
            )
    for algorithm in auth.algorithms:
        checks.append(
            (
                algorithm in DIGEST_ALGORITHMS,
                "auth.algorithms",
                f"{show(algorithm)}: expected one of {', '.join(DIGEST_ALGORITHMS)}",
            )
        )
    for index, cidr in enumerate(settings.provisioning.allow_from):
        checks.append(
            (
                _is_network(cidr),
                f"provisioning.allow_from[{index}]",
                f"{show(cidr)}: expected an address or CIDR",
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
            (_is_network(cidr), f"security.allow[{index}]", f"{show(cidr)}: expected an address or CIDR")
        )
    for index, cidr in enumerate(settings.rpc.allow_from):
        checks.append(
            (_is_network(cidr), f"rpc.allow_from[{index}]", f"{show(cidr)}: expected an address or CIDR")
        )
    for field in ("server_address", "contact_fallback", "outbound_proxy"):
        value = getattr(sca, field)
        checks.append(
            (not value or _is_sip_uri(value), f"sca.{field}", f"expected a sip: URI, got {show(value)}")
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
                f"expected a sip:user@host address of record, got {show(line.aor)}",
            )
        )
        checks.append((line.aor.lower() not in seen, f"{key}.aor", f"{show(line.aor)} is listed twice"))
        seen.add(line.aor.lower())
        checks.append((line.appearances >= 1, f"{key}.appearances", "must be at least 1"))
        for member_index, member in enumerate(line.members):
            checks.append(
                (
                    _is_sip_uri(member),
                    f"{key}.members[{member_index}]",
                    f"expected a sip: URI, got {show(member)}",
                )
            )
    checks += _alias_checks(sca)
    checks += _tls_checks(settings)
    for ok, key, detail in checks:
        if not ok:
            raise KeyedValueError(key, detail)


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
        checks.append((_readable(tls.ca_file), "tls.ca_file", f"cannot read {show(tls.ca_file)}"))
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
                detail = f"cannot read {show(path)} (needed by {name})"
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
            (alias is not None, f"{key}.alias", f"{expected} {show(entry.alias)}"),
            (line is not None, f"{key}.line", f"{expected} {show(entry.line)}"),
        ]
        if alias is None or line is None:
            continue
        checks += [
            (alias != line, f"{key}.line", f"{show(entry.line)} is the alias itself"),
            (line not in aliases, f"{key}.line", f"{show(entry.line)} is an alias, not a line"),
            (alias not in lines, f"{key}.alias", f"{show(entry.alias)} is a line of sca.lines"),
            (alias not in seen, f"{key}.alias", f"{show(entry.alias)} is listed twice"),
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
            f"expected an http:// or https:// URL when push is enabled, got {show(url)}",
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
            not mid.enabled or _is_sip_uri(mid.upstream),
            "midregistrar.upstream",
            f"expected a sip: URI of the upstream registrar, got {show(mid.upstream)}",
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
                f"{show(rule.provider)} is not one of push.providers",
            )
        )
        for field in ("token_from", "param_from"):
            value = getattr(rule, field)
            kind, sep, name = value.partition(":")
            usable = (not value and field == "param_from") or (
                bool(sep) and kind in ("contact_param", "header") and bool(name.strip())
            )
            detail = f'expected "contact_param:NAME" or "header:NAME", got {show(value)}'
            checks.append((usable, f"{key}.{field}", detail))
        checks.append(
            (
                rule.keepalive in ("", "wake", "extend"),
                f"{key}.keepalive",
                f'expected "wake" or "extend", got {show(rule.keepalive)}',
            )
        )
    return checks


def _is_dns_server(text: str) -> bool:
    try:
        host, port = split_host_port(text, 53)
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
                f'{show(server)}: expected an IP address, "HOST:PORT" or "[V6]:PORT"',
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
            f'expected "none", "subscriber" or "static", got {show(mid.upstream_auth)}',
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
            (aor_ok, f"{key}.aor", f"expected a sip:user@host address of record, got {show(entry.aor)}"),
            (
                (entry.aor.lower(), entry.realm) not in seen,
                f"{key}.aor",
                f"{show(entry.aor)} is listed twice for realm {show(entry.realm)}",
            ),
            (bool(entry.password) or bool(entry.ha1), f"{key}.password", "password or ha1 is required"),
            (not (entry.password and entry.ha1), f"{key}.ha1", "give password or ha1, not both"),
            (
                algorithm in DIGEST_ALGORITHMS,
                f"{key}.ha1_algorithm",
                f"{show(entry.ha1_algorithm)}: expected one of {', '.join(DIGEST_ALGORITHMS)}",
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


def _is_sip_uri(text: str) -> bool:
    try:
        return isinstance(parse_uri(text), SipUri)
    except MalformedMessage:
        return False


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
