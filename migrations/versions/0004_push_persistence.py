"""Push mid-registrar state that survives a restart: upstream registration dialogs, dead tokens.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27

push-and-parking.md 3.5 and race R21: ``midreg_upstream`` keeps, per AoR, the Call-ID of the
REGISTERs scaserver sends upstream itself and the CSeq reserved so far (a restart continues
above it, RFC 3261 10.3 step 7), the upstream state, expiry, granted lifetime and flags.
Section 4.4: ``push_invalidation`` keeps the push tokens the provider declared invalid, keyed
by (provider, SHA-256 of the token).  Tables are defined inline (a migration never imports
scaserver.store.tables).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "midreg_upstream",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("aor", sa.String(255), nullable=False),
        sa.Column("call_id", sa.String(255), nullable=False),
        sa.Column("cseq", sa.BigInteger, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("granted", sa.Integer, nullable=False),
        sa.Column("upstream_auth_needed", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("min_expires", sa.Integer, nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("id", name="pk_midreg_upstream"),
        sa.UniqueConstraint("aor", name="uq_midreg_upstream_aor"),
    )
    op.create_table(
        "push_invalidation",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("prid_sha256", sa.CHAR(64), nullable=False),
        sa.Column("prid", sa.Text, nullable=False),
        sa.Column("invalidated_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_push_invalidation"),
        sa.UniqueConstraint("provider", "prid_sha256", name="uq_push_invalidation_provider_prid_sha256"),
    )


def downgrade() -> None:
    op.drop_table("push_invalidation")
    op.drop_table("midreg_upstream")
