"""Edge pieces of the control plane without sockets: bind policy, tokens, datagram replies."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

import attrs
import pytest

from scaserver.control.registry import Scope
from scaserver.edge.http import BearerTokens, InsecureRpcBindError, TokenFileError, check_rpc_bind
from scaserver.edge.rpcdgram import RpcDatagramProtocol

from .fakes import LINE, Rig

NO_TOKENS = BearerTokens()
TOKENS = BearerTokens(((b"adm", Scope.ADMIN), (b"ro", Scope.READ)))


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"])
def test_loopback_bind_without_token_is_fine(host: str) -> None:
    check_rpc_bind(host, NO_TOKENS)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "192.0.2.10", "2001:db8::1", "pbx.example.com"])
def test_non_loopback_bind_without_token_is_refused(host: str) -> None:
    with pytest.raises(InsecureRpcBindError):
        check_rpc_bind(host, NO_TOKENS)
    check_rpc_bind(host, TOKENS)


def test_token_scopes() -> None:
    assert TOKENS.scope_of(b"adm") is Scope.ADMIN
    assert TOKENS.scope_of(b"ro") is Scope.READ
    assert TOKENS.scope_of(b"r") is None
    assert TOKENS.scope_of(b"") is None
    assert not NO_TOKENS
    assert TOKENS


def test_tokens_from_files(tmp_path: Path) -> None:
    (tmp_path / "admin").write_text("  admin-token\n")
    (tmp_path / "ro").write_text("read-token")
    tokens = BearerTokens.from_files({Scope.ADMIN: tmp_path / "admin", Scope.READ: tmp_path / "ro"})
    assert tokens.scope_of(b"admin-token") is Scope.ADMIN
    assert tokens.scope_of(b"read-token") is Scope.READ
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(TokenFileError, match="empty token file"):
        BearerTokens.from_files({Scope.ADMIN: tmp_path / "empty"})
    with pytest.raises(TokenFileError, match="missing"):
        BearerTokens.from_files({Scope.ADMIN: tmp_path / "missing"})


@attrs.define
class RecordingSocket:
    sent: list[tuple[bytes, Any]] = attrs.Factory(list)

    def write(self, packet: bytes, addr: Any) -> None:
        self.sent.append((packet, addr))


def datagram_protocol(rig: Rig, **kw: Any) -> tuple[RpcDatagramProtocol, RecordingSocket]:
    protocol = RpcDatagramProtocol(rig.dispatcher, **kw)
    wire = RecordingSocket()
    protocol.transport = wire  # type: ignore[assignment]
    return protocol, wire


def request(method: str, params: list[Any], request_id: int | None = 1) -> bytes:
    document: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": params}
    if request_id is not None:
        document["id"] = request_id
    return json.dumps(document).encode()


def test_datagram_reply_goes_to_the_sender() -> None:
    rig = Rig()
    protocol, wire = datagram_protocol(rig)
    protocol.datagramReceived(request("sca.subscription_count", ["call-info"]), "/tmp/kamcmd.1234")
    [(packet, addr)] = wire.sent
    assert addr == "/tmp/kamcmd.1234"
    assert json.loads(packet) == {"jsonrpc": "2.0", "result": {"event": "call-info", "count": 2}, "id": 1}


def test_datagram_peers_are_admin_and_audited_as_unixd() -> None:
    rig = Rig()
    protocol, _ = datagram_protocol(rig)
    protocol.datagramReceived(request("sca.release_appearance", [LINE, 1]), "/tmp/k")
    assert [(record.transport, record.scope, record.peer) for record in rig.audits] == [
        ("unixd", Scope.ADMIN, "unix:/tmp/k")
    ]


def test_reply_too_large_becomes_fault() -> None:
    protocol, wire = datagram_protocol(Rig(), max_reply=64)
    protocol.datagramReceived(request("sca.all_appearances", [], request_id=7), "/tmp/k")
    [(packet, _)] = wire.sent
    assert json.loads(packet) == {
        "jsonrpc": "2.0",
        "error": {"code": 500, "message": "Reply too large, use HTTP"},
        "id": 7,
    }


def test_notification_and_unbound_sender_get_nothing() -> None:
    rig = Rig()
    protocol, wire = datagram_protocol(rig)
    protocol.datagramReceived(request("sca.flush", [], request_id=None), "/tmp/k")
    protocol.datagramReceived(request("sca.flush", []), "")
    protocol.datagramReceived(request("sca.flush", []), None)
    assert wire.sent == []
    assert rig.sca.calls == [("flush", ())] * 3


def test_udp_needs_allow_from() -> None:
    rig = Rig()
    closed, closed_wire = datagram_protocol(rig)
    closed.datagramReceived(request("core.version", []), ("127.0.0.1", 4000))
    assert closed_wire.sent == []
    allowed, wire = datagram_protocol(rig, allow_from=[ipaddress.ip_network("127.0.0.0/8")])
    allowed.datagramReceived(request("core.version", []), ("127.0.0.1", 4000))
    allowed.datagramReceived(request("core.version", []), ("192.0.2.1", 4000))
    allowed.datagramReceived(request("core.version", []), ("not-an-ip", 4000))
    assert [addr for _, addr in wire.sent] == [("127.0.0.1", 4000)]


def test_garbage_datagram_gets_parse_error() -> None:
    protocol, wire = datagram_protocol(Rig())
    protocol.datagramReceived(b"\x00\x01", "/tmp/k")
    assert json.loads(wire.sent[0][0])["error"]["code"] == -32700
