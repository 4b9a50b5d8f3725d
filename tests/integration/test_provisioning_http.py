"""Provisioning over real loopback HTTP (provisioning.md section 4) on SQLite and PostgreSQL:
a Polycom-shaped fetch sequence, a Cisco fetch, digest credentials, refusals, uploads."""

from __future__ import annotations

import hashlib
import os
import socket
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol, cast

import attrs
import treq
from sqlalchemy import Engine, func, select
from twisted.internet import reactor, threads
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from twisted.web.resource import IResource, Resource
from twisted.web.server import Site

from scaserver.edge.dbpool import DatabasePool
from scaserver.edge.provisioning import ProvisioningPolicy, ProvisioningResource, mount
from scaserver.provisioning.access import DEFAULT_REALM, Secret
from scaserver.provisioning.profile import SiteSettings
from scaserver.provisioning.settings import ProvisioningSettings
from scaserver.sip.digest import Algorithm, NonceFactory, compute_response
from scaserver.sip.headers import parse_auth
from scaserver.store import tables
from scaserver.store.engine import make_engine
from scaserver.store.provisioning import (
    Device,
    DeviceLine,
    Family,
    LineIdentity,
    SqlProvisioningRepository,
    UploadKind,
)
from tests.conftest import twisted_fixture, twisted_test

VVX_MAC = "0004f2a1b2c3"
CISCO_MAC = "5006ab123456"
LINE = LineIdentity("sip:2001@pbx.example.com", "2001", "Xy7&kq2", "Front Desk")
POLYCOM_UA = "FileTransport PolycomVVX-VVX_411-UA/5.9.0.9373 Type/Application"
SITE = SiteSettings(sip_host="sca.example.net", prov_base_url="https://prov.example.com/prov")
HeaderMap = dict[str | bytes, list[str | bytes]]


class _Address(Protocol):
    port: int


class _Listening(Protocol):
    def getHost(self) -> _Address: ...  # noqa: N802

    def stopListening(self) -> Deferred[None]: ...  # noqa: N802


class _Reactor(Protocol):
    def listenTCP(self, port: int, factory: object, *, interface: str) -> _Listening: ...  # noqa: N802

    def seconds(self) -> float: ...


REACTOR = cast(_Reactor, reactor)


@attrs.define
class Rig:
    engine: Engine
    repo: SqlProvisioningRepository
    pool: DatabasePool
    resource: ProvisioningResource
    listening: _Listening
    uploads: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.listening.getHost().port}"

    async def request(
        self, method: str, path: str, *, headers: HeaderMap | None = None, data: bytes | None = None
    ) -> tuple[int, Any, bytes]:
        response = await treq.request(
            method, self.base + path, headers=headers or {}, data=data, persistent=False
        )
        body: bytes = await treq.content(response)
        await self.resource.drain()
        return response.code, response.headers, body

    async def digest(
        self, method: str, path: str, user: str, password: str, *, data: bytes | None = None
    ) -> tuple[int, Any, bytes]:
        """Fetch with a challenge round trip, answering it as a phone would."""
        status, headers, body = await self.request(method, path, data=data)
        if status != 401:
            return status, headers, body
        auth = parse_auth(headers.getRawHeaders("WWW-Authenticate")[0])
        realm, nonce = auth.param("realm"), auth.param("nonce")
        assert realm is not None and nonce is not None
        ha1 = Secret.from_password(user, realm, password).ha1
        response = compute_response(
            Algorithm.MD5, ha1, nonce=nonce, nc="00000001", cnonce="abc", qop="auth", method=method, uri=path
        )
        value = (
            f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{path}", '
            f'response="{response}", qop=auth, nc=00000001, cnonce="abc", algorithm=MD5'
        )
        return await self.request(method, path, headers={"Authorization": [value]}, data=data)

    def count(self, table: Any) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def seed(repo: SqlProvisioningRepository) -> None:
    repo.save_line(LINE)
    secret = Secret.from_password("vvx", DEFAULT_REALM, "phone-pass")
    repo.save_device(
        Device(
            VVX_MAC,
            Family.POLYCOM_UCS,
            "VVX411",
            prov_username=secret.username,
            prov_realm=secret.realm,
            prov_ha1=secret.ha1,
            lines=(DeviceLine(1, LINE, 1, 2, 1),),
        )
    )
    repo.save_device(
        Device(CISCO_MAC, Family.CISCO_MPP, "CP-8841-3PCC", lines=(DeviceLine(1, LINE, 1, 2, 1),))
    )


