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
  Kamailio checks.  Our writes are keyed on the subscriber and its dialog (the unique
  ``sca_subscriptions_idx``), so two phones with the same Contact behind two NATs keep
  two rows.  Kamailio's columns are followed by ours, each with a default that a
  Kamailio write leaves valid: ``owner`` (the identity that made the subscription), its
  flow (``flow_transport``, ``flow_host``, ``flow_port``: where the SUBSCRIBE came from,
  where NOTIFYs go) and the dialog's URIs (``local_uri`` = the SUBSCRIBE's To,
  ``remote_uri`` = its From).
* ``sca_appearance`` is the second table sca.md section 10.3 allows, so calls in progress
  survive a restart.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import (
    CHAR,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
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
    # The subscriber's digest policy: comma-separated algorithms, NULL for the server's.
    Column("algorithms", String(64), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.current_timestamp()),
    UniqueConstraint("username", "domain"),
)

#: One row whose ``generation`` every change of the directory (subscribers, trusted peers,
#: shared lines and their members) increments in the same transaction: a running server
#: polls it and reloads the directory when it moved.
directory_generation: Final = Table(
    "directory_generation",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("generation", BigInteger, nullable=False, server_default="0"),
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
    #: push-and-parking.md 6.11: calls to the line also wake the members' mobiles.
    Column("push_members", Boolean, nullable=False, server_default=false()),
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

#: Other names of a shared line (sca.md Q26): a request or subscription to ``alias`` is for
#: ``line_aor``.  Both canonical AoRs; the aliases go with their line.
sca_line_alias: Final = Table(
    "sca_line_alias",
    metadata,
    Column("alias", String(255), primary_key=True),
    Column("line_aor", String(255), ForeignKey("sca_line.aor", ondelete="CASCADE"), nullable=False),
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
    Column("owner", String(255), nullable=False, server_default=""),
    Column("flow_transport", String(8), nullable=False, server_default=""),
    Column("flow_host", String(255), nullable=False, server_default=""),
    Column("flow_port", Integer, nullable=False, server_default="0"),
    Column("local_uri", Text, nullable=True),
    Column("remote_uri", Text, nullable=True),
    UniqueConstraint("subscriber", "call_id", "from_tag", "to_tag", name="sca_subscriptions_idx"),
    Index("sca_expires_idx", "server_id", "expires"),
    Index("sca_subscribers_idx", "subscriber", "event"),
    Index("sca_subscriptions_key_idx", "subscriber", "aor", "event"),
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

#: The push mid-registrar's upstream registration dialogs (push-and-parking.md 3.5, race
#: R21), one per AoR: the Call-ID kept for every REGISTER scaserver sends itself and the CSeq
#: reserved so far (the end of a block, never below a CSeq already used, so a restart never
#: repeats one: RFC 3261 10.3 step 7), the upstream state and expiry (epoch seconds), the
#: lifetime granted, ``upstream_auth_needed`` and the Min-Expires learned from a 423.
midreg_upstream: Final = Table(
    "midreg_upstream",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("aor", String(255), nullable=False),
    Column("call_id", String(255), nullable=False),
    Column("cseq", BigInteger, nullable=False),
    Column("state", String(16), nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("granted", Integer, nullable=False),
    Column("upstream_auth_needed", Boolean, nullable=False, server_default=false()),
    Column("min_expires", Integer, nullable=False, server_default="0"),
    UniqueConstraint("aor"),
)

#: Push tokens the provider declared invalid (push-and-parking.md 4.4): bindings carrying
#: (provider, prid) and last confirmed before ``invalidated_at`` (epoch seconds) are not
#: push-capable after a restart either.  ``prid`` is the token itself (a secret, needed to
#: match bindings); the key is its SHA-256, since tokens may be longer than an index allows.
push_invalidation: Final = Table(
    "push_invalidation",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("provider", String(32), nullable=False),
    Column("prid_sha256", CHAR(64), nullable=False),
    Column("prid", Text, nullable=False),
    Column("invalidated_at", Float, nullable=False),
    UniqueConstraint("provider", "prid_sha256"),
)


# -- reporting history (reporting.md section 4.1) --------------------------------------------
#
# No foreign keys to provisioning or registrar tables: a deleted device must not delete
# history (section 3 rule 5).  Identity columns are BIGINT on PostgreSQL and INTEGER PRIMARY
# KEY (the rowid) on SQLite.  Every table has a real timestamp for people and an epoch-ms
# column for arithmetic (section 3 rule 2).  The views of section 4.2 are created by the
# migration and read through ``scaserver/reporting/reports.py``; they are not in this metadata.

HISTORY_ID: Final = BigInteger().with_variant(Integer(), "sqlite")

#: CDRs: one row per call, inserted at INVITE and updated at answer and end.
calls: Final = Table(
    "calls",
    metadata,
    Column("id", HISTORY_ID, Identity(), primary_key=True),
    Column("call_uuid", String(36), nullable=False),
    Column("sip_call_id", String(255), nullable=False),
    Column("from_tag", String(128), nullable=False, server_default=""),
    Column("to_tag", String(128), nullable=False, server_default=""),
    Column("direction", String(8), nullable=False),
    Column("line_aor", String(255), nullable=True),
    Column("appearance_index", SmallInteger, nullable=True),
    Column("caller_uri", String(255), nullable=False),
    Column("caller_display", String(128), nullable=True),
    Column("callee_uri", String(255), nullable=False),
    Column("origin_device", CHAR(12), nullable=True),
    Column("answered_contact", String(255), nullable=True),
    Column("answered_device", CHAR(12), nullable=True),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("started_ms", BigInteger, nullable=False),
    Column("ring_ms", Integer, nullable=True),
    Column("answer_ms", Integer, nullable=True),
    Column("duration_ms", Integer, nullable=True),
    Column("billable_ms", Integer, nullable=True),
    Column("ended_at", DateTime(timezone=True), nullable=True),
    Column("disposition", String(12), nullable=False, server_default="IN PROGRESS"),
    Column("end_reason", String(24), nullable=True),
    Column("final_sip_code", SmallInteger, nullable=True),
    Column("final_sip_reason", String(128), nullable=True),
    Column("hold_count", SmallInteger, nullable=False, server_default="0"),
    Column("held_ms", Integer, nullable=False, server_default="0"),
    Column("parked", Boolean, nullable=False, server_default=false()),
    UniqueConstraint("call_uuid"),
    Index("ix_calls_started_ms", "started_ms"),
    Index("ix_calls_line_started", "line_aor", "started_ms"),
    Index("ix_calls_sip_call_id", "sip_call_id"),
)

#: CEL-like stream of appearance state changes.
appearance_events: Final = Table(
    "appearance_events",
    metadata,
    Column("id", HISTORY_ID, Identity(), primary_key=True),
    Column("event_at", DateTime(timezone=True), nullable=False),
    Column("event_ms", BigInteger, nullable=False),
    Column("line_aor", String(255), nullable=False),
    Column("appearance_index", SmallInteger, nullable=False),
    Column("old_state", String(16), nullable=True),
    Column("new_state", String(16), nullable=False),
    Column("cause", String(24), nullable=False),
    Column("owner_contact", String(255), nullable=True),
    Column("owner_device", CHAR(12), nullable=True),
    Column("call_uuid", String(36), nullable=True),
    Column("source", String(8), nullable=False, server_default="sip"),
    Index("ix_appev_line_idx_time", "line_aor", "appearance_index", "event_ms", "id"),
    Index("ix_appev_time", "event_ms"),
    Index("ix_appev_call", "call_uuid"),
)

#: One row per line per minute: busy appearances and active/held calls at that instant.
line_samples: Final = Table(
    "line_samples",
    metadata,
    Column("line_aor", String(255), primary_key=True),
    Column("sample_ms", BigInteger, primary_key=True),
    Column("busy_appearances", SmallInteger, nullable=False),
    Column("active_calls", SmallInteger, nullable=False),
    Column("held_calls", SmallInteger, nullable=False),
    Index("ix_line_samples_sample_ms", "sample_ms"),
)

#: Registrar history: one row per binding change.
registration_events: Final = Table(
    "registration_events",
    metadata,
    Column("id", HISTORY_ID, Identity(), primary_key=True),
    Column("event_at", DateTime(timezone=True), nullable=False),
    Column("event_ms", BigInteger, nullable=False),
    Column("aor", String(255), nullable=False),
    Column("contact", String(512), nullable=False),
    Column("instance_id", String(128), nullable=True),
    Column("reg_id", SmallInteger, nullable=True),
    Column("event", String(16), nullable=False),
    Column("expires_s", Integer, nullable=True),
    Column("user_agent", String(255), nullable=True),
    Column("source_addr", String(64), nullable=True),
    Column("device_mac", CHAR(12), nullable=True),
    Column("push_provider", String(16), nullable=True),
    Column("wakeup_id", BigInteger, nullable=True),
    Index("ix_regev_aor_time", "aor", "event_ms"),
    Index("ix_regev_time", "event_ms"),
)

#: Push wake-ups; the token only as SHA-256 (section 3 rule 4).
push_wakeups: Final = Table(
    "push_wakeups",
    metadata,
    Column("id", HISTORY_ID, Identity(), primary_key=True),
    Column("sent_at", DateTime(timezone=True), nullable=False),
    Column("sent_ms", BigInteger, nullable=False),
    Column("aor", String(255), nullable=False),
    Column("provider", String(16), nullable=False),
    Column("prid_sha256", CHAR(64), nullable=False),
    Column("reason", String(16), nullable=False),
    Column("call_uuid", String(36), nullable=True),
    Column("gateway_status", SmallInteger, nullable=True),
    Column("gateway_ms", Integer, nullable=True),
    Column("registered_ms", Integer, nullable=True),
    Column("outcome", String(16), nullable=False, server_default="pending"),
    Index("ix_push_aor_time", "aor", "sent_ms"),
    Index("ix_push_time", "sent_ms"),
)

#: Parked (tsilo-style) calls; offsets in ms from ``parked_ms``.
parked_calls: Final = Table(
    "parked_calls",
    metadata,
    Column("id", HISTORY_ID, Identity(), primary_key=True),
    Column("call_uuid", String(36), nullable=False),
    Column("ruri", String(255), nullable=False),
    Column("parked_at", DateTime(timezone=True), nullable=False),
    Column("parked_ms", BigInteger, nullable=False),
    Column("wakeup_id", BigInteger, nullable=True),
    Column("branches_added", SmallInteger, nullable=False, server_default="0"),
    Column("first_branch_ms", Integer, nullable=True),
    Column("answered_ms", Integer, nullable=True),
    Column("ended_ms", Integer, nullable=True),
    Column("outcome", String(24), nullable=False, server_default="pending"),
    Column("final_sip_code", SmallInteger, nullable=True),
    Index("ix_parked_time", "parked_ms"),
    Index("ix_parked_ruri_time", "ruri", "parked_ms"),
)

#: Kamailio ``acc``: one row per completed INVITE/BYE transaction, Kamailio's column names
#: plus the usual ``db_extra`` columns and the SCA line (section 2.1).
acc: Final = Table(
    "acc",
    metadata,
    Column("id", HISTORY_ID, Identity(), primary_key=True),
    Column("method", String(16), nullable=False, server_default=""),
    Column("from_tag", String(128), nullable=False, server_default=""),
    Column("to_tag", String(128), nullable=False, server_default=""),
    Column("callid", String(255), nullable=False, server_default=""),
    Column("sip_code", String(3), nullable=False, server_default=""),
    Column("sip_reason", String(128), nullable=False, server_default=""),
    Column("time", DateTime(timezone=True), nullable=False),
    Column("src_user", String(64), nullable=False, server_default=""),
    Column("src_domain", String(128), nullable=False, server_default=""),
    Column("src_ip", String(64), nullable=False, server_default=""),
    Column("dst_user", String(64), nullable=False, server_default=""),
    Column("dst_domain", String(128), nullable=False, server_default=""),
    Column("line_aor", String(255), nullable=True),
    Column("appearance_index", SmallInteger, nullable=True),
    Index("acc_callid_idx", "callid"),
    Index("acc_time_idx", "time"),
)


# -- provisioning (provisioning.md section 3) ------------------------------------------------
#
# ``lines`` is the registration identity phones are given (plaintext password: section 6,
# a handset cannot be provisioned from HA1); a line is shared when its AoR has an
# ``sca_line`` row.  ``devices.prov_ha1`` is H(username:prov_realm:password) with MD5
# (RFC 7616 section 3.4.2) for the per-device HTTP digest of section 4.2.

from sqlalchemy import CheckConstraint, true  # noqa: E402 (appended block of its own)

#: Handsets by MAC (12 lower-case hex digits).  ``template_overrides`` is a JSON object of
#: raw vendor parameters merged last (section 6).
devices: Final = Table(
    "devices",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("mac", CHAR(12), nullable=False),
    Column("vendor", String(16), nullable=False),
    Column("family", String(16), nullable=False),
    Column("model", String(32), nullable=True),
    Column("description", String(128), nullable=True),
    Column("owner", String(255), nullable=True),
    Column("enabled", Boolean, nullable=False, server_default=true()),
    Column("prov_username", String(64), nullable=True),
    Column("prov_realm", String(128), nullable=True),
    Column("prov_ha1", String(64), nullable=True),
    Column("template_overrides", Text, nullable=False, server_default="{}"),
    Column("last_seen_at", DateTime(timezone=True), nullable=True),
    Column("last_seen_ip", String(45), nullable=True),
    Column("last_user_agent", String(255), nullable=True),
    Column("firmware_seen", String(64), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.current_timestamp()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.current_timestamp()),
    UniqueConstraint("mac"),
)

#: Registration identities: the AoR a phone registers and the digest user/password for it.
lines: Final = Table(
    "lines",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("aor", String(255), nullable=False),
    Column("display_name", String(64), nullable=True),
    Column("auth_username", String(64), nullable=False),
    Column("auth_password", String(128), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.current_timestamp()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.current_timestamp()),
    UniqueConstraint("aor"),
)

#: A line placed on a device: registration index / extension ``position`` and its keys.
device_lines: Final = Table(
    "device_lines",
    metadata,
    Column("device_id", Integer, ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True),
    Column("position", SmallInteger, primary_key=True),
    Column("line_id", Integer, ForeignKey("lines.id", ondelete="RESTRICT"), nullable=False),
    Column("first_key", SmallInteger, nullable=False, server_default="1"),
    Column("line_keys", SmallInteger, nullable=False, server_default="1"),
    Column("calls_per_key", SmallInteger, nullable=False, server_default="1"),
    Column("label", String(32), nullable=True),
    Column("barge_in", Boolean, nullable=False, server_default=true()),
    UniqueConstraint("device_id", "line_id"),
    CheckConstraint("position >= 1", name="position_positive"),
    CheckConstraint("first_key >= 1", name="first_key_positive"),
    CheckConstraint("line_keys >= 1", name="line_keys_positive"),
    CheckConstraint("calls_per_key >= 1", name="calls_per_key_positive"),
)

#: Requests for MACs we do not know (section 4.4).
device_sightings: Final = Table(
    "device_sightings",
    metadata,
    Column("mac", CHAR(12), primary_key=True),
    Column("first_seen_at", DateTime(timezone=True), nullable=False),
    Column("last_seen_at", DateTime(timezone=True), nullable=False),
    Column("last_ip", String(45), nullable=True),
    Column("last_user_agent", String(255), nullable=True),
    Column("request_count", Integer, nullable=False, server_default="0"),
)

#: Files phones PUT to us (section 4.3); ``stored_path`` is relative to the upload directory.
provisioning_uploads: Final = Table(
    "provisioning_uploads",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("device_mac", CHAR(12), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("file_name", String(64), nullable=False),
    Column("size_bytes", Integer, nullable=False),
    Column("sha256", CHAR(64), nullable=False),
    Column("stored_path", String(255), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("remote_ip", String(45), nullable=True),
    Index(None, "device_mac", "kind"),
)

#: One row per provisioning HTTP request (section 4.4); no secrets.
provisioning_fetches: Final = Table(
    "provisioning_fetches",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("mac", CHAR(12), nullable=True),
    Column("method", String(8), nullable=False),
    Column("path", String(255), nullable=False),
    Column("status", SmallInteger, nullable=False),
    Column("bytes", Integer, nullable=False),
    Column("remote_ip", String(45), nullable=True),
    Column("user_agent", String(255), nullable=True),
    Column("duration_ms", Integer, nullable=False),
    Index(None, "mac", "at"),
)
