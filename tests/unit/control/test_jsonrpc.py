"""The JSON-RPC 2.0 envelope (rpc.md 2.2, 2.3)."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scaserver.control.jsonrpc import (
    BadArgumentError,
    Call,
    InvalidParamsError,
    InvalidRequestError,
    JsonValue,
    ParseError,
    ServerFailureError,
    decode,
    encode,
    failure,
    fault_document,
    http_status_for,
    request_id_of,
    success,
    validate_call,
)


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (-32700, 400),
        (-32600, 400),
        (-32601, 404),
        (-32602, 400),
        (-32603, 500),
        (-32000, 500),
        (400, 400),
        (403, 403),
        (404, 404),
        (500, 500),
        (599, 599),
        (600, 500),
        (0, 500),
        (100, 500),
    ],
)
def test_http_status_rule(code: int, status: int) -> None:
    assert http_status_for(code) == status


@pytest.mark.parametrize("body", [b"", b"{", b"not json", b"\xff\xfe", b"[1,", b'{"a":}'])
def test_undecodable_body_is_parse_error(body: bytes) -> None:
    with pytest.raises(ParseError) as caught:
        decode(body)
    assert caught.value.error_object() == {"code": -32700, "message": "Parse Error"}


@given(st.binary(max_size=64))
def test_decode_raises_only_parse_error(body: bytes) -> None:
    with contextlib.suppress(ParseError):
        decode(body)


def test_valid_call_and_notification() -> None:
    assert validate_call({"jsonrpc": "2.0", "method": "core.version", "id": 7}) == Call(
        "core.version", None, 7, is_notification=False
    )
    assert validate_call({"jsonrpc": "2.0", "method": "m", "params": ["a"]}) == Call(
        "m", ["a"], None, is_notification=True
    )
    assert validate_call({"jsonrpc": "2.0", "method": "m", "params": {"a": 1}, "id": None}) == Call(
        "m", {"a": 1}, None, is_notification=False
    )
    assert validate_call({"jsonrpc": "2.0", "method": "m", "id": "x"}).id == "x"


@pytest.mark.parametrize(
    "request_object",
    [
        [],
        "text",
        1,
        None,
        {"method": "m", "id": 1},
        {"jsonrpc": "1.0", "method": "m", "id": 1},
        {"jsonrpc": "2.0", "id": 1},
        {"jsonrpc": "2.0", "method": "", "id": 1},
        {"jsonrpc": "2.0", "method": 5, "id": 1},
        {"jsonrpc": "2.0", "method": "m", "params": "a", "id": 1},
        {"jsonrpc": "2.0", "method": "m", "params": None, "id": 1},
        {"jsonrpc": "2.0", "method": "m", "id": [1]},
        {"jsonrpc": "2.0", "method": "m", "id": {"a": 1}},
        {"jsonrpc": "2.0", "method": "m", "id": True},
    ],
)
def test_invalid_request_objects(request_object: JsonValue) -> None:
    with pytest.raises(InvalidRequestError):
        validate_call(request_object)


def test_request_id_of_invalid_request() -> None:
    assert request_id_of({"id": 3, "method": 5}) == 3
    assert request_id_of({"id": [3]}) is None
    assert request_id_of({"id": False}) is None
    assert request_id_of([1]) is None


def test_documents() -> None:
    assert success(1, {"a": [1]}) == {"jsonrpc": "2.0", "result": {"a": [1]}, "id": 1}
    fault = InvalidParamsError(data={"usage": "m a"})
    assert failure("x", fault) == {
        "jsonrpc": "2.0",
        "error": {"code": -32602, "message": "Invalid Parameters", "data": {"usage": "m a"}},
        "id": "x",
    }
    assert BadArgumentError("appearance-index must be > 0").error_object() == {
        "code": 400,
        "message": "appearance-index must be > 0",
    }
    assert json.loads(encode({"é": 1})) == {"é": 1}
    assert encode(["é"]) == '["é"]'.encode()


def test_fault_document_keeps_the_id() -> None:
    fault = ServerFailureError("Reply too large, use HTTP")
    replaced = json.loads(fault_document(encode(success(9, "x" * 10)), fault))
    assert replaced == {
        "jsonrpc": "2.0",
        "error": {"code": 500, "message": "Reply too large, use HTTP"},
        "id": 9,
    }
    assert json.loads(fault_document(b"[{}]", fault))["id"] is None
    assert json.loads(fault_document(b"garbage", fault))["id"] is None
