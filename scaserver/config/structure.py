"""TOML values into settings with cattrs: unknown keys rejected, each value checked for its
type, and the first fault of a cattrs error tree located as a dotted key."""

from __future__ import annotations

import enum
import json
import typing
from collections.abc import Callable
from typing import Any

import attrs
import cattrs
from cattrs.errors import (
    AttributeValidationNote,
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)
from cattrs.gen import make_dict_structure_fn, override

from scaserver.config.errors import RejectedValue, show
from scaserver.config.listen import (
    DEFAULT_HTTP_PORT,
    DEFAULT_SIP_PORT,
    DEFAULT_SIPS_PORT,
    InterfaceLookup,
    parse_endpoints,
)
from scaserver.config.schema import LogLevelName
from scaserver.edge.endpoint import Endpoint
from scaserver.edge.tls import TlsEndpoint
from scaserver.parking.parked import EarlyMedia
from scaserver.registrar.midregsettings import Mode
from scaserver.registrar.nat import PingMethod
from scaserver.sip.message import Transport
from scaserver.tomlkeys import INLINE, Secret


def _expected(what: str, value: object) -> RejectedValue:
    return RejectedValue(f"expected {what}, got {show(value)}")


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
        raise RejectedValue("expected a string (the value is not shown)")
    return Secret(value)


def _structure_midreg_mode(value: object, _: type) -> Mode:
    """``midregistrar.mode``: written exactly, in lower case (no case folding as for the
    other enumerations)."""
    text = _structure_str(value, str)
    for member in Mode:
        if text == member.value:
            return member
    raise _expected(" or ".join(json.dumps(member.value) for member in Mode), value)


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


def make_converter(interfaces: InterfaceLookup) -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    converter.register_structure_hook(int, _structure_int)
    converter.register_structure_hook(float, _structure_float)
    converter.register_structure_hook(str, _structure_str)
    converter.register_structure_hook(bool, _structure_bool)
    converter.register_structure_hook(Secret, _structure_secret)
    converter.register_structure_hook(Mode, _structure_midreg_mode)
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
            raise RejectedValue("at least one address is needed")
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
            except RejectedValue as error:
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
        hints = typing.get_type_hints(cls)
        inline = {
            field.name: field.metadata[INLINE] for field in attrs.fields(cls) if INLINE in field.metadata
        }
        omitted = {name: override(omit=True) for name in inline}
        generated = make_dict_structure_fn(cls, converter, **omitted)  # type: ignore[arg-type]
        # The table's keys in the order of the fields, an inline field's keys at its place:
        # the faults are reported in that order, as if every key were a field of its own.
        keys = [key for field in attrs.fields(cls) for key in inline.get(field.name, (field.name,))]

        def position(error: Exception) -> int:
            for note in getattr(error, "__notes__", ()):
                if isinstance(note, AttributeValidationNote) and note.name in keys:
                    return keys.index(note.name)
            return len(keys)  # unknown keys after the values, as cattrs reports them

        def structure(value: object, _: type) -> object:
            if not isinstance(value, dict):
                raise _expected("a table", value)
            if not inline:
                return generated(value, cls)
            rest, parts = dict(value), {}
            errors: list[Exception] = []
            for name, keys in inline.items():
                picked = {key: rest.pop(key) for key in keys if key in rest}
                try:
                    parts[name] = converter.structure(picked, hints[name])
                except ClassValidationError as error:  # its notes name the table's own keys
                    errors += error.exceptions
            try:
                made = generated(rest, cls)
            except ClassValidationError as error:
                errors += error.exceptions
            if errors:
                errors.sort(key=position)
                raise ClassValidationError(f"While structuring {cls.__name__}", errors, cls)
            return attrs.evolve(made, **parts)

        return structure

    converter.register_structure_hook_factory(attrs.has, class_factory)
    return converter


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def locate(error: BaseException, path: str = "") -> tuple[str, str]:
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
        return locate(sub, step)
    if isinstance(error, KeyError):
        return path, "required key missing"
    if isinstance(error, RejectedValue):
        return path, str(error)
    return path, f"invalid value ({error})"
