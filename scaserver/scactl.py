#!/usr/bin/env python3
"""scactl: the command-line client of scaserver's JSON-RPC control interface (rpc.md section 4).

    scactl [-s ADDRESS] [--token-file PATH] [-F pretty|json|raw|kamailio] [--text] [-f FORMAT]
           METHOD [ARG ...]
    scactl [-s ADDRESS] help [METHOD]
    scactl [-s ADDRESS] rpc METHOD [ARG ...]      # kamctl-style: print the whole JSON envelope
    scactl completion bash                       # print a bash completion script

Standard library only; method names and parameters come from the OpenRPC catalogue shipped
with the package (``rpc/openrpc.json``).  ADDRESS is any form the server serves:
``http://HOST:PORT/RPC`` (or ``https://``, or ``tcp:HOST:PORT``) for ``[http] listen``,
``unixd:PATH`` (or ``udp:HOST:PORT``) for the kamcmd-style datagram socket (``[rpc]
dgram_socket``), ``unix:PATH`` for HTTP over a UNIX stream socket.  The default is the
server's default control address, ``http://127.0.0.1:8080/RPC``; ``SCACTL_ADDRESS`` overrides
it.  Arguments follow kamcmd: integer-looking -> JSON number, ``s:`` prefix -> string,
anything else -> string.  Exit status: 0 success, 1 RPC fault, 2 usage error, 3 transport or
authentication failure.
"""

from __future__ import annotations

import argparse
import codecs
import http.client
import importlib.resources
import json
import os
import re
import socket
import sys
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Final, TextIO, TypeAlias

Json: TypeAlias = bool | int | float | str | list["Json"] | dict[str, "Json"] | None

#: The server's default ``[http] listen`` (config.DEFAULT_HTTP_PORT on loopback).
DEFAULT_ADDRESS: Final = "http://127.0.0.1:8080/RPC"
CATALOGUE: Final[Traversable] = importlib.resources.files("scaserver") / "rpc" / "openrpc.json"
DGRAM_REPLY_LIMIT: Final = 65535
EXIT_OK, EXIT_FAULT, EXIT_USAGE, EXIT_TRANSPORT = 0, 1, 2, 3
FORMATS = ("pretty", "json", "raw", "kamailio")
SUBCOMMANDS = ("help", "rpc", "completion")
_INTEGER = re.compile(r"[+-]?\d+")


class TransportError(Exception):
    """The server could not be reached or refused us (exit status 3)."""


class UsageError(Exception):
    """Bad command line (exit status 2)."""


# --------------------------------------------------------------------------------------------
# Catalogue


def load_catalogue(path: Traversable | Path = CATALOGUE) -> dict[str, list[tuple[str, bool]]]:
    """Method name -> [(parameter name, required)] from the OpenRPC document (empty if absent);
    a variadic parameter (``x-variadic``, the last one) is named ``name...``."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    methods: dict[str, list[tuple[str, bool]]] = {}
    for method in document.get("methods", []):
        params = [
            (f"{param['name']}{'...' if param.get('x-variadic') else ''}", bool(param.get("required", False)))
            for param in method.get("params", [])
        ]
        methods[str(method["name"])] = params
    return methods


def usage_line(name: str, params: Sequence[tuple[str, bool]]) -> str:
    return " ".join([name, *(param if required else f"[{param}]" for param, required in params)])


def check_arity(catalogue: Mapping[str, Sequence[tuple[str, bool]]], method: str, count: int) -> None:
    """Refuse a wrong argument count for a catalogued method before calling the server."""
    params = catalogue.get(method)
    if params is None:
        return
    required = sum(1 for _, needed in params if needed)
    variadic = bool(params) and params[-1][0].endswith("...")
    if count < required or (count > len(params) and not variadic):
        raise UsageError(f"usage: {usage_line(method, params)}")


# --------------------------------------------------------------------------------------------
# Arguments and transport


def convert_argument(text: str) -> Json:
    """kamcmd's rule: ``s:`` forces a string, an integer-looking word is a number."""
    if text.startswith("s:"):
        return text[2:]
    if _INTEGER.fullmatch(text):
        return int(text)
    return text


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP/1.1 over a UNIX stream socket."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


