"""The ``ts.*`` (Kamailio tsilo), ``park.*``, ``pushreg.*`` and ``uac.*`` methods (rpc.md 3.4,
3.5), over the ``ParkingControl`` and ``LocationControl`` seams.

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

from scaserver.control.jsonrpc import BadArgumentError, InvalidParamsError, JsonValue, NotFoundError
from scaserver.control.registry import Arguments, Param, ParamType, Registry, Scope
from scaserver.control.seams import (
    LocationControl,
    ParkedCallInfo,
    ParkedTransaction,
    ParkingControl,
    PushAttemptInfo,
    UacRefusal,
    UacRegistration,
    UpstreamInfo,
    WakeOutcome,
)
from scaserver.control.usrloc import contact_json

TABLE_SIZE: Final = 2048

#: What ``uac.reg_info`` can look a record up by (rpc.md 3.5, Kamailio's filter attributes).
UAC_FILTERS: Final = ("l_uuid", "l_username", "r_username", "auth_username")

#: Shown instead of the upstream password and HA1 (rpc.md 2.4: secrets never appear in results).
MASK: Final = "***"


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


# park.* (rpc.md 3.4, push-and-parking.md 9)


def _time(value: float) -> float:
    return round(value, 3)


def _optional_time(value: float | None) -> float | None:
    return None if value is None else _time(value)


def _attempt_json(attempt: PushAttemptInfo) -> dict[str, JsonValue]:
    return {
        "attempt": attempt.attempt,
        "provider": attempt.provider,
        "prid_sha256": attempt.prid_sha256,
        "state": attempt.state,
        "sent_at": _time(attempt.sent_at),
        "accepted_at": _optional_time(attempt.accepted_at),
        "wake_deadline": _optional_time(attempt.wake_deadline),
    }


def parked_call_json(call: ParkedCallInfo, now: float) -> dict[str, JsonValue]:
    """One ``park.dump`` object.  ``ruri`` is the called AoR and ``ruris`` every AoR the call
    is stored under; ``push`` is rpc.md's summary (the first push attempt: when it left, to
    which provider, its state) and ``pushes`` every attempt with its token as SHA-256."""
    first = call.pushes[0] if call.pushes else None
    push: JsonValue = None
    if first is not None:
        push = {"sent_at": _time(first.sent_at), "provider": first.provider, "state": first.state}
    return {
        "ruri": call.ruris[0] if call.ruris else "",
        "ruris": list(call.ruris),
        "park_id": call.park_id,
        "call_id": call.call_id,
        "caller": call.caller,
        "callee": call.callee,
        "state": call.state,
        "parked_at": _time(call.parked_at),
        "age_s": _time(max(0.0, now - call.parked_at)),
        "timeout_at": _time(call.timeout_at),
        "grace_until": _optional_time(call.grace_until),
        "branches": [
            {
                "index": branch.index,
                "binding": branch.binding,
                "contact": branch.contact,
                "started_at": _time(branch.started_at),
                "state": branch.state,
                "status": branch.status,
            }
            for branch in call.branches
        ],
        "push": push,
        "pushes": [_attempt_json(attempt) for attempt in call.pushes],
    }


# pushreg.wake and uac.* (rpc.md 3.5)


def wake_json(outcome: WakeOutcome) -> dict[str, JsonValue]:
    return {
        "contact": outcome.contact,
        "provider": outcome.provider,
        "status": outcome.status,
        "gateway_status": outcome.gateway_status,
        "latency_ms": outcome.latency_ms,
    }


def uac_json(record: UacRegistration, now: float) -> dict[str, JsonValue]:
    """A ``uac.reg_dump`` record with Kamailio's keys; ``auth_password`` and ``auth_ha1`` are
    always masked (Kamailio prints them in clear, rpc.md 2.4)."""
    return {
        "l_uuid": record.l_uuid,
        "l_username": record.l_username,
        "l_domain": record.l_domain,
        "r_username": record.r_username,
        "r_domain": record.r_domain,
        "realm": record.realm,
        "auth_username": record.auth_username,
        "auth_password": MASK,
        "auth_ha1": MASK,
        "auth_proxy": record.auth_proxy or "none",
        "expires": record.expires,
        "flags": record.flags,
        "diff_expires": int(record.timer_expires - now) if record.timer_expires else 0,
        "timer_expires": int(record.timer_expires),
        "reg_init": int(record.reg_init),
        "reg_delay": record.reg_delay,
        "contact_addr": record.contact_addr,
        "socket": record.socket,
    }


def _uac_matches(record: UacRegistration, attr: str, value: str) -> bool:
    """Kamailio's ``reg_ht_get_byfilter``; an ``l_uuid`` (an AoR) may also be given as a URI."""
    if attr == "l_uuid":
        return value in (record.l_uuid, f"sip:{record.l_uuid}")
    fields = {
        "l_username": record.l_username,
        "r_username": record.r_username,
        "auth_username": record.auth_username,
    }
    return bool(value) and fields[attr] == value


