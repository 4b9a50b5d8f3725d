"""scactl (``scaserver.scactl``) against a tiny in-test HTTP server (rpc.md section 4)."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol, TextIO, cast

import pytest

from scaserver import scactl
from scaserver.config.schema import HttpSettings

ROOT = Path(__file__).resolve().parents[2]
LAUNCHER = ROOT / "rpc" / "scactl"


class _Main(Protocol):
    def __call__(
        self,
        argv: Sequence[str] | None = None,
        *,
        stdout: TextIO | None = None,
        stderr: TextIO | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> int: ...


scactl_main = cast(_Main, scactl.main)


class FakeServer:
    """Answers every POST with ``reply(request_document) -> (status, body)``; records requests."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], Any]] = []
        self.reply: Callable[[Any], tuple[int, bytes]] = lambda doc: (200, b"{}")
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                document = json.loads(self.rfile.read(length))
                owner.requests.append((self.path, dict(self.headers.items()), document))
                status, body = owner.reply(document)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/RPC"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.01,), daemon=True)
        self.thread.start()

    def result(self, value: Any) -> None:
        self.reply = lambda doc: (
            200,
            json.dumps({"jsonrpc": "2.0", "result": value, "id": doc["id"]}).encode(),
        )

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[FakeServer]:
    fake = FakeServer()
    yield fake
    fake.close()


