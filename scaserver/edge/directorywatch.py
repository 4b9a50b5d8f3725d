"""The running server's view of the directory: reloaded when the database says it changed.

The directory (subscribers and their HA1s, trusted peers, shared lines with their members
and aliases) is read at start-up.  Every store function that changes it increments
``directory_generation`` in the same transaction; :class:`DirectoryWatch` reads that one
row every ``directory.poll_interval`` seconds in the database thread pool, and when it
moved, reads the whole directory there too and hands it to ``apply`` on the reactor thread,
in one call: the SIP path never waits on the database.  ``reload()`` does the same at once
(SIGHUP, the ``directory.reload`` RPC).
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from typing_extensions import override

from scaserver.edge.writebehind import Runner
from scaserver.sca.line import LineAlias, SharedLine
from scaserver.sip.digest import Credentials
from scaserver.sip.trust import TrustedPeer
from scaserver.store.directory import directory_generation
from scaserver.store.sql import SqlStore


@attrs.frozen
class Directory:
    """The directory as the database held it at ``generation``."""

    generation: int
    credentials: tuple[Credentials, ...]
    trusted: tuple[TrustedPeer, ...]
    lines: tuple[SharedLine, ...]
    aliases: tuple[LineAlias, ...] = ()


@attrs.frozen
class DirectoryChange:
    """What a reload changed, in counts (never a credential)."""

    generation: int
    subscribers: int
    subscribers_added: int
    subscribers_removed: int
    subscribers_changed: int
    trusted: int
    trusted_added: int
    trusted_removed: int
    lines: int
    lines_added: int
    lines_removed: int
    lines_changed: int

    @classmethod
    def between(cls, before: Directory, after: Directory) -> DirectoryChange:
        old_subs = {(c.username, c.realm.lower()): c for c in before.credentials}
        new_subs = {(c.username, c.realm.lower()): c for c in after.credentials}
        old_peers, new_peers = set(before.trusted), set(after.trusted)
        old_lines = {line.aor: line for line in before.lines}
        new_lines = {line.aor: line for line in after.lines}
        return cls(
            after.generation,
            len(new_subs),
            len(new_subs.keys() - old_subs.keys()),
            len(old_subs.keys() - new_subs.keys()),
            sum(1 for key in new_subs.keys() & old_subs.keys() if new_subs[key] != old_subs[key]),
            len(new_peers),
            len(new_peers - old_peers),
            len(old_peers - new_peers),
            len(new_lines),
            len(new_lines.keys() - old_lines.keys()),
            len(old_lines.keys() - new_lines.keys()),
            sum(1 for aor in new_lines.keys() & old_lines.keys() if new_lines[aor] != old_lines[aor]),
        )

    def as_json(self) -> dict[str, int]:
        return {field.name: getattr(self, field.name) for field in attrs.fields(DirectoryChange)}


def load_directory(store: SqlStore) -> Directory:
    """Read the directory (blocking: in the database pool).  The generation is read first,
    so a change made while the rest is read is seen again by the next poll."""
    generation = directory_generation(store.engine)
    return Directory(
        generation,
        tuple(store.subscribers.load_all()),
        tuple(store.trusted_peers.load_all()),
        tuple(store.lines.load_all()),
        tuple(store.line_aliases.load_all()),
    )


class DirectoryWatch(Service):
    """Polls the directory's generation and swaps a changed directory in.

    ``read_generation`` and ``load`` run in ``pool`` (the database thread pool: they
    block); ``apply`` runs on the reactor thread with the directory loaded.  ``current``
    is the directory the server runs with (the one read at start-up, at first).
    ``interval_s`` 0 turns polling off (``reload()`` still works).  One read at a time:
    a poll while a read is running is skipped.
    """

    _log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        pool: Runner,
        *,
        current: Directory,
        read_generation: Callable[[], int],
        load: Callable[[], Directory],
        apply: Callable[[Directory], None],
        interval_s: float,
    ) -> None:
        self.current = current
        self._pool, self._read_generation, self._load, self._apply = pool, read_generation, load, apply
        self._interval_s = interval_s
        self._loop = LoopingCall(self._tick)
        self._loop.clock = clock
        self._running: Deferred[DirectoryChange | None] | None = None
        self._settling: list[Deferred[None]] = []
        self.reloads = 0

    @override
    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        if self._interval_s > 0:
            self._loop.start(self._interval_s, now=False)

    @override
    def stopService(self) -> None:
        super().stopService()  # type: ignore[no-untyped-call]
        if self._loop.running:
            self._loop.stop()

    def _tick(self) -> None:
        self.poll()  # not returned: the next poll is due on time, whatever this one takes

    def poll(self) -> Deferred[DirectoryChange | None]:
        """Reload when the generation moved; fires with the change, or None when nothing
        changed (or a read is already running, or the database could not be read)."""
        if self._running is not None:
            return succeed(None)
        read: Deferred[int] = self._pool.run(self._read_generation)
        changed: Deferred[DirectoryChange | None] = read.addCallback(self._if_moved)
        return self._guard(changed, "poll")

    def settled(self) -> Deferred[None]:
        """Fires once no poll is running (at once when none is)."""
        if self._running is None:
            return succeed(None)
        waiting: Deferred[None] = Deferred()
        self._settling.append(waiting)
        return waiting

    def reload(self, reason: str) -> Deferred[DirectoryChange]:
        """Read the whole directory now and swap it in, whatever its generation."""
        loaded: Deferred[Directory] = self._pool.run(self._load)
        return loaded.addCallback(self._swap, reason)

    def _if_moved(self, generation: int) -> Deferred[DirectoryChange | None] | None:
        if generation == self.current.generation:
            return None
        changed: Deferred[DirectoryChange | None] = self._pool.run(self._load).addCallback(
            self._swap, "generation changed"
        )
        return changed

    def _guard(self, work: Deferred[DirectoryChange | None], what: str) -> Deferred[DirectoryChange | None]:
        self._running = work

        def done(result: DirectoryChange | Failure | None) -> DirectoryChange | None:
            self._running = None
            waiting, self._settling = self._settling, []
            for settled in waiting:
                settled.callback(None)
            if isinstance(result, Failure):
                self._log.failure(
                    "directory {what} failed; kept the directory loaded before", failure=result, what=what
                )
                return None
            return result

        return work.addBoth(done)

    def _swap(self, directory: Directory, reason: str) -> DirectoryChange:
        change = DirectoryChange.between(self.current, directory)
        self._apply(directory)
        self.current = directory
        self.reloads += 1
        self._log.info(
            "directory reloaded ({reason}): generation {generation}; {subscribers} subscribers"
            " (+{subscribers_added} -{subscribers_removed} ~{subscribers_changed}),"
            " {trusted} trusted peers (+{trusted_added} -{trusted_removed}),"
            " {lines} shared lines (+{lines_added} -{lines_removed} ~{lines_changed})",
            reason=reason,
            **change.as_json(),
        )
        return change
