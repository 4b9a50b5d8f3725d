"""The JSON-RPC 2.0 envelope (rpc.md section 2): request validation, faults and replies.

Pure: bytes and JSON values in, JSON values and bytes out.  Each fault class carries its
JSON-RPC code and exact message (rpc.md 2.3); ``http_status_for`` is the one place a fault
code becomes an HTTP status.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import ClassVar, TypeAlias, TypeGuard

import attrs

JsonValue: TypeAlias = bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"] | None
RequestId: TypeAlias = str | int | float | None

JSONRPC_VERSION = "2.0"


class RpcError(Exception):
    """A JSON-RPC fault: ``code`` and ``message`` go into the reply's ``error`` member.

    Subclasses with a fixed message declare it (``class ParseError(RpcError, code=-32700,
    message="Parse Error")``); method-level faults (400, 404, 500) take the message per
    instance, Kamailio-style (rpc.md 2.3).
    """

    code: ClassVar[int] = 500
    default_message: ClassVar[str] = "Internal Error"

    def __init_subclass__(cls, *, code: int, message: str = "", **kw: object) -> None:
        super().__init_subclass__(**kw)
        cls.code, cls.default_message = code, message

    def __init__(self, message: str | None = None, *, data: Mapping[str, JsonValue] | None = None) -> None:
        text = self.default_message if message is None else message
        super().__init__(text)
        self.message = text
        self.data: dict[str, JsonValue] | None = None if data is None else dict(data)

    def error_object(self) -> dict[str, JsonValue]:
        error: dict[str, JsonValue] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


class ParseError(RpcError, code=-32700, message="Parse Error"):
    """The body is not JSON (JSON-RPC 2.0 section 5.1)."""


class InvalidRequestError(RpcError, code=-32600, message="Invalid Request"):
    """The JSON is not a valid JSON-RPC 2.0 request object."""


class MethodNotFoundError(RpcError, code=-32601, message="Method Not Found"):
    """No method of that name is registered."""


class InvalidParamsError(RpcError, code=-32602, message="Invalid Parameters"):
    """Wrong count or type of parameters; ``data.usage`` carries the method's usage line."""


class InternalError(RpcError, code=-32603, message="Internal Error"):
    """An unexpected failure inside a method; never carries a traceback."""


class BadArgumentError(RpcError, code=400, message="Bad Request"):
    """A method-level bad argument value (Kamailio answers 400 with a method-specific text)."""


class ForbiddenError(RpcError, code=403, message="Forbidden"):
    """The caller's token scope does not allow this method (rpc.md 2.4)."""


class NotFoundError(RpcError, code=404, message="Not Found"):
    """The object named by the arguments does not exist."""


class ServerFailureError(RpcError, code=500, message="Server Failure"):
    """A method-level failure with a method-specific text (e.g. ``Failed to seize line``)."""


_STANDARD_STATUS: dict[int, int] = {
    ParseError.code: 400,
    InvalidRequestError.code: 400,
    MethodNotFoundError.code: 404,
    InvalidParamsError.code: 400,
    InternalError.code: 500,
}


def http_status_for(code: int) -> int:
    """The HTTP status of a single fault reply (rpc.md 2.3 "HTTP status rule").

    A fault code in 400-599 is also the HTTP status; the JSON-RPC standard codes map as in the
    table of 2.3; anything else is 500.
    """
    if 400 <= code <= 599:
        return code
    return _STANDARD_STATUS.get(code, 500)


@attrs.frozen
class Call:
    """One validated request object: a call (``is_notification`` false) or a notification."""

    method: str
    params: list[JsonValue] | dict[str, JsonValue] | None
    id: RequestId
    is_notification: bool


def decode(body: bytes) -> JsonValue:
    """Parse a request body; any decoding failure is a ``ParseError``."""
    try:
        text = body.decode("utf-8")
        value: JsonValue = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise ParseError() from error
    return value


def _valid_id(value: JsonValue) -> TypeGuard[RequestId]:
    return value is None or (isinstance(value, str | int | float) and not isinstance(value, bool))


def request_id_of(value: JsonValue) -> RequestId:
    """The id to answer an invalid request with: its own id if usable, else null (JSON-RPC 5)."""
    if isinstance(value, dict):
        candidate = value.get("id")
        if _valid_id(candidate):
            return candidate
    return None


def validate_call(value: JsonValue) -> Call:
    """Check one request object (JSON-RPC 2.0 section 4); raise ``InvalidRequestError`` if it is not."""
    if not isinstance(value, dict):
        raise InvalidRequestError()
    if value.get("jsonrpc") != JSONRPC_VERSION:
        raise InvalidRequestError()
    method = value.get("method")
    if not isinstance(method, str) or not method:
        raise InvalidRequestError()
    params = value.get("params")
    if "params" in value and not isinstance(params, list | dict):
        raise InvalidRequestError()
    is_notification = "id" not in value
    request_id = value.get("id")
    if not _valid_id(request_id):
        raise InvalidRequestError()
    checked_params = params if isinstance(params, list | dict) else None
    return Call(method=method, params=checked_params, id=request_id, is_notification=is_notification)


def success(request_id: RequestId, result: JsonValue) -> dict[str, JsonValue]:
    return {"jsonrpc": JSONRPC_VERSION, "result": result, "id": request_id}


def failure(request_id: RequestId, fault: RpcError) -> dict[str, JsonValue]:
    return {"jsonrpc": JSONRPC_VERSION, "error": fault.error_object(), "id": request_id}


def encode(document: JsonValue) -> bytes:
    """Serialize a reply document (compact UTF-8, non-ASCII kept)."""
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def fault_document(reply: bytes, fault: RpcError) -> bytes:
    """Replace an encoded reply by ``fault`` keeping its id (null for a batch or unreadable reply).

    Used by transports that cannot carry a reply, e.g. a datagram over the size limit (rpc.md 2.1).
    """
    try:
        original: JsonValue = json.loads(reply)
    except ValueError:
        original = None
    return encode(failure(request_id_of(original), fault))
