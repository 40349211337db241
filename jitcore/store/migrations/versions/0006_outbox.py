"""outbox: the Slack posts each event owes, committed with the event

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 17:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  autoincrement=True, nullable=False),
        sa.Column("lane", sa.String(length=32), nullable=False),
        sa.Column("grant_id", sa.Integer(), nullable=True),
        sa.Column("post", sa.String(length=16), nullable=False),
        sa.Column("channel", sa.String(length=64), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=False),
        sa.Column("leased_until", sa.DateTime(), nullable=True),
        sa.Column("leased_by", sa.String(length=64), nullable=True),
        sa.Column("done_at", sa.DateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_outbox_status_lane_id", "outbox", ["status", "lane", "id"])


def downgrade() -> None:
    op.drop_index("ix_outbox_status_lane_id", table_name="outbox")
    op.drop_table("outbox")
