"""A mypy plugin for compiling scaserver with mypyc (``bench/mypycbuild.py``), never for checking it.

mypyc builds an attrs class as an ordinary (non-native) Python class and evaluates its body as
typed code: ``x: dict[K, V] = attrs.field(factory=dict)`` has the static type ``dict[K, V]``
(attrs' stubs return the field's type), so the compiled module checks that the
``_CountingAttr`` attrs.field returns is a dict and fails at import ("dict object expected;
got attr._make._CountingAttr"). Typed as ``Any``, the call is stored unchecked, and attrs
finds its field as it always does. mypy's attrs plugin reads the call itself, not its type,
so the classes are checked the same.
"""

from __future__ import annotations

from collections.abc import Callable

from mypy.plugin import FunctionContext, Plugin
from mypy.types import AnyType, Type, TypeOfAny

FIELD_MAKERS = frozenset(
    {
        "attrs.field",
        "attr.ib",
        "attr.attrib",
        "attr.field",
        "attrs.Factory",
        "attr.Factory",
        "attr._make.Factory",
    }
)


def _untyped(ctx: FunctionContext) -> Type:
    return AnyType(TypeOfAny.special_form)


class FieldsUntyped(Plugin):
    def get_function_hook(self, fullname: str) -> Callable[[FunctionContext], Type] | None:
        return _untyped if fullname in FIELD_MAKERS else None


def plugin(version: str) -> type[Plugin]:
    return FieldsUntyped
