"""Slash-command ack latency of jit-bot in HTTP mode, under 20 concurrent senders.

    .venv/bin/python -m bench.ack [--json] [--database-url URL]
    .venv/bin/python -m bench.ack --both --database-url postgresql+psycopg://...   (both DBs)
    .venv/bin/python bench/ack.py ...          (the same)
    options: --requests N --clients N; --profile DIR; --what-if FIX[,FIX]

Set-up (not measured): moto runs in its own process (`python -m moto.server`) and holds one
real security group; the Slack Web API fake (tests.fakes.slack_api.SlackApiFake) runs in its
own process too, so that neither competes with the senders for this process's GIL. The policy
has one target, prod-db (ssh, up to 30 min) on that group, a named approver, requesters "*",
no auto-approval and no @usergroups (so no directory look-ups). jit-bot runs as
`python -m bot.main` in HTTP mode (SLACK_APP_TOKEN unset, JIT_HTTP_PORT a free port,
SLACK_API_URL the fake, JIT_CONFIG that policy, JIT_DATABASE_URL the scratch database), with
its expiry engine and Slack sender running as in production. 50 requests are sent one at a
time first, as a warm-up (bolt's one-off auth.test, lazy imports, the pools): checked, and
reported as the unloaded ack latency, but not part of the burst figures.

Measured: 2,000 correctly signed `/jit ssh prod-db 20m from <address> bench` slash commands,
each from a distinct public source address (198.51.100.x, 203.0.113.x, then 11.1.x.x) and one
of 100 user ids, sent by 20 threads, each sending its next request as soon as it has the
previous ack (a closed loop: about 20 always in flight). Every request has a connection of its
own (http.client, `Connection: close`); latency runs from just before connecting until the
whole HTTP response has been read. That response is the ack: it must be HTTP 200 saying
"Request #N is waiting for an approver", every N unique, and grant N in the database PENDING
with that request's user and source. Afterwards every grant must have its `requested` audit
event, and the Slack sender must post every approval card and audit-thread parent to the fake
(reported: how long after the last ack it caught up).

Reported: ack latency p50/p90/p99/max (and the TCP connect part of it), requests/s (2,000 /
first send to last ack), CPU of jit-bot, moto, the Slack fake and the senders in that window,
Slack posts made during the burst, and the machine's speed just before it (a fixed loop of
pure Python: on a shared VM it drifts, and every figure drifts with it). Target: p99
under 100 ms (Slack shows an error after 3,000 ms). jit-bot must exit 0 on SIGTERM. In a
closed loop, mean latency = clients / throughput (Little's law): once jit-bot's one process
is CPU-bound, fewer CPU-milliseconds per request is the only way to a lower p50.

--profile DIR and --what-if run jit-bot through bench.ack_profile (see there) instead of
`python -m bot.main`; nothing in bot/ or jitcore/ changes. --profile writes
DIR/bot-profile-<database>.txt when jit-bot stops: step timings from arrival to ack, CPU
seconds per kind of thread, and pyinstrument's profile of every thread (also as
DIR/bot-profile-<database>.pyisession). --what-if patches a diagnostic into that process
(listed in --help). The load is built in bench.ack_load. Takes about 25 s on SQLite and 40 s
on PostgreSQL (a 2-vCPU machine).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import yaml

if __package__ in (None, ""):  # run as a file: make `bench`, `bot` and `jitcore` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from bench.ack_load import SECRET, TARGET, Outcome, burst, send, source_address, user_id
from bench.ack_profile import PROFILE_ENV, WHAT_IF_ENV, WHAT_IFS
from bench.common import (
    APPROVER,
    AWS_REGION,
    PORT,
    REPO_ROOT,
    SERVICE,
    Environment,
    Report,
    argument_parser,
    create_groups,
    database_label,
    ec2_client,
    environment,
    free_port,
    percentile,
    process_cpu_seconds,
    progress,
    reader_engine,
)
from jitcore.domain import EventKind, Status
from jitcore.store.models import AuditEvent, Grant

REQUESTS = 2_000
CLIENTS = 20
WARMUP = 50
P99_TARGET = 0.100  # s
SLACK_LIMIT = 3.0  # s: Slack shows the user an error if the ack takes longer
BOT_TOKEN = "xoxb-bench"
APPROVALS, AUDIT = "C0BENCHAPR", "C0BENCHAUD"
_SLACK_FAKE_CHILD = """\
import json, sys
from tests.fakes.slack_api import SlackApiFake
with SlackApiFake(bot_token=sys.argv[1]) as slack:
    print(slack.api_url, flush=True)
    for _ in sys.stdin:
        counts = {}
        for call in slack.calls:
            key = call.method if call.ok else f"{call.method} ({call.error or call.status})"
            counts[key] = counts.get(key, 0) + 1
        print(json.dumps(counts), flush=True)
