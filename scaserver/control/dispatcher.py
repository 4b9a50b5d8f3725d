"""The JSON-RPC dispatcher (rpc.md 5): request bytes in, reply bytes and HTTP status out.

Pure apart from awaiting the methods' handlers.  It validates the envelope, runs a batch in
order, answers notifications with nothing, checks the caller's scope, binds parameters, maps
faults (rpc.md 2.3) and reports every ``admin``-scope call to the injected audit sink (rpc.md
2.4).  Transports (HTTP, datagram) wrap it; it knows none of them.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from scaserver.control.jsonrpc import (
    Call,
    ForbiddenError,
    InternalError,
    InvalidRequestError,
    JsonValue,
    MethodNotFoundError,
    ParseError,
    RpcError,
    decode,
    encode,
    failure,
    http_status_for,
    request_id_of,
    success,
    validate_call,
)
from scaserver.control.registry import Arguments, Caller, Method, Registry, Scope, bind
from scaserver.push.pnparams import masked_pn_params

SUCCESS_CODE = 200


@attrs.frozen
class DispatchOptions:
    """Behaviour switches of rpc.md 2.2/2.3 (``rpc.*`` settings)."""

    compat_named_params_by_order: bool = False
    http_status_always_200: bool = False


@attrs.frozen
class Reply:
    """What a transport sends back: ``body`` None means no body (all notifications, HTTP 204)."""

    body: bytes | None
    http_status: int


@attrs.frozen
class AuditRecord:
    """One ``admin``-scope call (rpc.md 2.4): ``code`` is 200 on success, else the fault code."""

    peer: str
    scope: Scope
    transport: str
    method: str
    params: dict[str, JsonValue] | list[JsonValue] | None
    code: int
    duration_s: float


AuditSink = Callable[[AuditRecord], None]
FailureSink = Callable[[str, BaseException], None]


@attrs.frozen
class _Outcome:
    document: dict[str, JsonValue] | None
    code: int


class Dispatcher:
    """Runs JSON-RPC documents against a ``Registry``.

    ``clock`` gives seconds (only differences are used, for the audit duration); ``audit``
    receives every admin-scope call; ``on_failure`` receives unexpected exceptions from a
    handler (the caller then gets -32603 ``Internal Error``, never a traceback).
    """

    def __init__(
        self,
        registry: Registry,
        *,
        clock: Callable[[], float],
        audit: AuditSink,
        on_failure: FailureSink,
        options: DispatchOptions = DispatchOptions(),
    ) -> None:
        self._registry = registry
        self._clock = clock
        self._audit = audit
        self._on_failure = on_failure
        self._options = options

    @property
    def registry(self) -> Registry:
        return self._registry

    async def dispatch(self, body: bytes, caller: Caller) -> Reply:
        try:
            document = decode(body)
        except ParseError as fault:
            return self._single(_Outcome(failure(None, fault), fault.code))
        if isinstance(document, list):
            if not document:
                empty = InvalidRequestError()
                return self._single(_Outcome(failure(None, empty), empty.code))
            replies: list[JsonValue] = []
            for item in document:
                outcome = await self._one(item, caller)
                if outcome.document is not None:
                    replies.append(outcome.document)
            if not replies:
                return Reply(None, 204)
            return Reply(encode(replies), 200)
        return self._single(await self._one(document, caller))

    def _single(self, outcome: _Outcome) -> Reply:
        if outcome.document is None:
            return Reply(None, 204)
        status = 200
        if outcome.code != SUCCESS_CODE and not self._options.http_status_always_200:
            status = http_status_for(outcome.code)
        return Reply(encode(outcome.document), status)

    async def _one(self, item: JsonValue, caller: Caller) -> _Outcome:
        try:
            call = validate_call(item)
        except InvalidRequestError as fault:
            return _Outcome(failure(request_id_of(item), fault), fault.code)
        started = self._clock()
        code = SUCCESS_CODE
        try:
            result = await self._run(call, caller)
            document = None if call.is_notification else success(call.id, result)
        except RpcError as fault:
            code = fault.code
            document = None if call.is_notification else failure(call.id, fault)
        method = self._registry.get(call.method)
        if method is not None and method.scope is Scope.ADMIN:
            self._audit(
                AuditRecord(
                    peer=caller.peer,
                    scope=caller.scope,
                    transport=caller.transport,
                    method=call.method,
                    params=_masked(call, method),
                    code=code,
                    duration_s=self._clock() - started,
                )
            )
        return _Outcome(document, code)

    async def _run(self, call: Call, caller: Caller) -> JsonValue:
        method = self._registry.get(call.method)
        if method is None:
            raise MethodNotFoundError()
        if not caller.scope.allows(method.scope):
            raise ForbiddenError()
        values = bind(method, call.params, named_by_order=self._options.compat_named_params_by_order)
        try:
            return await method.handler(Arguments(values=values, caller=caller))
        except RpcError:
            raise
        except Exception as error:
            self._on_failure(call.method, error)
            raise InternalError() from error


def _masked(call: Call, method: Method) -> dict[str, JsonValue] | list[JsonValue] | None:
    """The call's params for the audit log, secret ones replaced by ``"***"`` (rpc.md 2.4)
    and push tokens in the others (a contact given to ``ul.rm``) hashed."""
    secret = {param.name for param in method.params if param.secret}
    if isinstance(call.params, dict):
        return {name: ("***" if name in secret else _shown(value)) for name, value in call.params.items()}
    if isinstance(call.params, list):
        names = [param.name for param in method.params]
        return [
            "***" if index < len(names) and names[index] in secret else _shown(value)
            for index, value in enumerate(call.params)
        ]
    return None


def _shown(value: JsonValue) -> JsonValue:
    return masked_pn_params(value) if isinstance(value, str) else value
