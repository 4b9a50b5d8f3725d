"""The addresses the edge binds its listeners to, as the configuration file gives them."""

from __future__ import annotations

import socket

import attrs


@attrs.frozen
class Endpoint:
    """A transport address to bind: a numeric IPv4/IPv6 host (no brackets) and a port."""

    host: str
    port: int

    @property
    def family(self) -> socket.AddressFamily:
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
