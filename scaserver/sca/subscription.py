"""Subscriptions to the ``call-info`` and ``line-seize`` packages (sca.md 3, 8.1, 10.1).

A subscription lives in one RFC 6665 dialog of which we are the notifier (UAS),
keyed by (Call-ID, subscriber's From-tag, our To-tag), and is identified by its
AoR, event, subscriber contact *and* that dialog: two phones behind two NATs
that both send ``Contact: <sip:2001@192.168.1.100:5060>`` are two
subscriptions, each NOTIFYed through its own flow.  It belongs to the
:class:`Identity` that made it (``owner``): only that identity, or the phone
sending from the subscription's flow, may refresh or end it.  An out-of-dialog
SUBSCRIBE by the same owner, contact and flow replaces the old dialog (3.5);
:class:`ReplacementKey` names what it replaces.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Final, NamedTuple

import attrs

from scaserver.sip.actions import Fact
from scaserver.sip.message import Peer


class Package(enum.Enum):
    """The two event packages (sca.md 3.1); ``code`` is the ``event`` column of 10.1."""

    __hash__ = object.__hash__  # members are singletons: identity hash in C, not Enum.__hash__

    CALL_INFO = "call-info"
    LINE_SEIZE = "line-seize"

    @property
    def code(self) -> int:
        return 1 if self is Package.CALL_INFO else 2

    @classmethod
    def from_code(cls, code: int) -> Package:
        if code == 1:
            return cls.CALL_INFO
        if code == 2:
            return cls.LINE_SEIZE
        raise ValueError(f"unknown sca event code {code}")


EVENT_NAMES: Final[Mapping[Package, str]] = {package: package.value for package in Package}
"""The Event header token of each package: a dict look-up, where ``Package.value`` runs the
enum's property in Python (once per NOTIFY)."""

PACKAGES: Final[Mapping[str, Package]] = {package.value: package for package in Package}
"""The package a (lower-case) Event token names: a dict look-up, where ``Package(token)``
runs the enum's ``__call__`` and ``__new__`` in Python (once per SUBSCRIBE)."""


class SubscriptionState(enum.Enum):
    """Subscription states with the ``state`` column codes of sca.md 10.1."""

    ACTIVE = 0
    PENDING = 1
    TERMINATED = 2
    TERMINATED_DEACTIVATED = 3
    TERMINATED_GIVEUP = 4
    TERMINATED_NORESOURCE = 5
    TERMINATED_PROBATION = 6
    TERMINATED_REJECTED = 7
    TERMINATED_TIMEOUT = 8

    @property
    def terminated(self) -> bool:
        return self.value >= SubscriptionState.TERMINATED.value

    @property
    def reason(self) -> str | None:
        """The RFC 6665 ``reason`` of a terminated state (None for a bare ``terminated``)."""
        if not self.terminated or self is SubscriptionState.TERMINATED:
            return None
        return self.name.removeprefix("TERMINATED_").lower()


@attrs.frozen
class Identity:
    """Who sent a SUBSCRIBE, as far as the server can tell.

    ``name`` is what a subscription or a seize is owned by: ``user:<digest user>``
    for an authenticated subscriber, ``peer:<address>`` for a trusted peer,
    ``aor:<From AoR>`` when authentication is off.  ``user`` is the digest user
    name and ``aor`` the From AoR, the two things a line's members are listed by.
    """

    name: str
    user: str | None = None
    aor: str | None = None
    trusted: bool = False

    @classmethod
    def authenticated(cls, user: str) -> Identity:
        return cls(f"user:{user}", user=user)

    @classmethod
    def trusted_peer(cls, host: str, aor: str | None) -> Identity:
        return cls(f"peer:{host}", aor=aor, trusted=True)

    @classmethod
    def unauthenticated(cls, aor: str) -> Identity:
        return cls(f"aor:{aor}", aor=aor)


class DialogKey(NamedTuple):
    """A subscription dialog: Call-ID, the subscriber's tag (From of its SUBSCRIBE), our tag.

    A subscription holds its key (:attr:`Subscription.dialog`), which the registry and the
    outbox look up several times per NOTIFY.  An immutable triple, a tuple so that it hashes
    and compares in C (a look-up by an equal key 0.19 -> 0.08 us against the frozen class
    with a ``__hash__`` of its own); the tables it keys hold no other tuples."""

    call_id: str
    remote_tag: str
    local_tag: str


class SubscriptionKey(NamedTuple):
    """The identity of a subscription: AoR, event, subscriber contact and its dialog
    (3.5); the columns a ``sca_subscriptions`` row is written and deleted by.  An immutable
    tuple, as :class:`DialogKey`, hashed and compared in C."""

    aor: str
    event: Package
    subscriber: str
    call_id: str
    from_tag: str
    to_tag: str

    @property
    def dialog(self) -> DialogKey:
        return DialogKey(self.call_id, self.from_tag, self.to_tag)


class ReplacementKey(NamedTuple):
    """What an out-of-dialog SUBSCRIBE replaces (3.5): the same AoR and event, subscribed by
    the same owner from the same contact over the same flow.  An immutable tuple, as
    :class:`DialogKey`, hashed and compared in C."""

    aor: str
    event: Package
    owner: str
    subscriber: str
    flow: Peer | None


_new_tuple: Final = tuple.__new__
"""A key built from all its fields by ``tuple.__new__`` itself: the ``__new__`` a NamedTuple
generates is a Python function around the same call (the keys of a subscription are built
several times per NOTIFY)."""