@twisted_fixture
async def rig(migrated_db_url: str, tmp_path: Path) -> AsyncIterator[Rig]:
    engine = make_engine(migrated_db_url)
    with engine.begin() as conn:
        conn.execute(tables.sca_line.insert().values(aor=LINE.aor, appearances=2))
    repo = SqlProvisioningRepository(engine)
    seed(repo)
    pool = DatabasePool(cast(IReactorFromThreads, reactor), max_threads=2)
    pool.startService()
    uploads = tmp_path / "uploads"
    policy = ProvisioningPolicy(
        SITE,
        ProvisioningSettings(
            upload_dir=str(uploads), upload_max_bytes=1024, upload_keep=2, unknown_mac_limit=5
        ),
    )
    resource = ProvisioningResource(
        repo, pool, policy, clock=REACTOR, nonces=NonceFactory(b"s" * 32, os.urandom)
    )
    root = Resource()  # type: ignore[no-untyped-call]
    mount(root, "/prov", cast(IResource, resource))
    site = Site(root)  # type: ignore[no-untyped-call]
    site.displayTracebacks = False
    listening = REACTOR.listenTCP(0, site, interface="127.0.0.1")
    try:
        yield Rig(engine, repo, pool, resource, listening, uploads)
    finally:
        await listening.stopListening()
        await pool.stopService()
        engine.dispose()


def with_table(policy: ProvisioningPolicy, **changes: object) -> ProvisioningPolicy:
    """``policy`` with these ``[provisioning]`` values changed."""
    return attrs.evolve(policy, settings=attrs.evolve(policy.settings, **changes))  # type: ignore[arg-type]


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.exists() else []


# -- fetches -----------------------------------------------------------------------------------


@twisted_test
async def test_polycom_sequence_unknown_generic_then_own_files(rig: Rig) -> None:
    ua: HeaderMap = {"User-Agent": [POLYCOM_UA]}
    status, _, body = await rig.request("GET", "/prov/0004f2ffffff.cfg", headers=ua)
    assert (status, body) == (404, b"Not Found\n")
    [sighting] = rig.repo.sightings()
    assert (sighting.mac, sighting.request_count, sighting.last_user_agent) == ("0004f2ffffff", 1, POLYCOM_UA)

    status, headers, body = await rig.request("GET", "/prov/000000000000.cfg")
    assert status == 200
    assert headers.getRawHeaders("Cache-Control") == ["no-store"]
    assert ET.fromstring(body).attrib["CONFIG_FILES"] == "[PHONE_MAC_ADDRESS]-sca.cfg"

    status, _, body = await rig.digest("GET", f"/prov/{VVX_MAC}.cfg", "vvx", "phone-pass")
    assert status == 200
    assert ET.fromstring(body).attrib["CONFIG_FILES"] == f"{VVX_MAC}-sca.cfg"

    status, headers, body = await rig.digest("GET", f"/prov/{VVX_MAC}-sca.cfg", "vvx", "phone-pass")
    assert status == 200
    assert headers.getRawHeaders("Content-Type") == ["application/xml"]
    reg = ET.fromstring(body).find("reg")
    assert reg is not None
    assert reg.attrib["reg.1.type"] == "shared"
    assert reg.attrib["reg.1.address"] == "2001@pbx.example.com"
    assert reg.attrib["reg.1.server.1.address"] == "sca.example.net"
    assert reg.attrib["reg.1.auth.password"] == "Xy7&kq2"

    fetches = rig.repo.fetches(VVX_MAC)
    assert [(f.path, f.status) for f in fetches] == [
        (f"/prov/{VVX_MAC}.cfg", 401),
        (f"/prov/{VVX_MAC}.cfg", 200),
        (f"/prov/{VVX_MAC}-sca.cfg", 401),
        (f"/prov/{VVX_MAC}-sca.cfg", 200),
    ]
    device = rig.repo.device(VVX_MAC)
    assert device is not None
    assert device.last_seen_ip == "127.0.0.1"
    assert rig.count(tables.provisioning_fetches) == 6


