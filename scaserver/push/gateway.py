"""The push gateway contract (push-and-parking.md section 5) as pure functions and data.

:func:`encode` builds the JSON body and headers of section 5.1; :func:`decode` maps a gateway
answer to an :class:`Answer` per the table of section 5.2; :class:`RetryPolicy` holds the
timing of section 5.3 and decides, per attempt, whether and when to retry;
:class:`PushQueue` is the bounded, prioritised queue in front of the concurrency limit.
The HTTP client that runs them is ``scaserver.edge.pushgateway``.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Generic, TypeVar

import attrs

from scaserver.push.pnparams import token_hash
from scaserver.push.settings import PushSettings

PROTOCOL_VERSION = 1
T = TypeVar("T")


class PushType(enum.Enum):
    CALL = "call"
    CANCEL = "cancel"
    REG_REFRESH = "reg-refresh"
    MESSAGE = "message"


class CancelReason(enum.Enum):
    ANSWERED_ELSEWHERE = "answered-elsewhere"
    CALLER_CANCELLED = "caller-cancelled"
    TIMEOUT = "timeout"
    DECLINED = "declined"


@attrs.frozen
class CallInfo:
    """The ``call`` object of section 5.1; ``line`` is ``{"aor":..., "index":...}`` for SCA."""

    call_id: str
    park_id: str
    from_uri: str
    to_uri: str
    from_display: str | None = None
    line: tuple[str, int] | None = None


@attrs.frozen
class PushRequest:
    """One push attempt (section 5.1).  ``id`` is the idempotency key, kept across retries."""

    id: str
    type: PushType
    provider: str
    prid: str = attrs.field(repr=lambda prid: token_hash(prid)[:12])
    param: str
    aor: str
    ttl: int
    created_at: float
    device_type: str | None = None
    call: CallInfo | None = None
    reason: CancelReason | str | None = None  # cancel reason, or "mid-METHOD" for a reg-refresh


def _timestamp(at: float) -> str:
    moment = datetime.fromtimestamp(at, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def body_of(request: PushRequest) -> dict[str, object]:
    """The JSON object of section 5.1."""
    body: dict[str, object] = {
        "version": PROTOCOL_VERSION,
        "id": request.id,
        "type": request.type.value,
        "provider": request.provider,
        "prid": request.prid,
        "param": request.param,
        "aor": request.aor,
        "device_type": request.device_type,
    }
    if request.call is not None:
        call = request.call
        body["call"] = {
            "call_id": call.call_id,
            "park_id": call.park_id,
            "from_uri": call.from_uri,
            "from_display": call.from_display,
            "to_uri": call.to_uri,
            "line": None if call.line is None else {"aor": call.line[0], "index": call.line[1]},
        }
    if request.reason is not None:
        reason = request.reason
        body["reason"] = reason.value if isinstance(reason, CancelReason) else reason
    body["ttl"] = request.ttl
    body["created_at"] = _timestamp(request.created_at)
    return body


def signature(body: bytes, secret: bytes) -> str:
    """``X-Scaserver-Signature`` value: ``sha256=`` + hex HMAC-SHA256 of the body."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


@attrs.frozen
class EncodedPush:
    body: bytes
    headers: tuple[tuple[str, str], ...]


def encode(request: PushRequest, settings: PushSettings) -> EncodedPush:
    """Body and headers of the POST of section 5.1 (``gateway_token`` and ``gateway_secret``
    "" send no Authorization and no signature)."""
    body = json.dumps(body_of(request), separators=(",", ":"), sort_keys=False).encode("utf-8")
    headers: list[tuple[str, str]] = [("Content-Type", "application/json")]
    if settings.gateway_token:
        headers.append(("Authorization", f"Bearer {settings.gateway_token}"))
    if settings.gateway_secret:
        headers.append(("X-Scaserver-Signature", signature(body, settings.gateway_secret.encode())))
    return EncodedPush(body, tuple(headers))


class Outcome(enum.Enum):
    """How one gateway answer resolves an attempt (section 5.2 "scaserver" column)."""

    SENT = "sent"
    INVALID = "invalid"  # token dead: section 4.4, no retry
    FAILED = "failed"  # no retry
    RETRY = "retry"  # transient: retry per section 5.3


@attrs.frozen
class Answer:
    """A decoded gateway answer.  ``invalidated_at`` only for INVALID (else None: use now);
    ``retry_after`` seconds when the gateway sent ``Retry-After``; ``credentials`` marks
    401/403 (logged at most once a minute by the edge)."""

    outcome: Outcome
    status: int | None
    detail: str = ""
    retry_after: float | None = None
    invalidated_at: float | None = None
    provider_id: str | None = None
    credentials: bool = False


