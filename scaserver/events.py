"""Typed in-process events and the synchronous bus that carries them.

Subsystems (sca, registrar, proxy, push, parking) never import each other; they
publish past-tense facts here and subscribe to the ones they care about.  The
bus is synchronous and in-process: ``publish`` calls every handler before it
returns, in subscription order.  A handler that raises is reported to the
bus's ``on_handler_error`` callback and does not stop the others.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any, TypeVar

E = TypeVar("E")
Handler = Callable[[Any], None]


class EventBus:
    def __init__(self, on_handler_error: Callable[[object, BaseException], None] | None = None) -> None:
        self._handlers: defaultdict[type, list[Handler]] = defaultdict(list)
        self._on_handler_error = on_handler_error
        # The handlers of each published type, its bases' included, in order; dropped on every
        # (un)subscription.  publish runs a few dozen times per SIP transaction.
        self._plan: dict[type, tuple[Handler, ...]] = {}

    def subscribe(self, event_type: type[E], handler: Callable[[E], None]) -> None:
        self._handlers[event_type].append(handler)
        self._plan.clear()

    def unsubscribe(self, event_type: type[E], handler: Callable[[E], None]) -> None:
        handlers = self._handlers.get(event_type)
        if handlers and handler in handlers:
            handlers.remove(handler)
            self._plan.clear()

    def _handlers_of(self, event_type: type) -> tuple[Handler, ...]:
        plan = tuple(handler for base in event_type.__mro__ for handler in self._handlers.get(base, ()))
        self._plan[event_type] = plan
        return plan

    def publish(self, event: object) -> None:
        event_type = type(event)
        plan = self._plan.get(event_type)
        if plan is None:
            plan = self._handlers_of(event_type)
        for handler in plan:
            try:
                handler(event)
            except Exception as error:
                if self._on_handler_error is None:
                    raise
                self._on_handler_error(event, error)
