"""sca.* methods (rpc.md 3.2, sca.md section 11): results, Kamailio fault texts, seam calls."""

from __future__ import annotations

import attrs
import pytest

from scaserver.control.registry import Scope
from scaserver.control.seams import AppearanceRefusal, AppearanceStateName, ScaEvent, parse_state

from .fakes import APP_1, LINE, NOW, READER, SUB_A, FakeSca, Rig, fault_of, result_of

SUB_A_JSON = {
    "aor": LINE,
    "event": "call-info",
    "subscriber": "sip:2001@pbx.example.com",
    "contact": "sip:2001@10.0.1.2:5060",
    "state": "active",
    "expires_at": int(NOW + 3412),
    "expires_in": 3412,
    "call_id": "c1@10.0.1.2",
    "from_tag": "ft1",
    "to_tag": "tt1",
    "notify_cseq": 3,
    "subscribe_cseq": 7,
    "appearance_index": None,
}
APP_1_JSON = {
    "aor": LINE,
    "index": 1,
    "state": "active",
    "owner": "sip:2001@10.0.1.2:5060",
    "callee": "sip:+15551234@carrier.example",
    "appearance_uri": "sip:+15551234@carrier.example",
    "call_id": "a84b4c76e66710@10.0.1.2",
    "member_tag": "1928301774",
    "remote_tag": "as6151ad25",
    "role": "caller",
    "ctime": int(NOW - 60),
    "mtime": int(NOW - 30),
}


def test_all_subscriptions() -> None:
    result = result_of(Rig(), "sca.all_subscriptions")
    assert result[0] == SUB_A_JSON
    assert [item["event"] for item in result] == ["call-info", "line-seize", "call-info"]
    assert result[1]["appearance_index"] == 2


def test_expired_subscription_shows_zero_seconds_left() -> None:
    rig = Rig(sca=FakeSca(subscriptions=[attrs.evolve(SUB_A, expires_at=NOW - 5)]))
    assert result_of(rig, "sca.all_subscriptions")[0]["expires_in"] == 0


@pytest.mark.parametrize(("event", "count"), [("call-info", 2), ("line-seize", 1)])
def test_subscription_count(event: str, count: int) -> None:
    assert result_of(Rig(), "sca.subscription_count", [event]) == {"event": event, "count": count}


@pytest.mark.parametrize("event", ["presence", "ringing", ""])
def test_subscription_count_bad_event_kamailio_usage(event: str) -> None:
    assert fault_of(Rig(), "sca.subscription_count", [event]) == (
        400,
        400,
        "usage: sca.subscription_count {call-info | line-seize}",
    )


def test_show_subscription() -> None:
    rig = Rig()
    assert len(result_of(rig, "sca.show_subscription", [LINE, "call-info"])) == 2
    assert result_of(rig, "sca.show_subscription", [LINE, "call-info", "sip:2001@10.0.1.2:5060"]) == [
        SUB_A_JSON
    ]
    assert result_of(rig, "sca.show_subscription", ["sip:other@pbx.example.com", "call-info"]) == []
    assert fault_of(rig, "sca.show_subscription", [LINE, "dialog"]) == (
        400,
        400,
        "usage: sca.show_subscription sip:user@domain {call-info | line-seize} [sip:user@IP]",
    )


def test_subscribers_are_distinct_call_info_contacts() -> None:
    assert result_of(Rig(), "sca.subscribers") == ["sip:2001@10.0.1.2:5060", "sip:2001@10.0.1.3"]


def test_deactivate_all_subscriptions() -> None:
    rig = Rig()
    result = result_of(rig, "sca.deactivate_all_subscriptions")
    assert [item["contact"] for item in result] == [
        "sip:2001@10.0.1.2:5060",
        "sip:2001@10.0.1.3",
        "sip:2001@10.0.1.3",
    ]
    assert rig.sca.calls == [("deactivate_all", ())]
    assert result_of(rig, "sca.all_subscriptions") == []


def test_deactivate_subscription() -> None:
    rig = Rig(sca=FakeSca(notify_failed=("sip:2001@10.0.1.2:5060",)))
    result = result_of(rig, "sca.deactivate_subscription", [LINE, "call-info", "sip:2001@10.0.1.2:5060"])
    assert result == {**SUB_A_JSON, "notify_failed": ["sip:2001@10.0.1.2:5060"]}
    assert rig.sca.calls == [("deactivate", (LINE, ScaEvent.CALL_INFO, "sip:2001@10.0.1.2:5060"))]
    assert fault_of(rig, "sca.deactivate_subscription", [LINE, "call-info", "sip:2001@10.0.1.2:5060"]) == (
        404,
        404,
        "Subscription not found",
    )
    assert fault_of(rig, "sca.deactivate_subscription", [LINE, "x", "sip:a@b"])[:2] == (400, 400)
    assert fault_of(rig, "sca.deactivate_subscription", [LINE, "call-info"])[1] == -32602


