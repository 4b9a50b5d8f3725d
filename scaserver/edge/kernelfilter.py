"""Banned sources dropped by the kernel: a classic BPF socket filter on the UDP sockets.

The source guard drops a banned source's datagrams as the first thing the read loop does, but
a flood faster than that loop fills the socket's receive buffer and the kernel then drops
everyone's datagrams alike.  :class:`KernelBanFilter` mirrors the bans in force into a socket
filter (``SO_ATTACH_FILTER``, Linux) on every IPv4 UDP socket, so a banned address's datagrams
never reach the buffer: the program loads the IPv4 source address (``SKF_NET_OFF + 12``) and
compares it with each banned address.  It is rebuilt when a ban starts, is lifted, or ends
(a timer at the earliest expiry).  At most :data:`MAX_FILTERED` addresses (the most recent
bans) are compiled in; the others are still dropped by the guard.  Where the kernel refuses
the filter (not Linux), the guard alone drops, and one warning says so.
"""

from __future__ import annotations

import ctypes
import ipaddress
import socket
import struct
from collections.abc import Callable, Iterable, Sequence
from typing import Final

from twisted.logger import Logger

from scaserver.edge.stack import DelayedCall, TimerClock, call_later
from scaserver.guard.sources import Ban, SourceGuard

SO_ATTACH_FILTER: Final = 26
SKF_NET_OFF: Final = -0x100000
MAX_FILTERED: Final = 255  # a conditional jump's offset is one octet

_LD_W_ABS: Final = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JEQ_K: Final = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_RET_K: Final = 0x06  # BPF_RET | BPF_K
_ACCEPT: Final = 0xFFFFFFFF
_DROP: Final = 0


def program(addresses: Sequence[ipaddress.IPv4Address]) -> list[tuple[int, int, int, int]]:
    """The filter: accept everything except datagrams from ``addresses`` (at most 255)."""
    if len(addresses) > MAX_FILTERED:
        raise ValueError(f"at most {MAX_FILTERED} addresses fit one filter")
    count = len(addresses)
    code = [(_LD_W_ABS, 0, 0, (SKF_NET_OFF + 12) & 0xFFFFFFFF)]
    for index, address in enumerate(addresses):
        code.append((_JEQ_K, count - index, 0, int(address)))  # equal: jump to the final drop
    code += [(_RET_K, 0, 0, _ACCEPT), (_RET_K, 0, 0, _DROP)]
    return code


def attach(sock: socket.socket, code: Sequence[tuple[int, int, int, int]]) -> None:
    """Replace ``sock``'s socket filter with ``code`` (raises OSError where unsupported)."""
    instructions = b"".join(struct.pack("HBBI", op, jt, jf, k) for op, jt, jf, k in code)
    buffer = ctypes.create_string_buffer(instructions, len(instructions))
    fprog = struct.pack("HL", len(code), ctypes.addressof(buffer))  # struct sock_fprog
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def filtered(bans: Iterable[Ban]) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses of the most recent bans, at most :data:`MAX_FILTERED`."""
    found: list[ipaddress.IPv4Address] = []
    for ban in sorted(bans, key=lambda ban: ban.since, reverse=True):
        try:
            address = ipaddress.ip_address(ban.host)
        except ValueError:
            continue
        if isinstance(address, ipaddress.IPv6Address):
            address = address.ipv4_mapped  # type: ignore[assignment]
        if isinstance(address, ipaddress.IPv4Address) and address not in found:
            found.append(address)
        if len(found) == MAX_FILTERED:
            break
    return found


class KernelBanFilter:
    """Keeps the socket filter of the UDP sockets ``sockets()`` equal to the guard's bans."""

    _log = Logger()

    def __init__(
        self, guard: SourceGuard, clock: TimerClock, sockets: Callable[[], Sequence[socket.socket]]
    ) -> None:
        self._guard, self._clock, self._sockets = guard, clock, sockets
        self._expiry: DelayedCall | None = None
        self._installed: list[ipaddress.IPv4Address] | None = None
        self.enabled = True

    def banned(self, _: Ban) -> None:
        self.refresh()

    def refresh(self) -> None:
        """Rebuild the filter from the bans in force, and wake up at the earliest expiry."""
        if not self.enabled:
            return
        now = self._clock.seconds()
        bans = self._guard.bans(now)
        if self._expiry is not None and self._expiry.active():
            self._expiry.cancel()
        self._expiry = None
        if bans:
            self._expiry = call_later(self._clock, max(0.0, bans[0].until - now) + 0.01, self.refresh)
        addresses = filtered(bans)
        if addresses == self._installed:
            return
        code = program(addresses)
        for sock in self._sockets():
            if sock.family != socket.AF_INET:
                continue
            try:
                attach(sock, code)
            except OSError as error:
                self.enabled = False
                self._log.warn(
                    "cannot attach a socket filter ({error}): banned sources are dropped by the server only",
                    error=str(error),
                )
                return
        self._installed = addresses
        self._log.debug("socket filter drops {count} banned address(es)", count=len(addresses))

    def stop(self) -> None:
        if self._expiry is not None and self._expiry.active():
            self._expiry.cancel()
        self._expiry = None
