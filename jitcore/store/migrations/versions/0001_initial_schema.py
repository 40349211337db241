"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-22 04:26:47.524731
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=False,
            nullable=False,
        ),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("grant_id", sa.Integer(), nullable=True),
        sa.Column("target", sa.String(length=64), nullable=True),
        sa.Column("port", sa.Integer(), nullable=True),
        sa.Column("source", sa.String(length=64), nullable=True),
        sa.Column("details", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.create_index("ix_audit_events_at", ["at"], unique=False)
        batch_op.create_index("ix_audit_events_grant_id", ["grant_id"], unique=False)

    op.create_table(
        "rule_handles",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("cloud", sa.String(length=8), nullable=False),
        sa.Column("scope", sa.String(length=400), nullable=False),
        sa.Column("ref", sa.String(length=200), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("protocol", sa.String(length=8), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("owned", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("removed_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("rule_handles", schema=None) as batch_op:
        batch_op.create_index("ix_rule_handles_scope_ref", ["scope", "ref"], unique=False)

    op.create_table(
        "grants",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("requester", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=64), nullable=False),
        sa.Column("cloud", sa.String(length=8), nullable=False),
        sa.Column("service", sa.String(length=32), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("protocol", sa.String(length=8), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("duration_s", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("lapses_at", sa.DateTime(), nullable=False),
        sa.Column("decided_by", sa.String(length=64), nullable=True),
        sa.Column("decided_at", sa.DateTime(), nullable=True),
        sa.Column("decision_note", sa.Text(), nullable=True),
        sa.Column("opened_at", sa.DateTime(), nullable=True),
        sa.Column("expires_at", sa.DateTime(), nullable=True),
        sa.Column("closed_at", sa.DateTime(), nullable=True),
        sa.Column("close_reason", sa.String(length=16), nullable=True),
        sa.Column("closed_by", sa.String(length=64), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("rule_handle_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["rule_handle_id"],
            ["rule_handles.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("grants", schema=None) as batch_op:
        batch_op.create_index("ix_grants_rule_handle_id", ["rule_handle_id"], unique=False)
        batch_op.create_index("ix_grants_status_expires_at", ["status", "expires_at"], unique=False)
        batch_op.create_index("ix_grants_status_lapses_at", ["status", "lapses_at"], unique=False)
        batch_op.create_index(
            "ix_grants_status_next_attempt_at", ["status", "next_attempt_at"], unique=False
        )

    op.create_table(
        "priority_reservations",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("scope", sa.String(length=400), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("grant_id", sa.Integer(), nullable=False),
        sa.Column("reserved_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["grant_id"],
            ["grants.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("scope", "priority", name="uq_priority_reservations_scope_priority"),
    )
    with op.batch_alter_table("priority_reservations", schema=None) as batch_op:
        batch_op.create_index("ix_priority_reservations_grant_id", ["grant_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("priority_reservations", schema=None) as batch_op:
        batch_op.drop_index("ix_priority_reservations_grant_id")

    op.drop_table("priority_reservations")
    with op.batch_alter_table("grants", schema=None) as batch_op:
        batch_op.drop_index("ix_grants_status_next_attempt_at")
        batch_op.drop_index("ix_grants_status_lapses_at")
        batch_op.drop_index("ix_grants_status_expires_at")
        batch_op.drop_index("ix_grants_rule_handle_id")

    op.drop_table("grants")
    with op.batch_alter_table("rule_handles", schema=None) as batch_op:
        batch_op.drop_index("ix_rule_handles_scope_ref")

    op.drop_table("rule_handles")
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_events_grant_id")
        batch_op.drop_index("ix_audit_events_at")

    op.drop_table("audit_events")
