"""Vendor, model and firmware from a provisioning request's User-Agent (provisioning.md
sections 1.2 and 1.3).  For logging and ``firmware_seen`` only: never for authorisation."""

from __future__ import annotations

import re
from typing import Final

import attrs

_POLYCOM: Final = re.compile(r"FileTransport Polycom(\w+)-(\w+)-UA/([\w.]+)(.*)")
_CISCO: Final = re.compile(r"Cisco/([\w\-]+?)-([\w.()\-]+?)(?: \(|$)")


@attrs.frozen
class UserAgent:
    vendor: str | None = None
    model: str | None = None
    firmware: str | None = None
    application_stage: bool = True


def parse_user_agent(text: str | None) -> UserAgent:
    """``FileTransport PolycomVVX-VVX_411-UA/5.9.0.9373 Type/Application`` ->
    (polycom, VVX_411, 5.9.0.9373); ``Cisco/SPA508G-7.4.4 (...)`` -> (cisco, SPA508G, 7.4.4).

    Polycom's boot ROM / updater stage (``Type/Updater``) is not the application's version
    (section 1.2): ``application_stage`` is False for it.
    """
    if not text:
        return UserAgent()
    match = _POLYCOM.match(text)
    if match is not None:
        return UserAgent("polycom", match.group(2), match.group(3), "Type/Updater" not in match.group(4))
    match = _CISCO.match(text)
    if match is not None:
        return UserAgent("cisco", match.group(1), match.group(2))
    return UserAgent()
