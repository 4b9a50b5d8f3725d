"""The router as the RFC 4028 session-timer proxy of shared lines' calls: the initial INVITE
of a line's call asks for the proxy's session timer (8.1), its 2xx carries what was agreed
(8.2), and each 2xx to an INVITE or UPDATE tells the SCA engine how long the call's
appearances are guarded (section 10)."""

from __future__ import annotations

import attrs

from scaserver.proxy.sessiontimer import (
    SessionTimerPolicy,
    answer_with_session,
    expiry_after,
    offer_with_session,
    session_of,
)
from scaserver.sca.engine import ScaEngine
from scaserver.sip.actions import EngineAction
from scaserver.sip.keys import ServerKey
from scaserver.sip.message import Request, Response


@attrs.define
class SessionTimers:
    """The INVITEs forwarded with a session timer, by server transaction, until their final
    response.  The policy is read at each call (None: the proxy asks for no session timer)."""

    sca: ScaEngine
    _offers: dict[ServerKey, Request] = attrs.field(factory=dict, init=False)

    def offer(self, request: Request, key: ServerKey, policy: SessionTimerPolicy | None) -> Request:
        """An initial INVITE of a shared line's call with this proxy's session timer asked for
        (RFC 4028 8.1); remembered so that its 2xx can carry it (8.2)."""
        if policy is None or request.method != "INVITE" or not self.sca.is_line_call(request):
            return request
        offered = offer_with_session(request, policy)
        if "Session-Expires" in offered.headers:
            self._offers[key] = offered
        return offered

    def answer(self, transaction: ServerKey, response: Response) -> Response:
        """The response of server transaction ``transaction`` as the offer made makes it."""
        offers = self._offers
        if not offers or transaction not in offers:  # the usual: no offer pending, no get call
            return response
        offered = offers[transaction]
        if response.status >= 200:
            del self._offers[transaction]
        return answer_with_session(offered, response)

    def forget(self, transaction: ServerKey) -> None:
        """Server transaction ``transaction`` ended."""
        if self._offers:  # the usual: none pending, no pop call
            self._offers.pop(transaction, None)

    def learnt(
        self, request: Request, response: Response, now: float, policy: SessionTimerPolicy | None
    ) -> list[EngineAction]:
        """A 2xx to an INVITE or UPDATE of a call: its session timer, set up or refreshed,
        guards the call's appearances (RFC 4028 section 10)."""
        if policy is None or request.method not in ("INVITE", "UPDATE"):
            return []
        if response.status // 100 != 2 or not request.call_id:
            return []
        session = session_of(request, response)
        timeout = None if session is None else expiry_after(session.interval)
        return self.sca.on_session_refreshed(request.call_id, timeout, now)
