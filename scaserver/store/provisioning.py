"""Provisioning records and their repository (provisioning.md sections 3 and 4.4).

The values here are what the profile generators of ``scaserver.provisioning`` render from
and what the HTTP edge records; they live in the store because the store sits below
provisioning.  ``SqlProvisioningRepository`` implements ``ProvisioningRepository`` with
SQLAlchemy 2 Core on the synchronous engine: every method blocks, so the edge calls it
through the database thread pool (``edge/dbpool.py``), never on the reactor thread.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import attrs
from sqlalchemy import Engine, Select, delete, insert, select, update
from sqlalchemy.engine import RowMapping

from scaserver.store import tables

__all__ = [
    "Device",
    "DeviceLine",
    "Family",
    "FetchRecord",
    "LineIdentity",
    "ProvisioningRepository",
    "Sighting",
    "SqlProvisioningRepository",
    "UploadKind",
    "UploadRecord",
    "Vendor",
]


class Vendor(enum.Enum):
    POLYCOM = "polycom"
    CISCO = "cisco"
    YEALINK = "yealink"


class Family(enum.Enum):
    """Profile formats (section 3 ``devices.family``)."""

    POLYCOM_SIP3 = "polycom-sip3"
    POLYCOM_UCS = "polycom-ucs"
    CISCO_SPA = "cisco-spa"
    CISCO_MPP = "cisco-mpp"
    YEALINK = "yealink"

    @property
    def vendor(self) -> Vendor:
        return _FAMILY_VENDOR[self]


_FAMILY_VENDOR = {
    Family.POLYCOM_SIP3: Vendor.POLYCOM,
    Family.POLYCOM_UCS: Vendor.POLYCOM,
    Family.CISCO_SPA: Vendor.CISCO,
    Family.CISCO_MPP: Vendor.CISCO,
    Family.YEALINK: Vendor.YEALINK,
}


class UploadKind(enum.Enum):
    """What a phone PUT (section 3 ``provisioning_uploads.kind``)."""

    APP_LOG = "app-log"
    BOOT_LOG = "boot-log"
    PHONE_OVERRIDE = "phone-override"
    WEB_OVERRIDE = "web-override"


@attrs.frozen
class LineIdentity:
    """An AoR a phone registers, with the digest credentials it registers with.

    ``shared`` and ``max_appearances`` come from the line's ``sca_line`` row (sca.md
    section 8.2): a line without one is private; ``max_appearances`` 0 means unlimited.
    """

    aor: str
    auth_username: str
    auth_password: str = attrs.field(repr=False)
    display_name: str | None = None
    shared: bool = False
    max_appearances: int = 0


@attrs.frozen
class DeviceLine:
    """A line placed on a device (section 3 ``device_lines``)."""

    position: int
    line: LineIdentity
    first_key: int = 1
    line_keys: int = 1
    calls_per_key: int = 1
    label: str | None = None
    # The SCA engine refuses barge-in (sca.md 7.6: 403 "Barge-in not supported"), so a phone
    # is not told it may barge unless the operator says so for this placement.
    barge_in: bool = False

    @property
    def keys(self) -> range:
        return range(self.first_key, self.first_key + self.line_keys)


@attrs.frozen
class Device:
    """A handset (section 3 ``devices``).  ``prov_ha1`` is the MD5 HA1 of its HTTP
    credentials in ``prov_realm`` (None: the site default credentials apply)."""

    mac: str
    family: Family
    model: str | None = None
    description: str | None = None
    owner: str | None = None
    enabled: bool = True
    prov_username: str | None = None
    prov_realm: str | None = None
    prov_ha1: str | None = attrs.field(default=None, repr=False)
    template_overrides: tuple[tuple[str, str], ...] = ()
    lines: tuple[DeviceLine, ...] = ()
    last_seen_at: datetime | None = None
    last_seen_ip: str | None = None
    firmware_seen: str | None = None

    @property
    def vendor(self) -> Vendor:
        return self.family.vendor


@attrs.frozen
class Sighting:
    mac: str
    first_seen_at: datetime
    last_seen_at: datetime
    last_ip: str | None
    last_user_agent: str | None
    request_count: int


@attrs.frozen
class UploadRecord:
    device_mac: str
    kind: UploadKind
    file_name: str
    size_bytes: int
    sha256: str
    stored_path: str
    received_at: datetime
    remote_ip: str | None


@attrs.frozen
class FetchRecord:
    """One provisioning HTTP request (section 4.4)."""

    at: datetime
    mac: str | None
    method: str
    path: str
    status: int
    bytes: int
    remote_ip: str | None
    user_agent: str | None
    duration_ms: int


class ProvisioningRepository(Protocol):
    """Devices, identities and the provisioning logs."""

    def device(self, mac: str, /) -> Device | None: ...

    def devices(self) -> list[Device]: ...

    def save_device(self, device: Device, /) -> None:
        """Insert or replace the device by MAC, its placed lines included (their identities
        must exist, see ``save_line``)."""
        ...

    def remove_device(self, mac: str, /) -> bool: ...

    def save_line(self, line: LineIdentity, /) -> None:
        """Insert or replace a registration identity by AoR (``shared``/``max_appearances``
        are not stored here: they are the ``sca_line`` row's)."""
        ...

    def line(self, aor: str, /) -> LineIdentity | None: ...

    def record_seen(
        self, mac: str, at: datetime, ip: str | None, user_agent: str | None, firmware: str | None, /
    ) -> None: ...

    def record_sighting(self, mac: str, at: datetime, ip: str | None, user_agent: str | None, /) -> None: ...

    def sightings(self) -> list[Sighting]: ...

    def record_upload(self, upload: UploadRecord, keep: int, /) -> list[str]:
        """Store the upload row and drop all but the newest ``keep`` of its (device, kind);
        returns the ``stored_path`` of the dropped rows for the caller to delete."""
        ...

    def uploads(self, mac: str, /) -> list[UploadRecord]: ...

    def record_fetch(self, fetch: FetchRecord, /) -> None: ...

    def fetches(self, mac: str | None = None, /) -> list[FetchRecord]: ...


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime | None) -> datetime | None:
    """SQLite hands time stamps back naive; they were written in UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


class SqlProvisioningRepository:
    """``ProvisioningRepository`` on a SQLAlchemy engine (SQLite or PostgreSQL)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    # -- devices ---------------------------------------------------------------------------

    def _line_identity(self, row: RowMapping) -> LineIdentity:
        appearances = row["appearances"]
        return LineIdentity(
            aor=row["aor"],
            auth_username=row["auth_username"],
            auth_password=row["auth_password"],
            display_name=row["display_name"],
            shared=appearances is not None,
            max_appearances=int(appearances or 0),
        )

    def _lines_query(self) -> Select[Any]:
        lines, sca = tables.lines, tables.sca_line
        return select(
            lines.c.id,
            lines.c.aor,
            lines.c.display_name,
            lines.c.auth_username,
            lines.c.auth_password,
            sca.c.appearances,
        ).select_from(lines.outerjoin(sca, sca.c.aor == lines.c.aor))

    def _device(self, row: RowMapping, placed: Sequence[RowMapping]) -> Device:
        overrides: Mapping[str, object] = json.loads(row["template_overrides"] or "{}")
        return Device(
            mac=row["mac"].strip(),
            family=Family(row["family"]),
            model=row["model"],
            description=row["description"],
            owner=row["owner"],
            enabled=bool(row["enabled"]),
            prov_username=row["prov_username"],
            prov_realm=row["prov_realm"],
            prov_ha1=row["prov_ha1"],
            template_overrides=tuple((str(k), str(v)) for k, v in overrides.items()),
            lines=tuple(
                DeviceLine(
                    position=p["position"],
                    line=self._line_identity(p),
                    first_key=p["first_key"],
                    line_keys=p["line_keys"],
                    calls_per_key=p["calls_per_key"],
                    label=p["label"],
                    barge_in=bool(p["barge_in"]),
                )
                for p in placed
            ),
            last_seen_at=_aware(row["last_seen_at"]),
            last_seen_ip=row["last_seen_ip"],
            firmware_seen=row["firmware_seen"],
        )

    def _load(self, mac: str | None) -> list[Device]:
        d, dl, lines, sca = tables.devices, tables.device_lines, tables.lines, tables.sca_line
        with self._engine.connect() as conn:
            query = select(d).order_by(d.c.mac)
            if mac is not None:
                query = query.where(d.c.mac == mac)
            rows = conn.execute(query).mappings().all()
            if not rows:
                return []
            placed_query = (
                select(
                    dl.c.device_id,
                    dl.c.position,
                    dl.c.first_key,
                    dl.c.line_keys,
                    dl.c.calls_per_key,
                    dl.c.label,
                    dl.c.barge_in,
                    lines.c.aor,
                    lines.c.display_name,
                    lines.c.auth_username,
                    lines.c.auth_password,
                    sca.c.appearances,
                )
                .select_from(
                    dl.join(lines, lines.c.id == dl.c.line_id).outerjoin(sca, sca.c.aor == lines.c.aor)
                )
                .where(dl.c.device_id.in_([row["id"] for row in rows]))
                .order_by(dl.c.device_id, dl.c.position)
            )
            placed: dict[int, list[RowMapping]] = {}
            for p in conn.execute(placed_query).mappings():
                placed.setdefault(p["device_id"], []).append(p)
        return [self._device(row, placed.get(row["id"], [])) for row in rows]

    def device(self, mac: str, /) -> Device | None:
        found = self._load(mac)
        return found[0] if found else None

    def devices(self) -> list[Device]:
        return self._load(None)

    def save_device(self, device: Device, /) -> None:
        d, dl, lines = tables.devices, tables.device_lines, tables.lines
        values = {
            "vendor": device.vendor.value,
            "family": device.family.value,
            "model": device.model,
            "description": device.description,
            "owner": device.owner,
            "enabled": device.enabled,
            "prov_username": device.prov_username,
            "prov_realm": device.prov_realm,
            "prov_ha1": device.prov_ha1,
            "template_overrides": json.dumps(dict(device.template_overrides), sort_keys=True),
            "updated_at": _now(),
        }
        with self._engine.begin() as conn:
            device_id = conn.execute(select(d.c.id).where(d.c.mac == device.mac)).scalar()
            if device_id is None:
                device_id = conn.execute(
                    insert(d).values(mac=device.mac, **values).returning(d.c.id)
                ).scalar_one()
            else:
                conn.execute(update(d).where(d.c.id == device_id).values(values))
                conn.execute(delete(dl).where(dl.c.device_id == device_id))
            for placed in device.lines:
                line_id = conn.execute(select(lines.c.id).where(lines.c.aor == placed.line.aor)).scalar()
                if line_id is None:
                    raise LookupError(f"no line identity for {placed.line.aor}")
                conn.execute(
                    insert(dl).values(
                        device_id=device_id,
                        position=placed.position,
                        line_id=line_id,
                        first_key=placed.first_key,
                        line_keys=placed.line_keys,
                        calls_per_key=placed.calls_per_key,
                        label=placed.label,
                        barge_in=placed.barge_in,
                    )
                )

    def remove_device(self, mac: str, /) -> bool:
        with self._engine.begin() as conn:
            device_id = conn.execute(select(tables.devices.c.id).where(tables.devices.c.mac == mac)).scalar()
            if device_id is None:
                return False
            # explicit: SQLite enforces ON DELETE CASCADE only with foreign_keys=ON
            conn.execute(delete(tables.device_lines).where(tables.device_lines.c.device_id == device_id))
            conn.execute(delete(tables.devices).where(tables.devices.c.id == device_id))
        return True

    # -- lines -----------------------------------------------------------------------------

    def save_line(self, line: LineIdentity, /) -> None:
        t = tables.lines
        values = {
            "display_name": line.display_name,
            "auth_username": line.auth_username,
            "auth_password": line.auth_password,
            "updated_at": _now(),
        }
        with self._engine.begin() as conn:
            if conn.execute(update(t).where(t.c.aor == line.aor).values(values)).rowcount == 0:
                conn.execute(insert(t).values(aor=line.aor, **values))

    def line(self, aor: str, /) -> LineIdentity | None:
        with self._engine.connect() as conn:
            row = conn.execute(self._lines_query().where(tables.lines.c.aor == aor)).mappings().first()
        return None if row is None else self._line_identity(row)

    # -- what the HTTP edge records ----------------------------------------------------------

    def record_seen(
        self, mac: str, at: datetime, ip: str | None, user_agent: str | None, firmware: str | None, /
    ) -> None:
        values: dict[str, object] = {"last_seen_at": at, "last_seen_ip": ip, "last_user_agent": user_agent}
        if firmware is not None:
            values["firmware_seen"] = firmware
        with self._engine.begin() as conn:
            conn.execute(update(tables.devices).where(tables.devices.c.mac == mac).values(values))

    def record_sighting(self, mac: str, at: datetime, ip: str | None, user_agent: str | None, /) -> None:
        t = tables.device_sightings
        with self._engine.begin() as conn:
            changed = conn.execute(
                update(t)
                .where(t.c.mac == mac)
                .values(
                    last_seen_at=at,
                    last_ip=ip,
                    last_user_agent=user_agent,
                    request_count=t.c.request_count + 1,
                )
            ).rowcount
            if changed == 0:
                conn.execute(
                    insert(t).values(
                        mac=mac,
                        first_seen_at=at,
                        last_seen_at=at,
                        last_ip=ip,
                        last_user_agent=user_agent,
                        request_count=1,
                    )
                )

    def sightings(self) -> list[Sighting]:
        t = tables.device_sightings
        with self._engine.connect() as conn:
            rows = conn.execute(select(t).order_by(t.c.mac)).mappings().all()
        return [
            Sighting(
                mac=row["mac"].strip(),
                first_seen_at=_aware(row["first_seen_at"]) or row["first_seen_at"],
                last_seen_at=_aware(row["last_seen_at"]) or row["last_seen_at"],
                last_ip=row["last_ip"],
                last_user_agent=row["last_user_agent"],
                request_count=row["request_count"],
            )
            for row in rows
        ]

    def record_upload(self, upload: UploadRecord, keep: int, /) -> list[str]:
        t = tables.provisioning_uploads
        with self._engine.begin() as conn:
            conn.execute(
                insert(t).values(
                    device_mac=upload.device_mac,
                    kind=upload.kind.value,
                    file_name=upload.file_name,
                    size_bytes=upload.size_bytes,
                    sha256=upload.sha256,
                    stored_path=upload.stored_path,
                    received_at=upload.received_at,
                    remote_ip=upload.remote_ip,
                )
            )
            same = (t.c.device_mac == upload.device_mac) & (t.c.kind == upload.kind.value)
            stale = conn.execute(
                select(t.c.id, t.c.stored_path).where(same).order_by(t.c.id.desc()).offset(max(keep, 1))
            ).all()
            if stale:
                conn.execute(delete(t).where(t.c.id.in_([row.id for row in stale])))
        return [row.stored_path for row in stale]

    def uploads(self, mac: str, /) -> list[UploadRecord]:
        t = tables.provisioning_uploads
        with self._engine.connect() as conn:
            rows = conn.execute(select(t).where(t.c.device_mac == mac).order_by(t.c.id)).mappings().all()
        return [
            UploadRecord(
                device_mac=row["device_mac"].strip(),
                kind=UploadKind(row["kind"]),
                file_name=row["file_name"],
                size_bytes=row["size_bytes"],
                sha256=row["sha256"],
                stored_path=row["stored_path"],
                received_at=_aware(row["received_at"]) or row["received_at"],
                remote_ip=row["remote_ip"],
            )
            for row in rows
        ]

    def record_fetch(self, fetch: FetchRecord, /) -> None:
        with self._engine.begin() as conn:
            conn.execute(
                insert(tables.provisioning_fetches).values(
                    at=fetch.at,
                    mac=fetch.mac,
                    method=fetch.method[:8],
                    path=fetch.path[:255],
                    status=fetch.status,
                    bytes=fetch.bytes,
                    remote_ip=fetch.remote_ip,
                    user_agent=None if fetch.user_agent is None else fetch.user_agent[:255],
                    duration_ms=fetch.duration_ms,
                )
            )

    def fetches(self, mac: str | None = None, /) -> list[FetchRecord]:
        t = tables.provisioning_fetches
        query = select(t).order_by(t.c.id)
        if mac is not None:
            query = query.where(t.c.mac == mac)
        with self._engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [
            FetchRecord(
                at=_aware(row["at"]) or row["at"],
                mac=None if row["mac"] is None else row["mac"].strip(),
                method=row["method"],
                path=row["path"],
                status=row["status"],
                bytes=row["bytes"],
                remote_ip=row["remote_ip"],
                user_agent=row["user_agent"],
                duration_ms=row["duration_ms"],
            )
            for row in rows
        ]