@attrs.frozen
class Subscription:
    """One subscription (sca.md 8.1; the columns of ``sca_subscriptions``, 10.1).

    ``subscriber`` is the SUBSCRIBE's Contact URI (key part and NOTIFY
    Request-URI); ``expires`` absolute seconds on the engine clock; dialog:
    ``call_id``, ``from_tag`` (the subscriber's), ``to_tag`` (ours);
    ``record_route`` the route set, in the order of the SUBSCRIBE's
    Record-Route values (UAS rule, RFC 3261 12.1.1); ``notify_cseq`` the CSeq
    number of the last NOTIFY sent in the dialog (0 before the first);
    ``subscribe_cseq`` the CSeq of the last accepted SUBSCRIBE; ``index`` the
    seized appearance of a ``line-seize`` subscription (0 otherwise);
    ``local_uri``/``remote_uri`` the SUBSCRIBE's To and From URIs, which become
    the NOTIFY's From and To (section 4; empty means the AoR); ``peer`` where
    the SUBSCRIBE came from (its flow), the NOTIFY's next hop when known;
    ``owner`` the :attr:`Identity.name` that made it (empty for a row restored
    from a table that did not record it).
    """

    subscriber: str
    aor: str
    event: Package
    expires: float
    call_id: str
    from_tag: str
    to_tag: str
    state: SubscriptionState = SubscriptionState.ACTIVE
    record_route: tuple[str, ...] = ()
    notify_cseq: int = 0
    subscribe_cseq: int = 0
    server_id: int = 0
    index: int = 0
    local_uri: str = ""
    remote_uri: str = ""
    peer: Peer | None = None
    owner: str = ""
    dialog: DialogKey = attrs.field(
        init=False,
        eq=False,
        repr=False,
        default=attrs.Factory(
            lambda sub: _new_tuple(DialogKey, (sub.call_id, sub.from_tag, sub.to_tag)), takes_self=True
        ),
    )
    """The dialog's key, built from ``call_id``, ``from_tag`` and ``to_tag`` with the value (not
    a constructor argument: ``attrs.evolve`` builds it anew), not part of its equality."""

    def with_notify_cseq(self, number: int) -> Subscription:
        """This subscription with ``notify_cseq`` = ``number`` (once per NOTIFY sent): the
        constructor with every field, not ``attrs.evolve`` (4.0 -> 1.6 us)."""
        return Subscription(
            self.subscriber,
            self.aor,
            self.event,
            self.expires,
            self.call_id,
            self.from_tag,
            self.to_tag,
            self.state,
            self.record_route,
            number,
            self.subscribe_cseq,
            self.server_id,
            self.index,
            self.local_uri,
            self.remote_uri,
            self.peer,
            self.owner,
        )

    def ending(self, *, index: int, expires: float) -> Subscription:
        """This subscription as its terminating NOTIFY describes it (an un-SUBSCRIBE): the
        appearance ``index`` and ``expires``; the constructor with every field (5.4 -> 1.4 us)."""
        return Subscription(
            self.subscriber,
            self.aor,
            self.event,
            expires,
            self.call_id,
            self.from_tag,
            self.to_tag,
            self.state,
            self.record_route,
            self.notify_cseq,
            self.subscribe_cseq,
            self.server_id,
            index,
            self.local_uri,
            self.remote_uri,
            self.peer,
            self.owner,
        )

    @property
    def key(self) -> SubscriptionKey:
        return _new_tuple(
            SubscriptionKey, (self.aor, self.event, self.subscriber, self.call_id, self.from_tag, self.to_tag)
        )

    @property
    def replacement(self) -> ReplacementKey:
        return _new_tuple(ReplacementKey, (self.aor, self.event, self.owner, self.subscriber, self.peer))

    @property
    def record_route_text(self) -> str:
        """The route set as stored in the ``record_route`` column: comma-joined values (10.1)."""
        return ", ".join(self.record_route)

    def remaining(self, now: float) -> int:
        """Whole seconds left, rounded to the nearest second and never negative."""
        return max(0, round(self.expires - now))


@attrs.frozen
class SubscriptionAdded(Fact):
    """Fact: a new subscription (or a new dialog replacing an old one for the same key, 3.5)."""

    subscription: Subscription


@attrs.frozen
class SubscriptionRefreshed(Fact):
    """Fact: an in-dialog SUBSCRIBE extended a subscription."""

    subscription: Subscription


@attrs.frozen
class SubscriptionNotified(Fact):
    """Fact: a NOTIFY went out in the subscription's dialog; ``subscription.notify_cseq`` is its CSeq."""

    subscription: Subscription


@attrs.frozen
class NotifyAnswered(Fact):
    """Fact: the subscriber answered our NOTIFY number ``cseq`` with a 2xx (RFC 6665 4.2.2)."""

    subscription: Subscription
    cseq: int
    status: int


@attrs.frozen
class SubscriptionRemoved(Fact):
    """Fact: a subscription ended; ``reason`` is ``unsubscribed``, ``timeout``, ``noresource``,
    ``deactivated``, ``replaced`` or ``notify-failed``."""

    subscription: Subscription
    reason: str


@attrs.frozen
class SubscribeRefused(Fact):
    """Fact: a SUBSCRIBE was answered with an error (``status``); ``detail`` says why, for
    the log only (the response never says more than its status line)."""

    aor: str | None
    identity: str
    status: int
    detail: str
