"""The provisioning HTTP endpoint (provisioning.md section 4): a ``twisted.web`` resource.

This module only does HTTP: source allow-list, the enumeration guard, routing
(``scaserver.provisioning.routes``), per-device digest authentication
(``scaserver.provisioning.access``), uploads to disk and logging.  Profiles come from the pure
generators of ``scaserver.provisioning.profile``; every database call and every file-system
write runs in the database pool (``edge/dbpool.py``), so the reactor never blocks on them.

Refusals, in order: source not in ``allow_from`` 403; source blocked by the enumeration
guard 429; a path that is not a provisioning file 404 (``PUT`` of anything else 405); an
unknown MAC 404 (sighting recorded); a disabled device 403; a profile carrying SIP passwords
for a device without provisioning credentials 403 (unless ``require_credentials`` is off);
missing or wrong credentials 401 with a ``WWW-Authenticate: Digest`` challenge; an upload over
``upload_max_bytes`` 413; an override upload that is not plain XML (a DTD, an entity, not
well-formed) 400, stored nowhere.  Each refusal past routing is logged with its reason.
Refusal bodies are fixed short texts: they never echo the path, configuration or errors.
Every generated file carries ``Cache-Control: no-store`` (section 4.1).

Mounting: ``mount(root, "/prov", resource)`` puts the resource under a path prefix of the
``--http`` site; every path of section 4.3 is relative to it.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, ParamSpec, Protocol, TypeVar, cast

import attrs
from defusedxml import DefusedXmlException, DTDForbidden, EntitiesForbidden
from defusedxml.ElementTree import ParseError
from defusedxml.ElementTree import fromstring as parse_xml
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, DeferredList
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET

from scaserver.edge.dbpool import DatabasePool
from scaserver.provisioning.access import EnumerationGuard, Secret, Verdict, challenge, verify
from scaserver.provisioning.mac import canonical_mac
from scaserver.provisioning.profile import (
    FileKind,
    SiteSettings,
    Templates,
    generic_master,
)
from scaserver.provisioning.profile import render as render_profile
from scaserver.provisioning.routes import Route, Target, route
from scaserver.provisioning.settings import ProvisioningSettings
from scaserver.provisioning.useragent import parse_user_agent
from scaserver.sip.digest import NonceCounts, NonceFactory
from scaserver.store.provisioning import (
    Device,
    FetchRecord,
    ProvisioningRepository,
    SqlProvisioningRepository,
    UploadKind,
    UploadRecord,
    Vendor,
)

P = ParamSpec("P")
T = TypeVar("T")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_log = Logger(namespace="scaserver.provisioning")

XML: Final = b"application/xml"
MIB: Final = 1 << 20
_UPLOAD_SUFFIX: Final = {
    UploadKind.APP_LOG: ".log",
    UploadKind.BOOT_LOG: ".log",
    UploadKind.PHONE_OVERRIDE: ".cfg",
    UploadKind.WEB_OVERRIDE: ".cfg",
}
_OVERRIDE_KINDS: Final = (UploadKind.PHONE_OVERRIDE, UploadKind.WEB_OVERRIDE)
_REASONS: Final = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Payload Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
}


class Clock(Protocol):
    """The part of ``IReactorTime`` used here: the reactor, or ``task.Clock`` in tests."""

    def seconds(self) -> float: ...


class DatabaseRunner(Protocol):
    """What the resource needs of ``DatabasePool``: run blocking work off the reactor."""

    def run(self, f: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Deferred[T]: ...


@attrs.frozen
class ProvisioningPolicy:
    """``[provisioning]`` as the endpoint applies it (section 4): the table itself, the site's
    profile settings, and the table's ``allow_from`` parsed once."""

    site: SiteSettings
    settings: ProvisioningSettings = attrs.field(factory=ProvisioningSettings)
    allow_from: tuple[Network, ...] = attrs.field(init=False)

    @allow_from.default
    def _networks(self) -> tuple[Network, ...]:
        return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in self.settings.allow_from)

    @property
    def upload_dir(self) -> Path | None:
        """Where phone uploads go; None: uploads refused."""
        return Path(self.settings.upload_dir) if self.settings.upload_dir else None

    @property
    def static_dir(self) -> Path | None:
        """Where static files are served from; None: none are."""
        return Path(self.settings.static_dir) if self.settings.static_dir else None

    def secret_for(self, device: Device) -> Secret | None:
        """The device's own credentials, else the site default, else None (no authentication)."""
        table = self.settings
        if device.prov_username and device.prov_ha1:
            return Secret(device.prov_username, device.prov_realm or table.realm, device.prov_ha1)
        if table.default_username and table.default_password:
            return Secret.from_password(table.default_username, table.realm, table.default_password)
        return None


