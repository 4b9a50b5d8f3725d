"""``stats.get_statistics`` (rpc.md 3.6, Kamailio kex ``stats.*``), over the
``StatisticsControl`` seam.

Kamailio's selection rules, per parameter (several may be given): ``all`` is every statistic;
``group:`` (trailing colon) every statistic of that group; anything else one statistic by
name (``name`` or ``group:name``).  Unknown names select nothing.  Each selected statistic is
one line ``group:name = value``; a statistic selected twice is listed once.
"""

from __future__ import annotations

from collections.abc import Sequence

from scaserver.control.jsonrpc import JsonValue
from scaserver.control.registry import Arguments, Param, Registry, Scope
from scaserver.control.seams import Statistic, StatisticsControl


def selected(statistics: Sequence[Statistic], selectors: Sequence[str]) -> list[Statistic]:
    """The statistics the selectors name, in the source's order."""
    wanted: set[tuple[str, str]] = set()
    for selector in selectors:
        text = selector.strip()
        for stat in statistics:
            if (
                text == "all"
                or (text.endswith(":") and stat.group == text[:-1])
                or text in (stat.name, f"{stat.group}:{stat.name}")
            ):
                wanted.add((stat.group, stat.name))
    return [stat for stat in statistics if (stat.group, stat.name) in wanted]


def line(stat: Statistic) -> str:
    """Kamailio's ``group:name = value``."""
    return f"{stat.group}:{stat.name} = {stat.value}"


def register_statistics(registry: Registry, source: StatisticsControl) -> None:
    """Add ``stats.get_statistics``."""

    @registry.register(
        "stats.get_statistics",
        Param("stat", variadic=True, doc="'all', a group ('tsilo:'), or a statistic name; several allowed"),
        scope=Scope.READ,
        doc="Returns statistics as 'group:name = value' lines.",
    )
    async def get_statistics(args: Arguments) -> JsonValue:
        return [line(stat) for stat in selected(source.statistics(), args.texts("stat"))]