def register_park(registry: Registry, parking: ParkingControl, clock: Callable[[], float]) -> None:
    """Add ``park.dump``, ``park.lookup`` and ``park.release``."""

    @registry.register(
        "park.dump",
        scope=Scope.READ,
        doc="Dumps every parked call with its branches, push attempts and deadlines.",
    )
    async def park_dump(args: Arguments) -> JsonValue:
        now = clock()
        return [parked_call_json(call, now) for call in parking.parked_calls()]

    @registry.register(
        "park.lookup",
        Param("ruri", doc="the R-URI (address of record) calls are parked under"),
        scope=Scope.READ,
        doc="Shows the parked calls of one R-URI.",
    )
    async def park_lookup(args: Arguments) -> JsonValue:
        calls = parking.parked_calls(args.text("ruri"))
        if not calls:
            raise NotFoundError("RURI not found in tsilo table")
        now = clock()
        return [parked_call_json(call, now) for call in calls]

    @registry.register(
        "park.release",
        Param("call_id", doc="the Call-ID of the parked INVITE"),
        Param("code", ParamType.INTEGER, optional=True, doc="final response to the caller, 300-699 (480)"),
        scope=Scope.ADMIN,
        doc="Ends a parked call now with the given final response to the caller.",
    )
    async def park_release(args: Arguments) -> JsonValue:
        code = args.optional_integer("code")
        status = 480 if code is None else code
        if not 300 <= status <= 699:
            method = registry.get("park.release")
            raise InvalidParamsError(data={"usage": method.usage if method is not None else ""})
        released = await parking.release(args.text("call_id"), status)
        if released is None:
            raise NotFoundError("Call-ID not found in tsilo table")
        return {"code": status, "call": parked_call_json(released, clock())}


def register_pushreg_wake(registry: Registry, parking: ParkingControl) -> None:
    """Add ``pushreg.wake``."""

    @registry.register(
        "pushreg.wake",
        Param("aor", doc="user@domain, a SIP URI, or a bare user (default domain)"),
        Param("reason", optional=True, doc="the push's reason text ('rpc')"),
        scope=Scope.ADMIN,
        doc="Sends a reg-refresh push to every push-capable contact of an AoR.",
    )
    async def pushreg_wake(args: Arguments) -> JsonValue:
        outcomes = await parking.wake(args.text("aor"), args.optional_text("reason") or "rpc")
        if outcomes is None:
            raise NotFoundError("AOR not found")
        return [wake_json(outcome) for outcome in outcomes]


def register_uac(registry: Registry, parking: ParkingControl, clock: Callable[[], float]) -> None:
    """Add ``uac.reg_dump``, ``uac.reg_info`` and ``uac.reg_refresh`` (Kamailio ``uac`` names
    over the mid-registrar's upstream registrations)."""

    @registry.register(
        "uac.reg_dump", scope=Scope.READ, doc="Dumps the upstream registrations (passwords masked)."
    )
    async def reg_dump(args: Arguments) -> JsonValue:
        now = clock()
        return [uac_json(record, now) for record in parking.uac_registrations()]

    @registry.register(
        "uac.reg_info",
        Param("attr", doc="l_uuid, l_username, r_username or auth_username"),
        Param("value", doc="the value to match"),
        scope=Scope.READ,
        doc="Shows one upstream registration (passwords masked).",
    )
    async def reg_info(args: Arguments) -> JsonValue:
        attr, value = args.text("attr"), args.text("value")
        if attr not in UAC_FILTERS:
            raise BadArgumentError("Unsupported filter attribute")
        found = next((r for r in parking.uac_registrations() if _uac_matches(r, attr, value)), None)
        if found is None:
            raise NotFoundError("Record not found")
        return uac_json(found, clock())

    @registry.register(
        "uac.reg_refresh",
        Param("l_uuid", doc="the record's l_uuid (its AoR)"),
        scope=Scope.ADMIN,
        doc="Re-registers one AoR upstream now.",
    )
    async def reg_refresh(args: Arguments) -> JsonValue:
        outcome = await parking.uac_refresh(args.text("l_uuid"))
        if outcome is UacRefusal.NO_RECORD:
            raise NotFoundError("Record not found")
        if outcome is UacRefusal.MIRROR_MODE:
            raise BadArgumentError("Refresh not available in mirror mode")
        if outcome is UacRefusal.NO_BINDINGS:
            raise BadArgumentError("No local binding to register")
        return uac_json(outcome, clock())
