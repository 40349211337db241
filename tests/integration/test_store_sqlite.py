"""SQLite settings jit relies on: WAL copied back in the background, not in a request."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import text

from jitcore import audit
from jitcore.store import Store, upgrade


def test_wal_is_checkpointed_by_the_background_call_not_by_writers(tmp_path: Path) -> None:
    store = Store.from_url(f"sqlite:///{tmp_path / 'jit.db'}")
    upgrade(store.engine)
    with store.engine.connect() as conn:
        assert conn.execute(text("PRAGMA wal_autocheckpoint")).scalar() == 16_000
    for n in range(600):  # ~2,000 WAL pages: SQLite's default (1,000) would checkpoint
        with store.transaction() as session:
            audit.append(session, at=datetime.now(UTC), actor="test", action="noted",
                         details={"n": n})
    frames, copied = store.checkpoint()
    assert frames > 1_000, "the writers left the WAL to the background checkpoint"
    assert copied == frames
    assert store.checkpoint() == (frames, frames)  # nothing new: nothing more to copy
    store.dispose()


def test_checkpoint_on_each_backend(store: Store) -> None:
    with store.transaction() as session:
        audit.append(session, at=datetime.now(UTC), actor="test", action="noted")
    frames, copied = store.checkpoint()
    if store.dialect == "sqlite":
        assert frames > 0 and copied == frames
    else:  # PostgreSQL checkpoints by itself; there is nothing for jit to do
        assert (frames, copied) == (0, 0)
