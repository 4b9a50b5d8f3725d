"""RFC 4028 session timers as a proxy applies them (section 8), without I/O.

A proxy on the path of a call may ask for a session timer in the initial INVITE
(8.1: insert ``Session-Expires``, or lower one above its own maximum, never below the
``Min-SE`` of the request), and may put ``Session-Expires`` with ``refresher=uac`` in a 2xx
that has none when the caller supports ``timer`` (8.2).  From the 2xx it learns the
session interval; the session is over when no refresh arrives before
``interval - min(32, interval / 3)`` (section 10).
"""

from __future__ import annotations

import enum
from typing import Final, Protocol

import attrs

from scaserver.sip.headers import option_tags
from scaserver.sip.message import Message, Request, Response

__all__ = [
    "Refresher",
    "SessionExpires",
    "SessionTimerPolicy",
    "answer_with_session",
    "expiry_after",
    "offer_with_session",
    "session_of",
]

TIMER_TAG: Final = "timer"


class Refresher(enum.Enum):
    """Who sends the session refreshes (RFC 4028 section 4, ``refresher`` parameter)."""

    UAC = "uac"
    UAS = "uas"


@attrs.frozen
class SessionExpires:
    """A ``Session-Expires`` value: the interval in seconds and the refresher, if named."""

    interval: int
    refresher: Refresher | None = None

    @classmethod
    def parse(cls, value: str) -> SessionExpires | None:
        """``delta-seconds *(;se-params)``; None when unreadable (treated as absent)."""
        head, *params = value.split(";")
        head = head.strip()
        if not head.isdigit():
            return None
        refresher = None
        for param in params:
            name, _, raw = param.partition("=")
            if name.strip().lower() == "refresher":
                try:
                    refresher = Refresher(raw.strip().lower())
                except ValueError:
                    return None
        return cls(int(head), refresher)

    def __str__(self) -> str:
        if self.refresher is None:
            return str(self.interval)
        return f"{self.interval};refresher={self.refresher.value}"


class SessionTimerPolicy(Protocol):
    """What this proxy asks of the calls it applies session timers to (the configured
    :class:`~scaserver.sip.sessiontimer.SessionIntervals`).

    ``session_expires``: the interval inserted, and the largest one let through (8.1);
    ``min_se``: the smallest interval this proxy accepts.
    """

    @property
    def session_expires(self) -> int: ...

    @property
    def min_se(self) -> int: ...


def _session_expires(message: Message) -> SessionExpires | None:
    value = message.headers.get("Session-Expires")
    return None if value is None else SessionExpires.parse(value)


def _min_se(message: Message) -> int:
    value = message.headers.get("Min-SE")
    if value is None:
        return 0
    head = value.split(";", 1)[0].strip()
    return int(head) if head.isdigit() else 0


def _supports_timer(message: Message) -> bool:
    return any(tag.strip().lower() == TIMER_TAG for tag in option_tags(message, "Supported"))


def offer_with_session(request: Request, policy: SessionTimerPolicy) -> Request:
    """The initial INVITE as this proxy forwards it (RFC 4028 8.1).

    Without ``Session-Expires``, one is inserted when the caller supports ``timer`` (a
    caller without it could not be told to refresh, 8.2); the value is the policy's, raised
    to the request's ``Min-SE``.  A ``Session-Expires`` above the policy's is lowered to it,
    never below the request's ``Min-SE``; the ``Min-SE`` is raised to the policy's and never
    lowered.  A proxy does not answer 422 here: the UAs do (8.1).
    """
    floor = max(_min_se(request), policy.min_se)
    present = _session_expires(request)
    if present is None:
        if "Session-Expires" in request.headers or not _supports_timer(request):
            return request
        wanted = SessionExpires(max(policy.session_expires, floor))
    elif present.interval > policy.session_expires:
        wanted = attrs.evolve(present, interval=max(policy.session_expires, _min_se(request)))
        if wanted == present:
            return request
    else:
        return request
    headers = request.headers.set("Session-Expires", str(wanted))
    if _min_se(request) < policy.min_se and wanted.interval >= policy.min_se:
        headers = headers.set("Min-SE", str(policy.min_se))
    return request.with_headers(headers)


def session_of(request: Request, response: Response) -> SessionExpires | None:
    """The session timer a 2xx to ``request`` (an INVITE or UPDATE as forwarded) sets up,
    with its refresher, as the caller sees it; None when the session has no timer.

    A 2xx with ``Session-Expires`` gives it (no refresher named: the UAC, 7.2 of the
    RFC). A 2xx without one gives the request's with ``refresher=uac`` when the caller
    supports ``timer`` (8.2); otherwise there is no session timer.
    """
    if response.status // 100 != 2:
        return None
    answered = _session_expires(response)
    if answered is not None:
        refresher = answered.refresher or Refresher.UAC
        return attrs.evolve(answered, refresher=refresher)
    offered = _session_expires(request)
    if offered is None or not _supports_timer(request):
        return None
    return SessionExpires(offered.interval, Refresher.UAC)


def answer_with_session(request: Request, response: Response) -> Response:
    """The 2xx as this proxy relays it: with ``Session-Expires: N;refresher=uac`` and
    ``Require: timer`` when the UAS did not answer the timer the caller supports (8.2)."""
    if response.status // 100 != 2 or "Session-Expires" in response.headers:
        return response
    session = session_of(request, response)
    if session is None:
        return response
    headers = response.headers.add("Session-Expires", str(session))
    if TIMER_TAG not in (tag.strip().lower() for tag in option_tags(response, "Require")):
        headers = headers.add("Require", TIMER_TAG)
    return response.with_headers(headers)


def expiry_after(interval: float) -> float:
    """Seconds after a refresh when the session is over without another (RFC 4028 section 10)."""
    return interval - min(32.0, interval / 3)