def run(
    argv: list[str], server: FakeServer | None = None, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    args = ["-s", server.url, *argv] if server is not None else argv
    code = scactl_main(args, stdout=out, stderr=err, environ=env or {})
    return code, out.getvalue(), err.getvalue()


SUBSCRIPTION = {
    "aor": "sip:2001@pbx.example.com",
    "event": "call-info",
    "subscriber": "sip:2001@pbx.example.com",
    "contact": "sip:2001@10.0.1.2:5060",
    "state": "active",
    "expires_at": 1732453412,
    "expires_in": 3412,
}
APPEARANCE = {
    "aor": "sip:2001@pbx.example.com",
    "index": 1,
    "state": "active",
    "mtime": 1732450000,
    "owner": "sip:2001@10.0.1.2:5060",
    "callee": "sip:+15551234@carrier.example",
    "call_id": "a84b4c76e66710@10.0.1.2",
    "member_tag": "1928301774",
    "remote_tag": "as6151ad25",
}


def test_arguments_follow_kamcmd(server: FakeServer) -> None:
    server.result(None)
    assert run(["-F", "json", "sca.update_appearance", "sip:a@b", "2", "s:held", "-7"], server)[0] == 0
    path, headers, document = server.requests[0]
    assert path == "/RPC"
    assert headers["Content-Type"] == "application/json"
    assert document == {
        "jsonrpc": "2.0",
        "method": "sca.update_appearance",
        "params": ["sip:a@b", 2, "held", -7],
        "id": 1,
    }


def test_s_prefix_forces_string(server: FakeServer) -> None:
    server.result("x")
    run(["-F", "json", "system.methodHelp", "s:1"], server)
    assert server.requests[0][2]["params"] == ["1"]


def test_json_output_is_result_only(server: FakeServer) -> None:
    server.result({"event": "call-info", "count": 2})
    code, out, err = run(["-F", "json", "sca.subscription_count", "call-info"], server)
    assert (code, json.loads(out), err) == (0, {"event": "call-info", "count": 2}, "")


def test_piped_default_is_json(server: FakeServer) -> None:
    server.result([1])
    assert json.loads(run(["core.version"], server)[1]) == [1]


def test_raw_and_rpc_print_the_envelope(server: FakeServer) -> None:
    server.result("v")
    for argv in (["-F", "raw", "core.version"], ["rpc", "core.version"]):
        code, out, _ = run(argv, server)
        assert code == 0
        assert json.loads(out) == {"jsonrpc": "2.0", "result": "v", "id": 1}


def test_pretty_is_kamcmd_tree(server: FakeServer) -> None:
    server.result(
        {"AoR": "2001@pbx.example.com", "Contacts": [{"Contact": {"Address": "sip:2001@h", "Expires": 533}}]}
    )
    code, out, _ = run(["-F", "pretty", "ul.lookup", "location", "2001@pbx.example.com"], server)
    assert code == 0
    assert out == (
        "{\n"
        "\tAoR: 2001@pbx.example.com\n"
        "\tContacts: {\n"
        "\t\tContact: {\n"
        "\t\t\tAddress: sip:2001@h\n"
        "\t\t\tExpires: 533\n"
        "\t\t}\n"
        "\t}\n"
        "}\n"
    )


def test_pretty_scalars_and_arrays(server: FakeServer) -> None:
    server.result(["a", None, True, 3])
    assert run(["-F", "pretty", "system.listMethods"], server)[1] == "a\nnull\ntrue\n3\n"


@pytest.mark.parametrize(
    ("method", "args", "result", "text"),
    [
        ("sca.all_subscriptions", [], [SUBSCRIPTION], "2001 10.0.1.2:5060 call-info 3412 active\n"),
        (
            "sca.all_subscriptions",
            [],
            [{**SUBSCRIPTION, "aor": "2001"}],
            "2001 sip:2001@10.0.1.2:5060 call-info 1732453412 active\n",
        ),
        ("sca.subscription_count", ["call-info"], {"event": "call-info", "count": 2}, "2 call-info\n"),
        (
            "sca.show_subscription",
            ["sip:2001@pbx.example.com", "call-info"],
            [SUBSCRIPTION],
            "sip:2001@pbx.example.com call-info sip:2001@10.0.1.2:5060 1732453412\n",
        ),
        ("sca.subscribers", [], ["sip:a@h", "sip:b@h"], "sip:a@h\nsip:b@h\n"),
        (
            "sca.deactivate_all_subscriptions",
            [],
            [SUBSCRIPTION],
            "Deactivating call-info subscription from sip:2001@10.0.1.2:5060\n",
        ),
        (
            "sca.all_appearances",
            [],
            [APPEARANCE],
            "sip:2001@pbx.example.com 1 active 1732450000 sip:2001@10.0.1.2:5060 "
            "sip:+15551234@carrier.example a84b4c76e66710@10.0.1.2 1928301774 as6151ad25\n",
        ),
        (
            "sca.seize_appearance",
            ["sip:2001@pbx.example.com", "sip:2001@10.0.1.3:5060"],
            {**APPEARANCE, "index": 2, "owner": "sip:2001@10.0.1.3:5060"},
            "Seized sip:2001@pbx.example.com appearance-index 2 for sip:2001@10.0.1.3:5060\n",
        ),
        ("sca.release_appearance", ["sip:2001@pbx.example.com", "1"], APPEARANCE, ""),
        ("sca.update_appearance", ["sip:2001@pbx.example.com", "1", "held"], APPEARANCE, ""),
        ("sca.flush", [], {"written": 3}, "3\n"),
        ("core.version", [], "scaserver 0.1.0", "scaserver 0.1.0\n"),
    ],
)
def test_text_mode_reproduces_kamailio_lines(
    server: FakeServer, method: str, args: list[str], result: Any, text: str
) -> None:
    server.result(result)
    assert run(["--text", method, *args], server) == (0, text, "")
    assert run(["-F", "kamailio", method, *args], server) == (0, text, "")


def test_show_appearance_text(server: FakeServer) -> None:
    server.result({"aor": "sip:2001@pbx.example.com", "max_appearances": 1, "appearances": [APPEARANCE]})
    out = run(["--text", "sca.show_appearance", "sip:2001@pbx.example.com"], server)[1]
    assert out.startswith("sip:2001@pbx.example.com 1 active 1732450000 ")


def test_per_value_format(server: FakeServer) -> None:
    server.result([{"event": "call-info", "count": 2}, {"event": "line-seize", "count": 1}])
    assert run(["-f", r"%v=%v\n", "x.y"], server)[1] == "call-info=2\nline-seize=1\n"


def test_fault_exit_1_with_kamcmd_wording(server: FakeServer) -> None:
    server.reply = lambda doc: (
        404,
        json.dumps({"jsonrpc": "2.0", "error": {"code": 404, "message": "AOR not found"}, "id": 1}).encode(),
    )
    assert run(["ul.rm", "location", "9@x"], server) == (1, "", "error: 404 - AOR not found\n")
    code, out, _ = run(["rpc", "ul.rm", "location", "9@x"], server)
    assert code == 1
    assert json.loads(out)["error"]["code"] == 404


def test_usage_errors_exit_2(server: FakeServer) -> None:
    assert run(["sca.release_appearance", "sip:a@b"], server) == (
        2,
        "",
        "usage: sca.release_appearance aor index\n",
    )
    assert run(["-F", "yaml", "core.version"], server)[0] == 2
    assert run([], server)[0] == 2
    assert run(["rpc"], server)[0] == 2
    assert run(["help", "a", "b"], server)[0] == 2
    assert run(["-s", "ftp://x/", "core.version"])[0] == 2
    assert run(["--token-file", "/nonexistent/token", "core.version"], server)[0] == 2
    assert server.requests == []


def test_transport_failures_exit_3(server: FakeServer) -> None:
    server.reply = lambda doc: (401, b"Unauthorized")
    code, _, err = run(["core.version"], server)
    assert code == 3
    assert "authentication failed" in err
    server.reply = lambda doc: (502, b"<html>")
    assert run(["core.version"], server)[0] == 3
    assert run(["-s", "http://127.0.0.1:1/RPC", "core.version"])[0] == 3
    assert run(["-s", "unix:/nonexistent/rpc.sock", "core.version"])[0] == 3


def test_token_file_and_environment(server: FakeServer, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    server.result("v")
    env = {"SCACTL_ADDRESS": server.url, "SCACTL_TOKEN_FILE": str(token)}
    assert run(["core.version"], env=env)[0] == 0
    assert server.requests[0][1]["Authorization"] == "Bearer s3cret"


def test_help(server: FakeServer) -> None:
    server.result(["core.version", "sca.flush"])
    assert run(["help"], server) == (0, "core.version\nsca.flush\n", "")
    answers = iter(
        [
            "Releases an appearance.",
            [
                {"name": "aor", "type": "string", "optional": False},
                {"name": "index", "type": "integer", "optional": True},
            ],
        ]
    )
    server.reply = lambda doc: (
        200,
        json.dumps({"jsonrpc": "2.0", "result": next(answers), "id": 1}).encode(),
    )
    code, out, _ = run(["help", "sca.release_appearance"], server)
    assert code == 0
    assert out == (
        "Releases an appearance.\nusage: sca.release_appearance aor [index]\n"
        "\taor: string\n\tindex: integer (optional)\n"
    )
    assert [request[2]["method"] for request in server.requests[1:]] == [
        "system.methodHelp",
        "system.methodSignature",
    ]


def test_help_fault(server: FakeServer) -> None:
    server.reply = lambda doc: (
        400,
        json.dumps(
            {"jsonrpc": "2.0", "error": {"code": 400, "message": "command not found"}, "id": 1}
        ).encode(),
    )
    assert run(["help", "nope"], server) == (1, "", "error: 400 - command not found\n")


def test_completion_script_lists_catalogue_methods() -> None:
    code, out, _ = run(["completion", "bash"])
    assert code == 0
    assert "complete -F _scactl scactl" in out
    assert "sca.all_appearances" in out
    assert "ul.rm_contact" in out
    assert run(["completion", "zsh"])[0] == 2
    checked = subprocess.run(["bash", "-n"], input=out, text=True, capture_output=True, check=False)
    assert checked.returncode == 0, checked.stderr


def test_runs_as_a_script_and_as_a_module() -> None:
    for command in ([str(LAUNCHER)], ["-m", "scaserver.scactl"]):
        done = subprocess.run(
            [sys.executable, *command, "completion", "bash"], capture_output=True, text=True, check=False
        )
        assert done.returncode == 0
        assert "_scactl()" in done.stdout


def test_default_address_is_the_servers_default_http_listen() -> None:
    listen = HttpSettings().listen
    assert f"http://{listen.host}:{listen.port}/RPC" == scactl.DEFAULT_ADDRESS


def test_tcp_address_form(server: FakeServer) -> None:
    server.result("0.1.0")
    port = server.url.split(":")[2].split("/")[0]
    assert run(["-s", f"tcp:127.0.0.1:{port}", "-F", "json", "core.version"]) == (0, '"0.1.0"\n', "")
    assert server.requests[0][0] == "/RPC"
    assert run(["-s", "tcp:nowhere", "core.version"])[0] == 2


def _datagram_server(family: socket.AddressFamily, address: str | tuple[str, int]) -> socket.socket:
    """Answers one JSON-RPC datagram to its sender, as the server's datagram socket does."""
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind(address)

    def answer() -> None:
        data, peer = sock.recvfrom(65535)
        request = json.loads(data)
        reply = {"jsonrpc": "2.0", "result": request["method"], "id": request["id"]}
        sock.sendto(json.dumps(reply).encode(), peer)

    threading.Thread(target=answer, daemon=True).start()
    return sock


def test_unix_datagram_address_form(tmp_path: Path) -> None:
    path = tmp_path / "scaserver_rpc.sock"
    with _datagram_server(socket.AF_UNIX, str(path)):
        assert run(["-s", f"unixd:{path}", "-F", "json", "core.version"]) == (0, '"core.version"\n', "")
    assert list(Path("/tmp").glob(f"scactl-{os.getpid()}-*.sock")) == []


def test_udp_address_form() -> None:
    with _datagram_server(socket.AF_INET, ("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]
        assert run(["-s", f"udp:127.0.0.1:{port}", "-F", "json", "sca.flush"]) == (0, '"sca.flush"\n', "")


def test_datagram_address_without_a_server_is_a_transport_error(tmp_path: Path) -> None:
    assert run(["-s", f"unixd:{tmp_path / 'absent.sock'}", "-t", "0.5", "core.version"])[0] == 3