_ADDRESS_FORMS: Final = "http(s)://HOST:PORT/RPC, tcp:HOST:PORT, unixd:PATH, udp:HOST:PORT or unix:PATH"


def _host_port(text: str, address: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT``."""
    host, colon, port = text.rpartition(":")
    if not colon or not host or not port.isdigit():
        raise UsageError(f"unsupported address {address!r}: use {_ADDRESS_FORMS}")
    return host.strip("[]"), int(port)


def _connection(address: str, timeout: float) -> tuple[http.client.HTTPConnection, str]:
    if address.startswith("unix:"):
        return UnixHTTPConnection(address[len("unix:") :], timeout), "/RPC"
    if address.startswith("tcp:"):
        host, port = _host_port(address[len("tcp:") :], address)
        return http.client.HTTPConnection(host, port, timeout=timeout), "/RPC"
    url = urllib.parse.urlsplit(address)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise UsageError(f"unsupported address {address!r}: use {_ADDRESS_FORMS}")
    path = url.path or "/RPC"
    if url.scheme == "https":
        return http.client.HTTPSConnection(url.hostname, url.port, timeout=timeout), path
    return http.client.HTTPConnection(url.hostname, url.port, timeout=timeout), path


def _envelope(data: bytes, what: str) -> dict[str, Json]:
    try:
        envelope = json.loads(data)
    except ValueError:
        raise TransportError(f"{what} without a JSON-RPC reply") from None
    if not isinstance(envelope, dict):
        raise TransportError(f"{what}: unexpected reply")
    return envelope


def _datagram_call(address: str, body: bytes, timeout: float) -> dict[str, Json]:
    """One request datagram to the server's jsonrpcs-style socket; the reply comes back to a
    socket of our own (a temporary path for ``unixd:``, as kamcmd does)."""
    if address.startswith("unixd:"):
        family, target = socket.AF_UNIX, address[len("unixd:") :]
        own: str | tuple[str, int] = f"/tmp/scactl-{os.getpid()}-{uuid.uuid4().hex[:8]}.sock"
        server: str | tuple[str, int] = target
    else:
        host, port = _host_port(address[len("udp:") :], address)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        own, server = ("::" if family == socket.AF_INET6 else "0.0.0.0", 0), (host, port)
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.settimeout(timeout)
        sock.bind(own)
        sock.sendto(body, server)
        data = sock.recv(DGRAM_REPLY_LIMIT)
    except OSError as error:
        raise TransportError(f"cannot reach {address}: {error}") from None
    finally:
        sock.close()
        if isinstance(own, str):
            Path(own).unlink(missing_ok=True)
    return _envelope(data, f"{address}: reply")


def call(address: str, token: str | None, method: str, params: list[Json], timeout: float) -> dict[str, Json]:
    """Send one JSON-RPC request and return the reply envelope."""
    body = json.dumps({"jsonrpc": "2.0", "method": method, "params": params, "id": 1}).encode("utf-8")
    if address.startswith(("unixd:", "udp:")):
        return _datagram_call(address, body, timeout)
    connection, path = _connection(address, timeout)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        data = response.read()
    except (OSError, http.client.HTTPException) as error:
        raise TransportError(f"cannot reach {address}: {error}") from None
    finally:
        connection.close()
    if response.status == 401:
        raise TransportError("authentication failed (HTTP 401): check the token")
    return _envelope(data, f"HTTP {response.status} {response.reason}")


# --------------------------------------------------------------------------------------------
# Output


def _scalar(value: Json) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _members(value: dict[str, Json], depth: int) -> Iterator[str]:
    pad = "\t" * depth
    for key, item in value.items():
        if isinstance(item, dict | list):
            yield f"{pad}{key}: {{"
            yield from _inner(item, depth + 1)
            yield f"{pad}}}"
        else:
            yield f"{pad}{key}: {_scalar(item)}"


def _inner(value: Json, depth: int) -> Iterator[str]:
    if isinstance(value, dict):
        yield from _members(value, depth)
    elif isinstance(value, list):
        for item in value:
            yield from _inner(item, depth)
    else:
        yield "\t" * depth + _scalar(value)


def render_pretty(value: Json) -> list[str]:
    """kamcmd's tree: objects as indented ``key: value`` blocks in ``{ }``, arrays one per line."""
    if isinstance(value, dict):
        return ["{", *_members(value, 1), "}"]
    if isinstance(value, list):
        lines: list[str] = []
        for item in value:
            lines.extend(render_pretty(item))
        return lines
    return [_scalar(value)]


def _values(value: Json) -> Iterator[str]:
    if isinstance(value, dict):
        for item in value.values():
            yield from _values(item)
    elif isinstance(value, list):
        for item in value:
            yield from _values(item)
    else:
        yield _scalar(value)


def render_format(value: Json, template: str) -> str:
    """kamcmd's ``-f``: each ``%v`` takes the next value; the template repeats until all are used."""
    template = codecs.decode(template, "unicode_escape")
    slots = template.count("%v")
    if slots == 0:
        return template
    values = list(_values(value))
    out: list[str] = []
    for start in range(0, len(values), slots):
        pieces = template.split("%v")
        chunk = [*values[start : start + slots], *[""] * slots][:slots]
        out.append("".join(piece + value for piece, value in zip(pieces, [*chunk, ""], strict=True)))
    return "".join(out)


_SIP_USER = re.compile(r"^sips?:([^@;?]+)@")
_SIP_HOSTPORT = re.compile(r"^(?:sips?):(?:[^@;?]*@)?(\[[^\]]+\]|[^:;?>]+)(?::(\d+))?")


def _text(value: Json) -> str:
    return "" if value is None else _scalar(value)


def _dicts(value: Json) -> list[dict[str, Json]]:
    items = value if isinstance(value, list) else [value]
    return [item for item in items if isinstance(item, dict)]


def _subscription_line(sub: dict[str, Json]) -> str:
    aor, contact = _text(sub.get("aor")), _text(sub.get("contact"))
    event, state = _text(sub.get("event")), _text(sub.get("state"))
    user, hostport = _SIP_USER.match(aor), _SIP_HOSTPORT.match(contact)
    if user is None or hostport is None:
        return f"{aor} {contact} {event} {_text(sub.get('expires_at'))} {state}"
    host = hostport.group(1) + (f":{hostport.group(2)}" if hostport.group(2) else "")
    return f"{user.group(1)} {host} {event} {_text(sub.get('expires_in'))} {state}"


def _appearance_line(app: dict[str, Json]) -> str:
    keys = ("aor", "index", "state", "mtime", "owner", "callee", "call_id", "member_tag", "remote_tag")
    return " ".join(_text(app.get(key)) for key in keys)


def _deactivation_line(sub: dict[str, Json]) -> str:
    return f"Deactivating {_text(sub.get('event'))} subscription from {_text(sub.get('contact'))}"


def _show_subscription_line(sub: dict[str, Json]) -> str:
    keys = ("aor", "event", "contact", "expires_at")
    return " ".join(_text(sub.get(key)) for key in keys)


def _kamailio_lines(method: str, result: Json) -> list[str] | None:
    """Kamailio's one-line text formats of the ``sca.*`` methods (rpc.md 3.2), None if none."""
    per_item: dict[str, Callable[[dict[str, Json]], str]] = {
        "sca.all_subscriptions": _subscription_line,
        "sca.show_subscription": _show_subscription_line,
        "sca.deactivate_all_subscriptions": _deactivation_line,
        "sca.deactivate_subscription": _deactivation_line,
        "sca.all_appearances": _appearance_line,
    }
    if method in per_item:
        return [per_item[method](item) for item in _dicts(result)]
    if method in ("sca.update_appearance", "sca.release_appearance"):
        return []
    if not isinstance(result, dict | list):
        return None
    if method == "sca.subscribers":
        return [_text(item) for item in result] if isinstance(result, list) else None
    if not isinstance(result, dict):
        return None
    if method == "sca.subscription_count":
        return [f"{_text(result.get('count'))} {_text(result.get('event'))}"]
    if method == "sca.show_appearance":
        return [_appearance_line(item) for item in _dicts(result.get("appearances"))]
    if method == "sca.seize_appearance":
        owner, aor = _text(result.get("owner")), _text(result.get("aor"))
        return [f"Seized {aor} appearance-index {_text(result.get('index'))} for {owner}"]
    if method == "sca.flush":
        return [_text(result.get("written"))]
    return None


def render(method: str, envelope: dict[str, Json], fmt: str, template: str | None) -> str:
    """The text printed for a successful reply."""
    result = envelope.get("result")
    if fmt == "raw":
        return json.dumps(envelope, ensure_ascii=False) + "\n"
    if template is not None:
        return render_format(result, template)
    if fmt == "json":
        return json.dumps(result, indent=2, ensure_ascii=False) + "\n"
    lines = _kamailio_lines(method, result) if fmt == "kamailio" else None
    if lines is None:
        lines = render_pretty(result)
    return "".join(line + "\n" for line in lines)


# --------------------------------------------------------------------------------------------
# Completion


def completion_script(methods: Sequence[str]) -> str:
    """A bash completion function for ``scactl`` (methods from the catalogue)."""
    words = " ".join([*SUBCOMMANDS, *sorted(methods)])
    options = "-s --token-file -F --text -f -t -h --help"
    return f"""# bash completion for scactl; load with: source <(scactl completion bash)
_scactl() {{
    local cur prev i
    cur="${{COMP_WORDS[COMP_CWORD]}}"
    prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    case "$prev" in
        -F) COMPREPLY=( $(compgen -W "{" ".join(FORMATS)}" -- "$cur") ); return 0 ;;
        -s|--token-file|-f|-t) COMPREPLY=( $(compgen -f -- "$cur") ); return 0 ;;
    esac
    for (( i=1; i<COMP_CWORD; i++ )); do
        case "${{COMP_WORDS[i]}}" in
            help|rpc) COMPREPLY=( $(compgen -W "{" ".join(sorted(methods))}" -- "$cur") ); return 0 ;;
            completion) COMPREPLY=( $(compgen -W "bash" -- "$cur") ); return 0 ;;
            -s|--token-file|-F|-f|-t) ((i++)) ;;
            -*) ;;
            *) return 0 ;;
        esac
    done
    if [[ "$cur" == -* ]]; then
        COMPREPLY=( $(compgen -W "{options}" -- "$cur") )
    else
        COMPREPLY=( $(compgen -W "{words}" -- "$cur") )
    fi
}}
complete -F _scactl scactl scactl.py
"""


# --------------------------------------------------------------------------------------------
# Main


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scactl",
        description="Call scaserver's JSON-RPC control interface (kamcmd-compatible arguments).",
        epilog="subcommands: help [METHOD], rpc METHOD [ARG ...], completion bash",
    )
    parser.add_argument(
        "-s", dest="address", help=f"{_ADDRESS_FORMS} (default {DEFAULT_ADDRESS})"
    )
    parser.add_argument("--token-file", help="file holding the bearer token")
    parser.add_argument("-F", dest="fmt", choices=FORMATS, help="output format")
    parser.add_argument("--text", action="store_true", help="alias of -F kamailio")
    parser.add_argument("-f", dest="template", help="kamcmd-style per-value format, e.g. '%%v\\t%%v\\n'")
    parser.add_argument(
        "-t", dest="timeout", type=float, default=10.0, help="timeout in seconds (default 10)"
    )
    parser.add_argument("command", help="METHOD, help, rpc or completion")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def _token(path: str | None) -> str | None:
    if not path:
        return None
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as error:
        raise UsageError(f"cannot read token file {path}: {error.strerror}") from None