"""


# ---- the processes -----------------------------------------------------------------------


class SlackFake:
    """tests.fakes.slack_api.SlackApiFake in a child process; `counts()` asks it what it got."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _SLACK_FAKE_CHILD, BOT_TOKEN], cwd=REPO_ROOT, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.process.stdin is not None and self.process.stdout is not None
        self._stdin: IO[str] = self.process.stdin
        self._stdout: IO[str] = self.process.stdout
        self.api_url = self._stdout.readline().strip()
        if not self.api_url.startswith("http://"):
            raise RuntimeError(f"the Slack fake did not start (exit {self.process.poll()})")
        self.response_url = self.api_url.removesuffix("/api/") + "/response"

    def counts(self) -> Counter[str]:
        self._stdin.write("counts\n")
        self._stdin.flush()
        return Counter(json.loads(self._stdout.readline()))

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.process.pid)

    def stop(self) -> None:
        with suppress(OSError):
            self._stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._stdout.close()


class Bot:
    """`python -m bot.main` in HTTP mode, output to a log file."""

    def __init__(self, env: Environment, config: Path, slack: SlackFake,
                 profile: Path | None, what_if: list[str]) -> None:
        self.port = free_port()
        self.log_path = env.tmp / "jit-bot.log"
        child_env = {**os.environ, "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SECRET,
                     "SLACK_API_URL": slack.api_url, "JIT_HTTP_PORT": str(self.port),
                     "JIT_LOG_FORMAT": "text",
                     "JIT_CONFIG": str(config), "JIT_DATABASE_URL": env.database_url}
        child_env.pop("SLACK_APP_TOKEN", None)
        command = [sys.executable, "-m", "bot.main"]
        if profile is not None or what_if:  # the bootstrap below, never bot/ itself
            child_env[PROFILE_ENV] = str(profile or "")
            child_env[WHAT_IF_ENV] = ",".join(what_if)
            command = [sys.executable, "-c",
                       "import bench.ack_profile; bench.ack_profile.instrumented_bot()"]
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(command, cwd=REPO_ROOT, env=child_env,
                                        stdout=self._log, stderr=subprocess.STDOUT)
        self.returncode: int | None = None
        self.what_if = what_if
        self.stop_timeout = 120.0 if profile else 30.0  # rendering the profiles takes a while
        self._wait_listening()

    def _wait_listening(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"jit-bot exited with {self.process.returncode}:\n"
                                   f"{self.output()[-3000:]}")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"jit-bot did not listen on port {self.port} within {timeout}s")

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.process.pid)

    def stop(self) -> int:
        """SIGTERM, as a service manager would; the exit status."""
        if self.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.returncode = self.process.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                self.returncode = -signal.SIGKILL
            self._log.close()
        return self.returncode

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


# ---- the benchmark -----------------------------------------------------------------------


def write_policy(path: Path, group_id: str) -> None:
    path.write_text(yaml.safe_dump({
        "slack": {"approvals_channel": APPROVALS, "audit_channel": AUDIT},
        "defaults": {"max_duration": "1h", "approval_timeout": "1h",
                     "requesters": ["*"], "approvers": [APPROVER]},
        "targets": {TARGET: {
            "aws": {"region": AWS_REGION, "security_group_id": group_id},
            "ports": {SERVICE: {"port": PORT, "max_duration": "30m"}},
        }},
    }, sort_keys=False))


