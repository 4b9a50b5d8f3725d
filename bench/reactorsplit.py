"""Split a server profile of ``bench.profile --profiler cprofile`` into the core and the rest.

    python -m bench.reactorsplit OUT/server.prof CYCLES

Two views, per cycle (``CYCLES``: the SIPp calls of the run):

* **inclusive**: the profiled time and the calls inside the core's entry points
  (``SipRouter.receive``, ``on_timer``, ``connection_lost``, ``flow_failed``) against the
  whole profile; the calls inside are apportioned down the call graph (each function's calls
  and own time shared among its callers by the calls each made), so they are estimates where
  one function is called from both sides (``dict.get``, ``serialize``);
* **by module**: each function's own calls and time charged to its module's group (the core's
  packages, the edge, the bus, metrics, reporting and store, the guard, Twisted, prometheus);
  a builtin or standard-library function is charged to its callers' groups in proportion.
"""

from __future__ import annotations

import collections
import pstats
import sys
from collections.abc import Iterable

Func = tuple[str, int, str]

ENTRY_NAMES = ("receive", "on_timer", "connection_lost", "flow_failed")

GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "core",
        tuple(
            f"scaserver{sep}{package}{sep}"
            for package in ("sip", "router", "sca", "registrar", "proxy", "push", "parking")
            for sep in ("/", ".")
        ),
    ),
    ("edge", ("scaserver/edge/", "scaserver.edge.")),
    ("bus", ("scaserver/events.py",)),
    ("metrics", ("scaserver/metrics", "scaserver.metrics", "prometheus_client")),
    ("reporting+store", ("scaserver/reporting", "scaserver.reporting", "scaserver/store", "scaserver.store")),
    ("guard", ("scaserver/guard", "scaserver.guard")),
    ("twisted", ("twisted/",)),
)


def group_of(func: Func) -> str | None:
    filename = func[0]
    for name, marks in GROUPS:
        if any(mark in filename for mark in marks):
            return name
    if "/scaserver/" in filename or "scaserver." in filename:
        return "other scaserver"
    return None  # a builtin or the standard library: charged to its callers


def is_entry(func: Func) -> bool:
    return func[0].endswith("scaserver/router/router.py") and func[2] in ENTRY_NAMES


def _order(stats: dict[Func, tuple]) -> list[Func]:  # type: ignore[type-arg]
    """Callers before callees (the call graph's cycles broken where met)."""
    seen: set[Func] = set()
    order: list[Func] = []

    def visit(func: Func) -> None:
        stack = [(func, iter(stats[func][4]))]
        seen.add(func)
        while stack:
            node, callers = stack[-1]
            for caller in callers:
                if caller not in seen and caller in stats:
                    seen.add(caller)
                    stack.append((caller, iter(stats[caller][4])))
                    break
            else:
                stack.pop()
                order.append(node)

    for func in stats:
        if func not in seen:
            visit(func)
    return order


def split(
    path: str,
) -> tuple[dict[str, float], dict[str, float], float, float, list[tuple[float, float, Func]]]:
    stats: dict[Func, tuple] = pstats.Stats(path).stats  # type: ignore[attr-defined,type-arg]
    order = _order(stats)
    # share[f]: fraction of f's calls made (directly or not) from inside the core's entries;
    # owner[f]: fraction of f's calls charged to each group.
    inside: dict[Func, float] = {func: 1.0 if is_entry(func) else 0.0 for func in stats}
    owner: dict[Func, dict[str, float]] = {}
    # The shares inside solve share(f) = sum(calls from c x share(c)) / calls of f: iterated to
    # its fixed point (recursion and cycles of calls included).
    for _ in range(200):
        for func in order:
            if is_entry(func):
                continue
            callers = stats[func][4]
            total = sum(c[0] for c in callers.values())
            if total:
                inside[func] = (
                    sum(c[0] * inside[caller] for caller, c in callers.items() if caller in inside) / total
                )
    for func in order:
        callers = stats[func][4]
        total = sum(c[0] for c in callers.values()) or 1
        group = group_of(func)
        if group is not None:
            owner[func] = {group: 1.0}
        else:
            shares: collections.Counter[str] = collections.Counter()
            for caller, c in callers.items():
                for g, part in owner.get(caller, {"unattributed": 1.0}).items():
                    shares[g] += c[0] * part / total
            owner[func] = dict(shares) if shares else {"unattributed": 1.0}
    calls: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    inside_calls = 0.0
    # cProfile's inclusive time of the entries (none calls another) is exact, recursion included.
    inside_time = sum(ct for func, (_cc, _nc, _tt, ct, _callers) in stats.items() if is_entry(func))
    for func, (_cc, nc, tt, _ct, _callers) in stats.items():
        for g, part in owner[func].items():
            calls[g] += nc * part
            own[g] += tt * part
        inside_calls += nc * inside[func]
    outside = sorted(
        (
            (nc * (1 - inside[func]), tt * (1 - inside[func]), func)
            for func, (_cc, nc, tt, _ct, _c) in stats.items()
        ),
        key=lambda row: -row[1],
    )
    return dict(calls), dict(own), inside_calls, inside_time, outside


def report(path: str, cycles: int, top: int = 40) -> Iterable[str]:
    calls, own, inside_calls, inside_time, outside = split(path)
    total_calls, total_time = sum(calls.values()), sum(own.values())
    yield f"{path}: {cycles} cycles"
    yield (
        f"inclusive: core entries {inside_calls / cycles:.0f} calls, {inside_time / cycles * 1e6:.0f} us;"
        f" outside {(total_calls - inside_calls) / cycles:.0f} calls,"
        f" {(total_time - inside_time) / cycles * 1e6:.0f} us; total {total_calls / cycles:.0f} calls,"
        f" {total_time / cycles * 1e6:.0f} us per cycle"
    )
    yield "by module (own calls and time per cycle):"
    for g in sorted(calls, key=lambda g: -own[g]):
        share = own[g] / total_time
        yield f"  {g:18} {calls[g] / cycles:8.1f} calls {own[g] / cycles * 1e6:8.0f} us ({share:6.1%})"
    yield "outside the core's entries, by own time (calls and us per cycle):"
    for n, tt, (filename, line, name) in outside[:top]:
        where = filename.split("site-packages/")[-1].split("/scaserver/")[-1]
        yield f"  {n / cycles:7.1f} {tt / cycles * 1e6:7.1f}  {where}:{line}({name})"


def main() -> int:
    for line in report(sys.argv[1], int(sys.argv[2])):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
