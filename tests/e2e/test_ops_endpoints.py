"""jit-bot's operations endpoints, on the process itself: /healthz, /readyz (which follows the
database), /metrics (moved by a grant opened and revoked through the real Slack flow), and
its stdout: JSON lines, transitions carrying their grant, no secret anywhere."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.engine import Engine

from bot.main import serve_http
from jitcore.store import make_engine, upgrade
from tests.e2e.test_slack_bot import (
    ALICE,
    BOB,
    BOT_TOKEN,
    SECRET,
    free_port,
    running_bot,
    signed_post,
    wait_until,
)
from tests.fakes.slack_api import SlackApiFake
from tests.support.aws import jit_rules
from tests.support.fixtures import postgres_url
from tests.support.policies import aws_policy_data

DB_PASSWORD = "s3cret-pw"
PROD_DB = {"cloud": "aws", "target": "prod-db"}


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def answers(url: str) -> bool:
    try:
        return get(url)[0] == 200
    except OSError:  # not listening yet
        return False


def metric(base: str, name: str, **labels: str) -> float | None:
    """The sample `name` with exactly these labels in a scrape of /metrics; None if absent."""
    status, body = get(f"{base}/metrics")
    assert status == 200, body
    for family in text_string_to_metric_families(body):
        for found in family.samples:
            if found.name == name and found.labels == labels:
                return float(found.value)
    return None


def stop(proc: subprocess.Popen[str]) -> str:
    """SIGTERM the bot and return everything it printed. (A launcher that stops it again
    afterwards gets the same output from its own communicate().)"""
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=40)
    assert proc.returncode == 0, output
    return output


def log_lines(output: str) -> list[dict[str, Any]]:
    """Every line the bot printed, each one a JSON log record; no secret in any of them."""
    for secret in (BOT_TOKEN, SECRET, DB_PASSWORD):
        assert secret not in output
    records = []
    for line in output.splitlines():
        record = json.loads(line)  # raises on a line that is not JSON
        assert {"ts", "level", "logger", "message"} <= set(record), line
        records.append(record)
    assert records, "the bot printed nothing"
    return records


def transitions(records: list[dict[str, Any]], grant_id: int) -> list[str]:
    """The events logged for this grant's transitions, in order."""
    return [r["event"] for r in records if "event" in r and r.get("grant_id") == grant_id]


def test_probes_and_metrics(aws_group: Any, tmp_path: Path) -> None:
    # JIT_LOG_FORMAT empty, whatever the caller's environment: the default applies.
    with running_bot(aws_group, tmp_path, env={"JIT_LOG_FORMAT": ""}) as bot:
        base = bot.url.removesuffix("/slack/events")
        assert get(f"{base}/healthz") == (200, "ok\n")
        assert wait_until(lambda: get(f"{base}/readyz") == (200, "ready\n"), 10,
                          "/readyz once the engine swept")
        assert get(f"{base}/nope")[0] == 404
        assert metric(base, "jit_database_up") == 1
        assert metric(base, "jit_grants_opened_total", cloud="aws") is None
        assert metric(base, "jit_pending_approvals") == 0

        status, body = bot.command(ALICE, "ssh prod-db 20m from 203.0.113.7 metrics")
        assert status == 200 and "#1" in body
        assert metric(base, "jit_requests_total", outcome="approval_needed") == 1
        assert metric(base, "jit_pending_approvals") == 1
        status, _ = bot.click(BOB, "jit_approve", 1)
        assert status == 200
        wait_until(lambda: jit_rules(aws_group.ec2, aws_group.group_id), 10, "the rule to open")
        wait_until(lambda: metric(base, "jit_grants_opened_total", cloud="aws") == 1, 10,
                   "jit_grants_opened_total to move")
        assert metric(base, "jit_open_seconds_count", cloud="aws") == 1
        assert metric(base, "jit_active_grants", **PROD_DB) == 1
        assert metric(base, "jit_grants_closed_total", cloud="aws", reason="revoked") is None

        status, _ = bot.click(ALICE, "jit_revoke", 1)
        assert status == 200
        wait_until(lambda: metric(base, "jit_grants_closed_total", cloud="aws",
                                  reason="revoked") == 1, 10, "jit_grants_closed_total to move")
        assert not jit_rules(aws_group.ec2, aws_group.group_id)
        assert metric(base, "jit_close_seconds_count", cloud="aws") == 1
        assert metric(base, "jit_active_grants", **PROD_DB) is None
        assert metric(base, "jit_grants_opened_total", cloud="aws") == 1
        output = stop(bot.proc)  # right after a scrape (test_shutdown_during_a_request_is_quiet)

    records = log_lines(output)
    assert transitions(records, 1) == ["requested", "approved", "opening", "opened", "closing",
                                       "closed"]
    opened = next(r for r in records if r.get("event") == "opened")
    assert opened["status"] == "ACTIVE" and opened["target"] == "prod-db"
    assert opened["message"].startswith("#1 opened")
    assert any(r["message"] == "jit-bot stopped" for r in records)


