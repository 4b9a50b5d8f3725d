"""The socket filter mirrors the bans: datagrams from a banned address never reach the socket,
others do; it follows a lifted ban and an expiry (loopback, 127.0.0.x)."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from twisted.internet.task import Clock

from scaserver.edge.kernelfilter import MAX_FILTERED, KernelBanFilter, filtered, program
from scaserver.guard.sources import Ban, BanReason, SecuritySettings, SourceGuard


def received(server: socket.socket, sender: str) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((sender, 0))
        sock.sendto(b"ping " + sender.encode(), server.getsockname())
    server.settimeout(0.5)
    try:
        return server.recv(100) == b"ping " + sender.encode()
    except TimeoutError:
        return False


@pytest.fixture
def server() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    return sock


def test_a_banned_address_is_dropped_by_the_kernel_and_lifted_again(server: socket.socket) -> None:
    clock = Clock()
    clock.advance(1000)
    guard = SourceGuard(SecuritySettings(ban_s=60.0))
    kernel = KernelBanFilter(guard, clock, lambda: [server])
    kernel.banned(guard.ban("127.0.0.2", BanReason.MANUAL, clock.seconds()))
    assert kernel.enabled
    try:
        assert not received(server, "127.0.0.2")
        assert received(server, "127.0.0.3")
        clock.advance(60.1)  # the expiry timer rebuilds the filter
        assert received(server, "127.0.0.2")
        kernel.banned(guard.ban("127.0.0.3", BanReason.MANUAL, clock.seconds()))
        assert not received(server, "127.0.0.3")
        guard.unban("127.0.0.3")
        kernel.refresh()
        assert received(server, "127.0.0.3")
    finally:
        kernel.stop()
        server.close()


def test_the_program_keeps_the_most_recent_bans_within_its_size() -> None:
    bans = [Ban(f"10.0.{i // 256}.{i % 256}", BanReason.RATE, float(i), 1e9) for i in range(400)]
    addresses = filtered([*bans, Ban("2001:db8::1", BanReason.RATE, 1e6, 1e9)])
    assert len(addresses) == MAX_FILTERED
    assert addresses[0] == ipaddress.IPv4Address("10.0.1.143")  # the latest IPv4 ban first
    code = program(addresses)
    assert len(code) == MAX_FILTERED + 3
    assert code[1][1] == MAX_FILTERED  # the first comparison jumps over the rest to the drop
    with pytest.raises(ValueError, match="at most"):
        program([ipaddress.IPv4Address("10.0.0.1")] * (MAX_FILTERED + 1))
