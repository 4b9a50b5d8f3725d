"""system.* and core.* (rpc.md 3.1)."""

from __future__ import annotations

import re
import time

from scaserver.control.system import product_version

from .fakes import NOW, SERVER, Rig, fault_of, result_of


def test_list_methods_sorted_from_registry() -> None:
    rig = Rig()
    names = result_of(rig, "system.listMethods")
    assert names == sorted(names) == rig.registry.names()
    assert {"core.version", "sca.all_appearances", "ul.dump", "system.methodHelp"} <= set(names)


def test_method_help_and_faults() -> None:
    rig = Rig()
    assert result_of(rig, "system.methodHelp", ["sca.flush"]) == rig.registry.get("sca.flush").doc  # type: ignore[union-attr]
    assert fault_of(rig, "system.methodHelp") == (400, 400, "Method Name Expected")
    assert fault_of(rig, "system.methodHelp", ["no.such"]) == (400, 400, "command not found")


def test_method_signature_and_faults() -> None:
    rig = Rig()
    assert result_of(rig, "system.methodSignature", ["sca.update_appearance"]) == [
        {"name": "aor", "type": "string", "optional": False},
        {"name": "index", "type": "integer", "optional": False},
        {"name": "state", "type": "string", "optional": False},
        {"name": "appearance_uri", "type": "string", "optional": True},
    ]
    assert result_of(rig, "system.methodSignature", ["core.version"]) == []
    assert fault_of(rig, "system.methodSignature") == (400, 400, "Method Name Expected")
    assert fault_of(rig, "system.methodSignature", {"method": "x"}) == (400, 400, "command not found")


def test_core_version() -> None:
    assert result_of(Rig(), "core.version") == SERVER.version
    assert re.fullmatch(r"scaserver \S+ \(\w+ \d+\.\d+\.\d+\S*, Twisted \S+\)", product_version())


def test_core_uptime_uses_kamailio_field_names() -> None:
    assert result_of(Rig(), "core.uptime") == {
        "now": time.ctime(NOW),
        "up_since": time.ctime(NOW - 100),
        "uptime": 100,
    }


def test_core_info() -> None:
    assert result_of(Rig(), "core.info") == {
        "version": SERVER.version,
        "pid": 4242,
        "listen": ["udp:127.0.0.1:5060"],
        "db": "sqlite",
        "started": "2024-11-24T12:05:00+00:00",
    }