@twisted_test
async def test_profiles_with_passwords_need_credentials_unless_turned_off(rig: Rig) -> None:
    for path in (f"/prov/{CISCO_MAC}.xml", f"/prov/spa{CISCO_MAC}.xml"):
        status, _, body = await rig.request("GET", path)
        assert (status, body) == (403, b"Forbidden\n")
    assert [(f.path, f.status) for f in rig.repo.fetches(CISCO_MAC)] == [
        (f"/prov/{CISCO_MAC}.xml", 403),
        (f"/prov/spa{CISCO_MAC}.xml", 403),
    ]
    rig.resource._policy = with_table(rig.resource._policy, default_username="site", default_password="pw")
    status, _, body = await rig.digest("GET", f"/prov/{CISCO_MAC}.xml", "site", "pw")
    assert status == 200 and b"Xy7&amp;kq2" in body


@twisted_test
async def test_a_configured_shared_line_is_shared_in_the_fetched_profile(rig: Rig) -> None:
    private = LineIdentity("sip:3001@pbx.example.com", "3001", "pw3001", "Back Office")
    rig.repo.save_line(private)
    rig.repo.save_device(
        Device("0004f2000001", Family.POLYCOM_UCS, "VVX411", lines=(DeviceLine(1, private, 1, 1, 1),))
    )
    policy = with_table(rig.resource._policy, default_username="site", default_password="pw")
    rig.resource._policy = policy
    _, _, body = await rig.digest("GET", "/prov/0004f2000001-sca.cfg", "site", "pw")
    reg = ET.fromstring(body).find("reg")
    assert reg is not None and reg.attrib["reg.1.type"] == "private"  # no sca_line row
    site = attrs.evolve(SITE, shared_lines=(("sip:3001@pbx.example.com", 2),))
    rig.resource._policy = attrs.evolve(policy, site=site)
    _, _, body = await rig.digest("GET", "/prov/0004f2000001-sca.cfg", "site", "pw")
    reg = ET.fromstring(body).find("reg")
    assert reg is not None
    assert (reg.attrib["reg.1.type"], reg.attrib["reg.1.bargeInEnabled"]) == ("shared", "0")


@twisted_test
async def test_cisco_without_device_credentials_is_served_both_spellings(rig: Rig) -> None:
    rig.resource._policy = with_table(rig.resource._policy, require_credentials=False)
    for path in (f"/prov/{CISCO_MAC}.xml", f"/prov/spa{CISCO_MAC}.xml"):
        status, headers, body = await rig.request("GET", path)
        assert status == 200
        assert headers.getRawHeaders("Cache-Control") == ["no-store"]
        profile = {e.tag: e.text for e in ET.fromstring(body)}
        assert profile["Profile_Rule"] == "https://prov.example.com/prov/$MA.xml"
        assert profile["Proxy_1_"] == "sca.example.net:5060"
        assert profile["Share_Ext_1_"] == "Yes"


