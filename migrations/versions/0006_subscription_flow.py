"""SCA subscriptions keep their owner, flow and dialog URIs; two may share a Contact.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06

Kamailio's columns of ``sca_subscriptions`` stay as they are; ours follow them, each with
a default that a row written by Kamailio leaves valid: ``owner`` (the identity that made
the subscription), the flow it came over (``flow_transport``, ``flow_host``,
``flow_port``), and the dialog's URIs (``local_uri``, ``remote_uri``).  Rows are written
by subscriber and dialog (the unique ``sca_subscriptions_idx``), so
``sca_subscriptions_key_idx`` on (subscriber, aor, event) is no longer unique: two phones
behind two NATs may send the same private Contact.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = ("owner", "flow_transport", "flow_host", "flow_port", "local_uri", "remote_uri")


def upgrade() -> None:
    op.drop_index("sca_subscriptions_key_idx", table_name="sca_subscriptions")
    with op.batch_alter_table("sca_subscriptions") as batch:
        batch.add_column(sa.Column("owner", sa.String(255), nullable=False, server_default=""))
        batch.add_column(sa.Column("flow_transport", sa.String(8), nullable=False, server_default=""))
        batch.add_column(sa.Column("flow_host", sa.String(255), nullable=False, server_default=""))
        batch.add_column(sa.Column("flow_port", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("local_uri", sa.Text, nullable=True))
        batch.add_column(sa.Column("remote_uri", sa.Text, nullable=True))
    op.create_index(
        "sca_subscriptions_key_idx", "sca_subscriptions", ["subscriber", "aor", "event"], unique=False
    )


def downgrade() -> None:
    """Back to one row per (subscriber, aor, event): of rows sharing a triple, the one with
    the highest id stays."""
    op.drop_index("sca_subscriptions_key_idx", table_name="sca_subscriptions")
    op.execute(
        "DELETE FROM sca_subscriptions WHERE id NOT IN ("
        "SELECT MAX(id) FROM sca_subscriptions GROUP BY subscriber, aor, event)"
    )
    with op.batch_alter_table("sca_subscriptions") as batch:
        for name in reversed(_COLUMNS):
            batch.drop_column(name)
    op.create_index(
        "sca_subscriptions_key_idx", "sca_subscriptions", ["subscriber", "aor", "event"], unique=True
    )
