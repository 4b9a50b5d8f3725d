"""Push policy: invalidation 4.4, keep-alive 4.5, call roles 6.1, dedup 5.3."""

from __future__ import annotations

import pytest

from scaserver.push.pnparams import Keepalive, PushCoordinates
from scaserver.push.policy import (
    DevicePush,
    Invalidation,
    KeepalivePlan,
    PushPolicySettings,
    RefreshLimiter,
    Role,
    TokenInvalidated,
    call_push_targets,
    call_role,
    invalidate,
    keepalive_plan,
)

APNS = PushCoordinates("apns", "T1", "p", keepalive=Keepalive.EXTEND)
FCM = PushCoordinates("fcm", "T2", "p", keepalive=Keepalive.WAKE)
SETTINGS = PushPolicySettings()


def device(
    binding: str, coords: PushCoordinates = APNS, confirmed: float = 0.0, expires: float = 600.0
) -> DevicePush:
    return DevicePush(binding, "sip:200@example.com", coords, confirmed, expires)


def test_r13_invalidation_respects_confirmation_time() -> None:
    old, fresh, dormant, other = (
        device("old"),
        device("new", confirmed=50.0),
        device("d", expires=10.0),
        device("o", FCM),
    )
    result = invalidate([old, fresh, dormant, other], "apns", "T1", at=40.0, now=20.0)
    assert result == Invalidation(
        TokenInvalidated("apns", "T1", 40.0),
        (
            DevicePush(
                "old", "sip:200@example.com", APNS, 0.0, 600.0, push_capable=False, invalidated_at=40.0
            ),
        ),
        ("d",),
        ("new",),
    )
    again = invalidate(list(result.updated), "apns", "T1", at=45.0, now=20.0)
    assert again.updated == () and again.removed == ()


def test_extend_binding_is_retained_and_dormant() -> None:
    ios = device("a")
    assert not ios.dormant(599.0) and ios.dormant(600.0)
    assert ios.retained_until(SETTINGS) == 7 * 24 * 3600.0
    assert ios.alive(700.0, SETTINGS)
    dead = DevicePush("a", "x", APNS, 0.0, 600.0, push_capable=False)
    assert dead.retained_until(SETTINGS) == 600.0


@pytest.mark.parametrize(
    ("dev", "expires_at", "flow_open", "now", "settings", "role"),
    [
        (None, 100.0, False, 50.0, SETTINGS, Role.DIRECT),
        (None, 100.0, False, 150.0, SETTINGS, Role.NONE),  # R22
        (device("a"), 600.0, False, 10.0, SETTINGS, Role.PUSH),
        (device("a"), 600.0, True, 10.0, SETTINGS, Role.BOTH),
        (device("a"), 600.0, True, 700.0, SETTINGS, Role.PUSH),  # dormant: push only (R22)
        (device("a"), 600.0, True, 10.0, PushPolicySettings(ring_open_flows=False), Role.PUSH),
        (device("a", confirmed=5.0), 600.0, False, 10.0, PushPolicySettings(fresh_window=10.0), Role.DIRECT),
        (device("f", FCM), 600.0, False, 700.0, SETTINGS, Role.NONE),
        (
            DevicePush("a", "x", APNS, 0.0, 600.0, push_capable=False),
            600.0,
            False,
            10.0,
            SETTINGS,
            Role.DIRECT,
        ),
    ],
)
def test_call_roles(  # noqa: PLR0917 (one parameter per column of the table)
    dev: DevicePush | None,
    expires_at: float,
    flow_open: bool,
    now: float,
    settings: PushPolicySettings,
    role: Role,
) -> None:
    assert call_role(dev, expires_at=expires_at, flow_open=flow_open, now=now, settings=settings) is role


def test_r15_one_push_per_token() -> None:
    targets = call_push_targets(
        [device("a"), device("b"), device("c", FCM), DevicePush("d", "x", FCM, 0, 1, False)]
    )
    assert targets == (APNS, FCM)


def test_keepalive_plans() -> None:
    assert keepalive_plan(device("a"), SETTINGS) == KeepalivePlan(None, 600.0, 7 * 24 * 3600.0)
    assert keepalive_plan(device("f", FCM), SETTINGS) == KeepalivePlan(480.0, None, 600.0)
    pnsreg = PushCoordinates("fcm", "T3", pnsreg=True)
    assert keepalive_plan(device("p", pnsreg), SETTINGS) == KeepalivePlan(None, None, 600.0)
    short = device("s", FCM, confirmed=0.0, expires=60.0)
    assert keepalive_plan(short, SETTINGS).refresh_push_at == 0.0
    dead = DevicePush("a", "x", APNS, 0.0, 600.0, push_capable=False)
    assert keepalive_plan(dead, SETTINGS) == KeepalivePlan(None, None, 600.0)


def test_refresh_limiter_window() -> None:
    limiter = RefreshLimiter(120.0)
    assert limiter.allow(("fcm", "T"), 0.0)
    assert not limiter.allow(("fcm", "T"), 119.0)
    assert limiter.allow(("fcm", "T"), 120.0)
    limiter.forget(("fcm", "T"))
    assert limiter.allow(("fcm", "T"), 121.0)
    limiter.prune(500.0)
    assert limiter.allow(("fcm", "T"), 500.0)
