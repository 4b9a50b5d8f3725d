"""``[midregistrar]``: the push mid-registrar's table (push-and-parking.md section 3.1, keys
``midreg.*`` there), structured straight from TOML and handed to the engine whole, with the
values the composition root derives from it beside it in
:class:`scaserver.registrar.midregistrar.MidRegSettings`."""

from __future__ import annotations

import enum
from typing import Final

import attrs

from scaserver.tomlkeys import Secret

UPSTREAM_AUTH_MODES: Final = ("none", "subscriber", "static")


class Mode(enum.Enum):
    AOR = "aor"
    MIRROR = "mirror"


@attrs.frozen
class UpstreamCredential:
    """``[[midregistrar.credentials]]``: how scaserver answers a challenge to its own REGISTER
    for ``aor`` when ``upstream_auth = "static"`` (push-and-parking.md sections 3.1, 3.5).

    ``username`` "" is the AoR's user part; ``realm`` "" answers a challenge of any realm
    (with ``password`` only: an HA1 belongs to one realm).  Exactly one of ``password`` and
    ``ha1``, the hex H(username:realm:password) of ``ha1_algorithm`` (RFC 7616 section 3.4.2).
    """

    aor: str
    username: str = ""
    realm: str = ""
    password: Secret = attrs.field(default=Secret(""), repr=False)
    ha1: Secret = attrs.field(default=Secret(""), repr=False)
    ha1_algorithm: str = "MD5"


@attrs.frozen
class MidRegistrarSettings:
    """``[midregistrar]`` (push-and-parking.md section 3.1, keys ``midreg.*`` there).

    ``enabled`` false: scaserver is a plain registrar.  ``upstream`` is the registrar/PBX
    device REGISTERs go to, ``sip:host[:port][;transport=udp|tcp|tls]`` (its address is a
    trusted peer); ``upstream_domain`` the Request-URI domain of our own REGISTERs ("" = the
    upstream host); ``advertised`` the host[:port] of the aggregate contact ("" = the
    server's advertised address).  ``upstream_auth`` answers a challenge to our own REGISTER:
    ``none`` (the upstream trusts our address), ``subscriber`` (the subscriber table's HA1
    when the realm matches) or ``static`` (``credentials``).
    """

    enabled: bool = False
    mode: Mode = Mode.AOR
    upstream: str = ""
    upstream_domain: str = ""
    advertised: str = ""
    outgoing_expires: int = 3600
    refresh_fraction: float = 0.33
    upstream_timeout: float = 5.0
    retry_backoff: float = 5.0
    retry_cap: float = 300.0
    absorb_requires_same_callid: bool = True
    device_min_expires: int = 60
    device_max_expires: int = 3600
    device_default_expires: int = 3600
    max_contacts: int = 10
    unregister_grace: float = 0.0
    startup_spread: float = 60.0
    upstream_auth: str = "none"
    credentials: tuple[UpstreamCredential, ...] = ()