def _json_object(body: bytes) -> dict[str, object]:
    try:
        value = json.loads(body.decode("utf-8")) if body else {}
    except (UnicodeDecodeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def parse_retry_after(value: str | None, now: float) -> float | None:
    """``Retry-After`` as delta-seconds or HTTP-date (RFC 9110 section 10.2.3), in seconds."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - now)


def _parse_time(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        # APNs reports milliseconds since the epoch; seconds are accepted too.
        return float(value) / 1000.0 if value > 1e11 else float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def decode(status: int, retry_after: str | None, body: bytes, now: float) -> Answer:
    """Section 5.2: what a gateway HTTP answer means for the attempt."""
    data = _json_object(body)
    detail = str(data.get("reason") or data.get("status") or "")
    if status in (200, 201, 202):
        provider_id = data.get("provider_id")
        return Answer(Outcome.SENT, status, detail, provider_id=str(provider_id) if provider_id else None)
    if status == 410:
        return Answer(Outcome.INVALID, status, detail, invalidated_at=_parse_time(data.get("invalidated_at")))
    if status in (429, 503) or 500 <= status <= 599:
        return Answer(Outcome.RETRY, status, detail, retry_after=parse_retry_after(retry_after, now))
    return Answer(Outcome.FAILED, status, detail, credentials=status in (401, 403))


def transport_error(detail: str) -> Answer:
    """A connect error or time-out: transient (section 5.2 last row)."""
    return Answer(Outcome.RETRY, None, detail)


@attrs.frozen
class RetryPolicy:
    """Section 5.3 timing and limits (seconds): ``settings`` are ``[push]``, the rest fixed."""

    settings: PushSettings = attrs.field(factory=PushSettings)
    backoff: float = 0.2  # first retry; doubled for each further one
    jitter: float = 0.2  # +-20 %
    deadline_margin: float = 1.0  # never start an attempt ending after deadline - margin

    def retry_delay(
        self,
        attempts_made: int,
        answer: Answer,
        now: float,
        deadline: float | None,
        random: Callable[[], float],
    ) -> float | None:
        """Seconds to wait before the next attempt, or None when no further attempt is made.

        ``random`` returns a float in [0, 1) for the jitter.  ``Retry-After`` replaces the
        backoff when given.  An attempt that could not finish (delay + ``request_timeout``)
        before ``deadline - deadline_margin`` is not started.
        """
        if answer.outcome is not Outcome.RETRY or attempts_made >= self.settings.max_attempts:
            return None
        if answer.retry_after is not None:
            delay = answer.retry_after
        else:
            base = self.backoff * (2 ** (attempts_made - 1))
            delay = base * (1.0 + self.jitter * (2.0 * random() - 1.0))
        if not self.can_start(now + delay, deadline):
            return None
        return delay

    def can_start(self, at: float, deadline: float | None) -> bool:
        return deadline is None or at + self.settings.request_timeout <= deadline - self.deadline_margin


_PRIORITY = {PushType.CANCEL: 0, PushType.CALL: 0, PushType.MESSAGE: 1, PushType.REG_REFRESH: 1}


@attrs.define
class PushQueue(Generic[T]):
    """The bounded queue of section 5.3: ``cancel`` and ``call`` before ``reg-refresh``,
    FIFO within a class; :meth:`put` refuses (``push_dropped``) when ``limit`` items wait."""

    limit: int
    _urgent: deque[T] = attrs.field(factory=deque)
    _background: deque[T] = attrs.field(factory=deque)

    def __len__(self) -> int:
        return len(self._urgent) + len(self._background)

    def put(self, item: T, kind: PushType) -> bool:
        if len(self) >= self.limit:
            return False
        (self._urgent if _PRIORITY[kind] == 0 else self._background).append(item)
        return True

    def get(self) -> T | None:
        if self._urgent:
            return self._urgent.popleft()
        if self._background:
            return self._background.popleft()
        return None

    def discard(self, predicate: Callable[[T], bool]) -> list[T]:
        """Remove and return the waiting items ``predicate`` selects (aborted retries, 6.5)."""
        removed: list[T] = []
        for queue in (self._urgent, self._background):
            keep = [item for item in queue if not predicate(item)]
            removed += [item for item in queue if predicate(item)]
            queue.clear()
            queue.extend(keep)
        return removed
