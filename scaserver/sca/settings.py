"""``[sca]``: the settings of sca.md section 12, structured straight from the table, and the
values the composition root derives for the engine beside them (:class:`ServerRole`)."""

from __future__ import annotations

import enum

import attrs

from scaserver.sip.sessiontimer import SessionIntervals
from scaserver.tomlkeys import INLINE


class CallInfoUri(enum.Enum):
    """What goes inside the angle brackets of an SCA Call-Info value (sca.md section 5.1)."""

    DOMAIN = "domain"
    AOR = "aor"


@attrs.frozen
class ConfiguredLine:
    """``[[sca.lines]]``: a shared line provisioned in the file (demo and small sites)."""

    aor: str
    appearances: int = 2
    members: tuple[str, ...] = ()
    push_members: bool = False


@attrs.frozen
class ConfiguredAlias:
    """``[[sca.aliases]]``: another name of a shared line (sca.md Q26), a number or URI that
    requests and subscriptions reach the line by (``alias = "sip:100@example.com"``,
    ``line = "sip:2001@example.com"``)."""

    alias: str
    line: str


@attrs.frozen
class ScaSettings:
    """``[sca]``: the parameters of sca.md section 12, under the same names.

    ``hash_table_size``, ``subs_table`` and ``state_table`` are accepted for parity and
    carry no behaviour of their own.  ``call_info_uri`` is ``"domain"``, ``"aor"`` or a
    fixed SIP URI; ``max_appearances`` 0 and ``min_expires`` 0 mean no limit;
    ``max_subscriptions_per_identity`` caps the live subscriptions of one subscriber (digest
    user, or From AoR without authentication; trusted peers are not capped; 0 = no cap);
    ``reboot_memory_s`` is how long a subscription removed after a failed NOTIFY is
    remembered so that the phone's next SUBSCRIBE counts as a reboot (sca.md 3.5).
    ``early_ttl``: seconds a call not answered yet keeps its appearance without signalling
    (O20, I8); ``max_call_age``: seconds a call in progress keeps it without signalling (the
    stale-call sweep of Q18), 0 = never.  ``session_timers``: act as an RFC 4028 session-timer
    proxy for calls of shared lines (``session_expires`` asked for and the largest let
    through, ``min_se`` the smallest accepted, both seconds, at least 90; written in the
    table, structured into ``session_intervals`` and handed to the proxy whole): a call whose
    session is not refreshed in time is idled with cause ``session-expired``; calls without
    a session timer keep ``max_call_age``.  ``decline_ends_ringing``: a 603 (any 6xx) from
    one member of a line stops the others ringing; off: it declines for that member only.
    ``insert_pai``: a call an authenticated subscriber places through a trusted ``[upstream]``
    carries ``P-Asserted-Identity`` of the shared line it is on (else of the subscriber),
    RFC 3325; a P-Asserted-Identity from a peer that is not trusted is never relayed.
    ``aliases``: other names of shared lines (Q26); with the aliases in the database, these
    win for the same alias.
    """

    call_info_max_expires: int = 3600
    line_seize_max_expires: int = 15
    purge_expired_interval: float = 120.0
    db_update_interval: float = 300.0
    hash_table_size: int = 9
    subs_table: str = "sca_subscriptions"
    state_table: str = "sca_state"
    server_address: str = ""
    contact_fallback: str = ""
    outbound_proxy: str = ""
    seized_ttl: float = 120.0
    active_pending_ttl: float = 35.0
    early_ttl: float = 200.0
    max_call_age: float = 0.0
    session_timers: bool = True
    session_intervals: SessionIntervals = attrs.field(
        factory=SessionIntervals, metadata={INLINE: ("session_expires", "min_se")}
    )
    seize_retry_after: int = 1
    max_appearances: int = 0
    max_subscriptions_per_identity: int = 32
    reboot_memory_s: float = 3600.0
    min_expires: int = 0
    call_info_ok_code: int = 202
    call_info_uri: str = CallInfoUri.DOMAIN.value
    alerting_state: bool = True
    decline_ends_ringing: bool = False
    strip_call_info: bool = True
    insert_pai: bool = False
    lines: tuple[ConfiguredLine, ...] = ()
    aliases: tuple[ConfiguredAlias, ...] = ()


@attrs.frozen
class ServerRole:
    """This server as the engine names it, derived by the composition root beside ``[sca]``.

    ``contact``: the URI of this server for Contact headers (``sca.server_address``, else the
    advertised address); ``contact_tls``: the one towards subscribers reached over TLS (our
    TLS listener; "" = ``contact``); ``provisioned_only``: SUBSCRIBEs to an AoR that is no
    provisioned line get 404 (3.2 row 7); ``server_id``: the id written into the
    subscriptions this engine creates (section 10).
    """

    contact: str = "sip:sca.invalid"
    contact_tls: str = ""
    provisioned_only: bool = False
    server_id: int = 0
