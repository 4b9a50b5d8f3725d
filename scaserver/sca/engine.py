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

import enum
import secrets
from collections.abc import Callable, Hashable, Iterable
from typing import Any, Final

import attrs

from scaserver.sca.appearance import (
    ADMIN_SET_TARGETS,
    HELD_STATES,
    Appearance,
    AppearanceState,
    CallLeg,
    Previous,
    Role,
    Step,
    Trigger,
    allowed,
    apply,
    sdp_hold,
    timeout_of,
)
from scaserver.sca.callinfo import AppearanceInfo, CallInfo, CallInfoError
from scaserver.sca.line import SharedLine, canonical_aor, host_part, side_aor
from scaserver.sca.notify import SubscriptionStatus, build_notify, next_hop
from scaserver.sca.subscription import (
    DialogKey,
    Identity,
    NotifyAnswered,
    Package,
    ReplacementKey,
    SubscribeRefused,
    Subscription,
    SubscriptionAdded,
    SubscriptionKey,
    SubscriptionNotified,
    SubscriptionRefreshed,
    SubscriptionRemoved,
)
from scaserver.sip.actions import CancelTimer, Deliver, EngineAction, Respond, SendRequest, StartTimer
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
from scaserver.sip.uri import NameAddr, SipUri, quote

ALLOW_EVENTS: Final = "call-info, line-seize"

#: At most this many lost subscriptions are remembered for reboot detection (3.5).
MAX_REMEMBERED_LOSSES: Final = 10_000

#: Timer names (sca.md section 9): per-subscription expiry, per-appearance TTL.
EXPIRY_TIMER: Final = "sca-expiry"
TTL_TIMER: Final = "sca-ttl"


class MissingEvent(SipError, status=400, reason="Missing Event"):
    """A SUBSCRIBE without an Event header (sca.md 3.2 row 2)."""


class MissingCallInfo(SipError, status=400, reason="Missing Call-Info"):
    """A line-seize SUBSCRIBE without a Call-Info header (3.2 row 9)."""


class InvalidCallInfo(SipError, status=400, reason="Invalid Call-Info"):
    """A line-seize SUBSCRIBE whose Call-Info or appearance-index cannot be used (3.2 row 10)."""


class SubscriptionLimit(SipError, status=403, reason="Too Many Subscriptions"):
    """An identity already holds ``max_subscriptions_per_identity`` live subscriptions."""


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


@attrs.frozen
class AppearanceKey:
    """Timer key of an appearance's TTL (sca.md 9): the line and the index."""

    line: str
    index: int


@attrs.frozen
class NotifyContext:
    """The ``SendRequest.context`` of a NOTIFY: its dialog and CSeq number."""

    dialog: DialogKey
    cseq: int


@attrs.frozen
class RequestPlan:
    """What the proxy must do with an initial INVITE before forwarding it (sca.md 7.1, 7.2, 7.6).

    ``rejection``: answer with ``response_for(request, rejection)`` and do not
    relay.  ``target``: send the INVITE to this one URI only (the held call's
    remote party), adding the ``Replaces`` header value ``replaces`` (RFC 3891).
    Both None: forward as usual.
    """

    rejection: SipError | None = None
    target: str | None = None
    replaces: str | None = None


class _Content(enum.Enum):
    FULL_STATE = "full"
    INDEX = "index"


@attrs.frozen
class _Pending:
    """A NOTIFY waiting for its dialog's previous one to be answered (section 4 "Ordering")."""

    content: _Content
    terminated: bool = False
    reason: str | None = None
    force: bool = False


@attrs.define
class _Outbox:
    """NOTIFY queue of one subscription dialog: at most one in flight, the newest pending."""

    subscription: Subscription
    live: bool = True
    in_flight: int | None = None
    pending: _Pending | None = None
    last_call_info: str | None = None


@attrs.frozen
class _Side:
    """What the engine reads from a message's From or To."""

    uri: str
    display: str | None
    tag: str | None


def _side(address: NameAddr) -> _Side:
    return _Side(str(address.uri), address.display_name, address.tag)


def _first_contact(message: Request | Response) -> str | None:
    try:
        found = parse_contacts(message.headers.values("Contact"))
    except MalformedMessage:
        return None
    if isinstance(found, Star) or not found:
        return None
    return str(found[0].uri)


def _call_info(message: Request | Response) -> AppearanceInfo | None:
    """The SCA Call-Info of a call message, read leniently (Q9): unreadable means absent."""
    try:
        return CallInfo.of(message.headers).first()
    except CallInfoError:
        return None


def _address_text(display: str | None, uri: str) -> str:
    """An appearance-uri content: ``"display" <uri>`` or ``<uri>`` (5.1, 7.5)."""
    return f"<{uri}>" if not display else f"{quote(display)} <{uri}>"


def _identity_of(request: Request, user: str | None) -> Identity | None:
    """The identity of a SUBSCRIBE given no other: the digest user, else its From AoR."""
    if user is not None:
        return Identity.authenticated(user)
    try:
        aor = canonical_aor(str(from_addr(request).uri))
    except MalformedMessage:
        return None
    return None if aor is None else Identity.unauthenticated(aor)


@attrs.frozen
class _SessionTimer:
    """A call's RFC 4028 session timer: over ``timeout_s`` after its last refresh."""

    timeout_s: float
    refreshed_at: float


def _ttl_start(appearance: Appearance) -> float:
    """When an appearance's TTL started: its change to ACTIVE_PENDING for I5, its last
    signalling otherwise (Q2 for a seize, O20/I8/Q18 for a call)."""
    if appearance.state is AppearanceState.ACTIVE_PENDING:
        return appearance.changed_at
    return appearance.touched_at


def _is_fresh(appearance: Appearance, call_id: str, member_tag: str) -> bool:
    leg = appearance.leg
    return leg is not None and leg.call_id == call_id and leg.member_tag == member_tag


