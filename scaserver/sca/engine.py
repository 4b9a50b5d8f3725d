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

The engine is a facade over its parts, each a module of this package:
:class:`~scaserver.sca.notifier.Notifier` (SUBSCRIBE, the rows of 3.2, the life of
subscriptions) with its :class:`~scaserver.sca.registry.SubscriptionRegistry`
(subscriptions by dialog, replacement, owner and line; the cap; reboot memory) and
:class:`~scaserver.sca.outbox.NotifyOutbox` (the NOTIFY order rule of section 4), and
:mod:`scaserver.sca.lifetime` (their expiry, deactivation and restore);
:class:`~scaserver.sca.board.AppearanceBoard` (in-use appearances, triggers through
the table of :mod:`scaserver.sca.appearance`, TTLs and session timers);
:class:`~scaserver.sca.calls.CallTracker` and :class:`~scaserver.sca.answers.AnswerTracker`
(call signalling turned into triggers).  The engine owns the lines and their
aliases, renders Call-Info (5.1) and sends the group NOTIFYs each input owes (4.1).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Hashable, Iterable
from typing import Any

import attrs

from scaserver.sca import lifetime
from scaserver.sca.answers import AnswerTracker
from scaserver.sca.appearance import ADMIN_SET_TARGETS, Appearance, AppearanceState, Trigger
from scaserver.sca.board import TTL_TIMER, AppearanceBoard, AppearanceKey, AppearanceTtls
from scaserver.sca.callinfo import AppearanceInfo, CallInfo
from scaserver.sca.calls import CallTracker, RequestPlan
from scaserver.sca.expiry import EXPIRY_TIMER, SWEEP_KEY
from scaserver.sca.line import SharedLine, canonical_aor, host_part
from scaserver.sca.notifier import Notifier, identity_of
from scaserver.sca.outbox import Content, NotifyContext
from scaserver.sca.settings import ScaSettings, ServerRole
from scaserver.sca.subscription import DialogKey, Identity, Subscription, SubscriptionKey
from scaserver.sip.actions import EngineAction
from scaserver.sip.errors import MalformedMessage
from scaserver.sip.headers import from_addr, to_addr
from scaserver.sip.keys import ServerKey
from scaserver.sip.message import Peer, Request, Response

#: The engine's interface; its parts live in notifier, registry, outbox, board, calls and answers.
__all__ = [
    "EXPIRY_TIMER",
    "SWEEP_KEY",
    "TTL_TIMER",
    "AppearanceError",
    "AppearanceKey",
    "NotifyContext",
    "RequestPlan",
    "ScaEngine",
]


class AppearanceError(Exception):
    """A management request (sca.md section 11) that names no usable appearance or state."""


