"""The ``ul.*`` methods (rpc.md 3.3, Kamailio usrloc names), over the ``LocationControl`` seam.

``table`` is accepted for compatibility and must be ``location``.  Object keys are Kamailio's
spellings.  Our location service is a dict, not a hash table: ``HashID`` is the CRC-32 of the
AoR and ``Size``/``Max-Slots`` describe a virtual table of ``TABLE_SIZE`` slots indexed by it,
so the numbers keep their Kamailio meaning for scripts that read them.
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Final

from scaserver.control.jsonrpc import JsonValue, NotFoundError
from scaserver.control.registry import Arguments, Param, Registry, Scope
from scaserver.control.seams import AorRecord, ContactInfo, ContactRemoval, LocationControl

TABLE: Final = "location"
TABLE_SIZE: Final = 1024  # Kamailio usrloc's default hash_size 10 -> 2**10 slots


def hash_id(aor: str) -> int:
    return zlib.crc32(aor.encode("utf-8"))


def _expires(contact: ContactInfo, now: float) -> JsonValue:
    if contact.expires_at is None:
        return "permanent"
    if contact.expires_at <= now:
        return "expired"
    return int(contact.expires_at - now)


def contact_json(contact: ContactInfo, now: float) -> dict[str, JsonValue]:
    """The Contact object of rpc.md 3.3 (unset values are null; the push token is never shown)."""
    push: JsonValue = None
    if contact.push is not None:
        info = contact.push
        push = {
            "provider": info.provider,
            "prid_sha256": info.prid_sha256,
            "param": info.param,
            "source": info.source,
            "device_type": info.device_type,
            "keepalive": info.keepalive,
            "push_capable": info.push_capable,
            "dormant": info.dormant,
            "invalidated_at": info.invalidated_at,
            "last_push_at": info.last_push_at,
            "last_wake_ms": info.last_wake_ms,
        }
    return {
        "Address": contact.address,
        "Expires": _expires(contact, now),
        "Q": contact.q,
        "Call-ID": contact.call_id,
        "CSeq": contact.cseq,
        "User-Agent": contact.user_agent,
        "Received": contact.received,
        "Path": ",".join(contact.path) if contact.path else None,
        "State": contact.state,
        "Flags": contact.flags,
        "CFlags": contact.cflags,
        "Socket": contact.socket,
        "Methods": contact.methods,
        "Ruid": contact.ruid,
        "Instance": contact.instance,
        "Reg-Id": contact.reg_id,
        "Server-Id": contact.server_id,
        "Tcpconn-Id": contact.tcpconn_id,
        "Keepalive": contact.keepalive,
        "Last-Keepalive": int(contact.last_keepalive),
        "KA-Roundtrip": contact.ka_roundtrip,
        "Last-Modified": int(contact.last_modified),
        "Push": push,
    }


def _contacts(record: AorRecord, now: float) -> list[JsonValue]:
    return [{"Contact": contact_json(contact, now)} for contact in record.contacts]


def dump_json(records: Sequence[AorRecord], now: float, *, brief: bool) -> dict[str, JsonValue]:
    """The ``ul.dump`` document (rpc.md 3.3)."""
    aors: list[JsonValue]
    if brief:
        aors = [{"AoR": record.aor} for record in records]
    else:
        aors = [
            {"Info": {"AoR": record.aor, "HashID": hash_id(record.aor), "Contacts": _contacts(record, now)}}
            for record in records
        ]
    slots = Counter(hash_id(record.aor) % TABLE_SIZE for record in records)
    domain: dict[str, JsonValue] = {
        "Domain": TABLE,
        "Size": TABLE_SIZE,
        "AoRs": aors,
        "Stats": {"Records": len(records), "Max-Slots": max(slots.values(), default=0)},
    }
    return {"Domains": [{"Domain": domain}]}


def _check_table(args: Arguments) -> None:
    if args.text("table") != TABLE:
        raise NotFoundError("Domain table not found")


def register_usrloc(registry: Registry, location: LocationControl, clock: Callable[[], float]) -> None:
    """Add the ``ul.*`` methods; ``clock`` gives epoch seconds (for ``Expires``)."""
    table = Param("table", doc="must be 'location'")
    aor = Param("aor", doc="user@domain, a SIP URI, or a bare user (default domain)")

    @registry.register(
        "ul.dump",
        Param("brief", optional=True, doc="'brief' lists the AoRs only"),
        scope=Scope.READ,
        doc="Dumps the location table.",
    )
    async def dump(args: Arguments) -> JsonValue:
        brief = (args.optional_text("brief") or "").lower() == "brief"
        return dump_json(location.dump(), clock(), brief=brief)

    @registry.register("ul.lookup", table, aor, scope=Scope.READ, doc="Shows the contacts of one AoR.")
    async def lookup(args: Arguments) -> JsonValue:
        _check_table(args)
        record = location.lookup(args.text("aor"))
        if record is None:
            raise NotFoundError("AOR not found in location table")
        return {"AoR": record.aor, "Contacts": _contacts(record, clock())}

    @registry.register("ul.rm", table, aor, scope=Scope.ADMIN, doc="Removes every contact of an AoR.")
    async def rm(args: Arguments) -> JsonValue:
        _check_table(args)
        if not await location.rm(args.text("aor")):
            raise NotFoundError("AOR not found")
        return None

    @registry.register(
        "ul.rm_contact",
        table,
        aor,
        Param("contact", doc="the Contact URI"),
        scope=Scope.ADMIN,
        doc="Removes one contact of an AoR.",
    )
    async def rm_contact(args: Arguments) -> JsonValue:
        _check_table(args)
        outcome = await location.rm_contact(args.text("aor"), args.text("contact"))
        if outcome is ContactRemoval.NO_AOR:
            raise NotFoundError("AOR not found")
        if outcome is ContactRemoval.NO_CONTACT:
            raise NotFoundError("Contact not found")
        return None

    @registry.register("ul.flush", scope=Scope.ADMIN, doc="Writes pending registration changes now.")
    async def flush(args: Arguments) -> JsonValue:
        await location.flush()
        return None
