"""The SCA engine: subscriptions, appearances and NOTIFYs of shared lines (sca.md).

:class:`ScaEngine` is a pure, mutable state machine (STYLE P1).  The dispatcher
feeds it parsed messages, the proxy tells it what it forwarded, the edge hands
back timers and NOTIFY outcomes; every method takes ``now`` and returns the
:data:`~scaserver.sip.actions.EngineAction` list to run: ``Respond`` to a
SUBSCRIBE, ``SendRequest`` for NOTIFYs (context :class:`NotifyContext`),
``StartTimer``/``CancelTimer`` and ``Deliver`` of facts
(:class:`~scaserver.sca.appearance.AppearanceChanged`, ``TriggerIgnored``,
``Subscription*``).

Entry points and when to call them:

* :meth:`ScaEngine.on_subscribe`: a SUBSCRIBE for ``call-info``/``line-seize``
  (section 3), after digest authentication (``identity``).  Ask
  :meth:`ScaEngine.needs_identity` first whether an in-dialog one must be
  authenticated.

Authorisation (3.2 row 6).  An in-dialog SUBSCRIBE is matched to its dialog
before anything else (481 when there is none); the dialog itself is the
authorisation when it comes from the subscription's flow, otherwise the sender
must be the identity that owns the subscription (403).  An initial SUBSCRIBE
is for the line's listed members and the AoR's own user (digest user = AoR
user; without authentication the From AoR = the AoR) and for trusted peers;
everything else gets the same 403 whether the AoR exists, is a line or not.
An empty member list lists nobody: a line without members, or an AoR that is
no provisioned line, is for its own user only.  Each identity (trusted peers
excepted) holds at most ``max_subscriptions_per_identity`` live subscriptions.

Subscriptions are told apart by dialog, owner and flow, never by Contact
alone: an out-of-dialog SUBSCRIBE replaces (3.5) only the subscription of the
same owner, contact and flow.  A subscription removed because its NOTIFY
failed is remembered for ``reboot_memory_s`` when its contact owned an
appearance, so that the phone's next initial ``call-info`` SUBSCRIBE is taken
as the reboot of 3.5.
* :meth:`ScaEngine.check_request`: before the proxy forwards an initial INVITE;
  says whether it is a pickup from hold to re-target (7.1) or to refuse (7.2, 7.6).
* :meth:`ScaEngine.on_request_forwarded`, :meth:`on_response_forwarded`,
  :meth:`on_ack`: the call signalling the proxy relays (section 2, 6.3-6.5).
* :meth:`ScaEngine.on_notify_response`, :meth:`on_notify_failed`: outcome of
  our NOTIFY client transactions (section 4).
* :meth:`ScaEngine.on_timer`: a timer this engine started fired (section 9).
* :meth:`ScaEngine.restore`: state loaded from the store at start-up (10.2).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Hashable, Iterable
from typing import Any, Final

import attrs

from scaserver.sca.answers import AnswerTracker
from scaserver.sca.appearance import (
    ADMIN_SET_TARGETS,
    Appearance,
    AppearanceState,
    Step,
    Trigger,
)
from scaserver.sca.board import TTL_TIMER, AppearanceBoard, AppearanceKey, AppearanceTtls
from scaserver.sca.callinfo import AppearanceInfo, CallInfo, CallInfoError
from scaserver.sca.calls import CallTracker, RequestPlan
from scaserver.sca.line import SharedLine, canonical_aor, host_part
from scaserver.sca.outbox import Content, NotifyContext, NotifyOutbox, Pending
from scaserver.sca.registry import EXPIRY_TIMER, SubscriptionRegistry
from scaserver.sca.subscription import (
    DialogKey,
    Identity,
    Package,
    ReplacementKey,
    SubscribeRefused,
    Subscription,
    SubscriptionAdded,
    SubscriptionKey,
    SubscriptionRefreshed,
)
from scaserver.sip.actions import Deliver, EngineAction, Respond, StartTimer
from scaserver.sip.errors import (
    BadEvent,
    BadRequest,
    CallDoesNotExist,
    Forbidden,
    IntervalTooBrief,
    MalformedMessage,
    NotFound,
    ServerInternalError,
    SipError,
    TemporarilyUnavailable,
)
from scaserver.sip.headers import Star, cseq, expires, from_addr, parse_contacts, parse_event, to_addr
from scaserver.sip.message import Headers, Peer, Request, Response
from scaserver.sip.responses import make_response, response_for
from scaserver.sip.uri import SipUri

#: The engine's interface; the parts of the engine live in registry, outbox and calls.
__all__ = [
    "EXPIRY_TIMER",
    "TTL_TIMER",
    "AppearanceError",
    "AppearanceKey",
    "EngineSettings",
    "NotifyContext",
    "RequestPlan",
    "ScaEngine",
]

ALLOW_EVENTS: Final = "call-info, line-seize"


class MissingEvent(SipError, status=400, reason="Missing Event"):
    """A SUBSCRIBE without an Event header (sca.md 3.2 row 2)."""


class MissingCallInfo(SipError, status=400, reason="Missing Call-Info"):
    """A line-seize SUBSCRIBE without a Call-Info header (3.2 row 9)."""


class InvalidCallInfo(SipError, status=400, reason="Invalid Call-Info"):
    """A line-seize SUBSCRIBE whose Call-Info or appearance-index cannot be used (3.2 row 10)."""


class AppearanceError(Exception):
    """A management request (sca.md section 11) that names no usable appearance or state."""


@attrs.frozen
class EngineSettings:
    """The SCA settings of sca.md section 12 that the engine itself uses.

    ``contact``: the URI of this server for Contact headers (``server_address``);
    ``call_info_uri``: ``domain``, ``aor`` or a fixed URI for the ``<>`` of
    Call-Info (5.1); ``aliases``: number/URI -> line AoR pairs (Q26);
    ``max_appearances``: default appearances per line, 0 = unlimited;
    ``max_subscriptions_per_identity``: live subscriptions one identity may hold (0 = no
    cap); ``reboot_memory_s``: how long a subscription lost to a failed NOTIFY is
    remembered for reboot detection.
    ``early_ttl``: how long a call not answered yet keeps its appearance with no
    signalling (O20, I8: longer than the proxy's timer C); ``max_call_age``: the
    stale-call sweep, how long a call in progress keeps its appearance with no
    signalling (Q18, section 9), 0 = never swept; ``alerting_state``: inbound calls
    show ``alerting`` (I1), on by default as BroadWorks does, off for phones that
    mis-render it; ``decline_ends_ringing``: a 6xx from one member of a line ends the
    ringing of the others (RFC 3261 16.7 step 6), off by default: BroadWorks declines
    for that member only.
    """

    contact: str = "sip:sca.invalid"
    call_info_max_expires: int = 3600
    line_seize_max_expires: int = 15
    min_expires: int = 0
    call_info_ok_code: int = 202
    max_appearances: int = 0
    provisioned_only: bool = False
    alerting_state: bool = True
    decline_ends_ringing: bool = False
    call_info_uri: str = "domain"
    seized_ttl: float = 120.0
    active_pending_ttl: float = 35.0
    early_ttl: float = 200.0
    max_call_age: float = 0.0
    seize_retry_after: int = 1
    server_id: int = 0
    contact_fallback: str = ""
    aliases: tuple[tuple[str, str], ...] = ()
    max_subscriptions_per_identity: int = 32
    reboot_memory_s: float = 3600.0


def _identity_of(request: Request, user: str | None) -> Identity | None:
    """The identity of a SUBSCRIBE given no other: the digest user, else its From AoR."""
    if user is not None:
        return Identity.authenticated(user)
    try:
        aor = canonical_aor(str(from_addr(request).uri))
    except MalformedMessage:
        return None
    return None if aor is None else Identity.unauthenticated(aor)


@attrs.define
class ScaEngine:
    """The SCA application logic of sca.md sections 3-9, without I/O."""

    settings: EngineSettings = attrs.field(factory=EngineSettings)
    tag_factory: Callable[[], str] = attrs.field(default=lambda: secrets.token_hex(8))
    _lines: dict[str, SharedLine] = attrs.field(factory=dict, init=False)
    _registry: SubscriptionRegistry = attrs.field(init=False)
    _board: AppearanceBoard = attrs.field(init=False)
    _outbox: NotifyOutbox = attrs.field(init=False)
    _calls: CallTracker = attrs.field(init=False)
    _answers: AnswerTracker = attrs.field(init=False)
    _aliases: dict[str, str] = attrs.field(factory=dict, init=False)

    def __attrs_post_init__(self) -> None:
        self._aliases = dict(self.settings.aliases)
        self._registry = SubscriptionRegistry(
            self.settings.max_subscriptions_per_identity, self.settings.reboot_memory_s
        )
        settings = self.settings
        ttls = AppearanceTtls(
            settings.seized_ttl, settings.active_pending_ttl, settings.early_ttl, settings.max_call_age
        )
        self._board = AppearanceBoard(ttls)
        self._outbox = NotifyOutbox(self._registry, self.settings.contact, self._render, self._lost)
        self._calls = CallTracker(
            self._board,
            self._alias,
            self.is_sca,
            self.line,
            self._seize_ended,
            alerting_state=settings.alerting_state,
            contact_fallback=settings.contact_fallback,
        )
        self._answers = AnswerTracker(self._calls)

    # Lines.

    def provision(self, lines: Iterable[SharedLine]) -> None:
        """Replace the provisioned lines (sca.md 3.2 rows 6-7, 12)."""
        self._lines = {line.aor: line for line in lines}

    def provisioned(self) -> list[SharedLine]:
        """The provisioned lines (configuration and database)."""
        return list(self._lines.values())

    def line(self, aor: str) -> SharedLine:
        """The provisioned line, or an on-the-fly line with the default settings."""
        found = self._lines.get(aor)
        return found if found is not None else SharedLine(aor, self.settings.max_appearances)

    def is_sca(self, aor: str) -> bool:
        """An AoR is an SCA line while provisioned, subscribed to call-info, or in use (3.6)."""
        if aor in self._lines or self._board.in_use(aor):
            return True
        return self._registry.has_call_info(aor)

    def _alias(self, aor: str | None) -> str | None:
        if aor is None:
            return None
        return self._aliases.get(aor, aor)

    # Read access (RPC, metrics).

    def subscriptions(self) -> list[Subscription]:
        return self._registry.all()

    def subscription(self, key: SubscriptionKey) -> Subscription | None:
        return self._registry.get(key)

    def appearances(self, aor: str | None = None) -> list[Appearance]:
        """In-use appearances, by line then index."""
        return self._board.appearances(aor)

    def appearance(self, aor: str, index: int) -> Appearance | None:
        return self._board.appearance(aor, index)

    # Call-Info rendering (section 5.1).

    def _info_uri(self, aor: str) -> str:
        mode = self.settings.call_info_uri
        if mode == "domain":
            return "sip:" + host_part(aor)
        if mode == "aor":
            return aor
        return mode

    def full_state(self, aor: str) -> str:
        """The full-state Call-Info value of a line: in-use appearances and the idle wildcard."""
        uri = self._info_uri(aor)
        entries = [
            AppearanceInfo(uri, app.index, app.state, app.remote_uri) for app in self._board.appearances(aor)
        ]
        entries.append(AppearanceInfo(uri, None, AppearanceState.IDLE))
        return CallInfo(tuple(entries)).render()

    def _index_info(self, aor: str, index: int) -> str:
        return AppearanceInfo(self._info_uri(aor), index).render()

    # SUBSCRIBE (section 3).

    def on_subscribe(
        self,
        request: Request,
        transaction: Hashable,
        now: float,
        *,
        peer: Peer | None = None,
        authenticated_user: str | None = None,
        identity: Identity | None = None,
    ) -> list[EngineAction]:
        """Handle a SUBSCRIBE in the check order of sca.md 3.2; errors become their response.

        ``identity`` is who sent it; when None it is ``authenticated_user``, else the From AoR
        (authentication off).  Refusals are delivered as :class:`SubscribeRefused`.
        """
        who = identity if identity is not None else _identity_of(request, authenticated_user)
        try:
            checked = self._check_subscribe(request, now, who, peer)
        except SipError as error:
            aor = canonical_aor(request.uri) if not isinstance(error, CallDoesNotExist) else None
            refused = SubscribeRefused(aor, who.name if who else "", error.status, error.detail)
            return [Respond(transaction, response_for(request, error)), Deliver(refused)]
        out: list[EngineAction] = []
        self._accept_subscribe(checked, request=request, transaction=transaction, now=now, peer=peer, out=out)
        self._flush(now, out)
        return out

    def needs_identity(self, request: Request, peer: Peer) -> bool:
        """Whether an in-dialog SUBSCRIBE of a known subscription comes from another flow than
        the subscription's, so that its sender must prove it is the owner (authenticate)."""
        try:
            sender, target = from_addr(request), to_addr(request)
        except MalformedMessage:
            return False
        if not target.tag or not sender.tag or not request.call_id:
            return False
        sub = self._registry.by_dialog(DialogKey(request.call_id, sender.tag, target.tag))
        return sub is not None and sub.peer != peer

    def _check_subscribe(
        self, request: Request, now: float, identity: Identity | None, peer: Peer | None
    ) -> _Checked:
        event_text = request.headers.get("Event")
        if event_text is None:  # row 2
            raise MissingEvent("SUBSCRIBE without Event")
        allow = Headers.of(("Allow-Events", ALLOW_EVENTS))
        try:  # row 3
            package_name = parse_event(event_text).package.lower()
        except MalformedMessage as error:
            raise BadEvent(f"unreadable Event {event_text!r}", headers=allow) from error
        try:
            package = Package(package_name)
        except ValueError as error:
            raise BadEvent(f"event package {package_name!r} is not served", headers=allow) from error
        # Row 4: dialog headers, Request-URI, exactly one Contact.
        call_id = request.call_id
        if not call_id:
            raise BadRequest("missing Call-ID")
        sequence = cseq(request)
        if sequence.method != "SUBSCRIBE":
            raise BadRequest("CSeq method is not SUBSCRIBE")
        sender = from_addr(request)
        if not sender.tag:
            raise BadRequest("From without tag")
        target = to_addr(request)
        found = parse_contacts(request.headers.values("Contact"))
        if isinstance(found, Star) or len(found) != 1 or not isinstance(found[0].uri, SipUri):
            raise BadRequest("a SUBSCRIBE needs exactly one SIP Contact")
        subscriber = str(found[0].uri)
        existing: Subscription | None = None
        if target.tag:  # the dialog first (row 11), then whether its sender may use it
            existing = self._registry.by_dialog(DialogKey(call_id, sender.tag, target.tag))
            if existing is None:
                raise CallDoesNotExist("no such subscription dialog")
            aor: str | None = existing.aor
        else:
            aor = self._alias(canonical_aor(request.uri))
        if aor is None:
            raise BadRequest("the Request-URI names no SIP user")
        requested = expires(request)  # row 5
        line = self.line(aor)
        if existing is not None:
            self._authorise_dialog(existing, identity, peer)
        elif not self._may_use(aor, identity):  # row 6: the same 403 for every AoR
            raise Forbidden(f"{identity.name if identity else 'nobody'} may not subscribe to {aor}")
        if self.settings.provisioned_only and aor not in self._lines:  # row 7
            raise NotFound(f"{aor} is not a shared line")
        minimum = self.settings.min_expires
        if requested is not None and 0 < requested < minimum:  # row 8
            raise IntervalTooBrief(
                f"Expires {requested} < {minimum}", headers=Headers.of(("Min-Expires", str(minimum)))
            )
        maximum = (
            self.settings.call_info_max_expires
            if package is Package.CALL_INFO
            else self.settings.line_seize_max_expires
        )
        granted = maximum if requested is None else min(requested, maximum)
        index = 0
        if package is Package.LINE_SEIZE:
            lines = request.headers.lines("Call-Info")
            if not lines:  # row 9
                raise MissingCallInfo("line-seize SUBSCRIBE without Call-Info")
            try:  # row 10
                info = CallInfo.parse(lines).first()
            except CallInfoError as error:
                raise InvalidCallInfo(str(error)) from error
            if info is not None:
                if info.index is None:
                    raise InvalidCallInfo("appearance-index=* in a line-seize SUBSCRIBE")
                index = info.index
        if existing is not None and sequence.number < existing.subscribe_cseq:
            raise ServerInternalError("SUBSCRIBE CSeq lower than the last one (RFC 3261 12.2.2)")
        owner = identity.name if identity is not None else ""
        if existing is not None and existing.owner:
            owner = existing.owner
        flow = peer if peer is not None or existing is None else existing.peer
        replacement = ReplacementKey(aor, package, owner, subscriber, flow)
        if existing is None and granted > 0:
            self._registry.check_cap(replacement, identity)
        if package is Package.LINE_SEIZE and existing is None and granted > 0:  # row 12
            index = self._allocate_seize(line, replacement, index)
        return _Checked(
            package=package,
            aor=aor,
            subscriber=subscriber,
            call_id=call_id,
            from_tag=sender.tag,
            to_tag=target.tag,
            from_uri=str(sender.uri),
            to_uri=str(target.uri),
            cseq=sequence.number,
            granted=granted,
            index=index,
            existing=existing,
            replacement=replacement,
        )

    def _may_use(self, aor: str, identity: Identity | None) -> bool:
        """Row 6 for an initial SUBSCRIBE: trusted peers, the AoR's own user, listed members."""
        if identity is None:
            return False
        if identity.trusted:
            return True
        line = self._lines.get(aor)
        if identity.user is not None:
            own = aor.partition(":")[2].partition("@")[0] == identity.user
            return own or (line is not None and line.lists(user=identity.user))
        if identity.aor is not None:
            return identity.aor == aor or (line is not None and line.lists(aor=identity.aor))
        return False

    def _authorise_dialog(self, sub: Subscription, identity: Identity | None, peer: Peer | None) -> None:
        """An in-dialog SUBSCRIBE is the dialog's when it comes from the subscription's flow, or
        from its owner; a subscription with no recorded owner accepts whoever may use its AoR."""
        if peer == sub.peer:
            return
        if identity is not None and identity.name == sub.owner:
            return
        if not sub.owner and self._may_use(sub.aor, identity):
            return
        who = identity.name if identity is not None else "nobody"
        raise Forbidden(f"{who} from {peer} does not own the subscription of {sub.subscriber} to {sub.aor}")

    def _allocate_seize(self, line: SharedLine, replacement: ReplacementKey, wanted: int) -> int:
        """The index an initial line-seize gets (3.7 step 2), or 480 + Retry-After (row 12, O2)."""
        busy = TemporarilyUnavailable(
            f"no appearance {wanted or 'free'} on {line.aor}",
            headers=Headers.of(("Retry-After", str(self.settings.seize_retry_after))),
        )
        own = self._own_seize(replacement)
        if own is not None and wanted in (0, own.index):
            return own.index  # a phone re-seizing out of dialog (Q2) keeps its index
        if wanted > 0:
            current = self._board.appearance(line.aor, wanted)
            if not line.allows_index(wanted) or current is not None:
                raise busy  # O2; 7.3: an index in any non-idle state is busy
            return wanted
        free = self._lowest_free(line)
        if free is None:
            raise busy
        return free

    def _own_seize(self, replacement: ReplacementKey) -> Appearance | None:
        """The appearance seized by the line-seize subscription ``replacement`` replaces (Q2)."""
        sub = self._registry.by_replacement(replacement)
        if sub is None:
            return None
        app = self.appearance(sub.aor, sub.index)
        if app is not None and app.state is AppearanceState.SEIZED and app.owner == sub.subscriber:
            return app
        return None

    def incoming_index(self, aor: str, call_id: str) -> int | None:
        """The appearance an incoming call to line ``aor`` shows on: the one it alerts on
        already, else the lowest free one it will take (push-and-parking.md 6.11 ``call.line``)."""
        for app in self._board.of_call(call_id):
            if app.line == aor:
                return app.index
        return self._lowest_free(self.line(aor))

    def ringing_call_info(self, request: Request) -> str | None:
        """The Call-Info for a branch of an initial INVITE to a shared line: the index the call
        rings on, ``<sip:host>;appearance-index=N`` (BroadWorks: the member's phone shows the
        call on that line key and answers with it, I3), or None for any other request."""
        if request.method != "INVITE" or not request.call_id:
            return None
        try:
            sender, target = from_addr(request), to_addr(request)
        except MalformedMessage:
            return None
        line = self._alias(canonical_aor(str(target.uri)))
        if target.tag is not None or line is None or not self.is_sca(line):
            return None
        if self._alias(canonical_aor(str(sender.uri))) == line:
            return None  # a call within the line (a pickup, 7.1): no new appearance
        index = self.incoming_index(line, request.call_id)
        return None if index is None else self._index_info(line, index)

    def _lowest_free(self, line: SharedLine, preferred: int = 0) -> int | None:
        return self._board.lowest_free(line, preferred)

    def _accept_subscribe(
        self,
        checked: _Checked,
        *,
        request: Request,
        transaction: Hashable,
        now: float,
        peer: Peer | None,
        out: list[EngineAction],
    ) -> None:
        record_route = tuple(request.headers.values("Record-Route"))
        ok = self.settings.call_info_ok_code if checked.package is Package.CALL_INFO else 200
        existing = checked.existing
        local_tag = checked.to_tag or self.tag_factory()
        response_headers = Headers.of(
            ("Event", checked.package.value),
            ("Expires", str(checked.granted)),
            ("Contact", f"<{self.settings.contact}>"),
            ("Allow-Events", ALLOW_EVENTS),
        )
        out.append(
            Respond(transaction, make_response(request, ok, headers=response_headers, to_tag=local_tag))
        )
        if checked.granted == 0:
            self._unsubscribe(
                checked, local_tag=local_tag, record_route=record_route, peer=peer, now=now, out=out
            )
        elif existing is not None:
            self._refresh(existing, checked, record_route=record_route, peer=peer, now=now, out=out)
        else:
            self._add(checked, local_tag=local_tag, record_route=record_route, peer=peer, now=now, out=out)

    def _refresh(
        self,
        existing: Subscription,
        checked: _Checked,
        *,
        record_route: tuple[str, ...],
        peer: Peer | None,
        now: float,
        out: list[EngineAction],
    ) -> None:
        """An in-dialog SUBSCRIBE with Expires > 0 (3.5); a new flow (the owner authenticated
        from another address) becomes the subscription's."""
        sub = attrs.evolve(
            existing,
            expires=now + checked.granted,
            subscribe_cseq=checked.cseq,
            record_route=record_route or existing.record_route,
            peer=peer or existing.peer,
            owner=checked.replacement.owner,
        )
        self._store(sub)
        out.append(Deliver(SubscriptionRefreshed(sub)))
        out.append(StartTimer(sub.key, EXPIRY_TIMER, float(checked.granted)))
        if sub.event is Package.CALL_INFO:
            self._enqueue(sub, Pending(Content.FULL_STATE, force=True), now, out)
            return
        self._enqueue(sub, Pending(Content.INDEX, force=True), now, out)
        own = self.appearance(sub.aor, sub.index)
        if own is not None and own.state is AppearanceState.SEIZED and own.owner == sub.subscriber:
            out += self._board.touch(own, now)

    def _add(
        self,
        checked: _Checked,
        *,
        local_tag: str,
        record_route: tuple[str, ...],
        peer: Peer | None,
        now: float,
        out: list[EngineAction],
    ) -> None:
        """An initial SUBSCRIBE; it replaces the subscription of the same owner, contact and
        flow without a terminating NOTIFY (3.5, Q2)."""
        replaced = self._registry.by_replacement(checked.replacement)
        if replaced is not None:
            self._remove(replaced, "replaced", out)
            self._drop_dialog(replaced)
        sub = Subscription(
            subscriber=checked.subscriber,
            aor=checked.aor,
            event=checked.package,
            expires=now + checked.granted,
            call_id=checked.call_id,
            from_tag=checked.from_tag,
            to_tag=local_tag,
            record_route=record_route,
            subscribe_cseq=checked.cseq,
            server_id=self.settings.server_id,
            index=checked.index,
            local_uri=checked.to_uri,
            remote_uri=checked.from_uri,
            peer=peer,
            owner=checked.replacement.owner,
        )
        self._store(sub)
        out.append(Deliver(SubscriptionAdded(sub)))
        out.append(StartTimer(sub.key, EXPIRY_TIMER, float(checked.granted)))
        if sub.event is Package.CALL_INFO:
            if replaced is not None or self._registry.was_lost(sub, now):  # reboot detection (3.5)
                for app in self.appearances(sub.aor):
                    if app.owner == sub.subscriber:
                        self._fire(app, Trigger.MEMBER_REBOOTED, now, out)
            self._enqueue(sub, Pending(Content.FULL_STATE, force=True), now, out)
            return
        own = self.appearance(sub.aor, sub.index)
        if replaced is not None and replaced.index != sub.index:
            previous = self.appearance(sub.aor, replaced.index)
            if (
                previous is not None
                and previous.state is AppearanceState.SEIZED
                and previous.owner == sub.subscriber
            ):
                self._fire(previous, Trigger.SEIZE_RELEASED, now, out)
        if own is None:  # O1 (3.7 step 3)
            fresh = Appearance(sub.aor, sub.index, owner=sub.subscriber)
            self._fire(fresh, Trigger.SEIZE, now, out)
        else:  # the contact's own seize, seized again out of dialog (Q2)
            out += self._board.touch(own, now)
        self._enqueue(sub, Pending(Content.INDEX, force=True), now, out)

    def _unsubscribe(
        self,
        checked: _Checked,
        *,
        local_tag: str,
        record_route: tuple[str, ...],
        peer: Peer | None,
        now: float,
        out: list[EngineAction],
    ) -> None:
        """Expires: 0 (3.5): terminated NOTIFY, removal, and the line-seize release (O3, row 14).

        Only the subscription being ended (its dialog, or out of dialog the one of the same
        owner, contact and flow) releases a seize, and only its own; anything else is the
        idempotent un-subscribe of row 14 and releases nothing."""
        stored = checked.existing
        if stored is None:
            stored = self._registry.by_replacement(checked.replacement)
        index = stored.index if stored is not None and stored.index else checked.index
        if checked.existing is not None:
            dialog_sub = checked.existing
        else:
            dialog_sub = Subscription(
                subscriber=checked.subscriber,
                aor=checked.aor,
                event=checked.package,
                expires=now,
                call_id=checked.call_id,
                from_tag=checked.from_tag,
                to_tag=local_tag,
                record_route=record_route,
                subscribe_cseq=checked.cseq,
                server_id=self.settings.server_id,
                index=index,
                local_uri=checked.to_uri,
                remote_uri=checked.from_uri,
                peer=peer,
                owner=checked.replacement.owner,
            )
        dialog_sub = attrs.evolve(dialog_sub, index=index, expires=now)
        if stored is not None and stored.dialog != dialog_sub.dialog:
            self._drop_dialog(stored)
        if stored is not None:
            self._remove(stored, "unsubscribed", out)
        self._outbox.unsubscribed(dialog_sub, index=index, now=now)
        content = Content.FULL_STATE if checked.package is Package.CALL_INFO else Content.INDEX
        if stored is not None and stored.event is Package.LINE_SEIZE and stored.index > 0:
            app = self.appearance(stored.aor, stored.index)
            if app is not None and app.owner == stored.subscriber:
                self._fire(app, Trigger.SEIZE_RELEASED, now, out)
        out += self._outbox.queue(dialog_sub.dialog, Pending(content, terminated=True, force=True), now)

    # Subscription bookkeeping.

    def _store(self, sub: Subscription) -> None:
        self._registry.store(sub)
        self._outbox.open(sub)

    def _drop_dialog(self, sub: Subscription) -> None:
        """Forget a replaced dialog without a terminating NOTIFY (3.5)."""
        self._registry.forget_dialog(sub)
        self._outbox.drop(sub.dialog)

    def _remove(self, sub: Subscription, reason: str, out: list[EngineAction]) -> None:
        removed = self._registry.remove(sub, reason)
        if not removed:
            return
        self._outbox.close(sub)
        out.extend(removed)

    def _end(self, sub: Subscription, reason: str, now: float, out: list[EngineAction]) -> None:
        """Terminate a subscription from our side: final NOTIFY with ``reason``, then removal."""
        content = Content.FULL_STATE if sub.event is Package.CALL_INFO else Content.INDEX
        self._remove(sub, reason, out)
        self._outbox.keep_for_final(sub)
        out += self._outbox.queue(
            sub.dialog, Pending(content, terminated=True, reason=reason, force=True), now
        )

    def _end_seize(self, app: Appearance, now: float, out: list[EngineAction]) -> None:
        """End the line-seize subscription holding ``app`` with reason noresource (3.7, O6, O13)."""
        for sub in self._registry.of_line(app.line):
            if sub.event is Package.LINE_SEIZE and sub.index == app.index:
                self._end(sub, "noresource", now, out)

    def _seize_ended(self, app: Appearance, now: float) -> list[EngineAction]:
        out: list[EngineAction] = []
        self._end_seize(app, now, out)
        return out

    # NOTIFY queueing (section 4 "Ordering", 4.1).

    def _enqueue(self, sub: Subscription, pending: Pending, now: float, out: list[EngineAction]) -> None:
        out += self._outbox.queue(sub.dialog, pending, now)

    def _render(self, sub: Subscription, content: Content) -> str:
        if content is Content.FULL_STATE:
            return self.full_state(sub.aor)
        return self._index_info(sub.aor, sub.index)

    def _flush(self, now: float, out: list[EngineAction]) -> None:
        """Send the group NOTIFYs owed to every line changed by this input (4.1)."""
        while lines := self._board.take_changed_lines():
            for aor in lines:
                for sub in self._registry.of_line(aor):
                    if sub.event is Package.CALL_INFO:
                        self._enqueue(sub, Pending(Content.FULL_STATE), now, out)

    def _flushed(self, out: list[EngineAction], now: float) -> list[EngineAction]:
        """``out`` followed by the group NOTIFYs it owes (4.1)."""
        self._flush(now, out)
        return out

    def on_notify_response(
        self, context: NotifyContext, response: Response, now: float
    ) -> list[EngineAction]:
        """A response to one of our NOTIFYs (RFC 6665 4.2.2, sca.md section 4 "NOTIFY outcome")."""
        out = self._outbox.on_response(context, response, now)
        self._flush(now, out)
        return out

    def on_notify_failed(self, context: NotifyContext, now: float) -> list[EngineAction]:
        """Our NOTIFY timed out or could not be sent: the subscription is removed (RFC 6665 4.2.2)."""
        out = self._outbox.on_failed(context, now)
        self._flush(now, out)
        return out

    def _lost(self, sub: Subscription, now: float) -> list[EngineAction]:
        """``sub`` was removed after its NOTIFY failed: remembered for reboot detection when its
        contact owns an appearance (3.5), its seize released."""
        if any(app.owner == sub.subscriber for app in self.appearances(sub.aor)):
            self._registry.remember_loss(sub, now)
        out: list[EngineAction] = []
        self._release_seize_of(sub, now, out)
        return out

    def _release_seize_of(self, sub: Subscription, now: float, out: list[EngineAction]) -> None:
        if sub.event is not Package.LINE_SEIZE:
            return
        app = self.appearance(sub.aor, sub.index)
        if app is not None and app.state is AppearanceState.SEIZED and app.owner == sub.subscriber:
            self._fire(app, Trigger.SEIZE_EXPIRED, now, out)

    # Timers (section 9).

    def on_timer(self, key: Hashable, name: str, now: float) -> list[EngineAction]:
        """A timer of ours fired: subscription expiry, or an appearance TTL (seized 120 s, pending 35 s)."""
        out: list[EngineAction] = []
        if name == EXPIRY_TIMER and isinstance(key, SubscriptionKey):
            sub = self._registry.get(key)
            if sub is None:
                return out
            if sub.expires > now + 1e-6:
                out.append(StartTimer(key, EXPIRY_TIMER, sub.expires - now))
                return out
            self._end(sub, "timeout", now, out)
            self._release_seize_of(sub, now, out)
        elif name == TTL_TIMER and isinstance(key, AppearanceKey):
            out += self._board.on_ttl(key, now)
        self._flush(now, out)
        return out

    def on_session_refreshed(self, call_id: str, timeout_s: float | None, now: float) -> list[EngineAction]:
        """A 2xx relayed for the call set up or refreshed its RFC 4028 session timer: its
        appearances in progress end (cause session-expired) ``timeout_s`` after ``now`` unless
        refreshed again; None: the session has no timer (the stale-call sweep applies)."""
        return self._board.on_session_refreshed(call_id, timeout_s, now)

    # Appearance transitions.

    def _fire(
        self, app: Appearance, trigger: Trigger, now: float, out: list[EngineAction], **changes: Any
    ) -> Step:
        """Run ``trigger`` on ``app`` (:meth:`AppearanceBoard.step`), its actions into ``out``."""
        step, actions = self._board.step(app, trigger, now, **changes)
        out += actions
        return step

    # Call tracking (sections 6.3-6.5, 7): CallTracker for requests, AnswerTracker for responses.

    def caller_line(self, request: Request, user: str) -> str | None:
        """The shared line an outgoing request of the authenticated ``user`` is placed on
        (its From and Contact), or None when it is on no line or ``user`` is no member of it."""
        return self._calls.caller_line(request, user)

    def check_request(self, request: Request, now: float) -> RequestPlan:
        """Classify an initial INVITE before it is forwarded (7.1 pickup, 7.2 private, 7.6 barge)."""
        return self._calls.check_request(request)

    def is_line_call(self, request: Request) -> bool:
        """An initial INVITE from a member of a shared line or to a line (section 1)."""
        return self._calls.is_line_call(request)

    def on_request_forwarded(
        self, request: Request, now: float, *, hold_hint: bool | None = None
    ) -> list[EngineAction]:
        """A request the proxy relayed: INVITE, re-INVITE, UPDATE, BYE, CANCEL, PRACK, REFER (section 2).

        ``hold_hint`` overrides SDP hold detection (the ``onhold_bflag`` hook, 6.2).
        """
        return self._flushed(self._calls.on_request_forwarded(request, now, hold_hint=hold_hint), now)

    def on_cancel(self, cancel: Request, now: float) -> list[EngineAction]:
        """A CANCEL of a call the server knows: one the proxy applied to a forking INVITE, or
        one whose INVITE transaction is gone (a restart; answered 481): O8, I6, 7.1."""
        return self._flushed(self._calls.on_cancel(cancel, now), now)

    def on_stray_answer(self, response: Response, now: float) -> list[EngineAction]:
        """A 2xx to an INVITE forwarded statelessly (RFC 6026 8.4): a late answer to a call
        whose transaction a restart lost (O7, I3)."""
        return self._flushed(self._answers.on_stray_answer(response, now), now)

    def on_response_forwarded(
        self, request: Request, response: Response, now: float, *, local: bool = False
    ) -> list[EngineAction]:
        """A response the proxy relayed (or, ``local=True``, generated itself) to ``request``.

        For an initial INVITE: 18x O6/I2, 2xx O7/I3, 3xx O11, 401/407 O12, 487
        O10, other failures O9/O13/I6 (the best final response after forking).
        For a re-INVITE/UPDATE: 2xx O17, failure O9b (roll back a tentative
        hold/retrieve).  2xx to BYE: O18 as a backup.
        """
        return self._flushed(self._answers.on_response_forwarded(request, response, now, local=local), now)

    def on_ack(self, request: Request, now: float, *, hold_hint: bool | None = None) -> list[EngineAction]:
        """An end-to-end ACK the proxy relayed: I4 (caller's ACK), O15/O16 (member's late-offer SDP)."""
        return self._flushed(self._calls.on_ack(request, now, hold_hint=hold_hint), now)

    # Management (section 11): the same table, through RPC triggers.

    def seize_appearance(self, aor: str, owner: str, now: float) -> tuple[int, list[EngineAction]]:
        """``sca.seize_appearance``: the lowest free index, for ``owner``; creates the line if needed."""
        free = self._lowest_free(self.line(aor))
        if free is None:
            raise AppearanceError(f"no free appearance on {aor}")
        out: list[EngineAction] = []
        self._fire(Appearance(aor, free), Trigger.ADMIN_SEIZE, now, out, owner=owner)
        self._flush(now, out)
        return free, out

    def update_appearance(
        self, aor: str, index: int, state: str, now: float, uri: str | None = None
    ) -> list[EngineAction]:
        """``sca.update_appearance``: force ``state`` (a wire token; ``ringing`` is rejected, Q25)."""
        if index < 1:
            raise AppearanceError(f"appearance index must be >= 1, not {index}")
        if state == "idle":
            return self.release_appearance(aor, index, now)
        target = AppearanceState.from_wire(state)
        trigger = next((t for t, s in ADMIN_SET_TARGETS.items() if s is target), None)
        if trigger is None:
            raise AppearanceError(f"unknown appearance state {state!r}")
        out: list[EngineAction] = []
        app = self.appearance(aor, index) or Appearance(aor, index)
        changes: dict[str, Any] = {} if uri is None else {"remote_uri": uri}
        self._fire(app, trigger, now, out, **changes)
        self._flush(now, out)
        return out

    def release_appearance(self, aor: str, index: int, now: float) -> list[EngineAction]:
        """``sca.release_appearance``: free an in-use index (> 0)."""
        if index < 1:
            raise AppearanceError(f"appearance index must be >= 1, not {index}")
        app = self.appearance(aor, index)
        if app is None:
            raise AppearanceError(f"appearance {index} of {aor} is not in use")
        out: list[EngineAction] = []
        self._fire(app, Trigger.ADMIN_RELEASE, now, out)
        self._flush(now, out)
        return out

    def deactivate(self, keys: Iterable[SubscriptionKey], now: float) -> list[EngineAction]:
        """``sca.deactivate_*``: end subscriptions with ``terminated;reason=deactivated`` and full state."""
        out: list[EngineAction] = []
        for key in list(keys):
            sub = self._registry.get(key)
            if sub is not None:
                self._end(sub, "deactivated", now, out)
                self._release_seize_of(sub, now, out)
        self._flush(now, out)
        return out

    # Restore (section 10.2, 10.3).

    def restore(
        self,
        lines: Iterable[SharedLine],
        subscriptions: Iterable[Subscription],
        appearances: Iterable[Appearance],
        now: float,
    ) -> list[EngineAction]:
        """Load state from the store: expired subscriptions are dropped, live ones re-arm their
        expiry and get a full-state NOTIFY continuing their CSeq (10.3), appearances re-arm TTLs."""
        out: list[EngineAction] = []
        self.provision(lines)
        out += self._board.restore(appearances, now)
        for sub in subscriptions:
            if sub.expires <= now or sub.state.terminated:
                continue
            self._store(sub)
            out.append(StartTimer(sub.key, EXPIRY_TIMER, sub.expires - now))
            if sub.event is Package.CALL_INFO:
                self._enqueue(sub, Pending(Content.FULL_STATE, force=True), now, out)
        self._flush(now, out)
        return out


@attrs.frozen
class _Checked:
    """A SUBSCRIBE that passed the checks of 3.2 rows 2-12."""

    package: Package
    aor: str
    subscriber: str
    call_id: str
    from_tag: str
    to_tag: str | None
    from_uri: str
    to_uri: str
    cseq: int
    granted: int
    index: int
    existing: Subscription | None
    replacement: ReplacementKey
