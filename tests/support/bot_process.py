"""jit-bot as a process in HTTP mode, for the end-to-end tests: its own port, its output in
a file, the Slack Web API fake given, stopped with SIGTERM unless the test killed it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.e2e.test_slack_bot import BOT_TOKEN, SECRET, Bot, free_port, wait_until
from tests.fakes.slack_api import SlackApiFake


@contextmanager
def bot_process(slack: SlackApiFake, config: Path, database_url: str, log: Path, *,
                clean_exit: bool = True) -> Iterator[Bot]:
    """With `clean_exit`, the process must stop with 0 and print no traceback (a test whose
    database goes away lets the engine log its failed sweeps)."""
    port = free_port()
    env = {**os.environ, "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SECRET,
           "SLACK_API_URL": slack.api_url, "JIT_HTTP_PORT": str(port),
           "JIT_CONFIG": str(config), "JIT_DATABASE_URL": database_url}
    for name in ("SLACK_APP_TOKEN", "JIT_LOG_FORMAT"):
        env.pop(name, None)
    with open(log, "a") as out:
        proc = subprocess.Popen([sys.executable, "-m", "bot.main"], env=env, text=True,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        def listening() -> bool:
            assert proc.poll() is None, log.read_text()
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0
        wait_until(listening, 30, "jit-bot to listen")
        yield Bot(f"http://127.0.0.1:{port}/slack/events", slack, proc)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=40)
            assert proc.returncode == 0 or not clean_exit, log.read_text()
    if clean_exit:
        assert "Traceback" not in log.read_text(), log.read_text()
