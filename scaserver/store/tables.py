"""The database schema: one ``MetaData`` for every table scaserver owns.

This module describes the schema at the head revision; it is ``target_metadata`` of
``migrations/env.py`` (so ``alembic check`` and autogenerate compare against it) and the
tables that ``store/sql.py`` queries.  Migrations never import it: each revision defines
its tables inline.

Names follow their origins where operators expect them:

* ``location`` uses the column names of Kamailio's usrloc ``location`` table (ruid,
  username, domain, contact, received, path, expires, q, callid, cseq, last_modified,
  flags, user_agent, socket, instance, reg_id); ``expires`` and ``last_modified`` are
  absolute epoch seconds here, not SQL timestamps.
* ``sca_subscriptions`` is Kamailio's table, version 2, column for column (sca.md section
  10.1), so an existing Kamailio database can be taken over; ``version`` carries the row
  Kamailio checks.  Our writes are keyed on (subscriber, aor, event) (sca.md section 10.3),
  which ``sca_subscriptions_key_idx`` makes unique.
* ``sca_appearance`` is the second table sca.md section 10.3 allows, so calls in progress
  survive a restart.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import (
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
)

NAMING_CONVENTION: Final = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata: Final = MetaData(naming_convention=NAMING_CONVENTION)

#: Kamailio's table-version registry; the sca module refuses to start unless
#: ``('sca_subscriptions', 2)`` is present (sca.md section 10.1).
version: Final = Table(
    "version",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("table_name", String(32), nullable=False),
    Column("table_version", Integer, nullable=False, server_default="0"),
    UniqueConstraint("table_name", name="version_table_name_idx"),
)

SCA_SUBSCRIPTIONS_TABLE_VERSION: Final = 2

#: Digest credentials (RFC 7616 / RFC 8760): HA1 per algorithm, never the password.
subscriber: Final = Table(
    "subscriber",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("username", String(64), nullable=False),
    Column("domain", String(128), nullable=False),
    Column("ha1_md5", String(64), nullable=False),
    Column("ha1_sha256", String(64), nullable=False),
    Column("ha1_sha512_256", String(64), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.current_timestamp()),
    UniqueConstraint("username", "domain"),
)

#: Source networks whose requests are not challenged; ``transport`` NULL means any.
trusted_peer: Final = Table(
    "trusted_peer",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("cidr", Text, nullable=False),
    Column("transport", String(8), nullable=True),
    Column("tag", String(64), nullable=False, server_default=""),
    UniqueConstraint("cidr", "transport"),
)

#: Registrar bindings (RFC 3261 section 10).  A row is identified like the engine's
#: ``BindingKey``: (aor, key_kind, key_value); ``ruid`` is a digest of that triple, unique
#: as Kamailio's.  ``received`` is the source address as a SIP URI
#: (``sip:192.0.2.1:5060;transport=udp``), ``path`` the Path values comma-joined,
#: ``params``/``push`` JSON arrays of the Contact parameters and RFC 8599 ``pn-*`` parameters.
location: Final = Table(
    "location",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("ruid", String(64), nullable=False),
    Column("aor", String(255), nullable=False),
    Column("key_kind", String(16), nullable=False),
    Column("key_value", Text, nullable=False),
    Column("username", String(64), nullable=False, server_default=""),
    Column("domain", String(128), nullable=True),
    Column("contact", Text, nullable=False),
    Column("received", String(255), nullable=False),
    Column("path", Text, nullable=True),
    Column("expires", Float, nullable=False),
    Column("q", Float, nullable=True),
    Column("callid", String(255), nullable=False),
    Column("cseq", Integer, nullable=False),
    Column("last_modified", Float, nullable=False),
    Column("registered_at", Float, nullable=False),
    Column("flags", Integer, nullable=False, server_default="0"),
    Column("user_agent", String(255), nullable=True),
    Column("socket", String(128), nullable=True),
    Column("instance", String(255), nullable=True),
    Column("reg_id", Integer, nullable=True),
    Column("params", Text, nullable=False, server_default="[]"),
    Column("push", Text, nullable=False, server_default="[]"),
    UniqueConstraint("ruid"),
    Index(None, "aor", "contact"),
    Index(None, "expires"),
    Index(None, "username", "domain", "contact"),
)

#: Shared lines: an AoR is an SCA line when it has a row here (sca.md sections 3.6, 8.2).
sca_line: Final = Table(
    "sca_line",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("aor", String(255), nullable=False, unique=True),
    Column("appearances", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.current_timestamp()),
)

#: Who may use a line: ``member`` is a subscriber (``user@domain``) or a contact pattern.
sca_line_member: Final = Table(
    "sca_line_member",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("line_aor", String(255), ForeignKey("sca_line.aor", ondelete="CASCADE"), nullable=False),
    Column("member", String(255), nullable=False),
    UniqueConstraint("line_aor", "member"),
)

#: Kamailio's sca_subscriptions, table version 2 (sca.md section 10.1), plus the unique
#: (subscriber, aor, event) key our writes use (section 10.3).
sca_subscriptions: Final = Table(
    "sca_subscriptions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("subscriber", String(255), nullable=False),
    Column("aor", String(255), nullable=False),
    Column("event", Integer, nullable=False, server_default="0"),
    Column("expires", Integer, nullable=False, server_default="0"),
    Column("state", Integer, nullable=False, server_default="0"),
    Column("app_idx", Integer, nullable=False, server_default="0"),
    Column("call_id", String(255), nullable=False),
    Column("from_tag", String(128), nullable=False),
    Column("to_tag", String(128), nullable=False),
    Column("record_route", Text, nullable=True),
    Column("notify_cseq", Integer, nullable=False),
    Column("subscribe_cseq", Integer, nullable=False),
    Column("server_id", Integer, nullable=False, server_default="0"),
    UniqueConstraint("subscriber", "call_id", "from_tag", "to_tag", name="sca_subscriptions_idx"),
    Index("sca_expires_idx", "server_id", "expires"),
    Index("sca_subscribers_idx", "subscriber", "event"),
    Index("sca_subscriptions_key_idx", "subscriber", "aor", "event", unique=True),
)

#: Appearances in use (sca.md sections 6, 8.2, 10.3), so calls in progress survive a
#: restart; idle appearances have no row.  The call's dialog is stored as the caller's
#: From/To tags plus the member's ``role``; ``rollback_*`` hold a tentative hold/retrieve
#: (O9b); ``previous`` is what a pickup replaced (7.1), as JSON.  Times are epoch seconds.
sca_appearance: Final = Table(
    "sca_appearance",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("aor", String(255), nullable=False),
    Column("appearance_index", Integer, nullable=False),
    Column("state", String(32), nullable=False),
    Column("owner", String(255), nullable=True),
    Column("role", String(16), nullable=True),
    Column("call_id", String(255), nullable=True),
    Column("from_tag", String(128), nullable=True),
    Column("to_tag", String(128), nullable=True),
    Column("remote_contact", Text, nullable=True),
    Column("uri", Text, nullable=True),
    Column("rollback_state", String(32), nullable=True),
    Column("rollback_cseq", Integer, nullable=True),
    Column("previous", Text, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("changed_at", Float, nullable=False),
    Column("touched_at", Float, nullable=False),
    UniqueConstraint("aor", "appearance_index"),
)