def stored_requests(url: str) -> tuple[dict[int, tuple[str, str, str]], int]:
    """Every grant (id -> status, requester, source), and the `requested` audit events."""
    db = reader_engine(url)
    try:
        with db.connect() as conn:
            grants = {gid: (status, requester, source) for gid, status, requester, source
                      in conn.execute(select(Grant.id, Grant.status, Grant.requester,
                                             Grant.source))}
            requested = conn.execute(select(func.count()).select_from(AuditEvent)
                                     .where(AuditEvent.action == EventKind.REQUESTED.value)
                                     ).scalar_one()
        return grants, int(requested)
    finally:
        db.dispose()


def wait_notified(slack: SlackFake, posts: int, timeout: float) -> tuple[float, Counter[str]]:
    """Seconds until the fake has received `posts` successful chat.postMessage calls."""
    t0 = time.monotonic()
    while True:
        counts = slack.counts()
        waited = time.monotonic() - t0
        if counts["chat.postMessage"] >= posts or waited > timeout:
            return waited, counts
        time.sleep(0.1)


@dataclass(frozen=True, slots=True)
class Options:
    requests: int = REQUESTS
    clients: int = CLIENTS
    profile_dir: Path | None = None
    what_if: tuple[str, ...] = ()


def run(env: Environment, options: Options) -> Report:
    label = "sqlite" if make_url(env.database_url).get_backend_name() == "sqlite" else "postgresql"
    report = Report(f"ack ({label})")
    report.context.update(database=database_label(env.database_url),
                          moto="separate process (python -m moto.server)",
                          slack="separate process (tests.fakes.slack_api.SlackApiFake)",
                          bot="python -m bot.main, HTTP mode", requests=options.requests,
                          clients=options.clients, warmup=WARMUP, cpus=os.cpu_count())
    if options.what_if:
        report.context["what_if (patched in the bench's bot process only)"] = (
            ", ".join(options.what_if))
    group = create_groups(ec2_client(), 1, prefix="ack")[0]
    config = env.tmp / "jit.yaml"
    write_policy(config, group)
    profile = (options.profile_dir / f"bot-profile-{label}.txt" if options.profile_dir
               else None)

    progress("starting the Slack fake (separate process)")
    slack = SlackFake()
    bot: Bot | None = None
    try:
        progress("starting jit-bot")
        bot = Bot(env, config, slack, profile, list(options.what_if))
        measure(report, env, bot, slack, options.requests, options.clients)
    finally:
        code = bot.stop() if bot is not None else None
        slack.stop()
    output = bot.output()
    report.context["bot_exit_code"] = code
    report.context["bot_stopped_cleanly"] = code == 0 and "jit-bot stopped" in output
    lines = output.splitlines()
    problems = [line for line in lines if "Traceback" in line or " ERROR " in line]
    warnings = Counter(line.split(" WARNING ", 1)[1] for line in lines if " WARNING " in line)
    report.context["bot_log_errors"] = len(problems)
    report.context["bot_log_warnings"] = dict(warnings.most_common(5))
    if code != 0 or problems:
        progress(f"jit-bot exited {code}; its log ends:\n{output[-3000:]}")
    if profile is not None:
        report.context["profile"] = str(profile)
    return report


def calibration_ms() -> float:
    """How long this machine takes for a fixed piece of pure-Python work, now (best of 3).
    On a shared VM this drifts (1.6x within a minute has been seen); every CPU figure
    here drifts with it, so it is printed beside them."""
    best = float("inf")
    for _ in range(3):
        t0 = time.process_time()
        total = 0
        for i in range(1_000_000):
            total += i * i % 7
        best = min(best, time.process_time() - t0)
    return best * 1000.0


@dataclass(frozen=True)
class Burst:
    """What the senders saw, and what the processes spent meanwhile."""

    outcomes: list[Outcome]
    alone: list[float]  # warm-up latencies, one request at a time
    calibrated: float  # ms: calibration_ms() just before the burst
    cpu: tuple[float, ...]  # s: jit-bot, moto, the Slack fake, the senders
    posted: int  # Slack posts made during the burst

    @property
    def latencies(self) -> list[float]:
        return [o.latency for o in self.outcomes]

    @property
    def wall(self) -> float:
        return max(o.received for o in self.outcomes) - min(o.sent for o in self.outcomes)


@dataclass(frozen=True)
class Stored:
    """What the database and the Slack fake hold afterwards."""

    matching: int  # acks whose grant is PENDING with the request's user and source
    pending: int
    requested: int  # `requested` audit events
    total: int  # requests sent, warm-up included
    waited: float  # s: last ack -> every post made (or the timeout)
    posts: int  # posts owed
    counts: Counter[str]  # the Slack fake's calls


