"""``stats.get_statistics`` (rpc.md 3.6, Kamailio kex ``stats.*``), over the
``StatisticsControl`` seam.

Kamailio's selection rules, per parameter (several may be given): ``all`` is every statistic;
``group:`` (trailing colon) every statistic of that group; anything else one statistic by
name (``name`` or ``group:name``).  Unknown names select nothing.  Each selected statistic is
one line ``group:name = value``; a statistic selected twice is listed once.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry

from scaserver.control.jsonrpc import JsonValue
from scaserver.control.registry import Arguments, Param, Registry, Scope
from scaserver.control.seams import Statistic, StatisticsControl
from scaserver.control.views import statistic_group


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


class MetricsStatistics:
    """``control.seams.StatisticsControl`` over the collectors ``/metrics`` exports: one
    statistic per sample, label values appended to the name (``sca:notify_call-info_sent``),
    histograms as their ``_count`` and ``_sum``; values rounded to integers (Kamailio's
    counters are unsigned integers), so a duration histogram ``..._seconds`` is listed as
    ``..._ms_count`` and ``..._ms_sum`` in milliseconds.  Only the server's own families
    (``<namespace>_*``) are statistics; the process collectors are for ``/metrics``."""

    def __init__(self, registry: CollectorRegistry, namespace: str) -> None:
        self._registry, self._namespace = registry, namespace

    def statistics(self) -> Sequence[Statistic]:
        prefix = f"{self._namespace}_"
        found: list[Statistic] = []
        for family in self._registry.collect():
            if not family.name.startswith(prefix):
                continue
            base = family.name.removeprefix(prefix)
            scale = 1
            if family.type == "histogram" and base.endswith("_seconds"):
                base, scale = f"{base.removesuffix('_seconds')}_ms", 1000
            group, name = statistic_group(base)
            for sample in family.samples:
                suffix = sample.name[len(family.name) :]
                if suffix in ("_created", "_bucket"):
                    continue
                if suffix == "_total":
                    suffix = ""
                value = sample.value * scale if suffix == "_sum" else sample.value
                labels = "".join(f"_{label}" for label in sample.labels.values())
                found.append(Statistic(group, f"{name}{suffix}{labels}", round(value)))
        return sorted(found, key=lambda stat: (stat.group, stat.name))


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
