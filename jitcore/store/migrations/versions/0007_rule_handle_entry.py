"""rule_handles.entry: where the requester connects when a grant's rule is a DNAT

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 09:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("rule_handles", sa.Column("entry", sa.String(length=200), nullable=True))


def downgrade() -> None:
    # In place on both backends (SQLite since 3.35): rebuilding rule_handles, as a batch
    # would, fails while grants refer to its rows.
    op.drop_column("rule_handles", "entry")