@attrs.define
class ScaEngine:
    """The SCA application logic of sca.md sections 3-9, without I/O: the facade over the
    notifier (SUBSCRIBE, subscriptions, NOTIFYs), the appearance board and call tracking."""

    settings: ScaSettings = attrs.field(factory=ScaSettings)
    role: ServerRole = attrs.field(factory=ServerRole)
    tag_factory: Callable[[], str] = attrs.field(default=lambda: secrets.token_hex(8))
    _lines: dict[str, SharedLine] = attrs.field(factory=dict, init=False)
    _board: AppearanceBoard = attrs.field(init=False)
    _notifier: Notifier = attrs.field(init=False)
    _calls: CallTracker = attrs.field(init=False)
    _answers: AnswerTracker = attrs.field(init=False)
    _aliases: dict[str, str] = attrs.field(factory=dict, init=False)
    # The last full state rendered: its line, the call_info_uri setting it was rendered with,
    # the appearances it shows, its text (the NOTIFYs of one change to a line's members carry
    # the same text, rendered once; the info URI is a function of the line and the setting).
    _last_full_state: tuple[str, str, tuple[Appearance, ...], str] | None = attrs.field(
        default=None, init=False
    )

    def __attrs_post_init__(self) -> None:
        settings = self.settings
        ttls = AppearanceTtls(
            settings.seized_ttl, settings.active_pending_ttl, settings.early_ttl, settings.max_call_age
        )
        self._board = AppearanceBoard(ttls)
        self._notifier = Notifier(
            settings,
            self.role,
            self._board,
            self._alias,
            self.line,
            self._provisioned_line,
            self._render,
            self.tag_factory,
        )
        self._calls = CallTracker(
            self._board,
            self._alias,
            self.is_sca,
            self.line,
            self._notifier.end_seize,
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
        return self._notifier.registry.has_call_info(aor)

    def _provisioned_line(self, aor: str) -> SharedLine | None:
        return self._lines.get(aor)

    def set_aliases(self, aliases: dict[str, str]) -> None:
        """Replace the alias map (sca.md Q26): canonical alias AoR -> canonical line AoR."""
        self._aliases = dict(aliases)

    def _alias(self, aor: str | None) -> str | None:
        if aor is None:
            return None
        return self._aliases.get(aor, aor)

    # Read access (RPC, metrics).

    def subscriptions(self) -> list[Subscription]:
        return self._notifier.registry.all()

    def subscription(self, key: SubscriptionKey) -> Subscription | None:
        return self._notifier.registry.get(key)

    def appearances(self, aor: str | None = None) -> list[Appearance]:
        """In-use appearances, by line then index."""
        return self._board.appearances(aor)

    def appearance(self, aor: str, index: int) -> Appearance | None:
        return self._board.appearance(aor, index)

    # SUBSCRIBE (section 3).

    def on_subscribe(
        self,
        request: Request,
        transaction: ServerKey,
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
        who = identity if identity is not None else identity_of(request, authenticated_user)
        return self._flushed(
            self._notifier.on_subscribe(request, transaction, now, peer=peer, identity=who), now
        )

    def needs_identity(self, request: Request, peer: Peer) -> bool:
        """Whether an in-dialog SUBSCRIBE of a known subscription comes from another flow than
        the subscription's, so that its sender must prove it is the owner (authenticate)."""
        return self._notifier.needs_identity(request, peer)

    # NOTIFY (section 4) and the Call-Info it carries (5.1).

    def on_notify_response(
        self, context: NotifyContext, response: Response, now: float
    ) -> list[EngineAction]:
        """A response to one of our NOTIFYs (RFC 6665 4.2.2, sca.md section 4 "NOTIFY outcome")."""
        return self._flushed(self._notifier.outbox.on_response(context, response, now), now)

    def on_notify_failed(self, context: NotifyContext, now: float) -> list[EngineAction]:
        """Our NOTIFY timed out or could not be sent: the subscription is removed (RFC 6665 4.2.2)."""
        return self._flushed(self._notifier.outbox.on_failed(context, now), now)

    def flow_failed(self, flow: Peer, now: float) -> tuple[list[EngineAction], int]:
        """The flow ``flow`` failed: its subscriptions end without a NOTIFY (RFC 5626 4.4);
        the actions and how many ended."""
        out, count = self._notifier.flow_failed(flow, now)
        return self._flushed(out, now), count

    def _flushed(self, out: list[EngineAction], now: float) -> list[EngineAction]:
        """``out`` followed by the group NOTIFYs it owes (4.1): none, without a call, when it
        changed no line (most inputs)."""
        if not self._board.changed_lines:
            return out
        return out + self._notifier.flush(now)

    def _info_uri(self, aor: str) -> str:
        mode = self.settings.call_info_uri
        if mode == "domain":
            return "sip:" + host_part(aor)
        if mode == "aor":
            return aor
        return mode

    def full_state(self, aor: str) -> str:
        """The full-state Call-Info value of a line: in-use appearances and the idle wildcard."""
        mode = self.settings.call_info_uri
        shown = tuple(self._board.appearances(aor))
        last = self._last_full_state
        if last is not None and last[2] == shown and last[0] == aor and last[1] == mode:
            return last[3]  # the text is a function of the URI and the appearances' values
        uri = self._info_uri(aor)
        entries = [AppearanceInfo(uri, app.index, app.state, app.remote_uri) for app in shown]
        entries.append(AppearanceInfo(uri, None, AppearanceState.IDLE))
        text = CallInfo(tuple(entries)).render()
        self._last_full_state = (aor, mode, shown, text)
        return text

    def _index_info(self, aor: str, index: int) -> str:
        return AppearanceInfo(self._info_uri(aor), index).render()

    def _render(self, sub: Subscription, content: Content) -> str:
        if content is Content.FULL_STATE:
            return self.full_state(sub.aor)
        return self._index_info(sub.aor, sub.index)

    # Timers (section 9).

    def on_timer(self, key: Hashable, name: str, now: float) -> list[EngineAction]:
        """A timer of ours fired: subscription expiry, or an appearance TTL (seized 120 s, pending 35 s)."""
        out: list[EngineAction] = []
        if name == EXPIRY_TIMER and key is SWEEP_KEY:
            out = lifetime.sweep_expired(self._notifier, now)
        elif name == TTL_TIMER and isinstance(key, AppearanceKey):
            out = self._board.on_ttl(key, now)
        return self._flushed(out, now)

    def on_session_refreshed(self, call_id: str, timeout_s: float | None, now: float) -> list[EngineAction]:
        """A 2xx relayed for the call set up or refreshed its RFC 4028 session timer: its
        appearances in progress end (cause session-expired) ``timeout_s`` after ``now`` unless
        refreshed again; None: the session has no timer (the stale-call sweep applies)."""
        return self._board.on_session_refreshed(call_id, timeout_s, now)

    # Incoming calls (I1, push-and-parking.md 6.11).

    def incoming_index(self, aor: str, call_id: str) -> int | None:
        """The appearance an incoming call to line ``aor`` shows on: the one it alerts on
        already, else the lowest free one it will take (push-and-parking.md 6.11 ``call.line``)."""
        for app in self._board.of_call(call_id):
            if app.line == aor:
                return app.index
        return self._board.lowest_free(self.line(aor))

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
        free = self._board.lowest_free(self.line(aor))
        if free is None:
            raise AppearanceError(f"no free appearance on {aor}")
        return free, self._flushed(
            self._board.fire(Appearance(aor, free), Trigger.ADMIN_SEIZE, now, owner=owner), now
        )

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
        app = self.appearance(aor, index) or Appearance(aor, index)
        changes: dict[str, Any] = {} if uri is None else {"remote_uri": uri}
        return self._flushed(self._board.fire(app, trigger, now, **changes), now)

    def release_appearance(self, aor: str, index: int, now: float) -> list[EngineAction]:
        """``sca.release_appearance``: free an in-use index (> 0)."""
        if index < 1:
            raise AppearanceError(f"appearance index must be >= 1, not {index}")
        app = self.appearance(aor, index)
        if app is None:
            raise AppearanceError(f"appearance {index} of {aor} is not in use")
        return self._flushed(self._board.fire(app, Trigger.ADMIN_RELEASE, now), now)

    def deactivate(self, keys: Iterable[SubscriptionKey], now: float) -> list[EngineAction]:
        """``sca.deactivate_*``: end subscriptions with ``terminated;reason=deactivated`` and full state."""
        return self._flushed(lifetime.deactivate(self._notifier, keys, now), now)

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
        out, owed = self.restore_state(lines, subscriptions, appearances, now)
        return out + self.notify_restored(owed, now)

    def restore_state(
        self,
        lines: Iterable[SharedLine],
        subscriptions: Iterable[Subscription],
        appearances: Iterable[Appearance],
        now: float,
    ) -> tuple[list[EngineAction], list[DialogKey]]:
        """:meth:`restore` without its NOTIFYs: the state, and the dialogs owed a full-state
        NOTIFY, for :meth:`notify_restored` to send a few at a time (a large restore need not
        build them all at once)."""
        self.provision(lines)
        out = self._board.restore(appearances, now)
        done, owed = lifetime.restore(self._notifier, subscriptions, now)
        return out + done, owed  # lines changed meanwhile are flushed with the NOTIFYs

    def notify_restored(self, dialogs: Iterable[DialogKey], now: float) -> list[EngineAction]:
        """The full-state NOTIFYs (10.3) owed to ``dialogs``, some of those
        :meth:`restore_state` returned."""
        return self._flushed(lifetime.notify_restored(self._notifier, dialogs, now), now)
