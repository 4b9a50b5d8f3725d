"""The listen addresses of the file and the command line: ``HOST:PORT``, ``[V6]:PORT`` or
``IFNAME:PORT`` (every usable address of a network interface, read from the kernel)."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from typing import Final

from pyroute2 import IPRoute

from scaserver.config.errors import RejectedValue, show
from scaserver.edge.endpoint import Endpoint

DEFAULT_SIP_PORT: Final = 5060
DEFAULT_SIPS_PORT: Final = 5061
DEFAULT_HTTP_PORT: Final = 8080

InterfaceLookup = Callable[[str], "tuple[str, ...] | None"]
"""Addresses bound to a network interface by name, or None when there is no such interface."""


def system_interfaces(name: str) -> tuple[str, ...] | None:
    """The addresses of interface ``name`` from the kernel (rtnetlink), or None if it does not exist.

    IPv4 addresses are matched by label (so ``eth0:1`` aliases work); IPv6 addresses by
    interface index, leaving out link-local ones (they cannot be bound without a scope).
    """
    with IPRoute() as ipr:
        addresses: list[str] = [str(message.get_attr("IFA_ADDRESS")) for message in ipr.get_addr(label=name)]
        indexes = ipr.link_lookup(ifname=name)
        if not indexes and not addresses:
            return None
        for index in indexes:
            for message in ipr.get_addr(index=index, family=socket.AF_INET6):
                if message["scope"] != 253:  # RT_SCOPE_LINK
                    addresses.append(str(message.get_attr("IFA_ADDRESS")))
    return tuple(addresses)


def split_host_port(text: str, default_port: int) -> tuple[str, int]:
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise RejectedValue(f"{show(text)}: unterminated IPv6 bracket")
        host, rest = text[1:end], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise RejectedValue(f"{show(text)}: expected HOST:PORT")
        port_text = rest[1:] if rest else ""
    elif text.count(":") > 1:
        raise RejectedValue(f"{show(text)}: write IPv6 addresses in brackets, as [::1]:5060")
    else:
        host, _, port_text = text.partition(":")
    if not host:
        raise RejectedValue(f"{show(text)}: missing host")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise RejectedValue(f"{show(text)}: port must be a number from 0 to 65535")
    return host, int(port_text)


def parse_endpoints(text: str, default_port: int, interfaces: InterfaceLookup) -> tuple[Endpoint, ...]:
    """``HOST:PORT`` / ``[V6]:PORT`` / ``IFNAME:PORT`` -> the endpoints to bind (raises ValueError)."""
    host, port = split_host_port(text, default_port)
    try:
        return (Endpoint(ipaddress.ip_address(host).compressed, port),)
    except ValueError:
        pass
    addresses = interfaces(host)
    if addresses is None:
        raise RejectedValue(f"{show(text)}: not an IP address or a network interface")
    if not addresses:
        raise RejectedValue(f"{show(text)}: interface {host} has no usable address")
    return tuple(Endpoint(ipaddress.ip_address(address).compressed, port) for address in addresses)
