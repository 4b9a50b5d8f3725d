"""Which file a provisioning request names (provisioning.md section 4.3), decided from the
method and the path segments below the prefix, before anything is looked up.

Only a single path segment of an exact, known shape is ever routed; anything else (more
segments, ``..``, separators or NUL inside a decoded segment, over-long names, malformed
MACs) is ``NOT_FOUND``, so a file name on disk is never built from request text.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from typing import Final

import attrs

from scaserver.provisioning.mac import ZERO_MAC
from scaserver.store.provisioning import UploadKind

MAX_SEGMENT: Final = 64


class Target(enum.Enum):
    GENERIC_MASTER = "generic-master"  # GET 000000000000.cfg
    MASTER = "master"  # GET <mac>.cfg (Polycom master; Yealink profile)
    APPLICATION = "application"  # GET <mac>-sca.cfg
    CISCO = "cisco"  # GET <mac>.xml, spa<mac>.xml
    OVERRIDE = "override"  # GET <mac>-phone.cfg, <mac>-web.cfg
    UPLOAD = "upload"  # PUT <mac>-phone.cfg, -web.cfg, -app.log, -boot.log
    STATIC = "static"  # GET licence, directory, firmware, images
    NOT_ALLOWED = "not-allowed"  # PUT of anything else: 405
    NOT_FOUND = "not-found"


@attrs.frozen
class Route:
    target: Target
    mac: str | None = None
    upload: UploadKind | None = None
    name: str | None = None  # the file name for STATIC


_HEX: Final = "[0-9a-f]{12}"
_SUFFIX_KIND: Final = {
    "-phone.cfg": UploadKind.PHONE_OVERRIDE,
    "-web.cfg": UploadKind.WEB_OVERRIDE,
    "-app.log": UploadKind.APP_LOG,
    "-boot.log": UploadKind.BOOT_LOG,
}
_UPLOAD: Final = re.compile(rf"({_HEX})(-phone\.cfg|-web\.cfg|-app\.log|-boot\.log)")
_MASTER: Final = re.compile(rf"({_HEX})\.cfg")
_APPLICATION: Final = re.compile(rf"({_HEX})-sca\.cfg")
_CISCO: Final = re.compile(rf"(?:spa)?({_HEX})\.xml")
_STATIC: Final = re.compile(
    r"(?:[0-9a-f]{12}-license\.cfg|[0-9a-f]{12}-directory\.xml|[A-Za-z0-9_\-]{1,40}\.sip\.ld|sip\.ld"
    r"|[A-Za-z0-9_\-]{1,48}\.(?:bmp|jpg|png))"
)

NOT_FOUND: Final = Route(Target.NOT_FOUND)


def route(method: str, segments: Sequence[str]) -> Route:
    """The route of ``method`` on the decoded path ``segments`` below the prefix.

    MACs in paths are taken in lower case only: phones request lower-case names (section 1.2,
    ``$MA`` in 1.3) and one spelling per file keeps the names unambiguous.
    """
    if len(segments) != 1:
        return NOT_FOUND
    name = segments[0]
    if not name or len(name) > MAX_SEGMENT or name in (".", "..") or any(c in name for c in "/\\\x00"):
        return NOT_FOUND
    if method == "PUT":
        match = _UPLOAD.fullmatch(name)
        if match is None or match.group(1) == ZERO_MAC:
            return Route(Target.NOT_ALLOWED)
        return Route(Target.UPLOAD, match.group(1), _SUFFIX_KIND[match.group(2)])
    if method not in ("GET", "HEAD"):
        return Route(Target.NOT_ALLOWED)
    if name == f"{ZERO_MAC}.cfg":
        return Route(Target.GENERIC_MASTER)
    for pattern, target in (
        (_MASTER, Target.MASTER),
        (_APPLICATION, Target.APPLICATION),
        (_CISCO, Target.CISCO),
    ):
        match = pattern.fullmatch(name)
        if match is not None:
            return NOT_FOUND if match.group(1) == ZERO_MAC else Route(target, match.group(1))
    match = _UPLOAD.fullmatch(name)
    if match is not None and match.group(2).endswith(".cfg") and match.group(1) != ZERO_MAC:
        return Route(Target.OVERRIDE, match.group(1), _SUFFIX_KIND[match.group(2)])
    if _STATIC.fullmatch(name):
        return Route(Target.STATIC, name=name)
    return NOT_FOUND