def test_all_appearances() -> None:
    assert result_of(Rig(), "sca.all_appearances") == [APP_1_JSON]


def test_show_appearance_includes_idle_indexes() -> None:
    result = result_of(Rig(), "sca.show_appearance", [LINE])
    assert result["aor"] == LINE
    assert result["max_appearances"] == 2
    assert result["appearances"][0] == APP_1_JSON
    assert result["appearances"][1]["state"] == "idle"
    assert result["appearances"][1]["owner"] is None


def test_show_appearance_unknown_aor() -> None:
    assert fault_of(Rig(), "sca.show_appearance", ["sip:9999@pbx.example.com"]) == (
        404,
        404,
        "No appearances for sip:9999@pbx.example.com",
    )


def test_seize_appearance() -> None:
    rig = Rig()
    result = result_of(rig, "sca.seize_appearance", [LINE, "sip:2001@10.0.1.3:5060"])
    assert (result["index"], result["state"], result["owner"], result["notify_failed"]) == (
        2,
        "seized",
        "sip:2001@10.0.1.3:5060",
        [],
    )
    assert rig.sca.calls == [("seize", (LINE, "sip:2001@10.0.1.3:5060"))]
    assert fault_of(rig, "sca.seize_appearance", [LINE, "sip:2001@10.0.1.4"]) == (
        500,
        500,
        "Failed to seize line",
    )


def test_seize_refused_for_any_reason_is_kamailio_text() -> None:
    rig = Rig(sca=FakeSca(seize_refusal=AppearanceRefusal.NO_LINE))
    assert fault_of(rig, "sca.seize_appearance", [LINE, "sip:x@y"]) == (500, 500, "Failed to seize line")


def test_seize_needs_admin_scope() -> None:
    rig = Rig()
    assert fault_of(rig, "sca.seize_appearance", [LINE, "sip:x@y"], caller=READER) == (403, 403, "Forbidden")
    assert rig.registry.get("sca.seize_appearance").scope is Scope.ADMIN  # type: ignore[union-attr]


def test_update_appearance() -> None:
    rig = Rig()
    result = result_of(rig, "sca.update_appearance", [LINE, 1, "held", "sip:bob@example.com"])
    assert (result["state"], result["appearance_uri"], result["mtime"]) == (
        "held",
        "sip:bob@example.com",
        int(NOW),
    )
    assert rig.sca.calls == [("update", (LINE, 1, AppearanceStateName.HELD, "sip:bob@example.com"))]


def test_update_appearance_index_as_string_and_ringing_alias() -> None:
    rig = Rig()
    assert result_of(rig, "sca.update_appearance", [LINE, "1", "ringing"])["state"] == "alerting"
    assert rig.sca.calls == [("update", (LINE, 1, AppearanceStateName.ALERTING, None))]


def test_update_appearance_faults() -> None:
    rig = Rig()
    assert fault_of(rig, "sca.update_appearance", [LINE, 1, "busy"]) == (400, 400, "busy: invalid state")
    assert fault_of(rig, "sca.update_appearance", [LINE, 2, "held"]) == (
        404,
        404,
        f"Failed to update {LINE} appearance-index 2",
    )
    assert fault_of(rig, "sca.update_appearance", ["sip:9@x", 1, "held"]) == (
        404,
        404,
        "Failed to update sip:9@x appearance-index 1",
    )
    assert fault_of(rig, "sca.update_appearance", [LINE, "one", "held"])[1] == -32602


def test_release_appearance() -> None:
    rig = Rig()
    result = result_of(rig, "sca.release_appearance", [LINE, 1])
    assert (result["index"], result["state"], result["owner"]) == (1, "idle", None)
    assert rig.sca.calls == [("release", (LINE, 1))]


@pytest.mark.parametrize("index", [0, -1])
def test_release_appearance_index_must_be_positive(index: int) -> None:
    rig = Rig()
    assert fault_of(rig, "sca.release_appearance", [LINE, index]) == (
        400,
        400,
        "appearance-index must be > 0",
    )
    assert rig.sca.calls == []


def test_release_appearance_not_found() -> None:
    rig = Rig()
    assert fault_of(rig, "sca.release_appearance", ["sip:9@x", 1]) == (404, 404, "No appearances for sip:9@x")
    assert fault_of(rig, "sca.release_appearance", [LINE, 2]) == (
        404,
        404,
        f"{LINE} appearance index 2 is not in use",
    )


def test_flush() -> None:
    rig = Rig()
    assert result_of(rig, "sca.flush") == {"written": 4}
    assert rig.sca.calls == [("flush", ())]


def test_parse_state() -> None:
    assert parse_state("held-private") is AppearanceStateName.HELD_PRIVATE
    assert parse_state("ringing") is AppearanceStateName.ALERTING
    assert parse_state("Ringing") is None
    assert parse_state("active-pending") is None


def test_appearance_fixture_is_the_one_used() -> None:
    assert APP_1.index == 1
