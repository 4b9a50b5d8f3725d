"""Method registry and parameter binding (rpc.md 2.2)."""

from __future__ import annotations

import pytest

from scaserver.control.jsonrpc import InvalidParamsError, JsonValue
from scaserver.control.registry import (
    Arguments,
    ArgValue,
    Caller,
    DuplicateMethodError,
    Method,
    Param,
    ParamType,
    Registry,
    Scope,
    bind,
)

from .fakes import ADMIN


async def _nothing(args: Arguments) -> JsonValue:
    return None


METHOD = Method(
    name="sca.update_appearance",
    params=(
        Param("aor"),
        Param("index", ParamType.INTEGER),
        Param("state"),
        Param("appearance_uri", optional=True),
    ),
    scope=Scope.ADMIN,
    doc="",
    handler=_nothing,
)


def test_usage_line() -> None:
    assert METHOD.usage == "sca.update_appearance aor index state [appearance_uri]"


def test_positional() -> None:
    assert bind(METHOD, ["sip:a@b", 2, "held"]) == {"aor": "sip:a@b", "index": 2, "state": "held"}
    assert bind(METHOD, ["sip:a@b", 2, "held", "sip:c@d"])["appearance_uri"] == "sip:c@d"
    assert bind(METHOD, ["sip:a@b", 2, "held", None]) == {"aor": "sip:a@b", "index": 2, "state": "held"}


def test_named() -> None:
    params: dict[str, JsonValue] = {"state": "held", "index": 1, "aor": "sip:a@b"}
    assert bind(METHOD, params) == {"aor": "sip:a@b", "index": 1, "state": "held"}


def test_named_by_order_compat_ignores_names() -> None:
    params: dict[str, JsonValue] = {"x": "sip:a@b", "y": "3", "z": "idle"}
    assert bind(METHOD, params, named_by_order=True) == {"aor": "sip:a@b", "index": 3, "state": "idle"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [(5, 5), ("5", 5), (" 7 ", 7), ("+3", 3), ("-2", -2), (4.0, 4)],
)
def test_integer_auto_convert(value: JsonValue, expected: ArgValue) -> None:
    assert bind(METHOD, ["a", value, "idle"])["index"] == expected


@pytest.mark.parametrize(("value", "expected"), [(1234, "1234"), (1.5, "1.5"), ("x", "x"), (-1, "-1")])
def test_string_auto_convert(value: JsonValue, expected: ArgValue) -> None:
    assert bind(METHOD, [value, 1, "idle"])["aor"] == expected


@pytest.mark.parametrize(
    "params",
    [
        None,
        [],
        ["a", 1],
        ["a", 1, "idle", "u", "extra"],
        ["a", "one", "idle"],
        ["a", 1.5, "idle"],
        ["a", True, "idle"],
        [True, 1, "idle"],
        [None, 1, "idle"],
        [["a"], 1, "idle"],
        [{"a": 1}, 1, "idle"],
        ["a", "", "idle"],
        {"aor": "a", "index": 1},
        {"aor": "a", "index": 1, "state": "idle", "colour": "red"},
        {"x": "a", "y": 1, "z": "s", "w": "u", "v": "extra"},
    ],
)
def test_invalid_params_carry_usage(params: list[JsonValue] | dict[str, JsonValue] | None) -> None:
    with pytest.raises(InvalidParamsError) as caught:
        bind(METHOD, params, named_by_order=isinstance(params, dict) and "x" in params)
    assert caught.value.error_object() == {
        "code": -32602,
        "message": "Invalid Parameters",
        "data": {"usage": "sca.update_appearance aor index state [appearance_uri]"},
    }


def test_registry_sorted_and_duplicates_refused() -> None:
    registry = Registry()

    @registry.register("b.two", scope=Scope.READ, doc="")
    async def two(args: Arguments) -> JsonValue:
        return 2

    registry.add(METHOD)
    assert registry.names() == ["b.two", "sca.update_appearance"]
    assert [method.name for method in registry] == registry.names()
    assert len(registry) == 2
    assert registry.get("nope") is None
    with pytest.raises(DuplicateMethodError):
        registry.add(METHOD)


def test_scope_allows() -> None:
    assert Scope.ADMIN.allows(Scope.ADMIN)
    assert Scope.ADMIN.allows(Scope.READ)
    assert Scope.READ.allows(Scope.READ)
    assert not Scope.READ.allows(Scope.ADMIN)


def test_arguments_accessors() -> None:
    args = Arguments(values={"a": "x", "n": 3}, caller=ADMIN)
    assert args.text("a") == "x"
    assert args.integer("n") == 3
    assert args.optional_text("b") is None
    with pytest.raises(TypeError):
        args.text("n")
    with pytest.raises(TypeError):
        args.integer("a")
    assert isinstance(args.caller, Caller)


VARIADIC = Method(
    name="stats.get_statistics",
    params=(Param("stat", variadic=True),),
    scope=Scope.READ,
    doc="",
    handler=_nothing,
)


def test_variadic_takes_every_remaining_positional_value() -> None:
    assert VARIADIC.usage == "stats.get_statistics stat..."
    assert bind(VARIADIC, ["all"]) == {"stat": ("all",)}
    assert bind(VARIADIC, ["tsilo:", 7, "push:"]) == {"stat": ("tsilo:", "7", "push:")}
    args = Arguments(values=bind(VARIADIC, ["tsilo:", "push:"]), caller=ADMIN)
    assert args.texts("stat") == ("tsilo:", "push:")


def test_variadic_named_takes_a_list_or_one_value() -> None:
    assert bind(VARIADIC, {"stat": ["a:", "b"]}) == {"stat": ("a:", "b")}
    assert bind(VARIADIC, {"stat": "all"}) == {"stat": ("all",)}


def test_required_variadic_needs_one_value() -> None:
    given: list[list[JsonValue] | dict[str, JsonValue] | None] = [[], None, {"stat": []}, [None]]
    for params in given:
        with pytest.raises(InvalidParamsError):
            bind(VARIADIC, params)


def test_optional_variadic_may_be_absent() -> None:
    params = (Param("first"), Param("rest", optional=True, variadic=True))
    method = Method("m.x", params, Scope.READ, "", _nothing)
    assert method.usage == "m.x first [rest...]"
    assert bind(method, ["a"]) == {"first": "a"}
    assert bind(method, ["a", "b", "c"]) == {"first": "a", "rest": ("b", "c")}
    assert Arguments(values=bind(method, ["a"]), caller=ADMIN).texts("rest") == ()


def test_only_the_last_parameter_may_be_variadic() -> None:
    with pytest.raises(ValueError, match="only the last"):
        Registry().add(Method("m.y", (Param("a", variadic=True), Param("b")), Scope.READ, "", _nothing))


def test_typed_accessors_refuse_the_wrong_kind() -> None:
    args = Arguments(values={"n": 3, "s": "x"}, caller=ADMIN)
    assert args.optional_integer("n") == 3
    assert args.optional_integer("missing") is None
    with pytest.raises(TypeError):
        args.texts("s")
    with pytest.raises(TypeError):
        args.optional_integer("s")
