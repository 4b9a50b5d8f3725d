"""The in-use appearances of the shared lines, and their TTLs (sca.md sections 6, 9, Q18).

:class:`AppearanceBoard` holds every non-idle appearance by line and index, finds
a call's appearances by Call-ID, keeps the RFC 4028 session timer of each call,
and runs triggers through the transition table of
:mod:`scaserver.sca.appearance` (:meth:`AppearanceBoard.fire`): it stores the
new value, re-arms or cancels the appearance's TTL and marks the line as owing
its subscribers a NOTIFY (:meth:`AppearanceBoard.take_changed_lines`).  Pure.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

import attrs

from scaserver.sca.appearance import Appearance, AppearanceState, Step, Trigger, allowed, apply, timeout_of
from scaserver.sca.line import SharedLine
from scaserver.sip.actions import CancelTimer, Deliver, EngineAction, StartTimer

#: Timer name of an appearance's TTL (sca.md section 9), keyed by its AppearanceKey.
TTL_TIMER: Final = "sca-ttl"


@attrs.frozen
class AppearanceKey:
    """Timer key of an appearance's TTL (sca.md 9): the line and the index."""

    line: str
    index: int


@attrs.frozen
class AppearanceTtls:
    """The TTLs of section 9 (seconds): a seize not dialled (Q2), a member's answer not
    ACKed (I5), a call not answered (O20, I8), a call in progress with no signalling (Q18,
    0 = never swept)."""

    seized: float = 120.0
    active_pending: float = 35.0
    early: float = 200.0
    max_call_age: float = 0.0


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


