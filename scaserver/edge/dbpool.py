"""The bounded thread pool that runs blocking database work off the reactor thread.

The store (``scaserver.store.sql``) is synchronous SQLAlchemy Core; the reactor must
never wait on it (STYLE.md P6).  ``DatabasePool`` owns one
``twisted.python.threadpool.ThreadPool`` with at most ``max_threads`` workers (size it
like the engine's connection pool) and hands work to it with
``twisted.internet.threads.deferToThreadPool``, so results come back as Deferreds on the
reactor thread.

The pool is a ``MultiService``: the services that use it (the write-behind queue) are
its children.  It starts its threads before its children and, on stop, waits for every
child's ``stopService`` (the write-behind's final flush) before it stops accepting work
and joins its threads.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ParamSpec, Protocol, TypeVar, cast

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, fail, maybeDeferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from typing_extensions import override

P = ParamSpec("P")
T = TypeVar("T")


class _Child(Protocol):
    """The part of ``IService`` the pool calls on its children."""

    def startService(self) -> None: ...  # noqa: N802 (Twisted's spelling)

    def stopService(self) -> object: ...  # noqa: N802 (Twisted's spelling)


class PoolNotRunningError(Exception):
    """Work was submitted to a ``DatabasePool`` that is not started (or already stopped)."""


class DatabasePool(MultiService):
    """A named, bounded worker pool for database calls.

    ``run(f, *args, **kwargs)`` calls ``f`` in a worker thread and returns a Deferred
    that fires on the reactor thread with its result (or failure).
    """

    _log = Logger()

    def __init__(
        self,
        reactor: IReactorFromThreads,
        *,
        min_threads: int = 1,
        max_threads: int = 4,
        name: str = "scaserver-db",
    ) -> None:
        if min_threads < 0 or max_threads < 1 or min_threads > max_threads:
            raise ValueError(f"invalid thread bounds min={min_threads} max={max_threads}")
        super().__init__()  # type: ignore[no-untyped-call]
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=min_threads, maxthreads=max_threads, name=name)
        self._accepting = False
        self.name = name

    @property
    def max_threads(self) -> int:
        return self._pool.max

    @property
    def busy(self) -> int:
        """Workers currently running a call (for metrics)."""
        return len(self._pool.working)

    @property
    def queued(self) -> int:
        """Calls waiting for a free worker (for metrics)."""
        return self._pool._queue.qsize()

    def add_dependent(self, service: Service) -> None:
        """Make ``service`` (e.g. the write-behind queue) a child: started after the threads,
        stopped, and waited for, before them."""
        self.addService(service)  # type: ignore[no-untyped-call]

    def _children(self) -> list[_Child]:
        return cast(list[_Child], list(self))

    @override
    def startService(self) -> None:
        self._pool.start()
        self._accepting = True
        self.running = True
        for child in self._children():
            child.startService()
        self._log.info(
            "database pool {name} started with up to {max} threads", name=self.name, max=self._pool.max
        )

    @override
    def stopService(self) -> Deferred[None]:
        """Stop the children (waiting for their Deferreds), then the threads."""
        self.running = False
        children: list[Deferred[object]] = [
            maybeDeferred(child.stopService) for child in reversed(self._children())
        ]
        done: Deferred[None] = Deferred()

        def stop_threads(_: object) -> None:
            self._accepting = False
            self._pool.stop()  # lets calls already running finish, then joins the workers
            self._log.info("database pool {name} stopped", name=self.name)
            done.callback(None)

        DeferredList(children, consumeErrors=True).addBoth(stop_threads)
        return done

    def run(self, f: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Deferred[T]:
        if not self._accepting:
            return fail(PoolNotRunningError(f"database pool {self.name} is not running"))
        return deferToThreadPool(self._reactor, self._pool, f, *args, **kwargs)
