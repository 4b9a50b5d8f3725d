"""``system.*`` and ``core.*`` methods (rpc.md 3.1).

``system.listMethods``, ``system.methodHelp`` and ``system.methodSignature`` are generated from
the registry; ``core.*`` report the server's identity from an injected ``ServerInfo``.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import platform
import time
from collections.abc import Callable

import attrs

from scaserver.control.jsonrpc import BadArgumentError, JsonValue
from scaserver.control.registry import Arguments, Method, Param, Registry, Scope


def product_version() -> str:
    """``scaserver <version> (<implementation> <python>, Twisted <version>)`` (rpc.md 3.1)."""

    def installed(distribution: str) -> str:
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            return "unknown"

    python = f"{platform.python_implementation()} {platform.python_version()}"
    return f"scaserver {installed('scaserver')} ({python}, Twisted {installed('Twisted')})"


@attrs.frozen
class ServerInfo:
    """What ``core.version``/``core.info`` report; ``started_at`` is epoch seconds."""

    version: str
    pid: int
    listen: tuple[str, ...]
    db: str
    started_at: float


def _ctime(epoch: float) -> str:
    return time.ctime(epoch)


def register_system(registry: Registry) -> None:
    """Add the introspection methods, answering from ``registry`` itself."""

    @registry.register("system.listMethods", scope=Scope.READ, doc="Lists the RPC methods, sorted by name.")
    async def list_methods(args: Arguments) -> JsonValue:
        return list(registry.names())

    method_param = Param("method", optional=True, doc="method name")

    def target(args: Arguments) -> Method:
        name = args.optional_text("method")
        if name is None:
            raise BadArgumentError("Method Name Expected")
        method = registry.get(name)
        if method is None:
            raise BadArgumentError("command not found")
        return method

    @registry.register(
        "system.methodHelp", method_param, scope=Scope.READ, doc="Prints the help of a method."
    )
    async def method_help(args: Arguments) -> JsonValue:
        return target(args).doc

    @registry.register(
        "system.methodSignature",
        method_param,
        scope=Scope.READ,
        doc="Returns the parameters of a method as {name, type, optional} descriptors.",
    )
    async def method_signature(args: Arguments) -> JsonValue:
        method = target(args)
        return [
            {"name": param.name, "type": param.type.value, "optional": param.optional}
            for param in method.params
        ]


def register_core(registry: Registry, server: ServerInfo, clock: Callable[[], float]) -> None:
    """Add ``core.version``, ``core.uptime`` and ``core.info``; ``clock`` gives epoch seconds."""

    @registry.register("core.version", scope=Scope.READ, doc="Returns the server version string.")
    async def version(args: Arguments) -> JsonValue:
        return server.version

    @registry.register(
        "core.uptime", scope=Scope.READ, doc="Returns the current time, start time and uptime in seconds."
    )
    async def uptime(args: Arguments) -> JsonValue:
        now = clock()
        return {
            "now": _ctime(now),
            "up_since": _ctime(server.started_at),
            "uptime": max(0, int(now - server.started_at)),
        }

    @registry.register(
        "core.info", scope=Scope.READ, doc="Returns version, pid, listeners, database kind and start time."
    )
    async def info(args: Arguments) -> JsonValue:
        started = datetime.datetime.fromtimestamp(server.started_at, datetime.UTC)
        return {
            "version": server.version,
            "pid": server.pid,
            "listen": list(server.listen),
            "db": server.db,
            "started": started.isoformat(),
        }
