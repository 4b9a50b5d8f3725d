"""The ``sca.*`` methods (rpc.md 3.2, sca.md section 11), over the ``ScaControl`` seam.

Every Kamailio-named method exists and works, returning structured JSON; Kamailio's text
lines are the CLI's business (``scactl --text``).  Fault texts are Kamailio's, with the codes
of rpc.md 3.2 (400 bad argument, 404 not found, 500 failure).
"""

from __future__ import annotations

from collections.abc import Callable

from scaserver.control.jsonrpc import BadArgumentError, JsonValue, NotFoundError, ServerFailureError
from scaserver.control.registry import Arguments, Param, ParamType, Registry, Scope
from scaserver.control.seams import (
    AppearanceChange,
    AppearanceInfo,
    AppearanceRefusal,
    ScaControl,
    ScaEvent,
    SubscriptionInfo,
    parse_state,
)

SUBSCRIPTION_COUNT_USAGE = "usage: sca.subscription_count {call-info | line-seize}"
SHOW_SUBSCRIPTION_USAGE = (
    "usage: sca.show_subscription sip:user@domain {call-info | line-seize} [sip:user@IP]"
)


def _epoch(value: float) -> int:
    return int(value)


def subscription_json(subscription: SubscriptionInfo, now: float) -> dict[str, JsonValue]:
    """The rpc.md 3.2 "Subscription" object; ``expires_in`` is counted from ``now``."""
    return {
        "aor": subscription.aor,
        "event": subscription.event.value,
        "subscriber": subscription.subscriber,
        "contact": subscription.contact,
        "state": subscription.state,
        "expires_at": _epoch(subscription.expires_at),
        "expires_in": max(0, int(subscription.expires_at - now)),
        "call_id": subscription.call_id,
        "from_tag": subscription.from_tag,
        "to_tag": subscription.to_tag,
        "notify_cseq": subscription.notify_cseq,
        "subscribe_cseq": subscription.subscribe_cseq,
        "appearance_index": subscription.appearance_index,
    }


def appearance_json(appearance: AppearanceInfo) -> dict[str, JsonValue]:
    """The rpc.md 3.2 "Appearance" object."""
    return {
        "aor": appearance.aor,
        "index": appearance.index,
        "state": appearance.state.value,
        "owner": appearance.owner,
        "callee": appearance.callee,
        "appearance_uri": appearance.appearance_uri,
        "call_id": appearance.call_id,
        "member_tag": appearance.member_tag,
        "remote_tag": appearance.remote_tag,
        "role": appearance.role,
        "ctime": _epoch(appearance.ctime),
        "mtime": _epoch(appearance.mtime),
    }


def _change_json(change: AppearanceChange) -> dict[str, JsonValue]:
    document = appearance_json(change.appearance)
    document["notify_failed"] = list(change.notify_failed)
    return document


def _event(text: str, usage: str) -> ScaEvent:
    try:
        return ScaEvent(text)
    except ValueError:
        raise BadArgumentError(usage) from None


def _index(args: Arguments) -> int:
    index = args.integer("index")
    if index <= 0:
        raise BadArgumentError("appearance-index must be > 0")
    return index


