"""The dispatcher: batches, notifications, faults and HTTP status (rpc.md 2.2-2.4)."""

from __future__ import annotations

import json
from typing import Any

from scaserver.control.dispatcher import AuditRecord, DispatchOptions, Reply
from scaserver.control.jsonrpc import JsonValue
from scaserver.control.registry import Arguments, Caller, Param, Scope

from .fakes import ADMIN, LINE, READER, FakeSca, Rig, call, fault_of, run


def dispatch(rig: Rig, body: bytes | str, caller: Caller = ADMIN) -> Reply:
    raw = body.encode() if isinstance(body, str) else body
    return run(rig.dispatcher.dispatch(raw, caller))


def decoded(reply: Reply) -> Any:
    assert reply.body is not None
    return json.loads(reply.body)


def test_success_is_200() -> None:
    status, envelope = call(Rig(), "core.version")
    assert status == 200
    assert envelope == {
        "jsonrpc": "2.0",
        "result": "scaserver 0.1.0 (CPython 3.11.7, Twisted 26.10.0)",
        "id": 1,
    }


def test_parse_error() -> None:
    reply = dispatch(Rig(), "{not json")
    assert reply.http_status == 400
    assert decoded(reply) == {
        "jsonrpc": "2.0",
        "error": {"code": -32700, "message": "Parse Error"},
        "id": None,
    }


def test_invalid_request_keeps_usable_id() -> None:
    reply = dispatch(Rig(), '{"jsonrpc": "2.0", "method": 1, "id": 5}')
    assert reply.http_status == 400
    assert decoded(reply) == {
        "jsonrpc": "2.0",
        "error": {"code": -32600, "message": "Invalid Request"},
        "id": 5,
    }


def test_unknown_method_is_404() -> None:
    assert fault_of(Rig(), "no.such") == (404, -32601, "Method Not Found")


def test_wrong_params_is_400_with_usage() -> None:
    status, envelope = call(Rig(), "sca.release_appearance", [LINE])
    assert status == 400
    assert envelope["error"] == {
        "code": -32602,
        "message": "Invalid Parameters",
        "data": {"usage": "sca.release_appearance aor index"},
    }


def test_read_scope_cannot_call_admin_methods() -> None:
    rig = Rig()
    assert fault_of(rig, "sca.flush", caller=READER) == (403, 403, "Forbidden")
    assert rig.sca.calls == []
    assert [(record.method, record.code, record.scope) for record in rig.audits] == [
        ("sca.flush", 403, Scope.READ)
    ]


def test_read_scope_may_call_read_methods() -> None:
    status, _ = call(Rig(), "sca.all_appearances", caller=READER)
    assert status == 200


def test_notification_executes_without_reply() -> None:
    rig = Rig()
    reply = dispatch(rig, '{"jsonrpc": "2.0", "method": "sca.flush"}')
    assert reply == Reply(None, 204)
    assert rig.sca.calls == [("flush", ())]


def test_failing_notification_gets_no_reply() -> None:
    assert dispatch(Rig(), '{"jsonrpc": "2.0", "method": "no.such"}') == Reply(None, 204)


def test_batch_in_order_without_notifications() -> None:
    rig = Rig()
    body = json.dumps(
        [
            {"jsonrpc": "2.0", "method": "sca.subscription_count", "params": ["call-info"], "id": 1},
            {"jsonrpc": "2.0", "method": "sca.flush"},
            {"jsonrpc": "2.0", "method": "no.such", "id": 2},
            {"foo": "bar"},
            {"jsonrpc": "2.0", "method": "core.version", "id": "3"},
        ]
    )
    reply = dispatch(rig, body)
    assert reply.http_status == 200
    assert decoded(reply) == [
        {"jsonrpc": "2.0", "result": {"event": "call-info", "count": 2}, "id": 1},
        {"jsonrpc": "2.0", "error": {"code": -32601, "message": "Method Not Found"}, "id": 2},
        {"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": None},
        {"jsonrpc": "2.0", "result": "scaserver 0.1.0 (CPython 3.11.7, Twisted 26.10.0)", "id": "3"},
    ]
    assert rig.sca.calls == [("flush", ())]


