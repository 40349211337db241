"""PostgreSQL: jit_audit_head(), the chain head read under the chain's lock in one round trip

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 08:30:00
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# Takes the transaction-scoped advisory lock that serialises chain appends, then reads the
# head. Two statements in one call: a VOLATILE function takes a new snapshot for each
# statement, so the SELECT sees the head committed by whoever held the lock before us
# (one SQL statement could not: its snapshot is taken before the lock is granted).
_CREATE = """
CREATE FUNCTION jit_audit_head(lock_key bigint, OUT seq bigint, OUT hash varchar)
RETURNS SETOF record
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(lock_key);
    RETURN QUERY SELECT e.seq, e.hash FROM audit_events AS e ORDER BY e.seq DESC LIMIT 1;
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_CREATE)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION jit_audit_head(bigint)")