def register_sca(registry: Registry, sca: ScaControl, clock: Callable[[], float]) -> None:
    """Add the ``sca.*`` methods; ``clock`` gives epoch seconds (for ``expires_in``)."""
    aor = Param("aor", doc="the line's AoR, sip:user@domain")
    event = Param("event", doc="call-info or line-seize")
    contact = Param("contact", doc="the subscriber's Contact URI")

    @registry.register("sca.all_subscriptions", scope=Scope.READ, doc="Lists every SCA subscription.")
    async def all_subscriptions(args: Arguments) -> JsonValue:
        now = clock()
        return [subscription_json(item, now) for item in sca.all_subscriptions()]

    @registry.register(
        "sca.subscription_count",
        event,
        scope=Scope.READ,
        doc="Counts the call-info or line-seize subscriptions.",
    )
    async def subscription_count(args: Arguments) -> JsonValue:
        chosen = _event(args.text("event"), SUBSCRIPTION_COUNT_USAGE)
        return {"event": chosen.value, "count": sca.subscription_count(chosen)}

    @registry.register(
        "sca.show_subscription",
        aor,
        event,
        Param("contact", optional=True, doc=contact.doc),
        scope=Scope.READ,
        doc="Shows the subscriptions of an AoR for an event, optionally only the one of a contact.",
    )
    async def show_subscription(args: Arguments) -> JsonValue:
        chosen = _event(args.text("event"), SHOW_SUBSCRIPTION_USAGE)
        now = clock()
        found = sca.show_subscription(args.text("aor"), chosen, args.optional_text("contact"))
        return [subscription_json(item, now) for item in found]

    @registry.register(
        "sca.subscribers", scope=Scope.READ, doc="Lists the distinct Contact URIs of call-info subscribers."
    )
    async def subscribers(args: Arguments) -> JsonValue:
        contacts = {item.contact for item in sca.all_subscriptions() if item.event is ScaEvent.CALL_INFO}
        return list(sorted(contacts))

    @registry.register(
        "sca.deactivate_all_subscriptions",
        scope=Scope.ADMIN,
        doc="Ends every subscription with a NOTIFY carrying terminated;reason=deactivated.",
    )
    async def deactivate_all_subscriptions(args: Arguments) -> JsonValue:
        now = clock()
        ended = await sca.deactivate_all_subscriptions()
        return [subscription_json(item, now) for item in ended.subscriptions]

    @registry.register(
        "sca.deactivate_subscription",
        aor,
        event,
        contact,
        scope=Scope.ADMIN,
        doc="Ends one subscription with a NOTIFY carrying terminated;reason=deactivated.",
    )
    async def deactivate_subscription(args: Arguments) -> JsonValue:
        chosen = _event(
            args.text("event"),
            "usage: sca.deactivate_subscription sip:user@domain {call-info | line-seize} sip:user@IP",
        )
        now = clock()
        ended = await sca.deactivate_subscription(args.text("aor"), chosen, args.text("contact"))
        if ended is None or not ended.subscriptions:
            raise NotFoundError("Subscription not found")
        document = subscription_json(ended.subscriptions[0], now)
        document["notify_failed"] = list(ended.notify_failed)
        return document

    @registry.register("sca.all_appearances", scope=Scope.READ, doc="Lists every non-idle appearance.")
    async def all_appearances(args: Arguments) -> JsonValue:
        return [appearance_json(item) for item in sca.all_appearances()]

    @registry.register(
        "sca.show_appearance",
        aor,
        scope=Scope.READ,
        doc="Shows every appearance index of one line, idle ones included.",
    )
    async def show_appearance(args: Arguments) -> JsonValue:
        line_aor = args.text("aor")
        line = sca.show_appearance(line_aor)
        if line is None:
            raise NotFoundError(f"No appearances for {line_aor}")
        return {
            "aor": line.aor,
            "max_appearances": line.max_appearances,
            "appearances": [appearance_json(item) for item in line.appearances],
        }

    @registry.register(
        "sca.seize_appearance",
        aor,
        Param("owner_contact", doc="the seizing member's Contact URI"),
        scope=Scope.ADMIN,
        doc="Seizes the lowest free appearance of a line for a member and notifies the group.",
    )
    async def seize_appearance(args: Arguments) -> JsonValue:
        outcome = await sca.seize_appearance(args.text("aor"), args.text("owner_contact"))
        if isinstance(outcome, AppearanceRefusal):
            raise ServerFailureError("Failed to seize line")
        return _change_json(outcome)

    @registry.register(
        "sca.update_appearance",
        aor,
        Param("index", ParamType.INTEGER, doc="appearance-index, >= 1"),
        Param("state", doc="idle, seized, progressing, alerting, active, held or held-private"),
        Param("appearance_uri", optional=True, doc="the appearance-uri shown to the group"),
        scope=Scope.ADMIN,
        doc="Sets the state (and appearance-uri) of an in-use appearance and notifies the group.",
    )
    async def update_appearance(args: Arguments) -> JsonValue:
        line_aor, index, state_text = args.text("aor"), args.integer("index"), args.text("state")
        state = parse_state(state_text)
        if state is None:
            raise BadArgumentError(f"{state_text}: invalid state")
        outcome = await sca.update_appearance(line_aor, index, state, args.optional_text("appearance_uri"))
        if isinstance(outcome, AppearanceRefusal):
            raise NotFoundError(f"Failed to update {line_aor} appearance-index {index}")
        return _change_json(outcome)

    @registry.register(
        "sca.release_appearance",
        aor,
        Param("index", ParamType.INTEGER, doc="appearance-index, >= 1"),
        scope=Scope.ADMIN,
        doc="Releases an in-use appearance (it becomes idle) and notifies the group.",
    )
    async def release_appearance(args: Arguments) -> JsonValue:
        line_aor, index = args.text("aor"), _index(args)
        outcome = await sca.release_appearance(line_aor, index)
        if outcome is AppearanceRefusal.NO_LINE:
            raise NotFoundError(f"No appearances for {line_aor}")
        if isinstance(outcome, AppearanceRefusal):
            raise NotFoundError(f"{line_aor} appearance index {index} is not in use")
        return _change_json(outcome)

    @registry.register(
        "sca.flush", scope=Scope.ADMIN, doc="Writes pending subscription changes to the database now."
    )
    async def flush(args: Arguments) -> JsonValue:
        return {"written": await sca.flush()}