def test_empty_batch_is_invalid_request() -> None:
    reply = dispatch(Rig(), "[]")
    assert reply.http_status == 400
    assert decoded(reply)["error"]["code"] == -32600


def test_batch_of_notifications_has_no_body() -> None:
    body = '[{"jsonrpc": "2.0", "method": "core.version"}, {"jsonrpc": "2.0", "method": "sca.flush"}]'
    assert dispatch(Rig(), body) == Reply(None, 204)


def test_unexpected_exception_is_internal_error_without_traceback() -> None:
    broken = RuntimeError("secret detail")
    rig = Rig(sca=FakeSca(broken=broken))
    status, envelope = call(rig, "sca.subscription_count", ["line-seize"])
    assert status == 500
    assert envelope["error"] == {"code": -32603, "message": "Internal Error"}
    assert rig.failures == [("sca.subscription_count", broken)]


def test_http_status_always_200() -> None:
    rig = Rig(options=DispatchOptions(http_status_always_200=True))
    assert fault_of(rig, "no.such") == (200, -32601, "Method Not Found")
    assert dispatch(rig, "nope").http_status == 200


def test_named_params_by_name_and_compat_order() -> None:
    status, envelope = call(Rig(), "sca.release_appearance", {"index": 1, "aor": LINE})
    assert status == 200, envelope
    assert fault_of(Rig(), "sca.release_appearance", {"line": LINE, "idx": 1})[1] == -32602
    compat = Rig(options=DispatchOptions(compat_named_params_by_order=True))
    status, envelope = call(compat, "sca.release_appearance", {"line": LINE, "idx": 1})
    assert status == 200, envelope


def test_admin_calls_are_audited_read_calls_are_not() -> None:
    rig = Rig()
    call(rig, "sca.all_appearances")
    call(rig, "sca.release_appearance", [LINE, 1])
    call(rig, "sca.release_appearance", [LINE, 0])
    assert rig.audits == [
        AuditRecord(
            peer="127.0.0.1:40000",
            scope=Scope.ADMIN,
            transport="http",
            method="sca.release_appearance",
            params=[LINE, 1],
            code=200,
            duration_s=0.0,
        ),
        AuditRecord(
            peer="127.0.0.1:40000",
            scope=Scope.ADMIN,
            transport="http",
            method="sca.release_appearance",
            params=[LINE, 0],
            code=400,
            duration_s=0.0,
        ),
    ]


def test_audit_masks_secret_params() -> None:
    rig = Rig()

    @rig.registry.register(
        "test.secret", Param("user"), Param("password", secret=True), scope=Scope.ADMIN, doc=""
    )
    async def secret(args: Arguments) -> JsonValue:
        return "ok"

    call(rig, "test.secret", ["alice", "hunter2"])
    call(rig, "test.secret", {"password": "hunter2", "user": "alice"})
    assert [record.params for record in rig.audits] == [
        ["alice", "***"],
        {"password": "***", "user": "alice"},
    ]
    assert "hunter2" not in repr(rig.audits)


def test_audit_hashes_push_tokens_in_contacts() -> None:
    rig = Rig()

    @rig.registry.register("test.contact", Param("aor"), Param("contact"), scope=Scope.ADMIN, doc="")
    async def contact(args: Arguments) -> JsonValue:
        return "ok"

    call(rig, "test.contact", ["sip:200@example.test", "sip:200@192.0.2.1;pn-provider=apns;pn-prid=TOKEN42"])
    (record,) = rig.audits
    assert "TOKEN42" not in repr(record.params)
    assert isinstance(record.params, list) and "pn-provider=apns" in str(record.params[1])
