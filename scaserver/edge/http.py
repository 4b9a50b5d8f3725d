"""The HTTP listener of the control plane: ``POST /RPC`` and ``/jsonrpc``, ``GET /metrics``.

rpc.md 2.1-2.4.  This module only does HTTP: address ACL, method, CSRF guards (Origin,
Content-Type), body size, bearer-token authentication and logging.  The JSON-RPC work is the
pure ``scaserver.control.dispatcher.Dispatcher``.

Checks on the RPC paths, in order: ``rpc.allow_from`` (403), method (405 + ``Allow: POST``),
foreign ``Origin`` (403), token (401 + ``WWW-Authenticate: Bearer``), Content-Type (415), body
over 1 MiB (413).  Requests over a UNIX socket are trusted with the admin scope (filesystem
permissions are that socket's guard, rpc.md 2.4); over TCP the token decides the scope, and
without configured tokens (only allowed on loopback, see ``check_rpc_bind``) every caller is
admin.
"""

from __future__ import annotations

import hmac
import ipaddress
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Final, Protocol, cast

import attrs
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Site

from scaserver.control.dispatcher import AuditRecord, Dispatcher, DispatchOptions, Reply
from scaserver.control.registry import Caller, Registry, Scope

MAX_BODY: Final = 1 << 20  # rpc.md 2.1: request bodies over 1 MiB -> 413
JSON_CONTENT_TYPE: Final = b"application/json"

_audit_log = Logger(namespace="scaserver.rpc.audit")
_log = Logger(namespace="scaserver.rpc")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Request(Protocol):
    """The part of ``twisted.web.server.Request`` used here (Twisted's own is not fully typed)."""

    method: bytes
    content: _Content | None

    def getHeader(self, key: bytes) -> bytes | None: ...  # noqa: N802

    def setHeader(self, name: bytes, value: bytes) -> None: ...  # noqa: N802

    def setResponseCode(self, code: int) -> None: ...  # noqa: N802

    def getClientAddress(self) -> object: ...  # noqa: N802

    def write(self, data: bytes) -> None: ...

    def finish(self) -> None: ...

    def notifyFinish(self) -> Deferred[None]: ...  # noqa: N802


class _Content(Protocol):
    def seek(self, offset: int) -> object: ...

    def read(self, size: int) -> bytes: ...


class InsecureRpcBindError(Exception):
    """A TCP RPC listener on a non-loopback address without any token (rpc.md 2.4)."""


class TokenFileError(Exception):
    """A configured token file cannot be used (missing, unreadable or empty)."""


@attrs.frozen
class BearerTokens:
    """Configured bearer tokens and the scope each grants (rpc.md 2.4)."""

    entries: tuple[tuple[bytes, Scope], ...] = ()

    @classmethod
    def from_files(cls, files: Mapping[Scope, Path]) -> BearerTokens:
        """Read ``rpc.token_files``: one token per file, surrounding whitespace stripped."""
        entries: list[tuple[bytes, Scope]] = []
        for scope, path in files.items():
            try:
                token = path.read_bytes().strip()
            except OSError as error:
                raise TokenFileError(f"{path}: {error.strerror}") from None
            if not token:
                raise TokenFileError(f"{path}: empty token file")
            entries.append((token, scope))
        return cls(tuple(entries))

    def __bool__(self) -> bool:
        return bool(self.entries)

    def scope_of(self, presented: bytes) -> Scope | None:
        """The scope of a presented token (constant-time comparison against every token)."""
        granted: Scope | None = None
        for token, scope in self.entries:
            if hmac.compare_digest(token, presented) and granted is not Scope.ADMIN:
                granted = scope
        return granted


@attrs.frozen
class RpcSettings:
    """``[rpc]`` (rpc.md section 2): access to the JSON-RPC control interface.

    ``admin_token_file``/``read_token_file``: files holding a bearer token of each scope
    (required for a non-loopback ``http.listen``); ``allow_from``: CIDRs allowed to call
    over TCP (empty = any); ``allowed_origins``: browser Origins accepted; ``dgram_socket``:
    path of the kamcmd-compatible UNIX datagram socket ("" = none);
    ``http_status_always_200``: answer every JSON-RPC reply with HTTP 200.
    """

    admin_token_file: str = ""
    read_token_file: str = ""
    allow_from: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    dgram_socket: str = ""
    http_status_always_200: bool = False


