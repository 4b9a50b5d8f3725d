"""The device push registry (push-and-parking.md 4.3, 4.4)."""

from __future__ import annotations

from typing import Final

from scaserver.push.devices import DeviceRegistry
from scaserver.push.pnparams import Keepalive, PushCoordinates
from scaserver.push.policy import DevicePush, TokenInvalidated

APNS: Final = PushCoordinates("apns", "TOK1", "T.app.voip")
NEW_TOKEN: Final = PushCoordinates("apns", "TOK2", "T.app.voip")
DORMANT: Final = PushCoordinates("fcm", "TOK1", "", keepalive=Keepalive.EXTEND)


def test_a_confirmation_records_the_device_and_a_later_one_keeps_its_pushes_for_the_same_token() -> None:
    devices = DeviceRegistry()
    devices.confirmed("m1", "sip:alice@example.com", APNS, 10.0, 3610.0)
    devices.pushed("m1", 20.0)
    devices.woke("m1", 850)
    devices.confirmed("m1", "sip:alice@example.com", APNS, 30.0, 3630.0)
    assert devices.get("m1") == DevicePush(
        "m1", "sip:alice@example.com", APNS, 30.0, 3630.0, last_push_at=20.0, last_wake_ms=850
    )


def test_a_new_token_starts_without_pushes() -> None:
    devices = DeviceRegistry()
    devices.confirmed("m1", "sip:alice@example.com", APNS, 10.0, 3610.0)
    devices.pushed("m1", 20.0)
    devices.confirmed("m1", "sip:alice@example.com", NEW_TOKEN, 30.0, 3630.0)
    assert devices.get("m1") == DevicePush("m1", "sip:alice@example.com", NEW_TOKEN, 30.0, 3630.0)


def test_a_reconfirmation_moves_confirmation_and_expiry_of_a_known_device_only() -> None:
    devices = DeviceRegistry()
    devices.put(DevicePush("m1", "sip:alice@example.com", APNS, 10.0, 3610.0))
    devices.reconfirmed("m1", 40.0, 3640.0)
    devices.reconfirmed("desk", 40.0, 3640.0)
    assert devices.all() == (DevicePush("m1", "sip:alice@example.com", APNS, 40.0, 3640.0),)
    assert "desk" not in devices


def test_pushes_and_wake_ups_of_an_unknown_binding_change_nothing() -> None:
    devices = DeviceRegistry()
    devices.pushed("desk", 20.0)
    devices.woke("desk", 100)
    assert devices.all() == ()


def test_forget_says_whether_the_binding_was_pushed_for() -> None:
    devices = DeviceRegistry()
    devices.put(DevicePush("m1", "sip:alice@example.com", APNS, 10.0, 3610.0))
    assert devices.forget("m1") is True
    assert devices.forget("m1") is False
    assert devices.get("m1") is None


def test_an_invalidated_token_loses_push_capability_and_its_dormant_bindings_are_named() -> None:
    devices = DeviceRegistry()
    devices.put(DevicePush("m1", "sip:alice@example.com", APNS, 10.0, 3610.0))
    devices.put(DevicePush("m2", "sip:bob@example.com", DORMANT, 10.0, 100.0))
    devices.put(DevicePush("m3", "sip:carol@example.com", APNS, 60.0, 3660.0))  # confirmed after (R13)
    verdict = devices.invalidate("apns", "TOK1", 50.0, 200.0)
    assert verdict.event == TokenInvalidated("apns", "TOK1", 50.0)
    assert verdict.kept == ("m3",)
    assert devices.get("m1") == DevicePush(
        "m1", "sip:alice@example.com", APNS, 10.0, 3610.0, push_capable=False, invalidated_at=50.0
    )
    assert devices.get("m3") == DevicePush("m3", "sip:carol@example.com", APNS, 60.0, 3660.0)
    other = devices.invalidate("fcm", "TOK1", 50.0, 200.0)
    assert other.removed == ("m2",) and other.updated == ()
