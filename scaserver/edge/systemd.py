"""sd_notify(3) for ``Type=notify`` units: READY=1, WATCHDOG=1 and STOPPING=1.

The protocol is one datagram of ``KEY=VALUE`` lines to the UNIX socket named by
``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace).  Without the variable
(not started by systemd) nothing is sent.  Sends are non-blocking: a full socket buffer
loses one message and logs it, the reactor never waits.

READY=1 is sent once the listeners are bound, the start-up restore has run and the
database answered a probe (``ready`` returns a Deferred[bool]; it is asked again every
``retry_s`` until it says yes).  WATCHDOG=1 is sent every half of ``$WATCHDOG_USEC`` (only
when ``$WATCHDOG_PID`` is unset or names this process), from the reactor, so a wedged
reactor stops the pings and systemd restarts the service.  STOPPING=1 when the service
stops.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping
from typing import Final, cast

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from typing_extensions import override

from scaserver.edge.stack import TimerClock

READY_RETRY_S: Final = 1.0


def notify_address(environ: Mapping[str, str]) -> str | None:
    """The socket address of ``$NOTIFY_SOCKET`` (``@`` -> abstract namespace), or None."""
    path = environ.get("NOTIFY_SOCKET", "")
    if not path.startswith(("/", "@")):
        return None
    return "\0" + path[1:] if path.startswith("@") else path


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """Half of ``$WATCHDOG_USEC`` in seconds, when the watchdog is meant for ``pid``."""
    owner = environ.get("WATCHDOG_PID", "")
    if owner and owner != str(pid):
        return None
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2_000_000 if usec > 0 else None


class SystemdNotifier(Service):
    """Sends the service's state to systemd (see the module docstring)."""

    _log = Logger()

    def __init__(
        self,
        clock: TimerClock,
        ready: Callable[[], Deferred[bool]],
        environ: Mapping[str, str] = os.environ,
        *,
        retry_s: float = READY_RETRY_S,
    ) -> None:
        self._clock, self._ready, self._retry_s = clock, ready, retry_s
        self._address = notify_address(environ)
        self._interval = watchdog_interval(environ, os.getpid())
        self._watchdog = LoopingCall(self.notify, "WATCHDOG=1")
        self._watchdog.clock = cast(IReactorTime, clock)
        self._socket: socket.socket | None = None
        self._pending: object = None
        self.ready_sent = False

    def notify(self, message: str) -> None:
        if self._socket is None or self._address is None:
            return
        try:
            self._socket.sendto(message.encode("utf-8"), self._address)
        except OSError as error:  # full buffer (EAGAIN) or systemd gone: this message is lost
            self._log.warn("sd_notify {message} not sent: {error}", message=message, error=str(error))

    @override
    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        if self._address is None:
            return
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._socket.setblocking(False)
        if self._interval is not None:
            self._watchdog.start(self._interval, now=True)
        self._check_ready()

    def _check_ready(self) -> None:
        self._pending = None

        def decided(ready: bool) -> None:
            if not self.running:
                return
            if ready:
                self.ready_sent = True
                self.notify(f"READY=1\nSTATUS=serving\nMAINPID={os.getpid()}")
                self._log.info("sd_notify: READY=1")
            else:
                self.notify("STATUS=waiting for the database")
                self._pending = self._clock.callLater(self._retry_s, self._check_ready)

        def failed(failure: Failure) -> None:
            self._log.failure("readiness check for sd_notify failed", failure=failure)
            if self.running:
                self._pending = self._clock.callLater(self._retry_s, self._check_ready)

        self._ready().addCallbacks(decided, failed)

    @override
    def stopService(self) -> None:
        super().stopService()  # type: ignore[no-untyped-call]
        if self._watchdog.running:
            self._watchdog.stop()
        cancel = getattr(self._pending, "cancel", None)
        if cancel is not None:
            cancel()
        self.notify("STOPPING=1\nSTATUS=stopping")
        if self._socket is not None:
            self._socket.close()
            self._socket = None
