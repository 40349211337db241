"""SQLite settings jit relies on: WAL copied back in the background, not in a request;
one engine process per database file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import text

from jitcore import audit
from jitcore.errors import StoreError
from jitcore.store import Store, make_engine, upgrade
from tests.support.policies import aws_policy_data


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


def test_a_second_engine_on_one_sqlite_file_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jit.db'}"
    first, second = Store.from_url(url), Store.from_url(url)
    release = first.claim_engine()
    with pytest.raises(StoreError, match="another process is already running jit's engine"
                                         r".*PostgreSQL"):
        second.claim_engine()
    release()  # the first one stops: now the second may run the engine
    second.claim_engine()()
    first.dispose()
    second.dispose()


def test_a_second_jit_run_on_one_sqlite_file_exits_with_the_reason(
        tmp_path: Path, aws_group: Any) -> None:
    config = tmp_path / "jit.yaml"
    config.write_text(yaml.safe_dump(aws_policy_data(aws_group.group_id)))
    env = {**os.environ, "JIT_CONFIG": str(config),
           "JIT_DATABASE_URL": f"sqlite:///{tmp_path / 'jit.db'}"}
    command = [sys.executable, "-m", "jitcore", "run"]
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 20
        while not (tmp_path / "jit.db-engine.lock").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # the lock file appears just before it is locked
        second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)
        assert second.returncode == 1
        assert "another process is already running jit's engine" in second.stderr
        assert first.poll() is None  # the first one keeps running
    finally:
        first.send_signal(signal.SIGTERM)
        output, _ = first.communicate(timeout=20)
    assert first.returncode == 0, output


def test_a_process_on_sqlite_never_loads_the_postgresql_dialect(tmp_path: Path,
                                                                 aws_group: Any) -> None:
    """Importing it (and asyncio with it) cost ~30 ms of every start on SQLite. (A first
    migration loads it, through Alembic; a start on a database at head does not.)"""
    url = f"sqlite:///{tmp_path / 'jit.db'}"
    upgrade(make_engine(url))
    script = textwrap.dedent(f"""
        import sys
        from datetime import timedelta
        import bot.app, jitcore.cli, jitcore.scheduler
        from jitcore.ports import LogNotifier, SystemClock
        from jitcore.providers.aws import AwsProvider
        from jitcore.service import JitService
        from jitcore.store import Store
        from jitcore.store.db import make_engine, upgrade
        from tests.support.policies import APPROVER, REQUESTER, aws_policy
        engine = make_engine("{url}")
        upgrade(engine)
        service = JitService(Store(engine), aws_policy("{aws_group.group_id}"),
                             {{"aws": AwsProvider()}}, LogNotifier(), SystemClock())
        gid = service.request(REQUESTER, "prod-db", "ssh", timedelta(minutes=5),
                              "203.0.113.7").grant.id
        service.approve(gid, APPROVER)
        print(service.open(gid).status.value)
        service.sweep()
        print(service.revoke(gid, APPROVER).status.value)
        print(sorted(m for m in sys.modules if "postgresql" in m or "psycopg" in m))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).resolve().parents[2], check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-3:] == ["ACTIVE", "CLOSED", "[]"]
