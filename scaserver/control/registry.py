"""The method registry and parameter binding (rpc.md 2.2, 2.4 and 5).

Each method is registered with its name, parameter spec (name, type, optional, secret), scope,
doc string and usage line; ``system.*`` is generated from this registry and
``rpc/openrpc.json`` must list exactly the same methods and parameters.

Binding follows rpc.md 2.2: an array is positional (Kamailio); an object is matched by name
(unknown names are -32602) unless ``compat_named_params_by_order`` asks for Kamailio's
"values in document order".  Kamailio's auto-convert: a string parameter accepts a JSON number;
an integer parameter accepts a numeric string.  A method's last parameter may be variadic
(Kamailio's ``stats.get_statistics all`` / ``stats.get_statistics tsilo: push:``): it takes
every remaining positional value, or a list when named.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Final

import attrs

from scaserver.control.jsonrpc import InvalidParamsError, JsonValue


class Scope(enum.StrEnum):
    """Token scopes (rpc.md 2.4): ``read`` may call read methods, ``admin`` everything."""

    READ = "read"
    ADMIN = "admin"

    def allows(self, required: Scope) -> bool:
        return self is Scope.ADMIN or required is Scope.READ


class ParamType(enum.StrEnum):
    """Parameter types; the values are the JSON Schema type names used by the catalogue."""

    STRING = "string"
    INTEGER = "integer"


ArgValue = str | int | tuple[str | int, ...]


@attrs.frozen
class Param:
    name: str
    type: ParamType = ParamType.STRING
    optional: bool = False
    secret: bool = False
    doc: str = ""
    variadic: bool = False  # the last parameter only: takes every remaining value


@attrs.frozen
class Caller:
    """Who is calling: a printable peer, the scope granted by the transport/token, the transport."""

    peer: str
    scope: Scope
    transport: str


@attrs.frozen
class Arguments:
    """Bound, type-converted arguments of one call; absent optional parameters are missing."""

    values: Mapping[str, ArgValue]
    caller: Caller

    def text(self, name: str) -> str:
        value = self.values[name]
        if not isinstance(value, str):
            raise TypeError(f"parameter {name} is not a string")
        return value

    def optional_text(self, name: str) -> str | None:
        return self.text(name) if name in self.values else None

    def integer(self, name: str) -> int:
        value = self.values[name]
        if not isinstance(value, int):
            raise TypeError(f"parameter {name} is not an integer")
        return value

    def optional_integer(self, name: str) -> int | None:
        return self.integer(name) if name in self.values else None

    def texts(self, name: str) -> tuple[str, ...]:
        """The values of a variadic string parameter (empty when absent)."""
        value = self.values.get(name, ())
        if not isinstance(value, tuple) or not all(isinstance(item, str) for item in value):
            raise TypeError(f"parameter {name} is not a list of strings")
        return tuple(str(item) for item in value)


Handler = Callable[[Arguments], Awaitable[JsonValue]]


@attrs.frozen
class Method:
    name: str
    params: tuple[Param, ...]
    scope: Scope
    doc: str
    handler: Handler = attrs.field(eq=False, repr=False)

    @property
    def usage(self) -> str:
        """Kamailio-style usage line: ``name param [optional]``."""
        words = [self.name]
        for param in self.params:
            word = f"{param.name}..." if param.variadic else param.name
            words.append(f"[{word}]" if param.optional else word)
        return " ".join(words)


class DuplicateMethodError(Exception):
    """A method name registered twice: a wiring bug."""


class Registry:
    """Methods by name."""

    def __init__(self) -> None:
        self._methods: dict[str, Method] = {}

    def add(self, method: Method) -> None:
        if method.name in self._methods:
            raise DuplicateMethodError(method.name)
        if any(param.variadic for param in method.params[:-1]):
            raise ValueError(f"{method.name}: only the last parameter may be variadic")
        self._methods[method.name] = method

    def register(self, name: str, *params: Param, scope: Scope, doc: str) -> Callable[[Handler], Handler]:
        """Decorator form of ``add``."""

        def decorate(handler: Handler) -> Handler:
            self.add(Method(name=name, params=tuple(params), scope=scope, doc=doc, handler=handler))
            return handler

        return decorate

    def get(self, name: str) -> Method | None:
        return self._methods.get(name)

    def names(self) -> list[str]:
        return sorted(self._methods)

    def __iter__(self) -> Iterator[Method]:
        return iter(self._methods[name] for name in self.names())

    def __len__(self) -> int:
        return len(self._methods)


_INTEGER_TEXT: Final = re.compile(r"\s*[+-]?\d+\s*")


def _invalid(method: Method) -> InvalidParamsError:
    return InvalidParamsError(data={"usage": method.usage})


def convert(method: Method, param: Param, value: JsonValue) -> str | int:
    """Kamailio's auto-convert (rpc.md 2.2), raising ``InvalidParamsError`` on a mismatch."""
    if isinstance(value, bool) or value is None or isinstance(value, list | dict):
        raise _invalid(method)
    if param.type is ParamType.STRING:
        if isinstance(value, str):
            return value
        return str(value) if isinstance(value, int) else json.dumps(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if value.is_integer():
            return int(value)
        raise _invalid(method)
    if _INTEGER_TEXT.fullmatch(value):
        return int(value)
    raise _invalid(method)


def bind(
    method: Method,
    params: list[JsonValue] | dict[str, JsonValue] | None,
    *,
    named_by_order: bool = False,
) -> dict[str, ArgValue]:
    """Match request params to the method's parameter spec (rpc.md 2.2)."""
    variadic = method.params[-1] if method.params and method.params[-1].variadic else None
    if params is None:
        supplied: list[tuple[Param, JsonValue]] = []
    elif isinstance(params, dict) and not named_by_order:
        declared = {param.name: param for param in method.params}
        if any(name not in declared for name in params):
            raise _invalid(method)
        supplied = []
        for name, value in params.items():
            param = declared[name]
            if param is variadic and isinstance(value, list):
                supplied += [(param, item) for item in value]
            else:
                supplied.append((param, value))
    else:
        ordered = list(params.values()) if isinstance(params, dict) else params
        if len(ordered) > len(method.params) and variadic is None:
            raise _invalid(method)
        supplied = list(zip(method.params, ordered, strict=False))
        if variadic is not None:
            supplied += [(variadic, value) for value in ordered[len(method.params) :]]
    values: dict[str, ArgValue] = {}
    repeated: list[str | int] = []
    for param, value in supplied:
        if value is None and param.optional:
            continue
        if param.variadic:
            repeated.append(convert(method, param, value))
        else:
            values[param.name] = convert(method, param, value)
    if variadic is not None and repeated:
        values[variadic.name] = tuple(repeated)
    if any(not param.optional and param.name not in values for param in method.params):
        raise _invalid(method)
    return values
