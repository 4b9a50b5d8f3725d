"""The entry points: a TOML file (or none) and the command-line flags into checked
:class:`~scaserver.config.schema.Settings`; whatever is wrong becomes one :class:`ConfigError`."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path

import attrs
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError

from scaserver.config.checks import check
from scaserver.config.errors import ConfigError, KeyedValueError, RejectedValue
from scaserver.config.listen import (
    DEFAULT_HTTP_PORT,
    DEFAULT_SIP_PORT,
    InterfaceLookup,
    parse_endpoints,
    system_interfaces,
)
from scaserver.config.schema import LogLevelName, Settings
from scaserver.config.structure import locate, make_converter


def settings_from_mapping(
    data: Mapping[str, object], source: str, *, interfaces: InterfaceLookup = system_interfaces
) -> Settings:
    """Structure and check an already-parsed TOML document; ``source`` names it in errors."""
    converter = make_converter(interfaces)
    try:
        settings = converter.structure(dict(data), Settings)
    except (ClassValidationError, IterableValidationError, ForbiddenExtraKeysError, RejectedValue) as error:
        key, detail = locate(error)
        raise ConfigError(source, key, detail) from None
    try:
        check(settings)
    except KeyedValueError as error:
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
        except RejectedValue as error:
            raise ConfigError(source, "--sip", str(error)) from None
        settings = attrs.evolve(settings, server=attrs.evolve(settings.server, listen=listen))
    if http is not None:
        try:
            endpoint = parse_endpoints(http, DEFAULT_HTTP_PORT, interfaces)[0]
        except RejectedValue as error:
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
        check(settings)
    except KeyedValueError as error:
        raise ConfigError(source, error.key, error.detail) from None
    return settings
