"""jit-bot as a process in Socket Mode, over TLS on port 443 as Slack serves it, against the
Socket Mode fake: envelopes are acked and acted on, a dropped connection (FIN or RST, no close
frame) comes back within seconds without burning CPU, and a `disconnect` loses nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_slack_bot import free_port, wait_until
from tests.fakes.socket_mode import (
    Connection,
    DisconnectReason,
    Drop,
    SlackWithSocketMode,
    SocketModeServer,
    block_action,
    slash_command,
)
from tests.support.aws import jit_rules
from tests.support.policies import write_bot_policy
from tests.support.processes import stop

BOT_TOKEN = "xoxb-test"
APP_TOKEN = "xapp-1-A0JITAPP-1-e2e"
SECRET = "e2e-signing-secret"
APPROVALS, AUDIT = "C0APPROVE", "C0AUDIT"
ALICE, BOB = "U0ALICE", "U0BOB"
RECONNECT_WITHIN = 10.0  # seconds from a drop to the next connection
CPU_BUDGET = 1.0  # CPU seconds the bot may spend from a drop until well after it reconnects
CPU_WINDOW = 3.0  # seconds after the drop over which that CPU is counted, at least
SLACK_PING_INTERVAL = 1.0  # the fake pings this often, so a test sees the bot's pongs


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/<pid>/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()  # the command name may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class SocketModeBot:
    server: SocketModeServer
    slack: SlackWithSocketMode
    proc: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def connected(self, count: int, timeout: float = RECONNECT_WITHIN) -> Connection:
        """Connection number `count` once it is open: the bot is connected again."""
        try:
            connection = self.server.wait_for_connections(count, timeout)[count - 1]
        except AssertionError as exc:
            raise AssertionError(f"{exc}\njit-bot's output:\n{self.output()[-3000:]}") from None
        assert connection.is_open, connection
        return connection

    def command(self, text: str, user: str = ALICE,
                connection: Connection | None = None) -> str:
        payload = slash_command(user, text, response_url=self.slack.response_url(f"cmd-{user}"))
        return self.server.send("slash_commands", payload, connection)

    def click(self, user: str, action_id: str, grant_id: int, message_ts: str) -> str:
        payload = block_action(user, action_id, str(grant_id), block_id=f"jit_decide:{grant_id}",
                               channel_id=APPROVALS, message_ts=message_ts,
                               response_url=self.slack.response_url(f"click-{user}"))
        return self.server.send("interactive", payload)

    def ack_text(self, envelope_id: str, timeout: float = 5.0) -> str:
        """What the bot answered in the ack, as JSON text ("" for an empty ack)."""
        ack = self.server.wait_for_ack(envelope_id, timeout)
        return json.dumps(ack.payload) if ack.payload else ""


@pytest.fixture
def socket_mode_server() -> Iterator[SocketModeServer]:
    try:
        server = SocketModeServer(ping_interval=SLACK_PING_INTERVAL).__enter__()
    except PermissionError as exc:
        message = f"cannot listen on 127.0.0.1:443 as Slack does ({exc}); run as root"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield server
    finally:
        server.__exit__(None, None, None)


def bot_env(server: SocketModeServer, slack: SlackWithSocketMode, aws_group: Any,
            tmp_path: Path, app_token: str = APP_TOKEN) -> dict[str, str]:
    config = write_bot_policy(tmp_path / "jit.yaml", aws_group.group_id)
    ca_bundle = server.write_ca(tmp_path / "slack-ca.pem")
    return {**os.environ, "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SECRET,
            "SLACK_APP_TOKEN": app_token, "SLACK_API_URL": slack.api_url,
            "JIT_HTTP_PORT": str(free_port()), "JIT_CONFIG": str(config),
            "JIT_DATABASE_URL": f"sqlite:///{tmp_path}/jit.db",
            # The standard OpenSSL variable, as a deployment behind a TLS-inspecting proxy
            # would set it (there, to a bundle holding the public CAs as well).
            "SSL_CERT_FILE": str(ca_bundle)}


@contextmanager
def socket_mode_bot(server: SocketModeServer, aws_group: Any,
                    tmp_path: Path) -> Iterator[SocketModeBot]:
    log = tmp_path / "jit-bot.log"
    with SlackWithSocketMode(server, APP_TOKEN, bot_token=BOT_TOKEN) as slack, \
            log.open("wb") as output:
        env = bot_env(server, slack, aws_group, tmp_path)
        # A file, not a pipe: a bot that logs in a loop must not block on a full pipe.
        proc = subprocess.Popen([sys.executable, "-m", "bot.main"], env=env,
                                stdout=output, stderr=subprocess.STDOUT)
        bot = SocketModeBot(server, slack, proc, log)
        try:
            bot.connected(1, timeout=30)
            # Open on the server's side is not yet open on the bot's: a drop before the bot
            # has read Slack's hello would fail its start, not test a reconnect.
            wait_until(lambda: "jit-bot connected over Socket Mode" in bot.output(), 30,
                       "jit-bot to finish connecting")
            yield bot
        finally:
            stop(proc, signal.SIGTERM, timeout=30)
        text = bot.output()
        assert proc.returncode == 0, text
        assert "Traceback" not in text, text
        for secret in (BOT_TOKEN, APP_TOKEN, SECRET):
            assert secret not in text


@pytest.fixture
def bot(socket_mode_server: SocketModeServer, aws_group: Any,
        tmp_path: Path) -> Iterator[SocketModeBot]:
    with socket_mode_bot(socket_mode_server, aws_group, tmp_path) as bot:
        yield bot


def test_command_and_click_are_acked_and_acted_on(bot: SocketModeBot, aws_group: Any) -> None:
    opened = bot.slack.calls_to("apps.connections.open")
    assert [call.token for call in opened] == [APP_TOKEN] and opened[0].ok

    answer = bot.ack_text(bot.command("ssh prod-db 20m from 203.0.113.7 fix the db"))
    assert "#1" in answer, answer
    assert jit_rules(aws_group.ec2, aws_group.group_id) == []
    card = bot.slack.wait_for(lambda c: c.method == "chat.postMessage"
                              and c.args.get("channel") == APPROVALS, timeout=10)[0]
    assert "jit_approve" in json.dumps(card.args["blocks"])
    card_ts = bot.slack.messages(APPROVALS)[0]["ts"]

    refused = bot.click(ALICE, "jit_approve", 1, card_ts)  # her own request
    bot.server.wait_for_ack(refused)
    refusal = bot.slack.wait_for(lambda c: c.method == "response_url"
                                 and "click-U0ALICE" in c.args["url"], timeout=10)[0]
    assert "own request" in json.dumps(refusal.args)
    assert jit_rules(aws_group.ec2, aws_group.group_id) == []

    bot.server.wait_for_ack(bot.click(BOB, "jit_approve", 1, card_ts))
    rules = wait_until(lambda: jit_rules(aws_group.ec2, aws_group.group_id), 10,
                       "the rule to open")
    assert rules[0]["CidrIpv4"] == "203.0.113.7/32" and rules[0]["FromPort"] == 22
    wait_until(lambda: bot.slack.messages(APPROVALS)[0]["edits"], 10, "the card to update")

    help_text = bot.ack_text(bot.command("help"))
    assert "/jit" in help_text, help_text
    connection = bot.server.connections[0]
    wait_until(lambda: connection.pongs, 5, "the bot to answer Slack's ping")
    assert len(bot.server.connections) == 1 and connection.is_open  # nothing reconnected


@pytest.mark.parametrize("how", ["fin", "rst"])
def test_a_dropped_connection_comes_back_in_seconds(bot: SocketModeBot, how: Drop) -> None:
    first = bot.server.connections[0]
    assert bot.ack_text(bot.command("help", connection=first))
    cpu_before = cpu_seconds(bot.proc.pid)
    dropped_at = time.monotonic()
    first.drop(how)

    second = bot.connected(2)
    reconnect = second.opened_at - dropped_at
    time.sleep(max(0.0, dropped_at + CPU_WINDOW - time.monotonic()))
    cpu = cpu_seconds(bot.proc.pid) - cpu_before
    assert reconnect < RECONNECT_WITHIN, reconnect
    assert cpu < CPU_BUDGET, f"jit-bot spent {cpu:.2f}s of CPU in {CPU_WINDOW}s after a {how}"

    answer = bot.ack_text(bot.command("ssh prod-db 20m from 203.0.113.7 after the drop"))
    assert "#1" in answer, answer
    assert bot.server.acks[-1].connection == second.number
    assert len(bot.server.connections) == 2 and not bot.server.refused
    assert len(bot.slack.calls_to("apps.connections.open")) == 2  # a fresh URL, not the old one


@pytest.mark.parametrize("reason", ["refresh_requested", "warning"])
def test_disconnect_loses_no_envelope(bot: SocketModeBot, reason: DisconnectReason) -> None:
    first = bot.server.connections[0]
    request = bot.command("ssh prod-db 20m from 203.0.113.7 sent before the disconnect")
    # Right behind the envelope; Slack closes the connection itself a little later.
    bot.server.disconnect(reason, first, close_after=10.0 if reason == "warning" else 1.0)

    second = bot.connected(2)
    assert "#1" in bot.ack_text(request)
    assert bot.server.wait_for_ack(request).connection == first.number  # where it came from
    bot.slack.wait_for(lambda c: c.method == "chat.postMessage"
                       and c.args.get("channel") == APPROVALS, timeout=10)
    wait_until(lambda: not first.is_open, 10, "the bot to leave the old connection")
    assert first.ended_by == "client close", first.ended_by  # it said goodbye, not Slack

    after = bot.command("ssh prod-db 20m from 203.0.113.8 sent after the reconnect")
    assert "#2" in bot.ack_text(after)
    assert bot.server.acks[-1].connection == second.number
    assert len(bot.server.connections) == 2 and not bot.server.refused
    assert bot.server.other_messages == []


def test_reconnect_retries_while_slack_refuses(bot: SocketModeBot) -> None:
    for _ in range(2):  # Slack's Web API fails twice, then recovers
        bot.slack.fail_next("apps.connections.open", "internal_error")
    first = bot.server.connections[0]
    dropped_at = time.monotonic()
    first.drop("fin")

    second = bot.connected(2)
    assert second.opened_at - dropped_at < RECONNECT_WITHIN
    refused = [c for c in bot.slack.calls_to("apps.connections.open") if not c.ok]
    assert [c.error for c in refused] == ["internal_error", "internal_error"]
    assert refused[-1].at < second.opened_at
    assert "#1" in bot.ack_text(bot.command("ssh prod-db 20m from 203.0.113.7 after retries"))


def test_a_refused_app_token_stops_the_start(socket_mode_server: SocketModeServer,
                                            aws_group: Any, tmp_path: Path) -> None:
    wrong = "xapp-1-A0JITAPP-1-revoked"
    with SlackWithSocketMode(socket_mode_server, APP_TOKEN, bot_token=BOT_TOKEN) as slack:
        env = bot_env(socket_mode_server, slack, aws_group, tmp_path, app_token=wrong)
        done = subprocess.run([sys.executable, "-m", "bot.main"], env=env, capture_output=True,
                              text=True, timeout=60)
        assert [call.error for call in slack.calls_to("apps.connections.open")] == [
            "invalid_auth"]
    assert done.returncode == 1, done.stdout + done.stderr
    assert "jit-bot cannot start: cannot open a Socket Mode connection" in done.stderr
    assert "invalid_auth" in done.stderr and "Traceback" not in done.stdout + done.stderr
    assert wrong not in done.stdout + done.stderr
    assert socket_mode_server.connections == []
