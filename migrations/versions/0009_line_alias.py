"""Other names of a shared line: ``sca_line_alias``.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06

A number or URI (an extension, a DID, an address in another domain) that requests and
subscriptions reach a shared line by (sca.md Q26).  The aliases go with their line.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sca_line_alias",
        sa.Column("alias", sa.String(255), primary_key=True),
        sa.Column(
            "line_aor",
            sa.String(255),
            sa.ForeignKey("sca_line.aor", ondelete="CASCADE"),
            nullable=False,
        ),
    )


def downgrade() -> None:
    op.drop_table("sca_line_alias")
