"""`jit demo`: the whole jit flow on one machine, in a browser, with no Slack workspace and no
cloud account.

One process, everything on 127.0.0.1: moto's server as EC2 (aws.py: a demo VPC, security
group and instance, and the process's AWS settings sealed onto it), the Slack stand-in with
its page (workspace.py, slack_standin.py, static/), and jit-bot itself, unchanged, in HTTP
mode, its Web API client pointed at the stand-in, with a signing secret and a token made up
for this run. The policy and the SQLite database live in a temporary directory that goes
when the demo ends (Ctrl-C).
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import click
import yaml

log = logging.getLogger("jit.demo")

APPROVALS, AUDIT = "C0APPROVALS", "C0AUDIT"
REQUESTER, APPROVER, SOC = "U0REQUESTER", "U0APPROVER", "U0SOC"
DEFAULT_PORT = 8080


def demo_policy(group_id: str) -> dict[str, Any]:
    """Short grants, so that an expiry can be watched: ssh and rdp on demo-vm."""
    return {
        "slack": {"approvals_channel": APPROVALS, "audit_channel": AUDIT},
        "defaults": {"max_duration": "10m", "approval_timeout": "10m",
                     "requesters": ["*"], "approvers": [APPROVER]},
        "targets": {"demo-vm": {
            "aws": {"region": "us-east-1", "security_group_id": group_id},
            "ports": {"ssh": {"max_duration": "5m"}, "rdp": {"max_duration": "5m"}},
        }},
    }


def adapted_policy(data: Mapping[str, Any], group_for: Any) -> dict[str, Any]:
    """Someone's own policy, made to run in the playground: its AWS targets moved onto a
    group of the embedded EC2 each, the stand-in's channels, and Avery among the approvers.
    An Azure target is refused (click.UsageError): there is no Azure here."""
    if not isinstance(data, Mapping) or not isinstance(data.get("targets"), Mapping):
        raise click.UsageError("the policy file has no targets: mapping")
    targets: dict[str, Any] = {}
    for name, target in data["targets"].items():
        if not isinstance(target, Mapping):
            raise click.UsageError(f"targets.{name} is not a mapping")
        if "azure" in target:
            raise click.UsageError(
                f"target {name} is on Azure: the playground has an embedded EC2 only. Leave "
                "it out here, and try it with jit-bot against your subscription")
        aws = dict(target.get("aws") or {})
        aws.pop("instance_id", None)
        aws.pop("role_arn", None)
        aws.update(region="us-east-1", security_group_id=group_for(str(name)))
        approvers = list(target.get("approvers") or data.get("defaults", {}).get("approvers")
                         or [])
        targets[str(name)] = {**target, "aws": aws,
                              "approvers": [*approvers, APPROVER] if APPROVER not in approvers
                              else approvers}
    return {**data, "slack": {"approvals_channel": APPROVALS, "audit_channel": AUDIT},
            "targets": targets}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def playground(policy_file: Path | None, port: int) -> Iterator[str]:
    """Everything started; yields the page's URL. Stops it all on exit."""
    from bot.playground.aws import EmbeddedEc2
    from bot.playground.workspace import Workspace
    from jitcore.policy_file import parse_policy

    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="jit-demo-")))
        ec2 = EmbeddedEc2()
        network = ec2.start()
        stack.callback(ec2.stop)
        if policy_file is None:
            data = demo_policy(network.group_id)
        else:
            data = adapted_policy(_read(policy_file), ec2.group_for)
        parse_policy(data, str(policy_file or "demo policy"))  # a clear error before starting
        policy_text = yaml.safe_dump(data, sort_keys=False)
        config = tmp / "jit.yaml"
        config.write_text(policy_text, encoding="utf-8")

        bot_port = free_port()
        secret, token = secrets.token_hex(16), f"xoxb-playground-{secrets.token_hex(8)}"
        workspace = Workspace(
            events_url=f"http://127.0.0.1:{bot_port}/slack/events", signing_secret=secret,
            bot_token=token, rules_source=ec2.rules, policy_text=policy_text, port=port)
        stack.enter_context(workspace)
        os.environ.pop("SLACK_APP_TOKEN", None)  # HTTP mode, whatever the shell says
        os.environ.update({
            "JIT_CONFIG": str(config), "JIT_DATABASE_URL": f"sqlite:///{tmp / 'jit.db'}",
            "SLACK_BOT_TOKEN": token, "SLACK_SIGNING_SECRET": secret,
            "SLACK_API_URL": workspace.api_url, "JIT_HTTP_PORT": str(bot_port),
            "JIT_HTTP_HOST": "127.0.0.1", "JIT_EXPIRY_WARNING": "1m"})
        stop = threading.Event()
        stack.callback(_stop_bot, stop, _start_bot(stop, bot_port))
        yield workspace.url


def _read(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise click.UsageError(f"cannot read the policy {path}: {exc}") from None


def _start_bot(stop: threading.Event, port: int) -> threading.Thread:
    """jit-bot's own `run`, in a thread of this process, until `stop`; waits until it answers."""
    from bot.main import BotSettings, run

    failure: list[BaseException] = []

    def serve() -> None:
        try:
            run(BotSettings.from_env(), stop)
        except BaseException as exc:  # noqa: BLE001 - reported by the waiting thread
            failure.append(exc)

    thread = threading.Thread(target=serve, name="jit-bot", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if failure or not thread.is_alive():
            raise click.ClickException(f"jit-bot did not start: {failure[0] if failure else '?'}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return thread
        except OSError:
            time.sleep(0.1)
    stop.set()
    raise click.ClickException("jit-bot did not answer within 30 s")


def _stop_bot(stop: threading.Event, thread: threading.Thread) -> None:
    stop.set()
    thread.join(timeout=20)


class _UnusedTokenNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "`token` will be unused" not in record.getMessage()


@click.command()
@click.option("--policy", "policy_file", type=click.Path(exists=True, dir_okay=False,
                                                          path_type=Path),
              help="Try your own policy: its AWS targets run on the embedded EC2; Azure "
                   "targets are refused.")
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True,
              help="Port of the page, on 127.0.0.1.")
def demo(policy_file: Path | None, port: int) -> None:
    """A playground: jit in your browser, with a stand-in for Slack and an embedded EC2.
    Nothing leaves this machine; Ctrl-C ends it and removes everything it made."""
    try:
        import moto  # noqa: F401 - only to say what is missing, before anything starts
    except ImportError:
        raise click.ClickException("the playground needs its extra: pip install 'jit[demo]' "
                                   "(from a checkout: pip install '.[demo]')") from None
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # Bolt warns at start that the bot token in the environment is unused beside the client
    # jit gives it: true, and nothing a person trying jit can act on. (A filter, not a level:
    # Bolt sets its app logger's level from the root logger's when the app is built.)
    logging.getLogger("slack_bolt.App").addFilter(_UnusedTokenNotice())
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    from jitcore.errors import JitError

    try:
        with playground(policy_file, port) as url:
            click.echo(f"jit playground: {url}  (not connected to Slack or any cloud)")
            click.echo("Open it in a browser; Ctrl-C to stop.")
            sys.stdout.flush()
            done.wait()
            click.echo("stopping...")
    except (OSError, JitError) as exc:  # a port in use, a policy jit refuses: one line
        raise click.ClickException(str(exc)) from None
    click.echo("stopped; nothing is left running.")