@attrs.define
class AppearanceBoard:
    """Non-idle appearances by line and by call, their session timers and TTLs."""

    ttls: AppearanceTtls = attrs.field(factory=AppearanceTtls)
    _appearances: dict[str, dict[int, Appearance]] = attrs.field(factory=dict, init=False)
    _calls: dict[str, set[AppearanceKey]] = attrs.field(factory=dict, init=False)
    _sessions: dict[str, _SessionTimer] = attrs.field(factory=dict, init=False)
    changed_lines: dict[str, None] = attrs.field(factory=dict, init=False)
    """The lines whose state changed since :meth:`take_changed_lines` last took them (read
    as is by the engine: most inputs change no line and owe no NOTIFY)."""

    # Look-ups.

    def in_use(self, aor: str) -> bool:
        return bool(self._appearances.get(aor))

    def appearances(self, aor: str | None = None) -> list[Appearance]:
        """In-use appearances, by line then index."""
        if aor is not None:  # every NOTIFY's full state: one line, most often one appearance
            line = self._appearances.get(aor)
            if not line:
                return []
            return list(line.values()) if len(line) == 1 else [line[index] for index in sorted(line)]
        result: list[Appearance] = []
        for name in sorted(self._appearances):
            line = self._appearances[name]
            result.extend(line[index] for index in sorted(line))
        return result

    def appearance(self, aor: str, index: int) -> Appearance | None:
        return self._appearances.get(aor, {}).get(index)

    def of_call(self, call_id: str) -> list[Appearance]:
        """The appearances following call ``call_id``, by line then index."""
        keys = self._calls.get(call_id)
        if not keys:
            return []
        # Most calls follow one appearance: no sort, no key function called per key.
        ordered = keys if len(keys) == 1 else sorted(keys, key=lambda k: (k.line, k.index))
        result = []
        for key in ordered:
            app = self._appearances.get(key.line, {}).get(key.index)
            if app is not None:
                result.append(app)
        return result

    def lowest_free(self, line: SharedLine, preferred: int = 0) -> int | None:
        """``preferred`` when free, else the lowest free index of ``line``; None when full."""
        in_use = self._appearances.get(line.aor, {})
        if preferred > 0 and line.allows_index(preferred) and preferred not in in_use:
            return preferred
        index = 1
        while index in in_use:
            index += 1
        return index if line.allows_index(index) else None

    def take_changed_lines(self) -> list[str]:
        """The lines whose state changed since the last call, oldest first (4.1)."""
        if not self.changed_lines:  # after most inputs: no new list and dict
            return []
        lines, self.changed_lines = list(self.changed_lines), {}
        return lines

    # Transitions.

    def fire(self, app: Appearance, trigger: Trigger, now: float, **changes: Any) -> list[EngineAction]:
        """Run ``trigger`` on ``app`` (see :meth:`step`); the actions only."""
        return self.step(app, trigger, now, **changes)[1]

    def step(
        self, app: Appearance, trigger: Trigger, now: float, **changes: Any
    ) -> tuple[Step, list[EngineAction]]:
        """Run ``trigger`` on ``app`` (fields in ``changes`` set first when the row exists) and commit."""
        if changes and allowed(app.state, trigger):
            app = app.changed(changes)
        step = apply(app, trigger, now)
        out: list[EngineAction] = [Deliver(step.fact)]
        if step.rule is None:
            return step, out
        new = step.appearance
        old = self._appearances.get(new.line, {}).get(new.index)
        key = AppearanceKey(new.line, new.index)
        self._commit(old, new, key)
        ttl = self._ttl(new)
        if ttl is not None:
            out.append(StartTimer(key, TTL_TIMER, ttl))
        elif old is not None and self._ttl(old) is not None:
            out.append(CancelTimer(key, TTL_TIMER))
        if new.state is not AppearanceState.ACTIVE_PENDING:
            self.changed_lines[new.line] = None
        return step, out

    def touch(self, app: Appearance, now: float) -> list[EngineAction]:
        """Signalling for a seize with no transition (Q2): its TTL starts again."""
        self._appearances[app.line][app.index] = attrs.evolve(app, touched_at=now)
        return [StartTimer(AppearanceKey(app.line, app.index), TTL_TIMER, self.ttls.seized)]

    def _commit(self, old: Appearance | None, new: Appearance, key: AppearanceKey) -> None:
        line = self._appearances.get(new.line, {})
        # The calls' Call-IDs read once (``Appearance.call_id`` is a property).
        old_call = None if old is None or old.leg is None else old.leg.call_id
        if old_call is not None:
            calls = self._calls.get(old_call)
            if calls is not None:
                calls.discard(key)
                if not calls:
                    del self._calls[old_call]
        if new.state is AppearanceState.IDLE:
            line.pop(new.index, None)
            if not line:
                self._appearances.pop(new.line, None)
        else:
            self._appearances.setdefault(new.line, line)[new.index] = new
            if new.leg is not None:
                self._calls.setdefault(new.leg.call_id, set()).add(key)
        if old_call is not None and old_call not in self._calls:
            self._sessions.pop(old_call, None)  # the call's last appearance ended

    # TTLs (section 9).

    def _ttl(self, app: Appearance) -> float | None:
        """The TTL of ``app`` in its state (section 9, O20, I8, Q18), None when it has none."""
        trigger = timeout_of(app)
        if trigger is Trigger.SEIZE_EXPIRED:
            return self.ttls.seized
        if trigger is Trigger.PENDING_EXPIRED:
            return self.ttls.active_pending
        if trigger is Trigger.EARLY_EXPIRED:
            return self.ttls.early
        session = self._session_of(app) if trigger is Trigger.CALL_STALE else None
        if session is not None:
            return session.timeout_s
        if trigger is Trigger.CALL_STALE and self.ttls.max_call_age > 0:
            return self.ttls.max_call_age
        return None

    def _session_of(self, app: Appearance) -> _SessionTimer | None:
        leg = app.leg
        return None if leg is None else self._sessions.get(leg.call_id)

    def on_ttl(self, key: AppearanceKey, now: float) -> list[EngineAction]:
        """The TTL timer of an appearance fired: its timeout trigger, or the timer again when
        signalling (or a session refresh) came since it was started."""
        app = self.appearance(key.line, key.index)
        if app is None:
            return []
        ttl, trigger = self._ttl(app), timeout_of(app)
        if ttl is None or trigger is None:
            return []
        since = _ttl_start(app)
        session = self._session_of(app) if trigger is Trigger.CALL_STALE else None
        if session is not None:
            since, trigger = max(since, session.refreshed_at), Trigger.SESSION_EXPIRED
        if since + ttl > now + 1e-6:
            return [StartTimer(key, TTL_TIMER, since + ttl - now)]
        return self.fire(app, trigger, now)

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
        for app in self.of_call(call_id):
            ttl = self._ttl(app)
            key = AppearanceKey(app.line, app.index)
            if timeout_of(app) is not Trigger.CALL_STALE:
                continue
            if ttl is None:
                out.append(CancelTimer(key, TTL_TIMER))
            else:
                out.append(StartTimer(key, TTL_TIMER, max(0.0, max(_ttl_start(app), now) + ttl - now)))
        return out

    # Restore (10.2).

    def restore(self, appearances: Iterable[Appearance], now: float) -> list[EngineAction]:
        """Load the stored appearances and re-arm their TTLs; restored early states get a full
        early TTL from ``now``: their proxy transactions died with the restart."""
        out: list[EngineAction] = []
        for stored in appearances:
            if stored.state is AppearanceState.IDLE:
                continue
            app = stored
            if timeout_of(stored) is Trigger.EARLY_EXPIRED:
                # A full early_ttl from now for a late CANCEL or answer to reach it, then O20/I8.
                app = attrs.evolve(stored, touched_at=max(stored.touched_at, now))
            key = AppearanceKey(app.line, app.index)
            self._appearances.setdefault(app.line, {})[app.index] = app
            if app.call_id is not None:
                self._calls.setdefault(app.call_id, set()).add(key)
            ttl = self._ttl(app)
            if ttl is not None:
                out.append(StartTimer(key, TTL_TIMER, max(0.0, _ttl_start(app) + ttl - now)))
        return out