@twisted_test
async def test_missing_and_wrong_credentials_get_a_challenge(rig: Rig) -> None:
    status, headers, body = await rig.request("GET", f"/prov/{VVX_MAC}-sca.cfg")
    assert (status, body) == (401, b"Unauthorized\n")
    auth = parse_auth(headers.getRawHeaders("WWW-Authenticate")[0])
    assert (auth.scheme, auth.param("realm"), auth.param("qop")) == ("Digest", DEFAULT_REALM, "auth")
    status, _, body = await rig.digest("GET", f"/prov/{VVX_MAC}-sca.cfg", "vvx", "wrong")
    assert (status, body) == (401, b"Unauthorized\n")
    status, _, _ = await rig.digest("GET", f"/prov/{VVX_MAC}-sca.cfg", "intruder", "phone-pass")
    assert status == 401
    status, _, _ = await rig.request(
        "GET", f"/prov/{VVX_MAC}-sca.cfg", headers={"Authorization": ["Basic dnZ4OnBob25lLXBhc3M="]}
    )
    assert status == 401


@twisted_test
async def test_site_default_credentials_apply_to_devices_without_their_own(rig: Rig) -> None:
    policy = ProvisioningPolicy(
        SITE, ProvisioningSettings(default_username="site", default_password="site-pass")
    )
    resource = ProvisioningResource(
        rig.repo, rig.pool, policy, clock=REACTOR, nonces=NonceFactory(b"t" * 32, os.urandom)
    )
    rig.resource = resource
    root = Resource()  # type: ignore[no-untyped-call]
    mount(root, "/a/prov", cast(IResource, resource))
    listening = REACTOR.listenTCP(0, Site(root), interface="127.0.0.1")  # type: ignore[no-untyped-call]
    old = rig.listening
    rig.listening = listening
    try:
        status, _, _ = await rig.request("GET", f"/a/prov/{CISCO_MAC}.xml")
        assert status == 401
        status, _, _ = await rig.digest("GET", f"/a/prov/{CISCO_MAC}.xml", "site", "site-pass")
        assert status == 200
        status, _, _ = await rig.digest("GET", f"/a/prov/{VVX_MAC}.cfg", "site", "site-pass")
        assert status == 401  # the device's own credentials win
    finally:
        rig.listening = old
        await listening.stopListening()


@twisted_test
async def test_unknown_and_malformed_macs_and_other_paths_get_the_same_404(rig: Rig) -> None:
    for path in (
        "/prov/5006abffffff.xml",
        "/prov/0004F2A1B2C3.cfg",
        "/prov/zz04f2a1b2c3.cfg",
        "/prov/index.html",
        "/prov/",
        f"/prov/sub/{VVX_MAC}.cfg",
        "/prov/000000000000-sca.cfg",
        f"/prov/{CISCO_MAC}-phone.cfg",  # overrides are not served by default
    ):
        status, _, body = await rig.request("GET", path)
        assert (status, body) == (404, b"Not Found\n"), path


@twisted_test
async def test_path_traversal_attempts_are_404(rig: Rig) -> None:
    secret = rig.uploads.parent / "secret.cfg"
    secret.write_bytes(b"do not serve")
    for path in (
        "/prov/%2e%2e%2fsecret.cfg",
        "/prov/..%2Fsecret.cfg",
        f"/prov/..%2f{VVX_MAC}.cfg",
        "/prov/%2e%2e",
        f"/prov/{VVX_MAC}.cfg%00.png",
        "/prov/..%5csecret.cfg",
    ):
        status, _, body = await rig.request("GET", path)
        assert (status, body) == (404, b"Not Found\n"), path

    def raw(request: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", rig.listening.getHost().port), timeout=10) as sock:
            sock.sendall(request)
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)

    for target in (b"/prov/../secret.cfg", b"/prov/../../etc/passwd", b"/prov/./../prov/x"):
        answer = await threads.deferToThread(raw, b"GET " + target + b" HTTP/1.0\r\n\r\n")
        assert answer.startswith(b"HTTP/1.0 404") or answer.startswith(b"HTTP/1.1 404"), answer[:40]
        assert b"do not serve" not in answer
    status, _, _ = await rig.digest("PUT", "/prov/..%2F..%2Fevil-app.log", "vvx", "phone-pass", data=b"x")
    assert status == 404
    assert files_under(rig.uploads) == []