def cpu_now(env: Environment, bot: Bot, slack: SlackFake) -> tuple[float, ...]:
    return (bot.cpu_seconds(), env.moto.cpu_seconds(), slack.cpu_seconds(), time.process_time())


def send_burst(env: Environment, bot: Bot, slack: SlackFake, requests: int,
               clients: int) -> Burst:
    """The warm-up one at a time, then `requests` from `clients` threads."""
    warm = [send(bot.port, n, slack.response_url) for n in range(WARMUP)]
    bad = [o for o in warm if not o.ok]
    if bad:
        raise RuntimeError(f"warm-up request {bad[0].n} failed: {bad[0].error}")
    alone = [o.latency for o in warm[1:]]  # the first one pays for bolt's auth.test
    progress(f"warm-up done ({WARMUP} requests one at a time, p50 "
             f"{percentile(alone, 50) * 1000:.1f} ms); sending {requests} from {clients} threads")
    time.sleep(1.5)  # let the sender post the warm-up's cards first

    calibrated = calibration_ms()
    posted0 = slack.counts()["chat.postMessage"]
    cpu0 = cpu_now(env, bot, slack)
    outcomes = burst(bot.port, slack.response_url, WARMUP, requests, clients)
    cpu1 = cpu_now(env, bot, slack)
    posted = slack.counts()["chat.postMessage"] - posted0
    return Burst(outcomes, alone, calibrated, tuple(b - a for a, b in zip(cpu0, cpu1,
                                                                           strict=True)), posted)


def check_stored(env: Environment, bot: Bot, slack: SlackFake, sent: Burst) -> Stored:
    """Every ack's grant as stored (every ack follows its commit), and Slack's posts."""
    grants, requested = stored_requests(env.database_url)
    pending = sum(1 for status, _, _ in grants.values() if status == Status.PENDING.value)
    matching = sum(1 for o in sent.outcomes if o.ok and o.grant_id is not None
                   and grants.get(o.grant_id) == (Status.PENDING.value, user_id(o.n),
                                                  f"{source_address(o.n)}/32"))
    posts = 0 if "no-notifier" in bot.what_if else 2 * pending  # card + audit-thread parent
    waited, counts = wait_notified(slack, posts, timeout=60)
    return Stored(matching, pending, requested, WARMUP + len(sent.outcomes), waited, posts,
                  counts)


def measure(report: Report, env: Environment, bot: Bot, slack: SlackFake, requests: int,
            clients: int) -> None:
    sent = send_burst(env, bot, slack, requests, clients)
    good = [o for o in sent.outcomes if o.ok]
    errors = Counter((o.error or "")[:120] for o in sent.outcomes if not o.ok)
    unique = len(good) == requests and len({o.grant_id for o in good}) == requests
    progress(f"{len(good)}/{requests} acked in {sent.wall:.2f}s ({requests / sent.wall:.0f}/s), "
             f"p99 {percentile(sent.latencies, 99) * 1000:.1f} ms")
    for error, count in errors.most_common(5):
        progress(f"  {count} x {error}")
    stored = check_stored(env, bot, slack, sent)
    report_latency(report, sent, requests, unique and stored.matching == requests,
                   stored.matching)
    report_costs(report, sent, requests)
    report.add("Slack caught up (last ack -> all posted)", stored.waited, "s")
    report.context["pending_grants_in_db"] = f"{stored.pending} of {stored.total} sent"
    report.context["requested_audit_events"] = f"{stored.requested} of {stored.total}"
    report.context["slack_calls"] = dict(sorted(stored.counts.items()))
    report.context["notifier_caught_up"] = stored.counts["chat.postMessage"] >= stored.posts
    if errors:
        report.context["errors"] = dict(errors.most_common(5))


