"""PostgreSQL: jit_audit_append(), a whole chain append in one call; jit_audit_head() goes

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 11:30:00
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# Takes the transaction-scoped advisory lock that serialises chain appends, reads the head
# (a VOLATILE function takes a new snapshot for each statement, so this sees the head
# committed by whoever held the lock before), then numbers, hashes and inserts each link of
# `links`, a JSON array made by jitcore.audit.ChainWriter. The caller builds the canonical
# JSON of each link in two pieces, "head" and "tail", around its sequence number, so the
# hash is sha256(prev_hash || head || seq || tail) in UTF-8, as hex; the caller checks every
# hash returned (before COMMIT when it holds a transaction).
_CREATE_APPEND = """
CREATE FUNCTION jit_audit_append(lock_key bigint, links jsonb,
                                 OUT seq bigint, OUT prev_hash varchar, OUT hash varchar)
RETURNS SETOF record
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_variable
DECLARE
    link jsonb;
BEGIN
    PERFORM pg_advisory_xact_lock(lock_key);
    SELECT e.seq, e.hash INTO seq, hash FROM audit_events AS e ORDER BY e.seq DESC LIMIT 1;
    IF NOT FOUND THEN
        seq := 0;
        hash := repeat('0', 64);
    END IF;
    FOR link IN SELECT value FROM jsonb_array_elements(links) LOOP
        prev_hash := hash;
        seq := seq + 1;
        hash := encode(sha256(convert_to(
            prev_hash || (link->>'head') || seq::text || (link->>'tail'), 'UTF8')), 'hex');
        INSERT INTO audit_events (seq, at, actor, action, grant_id, target, port, source,
                                  details, prev_hash, hash)
        VALUES (seq, (link->>'at')::timestamp, link->>'actor', link->>'action',
                (link->>'grant_id')::integer, link->>'target', (link->>'port')::integer,
                link->>'source', link->>'details', prev_hash, hash);
        RETURN NEXT;
    END LOOP;
END
$$
"""

# 0004's function, recreated by the downgrade.
_CREATE_HEAD = """
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
        op.execute(_CREATE_APPEND)
        op.execute("DROP FUNCTION jit_audit_head(bigint)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_CREATE_HEAD)
        op.execute("DROP FUNCTION jit_audit_append(bigint, jsonb)")
