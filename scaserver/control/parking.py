"""The ``ts.*`` (Kamailio tsilo) and ``pushreg.*`` methods (rpc.md 3.4, 3.5), over the
``ParkingControl`` and ``LocationControl`` seams.

tsilo keeps parked transactions in a hash table keyed by R-URI; ours is a dict, so like
``ul.*`` the ``Hash`` is the CRC-32 of the R-URI and ``Size``/``Max-Slots`` describe a
virtual table of ``TABLE_SIZE`` slots (tsilo's default ``hash_size`` 2048).  Kamailio emits
``R-URIs``/``Transactions`` as objects with repeated keys; we emit arrays (rpc.md 3.4).
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Final

from scaserver.control.jsonrpc import JsonValue, NotFoundError
from scaserver.control.registry import Arguments, Param, Registry, Scope
from scaserver.control.seams import LocationControl, ParkedTransaction, ParkingControl, UpstreamInfo
from scaserver.control.usrloc import contact_json

TABLE_SIZE: Final = 2048


def hash_of(ruri: str) -> int:
    return zlib.crc32(ruri.encode("utf-8")) % TABLE_SIZE


def _transactions(items: Sequence[ParkedTransaction]) -> list[JsonValue]:
    return [{"Tindex": item.tindex, "Tlabel": item.tlabel} for item in items]


def ts_dump_json(parked: Sequence[ParkedTransaction], *, brief: bool) -> dict[str, JsonValue]:
    """The ``ts.dump`` document (rpc.md 3.4)."""
    by_ruri: dict[str, list[ParkedTransaction]] = {}
    for item in parked:
        by_ruri.setdefault(item.ruri, []).append(item)
    ruris: list[JsonValue] = []
    for ruri, items in sorted(by_ruri.items()):
        entry: dict[str, JsonValue] = {"R-URI": ruri, "Hash": hash_of(ruri)}
        if not brief:
            entry["Transactions"] = _transactions(items)
        ruris.append(entry)
    slots = Counter(hash_of(ruri) for ruri in by_ruri)
    return {
        "Size": TABLE_SIZE,
        "R-URIs": ruris,
        "Stats": {
            "RURIs": len(by_ruri),
            "Max-Slots": max(slots.values(), default=0),
            "Transactions": len(parked),
        },
    }


def _upstream_json(info: UpstreamInfo, now: float) -> dict[str, JsonValue]:
    expires_in = max(0, int(info.expires_at - now + 0.5)) if info.expires_at else 0
    return {
        "mode": info.mode,
        "state": info.state,
        "expires_in": expires_in,
        "last_ok": info.last_ok,
        "last_error": info.last_error,
        "upstream_auth_needed": info.upstream_auth_needed,
        "degraded": info.state in ("RETRYING", "LOST"),
    }


def pushreg_json(info: UpstreamInfo, location: LocationControl, now: float) -> dict[str, JsonValue]:
    """One ``pushreg.*`` object: the AoR, its local contacts as ``ul.*`` shows them, and the
    upstream registration (push tokens appear as SHA-256 only)."""
    record = location.lookup(info.aor)
    contacts: list[JsonValue] = (
        [] if record is None else [{"Contact": contact_json(c, now)} for c in record.contacts]
    )
    return {"aor": info.aor, "contacts": contacts, "upstream": _upstream_json(info, now)}


def register_parking(
    registry: Registry, parking: ParkingControl, location: LocationControl, clock: Callable[[], float]
) -> None:
    """Add ``ts.dump``, ``ts.lookup``, ``pushreg.dump`` and ``pushreg.lookup``."""

    @registry.register(
        "ts.dump",
        Param("brief", optional=True, doc="'brief' leaves out the transactions"),
        scope=Scope.READ,
        doc="Dumps the table of parked calls (tsilo).",
    )
    async def ts_dump(args: Arguments) -> JsonValue:
        brief = (args.optional_text("brief") or "").lower() == "brief"
        return ts_dump_json(parking.parked(), brief=brief)

    @registry.register(
        "ts.lookup",
        Param("ruri", doc="the R-URI (address of record) calls are parked under"),
        scope=Scope.READ,
        doc="Shows the parked transactions of one R-URI.",
    )
    async def ts_lookup(args: Arguments) -> JsonValue:
        ruri = args.text("ruri")
        items = [item for item in parking.parked() if item.ruri == ruri]
        if not items:
            raise NotFoundError("RURI not found in tsilo table")
        return _transactions(items)

    @registry.register(
        "pushreg.dump",
        Param("brief", optional=True, doc="'brief' lists the AoRs and upstream states only"),
        scope=Scope.READ,
        doc="Dumps the push mid-registrar's upstream registrations.",
    )
    async def pushreg_dump(args: Arguments) -> JsonValue:
        brief = (args.optional_text("brief") or "").lower() == "brief"
        now = clock()
        if brief:
            return [
                {"aor": info.aor, "upstream": _upstream_json(info, now)} for info in parking.registrations()
            ]
        return [pushreg_json(info, location, now) for info in parking.registrations()]

    @registry.register(
        "pushreg.lookup",
        Param("aor", doc="user@domain, a SIP URI, or a bare user (default domain)"),
        scope=Scope.READ,
        doc="Shows the upstream registration and contacts of one AoR.",
    )
    async def pushreg_lookup(args: Arguments) -> JsonValue:
        info = parking.registration(args.text("aor"))
        if info is None:
            raise NotFoundError("AOR not found in mid-registrar")
        return pushreg_json(info, location, clock())
