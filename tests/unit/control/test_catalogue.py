"""rpc/openrpc.json is the single source of truth: the registry must match it exactly."""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator

from .fakes import Rig, load_catalogue


def _catalogued() -> dict[str, dict[str, Any]]:
    return {method["name"]: method for method in load_catalogue()["methods"]}


def test_same_method_names() -> None:
    assert sorted(_catalogued()) == Rig().registry.names()


def test_same_params_scope_and_usage() -> None:
    catalogued = _catalogued()
    for method in Rig().registry:
        entry = catalogued[method.name]
        assert [
            (
                param["name"],
                param["schema"]["type"],
                param["required"],
                param.get("x-secret", False),
                param.get("x-variadic", False),
            )
            for param in entry["params"]
        ] == [
            (param.name, param.type.value, not param.optional, param.secret, param.variadic)
            for param in method.params
        ], method.name
        assert entry["x-scope"] == method.scope.value, method.name
        assert entry["x-usage"] == method.usage, method.name
        assert entry["summary"] == method.doc, method.name


def test_catalogue_shape_and_schemas_are_valid() -> None:
    document = load_catalogue()
    assert document["openrpc"].startswith("1.2.")
    names = [method["name"] for method in document["methods"]]
    assert len(names) == len(set(names))
    for method in document["methods"]:
        Draft202012Validator.check_schema(method["result"]["schema"])
        for param in method["params"]:
            Draft202012Validator.check_schema(param["schema"])
    for schema in document["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)


def test_every_method_of_rpc_md_3_4_and_3_5_is_catalogued() -> None:
    names = set(_catalogued())
    assert {"park.dump", "park.lookup", "park.release", "pushreg.wake"} <= names
    assert {"uac.reg_dump", "uac.reg_info", "uac.reg_refresh", "stats.get_statistics"} <= names
