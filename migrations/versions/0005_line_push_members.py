"""Shared lines that wake their members' mobiles: ``sca_line.push_members``.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24

push-and-parking.md 6.11: a call to a shared line configured with ``push_members`` also
reaches the push-capable bindings of the line's members.  Existing lines keep the
behaviour they had (false).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sca_line") as batch:
        batch.add_column(sa.Column("push_members", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("sca_line") as batch:
        batch.drop_column("push_members")
