"""The directory's change marker: ``directory_generation``.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06

One row whose ``generation`` is incremented, in the same transaction, by every change of
a subscriber, trusted peer, shared line or line member.  A running server polls it
(``directory.poll_interval``) and reloads the directory when it moved, so changes made
with the command line take effect without a restart.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    table = op.create_table(
        "directory_generation",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("generation", sa.BigInteger(), nullable=False, server_default="0"),
    )
    op.bulk_insert(table, [{"id": 1, "generation": 0}])


def downgrade() -> None:
    op.drop_table("directory_generation")
