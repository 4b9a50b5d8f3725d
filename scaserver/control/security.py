"""``sec.bans`` and ``sec.unban``: the bans in force, and lifting one (README "Security").

Over the ``SecurityControl`` seam: the composition root implements it over the source guard.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import attrs

from scaserver.control.jsonrpc import JsonValue
from scaserver.control.registry import Arguments, Param, Registry, Scope


@attrs.frozen
class BanView:
    """One ban in force: ``expires`` is epoch seconds."""

    source: str
    reason: str
    since: float
    expires: float
    offence: int


class SecurityControl(Protocol):
    def bans(self) -> Sequence[BanView]:
        """The bans in force, soonest to end first."""
        ...

    def unban(self, source: str) -> bool:
        """Lift the ban on ``source``; False when it was not banned."""
        ...


class NoSecurity:
    """No guard (``security.enabled = false``): nothing is ever banned."""

    def bans(self) -> Sequence[BanView]:
        return ()

    def unban(self, source: str) -> bool:
        return False


def register_security(registry: Registry, source: SecurityControl) -> None:
    """Add ``sec.bans`` and ``sec.unban``."""

    @registry.register(
        "sec.bans",
        scope=Scope.READ,
        doc="Lists the banned source addresses with reason, start, expiry (epoch s) and offence count.",
    )
    async def bans(args: Arguments) -> JsonValue:
        return [
            {
                "source": ban.source,
                "reason": ban.reason,
                "since": round(ban.since, 3),
                "expires": round(ban.expires, 3),
                "offence": ban.offence,
            }
            for ban in source.bans()
        ]

    @registry.register(
        "sec.unban",
        Param("source", doc="the banned IP address"),
        scope=Scope.ADMIN,
        doc="Lifts the ban on a source address; returns whether it was banned.",
    )
    async def unban(args: Arguments) -> JsonValue:
        return source.unban(args.text("source").strip())
