"""Push gateway contract (push-and-parking.md section 5) as pure functions."""

from __future__ import annotations

import hashlib
import hmac
import json

import attrs
import pytest

from scaserver.push.gateway import (
    Answer,
    CallInfo,
    CancelReason,
    Outcome,
    PushQueue,
    PushRequest,
    PushType,
    RetryPolicy,
    body_of,
    decode,
    encode,
    parse_retry_after,
    transport_error,
)
from scaserver.push.settings import PushSettings

CALL = PushRequest(
    id="6d1f3c0e-8a7b-4f0e-9a51-2b3c4d5e6f70",
    type=PushType.CALL,
    provider="apns",
    prid="<device token>",
    param="ABCDE12345.com.acme.phone.voip",
    aor="sip:200@example.com",
    ttl=28,
    created_at=1795515302.114,
    device_type="ios",
    call=CallInfo(
        "a84b4c76e66710@pbx.example.com",
        "p-000172",
        "sip:+4930123456@example.com",
        "sip:200@example.com",
        "Alice",
    ),
)


def test_body_matches_spec_example() -> None:
    assert body_of(CALL) == {
        "version": 1,
        "id": "6d1f3c0e-8a7b-4f0e-9a51-2b3c4d5e6f70",
        "type": "call",
        "provider": "apns",
        "prid": "<device token>",
        "param": "ABCDE12345.com.acme.phone.voip",
        "aor": "sip:200@example.com",
        "device_type": "ios",
        "call": {
            "call_id": "a84b4c76e66710@pbx.example.com",
            "park_id": "p-000172",
            "from_uri": "sip:+4930123456@example.com",
            "from_display": "Alice",
            "to_uri": "sip:200@example.com",
            "line": None,
        },
        "ttl": 28,
        "created_at": "2026-11-24T10:15:02.114Z",
    }


def test_cancel_with_line_and_reason() -> None:
    cancel = attrs.evolve(
        CALL,
        type=PushType.CANCEL,
        reason=CancelReason.ANSWERED_ELSEWHERE,
        call=attrs.evolve(CALL.call, line=("sip:line1@example.com", 2)) if CALL.call else None,
    )
    body = body_of(cancel)
    assert body["reason"] == "answered-elsewhere" and body["type"] == "cancel"
    assert body["call"] == {**body_of(CALL)["call"], "line": {"aor": "sip:line1@example.com", "index": 2}}  # type: ignore[dict-item]
    refresh = attrs.evolve(CALL, type=PushType.REG_REFRESH, call=None, reason="mid-BYE")
    assert "call" not in body_of(refresh) and body_of(refresh)["reason"] == "mid-BYE"


def test_encode_headers_bearer_and_signature() -> None:
    plain = encode(CALL, PushSettings(gateway_url="http://gw/push"))
    assert plain.headers == (("Content-Type", "application/json"),)
    assert json.loads(plain.body) == body_of(CALL)
    signed = encode(CALL, PushSettings(gateway_url="http://gw/push", gateway_token="tk", gateway_secret="s3"))
    digest = hmac.new(b"s3", signed.body, hashlib.sha256).hexdigest()
    assert signed.headers[1:] == (
        ("Authorization", "Bearer tk"),
        ("X-Scaserver-Signature", f"sha256={digest}"),
    )


@pytest.mark.parametrize(
    ("status", "body", "answer"),
    [
        (202, b'{"status":"sent","provider_id":"x1"}', Answer(Outcome.SENT, 202, "sent", provider_id="x1")),
        (200, b"", Answer(Outcome.SENT, 200)),
        (
            410,
            b'{"status":"token-invalid","reason":"Unregistered","invalidated_at":1700000000000}',
            Answer(Outcome.INVALID, 410, "Unregistered", invalidated_at=1700000000.0),
        ),
        (
            410,
            b'{"invalidated_at":"2023-11-14T22:13:20Z"}',
            Answer(Outcome.INVALID, 410, invalidated_at=1700000000.0),
        ),
        (410, b"[1]", Answer(Outcome.INVALID, 410)),
        (410, b'{"invalidated_at":"junk"}', Answer(Outcome.INVALID, 410)),
        (400, b"\xff", Answer(Outcome.FAILED, 400)),
        (401, b"", Answer(Outcome.FAILED, 401, credentials=True)),
        (403, b"", Answer(Outcome.FAILED, 403, credentials=True)),
        (404, b"", Answer(Outcome.FAILED, 404)),
        (500, b"", Answer(Outcome.RETRY, 500)),
    ],
)
def test_decode_table(status: int, body: bytes, answer: Answer) -> None:
    assert decode(status, None, body, now=0.0) == answer


def test_retry_after_forms() -> None:
    assert decode(503, "7", b"", 0.0).retry_after == 7.0
    assert decode(429, "Thu, 01 Jan 1970 00:00:10 GMT", b"", 4.0).retry_after == 6.0
    assert parse_retry_after("soon", 0.0) is None
    assert parse_retry_after(None, 0.0) is None


def test_retry_policy_backoff_jitter_and_deadline() -> None:
    policy = RetryPolicy()
    retry = transport_error("refused")
    assert policy.retry_delay(1, retry, 0.0, None, lambda: 0.5) == pytest.approx(0.2)
    assert policy.retry_delay(2, retry, 0.0, None, lambda: 0.0) == pytest.approx(0.4 * 0.8)
    assert policy.retry_delay(3, retry, 0.0, None, lambda: 0.5) is None  # max_attempts
    assert policy.retry_delay(1, Answer(Outcome.FAILED, 400), 0.0, None, lambda: 0.5) is None
    assert policy.retry_delay(1, Answer(Outcome.RETRY, 503, retry_after=0.0), 0.0, 10.0, lambda: 0.5) == 0.0
    # never start an attempt that cannot end before deadline - 1 s
    assert policy.retry_delay(1, retry, 0.0, 3.1, lambda: 0.5) is None
    assert policy.retry_delay(1, retry, 0.0, 3.3, lambda: 0.5) == pytest.approx(0.2)


def test_queue_priority_and_bound() -> None:
    queue: PushQueue[str] = PushQueue(3)
    assert queue.put("refresh", PushType.REG_REFRESH)
    assert queue.put("call", PushType.CALL)
    assert queue.put("cancel", PushType.CANCEL)
    assert not queue.put("dropped", PushType.CALL)
    assert len(queue) == 3
    assert queue.discard(lambda item: item == "cancel") == ["cancel"]
    assert [queue.get(), queue.get(), queue.get()] == ["call", "refresh", None]
