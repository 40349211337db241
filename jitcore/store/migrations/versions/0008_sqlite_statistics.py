"""SQLite: table statistics for the grants table, so the planner takes the right indexes

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 12:00:00

With no statistics SQLite guesses that every index narrows a search ten-fold, and for a
lookup by grant ids or rule handles (the close batch's claims, `holders`) it takes a
(status, ...) index instead: with 100,000 ACTIVE grants that scans them all. These rows in
sqlite_stat1 describe the shape jit's data has (a handful of statuses over many grants,
one grant per rule handle, one row per due time), whatever the table holds now; SQLite
reads them when a connection opens. `ANALYZE` replaces them with measured ones, which tell
the planner the same. PostgreSQL keeps its own statistics (autovacuum): nothing to do.
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# sqlite_stat1: rows in the table, then the rows one value of each index prefix matches.
STATISTICS = {
    "ix_grants_status_expires_at": "100000 20000 1",
    "ix_grants_status_next_attempt_at": "100000 20000 20000",
    "ix_grants_status_lapses_at": "100000 20000 1",
    "ix_grants_rule_handle_id": "100000 1",
}


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute("ANALYZE sqlite_schema")  # creates sqlite_stat1 (analysing nothing of ours)
    op.execute(text("DELETE FROM sqlite_stat1 WHERE tbl = 'grants'"))
    for index, stat in STATISTICS.items():
        op.execute(text("INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES ('grants', :idx, "
                        ":stat)").bindparams(idx=index, stat=stat))


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute(text("DELETE FROM sqlite_stat1 WHERE tbl = 'grants'"))
