"""Only the edge schedules on the reactor's clock (STYLE.md P3).

The core asks for timers with ``StartTimer`` actions and gets ``now`` passed in; the
composition root and everything else hand work to edge services.  import-linter cannot forbid
a method call or a part of an external package, so this scans the syntax tree of every module
outside ``scaserver/edge/`` for the reactor's scheduling names.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Final

import scaserver

PACKAGE: Final = Path(scaserver.__file__).parent
EDGE: Final = PACKAGE / "edge"
SCHEDULING: Final = frozenset({"callLater", "LoopingCall", "deferLater", "coiterate", "cooperate"})
MODULES: Final = frozenset({"twisted.internet.task"})  # the reactor itself: cli runs it


def clock_uses(source: str) -> list[tuple[int, str]]:
    """(line, name) of every scheduling name and clock module that ``source`` touches."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        match node:
            case ast.Attribute(attr=name) | ast.Name(id=name) if name in SCHEDULING:
                found.append((node.lineno, name))
            case ast.Import(names=aliases):
                found.extend((node.lineno, a.name) for a in aliases if a.name in MODULES)
            case ast.ImportFrom(module=module, names=aliases) if module is not None:
                for alias in aliases:
                    name = f"{module}.{alias.name}"
                    if module in MODULES or name in MODULES or alias.name in SCHEDULING:
                        found.append((node.lineno, name))
    return found


def test_no_module_outside_the_edge_schedules_on_the_reactor() -> None:
    offenders = {
        str(path.relative_to(PACKAGE)): uses
        for path in sorted(PACKAGE.rglob("*.py"))
        if not path.is_relative_to(EDGE) and (uses := clock_uses(path.read_text(encoding="utf-8")))
    }
    assert offenders == {}


def test_the_edge_is_where_the_scan_finds_scheduling() -> None:
    assert any(clock_uses(path.read_text(encoding="utf-8")) for path in EDGE.rglob("*.py"))


def test_the_scan_sees_each_way_of_reaching_the_clock() -> None:
    source = "\n".join(
        (
            "from twisted.internet.task import LoopingCall",
            "from twisted.internet import task",
            "import twisted.internet.task",
            "reactor.callLater(1, f)",
            "clock.callLater(1, f)",
            "LoopingCall(f)",
        )
    )
    assert clock_uses(source) == [
        (1, "twisted.internet.task.LoopingCall"),
        (2, "twisted.internet.task"),
        (3, "twisted.internet.task"),
        (4, "callLater"),
        (5, "callLater"),
        (6, "LoopingCall"),
    ]
    assert clock_uses("from twisted.internet import reactor\nnow = reactor.seconds()\ncall_later = 1\n") == []