class _Request(Protocol):
    """The part of ``twisted.web.server.Request`` used here."""

    method: bytes
    uri: bytes
    path: bytes
    postpath: list[bytes]
    content: _Content | None

    def getHeader(self, key: bytes) -> bytes | None: ...  # noqa: N802

    def setHeader(self, name: bytes, value: bytes) -> None: ...  # noqa: N802

    def setResponseCode(self, code: int, message: bytes | None = None) -> None: ...  # noqa: N802

    def getClientAddress(self) -> object: ...  # noqa: N802

    def write(self, data: bytes) -> None: ...

    def finish(self) -> None: ...

    def notifyFinish(self) -> Deferred[None]: ...  # noqa: N802


class _Content(Protocol):
    def seek(self, offset: int, whence: int = 0) -> object: ...

    def read(self, size: int = -1) -> bytes: ...

    def tell(self) -> int: ...


@attrs.define
class _Reply:
    status: int
    body: bytes = b""
    content_type: bytes = b"text/plain; charset=utf-8"
    headers: list[tuple[bytes, bytes]] = attrs.field(factory=list)
    device: Device | None = None
    fetched: bool = False  # a configuration file was served: update last_seen
    upload: UploadRecord | None = None


def _refusal(status: int, *headers: tuple[bytes, bytes]) -> _Reply:
    return _Reply(status, _REASONS[status].encode("ascii") + b"\n", headers=list(headers))


def _ip_of(request: _Request) -> str | None:
    address = request.getClientAddress()
    if isinstance(address, IPv4Address | IPv6Address):
        return address.host
    return None


def _in_networks(host: str | None, networks: Sequence[Network]) -> bool:
    if host is None:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in network for network in networks)


class UnsafeUpload(ValueError):
    """An uploaded override file that is not plain XML; the message is the one-line reason."""