@attrs.define
class ScaEngine:
    """The SCA application logic of sca.md sections 3-9, without I/O."""

    settings: EngineSettings = attrs.field(factory=EngineSettings)
    tag_factory: Callable[[], str] = attrs.field(default=lambda: secrets.token_hex(8))
    _lines: dict[str, SharedLine] = attrs.field(factory=dict, init=False)
    _subs: dict[SubscriptionKey, Subscription] = attrs.field(factory=dict, init=False)
    _by_dialog: dict[DialogKey, SubscriptionKey] = attrs.field(factory=dict, init=False)
    _by_replacement: dict[ReplacementKey, SubscriptionKey] = attrs.field(factory=dict, init=False)
    _by_owner: dict[str, dict[SubscriptionKey, None]] = attrs.field(factory=dict, init=False)
    _lost: dict[tuple[str, str, str], float] = attrs.field(factory=dict, init=False)
    _by_aor: dict[str, dict[SubscriptionKey, None]] = attrs.field(factory=dict, init=False)
    _appearances: dict[str, dict[int, Appearance]] = attrs.field(factory=dict, init=False)
    _calls: dict[str, set[AppearanceKey]] = attrs.field(factory=dict, init=False)
    _sessions: dict[str, _SessionTimer] = attrs.field(factory=dict, init=False)
    _outboxes: dict[DialogKey, _Outbox] = attrs.field(factory=dict, init=False)
    _dirty: dict[str, None] = attrs.field(factory=dict, init=False)
    _aliases: dict[str, str] = attrs.field(factory=dict, init=False)

    def __attrs_post_init__(self) -> None:
        self._aliases = dict(self.settings.aliases)

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
        if aor in self._lines or self._appearances.get(aor):
            return True
        return any(key.event is Package.CALL_INFO for key in self._by_aor.get(aor, {}))

    def set_aliases(self, aliases: dict[str, str]) -> None:
        """Replace the alias map (sca.md Q26): canonical alias AoR -> canonical line AoR."""
        self._aliases = dict(aliases)

    def _alias(self, aor: str | None) -> str | None:
        if aor is None:
            return None
        return self._aliases.get(aor, aor)

    # Read access (RPC, metrics).

    def subscriptions(self) -> list[Subscription]:
        return list(self._subs.values())

    def subscription(self, key: SubscriptionKey) -> Subscription | None:
        return self._subs.get(key)

    def appearances(self, aor: str | None = None) -> list[Appearance]:
        """In-use appearances, by line then index."""
        lines = [aor] if aor is not None else sorted(self._appearances)
        result: list[Appearance] = []
        for name in lines:
            result.extend(app for _, app in sorted(self._appearances.get(name, {}).items()))
        return result

    def appearance(self, aor: str, index: int) -> Appearance | None:
        return self._appearances.get(aor, {}).get(index)

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
            AppearanceInfo(uri, app.index, app.state, app.remote_uri)
            for _, app in sorted(self._appearances.get(aor, {}).items())
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
        key = self._by_dialog.get(DialogKey(request.call_id, sender.tag, target.tag))
        sub = None if key is None else self._subs.get(key)
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
            key = self._by_dialog.get(DialogKey(call_id, sender.tag, target.tag))
            existing = None if key is None else self._subs.get(key)
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
            self._check_cap(replacement, identity)
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

    def _check_cap(self, replacement: ReplacementKey, identity: Identity | None) -> None:
        cap = self.settings.max_subscriptions_per_identity
        if cap <= 0 or identity is None or identity.trusted or replacement in self._by_replacement:
            return
        if len(self._by_owner.get(replacement.owner, {})) >= cap:
            raise SubscriptionLimit(f"{replacement.owner} already holds {cap} subscriptions")

    def _allocate_seize(self, line: SharedLine, replacement: ReplacementKey, wanted: int) -> int:
        """The index an initial line-seize gets (3.7 step 2), or 480 + Retry-After (row 12, O2)."""
        busy = TemporarilyUnavailable(
            f"no appearance {wanted or 'free'} on {line.aor}",
            headers=Headers.of(("Retry-After", str(self.settings.seize_retry_after))),
        )
        in_use = self._appearances.get(line.aor, {})
        own = self._own_seize(replacement)
        if own is not None and wanted in (0, own.index):
            return own.index  # a phone re-seizing out of dialog (Q2) keeps its index
        if wanted > 0:
            current = in_use.get(wanted)
            if not line.allows_index(wanted) or current is not None:
                raise busy  # O2; 7.3: an index in any non-idle state is busy
            return wanted
        free = self._lowest_free(line)
        if free is None:
            raise busy
        return free

    def _own_seize(self, replacement: ReplacementKey) -> Appearance | None:
        """The appearance seized by the line-seize subscription ``replacement`` replaces (Q2)."""
        key = self._by_replacement.get(replacement)
        sub = None if key is None else self._subs.get(key)
        if sub is None:
            return None
        app = self.appearance(sub.aor, sub.index)
        if app is not None and app.state is AppearanceState.SEIZED and app.owner == sub.subscriber:
            return app
        return None

    def incoming_index(self, aor: str, call_id: str) -> int | None:
        """The appearance an incoming call to line ``aor`` shows on: the one it alerts on
        already, else the lowest free one it will take (push-and-parking.md 6.11 ``call.line``)."""
        for app in self._call_appearances(call_id):
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
        in_use = self._appearances.get(line.aor, {})
        if preferred > 0 and line.allows_index(preferred) and preferred not in in_use:
            return preferred
        index = 1
        while index in in_use:
            index += 1
        return index if line.allows_index(index) else None

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
            self._enqueue(sub, _Pending(_Content.FULL_STATE, force=True), now, out)
            return
        self._enqueue(sub, _Pending(_Content.INDEX, force=True), now, out)
        own = self.appearance(sub.aor, sub.index)
        if own is not None and own.state is AppearanceState.SEIZED and own.owner == sub.subscriber:
            self._appearances[sub.aor][sub.index] = attrs.evolve(own, touched_at=now)
            out.append(StartTimer(AppearanceKey(sub.aor, sub.index), TTL_TIMER, self.settings.seized_ttl))

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
        replaced_key = self._by_replacement.get(checked.replacement)
        replaced = None if replaced_key is None else self._subs.get(replaced_key)
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
            if replaced is not None or self._was_lost(sub, now):  # reboot detection (3.5)
                for app in self.appearances(sub.aor):
                    if app.owner == sub.subscriber:
                        self._fire(app, Trigger.MEMBER_REBOOTED, now, out)
            self._enqueue(sub, _Pending(_Content.FULL_STATE, force=True), now, out)
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
            self._appearances[sub.aor][sub.index] = attrs.evolve(own, touched_at=now)
            out.append(StartTimer(AppearanceKey(sub.aor, sub.index), TTL_TIMER, self.settings.seized_ttl))
        self._enqueue(sub, _Pending(_Content.INDEX, force=True), now, out)

    def _was_lost(self, sub: Subscription, now: float) -> bool:
        """Whether this owner's contact lost a subscription to ``sub.aor`` to a failed NOTIFY
        while it owned an appearance, recently (the reboot of 3.5 that removal hid)."""
        until = self._lost.pop((sub.aor, sub.owner, sub.subscriber), None)
        return until is not None and until > now

    def _remember_loss(self, sub: Subscription, now: float) -> None:
        if not any(app.owner == sub.subscriber for app in self.appearances(sub.aor)):
            return
        for key, until in list(self._lost.items()):
            if until <= now or len(self._lost) >= MAX_REMEMBERED_LOSSES:
                del self._lost[key]
        self._lost[sub.aor, sub.owner, sub.subscriber] = now + self.settings.reboot_memory_s

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
            found = self._by_replacement.get(checked.replacement)
            stored = None if found is None else self._subs.get(found)
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
        self._outboxes.setdefault(dialog_sub.dialog, _Outbox(dialog_sub, live=False))
        box = self._outboxes[dialog_sub.dialog]
        box.subscription = attrs.evolve(box.subscription, index=index, expires=now)
        box.live = False
        content = _Content.FULL_STATE if checked.package is Package.CALL_INFO else _Content.INDEX
        if stored is not None and stored.event is Package.LINE_SEIZE and stored.index > 0:
            app = self.appearance(stored.aor, stored.index)
            if app is not None and app.owner == stored.subscriber:
                self._fire(app, Trigger.SEIZE_RELEASED, now, out)
        self._queue(dialog_sub.dialog, _Pending(content, terminated=True, force=True), now, out)

    # Subscription bookkeeping.

    def _store(self, sub: Subscription) -> None:
        key = sub.key
        previous = self._subs.get(key)
        if previous is not None and previous.replacement != sub.replacement:
            self._unindex(previous)
        self._subs[key] = sub
        self._by_dialog[sub.dialog] = key
        self._by_replacement[sub.replacement] = key
        self._by_owner.setdefault(sub.owner, {})[key] = None
        self._by_aor.setdefault(sub.aor, {})[key] = None
        box = self._outboxes.get(sub.dialog)
        if box is None:
            self._outboxes[sub.dialog] = _Outbox(sub)
        else:
            box.subscription = sub
            box.live = True

    def _unindex(self, sub: Subscription) -> None:
        """Drop ``sub`` from the owner and replacement indexes."""
        key = sub.key
        if self._by_replacement.get(sub.replacement) == key:
            del self._by_replacement[sub.replacement]
        owned = self._by_owner.get(sub.owner)
        if owned is not None:
            owned.pop(key, None)
            if not owned:
                del self._by_owner[sub.owner]

    def _drop_dialog(self, sub: Subscription) -> None:
        """Forget a replaced dialog without a terminating NOTIFY (3.5)."""
        self._by_dialog.pop(sub.dialog, None)
        self._outboxes.pop(sub.dialog, None)

    def _remove(self, sub: Subscription, reason: str, out: list[EngineAction]) -> None:
        key = sub.key
        if self._subs.get(key) != sub:
            return
        del self._subs[key]
        if self._by_dialog.get(sub.dialog) == key:
            del self._by_dialog[sub.dialog]
        self._unindex(sub)
        members = self._by_aor.get(sub.aor)
        if members is not None:
            members.pop(key, None)
            if not members:
                del self._by_aor[sub.aor]
        box = self._outboxes.get(sub.dialog)
        if box is not None:
            box.live = False
            if box.in_flight is None and box.pending is None:
                del self._outboxes[sub.dialog]
        out.append(CancelTimer(key, EXPIRY_TIMER))
        out.append(Deliver(SubscriptionRemoved(sub, reason)))

    def _end(self, sub: Subscription, reason: str, now: float, out: list[EngineAction]) -> None:
        """Terminate a subscription from our side: final NOTIFY with ``reason``, then removal."""
        content = _Content.FULL_STATE if sub.event is Package.CALL_INFO else _Content.INDEX
        self._remove(sub, reason, out)
        self._outboxes.setdefault(sub.dialog, _Outbox(sub, live=False))
        self._queue(sub.dialog, _Pending(content, terminated=True, reason=reason, force=True), now, out)

    def _end_seize(self, app: Appearance, now: float, out: list[EngineAction]) -> None:
        """End the line-seize subscription holding ``app`` with reason noresource (3.7, O6, O13)."""
        for key in list(self._by_aor.get(app.line, {})):
            sub = self._subs[key]
            if sub.event is Package.LINE_SEIZE and sub.index == app.index:
                self._end(sub, "noresource", now, out)

    # NOTIFY queueing (section 4 "Ordering", 4.1).

    def _enqueue(self, sub: Subscription, pending: _Pending, now: float, out: list[EngineAction]) -> None:
        self._queue(sub.dialog, pending, now, out)

    def _queue(self, dialog: DialogKey, pending: _Pending, now: float, out: list[EngineAction]) -> None:
        box = self._outboxes.get(dialog)
        if box is None:
            return
        current = box.pending
        if current is not None:
            if current.terminated:
                return  # nothing follows a terminating NOTIFY
            pending = attrs.evolve(pending, force=pending.force or current.force)
        box.pending = pending
        self._pump(dialog, now, out)

    def _pump(self, dialog: DialogKey, now: float, out: list[EngineAction]) -> None:
        box = self._outboxes.get(dialog)
        if box is None or box.in_flight is not None or box.pending is None:
            return
        pending, box.pending = box.pending, None
        sub = box.subscription
        if pending.content is _Content.FULL_STATE:
            call_info = self.full_state(sub.aor)
        else:
            call_info = self._index_info(sub.aor, sub.index)
        if not pending.force and not pending.terminated and call_info == box.last_call_info:
            return  # nothing new for this subscriber (4.1)
        peer = next_hop(sub)
        if peer is None:
            self._forget(dialog, "notify-failed", out)
            return
        number = sub.notify_cseq + 1
        sub = attrs.evolve(sub, notify_cseq=number)
        box.subscription = sub
        if pending.terminated:
            status = SubscriptionStatus(True, reason=pending.reason)
        else:
            status = SubscriptionStatus(False, expires=sub.remaining(now))
        request = build_notify(
            sub, cseq=number, contact=self.settings.contact, call_info=call_info, status=status
        )
        box.in_flight = number
        box.last_call_info = call_info
        out.append(SendRequest(request, peer, NotifyContext(dialog, number)))
        if box.live and self._subs.get(sub.key, None) is not None and self._by_dialog.get(dialog) == sub.key:
            self._subs[sub.key] = sub
            out.append(Deliver(SubscriptionNotified(sub)))

    def _flush(self, now: float, out: list[EngineAction]) -> None:
        """Send the group NOTIFYs owed to every line changed by this input (4.1)."""
        while self._dirty:
            aor = next(iter(self._dirty))
            del self._dirty[aor]
            for key in list(self._by_aor.get(aor, {})):
                sub = self._subs.get(key)
                if sub is not None and sub.event is Package.CALL_INFO:
                    self._enqueue(sub, _Pending(_Content.FULL_STATE), now, out)

    def _forget(self, dialog: DialogKey, reason: str, out: list[EngineAction]) -> None:
        self._outboxes.pop(dialog, None)
        key = self._by_dialog.get(dialog)
        sub = None if key is None else self._subs.get(key)
        if sub is not None:
            self._remove(sub, reason, out)
            self._outboxes.pop(dialog, None)

    def on_notify_response(
        self, context: NotifyContext, response: Response, now: float
    ) -> list[EngineAction]:
        """A response to one of our NOTIFYs (RFC 6665 4.2.2, sca.md section 4 "NOTIFY outcome").

        2xx: the next queued NOTIFY goes.  481, or another 4xx-6xx without
        Retry-After: the subscription is removed (Q7).  Others (503 with
        Retry-After...): kept, the queue goes on.
        """
        out: list[EngineAction] = []
        if response.status < 200:
            return out
        box = self._outboxes.get(context.dialog)
        if box is None or box.in_flight != context.cseq:
            return out
        box.in_flight = None
        if 200 <= response.status < 300:
            key = self._by_dialog.get(context.dialog)
            sub = None if key is None else self._subs.get(key)
            if sub is not None:
                out.append(Deliver(NotifyAnswered(sub, context.cseq, response.status)))
        fatal = response.status == 481 or (response.status >= 400 and "Retry-After" not in response.headers)
        if fatal and box.live:
            self._notify_failed(context.dialog, now, out)
        elif not box.live and box.pending is None:
            del self._outboxes[context.dialog]
        else:
            self._pump(context.dialog, now, out)
        self._flush(now, out)
        return out

    def on_notify_failed(self, context: NotifyContext, now: float) -> list[EngineAction]:
        """Our NOTIFY timed out or could not be sent: the subscription is removed (RFC 6665 4.2.2)."""
        out: list[EngineAction] = []
        box = self._outboxes.get(context.dialog)
        if box is None or box.in_flight != context.cseq:
            return out
        box.in_flight = None
        if box.live:
            self._notify_failed(context.dialog, now, out)
        else:
            del self._outboxes[context.dialog]
        self._flush(now, out)
        return out

    def _notify_failed(self, dialog: DialogKey, now: float, out: list[EngineAction]) -> None:
        key = self._by_dialog.get(dialog)
        sub = None if key is None else self._subs.get(key)
        self._outboxes.pop(dialog, None)
        if sub is None:
            return
        self._remember_loss(sub, now)
        self._remove(sub, "notify-failed", out)
        self._outboxes.pop(dialog, None)
        self._release_seize_of(sub, now, out)

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
            sub = self._subs.get(key)
            if sub is None:
                return out
            if sub.expires > now + 1e-6:
                out.append(StartTimer(key, EXPIRY_TIMER, sub.expires - now))
                return out
            self._end(sub, "timeout", now, out)
            self._release_seize_of(sub, now, out)
        elif name == TTL_TIMER and isinstance(key, AppearanceKey):
            app = self.appearance(key.line, key.index)
            if app is None:
                return out
            ttl, trigger = self._ttl(app), timeout_of(app)
            if ttl is None or trigger is None:
                return out
            since = _ttl_start(app)
            session = self._session_of(app) if trigger is Trigger.CALL_STALE else None
            if session is not None:
                since, trigger = max(since, session.refreshed_at), Trigger.SESSION_EXPIRED
            if since + ttl > now + 1e-6:
                out.append(StartTimer(key, TTL_TIMER, since + ttl - now))
                return out
            self._fire(app, trigger, now, out)
        self._flush(now, out)
        return out

    def _ttl(self, app: Appearance) -> float | None:
        """The TTL of ``app`` in its state (section 9, O20, I8, Q18), None when it has none."""
        trigger = timeout_of(app)
        if trigger is Trigger.SEIZE_EXPIRED:
            return self.settings.seized_ttl
        if trigger is Trigger.PENDING_EXPIRED:
            return self.settings.active_pending_ttl
        if trigger is Trigger.EARLY_EXPIRED:
            return self.settings.early_ttl
        session = self._session_of(app) if trigger is Trigger.CALL_STALE else None
        if session is not None:
            return session.timeout_s
        if trigger is Trigger.CALL_STALE and self.settings.max_call_age > 0:
            return self.settings.max_call_age
        return None

    def _session_of(self, app: Appearance) -> _SessionTimer | None:
        return None if app.call_id is None else self._sessions.get(app.call_id)

    def on_session_refreshed(self, call_id: str, timeout_s: float | None, now: float) -> list[EngineAction]:
        """A 2xx relayed for the call set up or refreshed its RFC 4028 session timer: its
        appearances in progress end (cause session-expired) ``timeout_s`` after ``now`` unless
        refreshed again; None: the session has no timer (the stale-call sweep applies)."""
        out: list[EngineAction] = []
        if call_id not in self._calls:
            return out
        if timeout_s is None:
            self._sessions.pop(call_id, None)
        else:
            self._sessions[call_id] = _SessionTimer(timeout_s, now)
        for app in self._call_appearances(call_id):
            ttl = self._ttl(app)
            key = AppearanceKey(app.line, app.index)
            if timeout_of(app) is not Trigger.CALL_STALE:
                continue
            if ttl is None:
                out.append(CancelTimer(key, TTL_TIMER))
            else:
                out.append(StartTimer(key, TTL_TIMER, max(0.0, max(_ttl_start(app), now) + ttl - now)))
        return out

    # Appearance transitions.

    def _fire(
        self, app: Appearance, trigger: Trigger, now: float, out: list[EngineAction], **changes: Any
    ) -> Step:
        """Run ``trigger`` on ``app`` (fields in ``changes`` set first when the row exists) and commit."""
        if changes and allowed(app.state, trigger):
            app = attrs.evolve(app, **changes)
        step = apply(app, trigger, now)
        out.append(Deliver(step.fact))
        if step.rule is None:
            return step
        new = step.appearance
        key = AppearanceKey(new.line, new.index)
        line = self._appearances.get(new.line, {})
        old = line.get(new.index)
        if old is not None and old.call_id is not None:
            calls = self._calls.get(old.call_id)
            if calls is not None:
                calls.discard(key)
                if not calls:
                    del self._calls[old.call_id]
        if new.state is AppearanceState.IDLE:
            line.pop(new.index, None)
            if not line:
                self._appearances.pop(new.line, None)
        else:
            self._appearances.setdefault(new.line, line)[new.index] = new
            if new.call_id is not None:
                self._calls.setdefault(new.call_id, set()).add(key)
        if old is not None and old.call_id is not None and old.call_id not in self._calls:
            self._sessions.pop(old.call_id, None)  # the call's last appearance ended
        ttl = self._ttl(new)
        if ttl is not None:
            out.append(StartTimer(key, TTL_TIMER, ttl))
        elif old is not None and self._ttl(old) is not None:
            out.append(CancelTimer(key, TTL_TIMER))
        if new.state is not AppearanceState.ACTIVE_PENDING:
            self._dirty[new.line] = None
        return step

    def _side_line(self, uri: str, contact: str | None) -> str | None:
        """The shared line one side of a call is on (sca.md section 1), or None.

        ``uri`` is the From of a request or the To of a response, ``contact`` its Contact.
        A Contact user that names a line in the From/To host is that line (Polycom lines
        registered under a separate line user); otherwise the From/To identity itself is
        the line when it is one.  A Contact user is only a hint: phones put anything there
        (baresip ``3000-0x...``, a push member's mobile), so a Contact user that names no
        line never hides the line of the From/To identity.
        """
        for candidate in (side_aor(uri, contact), canonical_aor(uri)):
            line = self._alias(candidate)
            if line is not None and self.is_sca(line):
                return line
        return None

    def caller_line(self, request: Request, user: str) -> str | None:
        """The shared line an outgoing request of the authenticated ``user`` is placed on
        (its From and Contact, as call tracking maps them), or None when it is on no line
        or ``user`` (a name, or ``sip:user@line-host``) is no member of it (sca.md 3.2 row 6;
        a line without a member list admits everybody)."""
        try:
            sender = from_addr(request)
        except MalformedMessage:
            return None
        line = self._side_line(str(sender.uri), _first_contact(request))
        if line is None:
            return None
        shared = self.line(line)
        own = canonical_aor(f"sip:{user}@{host_part(line)}")
        if shared.admits(user=user) or shared.lists(user=user, aor=own):
            return line
        return None

    def _call_appearances(self, call_id: str) -> list[Appearance]:
        result = []
        for key in sorted(self._calls.get(call_id, ()), key=lambda k: (k.line, k.index)):
            app = self.appearance(key.line, key.index)
            if app is not None:
                result.append(app)
        return result

    # Call tracking (sections 6.3-6.5, 7).

    def check_request(self, request: Request, now: float) -> RequestPlan:
        """Classify an initial INVITE before it is forwarded (7.1 pickup, 7.2 private, 7.6 barge).

        Pure: changes nothing.  A pickup is an INVITE without To-tag whose
        Call-Info names index N of the line, with From AoR == To AoR == the line.
        """
        if request.method != "INVITE":
            return RequestPlan()
        found = self._pickup(request)
        if found is None:
            return RequestPlan()
        app = found
        if app.state is AppearanceState.HELD_PRIVATE:
            return RequestPlan(rejection=Forbidden("appearance is on private hold"))
        if app.state is AppearanceState.ACTIVE:
            return RequestPlan(rejection=BargeNotSupported("barge-in on an active appearance"))
        if app.state is not AppearanceState.HELD or app.leg is None or app.remote_contact is None:
            return RequestPlan()
        leg = app.leg
        replaces = f"{leg.call_id};to-tag={leg.remote_tag};from-tag={leg.member_tag}"
        return RequestPlan(target=app.remote_contact, replaces=replaces)

    def is_line_call(self, request: Request) -> bool:
        """An initial INVITE from a member of a shared line or to a line (section 1): a call
        whose appearance an RFC 4028 session timer can end."""
        try:
            sender, target = from_addr(request), to_addr(request)
        except MalformedMessage:
            return False
        if self._side_line(str(sender.uri), _first_contact(request)) is not None:
            return True
        return any(
            line is not None and self.is_sca(line)
            for line in (self._alias(canonical_aor(str(target.uri))), self._alias(canonical_aor(request.uri)))
        )

    def _pickup(self, request: Request) -> Appearance | None:
        try:
            sender, target = from_addr(request), to_addr(request)
        except MalformedMessage:
            return None
        if target.tag:
            return None
        info = _call_info(request)
        if info is None or info.index is None:
            return None
        line = self._alias(canonical_aor(str(sender.uri)))
        if line is None or line != self._alias(canonical_aor(str(target.uri))):
            return None
        app = self.appearance(line, info.index)
        if app is None or app.state not in (*HELD_STATES, AppearanceState.ACTIVE):
            return None
        leg = app.leg
        if leg is not None and leg.call_id == request.call_id:
            return None  # the appearance's own call
        return app

    def on_request_forwarded(
        self, request: Request, now: float, *, hold_hint: bool | None = None
    ) -> list[EngineAction]:
        """A request the proxy relayed: INVITE, re-INVITE, UPDATE, BYE, CANCEL, PRACK, REFER (section 2).

        ``hold_hint`` overrides SDP hold detection (the ``onhold_bflag`` hook, 6.2).
        """
        out: list[EngineAction] = []
        try:
            sender, target = _side(from_addr(request)), _side(to_addr(request))
        except MalformedMessage:
            return out
        call_id = request.call_id
        if not call_id or sender.tag is None:
            return out
        method = request.method
        if method == "INVITE" and target.tag is None:
            self._initial_invite(request, call_id=call_id, sender=sender, target=target, now=now, out=out)
        elif method in ("INVITE", "UPDATE") and target.tag is not None:
            self._offer(
                request, call_id=call_id, sender=sender, target=target, now=now, hint=hold_hint, out=out
            )
        elif method == "BYE":
            for app in self._call_appearances(call_id):
                if app.leg is not None and app.leg.matches(call_id, sender.tag, target.tag):
                    self._fire(app, Trigger.BYE, now, out)
        elif method == "CANCEL":
            self._cancel(call_id, sender, now, out)
        self._flush(now, out)
        return out

    def on_cancel(self, cancel: Request, now: float) -> list[EngineAction]:
        """A CANCEL of a call the server knows: one the proxy applied to a forking INVITE, or
        one whose INVITE transaction is gone (a restart; answered 481): O8, I6, 7.1."""
        out: list[EngineAction] = []
        try:
            sender = _side(from_addr(cancel))
        except MalformedMessage:
            return out
        if cancel.call_id and sender.tag is not None:
            self._cancel(cancel.call_id, sender, now, out)
        self._flush(now, out)
        return out

    def on_stray_answer(self, response: Response, now: float) -> list[EngineAction]:
        """A 2xx to an INVITE that matched no proxy transaction and was forwarded statelessly
        (RFC 6026 8.4): a late answer to a call whose transaction a restart lost (O7, I3).
        A retransmitted 2xx of a dialog already tracked changes nothing."""
        out: list[EngineAction] = []
        try:
            sender, answered = _side(from_addr(response)), _side(to_addr(response))
            method = cseq(response).method
        except MalformedMessage:
            return out
        call_id = response.call_id
        if not call_id or sender.tag is None or method != "INVITE" or not 200 <= response.status < 300:
            return out
        for app in self._call_appearances(call_id):
            leg = app.leg
            if (
                leg is not None
                and leg.remote_tag is not None
                and leg.matches(call_id, sender.tag, answered.tag)
            ):
                return out
        self._invite_answered(
            None,
            response=response,
            call_id=call_id,
            sender=sender,
            answered=answered,
            local=False,
            now=now,
            out=out,
        )
        self._flush(now, out)
        return out

    def _initial_invite(
        self,
        request: Request,
        *,
        call_id: str,
        sender: _Side,
        target: _Side,
        now: float,
        out: list[EngineAction],
    ) -> None:
        contact = _first_contact(request) or self.settings.contact_fallback or None
        caller_line = self._side_line(sender.uri, contact)
        callee_line = self._alias(canonical_aor(target.uri))
        assert sender.tag is not None
        info = _call_info(request)
        if caller_line is not None and self.is_sca(caller_line):
            self._caller_invite(
                request,
                line=caller_line,
                callee_line=callee_line,
                call_id=call_id,
                sender=sender,
                target=target,
                contact=contact,
                info=info,
                now=now,
                out=out,
            )
        if (
            self.settings.alerting_state
            and callee_line is not None
            and callee_line != caller_line
            and self.is_sca(callee_line)
        ):
            known = [
                app
                for app in self._call_appearances(call_id)
                if app.line == callee_line and app.leg is not None and app.leg.remote_tag == sender.tag
            ]
            if known:
                return
            free = self._lowest_free(self.line(callee_line))
            if free is None:
                return
            fresh = Appearance(callee_line, free)
            self._fire(
                fresh,
                Trigger.INCOMING,
                now,
                out,
                leg=CallLeg(call_id, None, sender.tag, Role.CALLEE),
                remote_contact=contact,
                remote_uri=_address_text(sender.display, canonical_aor(sender.uri) or sender.uri),
            )

    def _caller_invite(
        self,
        request: Request,
        *,
        line: str,
        callee_line: str | None,
        call_id: str,
        sender: _Side,
        target: _Side,
        contact: str | None,
        info: AppearanceInfo | None,
        now: float,
        out: list[EngineAction],
    ) -> None:
        assert sender.tag is not None
        for app in self._call_appearances(call_id):
            if app.line == line and _is_fresh(app, call_id, sender.tag):
                self._fire(app, Trigger.INVITE, now, out)  # the same INVITE again (after a 401/407)
                return
        remote_uri = _address_text(target.display, canonical_aor(target.uri) or target.uri)
        leg = CallLeg(call_id, sender.tag, None, Role.CALLER)
        wanted = info.index if info is not None and info.index is not None else 0
        if wanted and callee_line == line:
            pickup = self._pickup(request)
            if pickup is not None:  # 7.1 retrieve by another member (O19); other states were refused
                step = self._fire(
                    pickup,
                    Trigger.RETRIEVE_BY_MEMBER,
                    now,
                    out,
                    owner=contact,
                    leg=leg,
                    previous=Previous(pickup.owner, pickup.leg, pickup.remote_contact),
                )
                if step.rule is not None and pickup.leg is not None:
                    self._replace_far_end(pickup, pickup.leg, leg, contact=contact, now=now, out=out)
                return
        current = self.appearance(line, wanted) if wanted else None
        if (
            current is not None
            and current.state is AppearanceState.SEIZED
            and (current.leg is None or current.leg.call_id == call_id)
        ):
            owner = contact or current.owner
            self._fire(current, Trigger.INVITE, now, out, owner=owner, leg=leg, remote_uri=remote_uri)  # O5
            return
        free = self._lowest_free(self.line(line), wanted)
        if free is None:
            return
        fresh = Appearance(line, free)
        self._fire(
            fresh, Trigger.INVITE_IMPLICIT, now, out, owner=contact, leg=leg, remote_uri=remote_uri
        )  # O5b

    def _replace_far_end(
        self,
        pickup: Appearance,
        old: CallLeg,
        new: CallLeg,
        *,
        contact: str | None,
        now: float,
        out: list[EngineAction],
    ) -> None:
        """7.1 step 4 (O19b): the pickup INVITE carries Replaces for ``old`` to the far end, so an
        appearance of another line that follows ``old`` from the far end's side follows the
        pickup's dialog instead, where the far end is the callee; its tag there comes with the
        answer (:attr:`Appearance.callee_pending`).  Its remote party is the picking member."""
        for far in self._call_appearances(old.call_id):
            leg = far.leg
            if (
                (far.line, far.index) == (pickup.line, pickup.index)
                or leg is None
                or leg.member_tag is None
                or (leg.member_tag, leg.remote_tag) != (old.remote_tag, old.member_tag)
            ):
                continue
            self._fire(
                far,
                Trigger.FAR_END_REPLACED,
                now,
                out,
                leg=CallLeg(new.call_id, None, new.member_tag, Role.CALLEE),
                remote_contact=contact,
                previous=Previous(far.owner, leg, far.remote_contact),
            )

    def _far_end_answered(
        self, app: Appearance, *, status: int, answered: _Side, now: float, out: list[EngineAction]
    ) -> None:
        """The far end answered the pickup that moved ``app`` (O19b): 2xx gives our member's tag
        in the new dialog; a failure puts ``app`` back on the replaced dialog (7.1)."""
        leg = app.leg
        assert leg is not None
        if 200 <= status < 300:
            new_leg = attrs.evolve(leg, member_tag=answered.tag)
            self._fire(app, Trigger.FAR_END_REPLACE_ANSWERED, now, out, leg=new_leg, previous=None)
        elif status >= 300:
            self._restore_far_end(app, now, out)

    def _restore_far_end(self, app: Appearance, now: float, out: list[EngineAction]) -> None:
        previous = app.previous
        assert previous is not None
        self._fire(
            app,
            Trigger.FAR_END_REPLACE_FAILED,
            now,
            out,
            owner=previous.owner,
            leg=previous.leg,
            remote_contact=previous.remote_contact,
            previous=None,
        )

    def _offer(
        self,
        request: Request,
        *,
        call_id: str,
        sender: _Side,
        target: _Side,
        now: float,
        hint: bool | None,
        out: list[EngineAction],
    ) -> None:
        """An in-dialog offer (re-INVITE, UPDATE) from the member: hold or retrieve (O14, O16, 6.5)."""
        hold = hint if hint is not None else sdp_hold(request.body)
        if hold is None:
            return  # a body-less re-INVITE changes nothing (Q14)
        info = _call_info(request)
        try:
            number = cseq(request).number
        except MalformedMessage:
            return
        for app in self._call_appearances(call_id):
            leg = app.leg
            if (
                leg is None
                or leg.member_tag != sender.tag
                or not leg.matches(call_id, sender.tag, target.tag)
            ):
                continue  # remote hold changes nothing (6.2, 7.4)
            trigger = _hold_trigger(info) if hold else Trigger.OWNER_RETRIEVE
            rollback = (app.state, number) if request.method == "INVITE" else None
            self._fire(app, trigger, now, out, rollback=rollback)

    def _cancel(self, call_id: str, sender: _Side, now: float, out: list[EngineAction]) -> None:
        """CANCEL, matched by Call-ID and From-tag (Q12): O8 for the caller, I6 for the callee line."""
        for app in self._call_appearances(call_id):
            leg = app.leg
            if leg is None:
                continue
            if app.callee_pending and leg.remote_tag == sender.tag:
                self._restore_far_end(app, now, out)  # the pickup moving it was cancelled (7.1)
            elif leg.role is Role.CALLER and leg.member_tag == sender.tag:
                if app.previous is not None and leg.remote_tag is None:
                    self._restore_pickup(app, now, out)
                else:
                    self._fire(app, Trigger.CANCELLED, now, out)
            elif leg.role is Role.CALLEE and leg.remote_tag == sender.tag and leg.member_tag is None:
                self._fire(app, Trigger.INCOMING_ENDED, now, out)

    def _restore_pickup(self, app: Appearance, now: float, out: list[EngineAction]) -> None:
        previous = app.previous
        assert previous is not None
        self._fire(
            app,
            Trigger.RETRIEVE_FAILED,
            now,
            out,
            owner=previous.owner,
            leg=previous.leg,
            remote_contact=previous.remote_contact,
            previous=None,
        )

    def on_response_forwarded(
        self, request: Request, response: Response, now: float, *, local: bool = False
    ) -> list[EngineAction]:
        """A response the proxy relayed (or, ``local=True``, generated itself) to ``request``.

        For an initial INVITE: 18x O6/I2, 2xx O7/I3, 3xx O11, 401/407 O12, 487
        O10, other failures O9/O13/I6 (the best final response after forking).
        For a re-INVITE/UPDATE: 2xx O17, failure O9b (roll back a tentative
        hold/retrieve).  2xx to BYE: O18 as a backup.
        """
        out: list[EngineAction] = []
        try:
            sender, target = _side(from_addr(request)), _side(to_addr(request))
            answered = _side(to_addr(response))
            number = cseq(response).number
        except MalformedMessage:
            return out
        call_id = request.call_id
        if not call_id or sender.tag is None:
            return out
        status = response.status
        if request.method == "BYE":
            if 200 <= status < 300:
                for app in self._call_appearances(call_id):
                    if app.leg is not None and app.leg.matches(call_id, sender.tag, target.tag):
                        self._fire(app, Trigger.BYE, now, out)
        elif request.method in ("INVITE", "UPDATE") and target.tag is not None:
            self._offer_answered(
                call_id, sender=sender, target=target, status=status, number=number, now=now, out=out
            )
        elif request.method == "INVITE" and status > 100:
            self._invite_answered(
                request,
                response=response,
                call_id=call_id,
                sender=sender,
                answered=answered,
                local=local,
                now=now,
                out=out,
            )
        self._flush(now, out)
        return out

    def _offer_answered(
        self,
        call_id: str,
        *,
        sender: _Side,
        target: _Side,
        status: int,
        number: int,
        now: float,
        out: list[EngineAction],
    ) -> None:
        if status < 200:
            return
        for app in self._call_appearances(call_id):
            if app.leg is None or not app.leg.matches(call_id, sender.tag, target.tag):
                continue
            pending = app.rollback if app.rollback is not None and app.rollback[1] == number else None
            if status < 300:
                self._fire(app, Trigger.REINVITE_ANSWERED, now, out, rollback=None)  # O17
            elif pending is None:
                self._fire(app, Trigger.REINVITE_FAILED, now, out)  # O9b
            else:
                before = pending[0]
                if before is AppearanceState.ACTIVE:
                    trigger = Trigger.ROLLBACK_HOLD
                elif before is AppearanceState.HELD_PRIVATE:
                    trigger = Trigger.ROLLBACK_RETRIEVE_PRIVATE
                else:
                    trigger = Trigger.ROLLBACK_RETRIEVE
                self._fire(app, trigger, now, out, rollback=None)

    def _invite_answered(
        self,
        request: Request | None,
        *,
        response: Response,
        call_id: str,
        sender: _Side,
        answered: _Side,
        local: bool,
        now: float,
        out: list[EngineAction],
    ) -> None:
        status = response.status
        for app in self._call_appearances(call_id):
            leg = app.leg
            if leg is None:
                continue
            if app.callee_pending and leg.remote_tag == sender.tag:
                self._far_end_answered(app, status=status, answered=answered, now=now, out=out)
            elif leg.role is Role.CALLER and leg.member_tag == sender.tag:
                self._caller_answered(
                    app, response=response, answered=answered, local=local, now=now, out=out
                )
        self._callee_answered(
            request,
            response=response,
            call_id=call_id,
            sender=sender,
            answered=answered,
            status=status,
            now=now,
            out=out,
        )

    def _caller_answered(
        self,
        app: Appearance,
        *,
        response: Response,
        answered: _Side,
        local: bool,
        now: float,
        out: list[EngineAction],
    ) -> None:
        status = response.status
        leg = app.leg
        assert leg is not None
        if app.previous is not None and leg.remote_tag is None:  # the pickup INVITE (7.1)
            if 200 <= status < 300:
                contact = _first_contact(response) or app.remote_contact
                self._fire(
                    app,
                    Trigger.RETRIEVE_ANSWERED,
                    now,
                    out,
                    leg=attrs.evolve(leg, remote_tag=answered.tag),
                    remote_contact=contact,
                    previous=None,
                )
            elif status >= 300:
                self._restore_pickup(app, now, out)
            return
        if status < 200:
            step = self._fire(app, Trigger.PROGRESS, now, out)  # O6
            if step.changed_state:
                self._end_seize(step.appearance, now, out)
        elif status < 300:
            if leg.remote_tag is not None and app.state is not AppearanceState.SEIZED:
                return  # another branch's 2xx: the first one won
            step = self._fire(
                app,
                Trigger.ANSWERED,
                now,
                out,
                leg=attrs.evolve(leg, remote_tag=answered.tag),
                remote_contact=_first_contact(response),
                remote_uri=_address_text(answered.display, canonical_aor(answered.uri) or answered.uri),
            )  # O7
            if step.rule is not None:
                self._end_seize(step.appearance, now, out)
        elif status < 400:
            self._fire(app, Trigger.REDIRECTED, now, out)  # O11
        elif status in (401, 407):
            self._fire(app, Trigger.CHALLENGED, now, out)  # O12
        elif status == 487:
            self._fire(app, Trigger.TERMINATED_487, now, out)  # O10
        elif local:
            step = self._fire(app, Trigger.LOCAL_FAILURE, now, out)  # O13
            if step.rule is not None:
                self._end_seize(app, now, out)
        else:
            self._fire(app, Trigger.FAILED, now, out)  # O9

    def _callee_answered(
        self,
        request: Request | None,
        *,
        response: Response,
        call_id: str,
        sender: _Side,
        answered: _Side,
        status: int,
        now: float,
        out: list[EngineAction],
    ) -> None:
        """The line is the callee (6.4): I2 on 18x, I3 on a member's 2xx, I6 on the final failure."""
        mine = [
            app
            for app in self._call_appearances(call_id)
            if app.leg is not None
            and app.leg.role is Role.CALLEE
            and app.leg.remote_tag == sender.tag
            and not app.callee_pending  # moved by a pickup on the far line (O19b), not ringing here
        ]
        alerting = [app for app in mine if app.leg is not None and app.leg.member_tag is None]
        if status < 200:
            for app in alerting:
                self._fire(app, Trigger.MEMBER_RINGING, now, out)
            return
        if status >= 300:
            for app in alerting:
                self._fire(app, Trigger.INCOMING_ENDED, now, out)
            return
        if answered.tag is None or any(
            app.leg is not None and app.leg.member_tag == answered.tag for app in mine
        ):
            return
        member = _first_contact(response)
        line_aor = alerting[0].line if alerting else self._side_line(answered.uri, member)
        if line_aor is None:
            return
        caller = sender
        if self._alias(canonical_aor(answered.uri)) == self._alias(canonical_aor(caller.uri)):
            return  # a call within the line (a pickup, an intercom): tracked on the caller side only
        info = _call_info(response)
        wanted = info.index if info is not None and info.index is not None else 0
        reuse = next((app for app in alerting if app.line == line_aor), None)
        if reuse is None:
            free = self._lowest_free(self.line(line_aor), wanted)
            if free is None:
                return
            reuse = Appearance(line_aor, free)
        self._fire(
            reuse,
            Trigger.MEMBER_ANSWERED,
            now,
            out,
            owner=member,
            leg=CallLeg(call_id, answered.tag, sender.tag, Role.CALLEE),
            remote_contact=(None if request is None else _first_contact(request)) or reuse.remote_contact,
            remote_uri=_address_text(caller.display, canonical_aor(caller.uri) or caller.uri),
        )  # I3: no NOTIFY until the ACK

    def on_ack(self, request: Request, now: float, *, hold_hint: bool | None = None) -> list[EngineAction]:
        """An end-to-end ACK the proxy relayed: I4 (caller's ACK), O15/O16 (member's late-offer SDP)."""
        out: list[EngineAction] = []
        try:
            sender, target = _side(from_addr(request)), _side(to_addr(request))
        except MalformedMessage:
            return out
        call_id = request.call_id
        if not call_id:
            return out
        hold = hint_or_sdp(hold_hint, request.body)
        for app in self._call_appearances(call_id):
            leg = app.leg
            if leg is None or not leg.matches(call_id, sender.tag, target.tag):
                continue
            if app.state is AppearanceState.ACTIVE_PENDING and leg.member_tag == target.tag:
                self._fire(app, Trigger.CALLER_ACK, now, out)  # I4
            elif leg.member_tag == sender.tag and hold is not None:
                self._fire(app, Trigger.ACK_HOLD if hold else Trigger.ACK_RETRIEVE, now, out)
        self._flush(now, out)
        return out

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
            sub = self._subs.get(key)
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
        for stored in appearances:
            if stored.state is AppearanceState.IDLE:
                continue
            app = stored
            if timeout_of(stored) is Trigger.EARLY_EXPIRED:
                # Its proxy transactions died with the restart: a full early_ttl from now for a
                # late CANCEL or answer to reach it, then O20/I8.
                app = attrs.evolve(stored, touched_at=max(stored.touched_at, now))
            key = AppearanceKey(app.line, app.index)
            self._appearances.setdefault(app.line, {})[app.index] = app
            if app.call_id is not None:
                self._calls.setdefault(app.call_id, set()).add(key)
            ttl = self._ttl(app)
            if ttl is not None:
                out.append(StartTimer(key, TTL_TIMER, max(0.0, _ttl_start(app) + ttl - now)))
        for sub in subscriptions:
            if sub.expires <= now or sub.state.terminated:
                continue
            self._store(sub)
            out.append(StartTimer(sub.key, EXPIRY_TIMER, sub.expires - now))
            if sub.event is Package.CALL_INFO:
                self._enqueue(sub, _Pending(_Content.FULL_STATE, force=True), now, out)
        self._flush(now, out)
        return out


class BargeNotSupported(SipError, status=403, reason="Barge-in not supported"):
    """A pickup-shaped INVITE aimed at an active appearance (sca.md 7.6, phase 1)."""


def hint_or_sdp(hint: bool | None, body: bytes) -> bool | None:
    """The hold verdict of a message: the routing layer's hint, else its SDP (6.2)."""
    return hint if hint is not None else sdp_hold(body)


def _hold_trigger(info: AppearanceInfo | None) -> Trigger:
    """The trigger of a member's hold offer: the Call-Info ``appearance-state`` of the
    re-INVITE picks private (O14, O14b) or public hold explicitly (O14b); without it, a
    plain hold (O14), which leaves a held appearance's privacy as it is."""
    state = None if info is None else info.state
    if state is AppearanceState.HELD_PRIVATE:
        return Trigger.OWNER_PRIVATE_HOLD
    if state is AppearanceState.HELD:
        return Trigger.OWNER_PUBLIC_HOLD
    return Trigger.OWNER_HOLD


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