@attrs.frozen
class HttpPolicy:
    """``[rpc]`` as the HTTP listener applies it: the table itself, the bearer tokens read from
    its token files, its ``allow_from`` parsed once, and the body limit."""

    tokens: BearerTokens = BearerTokens()
    settings: RpcSettings = attrs.field(factory=RpcSettings)
    max_body: int = MAX_BODY
    allow_from: tuple[Network, ...] = attrs.field(init=False)

    @allow_from.default
    def _networks(self) -> tuple[Network, ...]:
        return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in self.settings.allow_from)


def check_rpc_bind(host: str, tokens: BearerTokens) -> None:
    """Refuse a TCP RPC listener on a non-loopback address when no token is configured.

    ``host`` is the numeric address (or ``localhost``) the listener binds; the empty string
    and ``0.0.0.0``/``::`` bind every interface.  Raises ``InsecureRpcBindError``.
    """
    if tokens:
        return
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise InsecureRpcBindError(
            f"RPC listener on non-loopback address {host or '*'} needs at least one token in rpc.token_files"
        )


def log_audit(record: AuditRecord) -> None:
    """The audit sink: one ``scaserver.rpc.audit`` event per admin-scope call (rpc.md 2.4)."""
    _audit_log.info(
        "{method} by {peer} ({scope}, {transport}): {code} in {duration_s:.3f}s",
        method=record.method,
        peer=record.peer,
        scope=record.scope.value,
        transport=record.transport,
        params=record.params,
        code=record.code,
        duration_s=record.duration_s,
    )


def log_method_failure(method: str, error: BaseException) -> None:
    """The failure sink: an unexpected exception inside a method is our bug; log it whole."""
    failure = Failure(error)  # type: ignore[no-untyped-call]
    _log.failure("RPC method {method} failed", failure=failure, method=method)


def rpc_dispatcher(
    registry: Registry, *, options: DispatchOptions | None = None, clock: Callable[[], float] = time.monotonic
) -> Dispatcher:
    """A dispatcher wired to this module's audit and failure logging (HTTP and datagram share it)."""
    return Dispatcher(
        registry,
        clock=clock,
        audit=log_audit,
        on_failure=log_method_failure,
        options=DispatchOptions() if options is None else options,
    )


def _peer(request: Request) -> tuple[str, str | None]:
    """(printable peer, IP address or None for a UNIX socket peer)."""
    address = request.getClientAddress()
    if isinstance(address, IPv4Address | IPv6Address):
        return f"{address.host}:{address.port}", address.host
    if isinstance(address, UNIXAddress):
        return "unix", None
    return str(address), None


def _in_networks(host: str, networks: Iterable[Network]) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in network for network in networks)


def _plain(request: Request, status: int, text: str) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
    return text.encode("utf-8") + b"\n"


class _Guard:
    """The checks shared by the RPC and metrics resources."""

    def __init__(self, policy: HttpPolicy) -> None:
        self.policy = policy

    def admit(self, request: Request) -> tuple[Caller | None, bytes]:
        """The caller, or None and the error body already set on ``request``."""
        peer, host = _peer(request)
        if host is None:
            return Caller(peer=peer, scope=Scope.ADMIN, transport="unix"), b""
        if self.policy.allow_from and not _in_networks(host, self.policy.allow_from):
            _log.warn("RPC request from {peer} refused: not in rpc.allow_from", peer=peer)
            return None, _plain(request, 403, "Forbidden")
        if not self.policy.tokens:
            return Caller(peer=peer, scope=Scope.ADMIN, transport="http"), b""
        scope = self._token_scope(request)
        if scope is None:
            _log.warn("RPC request from {peer} refused: missing or wrong bearer token", peer=peer)
            request.setHeader(b"WWW-Authenticate", b'Bearer realm="scaserver"')
            return None, _plain(request, 401, "Unauthorized")
        return Caller(peer=peer, scope=scope, transport="http"), b""

    def _token_scope(self, request: Request) -> Scope | None:
        header = request.getHeader(b"Authorization")
        if header is None:
            return None
        scheme, _, token = header.strip().partition(b" ")
        if scheme.lower() != b"bearer" or not token.strip():
            return None
        return self.policy.tokens.scope_of(token.strip())


def _content_type_ok(value: bytes | None) -> bool:
    if value is None:
        return False
    return value.split(b";", 1)[0].strip().lower() == JSON_CONTENT_TYPE