@twisted_test
async def test_disabled_device_is_403(rig: Rig) -> None:
    device = rig.repo.device(CISCO_MAC)
    assert device is not None
    rig.repo.save_device(attrs.evolve(device, enabled=False))
    status, _, body = await rig.request("GET", f"/prov/{CISCO_MAC}.xml")
    assert (status, body) == (403, b"Forbidden\n")


@twisted_test
async def test_allow_list_refuses_other_sources(rig: Rig) -> None:
    rig.resource._policy = with_table(rig.resource._policy, allow_from=("10.0.0.0/8",))
    status, _, body = await rig.request("GET", "/prov/000000000000.cfg")
    assert (status, body) == (403, b"Forbidden\n")


@twisted_test
async def test_enumeration_guard_answers_429_after_the_limit(rig: Rig) -> None:
    for n in range(6):
        status, _, _ = await rig.request("GET", f"/prov/0004f2ffff0{n}.cfg")
        assert status == 404
    status, headers, _ = await rig.request("GET", "/prov/000000000000.cfg")
    assert status == 429
    assert headers.getRawHeaders("Retry-After") == ["60"]


@twisted_test
async def test_a_line_change_is_in_the_next_fetch(rig: Rig) -> None:
    rig.resource._policy = with_table(rig.resource._policy, require_credentials=False)
    _, _, before = await rig.request("GET", f"/prov/{CISCO_MAC}.xml")
    assert {e.tag: e.text for e in ET.fromstring(before)}["Password_1_"] == "Xy7&kq2"
    rig.repo.save_line(attrs.evolve(LINE, auth_password="n3w<pass>", display_name="Reception"))
    _, _, after = await rig.request("GET", f"/prov/{CISCO_MAC}.xml")
    profile = {e.tag: e.text for e in ET.fromstring(after)}
    assert (profile["Password_1_"], profile["Display_Name_1_"]) == ("n3w<pass>", "Reception")


# -- uploads -----------------------------------------------------------------------------------


@twisted_test
async def test_uploads_are_stored_and_only_the_newest_kept(rig: Rig) -> None:
    bodies = [b"boot one\n", b"boot two\n", b"boot three\n"]
    for body in bodies:
        status, _, _ = await rig.digest("PUT", f"/prov/{VVX_MAC}-app.log", "vvx", "phone-pass", data=body)
        assert status == 204
    records = rig.repo.uploads(VVX_MAC)
    assert [r.sha256 for r in records] == [hashlib.sha256(b).hexdigest() for b in bodies[1:]]
    assert all(r.kind is UploadKind.APP_LOG for r in records)
    stored = files_under(rig.uploads)
    assert sorted(p.read_bytes() for p in stored) == sorted(bodies[1:])
    assert all(p.parent == rig.uploads / VVX_MAC for p in stored)

    override = b'<?xml version="1.0"?><PHONE_CONFIG><ALL call.shared.oneTouchResume="1"/></PHONE_CONFIG>'
    status, _, _ = await rig.digest("PUT", f"/prov/{VVX_MAC}-phone.cfg", "vvx", "phone-pass", data=override)
    assert status == 204
    status, _, _ = await rig.digest("GET", f"/prov/{VVX_MAC}-phone.cfg", "vvx", "phone-pass")
    assert status == 404  # serve_overrides is off: central configuration stays authoritative


@twisted_test
async def test_oversize_upload_is_413_and_leaves_nothing_behind(rig: Rig) -> None:
    status, _, body = await rig.digest(
        "PUT", f"/prov/{VVX_MAC}-app.log", "vvx", "phone-pass", data=b"x" * 1025
    )
    assert (status, body) == (413, b"Payload Too Large\n")
    assert files_under(rig.uploads) == []
    assert rig.repo.uploads(VVX_MAC) == []
    status, _, _ = await rig.digest("PUT", f"/prov/{VVX_MAC}-app.log", "vvx", "phone-pass", data=b"x" * 1024)
    assert status == 204


