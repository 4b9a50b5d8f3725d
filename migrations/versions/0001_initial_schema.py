"""Initial schema: auth, trusted peers, registrar bindings, SCA lines, subscriptions, appearances.

Revision ID: 0001
Revises:
Create Date: 2026-11-24

Tables are defined inline: a migration never imports scaserver.store.tables.
``sca_subscriptions`` is Kamailio's table version 2 (sca.md section 10.1) and ``version``
carries the row Kamailio's sca module checks.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    version = op.create_table(
        "version",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("table_name", sa.String(32), nullable=False),
        sa.Column("table_version", sa.Integer, nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("id", name="pk_version"),
        sa.UniqueConstraint("table_name", name="version_table_name_idx"),
    )
    op.bulk_insert(version, [{"table_name": "sca_subscriptions", "table_version": 2}])

    op.create_table(
        "subscriber",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("domain", sa.String(128), nullable=False),
        sa.Column("ha1_md5", sa.String(64), nullable=False),
        sa.Column("ha1_sha256", sa.String(64), nullable=False),
        sa.Column("ha1_sha512_256", sa.String(64), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.func.current_timestamp(),
        ),
        sa.PrimaryKeyConstraint("id", name="pk_subscriber"),
        sa.UniqueConstraint("username", "domain", name="uq_subscriber_username_domain"),
    )

    op.create_table(
        "trusted_peer",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("cidr", sa.Text, nullable=False),
        sa.Column("transport", sa.String(8), nullable=True),
        sa.Column("tag", sa.String(64), nullable=False, server_default=""),
        sa.PrimaryKeyConstraint("id", name="pk_trusted_peer"),
        sa.UniqueConstraint("cidr", "transport", name="uq_trusted_peer_cidr_transport"),
    )

    op.create_table(
        "location",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("ruid", sa.String(64), nullable=False),
        sa.Column("aor", sa.String(255), nullable=False),
        sa.Column("key_kind", sa.String(16), nullable=False),
        sa.Column("key_value", sa.Text, nullable=False),
        sa.Column("username", sa.String(64), nullable=False, server_default=""),
        sa.Column("domain", sa.String(128), nullable=True),
        sa.Column("contact", sa.Text, nullable=False),
        sa.Column("received", sa.String(255), nullable=False),
        sa.Column("path", sa.Text, nullable=True),
        sa.Column("expires", sa.Float, nullable=False),
        sa.Column("q", sa.Float, nullable=True),
        sa.Column("callid", sa.String(255), nullable=False),
        sa.Column("cseq", sa.Integer, nullable=False),
        sa.Column("last_modified", sa.Float, nullable=False),
        sa.Column("registered_at", sa.Float, nullable=False),
        sa.Column("flags", sa.Integer, nullable=False, server_default="0"),
        sa.Column("user_agent", sa.String(255), nullable=True),
        sa.Column("socket", sa.String(128), nullable=True),
        sa.Column("instance", sa.String(255), nullable=True),
        sa.Column("reg_id", sa.Integer, nullable=True),
        sa.Column("params", sa.Text, nullable=False, server_default="[]"),
        sa.Column("push", sa.Text, nullable=False, server_default="[]"),
        sa.PrimaryKeyConstraint("id", name="pk_location"),
        sa.UniqueConstraint("ruid", name="uq_location_ruid"),
    )
    op.create_index("ix_location_aor_contact", "location", ["aor", "contact"])
    op.create_index("ix_location_expires", "location", ["expires"])
    op.create_index("ix_location_username_domain_contact", "location", ["username", "domain", "contact"])

    op.create_table(
        "sca_line",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("aor", sa.String(255), nullable=False),
        sa.Column("appearances", sa.Integer, nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.func.current_timestamp(),
        ),
        sa.PrimaryKeyConstraint("id", name="pk_sca_line"),
        sa.UniqueConstraint("aor", name="uq_sca_line_aor"),
    )

    op.create_table(
        "sca_line_member",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("line_aor", sa.String(255), nullable=False),
        sa.Column("member", sa.String(255), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_sca_line_member"),
        sa.ForeignKeyConstraint(
            ["line_aor"], ["sca_line.aor"], name="fk_sca_line_member_line_aor_sca_line", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("line_aor", "member", name="uq_sca_line_member_line_aor_member"),
    )

    op.create_table(
        "sca_subscriptions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("subscriber", sa.String(255), nullable=False),
        sa.Column("aor", sa.String(255), nullable=False),
        sa.Column("event", sa.Integer, nullable=False, server_default="0"),
        sa.Column("expires", sa.Integer, nullable=False, server_default="0"),
        sa.Column("state", sa.Integer, nullable=False, server_default="0"),
        sa.Column("app_idx", sa.Integer, nullable=False, server_default="0"),
        sa.Column("call_id", sa.String(255), nullable=False),
        sa.Column("from_tag", sa.String(128), nullable=False),
        sa.Column("to_tag", sa.String(128), nullable=False),
        sa.Column("record_route", sa.Text, nullable=True),
        sa.Column("notify_cseq", sa.Integer, nullable=False),
        sa.Column("subscribe_cseq", sa.Integer, nullable=False),
        sa.Column("server_id", sa.Integer, nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("id", name="pk_sca_subscriptions"),
        sa.UniqueConstraint("subscriber", "call_id", "from_tag", "to_tag", name="sca_subscriptions_idx"),
    )
    op.create_index("sca_expires_idx", "sca_subscriptions", ["server_id", "expires"])
    op.create_index("sca_subscribers_idx", "sca_subscriptions", ["subscriber", "event"])
    op.create_index(
        "sca_subscriptions_key_idx", "sca_subscriptions", ["subscriber", "aor", "event"], unique=True
    )

    op.create_table(
        "sca_appearance",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("aor", sa.String(255), nullable=False),
        sa.Column("appearance_index", sa.Integer, nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("owner", sa.String(255), nullable=True),
        sa.Column("role", sa.String(16), nullable=True),
        sa.Column("call_id", sa.String(255), nullable=True),
        sa.Column("from_tag", sa.String(128), nullable=True),
        sa.Column("to_tag", sa.String(128), nullable=True),
        sa.Column("remote_contact", sa.Text, nullable=True),
        sa.Column("uri", sa.Text, nullable=True),
        sa.Column("rollback_state", sa.String(32), nullable=True),
        sa.Column("rollback_cseq", sa.Integer, nullable=True),
        sa.Column("previous", sa.Text, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("changed_at", sa.Float, nullable=False),
        sa.Column("touched_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_sca_appearance"),
        sa.UniqueConstraint("aor", "appearance_index", name="uq_sca_appearance_aor_appearance_index"),
    )


def downgrade() -> None:
    op.drop_table("sca_appearance")
    op.drop_index("sca_subscriptions_key_idx", table_name="sca_subscriptions")
    op.drop_index("sca_subscribers_idx", table_name="sca_subscriptions")
    op.drop_index("sca_expires_idx", table_name="sca_subscriptions")
    op.drop_table("sca_subscriptions")
    op.drop_table("sca_line_member")
    op.drop_table("sca_line")
    op.drop_index("ix_location_username_domain_contact", table_name="location")
    op.drop_index("ix_location_expires", table_name="location")
    op.drop_index("ix_location_aor_contact", table_name="location")
    op.drop_table("location")
    op.drop_table("trusted_peer")
    op.drop_table("subscriber")
    op.drop_table("version")
