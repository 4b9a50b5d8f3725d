"""A subscriber's digest policy: ``subscriber.algorithms``.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06

The digest algorithms offered to a subscriber and accepted from it, most preferred first,
as comma-separated RFC 7616 tokens (``SHA-256`` or ``SHA-256,MD5``).  NULL, the value of
every existing subscriber, means the server's policy (``auth.algorithms`` and its
User-Agent rules).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("subscriber") as batch:
        batch.add_column(sa.Column("algorithms", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("subscriber") as batch:
        batch.drop_column("algorithms")