class RpcResource(Resource):
    """``POST /RPC`` and ``POST /jsonrpc``: the JSON-RPC endpoint (rpc.md 2.1-2.3)."""

    isLeaf = True  # noqa: N815 (Twisted's attribute)

    def __init__(self, dispatcher: Dispatcher, policy: HttpPolicy) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._dispatcher = dispatcher
        self._guard = _Guard(policy)
        self._policy = policy

    def render(self, raw: IRequest) -> bytes | int:
        request = cast(Request, raw)
        peer, host = _peer(request)
        if host is not None and self._policy.allow_from and not _in_networks(host, self._policy.allow_from):
            return _plain(request, 403, "Forbidden")
        if request.method != b"POST":
            request.setHeader(b"Allow", b"POST")
            return _plain(request, 405, "Method Not Allowed")
        origin = request.getHeader(b"Origin")
        if origin is not None and origin.decode("latin-1") not in self._policy.settings.allowed_origins:
            _log.warn("RPC request from {peer} refused: foreign Origin {origin}", peer=peer, origin=origin)
            return _plain(request, 403, "Forbidden")
        caller, refusal = self._guard.admit(request)
        if caller is None:
            return refusal
        if not _content_type_ok(request.getHeader(b"Content-Type")):
            return _plain(request, 415, "Unsupported Media Type: use application/json")
        body = self._read_body(request)
        if body is None:
            return _plain(request, 413, "Request Entity Too Large")
        self._run(request, body, caller)
        return NOT_DONE_YET

    def _read_body(self, request: Request) -> bytes | None:
        limit = self._policy.max_body
        length = request.getHeader(b"Content-Length")
        if length is not None and length.strip().isdigit() and int(length) > limit:
            return None
        if request.content is None:
            return b""
        request.content.seek(0)
        body = request.content.read(limit + 1)
        return None if len(body) > limit else body

    def _run(self, request: Request, body: bytes, caller: Caller) -> None:
        finished: list[bool] = []
        request.notifyFinish().addBoth(lambda _: finished.append(True))

        def respond(reply: Reply) -> None:
            if finished:
                return
            request.setResponseCode(reply.http_status)
            if reply.body is not None:
                request.setHeader(b"Content-Type", b"application/json")
                request.write(reply.body)
            request.finish()

        def fail(failure: Failure) -> None:
            _log.failure("RPC request from {peer} failed", failure=failure, peer=caller.peer)
            if finished:
                return
            request.setResponseCode(500)
            request.finish()

        Deferred.fromCoroutine(self._dispatcher.dispatch(body, caller)).addCallback(respond).addErrback(fail)


class MetricsResource(Resource):
    """``GET /metrics``: the Prometheus text exposition of ``registry``."""

    isLeaf = True  # noqa: N815 (Twisted's attribute)

    def __init__(self, registry: CollectorRegistry, policy: HttpPolicy) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._registry = registry
        self._guard = _Guard(policy)

    def render(self, raw: IRequest) -> bytes | int:
        request = cast(Request, raw)
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"Allow", b"GET, HEAD")
            return _plain(request, 405, "Method Not Allowed")
        caller, refusal = self._guard.admit(request)
        if caller is None:
            return refusal
        output: bytes = generate_latest(self._registry)
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode("ascii"))
        return output


def build_root(
    dispatcher: Dispatcher, policy: HttpPolicy, metrics: CollectorRegistry | None = None
) -> Resource:
    """The resource tree: ``/RPC``, ``/jsonrpc`` (same handler) and, given a registry, ``/metrics``.

    Other subsystems (provisioning) add their own children to the returned root.
    """
    root = Resource()  # type: ignore[no-untyped-call]
    rpc = cast(IResource, RpcResource(dispatcher, policy))
    root.putChild(b"RPC", rpc)
    root.putChild(b"jsonrpc", rpc)
    if metrics is not None:
        root.putChild(b"metrics", cast(IResource, MetricsResource(metrics, policy)))
    return root


def build_site(dispatcher: Dispatcher, policy: HttpPolicy, metrics: CollectorRegistry | None = None) -> Site:
    """A ``Site`` for TCP (``tcp:``/``ssl:`` endpoints) and the UNIX stream socket alike."""
    site = Site(build_root(dispatcher, policy, metrics))  # type: ignore[no-untyped-call]
    site.displayTracebacks = False
    return site
