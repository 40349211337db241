"""`jit-bot` without its Slack settings: a real process, one clear paragraph, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BOT_TOKEN, SIGNING_SECRET = "SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET"
JIT_BOT = Path(sys.executable).with_name("jit-bot")  # the installed console script
COMMANDS = {"jit-bot": [str(JIT_BOT)], "python -m bot.main": [sys.executable, "-m", "bot.main"]}


def run_bot(command: list[str], **slack: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLACK_")}
    env.update(slack)
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[2], check=False)


def diagnosis(stderr: str) -> str:
    """The message's first sentence: what is wrong (the rest says how to fix it)."""
    return stderr.split(". ")[0]


def assert_one_paragraph(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode != 0
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    message = result.stderr.strip()
    assert message.startswith("jit-bot cannot start: ")
    assert "\n" not in message, "one paragraph"
    assert "manifest.yml" in message  # says how to get the values


def test_console_script_is_installed() -> None:
    assert JIT_BOT.is_file(), f"{JIT_BOT} missing: pip install -e . installs it"


@pytest.mark.parametrize("command", list(COMMANDS.values()), ids=list(COMMANDS))
def test_both_missing_names_both(command: list[str]) -> None:
    result = run_bot(command)
    assert_one_paragraph(result)
    assert diagnosis(result.stderr) == (
        f"jit-bot cannot start: {BOT_TOKEN} and {SIGNING_SECRET} are not set")


@pytest.mark.parametrize(("present", "missing"), [(BOT_TOKEN, SIGNING_SECRET),
                                                  (SIGNING_SECRET, BOT_TOKEN)])
def test_one_missing_names_just_that_one(present: str, missing: str) -> None:
    result = run_bot(COMMANDS["jit-bot"], **{present: "xoxb-or-secret-value"})
    assert_one_paragraph(result)
    assert diagnosis(result.stderr) == f"jit-bot cannot start: {missing} is not set"
    assert present not in diagnosis(result.stderr)


def test_blank_value_counts_as_missing() -> None:
    result = run_bot(COMMANDS["jit-bot"], **{BOT_TOKEN: "   ", SIGNING_SECRET: "s3cret"})
    assert_one_paragraph(result)
    assert diagnosis(result.stderr) == f"jit-bot cannot start: {BOT_TOKEN} is not set"


@pytest.mark.parametrize(("name", "value", "says"), [
    ("JIT_LEASE", "soon", "JIT_LEASE='soon'"),
    ("JIT_LEASE", "0s", "must be longer than zero"),
    ("JIT_SWEEP_BATCH", "0", "JIT_SWEEP_BATCH='0': use a whole number from 1 to 10000"),
    ("JIT_LOG_FORMAT", "xml", "JIT_LOG_FORMAT='xml': use json or text"),
])
def test_malformed_engine_or_log_setting_stops_before_anything_runs(
        name: str, value: str, says: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "JIT_"))}
    env.update({BOT_TOKEN: "xoxb-1", SIGNING_SECRET: "s3cret", name: value})
    result = subprocess.run(COMMANDS["jit-bot"], env=env, capture_output=True, text=True,
                            timeout=60, cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert result.stderr.startswith("jit-bot cannot start: ")
    assert says in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "jit.db").exists()  # nothing was created


def test_slack_unreachable_at_start_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "jit.yaml").write_text(
        "slack: {approvals_channel: C0APPROVE, audit_channel: C0AUDIT}\n"
        "defaults: {approvers: [U0LEAD1]}\n"
        "targets:\n  prod-db:\n    aws: {region: us-east-1, security_group_id: sg-0abc1234}\n"
        "    ports: {ssh: 22}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "JIT_"))}
    env.update({BOT_TOKEN: "xoxb-1", SIGNING_SECRET: "s3cret-value",
                "SLACK_API_URL": "http://127.0.0.1:9/api/", "JIT_LOG_FORMAT": "json"})
    result = subprocess.run(COMMANDS["jit-bot"], env=env, capture_output=True, text=True,
                            timeout=60, cwd=tmp_path, check=False)
    assert result.returncode == 1
    assert result.stderr.strip().startswith(
        "jit-bot cannot start: cannot check the bot token with Slack at "
        "http://127.0.0.1:9/api/auth.test")
    assert "Traceback" not in result.stderr + result.stdout