@twisted_test
async def test_unauthenticated_or_unknown_uploads_store_nothing(rig: Rig) -> None:
    status, _, _ = await rig.request("PUT", f"/prov/{VVX_MAC}-app.log", data=b"log")
    assert status == 401
    status, _, _ = await rig.request("PUT", "/prov/0004f2ffffff-app.log", data=b"log")
    assert status == 404
    status, headers, _ = await rig.request("PUT", f"/prov/{VVX_MAC}-sca.cfg", data=b"x")
    assert status == 405
    assert headers.getRawHeaders("Allow") == ["GET, HEAD, PUT"]
    assert files_under(rig.uploads) == []
    assert rig.count(tables.provisioning_uploads) == 0


#: A Polycom override in UTF-16 declaring an internal entity: a byte-level "<!ENTITY" search
#: does not see it, and the standard library parser expands it.
ENTITY_OVERRIDE = (
    '<?xml version="1.0" encoding="UTF-16"?>\n'
    '<!DOCTYPE PHONE_CONFIG [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>\n'
    '<PHONE_CONFIG><ALL reg.1.address="&lol2;"/></PHONE_CONFIG>'
).encode("utf-16")


@twisted_test
async def test_an_override_with_an_entity_is_refused_logged_and_stores_nothing(rig: Rig) -> None:
    rig.resource._policy = with_table(rig.resource._policy, serve_overrides=True)
    plain = '<?xml version="1.0" encoding="UTF-16"?><PHONE_CONFIG><ALL up.x="1"/></PHONE_CONFIG>'
    status, _, _ = await rig.digest(
        "PUT", f"/prov/{VVX_MAC}-phone.cfg", "vvx", "phone-pass", data=plain.encode("utf-16")
    )
    assert status == 204
    events: list[LogEvent] = []
    observer = cast(ILogObserver, events.append)
    globalLogPublisher.addObserver(observer)
    try:
        status, _, body = await rig.digest(
            "PUT", f"/prov/{VVX_MAC}-phone.cfg", "vvx", "phone-pass", data=ENTITY_OVERRIDE
        )
        not_xml, _, _ = await rig.digest("PUT", f"/prov/{VVX_MAC}-web.cfg", "vvx", "phone-pass", data=b"<a")
    finally:
        globalLogPublisher.removeObserver(observer)
    assert (status, body, not_xml) == (400, b"Bad Request\n", 400)
    refusals = [formatEvent(e) for e in events if "refused" in (e.get("log_format") or "")]
    assert refusals == [
        f"provisioning: phone-override upload of {VVX_MAC} from 127.0.0.1 refused: "
        "XML with a document type declaration (<!DOCTYPE PHONE_CONFIG>)",
        f"provisioning: web-override upload of {VVX_MAC} from 127.0.0.1 refused: "
        "not well-formed XML (unclosed token: line 1, column 0)",
    ]
    assert all("\n" not in line for line in refusals)
    # Nothing is lost and nothing unsafe is kept: the earlier override is still the one served.
    [upload] = rig.repo.uploads(VVX_MAC)
    assert upload.kind is UploadKind.PHONE_OVERRIDE
    assert [p.read_bytes() for p in files_under(rig.uploads)] == [plain.encode("utf-16")]
    status, _, served = await rig.digest("GET", f"/prov/{VVX_MAC}-phone.cfg", "vvx", "phone-pass")
    assert (status, served) == (200, plain.encode("utf-16"))


@twisted_test
async def test_served_overrides_when_enabled(rig: Rig) -> None:
    rig.resource._policy = with_table(rig.resource._policy, serve_overrides=True)
    status, _, _ = await rig.request("GET", f"/prov/{CISCO_MAC}-web.cfg")
    assert status == 404
    status, _, _ = await rig.request("PUT", f"/prov/{CISCO_MAC}-web.cfg", data=b"<WEB a.b='1'/>")
    assert status == 204
    status, _, body = await rig.request("GET", f"/prov/{CISCO_MAC}-web.cfg")
    assert (status, body) == (200, b"<WEB a.b='1'/>")