def _fault(envelope: dict[str, Json], stderr: TextIO) -> bool:
    error = envelope.get("error")
    if error is None:
        return False
    code, message = (error.get("code"), error.get("message")) if isinstance(error, dict) else (None, error)
    stderr.write(f"error: {_text(code)} - {_text(message)}\n")
    return True


def _help(
    address: str, token: str | None, timeout: float, args: list[str], *, stdout: TextIO, stderr: TextIO
) -> int:
    if not args:
        envelope = call(address, token, "system.listMethods", [], timeout)
        if _fault(envelope, stderr):
            return EXIT_FAULT
        stdout.write(render("system.listMethods", envelope, "pretty", None))
        return EXIT_OK
    if len(args) != 1:
        raise UsageError("usage: scactl help [METHOD]")
    doc = call(address, token, "system.methodHelp", [args[0]], timeout)
    if _fault(doc, stderr):
        return EXIT_FAULT
    signature = call(address, token, "system.methodSignature", [args[0]], timeout)
    if _fault(signature, stderr):
        return EXIT_FAULT
    params: list[tuple[str, bool]] = []
    described = signature.get("result")
    for param in described if isinstance(described, list) else []:
        if isinstance(param, dict):
            params.append((_text(param.get("name")), not param.get("optional")))
    stdout.write(f"{_text(doc.get('result'))}\nusage: {usage_line(args[0], params)}\n")
    for param in described if isinstance(described, list) else []:
        if isinstance(param, dict):
            optional = " (optional)" if param.get("optional") else ""
            stdout.write(f"\t{_text(param.get('name'))}: {_text(param.get('type'))}{optional}\n")
    return EXIT_OK


