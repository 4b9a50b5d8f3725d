"""``directory.reload``: read the subscribers, trusted peers and shared lines from the
database now (README "The operator's first day"), rather than at the next poll.

Over the ``DirectoryControl`` seam: the composition root implements it over the edge's
directory watch.  The answer is counts, never a credential.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from scaserver.control.jsonrpc import JsonValue, ServerFailureError
from scaserver.control.registry import Arguments, Registry, Scope


class DirectoryControl(Protocol):
    async def reload(self) -> Mapping[str, int]:
        """Reload the directory; what it holds now and what changed, in counts."""
        ...


class NoDirectory:
    """A server without a database directory: nothing to reload."""

    async def reload(self) -> Mapping[str, int]:
        raise ServerFailureError("no directory to reload")


def register_directory(registry: Registry, directory: DirectoryControl) -> None:
    """Add ``directory.reload``."""

    @registry.register(
        "directory.reload",
        scope=Scope.ADMIN,
        doc="Reads the subscribers, trusted peers and shared lines from the database now;"
        " returns the counts held and changed.",
    )
    async def reload(args: Arguments) -> JsonValue:
        return dict(await directory.reload())