def report_latency(report: Report, sent: Burst, requests: int, all_ok: bool,
                   matching: int) -> None:
    ms = 1000.0
    latencies = sent.latencies
    p99 = percentile(latencies, 99)
    connects = [o.connected - o.sent for o in sent.outcomes]
    report.add("acks: HTTP 200, unique request id, as stored", matching, f"of {requests}",
               target=f"all {requests}", met=all_ok)
    report.add("ack latency p50", percentile(latencies, 50) * ms, "ms")
    report.add("ack latency p90", percentile(latencies, 90) * ms, "ms")
    report.add("ack latency p99", p99 * ms, "ms", target=f"< {P99_TARGET * ms:.0f} ms",
               met=all_ok and p99 < P99_TARGET)
    report.add("ack latency max", max(latencies) * ms, "ms",
               target=f"< {SLACK_LIMIT * ms:.0f} ms (Slack's limit)",
               met=max(latencies) < SLACK_LIMIT)
    report.add("  of which TCP connect p99", percentile(connects, 99) * ms, "ms")
    report.add("  of which TCP connect max", max(connects) * ms, "ms")
    report.add("  connects slower than 500 ms (SYN retried)",
               sum(1 for c in connects if c > 0.5), "requests")
    rate = requests / sent.wall
    report.add("requests per second", rate, "req/s")
    report.add("mean in flight (rate x mean latency)", rate * sum(latencies) / requests,
               "requests")
    report.add("warm-up, one at a time: ack latency p50", percentile(sent.alone, 50) * ms, "ms")
    report.add("warm-up, one at a time: ack latency max", max(sent.alone) * ms, "ms")


def report_costs(report: Report, sent: Burst, requests: int) -> None:
    bot, moto, slack, senders = sent.cpu
    report.add("burst wall time (first send -> last ack)", sent.wall, "s")
    report.add("CPU, jit-bot process (burst)", bot, "s")
    report.add("CPU, jit-bot process per request", bot / requests * 1000.0, "ms")
    report.add("CPU, moto process (burst)", moto, "s")
    report.add("CPU, Slack fake process (burst)", slack, "s")
    report.add("CPU, the senders (this process, burst)", senders, "s")
    report.add("machine speed: fixed Python loop, before the burst", sent.calibrated, "ms")
    report.add("Slack posts made during the burst", sent.posted, "posts")


# ---- command line ------------------------------------------------------------------------


def parse_options(argv: list[str] | None) -> tuple[Options, list[str | None], bool]:
    """The options, the database URLs to run on in turn, and --json."""
    parser = argument_parser(__doc__)
    parser.add_argument("--both", action="store_true",
                        help="run on a new SQLite file, then on the PostgreSQL server given "
                             "by --database-url")
    parser.add_argument("--requests", type=int, default=REQUESTS, metavar="N",
                        help=f"measured requests (default {REQUESTS})")
    parser.add_argument("--clients", type=int, default=CLIENTS, metavar="N",
                        help=f"concurrent sender threads (default {CLIENTS})")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="profile jit-bot (step timings, pyinstrument) into DIR")
    parser.add_argument("--what-if", metavar="FIX[,FIX]", default="",
                        help="measure candidate fixes, patched into the benchmark's jit-bot "
                             "process only: " + "; ".join(f"{k}: {v}" for k, v in WHAT_IFS.items()))
    args = parser.parse_args(argv)
    what_if = tuple(f.strip() for f in args.what_if.split(",") if f.strip())
    known = {name.split("=")[0]: "=" in name for name in WHAT_IFS}  # name -> takes a value
    unknown = [f for f in what_if if known.get(f.split("=")[0]) != ("=" in f)]
    if unknown:
        parser.error(f"unknown --what-if {', '.join(unknown)}; choose from "
                     f"{', '.join(WHAT_IFS)}")
    urls: list[str | None] = [args.database_url]
    if args.both:
        if not args.database_url or make_url(args.database_url).get_backend_name() != "postgresql":
            parser.error("--both needs --database-url postgresql+psycopg://...")
        urls = [None, args.database_url]
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
        args.profile = args.profile.resolve()
    return Options(args.requests, args.clients, args.profile, what_if), urls, args.json


def main(argv: list[str] | None = None) -> None:
    options, urls, as_json = parse_options(argv)
    reports = []
    for url in urls:
        with environment(url) as env:
            reports.append(run(env, options))
    if as_json and len(reports) > 1:
        print(json.dumps([r.as_dict() for r in reports], indent=2, sort_keys=True, default=str))
        return
    for report in reports:
        report.emit(as_json)


if __name__ == "__main__":
    main()