def main(
    argv: Sequence[str] | None = None,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
    catalogue_path: Traversable | Path = CATALOGUE,
) -> int:
    out = sys.stdout if stdout is None else stdout
    err = sys.stderr if stderr is None else stderr
    env = os.environ if environ is None else environ
    try:
        options = _parser().parse_args(argv)
    except SystemExit as stop:
        return EXIT_OK if stop.code == 0 else EXIT_USAGE
    catalogue = load_catalogue(catalogue_path)
    address = options.address or env.get("SCACTL_ADDRESS") or DEFAULT_ADDRESS
    fmt = "kamailio" if options.text else options.fmt or ("pretty" if out.isatty() else "json")
    command: str = options.command
    args: list[str] = list(options.args)
    try:
        if command == "completion":
            if args != ["bash"]:
                raise UsageError("usage: scactl completion bash")
            out.write(completion_script(list(catalogue)))
            return EXIT_OK
        token = _token(options.token_file or env.get("SCACTL_TOKEN_FILE"))
        if command == "help":
            return _help(address, token, options.timeout, args, stdout=out, stderr=err)
        if command == "rpc":
            if not args:
                raise UsageError("usage: scactl rpc METHOD [ARG ...]")
            command, args, fmt = args[0], args[1:], "raw"
        check_arity(catalogue, command, len(args))
        envelope = call(address, token, command, [convert_argument(arg) for arg in args], options.timeout)
        if fmt == "raw":
            out.write(render(command, envelope, fmt, None))
            return EXIT_FAULT if "error" in envelope else EXIT_OK
        if _fault(envelope, err):
            return EXIT_FAULT
        out.write(render(command, envelope, fmt, options.template))
        return EXIT_OK
    except UsageError as error:
        err.write(f"{error}\n")
        return EXIT_USAGE
    except TransportError as error:
        err.write(f"error: {error}\n")
        return EXIT_TRANSPORT


if __name__ == "__main__":
    sys.exit(main())
