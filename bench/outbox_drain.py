"""Draining the Slack outbox after an outage: how long until everything owed has arrived.

    .venv/bin/python -m bench.outbox_drain [--events N] [--json] [--database-url URL]

Set-up: the Slack Web API fake runs in a process of its own and answers HTTP 503 to every
call (Slack is down). jit's real service writes N events (default 1,000: N/2 requests and
their N/2 cancellations by the requester), each with the posts it owes: a request owes the
audit thread's parent and the approval card, a cancellation a reply in the thread and the
card's update, so 2N posts in all. The real sender (bot.delivery, as jit-bot runs it, with
its default backoff and probe) runs throughout and keeps failing.

Measured, from the moment the fake answers again: the time until the first post arrives
(the sender notices Slack is back: at most its probe interval), the time until the last
one has, and posts per second over the drain. Then the fake's own call counts: every post
arrived exactly once.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `bench` and `jitcore` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import func, select

from bench.common import (
    REPO_ROOT,
    Report,
    argument_parser,
    database_label,
    process_cpu_seconds,
    progress,
    scratch_database,
    source_for,
)
from bot.delivery import Delivery, delivery_client
from jitcore.policy_file import parse_policy
from jitcore.ports import LogNotifier, SystemClock
from jitcore.providers.aws import AwsProvider
from jitcore.service import JitService
from jitcore.store import Store
from jitcore.store.models import OutboxPost

BOT_TOKEN = "xoxb-bench"
REQUESTER = "U0BENCHREQ"
_FAKE_CHILD = """\
import json, sys
from tests.fakes.slack_api import SlackApiFake
with SlackApiFake(bot_token=sys.argv[1]) as slack:
    print(slack.api_url, flush=True)
    for line in sys.stdin:
        if line.strip() == "down":
            slack.outage()
        elif line.strip() == "up":
            slack.end_outage()
        counts = {}
        for call in slack.calls:
            key = call.method if call.ok else f"{call.method} ({call.error or call.status})"
            counts[key] = counts.get(key, 0) + 1
        posts = [(c.method, c.args.get("channel"), c.args.get("ts"), c.args.get("thread_ts"),
                  str(c.args.get("text"))) for c in slack.calls if c.ok
                 and c.method in ("chat.postMessage", "chat.update")]
        counts["distinct posts"] = len(set(posts))
        print(json.dumps(counts), flush=True)
"""


class FakeSlack:
    """The Web API fake in a child process, told to go down and come back on stdin."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", _FAKE_CHILD, BOT_TOKEN],
                                     cwd=REPO_ROOT, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.api_url = self.proc.stdout.readline().strip()

    def say(self, word: str) -> dict[str, int]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(word + "\n")
        self.proc.stdin.flush()
        return dict(json.loads(self.proc.stdout.readline()))

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=10)


def pending(store: Store) -> int:
    with store.read() as session:
        return int(session.scalar(select(func.count()).select_from(OutboxPost)
                                  .where(OutboxPost.status == "pending")) or 0)


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--events", type=int, default=1000, metavar="N",
                        help="events made while Slack is down (half requests, half cancels)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    events = args.events - args.events % 2
    report = Report("outbox_drain")
    fake = FakeSlack()
    try:
        with tempfile.TemporaryDirectory(prefix="jit-bench-") as tmp, \
                scratch_database(args.database_url, Path(tmp)) as url:
            run(url, events, fake, report)
    finally:
        fake.stop()
    report.emit(args.json)


def run(url: str, events: int, fake: FakeSlack, report: Report) -> None:
    policy = parse_policy({
        "slack": {"approvals_channel": "C0BENCHAPR", "audit_channel": "C0BENCHAUD"},
        "defaults": {"approvers": ["U0BENCHAPR"], "max_duration": "1h"},
        "targets": {"prod-db": {"aws": {"region": "us-east-1",
                                        "security_group_id": "sg-0123456789abcdef0"},
                                "ports": {"ssh": 22}}},
    }, "bench.yaml")
    store = Store.from_url(url)
    delivery = Delivery(delivery_client(BOT_TOKEN, fake.api_url), policy, store)
    service = JitService(store, policy, {"aws": AwsProvider()}, LogNotifier(), SystemClock())
    fake.say("down")
    delivery.start()
    progress(f"Slack is down; writing {events} events")
    for n in range(events // 2):
        grant = service.request(REQUESTER, "prod-db", "ssh", timedelta(minutes=20),
                                source_for(n), "bench").grant
        service.cancel(grant.id, REQUESTER)
    owed = pending(store)
    time.sleep(3)  # the sender has tried and is backing off
    during = fake.say("count")
    progress(f"{owed} posts owed; Slack comes back")
    cpu_before = process_cpu_seconds(os.getpid())
    back = time.monotonic()
    fake.say("up")
    first: float | None = None
    while True:
        left = pending(store)
        if first is None and left < owed:
            first = time.monotonic() - back
        if left == 0:
            break
        time.sleep(0.02)
    drained = time.monotonic() - back
    cpu = process_cpu_seconds(os.getpid()) - cpu_before
    delivery.close()
    store.dispose()
    after = fake.say("count")
    posts = after.get("chat.postMessage", 0) + after.get("chat.update", 0)
    report.context.update(database=database_label(url), events=events, posts_owed=owed,
                          calls_during_outage=during, calls_in_all=after)
    report.add("first post after Slack's return", first or 0.0, "s")
    report.add("all posts delivered after return", drained, "s")
    report.add("drain rate (after the first post)", owed / max(drained - (first or 0), 1e-9),
               "posts/s")
    report.add("posts delivered", posts, "posts")
    report.add("distinct posts", after.get("distinct posts", 0), "posts")
    report.add("sender process CPU during the drain", cpu, "s")


if __name__ == "__main__":
    main()
