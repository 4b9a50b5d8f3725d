"""The notifier of the SCA packages: SUBSCRIBE handling and the life of subscriptions
(sca.md section 3, RFC 6665 section 4.2).

:class:`Notifier` checks a SUBSCRIBE in the order of the table of 3.2 (one function
or method per row), answers it, and adds, refreshes (3.5) or ends the
subscription; a line-seize subscription seizes its appearance (3.7).  It keeps
the subscriptions in a :class:`~scaserver.sca.registry.SubscriptionRegistry` and
sends their NOTIFYs through a :class:`~scaserver.sca.outbox.NotifyOutbox`.
Authorisation (3.2 row 6) is described in :mod:`scaserver.sca.engine`.  Pure:
every method takes ``now`` and returns its actions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import attrs

from scaserver.sca.appearance import Appearance, AppearanceState, Trigger, allowed
from scaserver.sca.board import AppearanceBoard
from scaserver.sca.callinfo import CallInfo, CallInfoError
from scaserver.sca.line import SharedLine, canonical_aor
from scaserver.sca.outbox import (
    FORCED_FULL_STATE,
    FORCED_INDEX,
    FULL_STATE,
    UNSUBSCRIBED,
    Content,
    NotifyOutbox,
    Pending,
)
from scaserver.sca.registry import SubscriptionRegistry
from scaserver.sca.settings import ScaSettings, ServerRole
from scaserver.sca.subscription import (
    EVENT_NAMES,
    PACKAGES,
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
from scaserver.sip.actions import Deliver, EngineAction, Respond
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
from scaserver.sip.keys import ServerKey
from scaserver.sip.message import Headers, Peer, Request, Transport
from scaserver.sip.responses import make_response, response_for
from scaserver.sip.uri import SipUri

ALLOW_EVENTS: Final = "call-info, line-seize"
_ALLOW: Final = Headers((("Allow-Events", ALLOW_EVENTS),))
"""The headers of a 489 (RFC 6665 8.2.2): built once, not for every SUBSCRIBE."""


class MissingEvent(SipError, status=400, reason="Missing Event"):
    """A SUBSCRIBE without an Event header (sca.md 3.2 row 2)."""


class MissingCallInfo(SipError, status=400, reason="Missing Call-Info"):
    """A line-seize SUBSCRIBE without a Call-Info header (3.2 row 9)."""


class InvalidCallInfo(SipError, status=400, reason="Invalid Call-Info"):
    """A line-seize SUBSCRIBE whose Call-Info or appearance-index cannot be used (3.2 row 10)."""


@attrs.frozen
class _DialogHeaders:
    """The dialog headers of a SUBSCRIBE (3.2 row 4)."""

    call_id: str
    cseq: int
    from_tag: str
    to_tag: str | None
    from_uri: str
    to_uri: str
    subscriber: str


@attrs.frozen
class _Checked:
    """A SUBSCRIBE that passed the checks of 3.2 rows 2-12."""

    package: Package
    aor: str
    dialog: _DialogHeaders
    granted: int
    index: int
    existing: Subscription | None
    replacement: ReplacementKey


def identity_of(request: Request, user: str | None) -> Identity | None:
    """The identity of a SUBSCRIBE given no other: the digest user, else its From AoR."""
    if user is not None:
        return Identity.authenticated(user)
    try:
        aor = canonical_aor(str(from_addr(request).uri))
    except MalformedMessage:
        return None
    return None if aor is None else Identity.unauthenticated(aor)


def _event_package(request: Request) -> Package:
    """Rows 2-3: an Event header naming a package this server serves."""
    event_text = request.headers.get("Event")
    if event_text is None:  # row 2
        raise MissingEvent("SUBSCRIBE without Event")
    try:  # row 3
        package_name = parse_event(event_text).package.lower()
    except MalformedMessage as error:
        raise BadEvent(f"unreadable Event {event_text!r}", headers=_ALLOW) from error
    package = PACKAGES.get(package_name)
    if package is None:
        raise BadEvent(f"event package {package_name!r} is not served", headers=_ALLOW)
    return package


def _dialog_headers(request: Request) -> _DialogHeaders:
    """Row 4: dialog headers, Request-URI, exactly one Contact."""
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
    return _DialogHeaders(
        call_id, sequence.number, sender.tag, target.tag, str(sender.uri), str(target.uri), str(found[0].uri)
    )


def _seize_index(request: Request) -> int:
    """Rows 9-10: the appearance-index a line-seize SUBSCRIBE asks for, 0 for any."""
    lines = request.headers.lines("Call-Info")
    if not lines:  # row 9
        raise MissingCallInfo("line-seize SUBSCRIBE without Call-Info")
    try:  # row 10
        info = CallInfo.parse(lines).first()
    except CallInfoError as error:
        raise InvalidCallInfo(str(error)) from error
    if info is None:
        return 0
    if info.index is None:
        raise InvalidCallInfo("appearance-index=* in a line-seize SUBSCRIBE")
    return info.index


def may_use(aor: str, identity: Identity | None, line: SharedLine | None) -> bool:
    """Row 6 for an initial SUBSCRIBE: trusted peers, the AoR's own user, the members listed
    by ``line`` (the provisioned line of ``aor``, None when it is none)."""
    if identity is None:
        return False
    if identity.trusted:
        return True
    if identity.user is not None:
        own = aor.partition(":")[2].partition("@")[0] == identity.user
        return own or (line is not None and line.lists(user=identity.user))
    if identity.aor is not None:
        return identity.aor == aor or (line is not None and line.lists(aor=identity.aor))
    return False


def authorise_dialog(
    sub: Subscription, identity: Identity | None, peer: Peer | None, line: SharedLine | None
) -> None:
    """Row 6 in dialog: an in-dialog SUBSCRIBE is the dialog's when it comes from the
    subscription's flow, or from its owner; a subscription with no recorded owner accepts
    whoever may use its AoR (``line`` its provisioned line)."""
    if peer == sub.peer:
        return
    if identity is not None and identity.name == sub.owner:
        return
    if not sub.owner and may_use(sub.aor, identity, line):
        return
    who = identity.name if identity is not None else "nobody"
    raise Forbidden(f"{who} from {peer} does not own the subscription of {sub.subscriber} to {sub.aor}")


@attrs.define
class Notifier:
    """SUBSCRIBE handling and the subscriptions of the shared lines (sca.md section 3).

    ``resolve`` maps an AoR through the line aliases; ``line`` gives a line's
    settings and ``provisioned`` the provisioned line or None; ``render`` the
    Call-Info a NOTIFY of a subscription carries.
    """

    settings: ScaSettings
    role: ServerRole
    board: AppearanceBoard
    resolve: Callable[[str | None], str | None]
    line: Callable[[str], SharedLine]
    provisioned: Callable[[str], SharedLine | None]
    render: Callable[[Subscription, Content], str]
    tag_factory: Callable[[], str]
    registry: SubscriptionRegistry = attrs.field(init=False)
    outbox: NotifyOutbox = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.registry = SubscriptionRegistry(
            self.settings.max_subscriptions_per_identity, self.settings.reboot_memory_s
        )
        self.outbox = NotifyOutbox(
            self.registry, self.role.contact, self.render, self._lost, self.role.contact_tls
        )

    # SUBSCRIBE (3.2).

    def on_subscribe(
        self,
        request: Request,
        transaction: ServerKey,
        now: float,
        *,
        peer: Peer | None,
        identity: Identity | None,
    ) -> list[EngineAction]:
        """Handle a SUBSCRIBE in the check order of sca.md 3.2; errors become their response
        and a :class:`SubscribeRefused` fact."""
        try:
            checked = self._check(request, identity, peer)
        except SipError as error:
            aor = canonical_aor(request.uri) if not isinstance(error, CallDoesNotExist) else None
            refused = SubscribeRefused(aor, identity.name if identity else "", error.status, error.detail)
            return [Respond(transaction, response_for(request, error)), Deliver(refused)]
        return self._accept(checked, request=request, transaction=transaction, now=now, peer=peer)

    def needs_identity(self, request: Request, peer: Peer) -> bool:
        """Whether an in-dialog SUBSCRIBE of a known subscription comes from another flow than
        the subscription's, so that its sender must prove it is the owner (authenticate)."""
        try:
            sender, target = from_addr(request), to_addr(request)
        except MalformedMessage:
            return False
        if not target.tag or not sender.tag or not request.call_id:
            return False
        sub = self.registry.by_dialog(DialogKey(request.call_id, sender.tag, target.tag))
        return sub is not None and sub.peer != peer

    def _check(self, request: Request, identity: Identity | None, peer: Peer | None) -> _Checked:
        package = _event_package(request)  # rows 2-3
        dialog = _dialog_headers(request)  # row 4
        existing, aor = self._subscribed(request, dialog)  # row 11 first for an in-dialog SUBSCRIBE
        requested = expires(request)  # row 5
        self._authorise(aor, existing, identity, peer)  # rows 6-7
        granted = self._granted(package, requested)  # row 8
        index = _seize_index(request) if package is Package.LINE_SEIZE else 0  # rows 9-10
        if existing is not None and dialog.cseq < existing.subscribe_cseq:
            raise ServerInternalError("SUBSCRIBE CSeq lower than the last one (RFC 3261 12.2.2)")
        owner = identity.name if identity is not None else ""
        if existing is not None and existing.owner:
            owner = existing.owner
        flow = peer if peer is not None or existing is None else existing.peer
        replacement = ReplacementKey(aor, package, owner, dialog.subscriber, flow)
        if existing is None and granted > 0:
            self.registry.check_cap(replacement, identity)
            if package is Package.LINE_SEIZE:  # row 12
                index = self._allocate_seize(self.line(aor), replacement, index)
        return _Checked(package, aor, dialog, granted, index, existing, replacement)

    def _subscribed(self, request: Request, dialog: _DialogHeaders) -> tuple[Subscription | None, str]:
        """Row 11: the subscription of an in-dialog SUBSCRIBE (481 without one) and its AoR;
        else the AoR of the Request-URI, through the aliases."""
        if dialog.to_tag:
            existing = self.registry.by_dialog(DialogKey(dialog.call_id, dialog.from_tag, dialog.to_tag))
            if existing is None:
                raise CallDoesNotExist("no such subscription dialog")
            return existing, existing.aor
        aor = self.resolve(canonical_aor(request.uri))
        if aor is None:
            raise BadRequest("the Request-URI names no SIP user")
        return None, aor

    def _authorise(
        self, aor: str, existing: Subscription | None, identity: Identity | None, peer: Peer | None
    ) -> None:
        """Row 6: the dialog's sender, or for an initial SUBSCRIBE the same 403 for every AoR
        it may not use; row 7: an AoR that is no provisioned line when only those are served."""
        if existing is not None:
            authorise_dialog(existing, identity, peer, self.provisioned(existing.aor))
        elif not may_use(aor, identity, self.provisioned(aor)):
            raise Forbidden(f"{identity.name if identity else 'nobody'} may not subscribe to {aor}")
        if self.role.provisioned_only and self.provisioned(aor) is None:
            raise NotFound(f"{aor} is not a shared line")

    def _granted(self, package: Package, requested: int | None) -> int:
        """Row 8: an Expires below the minimum gets 423; the package's maximum caps it."""
        minimum = self.settings.min_expires
        if requested is not None and 0 < requested < minimum:
            raise IntervalTooBrief(
                f"Expires {requested} < {minimum}", headers=Headers.of(("Min-Expires", str(minimum)))
            )
        maximum = (
            self.settings.call_info_max_expires
            if package is Package.CALL_INFO
            else self.settings.line_seize_max_expires
        )
        return maximum if requested is None else min(requested, maximum)

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
            current = self.board.appearance(line.aor, wanted)
            if not line.allows_index(wanted) or current is not None:
                raise busy  # O2; 7.3: an index in any non-idle state is busy
            return wanted
        free = self.board.lowest_free(line)
        if free is None:
            raise busy
        return free

    def _own_seize(self, replacement: ReplacementKey) -> Appearance | None:
        """The appearance seized by the line-seize subscription ``replacement`` replaces (Q2)."""
        sub = self.registry.by_replacement(replacement)
        return None if sub is None else self._seized_by(sub)

    def _seized_by(self, sub: Subscription) -> Appearance | None:
        """The appearance ``sub``'s contact holds seized on ``sub``'s index, if any."""
        app = self.board.appearance(sub.aor, sub.index)
        if app is not None and app.state is AppearanceState.SEIZED and app.owner == sub.subscriber:
            return app
        return None

    # Accepting (3.5, 3.7).

    def _contact_for(self, peer: Peer | None) -> str:
        """Our Contact for a subscriber reached over ``peer``: the TLS one over TLS."""
        tls = peer is not None and peer.transport is Transport.TLS and self.role.contact_tls
        return self.role.contact_tls if tls else self.role.contact

    def _accept(
        self, checked: _Checked, *, request: Request, transaction: ServerKey, now: float, peer: Peer | None
    ) -> list[EngineAction]:
        record_route = tuple(request.headers.values("Record-Route"))
        ok = self.settings.call_info_ok_code if checked.package is Package.CALL_INFO else 200
        local_tag = checked.dialog.to_tag or self.tag_factory()
        response_headers = Headers(  # canonical names: no Headers.of pass
            (
                ("Event", EVENT_NAMES[checked.package]),
                ("Expires", str(checked.granted)),
                ("Contact", f"<{self._contact_for(peer)}>"),
                ("Allow-Events", ALLOW_EVENTS),
            )
        )
        out: list[EngineAction] = [
            Respond(transaction, make_response(request, ok, headers=response_headers, to_tag=local_tag))
        ]
        if checked.granted == 0:
            ended = checked.existing  # in dialog: no subscription built for the dialog it ends
            if ended is None:
                ended = self._subscription(
                    checked, local_tag=local_tag, record_route=record_route, peer=peer, now=now
                )
            return out + self._unsubscribe(checked, ended, now=now)
        if checked.existing is not None:
            return out + self._refresh(
                checked.existing, checked, record_route=record_route, peer=peer, now=now
            )
        new = self._subscription(checked, local_tag=local_tag, record_route=record_route, peer=peer, now=now)
        return out + self._add(checked, new, now=now)

    def _subscription(
        self,
        checked: _Checked,
        *,
        local_tag: str,
        record_route: tuple[str, ...],
        peer: Peer | None,
        now: float,
    ) -> Subscription:
        """The subscription an initial SUBSCRIBE creates, expiring ``granted`` after ``now``."""
        dialog = checked.dialog
        return Subscription(
            subscriber=dialog.subscriber,
            aor=checked.aor,
            event=checked.package,
            expires=now + checked.granted,
            call_id=dialog.call_id,
            from_tag=dialog.from_tag,
            to_tag=local_tag,
            record_route=record_route,
            subscribe_cseq=dialog.cseq,
            server_id=self.role.server_id,
            index=checked.index,
            local_uri=dialog.to_uri,
            remote_uri=dialog.from_uri,
            peer=peer,
            owner=checked.replacement.owner,
        )

    def _refresh(
        self,
        existing: Subscription,
        checked: _Checked,
        *,
        record_route: tuple[str, ...],
        peer: Peer | None,
        now: float,
    ) -> list[EngineAction]:
        """An in-dialog SUBSCRIBE with Expires > 0 (3.5); a new flow (the owner authenticated
        from another address) becomes the subscription's."""
        sub = attrs.evolve(
            existing,
            expires=now + checked.granted,
            subscribe_cseq=checked.dialog.cseq,
            record_route=record_route or existing.record_route,
            peer=peer or existing.peer,
            owner=checked.replacement.owner,
        )
        key = self.store(sub)
        out: list[EngineAction] = [
            Deliver(SubscriptionRefreshed(sub)),
            *self.registry.arm_expiry(sub, now, stored=key),
        ]
        if sub.event is Package.CALL_INFO:
            return out + self.outbox.queue(sub.dialog, FORCED_FULL_STATE, now)
        out += self.outbox.queue(sub.dialog, FORCED_INDEX, now)
        own = self._seized_by(sub)
        if own is not None:
            out += self.board.touch(own, now)
        return out

    def _add(self, checked: _Checked, sub: Subscription, *, now: float) -> list[EngineAction]:
        """An initial SUBSCRIBE; it replaces the subscription of the same owner, contact and
        flow without a terminating NOTIFY (3.5, Q2)."""
        out: list[EngineAction] = []
        replaced = self.registry.by_replacement(checked.replacement)
        if replaced is not None:
            out += self._remove(replaced, "replaced")
            self._drop_dialog(replaced)
        key = self.store(sub)
        out += [Deliver(SubscriptionAdded(sub)), *self.registry.arm_expiry(sub, now, stored=key)]
        if sub.event is Package.CALL_INFO:
            if replaced is not None or self.registry.was_lost(sub, now):  # reboot detection (3.5)
                for app in self.board.appearances(sub.aor):
                    if app.owner == sub.subscriber:
                        out += self.board.fire(app, Trigger.MEMBER_REBOOTED, now)
            return out + self.outbox.queue(sub.dialog, FORCED_FULL_STATE, now)
        return out + self._seize(sub, replaced, now)

    def _seize(self, sub: Subscription, replaced: Subscription | None, now: float) -> list[EngineAction]:
        """A new line-seize subscription seizes its index (O1, 3.7 step 3), releasing the index
        of the subscription it replaces; its own seize, seized again out of dialog, stays (Q2)."""
        out: list[EngineAction] = []
        own = self.board.appearance(sub.aor, sub.index)
        if replaced is not None and replaced.index != sub.index:
            previous = self.board.appearance(sub.aor, replaced.index)
            if (
                previous is not None
                and previous.owner == sub.subscriber
                and allowed(previous.state, Trigger.SEIZE_RELEASED)
            ):
                out += self.board.fire(previous, Trigger.SEIZE_RELEASED, now)
        if own is None:  # O1 (3.7 step 3)
            out += self.board.fire(Appearance(sub.aor, sub.index, owner=sub.subscriber), Trigger.SEIZE, now)
        else:  # the contact's own seize, seized again out of dialog (Q2)
            out += self.board.touch(own, now)
        return out + self.outbox.queue(sub.dialog, FORCED_INDEX, now)

    def _unsubscribe(self, checked: _Checked, ended: Subscription, *, now: float) -> list[EngineAction]:
        """Expires: 0 (3.5): terminated NOTIFY, removal, and the line-seize release (O3, row 14).

        Only the subscription being ended (its dialog, or out of dialog the one of the same
        owner, contact and flow) releases a seize, and only its own; anything else is the
        idempotent un-subscribe of row 14 and releases nothing.  ``ended`` is the dialog's
        subscription: ``checked.existing`` in dialog, else the one an initial SUBSCRIBE with
        Expires: 0 would have created."""
        stored = checked.existing
        if stored is None:
            stored = self.registry.by_replacement(checked.replacement)
        index = stored.index if stored is not None and stored.index else checked.index
        dialog_sub = ended.ending(index=index, expires=now)
        out: list[EngineAction] = []
        if stored is not None and stored.dialog != dialog_sub.dialog:
            self._drop_dialog(stored)
        if stored is not None:
            out += self._remove(stored, "unsubscribed")
        self.outbox.unsubscribed(dialog_sub, index=index, now=now)
        content = Content.FULL_STATE if checked.package is Package.CALL_INFO else Content.INDEX
        if stored is not None and stored.event is Package.LINE_SEIZE and stored.index > 0:
            app = self.board.appearance(stored.aor, stored.index)
            if app is not None and app.owner == stored.subscriber:
                out += self.board.fire(app, Trigger.SEIZE_RELEASED, now)
        return out + self.outbox.queue(dialog_sub.dialog, UNSUBSCRIBED[content], now)

    # Bookkeeping.

    def store(self, sub: Subscription) -> SubscriptionKey:
        """Store ``sub`` and open its dialog's NOTIFY queue; the key the registry shares."""
        key = self.registry.store(sub)
        self.outbox.open(sub)
        return key

    def _drop_dialog(self, sub: Subscription) -> None:
        """Forget a replaced dialog without a terminating NOTIFY (3.5)."""
        self.registry.forget_dialog(sub)
        self.outbox.drop(sub.dialog)

    def _remove(self, sub: Subscription, reason: str) -> list[EngineAction]:
        removed = self.registry.remove(sub, reason)
        if removed:
            self.outbox.close(sub)
        return removed

    def end(self, sub: Subscription, reason: str, now: float) -> list[EngineAction]:
        """Terminate a subscription from our side: final NOTIFY with ``reason``, removal, and
        the release of its seize (expiry O4, deactivation)."""
        content = Content.FULL_STATE if sub.event is Package.CALL_INFO else Content.INDEX
        out = self._remove(sub, reason)
        self.outbox.keep_for_final(sub)
        final = Pending(content, terminated=True, reason=reason, force=True)
        return out + self.outbox.queue(sub.dialog, final, now)

    def end_seize(self, app: Appearance, now: float) -> list[EngineAction]:
        """End the line-seize subscription holding ``app`` with reason noresource (3.7, O6, O13)."""
        out: list[EngineAction] = []
        for sub in self.registry.of_line(app.line):
            if sub.event is Package.LINE_SEIZE and sub.index == app.index:
                out += self.end(sub, "noresource", now)
        return out

    def release_seize_of(self, sub: Subscription, now: float) -> list[EngineAction]:
        """A line-seize subscription ended: the seize its contact holds expires (O4) when the
        table has the row (and its guard: not dialled yet)."""
        if sub.event is not Package.LINE_SEIZE:
            return []
        app = self.board.appearance(sub.aor, sub.index)
        if app is None or app.owner != sub.subscriber or not allowed(app.state, Trigger.SEIZE_EXPIRED):
            return []
        return self.board.fire(app, Trigger.SEIZE_EXPIRED, now)

    def flow_failed(self, flow: Peer, now: float) -> tuple[list[EngineAction], int]:
        """The flow ``flow`` is dead (a NAT ping unanswered, an outbound connection closed):
        its subscriptions are removed without a NOTIFY (one would only time out in the dead
        flow), as if their NOTIFY had failed: a seize is released and the loss remembered for
        the reboot rule of 3.5; the phone's next SUBSCRIBE gets the full state.  The actions
        and how many were removed."""
        out: list[EngineAction] = []
        doomed = [sub for sub in self.registry.all() if sub.peer == flow]
        for sub in doomed:
            self.outbox.drop(sub.dialog)
            out += self.registry.remove(sub, "flow-failed") + self._lost(sub, now)
        return out, len(doomed)

    def _lost(self, sub: Subscription, now: float) -> list[EngineAction]:
        """``sub`` was removed after its NOTIFY failed: remembered for reboot detection when its
        contact owns an appearance (3.5), its seize released."""
        if any(app.owner == sub.subscriber for app in self.board.appearances(sub.aor)):
            self.registry.remember_loss(sub, now)
        return self.release_seize_of(sub, now)

    def flush(self, now: float) -> list[EngineAction]:
        """The group NOTIFYs owed to every line changed by this input (4.1)."""
        out: list[EngineAction] = []
        while lines := self.board.take_changed_lines():
            for aor in lines:
                # The dialogs are read before the first NOTIFY goes: queueing one removes at
                # most its own subscription (a NOTIFY with nowhere to go), whose queue is gone.
                for dialog in self.registry.call_info_dialogs(aor):
                    out += self.outbox.queue(dialog, FULL_STATE, now)
        return out
