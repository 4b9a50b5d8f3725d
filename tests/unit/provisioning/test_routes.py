"""Routing of provisioning paths (provisioning.md section 4.3), MACs and User-Agents."""

from __future__ import annotations

import pytest

from scaserver.provisioning.mac import canonical_mac
from scaserver.provisioning.routes import NOT_FOUND, Route, Target, route
from scaserver.provisioning.useragent import UserAgent, parse_user_agent
from scaserver.store.provisioning import UploadKind

MAC = "0004f2a1b2c3"


@pytest.mark.parametrize(
    ("method", "name", "expected"),
    [
        ("GET", "000000000000.cfg", Route(Target.GENERIC_MASTER)),
        ("GET", f"{MAC}.cfg", Route(Target.MASTER, MAC)),
        ("HEAD", f"{MAC}.cfg", Route(Target.MASTER, MAC)),
        ("GET", f"{MAC}-sca.cfg", Route(Target.APPLICATION, MAC)),
        ("GET", f"{MAC}.xml", Route(Target.CISCO, MAC)),
        ("GET", f"spa{MAC}.xml", Route(Target.CISCO, MAC)),
        ("GET", f"{MAC}-phone.cfg", Route(Target.OVERRIDE, MAC, UploadKind.PHONE_OVERRIDE)),
        ("GET", f"{MAC}-web.cfg", Route(Target.OVERRIDE, MAC, UploadKind.WEB_OVERRIDE)),
        ("PUT", f"{MAC}-phone.cfg", Route(Target.UPLOAD, MAC, UploadKind.PHONE_OVERRIDE)),
        ("PUT", f"{MAC}-web.cfg", Route(Target.UPLOAD, MAC, UploadKind.WEB_OVERRIDE)),
        ("PUT", f"{MAC}-app.log", Route(Target.UPLOAD, MAC, UploadKind.APP_LOG)),
        ("PUT", f"{MAC}-boot.log", Route(Target.UPLOAD, MAC, UploadKind.BOOT_LOG)),
        ("PUT", f"{MAC}.cfg", Route(Target.NOT_ALLOWED)),
        ("PUT", "000000000000-app.log", Route(Target.NOT_ALLOWED)),
        ("POST", f"{MAC}.cfg", Route(Target.NOT_ALLOWED)),
        ("DELETE", f"{MAC}-app.log", Route(Target.NOT_ALLOWED)),
        ("GET", f"{MAC}-license.cfg", Route(Target.STATIC, name=f"{MAC}-license.cfg")),
        ("GET", "000000000000-directory.xml", Route(Target.STATIC, name="000000000000-directory.xml")),
        ("GET", "sip.ld", Route(Target.STATIC, name="sip.ld")),
        ("GET", "3111-40450-001.sip.ld", Route(Target.STATIC, name="3111-40450-001.sip.ld")),
        ("GET", "000000000000.xml", NOT_FOUND),
        ("GET", "0004F2A1B2C3.cfg", NOT_FOUND),
        ("GET", "0004f2a1b2c.cfg", NOT_FOUND),
        ("GET", f"{MAC}-app.log", NOT_FOUND),
        ("GET", "..", NOT_FOUND),
        ("GET", ".", NOT_FOUND),
        ("GET", "", NOT_FOUND),
        ("GET", f"../{MAC}.cfg", NOT_FOUND),
        ("GET", f"..\\{MAC}.cfg", NOT_FOUND),
        ("GET", f"{MAC}.cfg\x00.png", NOT_FOUND),
        ("GET", "x" * 65, NOT_FOUND),
        ("PUT", f"../{MAC}-app.log", NOT_FOUND),
    ],
)
def test_route(method: str, name: str, expected: Route) -> None:
    assert route(method, [name]) == expected


@pytest.mark.parametrize("segments", [[], ["a", f"{MAC}.cfg"], ["..", f"{MAC}.cfg"], [f"{MAC}.cfg", ""]])
def test_only_one_segment_is_ever_routed(segments: list[str]) -> None:
    assert route("GET", segments) == NOT_FOUND


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("00:04:F2:AA:BB:CC", "0004f2aabbcc"),
        ("0004.f2aa.bbcc", "0004f2aabbcc"),
        ("0004F2AABBCC", "0004f2aabbcc"),
        ("00-04-f2-aa-bb-cc", "0004f2aabbcc"),
        (" 0004f2aabbcc ", "0004f2aabbcc"),
        ("0004f2aabbc", None),
        ("00:04:f2:aa:bb:cc:dd", None),
        ("0004f2aabbcg", None),
        ("00:04f2:aa:bb:cc", None),
        ("", None),
    ],
)
def test_canonical_mac(text: str, expected: str | None) -> None:
    assert canonical_mac(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "FileTransport PolycomVVX-VVX_411-UA/5.9.0.9373 Type/Application",
            UserAgent("polycom", "VVX_411", "5.9.0.9373", True),
        ),
        (
            "FileTransport PolycomSoundPointIP-SPIP_550-UA/4.0.15.1047 (SN:0004f2aabbcc) Type/Application",
            UserAgent("polycom", "SPIP_550", "4.0.15.1047", True),
        ),
        (
            "FileTransport PolycomSoundStationIP-SSIP_6000-UA/5.0.3.1667 Type/Updater",
            UserAgent("polycom", "SSIP_6000", "5.0.3.1667", False),
        ),
        ("Cisco/SPA508G-7.4.4 (0002FDFF2103)(CBT141400UK)", UserAgent("cisco", "SPA508G", "7.4.4")),
        ("curl/8.0", UserAgent()),
        (None, UserAgent()),
    ],
)
def test_parse_user_agent(text: str | None, expected: UserAgent) -> None:
    assert parse_user_agent(text) == expected
