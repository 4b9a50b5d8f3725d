"""What the router decides with: :class:`CoreSettings`."""

from __future__ import annotations

import attrs

from scaserver.sip.domains import DomainPolicy, as_domain_policy
from scaserver.sip.message import Peer

HELD_PER_IN_PROGRESS = 16
"""Transactions held in all (settled ones included) per ``max_transactions`` in progress.
A settled transaction is small (its key, its peer and its last response) but lives long:
at 2000 seize cycles a second, 8 transactions each, the non-INVITE server transactions
held for Timer J (32 s) and the client ones for Timer K (5 s) are about 300 000."""


@attrs.frozen
class CoreSettings:
    """What the dispatcher decides with.

    ``domains``: which SIP domains we are registrar and proxy for (one policy for every
    part of the server; a set of names is read as ``server.domains``);
    ``upstream``: where requests for other domains go (the PBX or PSTN
    gateway), None to refuse them; ``require_auth``: challenge requests from
    peers that are not trusted; ``server``: the Server/User-Agent header value;
    ``strip_call_info``: remove SCA Call-Info values from what the proxy relays
    (sca.md 5.3: the far end never sees appearance indexes); ``max_transactions``: with this
    many transactions in progress (without their final response), or
    :data:`HELD_PER_IN_PROGRESS` times as many held in all (the settled ones wait out their
    retransmission timers: Timer J keeps a non-INVITE server transaction 32 s on UDP), a
    request that would start another gets 503 with Retry-After ``retry_after_s`` (work and
    memory stay bounded under a flood); ``insert_pai``: a call a
    subscriber places through a trusted upstream carries the P-Asserted-Identity of the shared
    line it is on, or of the subscriber (RFC 3325).
    """

    domains: DomainPolicy = attrs.field(converter=as_domain_policy)
    upstream: Peer | None = None
    require_auth: bool = True
    server: str = "scaserver"
    supported: frozenset[str] = frozenset({"path"})
    strip_call_info: bool = True
    max_transactions: int = 20000
    retry_after_s: int = 5
    insert_pai: bool = False