@contextmanager
def own_database(admin: Engine, name: str) -> Iterator[str]:
    """A migrated database `name` of its own; its URL carries a password (trust auth
    ignores it), which must never reach the bot's output."""
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    url = admin.url.set(database=name, password=DB_PASSWORD).render_as_string(
        hide_password=False)
    create(admin, name, url)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def create(admin: Engine, name: str, url: str) -> None:
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine = make_engine(url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()


class LoggedBot:
    """A jit-bot whose stdout goes to a file, read while it runs."""

    def __init__(self, base: str, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.base, self.proc, self.log = base, proc, log

    def output(self) -> str:
        return self.log.read_text()

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(timeout=40) == 0, self.output()
        return self.output()


@contextmanager
def bot_on(database_url: str, aws_group: Any, tmp_path: Path) -> Iterator[LoggedBot]:
    """jit-bot in HTTP mode on this database. Unlike test_slack_bot's launcher, it lets the
    process log tracebacks (the engine logs each sweep that fails while the database is
    gone), and its output can be read while it runs."""
    config = tmp_path / "jit.yaml"
    config.write_text(yaml.safe_dump(aws_policy_data(aws_group.group_id)))
    port = free_port()
    log = tmp_path / "jit-bot.log"
    with SlackApiFake(bot_token=BOT_TOKEN) as slack, log.open("wb") as stdout:
        env = {**os.environ, "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SECRET,
               "SLACK_API_URL": slack.api_url, "JIT_HTTP_PORT": str(port),
               "JIT_CONFIG": str(config), "JIT_DATABASE_URL": database_url}
        for name in ("SLACK_APP_TOKEN", "JIT_LOG_FORMAT"):
            env.pop(name, None)
        proc = subprocess.Popen([sys.executable, "-m", "bot.main"], env=env, stdout=stdout,
                                stderr=subprocess.STDOUT)
        bot = LoggedBot(f"http://127.0.0.1:{port}", proc, log)
        try:
            def healthy() -> bool:
                assert proc.poll() is None, bot.output()
                return answers(f"{bot.base}/healthz")
            wait_until(healthy, 20, "jit-bot to answer /healthz")
            yield bot
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


def not_ready(base: str, naming: str = "") -> tuple[int, str] | None:
    """/readyz's answer if it is not 200 (and names `naming`), else None."""
    status, body = get(f"{base}/readyz")
    return None if status == 200 or naming not in body else (status, body)


def test_readyz_follows_the_database(aws_group: Any, tmp_path: Path) -> None:
    admin = make_engine(postgres_url(), isolation_level="AUTOCOMMIT")
    name = f"jit_ops_{os.getpid()}"
    try:
        with own_database(admin, name) as url, bot_on(url, aws_group, tmp_path) as bot:
            base = bot.base
            assert wait_until(lambda: get(f"{base}/readyz") == (200, "ready\n"), 10,
                              "/readyz on a reachable database")
            assert metric(base, "jit_database_up") == 1

            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
            status, body = wait_until(lambda: not_ready(base), 5,
                                      "/readyz to fail without the database")
            assert status == 503 and body.startswith("not ready: cannot reach the database: ")
            status, body = wait_until(lambda: not_ready(base, naming=name), 10,
                                      "/readyz to name the missing database")
            assert status == 503 and f'database "{name}" does not exist' in body
            assert get(f"{base}/healthz") == (200, "ok\n")  # alive: not to be restarted
            assert metric(base, "jit_database_up") == 0
            assert metric(base, "jit_pending_approvals") is None
            # Only an error names the database (the URL is never logged): a sweep failed.
            wait_until(lambda: f'database \\"{name}\\" does not exist' in bot.output(), 10,
                       "a sweep to fail on the missing database")
            # A request meanwhile is answered at once, without the database's details.
            status, body = signed_post(f"{base}/slack/events", urllib.parse.urlencode({
                "team_id": "T0JITTEST", "user_id": ALICE, "command": "/jit",
                "text": "ssh prod-db 20m from 203.0.113.7 while the database is gone",
                "response_url": "http://127.0.0.1:9/unused", "trigger_id": "1.2.3",
            }).encode())
            assert status == 200
            assert json.loads(body)["text"] == (
                "jit could not record the request: its database is unavailable. Try again "
                "in a minute; if it keeps failing, tell jit's operators.")
            assert name not in body  # nor in the blocks

            create(admin, name, url)
            assert wait_until(lambda: get(f"{base}/readyz") == (200, "ready\n"), 20,
                              "/readyz to recover with the database")
            assert metric(base, "jit_database_up") == 1
            output = bot.stop()
    finally:
        admin.dispose()

    records = log_lines(output)
    failures = [r for r in records if r["message"].startswith("sweep failed")]
    assert failures and all(r["level"] == "error" for r in failures)
    assert any(f'database "{name}" does not exist' in r["exc"] for r in failures)
    [refused] = [r for r in records if r["message"].startswith(f"request by {ALICE} failed")]
    assert refused["level"] == "error"
    assert "the database did not take the request: " in refused["message"]


def test_shutdown_during_a_request_is_quiet(caplog: pytest.LogCaptureFixture) -> None:
    """serve_http, in process: a request being answered when it is told to stop."""
    def slow(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if environ["PATH_INFO"] == "/slow":
            time.sleep(1)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"done\n"]

    port, stop_serving = free_port(), threading.Event()
    server = threading.Thread(target=serve_http, args=(slow, port, stop_serving))
    server.start()
    got: list[tuple[int, str]] = []
    client = threading.Thread(target=lambda: got.append(get(f"http://127.0.0.1:{port}/slow")))
    try:
        wait_until(lambda: answers(f"http://127.0.0.1:{port}/"), 10, "the server to answer")
        with caplog.at_level(logging.ERROR, logger="waitress"):
            client.start()
            time.sleep(0.3)  # the request is being answered
            stop_serving.set()  # what SIGTERM does
            server.join(timeout=20)
            client.join(timeout=20)
    finally:
        stop_serving.set()
        server.join(timeout=20)
    assert got == [(200, "done\n")]  # the request is answered...
    errors = [r.getMessage() for r in caplog.records if r.name == "waitress"]
    assert errors == []  # ...without an error