def changed_parameters(body: bytes) -> list[str]:
    """The parameter names in an uploaded Polycom override file, for the log (section 4.3).

    Parsed with defusedxml (section 6), whatever the document's encoding (UTF-16 included):
    a DTD, an entity declaration or an external reference is refused, as is a document that
    is not well-formed (a phone writes plain XML; anything else is not served back to it).
    Raises ``UnsafeUpload`` with the reason.
    """
    try:
        root = parse_xml(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DTDForbidden as error:
        raise UnsafeUpload(f"XML with a document type declaration (<!DOCTYPE {error.name}>)") from None
    except EntitiesForbidden as error:
        raise UnsafeUpload(f"XML declaring the entity {error.name!r}") from None
    except DefusedXmlException as error:
        raise UnsafeUpload(f"XML with a forbidden construct ({type(error).__name__})") from None
    except ParseError as error:
        raise UnsafeUpload(f"not well-formed XML ({error})") from None
    return sorted({name for element in root.iter() for name in element.attrib})


class ProvisioningResource(Resource):
    """Section 4.3's paths below the mount point (a leaf: it routes ``postpath`` itself)."""

    isLeaf = True  # noqa: N815 (Twisted's attribute)

    def __init__(
        self,
        repository: ProvisioningRepository,
        database: DatabaseRunner,
        policy: ProvisioningPolicy,
        *,
        clock: Clock,
        nonces: NonceFactory,
        templates: Templates | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._repository = repository
        self._database = database
        self._policy = policy
        self._clock = clock
        self._nonces = nonces
        self._counts = NonceCounts()
        self._templates = templates if templates is not None else Templates.load()
        self._guard = EnumerationGuard(limit=policy.settings.unknown_mac_limit)
        self._pending: set[Deferred[object]] = set()

    # -- twisted.web -------------------------------------------------------------------------

    def render(self, raw: IRequest) -> int:
        request = cast(_Request, raw)
        started = self._clock.seconds()
        finished: list[bool] = []
        request.notifyFinish().addBoth(lambda _: finished.append(True))

        def answer(reply: _Reply) -> _Reply:
            if not finished:
                self._write(request, reply)
            return reply

        def fail(failure: Failure) -> _Reply:
            _log.failure("provisioning request failed", failure=failure)
            return answer(_refusal(500))

        handled: Deferred[_Reply] = Deferred.fromCoroutine(self._handle(request))
        handled.addCallbacks(answer, fail).addCallback(self._after, request, started)
        return NOT_DONE_YET

    def drain(self) -> Deferred[object]:
        """Fires when the background writes (fetch log, last seen) started so far are done."""
        pending = list(self._pending)
        return cast(Deferred[object], DeferredList(pending, consumeErrors=True))

    # -- handling ----------------------------------------------------------------------------

    async def _handle(self, request: _Request) -> _Reply:
        ip = _ip_of(request)
        now = self._clock.seconds()
        policy = self._policy
        if policy.allow_from and not _in_networks(ip, policy.allow_from):
            _log.warn("provisioning request from {remote_ip} refused: not in allow_from", remote_ip=ip)
            return _refusal(403)
        if ip is not None and self._guard.blocked(ip, now):
            return _refusal(429, (b"Retry-After", b"60"))
        method = request.method.decode("ascii", "replace").upper()
        try:
            segments = [segment.decode("utf-8") for segment in request.postpath]
        except UnicodeDecodeError:
            return _refusal(404)
        target = route(method, segments)
        match target.target:
            case Target.NOT_FOUND:
                return _refusal(404)
            case Target.NOT_ALLOWED:
                return _refusal(405, (b"Allow", b"GET, HEAD, PUT"))
            case Target.GENERIC_MASTER:
                body = generic_master(self._templates, policy.site)
                return _Reply(200, body, XML, [(b"Cache-Control", b"no-store")])
            case Target.STATIC:
                return await self._static(target)
            case _:
                pass
        assert target.mac is not None
        device = await self._database.run(self._repository.device, target.mac)
        if device is None:
            if target.target in (Target.MASTER, Target.APPLICATION, Target.CISCO):
                self._background(
                    self._repository.record_sighting, target.mac, self._at(now), ip, self._user_agent(request)
                )
            if ip is not None and self._guard.unknown_mac(ip, now):
                _log.warn(
                    "provisioning: {remote_ip} requested more than {limit} unknown MACs in a minute; "
                    "blocked for a minute",
                    remote_ip=ip,
                    limit=policy.settings.unknown_mac_limit,
                )
            return _refusal(404)
        if not device.enabled:
            return attrs.evolve(_refusal(403), device=device)
        secret = policy.secret_for(device)
        if secret is None and policy.settings.require_credentials and _carries_passwords(target, device):
            _log.warn(
                "provisioning: {path} refused to {remote_ip}: it carries the SIP passwords of {mac} "
                "and the device has no provisioning credentials (set them with device add "
                "--prov-user/--prov-password or provisioning.default_username/default_password; "
                "provisioning.require_credentials = false serves it without)",
                path=request.path.decode("utf-8", "replace"),
                remote_ip=ip,
                mac=device.mac,
            )
            return attrs.evolve(_refusal(403), device=device)
        if secret is not None:
            header = request.getHeader(b"Authorization")
            verdict = verify(
                None if header is None else header.decode("latin-1"),
                method=method,
                uri=request.uri.decode("latin-1"),
                secret=secret,
                nonces=self._nonces,
                counts=self._counts,
                now=now,
            )
            if verdict is not Verdict.ACCEPTED:
                nonce = self._nonces.issue(secret.realm, now)
                value = challenge(secret.realm, nonce, stale=verdict is Verdict.STALE)
                if verdict is Verdict.REJECTED:
                    _log.warn(
                        "provisioning: wrong credentials for {mac} from {remote_ip}",
                        mac=device.mac,
                        remote_ip=ip,
                    )
                reply = _refusal(401, (b"WWW-Authenticate", value.encode("utf-8")))
                reply.device = device
                return reply
        reply = await self._serve(request, target, device, ip, now)
        reply.device = device
        return reply

    async def _serve(
        self, request: _Request, target: Route, device: Device, ip: str | None, now: float
    ) -> _Reply:
        kind = {
            (Target.MASTER, Vendor.POLYCOM): FileKind.POLYCOM_MASTER,
            (Target.APPLICATION, Vendor.POLYCOM): FileKind.POLYCOM_APPLICATION,
            (Target.CISCO, Vendor.CISCO): FileKind.CISCO_PROFILE,
        }.get((target.target, device.vendor))
        if kind is not None:
            profile = render_profile(kind, self._templates, self._policy.site, device)
            for warning in profile.warnings:
                _log.warn("provisioning: {warning}", warning=warning, mac=device.mac)
            return _Reply(200, profile.body, XML, [(b"Cache-Control", b"no-store")], fetched=True)
        if target.target is Target.OVERRIDE and self._policy.settings.serve_overrides:
            assert target.upload is not None
            stored = await self._database.run(self._stored_override, device.mac, target.upload)
            if stored is not None:
                return _Reply(200, stored, XML, [(b"Cache-Control", b"no-store")])
            return _refusal(404)
        if target.target is Target.UPLOAD:
            assert target.upload is not None
            return await self._upload(request, device, target.upload, ip, now)
        return _refusal(404)

    async def _static(self, target: Route) -> _Reply:
        directory = self._policy.static_dir
        if directory is None or target.name is None:
            return _refusal(404)
        body = await self._database.run(_read_file_in, directory, target.name)
        if body is None:
            return _refusal(404)
        return _Reply(200, body, b"application/octet-stream")

    def _stored_override(self, mac: str, kind: UploadKind) -> bytes | None:
        directory = self._policy.upload_dir
        if directory is None:
            return None
        latest = [upload for upload in self._repository.uploads(mac) if upload.kind is kind]
        if not latest:
            return None
        return _read_file_in(directory, latest[-1].stored_path)

    async def _upload(
        self, request: _Request, device: Device, kind: UploadKind, ip: str | None, now: float
    ) -> _Reply:
        policy = self._policy
        if policy.upload_dir is None:
            return _refusal(405, (b"Allow", b"GET, HEAD"))
        limit = policy.settings.upload_max_bytes
        declared = request.getHeader(b"Content-Length")
        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            return _refusal(413)
        body = b""
        if request.content is not None:
            request.content.seek(0)
            body = request.content.read(limit + 1)
        if len(body) > limit:
            return _refusal(413)
        names: list[str] = []
        if kind in _OVERRIDE_KINDS:
            try:
                names = changed_parameters(body)
            except UnsafeUpload as error:
                _log.warn(
                    "provisioning: {kind} upload of {mac} from {remote_ip} refused: {reason}",
                    kind=kind.value,
                    mac=device.mac,
                    remote_ip=ip,
                    reason=str(error),
                )
                return _refusal(400)
        record = await self._database.run(self._store_upload, device.mac, kind, body, self._at(now), ip)
        if kind in _OVERRIDE_KINDS:
            _log.info(
                "provisioning: {mac} uploaded {kind} changing {parameters}",
                mac=device.mac,
                kind=kind.value,
                parameters=names,
            )
        return _Reply(204, upload=record)

    def _store_upload(
        self, mac: str, kind: UploadKind, body: bytes, at: datetime, ip: str | None
    ) -> UploadRecord:
        """Write the file (temporary name, then rename), record it, drop old versions.
        Runs in the pool.  The file is removed again when the database refuses the row."""
        root = self._policy.upload_dir
        assert root is not None
        sha256 = hashlib.sha256(body).hexdigest()
        name = f"{kind.value}-{at:%Y%m%dT%H%M%S%f}-{sha256[:12]}{_UPLOAD_SUFFIX[kind]}"
        directory = root / mac
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        final = directory / name
        partial = directory / f".{name}.part"
        try:
            with open(partial, "xb") as out:
                out.write(body)
            os.replace(partial, final)
        finally:
            partial.unlink(missing_ok=True)
        record = UploadRecord(mac, kind, name, len(body), sha256, f"{mac}/{name}", at, ip)
        try:
            dropped = self._repository.record_upload(record, self._policy.settings.upload_keep)
        except Exception:
            final.unlink(missing_ok=True)
            raise
        for stored in dropped:
            path = _inside(root, stored)
            if path is not None:
                path.unlink(missing_ok=True)
        return record

    # -- output and records ------------------------------------------------------------------

    def _write(self, request: _Request, reply: _Reply) -> None:
        request.setResponseCode(reply.status)
        for name, value in reply.headers:
            request.setHeader(name, value)
        if reply.status != 204:
            request.setHeader(b"Content-Type", reply.content_type)
            request.setHeader(b"Content-Length", str(len(reply.body)).encode("ascii"))
            if request.method != b"HEAD":
                request.write(reply.body)
        request.finish()

    def _after(self, reply: _Reply, request: _Request, started: float) -> None:
        now = self._clock.seconds()
        ip = _ip_of(request)
        agent_text = self._user_agent(request)
        agent = parse_user_agent(agent_text)
        device = reply.device
        path = request.path.decode("utf-8", "replace")[:255]
        duration_ms = max(0, round((now - started) * 1000))
        upload = reply.upload
        _log.info(
            "{method} {path} from {remote_ip}: {status} ({bytes} bytes)",
            mac=None if device is None else device.mac,
            vendor=None if device is None else device.vendor.value,
            model=None if device is None else device.model,
            firmware=agent.firmware,
            method=request.method.decode("ascii", "replace"),
            path=path,
            status=reply.status,
            bytes=len(reply.body),
            remote_ip=ip,
            duration_ms=duration_ms,
            kind=None if upload is None else upload.kind.value,
            size=None if upload is None else upload.size_bytes,
            sha256=None if upload is None else upload.sha256,
        )
        at = self._at(now)
        if device is not None and reply.fetched:
            firmware = agent.firmware if agent.application_stage else None
            self._background(self._repository.record_seen, device.mac, at, ip, agent_text, firmware)
        self._background(
            self._repository.record_fetch,
            FetchRecord(
                at=at,
                mac=None if device is None else device.mac,
                method=request.method.decode("ascii", "replace")[:8],
                path=path,
                status=reply.status,
                bytes=len(reply.body),
                remote_ip=ip,
                user_agent=agent_text,
                duration_ms=duration_ms,
            ),
        )

    def _background(self, f: Callable[P, object], /, *args: P.args, **kwargs: P.kwargs) -> None:
        done = self._database.run(f, *args, **kwargs)
        self._pending.add(done)

        def settle(result: object) -> None:
            self._pending.discard(done)
            if isinstance(result, Failure):
                _log.failure("provisioning: database write failed", failure=result)

        done.addBoth(settle)

    @staticmethod
    def _user_agent(request: _Request) -> str | None:
        value = request.getHeader(b"User-Agent")
        return None if value is None else value.decode("latin-1")[:255]

    @staticmethod
    def _at(now: float) -> datetime:
        return datetime.fromtimestamp(now, UTC)


def _carries_passwords(target: Route, device: Device) -> bool:
    """Whether the file ``target`` names for ``device`` holds SIP digest passwords (the
    Polycom application file and the Cisco profile carry each placed line's)."""
    if target.target not in (Target.APPLICATION, Target.CISCO):
        return False
    return any(placed.line.auth_password for placed in device.lines)


def _inside(root: Path, relative: str) -> Path | None:
    """``root / relative`` when it stays inside ``root`` (stored paths are ours, but a
    database row is not trusted to name a file outside the upload directory)."""
    resolved_root = root.resolve()
    path = (resolved_root / relative).resolve()
    return path if path.is_relative_to(resolved_root) and path != resolved_root else None


def _read_file_in(root: Path, relative: str) -> bytes | None:
    path = _inside(root, relative)
    if path is None or not path.is_file():
        return None
    try:
        return path.read_bytes()
    except OSError:
        return None


def mount(root: Resource, prefix: str, resource: IResource) -> None:
    """Put ``resource`` at ``prefix`` (``/prov`` or ``/a/b``) under ``root``, creating
    intermediate plain resources as needed.  The prefix must not be empty (the ``--http``
    site's root is the RPC tree)."""
    segments = [segment for segment in prefix.strip("/").split("/") if segment]
    if not segments:
        raise ValueError("provisioning path_prefix must name at least one path segment")
    parent = root
    for segment in segments[:-1]:
        key = segment.encode("utf-8")
        child = parent.children.get(key)
        if child is None:
            created = Resource()  # type: ignore[no-untyped-call]
            parent.putChild(key, cast(IResource, created))
            parent = created
        else:
            parent = cast(Resource, child)
    parent.putChild(segments[-1].encode("utf-8"), resource)


DeviceLines = Callable[[str], Awaitable[Sequence[str] | None]]
"""MAC -> the AoRs of the device's lines, None for an unknown device (read off the reactor)."""


def device_lines(repository: SqlProvisioningRepository, pool: DatabasePool) -> DeviceLines:
    def read(mac: str) -> list[str] | None:
        device = repository.device(mac)
        return None if device is None else [placed.line.aor for placed in device.lines]

    async def lines(text: str) -> Sequence[str] | None:
        mac = canonical_mac(text)
        if mac is None:
            return None
        found: list[str] | None = await pool.run(read, mac)
        return found

    return lines
