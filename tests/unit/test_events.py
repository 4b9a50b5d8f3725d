"""EventBus: handlers by type and base type, in order; (un)subscribing between publishes."""

from __future__ import annotations

from scaserver.events import EventBus


class Base:
    pass


class Derived(Base):
    pass


def test_handlers_of_the_type_then_of_its_bases_in_subscription_order() -> None:
    bus, seen = EventBus(), list[str]()
    bus.subscribe(Base, lambda e: seen.append("base"))
    bus.subscribe(Derived, lambda e: seen.append("derived-1"))
    bus.subscribe(object, lambda e: seen.append("object"))
    bus.subscribe(Derived, lambda e: seen.append("derived-2"))
    bus.publish(Derived())
    assert seen == ["derived-1", "derived-2", "base", "object"]
    seen.clear()
    bus.publish(Base())
    assert seen == ["base", "object"]


def test_a_handler_subscribed_after_a_publish_gets_the_next_one() -> None:
    bus, seen = EventBus(), list[object]()
    bus.publish(Derived())  # nobody listens yet
    bus.subscribe(Base, seen.append)
    event = Derived()
    bus.publish(event)
    assert seen == [event]


def test_an_unsubscribed_handler_gets_nothing_more() -> None:
    bus, seen = EventBus(), list[object]()
    bus.subscribe(Derived, seen.append)
    first = Derived()
    bus.publish(first)
    bus.unsubscribe(Derived, seen.append)
    bus.publish(Derived())
    assert seen == [first]


def test_a_failing_handler_is_reported_and_the_others_still_run() -> None:
    errors: list[tuple[object, BaseException]] = []
    bus, seen = EventBus(on_handler_error=lambda e, error: errors.append((e, error))), list[object]()

    def fail(_: object) -> None:
        raise RuntimeError("boom")

    bus.subscribe(Derived, fail)
    bus.subscribe(Derived, seen.append)
    event = Derived()
    bus.publish(event)
    assert seen == [event]
    assert [(e, str(error)) for e, error in errors] == [(event, "boom")]

