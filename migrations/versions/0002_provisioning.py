"""Provisioning: devices by MAC, registration identities, line keys, sightings, uploads, fetch log.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25

provisioning.md section 3.  Tables are defined inline (a migration never imports
scaserver.store.tables).  ``lines`` holds the registration identity phones need in
plaintext (section 6: digest HA1 alone cannot be provisioned); whether a line is shared
is whether its AoR has an ``sca_line`` row.  Per-device HTTP credentials are stored as
the MD5 HA1 of RFC 7616 section 3.4.2 together with the realm it was computed for.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _created() -> sa.Column[object]:
    return sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.current_timestamp()
    )


def _updated() -> sa.Column[object]:
    return sa.Column(
        "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.current_timestamp()
    )


def upgrade() -> None:
    op.create_table(
        "devices",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("mac", sa.CHAR(12), nullable=False),
        sa.Column("vendor", sa.String(16), nullable=False),
        sa.Column("family", sa.String(16), nullable=False),
        sa.Column("model", sa.String(32), nullable=True),
        sa.Column("description", sa.String(128), nullable=True),
        sa.Column("owner", sa.String(255), nullable=True),
        sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("prov_username", sa.String(64), nullable=True),
        sa.Column("prov_realm", sa.String(128), nullable=True),
        sa.Column("prov_ha1", sa.String(64), nullable=True),
        sa.Column("template_overrides", sa.Text, nullable=False, server_default="{}"),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_seen_ip", sa.String(45), nullable=True),
        sa.Column("last_user_agent", sa.String(255), nullable=True),
        sa.Column("firmware_seen", sa.String(64), nullable=True),
        _created(),
        _updated(),
        sa.PrimaryKeyConstraint("id", name="pk_devices"),
        sa.UniqueConstraint("mac", name="uq_devices_mac"),
    )

    op.create_table(
        "lines",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("aor", sa.String(255), nullable=False),
        sa.Column("display_name", sa.String(64), nullable=True),
        sa.Column("auth_username", sa.String(64), nullable=False),
        sa.Column("auth_password", sa.String(128), nullable=False),
        _created(),
        _updated(),
        sa.PrimaryKeyConstraint("id", name="pk_lines"),
        sa.UniqueConstraint("aor", name="uq_lines_aor"),
    )

    op.create_table(
        "device_lines",
        sa.Column("device_id", sa.Integer, nullable=False),
        sa.Column("position", sa.SmallInteger, nullable=False),
        sa.Column("line_id", sa.Integer, nullable=False),
        sa.Column("first_key", sa.SmallInteger, nullable=False, server_default="1"),
        sa.Column("line_keys", sa.SmallInteger, nullable=False, server_default="1"),
        sa.Column("calls_per_key", sa.SmallInteger, nullable=False, server_default="1"),
        sa.Column("label", sa.String(32), nullable=True),
        sa.Column("barge_in", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.PrimaryKeyConstraint("device_id", "position", name="pk_device_lines"),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name="fk_device_lines_device_id_devices", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["line_id"], ["lines.id"], name="fk_device_lines_line_id_lines", ondelete="RESTRICT"
        ),
        sa.UniqueConstraint("device_id", "line_id", name="uq_device_lines_device_id_line_id"),
        sa.CheckConstraint("position >= 1", name="ck_device_lines_position_positive"),
        sa.CheckConstraint("first_key >= 1", name="ck_device_lines_first_key_positive"),
        sa.CheckConstraint("line_keys >= 1", name="ck_device_lines_line_keys_positive"),
        sa.CheckConstraint("calls_per_key >= 1", name="ck_device_lines_calls_per_key_positive"),
    )

    op.create_table(
        "device_sightings",
        sa.Column("mac", sa.CHAR(12), nullable=False),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_ip", sa.String(45), nullable=True),
        sa.Column("last_user_agent", sa.String(255), nullable=True),
        sa.Column("request_count", sa.Integer, nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("mac", name="pk_device_sightings"),
    )

    op.create_table(
        "provisioning_uploads",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("device_mac", sa.CHAR(12), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("file_name", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.Integer, nullable=False),
        sa.Column("sha256", sa.CHAR(64), nullable=False),
        sa.Column("stored_path", sa.String(255), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("remote_ip", sa.String(45), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_provisioning_uploads"),
    )
    op.create_index("ix_provisioning_uploads_device_mac_kind", "provisioning_uploads", ["device_mac", "kind"])

    op.create_table(
        "provisioning_fetches",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("mac", sa.CHAR(12), nullable=True),
        sa.Column("method", sa.String(8), nullable=False),
        sa.Column("path", sa.String(255), nullable=False),
        sa.Column("status", sa.SmallInteger, nullable=False),
        sa.Column("bytes", sa.Integer, nullable=False),
        sa.Column("remote_ip", sa.String(45), nullable=True),
        sa.Column("user_agent", sa.String(255), nullable=True),
        sa.Column("duration_ms", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_provisioning_fetches"),
    )
    op.create_index("ix_provisioning_fetches_mac_at", "provisioning_fetches", ["mac", "at"])


def downgrade() -> None:
    op.drop_index("ix_provisioning_fetches_mac_at", table_name="provisioning_fetches")
    op.drop_table("provisioning_fetches")
    op.drop_index("ix_provisioning_uploads_device_mac_kind", table_name="provisioning_uploads")
    op.drop_table("provisioning_uploads")
    op.drop_table("device_sightings")
    op.drop_table("device_lines")
    op.drop_table("lines")
    op.drop_table("devices")
