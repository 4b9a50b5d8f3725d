"""The fact log: the facts an operator follows, logged with structured fields (STYLE section 6).

Pure modules do not log; their decisions are the events they publish, and this is where those
events become log lines (the security lines in the fixed form contrib/fail2ban matches).
"""

from __future__ import annotations

from twisted.logger import Logger, LogLevel

from scaserver.events import EventBus
from scaserver.guard.sources import Ban
from scaserver.push.pnparams import (
    masked_pn_params,
)
from scaserver.registrar.binding import (
    Binding,
    BindingAdded,
    BindingExpired,
    BindingRemoved,
)
from scaserver.registrar.midregevents import UpstreamAuthNeeded
from scaserver.router.authentication import AuthenticationRejected
from scaserver.router.transport import LargeRequestOverUdp
from scaserver.sca.appearance import AppearanceChanged, TriggerIgnored
from scaserver.sca.subscription import (
    SubscribeRefused,
    Subscription,
    SubscriptionAdded,
    SubscriptionRemoved,
)
from scaserver.sip.digest import (
    RejectCause,
)
from scaserver.sip.endpoint import MessageDropped, RequestRefused


class FactLog:
    """Logs the facts an operator follows: appearance transitions, subscriptions, bindings,
    drops and refusals (structured fields, STYLE section 6)."""

    _log = Logger(namespace="scaserver.facts")

    def __init__(self, minimum: LogLevel = LogLevel.debug) -> None:
        self.minimum = minimum  # the configured level: lines below it would be filtered out

    def attach(self, bus: EventBus) -> None:
        """Subscribes the handlers whose lines the configured level lets through: a fact only
        ever logged at info (or debug) costs nothing per message when the level is above it."""
        if self.minimum <= LogLevel.debug:
            bus.subscribe(TriggerIgnored, self._ignored)
        if self.minimum <= LogLevel.info:
            bus.subscribe(AppearanceChanged, self._appearance)
            bus.subscribe(SubscriptionAdded, lambda e: self._subscription("added", e.subscription, ""))
            bus.subscribe(
                SubscriptionRemoved, lambda e: self._subscription("removed", e.subscription, e.reason)
            )
            bus.subscribe(SubscribeRefused, self._subscribe_refused)
            bus.subscribe(BindingAdded, lambda e: self._binding("added", e.binding))
            bus.subscribe(BindingRemoved, lambda e: self._binding("removed", e.binding))
            bus.subscribe(BindingExpired, lambda e: self._binding("expired", e.binding))
        bus.subscribe(MessageDropped, self._dropped)
        bus.subscribe(RequestRefused, self._refused)
        bus.subscribe(LargeRequestOverUdp, self._large_over_udp)
        bus.subscribe(AuthenticationRejected, self._auth)
        bus.subscribe(Ban, self._ban)
        bus.subscribe(UpstreamAuthNeeded, self._upstream_auth)

    def _upstream_auth(self, e: UpstreamAuthNeeded) -> None:
        self._log.error(
            "upstream registration of {aor} needs credentials: {status} {detail}",
            aor=e.aor,
            status=e.status,
            detail=e.detail,
        )

    def _appearance(self, e: AppearanceChanged) -> None:
        self._log.info(
            "appearance {line} #{index} {from_state} -> {to_state} ({rule}) owner={owner} call={call_id}",
            line=e.line,
            index=e.index,
            from_state=e.from_state.value,
            to_state=e.to_state.value,
            rule=e.rule,
            owner=None if e.owner is None else masked_pn_params(e.owner),
            call_id=e.call_id,
            at=e.time,
        )

    def _ignored(self, e: TriggerIgnored) -> None:
        self._log.debug(
            "appearance {line} #{index}: {trigger} ignored in {state}",
            line=e.line,
            index=e.index,
            trigger=e.trigger.value,
            state=e.state.value,
        )

    def _subscription(self, what: str, sub: Subscription, reason: str) -> None:
        self._log.info(
            "subscription {what}: {event} {aor} from {subscriber} {reason}",
            what=what,
            event=sub.event.value,
            aor=sub.aor,
            subscriber=masked_pn_params(sub.subscriber),
            reason=reason,
        )

    def _subscribe_refused(self, e: SubscribeRefused) -> None:
        self._log.info(
            "SUBSCRIBE to {aor} from {identity} refused {status}: {detail}",
            aor=e.aor,
            identity=e.identity,
            status=e.status,
            detail=e.detail,
        )

    def _binding(self, what: str, binding: Binding) -> None:
        self._log.info(
            "binding {what}: {aor} -> {contact}",
            what=what,
            aor=binding.aor,
            contact=masked_pn_params(binding.contact),
        )

    def _dropped(self, e: MessageDropped) -> None:
        self._log.warn("message from {peer} dropped: {reason}", peer=str(e.peer), reason=e.reason)

    def _large_over_udp(self, e: LargeRequestOverUdp) -> None:
        self._log.warn(
            "{method} of {size} bytes to {peer} sent over UDP (RFC 3261 18.1.1 wants TCP): {reason}",
            method=e.method,
            size=e.size,
            peer=str(e.peer),
            reason=e.reason,
        )

    def _refused(self, e: RequestRefused) -> None:
        if e.status < 500 and self.minimum > LogLevel.info:
            return  # an info line the configured level filters out: not built (every 401)
        emit = self._log.warn if e.status >= 500 else self._log.info
        emit(
            "{method} from {peer} refused {status} ({cause}): {detail} call-id={call_id}",
            method=e.method,
            peer=str(e.peer),
            status=e.status,
            cause=e.cause,
            detail=e.detail,
            call_id=e.call_id,
        )

    def _auth(self, e: AuthenticationRejected) -> None:
        if e.cause in (RejectCause.CHALLENGE, RejectCause.STALE):
            if self.minimum > LogLevel.info:
                return  # filtered out at this level: not built (every challenge)
            self._log.info(
                "{method} from {peer} refused {status} ({reason}, stale={stale})",
                method=e.method,
                peer=str(e.peer),
                status=e.status,
                reason=e.cause.value,
                stale=e.stale,
            )
            return
        # The security log line, one per failure, in the fixed form contrib/fail2ban matches.
        self._log.warn(
            "security: auth failure source={source} user={user} realm={realm} reason={reason}"
            " method={method} status={status}",
            source=e.peer.host,
            user=printable(e.username) if e.username else "-",
            realm=printable(e.realm) or "-",
            reason=e.cause.value,
            method=e.method,
            status=e.status,
        )

    def _ban(self, e: Ban) -> None:
        self._log.warn(
            "security: ban source={source} reason={reason} seconds={seconds} offence={offence}",
            source=e.host,
            reason=e.reason.value,
            seconds=round(e.duration_s),
            offence=e.offence,
        )


def printable(text: str) -> str:
    """``text`` for a one-line log field: spaces and control characters escaped, so a
    username cannot forge the fields that follow it."""
    return "".join(
        char if char.isprintable() and not char.isspace() else f"\\x{ord(char):02x}" for char in text
    )
