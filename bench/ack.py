"""Slash-command ack latency of jit-bot in HTTP mode, under 20 concurrent senders.

    .venv/bin/python -m bench.ack [--json] [--database-url URL]
    .venv/bin/python -m bench.ack --both --database-url postgresql+psycopg://...   (both DBs)
    .venv/bin/python bench/ack.py ...          (the same)
    options: --requests N --clients N; --profile DIR [--cprofile]; --what-if FIX[,FIX]

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

--profile DIR and --what-if run jit-bot through `instrumented_bot()` below instead of
`python -m bot.main` (chosen by environment variables that only this harness sets; nothing in
bot/ or jitcore/ changes). --profile writes DIR/bot-profile-<database>.txt when jit-bot stops:
the time each step between arrival and ack took (the bolt handler, the listener,
JitService.request, write-lock waits, the audit append) and a stack sample of every thread every
10 ms; --cprofile adds per-thread cProfile on CPU time (DIR/bot-profile-<database>.pstats;
it slows jit-bot about 4-fold, so read it for proportions only). --what-if patches a
diagnostic into that process (listed in --help): another GIL switch interval, or no Slack sender.
Takes about 25 s on SQLite and 40 s on PostgreSQL (a 2-vCPU machine); --cprofile much longer.
"""

from __future__ import annotations

import cProfile
import hashlib
import hmac
import http.client
import io
import json
import os
import pstats
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import IO, Any

import yaml

if __package__ in (None, ""):  # run as a file: make `bench`, `bot` and `jitcore` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import func, select
from sqlalchemy.engine import make_url

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
USERS = 100
TARGET = "prod-db"
P99_TARGET = 0.100  # s
SLACK_LIMIT = 3.0  # s: Slack shows the user an error if the ack takes longer
SECRET = "bench-signing-secret"
BOT_TOKEN = "xoxb-bench"
APPROVALS, AUDIT = "C0BENCHAPR", "C0BENCHAUD"
EVENTS_PATH = "/slack/events"
PROFILE_ENV = "JIT_BENCH_PROFILE"  # these three: read by instrumented_bot() only
CPROFILE_ENV = "JIT_BENCH_CPROFILE"
WHAT_IF_ENV = "JIT_BENCH_WHAT_IF"
WHAT_IFS = {
    "switch=S": "sys.setswitchinterval(S) instead of 0.005",
    "no-notifier": "diagnostic, not a fix: the Slack sender never starts (posts stay owed), "
                   "to show what its CPU costs the acks (no approval cards are posted)",
}
_ACK = re.compile(r"^Request #(\d+) is waiting for an approver$")
_FIRST_FALLBACK_SOURCE = int(IPv4Address("11.1.0.1"))
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


# ---- the requests ------------------------------------------------------------------------


def source_address(n: int) -> str:
    """A distinct public address for every n: 198.51.100.x and 203.0.113.x first, then 11.1.x.x
    (documentation ranges are not private to jit; 11/8 is public space)."""
    if n < 254:
        return f"198.51.100.{n + 1}"
    if n < 508:
        return f"203.0.113.{n - 253}"
    return str(IPv4Address(_FIRST_FALLBACK_SOURCE + n - 508))


def user_id(n: int) -> str:
    return f"U0BENCH{n % USERS:03d}"


def command_body(n: int, response_url: str) -> bytes:
    user = user_id(n)
    return urllib.parse.urlencode({
        "token": "unused", "team_id": "T0JITTEST", "team_domain": "jit-test",
        "channel_id": "C0GENERAL", "channel_name": "general", "user_id": user,
        "user_name": user.lower(), "command": "/jit",
        "text": f"{SERVICE} {TARGET} 20m from {source_address(n)} bench",
        "api_app_id": "A0JITAPP", "is_enterprise_install": "false",
        "response_url": f"{response_url}/cmd-{n}",
        "trigger_id": f"{13345224609 + n}.738474920.8088930838d88f008e0",
    }).encode()


def signed_headers(body: bytes) -> dict[str, str]:
    timestamp = str(int(time.time()))
    digest = hmac.new(SECRET.encode(), f"v0:{timestamp}:".encode() + body,
                      hashlib.sha256).hexdigest()
    return {"Content-Type": "application/x-www-form-urlencoded", "Connection": "close",
            "X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": f"v0={digest}",
            "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)"}


@dataclass(slots=True)
class Outcome:
    n: int
    sent: float  # time.perf_counter() just before connecting
    connected: float  # ... once connect() returned (the TCP handshake is done)
    received: float  # ... once the whole response was read
    status: int
    grant_id: int | None
    error: str | None

    @property
    def latency(self) -> float:
        return self.received - self.sent

    @property
    def ok(self) -> bool:
        return self.error is None


def send(port: int, n: int, response_url: str) -> Outcome:
    """One slash command on a connection of its own; the response is the ack."""
    body = command_body(n, response_url)
    headers = signed_headers(body)
    status, grant_id, error = 0, None, None
    sent = connected = time.perf_counter()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.connect()
            connected = time.perf_counter()
            conn.request("POST", EVENTS_PATH, body=body, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        received = time.perf_counter()
        status = response.status
        grant_id, error = read_ack(status, raw)
    except (OSError, http.client.HTTPException) as exc:
        received = time.perf_counter()
        error = f"{type(exc).__name__}: {exc}"
    return Outcome(n, sent, connected, received, status, grant_id, error)


def read_ack(status: int, raw: bytes) -> tuple[int | None, str | None]:
    """The request id in an ack, or what was wrong with it."""
    text = raw.decode(errors="replace")
    if status != 200:
        return None, f"HTTP {status}: {text[:200]}"
    try:
        message = json.loads(text)
    except ValueError:
        return None, f"not JSON: {text[:200]}"
    match = _ACK.match(str(message.get("text", ""))) if isinstance(message, dict) else None
    if match is None:
        return None, f"not a request ack: {text[:200]}"
    return int(match.group(1)), None


def burst(port: int, response_url: str, first: int, count: int,
          clients: int) -> list[Outcome]:
    """Requests first..first+count-1 from `clients` threads, each sending one at a time."""
    numbers = iter(range(first, first + count))
    lock = threading.Lock()
    start = threading.Barrier(clients)
    results: list[list[Outcome]] = [[] for _ in range(clients)]

    def client(k: int) -> None:
        start.wait()
        while True:
            with lock:
                n = next(numbers, None)
            if n is None:
                return
            results[k].append(send(port, n, response_url))

    threads = [threading.Thread(target=client, args=(k,), name=f"client-{k}")
               for k in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted((o for part in results for o in part), key=lambda o: o.n)


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
                 profile: Path | None, cprofile: bool, what_if: list[str]) -> None:
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
            child_env[CPROFILE_ENV] = "1" if cprofile else ""
            child_env[WHAT_IF_ENV] = ",".join(what_if)
            command = [sys.executable, "-c", "import bench.ack; bench.ack.instrumented_bot()"]
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(command, cwd=REPO_ROOT, env=child_env,
                                        stdout=self._log, stderr=subprocess.STDOUT)
        self.returncode: int | None = None
        self.what_if = what_if
        self.stop_timeout = 300.0 if cprofile else 30.0  # merging per-thread profiles is slow
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
    cprofile: bool = False
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
        bot = Bot(env, config, slack, profile, options.cprofile, list(options.what_if))
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


def measure(report: Report, env: Environment, bot: Bot, slack: SlackFake, requests: int,
            clients: int) -> None:
    ms = 1000.0
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
    cpu0 = (bot.cpu_seconds(), env.moto.cpu_seconds(), slack.cpu_seconds(), time.process_time())
    outcomes = burst(bot.port, slack.response_url, WARMUP, requests, clients)
    cpu1 = (bot.cpu_seconds(), env.moto.cpu_seconds(), slack.cpu_seconds(), time.process_time())
    posted_in_burst = slack.counts()["chat.postMessage"] - posted0
    wall = max(o.received for o in outcomes) - min(o.sent for o in outcomes)

    good = [o for o in outcomes if o.ok]
    errors = Counter((o.error or "")[:120] for o in outcomes if not o.ok)
    ids = [o.grant_id for o in good]
    latencies = [o.latency for o in outcomes]
    p99 = percentile(latencies, 99)
    all_ok = len(good) == requests and len(set(ids)) == requests
    rate = requests / wall
    progress(f"{len(good)}/{requests} acked in {wall:.2f}s ({rate:.0f}/s), "
             f"p99 {p99 * 1000:.1f} ms")
    for error, count in errors.most_common(5):
        progress(f"  {count} x {error}")

    total = WARMUP + requests
    grants, requested = stored_requests(env.database_url)  # every ack follows its commit
    pending = sum(1 for status, _, _ in grants.values() if status == Status.PENDING.value)
    matching = sum(1 for o in good if o.grant_id is not None and grants.get(o.grant_id) == (
        Status.PENDING.value, user_id(o.n), f"{source_address(o.n)}/32"))
    posts = 0 if "no-notifier" in bot.what_if else 2 * pending  # card + audit-thread parent
    waited, counts = wait_notified(slack, posts, timeout=60)
    caught_up = counts["chat.postMessage"] >= posts
    connects = [o.connected - o.sent for o in outcomes]

    all_ok = all_ok and matching == requests
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
    report.add("requests per second", rate, "req/s")
    report.add("mean in flight (rate x mean latency)", rate * sum(latencies) / requests,
               "requests")
    report.add("warm-up, one at a time: ack latency p50", percentile(alone, 50) * ms, "ms")
    report.add("warm-up, one at a time: ack latency max", max(alone) * ms, "ms")
    report.add("burst wall time (first send -> last ack)", wall, "s")
    report.add("CPU, jit-bot process (burst)", cpu1[0] - cpu0[0], "s")
    report.add("CPU, jit-bot process per request", (cpu1[0] - cpu0[0]) / requests * ms, "ms")
    report.add("CPU, moto process (burst)", cpu1[1] - cpu0[1], "s")
    report.add("CPU, Slack fake process (burst)", cpu1[2] - cpu0[2], "s")
    report.add("CPU, the senders (this process, burst)", cpu1[3] - cpu0[3], "s")
    report.add("machine speed: fixed Python loop, before the burst", calibrated, "ms")
    report.add("Slack posts made during the burst", posted_in_burst, "posts")
    report.add("Slack caught up (last ack -> all posted)", waited, "s")
    report.context["pending_grants_in_db"] = f"{pending} of {total} sent"
    report.context["requested_audit_events"] = f"{requested} of {total}"
    report.context["slack_calls"] = dict(sorted(counts.items()))
    report.context["notifier_caught_up"] = caught_up
    if errors:
        report.context["errors"] = dict(errors.most_common(5))


# ---- the instrumented jit-bot (a child process; only with --profile or --what-if) -----


class _Timings:
    """Wall times per label; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.samples: dict[str, list[float]] = defaultdict(list)

    def add(self, label: str, seconds: float) -> None:
        with self._lock:
            self.samples[label].append(seconds)

    def wrap(self, owner: Any, name: str, label: str) -> None:
        original: Callable[..., Any] = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.add(label, time.perf_counter() - t0)

        setattr(owner, name, timed)

    def lines(self) -> Iterator[str]:
        yield f"{'(milliseconds)':<58} {'n':>6} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8}"
        for label, values in sorted(self.samples.items()):
            figures = [percentile(values, q) * 1e3 for q in (50, 90, 99)]
            yield (f"{label:<58} {len(values):>6} "
                   + " ".join(f"{v:8.2f}" for v in [*figures, max(values) * 1e3]))


def _role(name: str) -> str:
    """Threads grouped by what they do (bolt's listener pool is the first executor)."""
    if "process_request_thread" in name:
        return "HTTP request threads"
    if name.startswith("ThreadPoolExecutor-0_"):
        return "bolt listener executor (ThreadPoolExecutor-0, 5 workers)"
    if name.startswith("ThreadPoolExecutor-"):
        return f"{name.split('_')[0]} (apscheduler / engine)"
    return re.sub(r"\d+", "N", name)


class _Sampler(threading.Thread):
    """Every `interval`, every other thread's Python stack, counted per thread role."""

    def __init__(self, interval: float) -> None:
        super().__init__(name="bench-sampler", daemon=True)
        self.interval = interval
        self.stop = threading.Event()
        self.stacks: dict[str, Counter[tuple[str, ...]]] = defaultdict(Counter)
        self.rounds = 0

    def run(self) -> None:
        me = threading.get_ident()
        while not self.stop.wait(self.interval):
            names = {t.ident: t.name for t in threading.enumerate()}
            self.rounds += 1
            for ident, frame in sys._current_frames().items():
                if ident == me:
                    continue
                stack: list[str] = []
                current: Any = frame
                while current is not None:
                    code = current.f_code
                    where = code.co_filename.replace(str(REPO_ROOT) + "/", "")
                    where = re.sub(r".*/site-packages/|.*/lib/python3\.\d+/", "", where)
                    stack.append(f"{where}:{code.co_name}:{current.f_lineno}")
                    current = current.f_back
                self.stacks[_role(names.get(ident, "?"))][tuple(reversed(stack))] += 1

    def lines(self, top: int = 15) -> Iterator[str]:
        yield f"{self.rounds} sampling rounds, one every {self.interval * 1e3:.0f} ms"
        for role, stacks in sorted(self.stacks.items(), key=lambda kv: -kv[1].total()):
            total = stacks.total()
            yield ""
            yield f"== {role}: {total} thread-samples"
            leaves: Counter[str] = Counter()
            ours: Counter[str] = Counter()
            for stack, count in stacks.items():
                leaves[stack[-1]] += count
                mine = [f.rsplit(":", 1)[0] for f in stack if f.startswith(("bot/", "jitcore/"))]
                ours[" > ".join(mine[-3:]) or "(no bot/jitcore frame)"] += count
            yield "-- innermost frame"
            for leaf, count in leaves.most_common(top):
                yield f"{count / total:6.1%}  {leaf}"
            yield "-- innermost bot/jitcore frames (up to 3)"
            for where, count in ours.most_common(top):
                yield f"{count / total:6.1%}  {where}"
            yield "-- whole stacks (innermost 16 frames)"
            for stack, count in stacks.most_common(5):
                yield f"{count / total:6.1%}"
                yield from (f"          {f}" for f in stack[-16:])


def _instrument(timings: _Timings) -> None:
    """Wrap (in this process only) the steps between a request's arrival and its ack."""
    from collections.abc import Generator
    from contextlib import contextmanager

    import slack_bolt.adapter.wsgi as wsgi
    import slack_bolt.context.ack.ack as ack
    import slack_bolt.listener.thread_runner as runner
    from sqlalchemy.engine import Connection

    import jitcore.store.db as db
    from jitcore import audit
    from jitcore.service import JitService

    timings.wrap(wsgi.SlackRequestHandler, "__call__", "1 bolt WSGI handler, whole request")
    timings.wrap(JitService, "request", "4 JitService.request (checks + one transaction)")
    flush_links = audit.ChainWriter.flush

    def timed_flush(self: Any, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return flush_links(self, *args, **kwargs)
        finally:
            role = _role(threading.current_thread().name).split(" (")[0]
            timings.add(f"9 audit append, {role}: (PG: lock wait +) head, INSERT(s)",
                        time.perf_counter() - t0)

    audit.ChainWriter.flush = timed_flush  # type: ignore[method-assign]

    run_listener = runner.ThreadListenerRunner.run
    call_ack = ack.Ack.__call__
    begin = Connection.begin
    transaction = db.Store.transaction
    local = threading.local()

    def timed_run(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        request.context["bench_t0"] = t0
        request.context.ack.bench_t0 = t0
        try:
            return run_listener(self, request, *args, **kwargs)
        finally:
            timings.add("2 bolt runner: start -> response handed back",
                        time.perf_counter() - t0)

    def timed_ack(self: Any, *args: Any, **kwargs: Any) -> Any:
        now = time.perf_counter()
        if getattr(self, "bench_t0", None) is not None:
            self.bench_acked = now
            timings.add("5 bolt runner: start -> ack() called", now - self.bench_t0)
        return call_ack(self, *args, **kwargs)

    def timed_begin(self: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return begin(self)
        finally:
            waited = time.perf_counter() - t0
            local.begin_wait = getattr(local, "begin_wait", 0.0) + waited

    @contextmanager
    def timed_transaction(self: Any) -> Generator[Any]:
        role = _role(threading.current_thread().name).split(" (")[0]
        local.begin_wait = 0.0
        t0 = time.perf_counter()
        with transaction(self) as session:
            yield session
        whole = time.perf_counter() - t0
        timings.add(f"7 write txn, {role}: BEGIN (IMMEDIATE) wait", local.begin_wait)
        timings.add(f"8 write txn, {role}: held (whole - BEGIN wait)", whole - local.begin_wait)

    runner.ThreadListenerRunner.run = timed_run  # type: ignore[method-assign]
    ack.Ack.__call__ = timed_ack  # type: ignore[method-assign]
    Connection.begin = timed_begin  # type: ignore[method-assign]
    db.Store.transaction = timed_transaction  # type: ignore[method-assign]


class _ThreadProfiles:
    """cProfile in every thread started from now on, timed by that thread's CPU clock
    (time.thread_time), so the figures are CPU seconds, not time spent waiting for the GIL,
    a lock or a socket."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.profiles: list[tuple[str, cProfile.Profile]] = []

    def start(self) -> None:
        def hook(frame: Any, event: str, arg: Any) -> None:
            sys.setprofile(None)
            profile = cProfile.Profile(time.thread_time)
            with self._lock:
                self.profiles.append((_role(threading.current_thread().name), profile))
            profile.enable()

        threading.setprofile(hook)

    def lines(self, dump: Path, top: int = 40) -> Iterator[str]:
        threading.setprofile(None)
        by_role: Counter[str] = Counter()
        stats: pstats.Stats | None = None
        with self._lock:
            profiles = list(self.profiles)
        for role, profile in profiles:
            profile.disable()
            one = pstats.Stats(profile)
            by_role[role] += one.total_tt  # type: ignore[attr-defined]
            if stats is None:
                stats = one
            else:
                stats.add(one)
        yield "CPU seconds per thread role (cProfile, time.thread_time):"
        for role, seconds in by_role.most_common():
            yield f"  {seconds:8.2f} s  {role}"
        if stats is None:
            return
        stats.dump_stats(dump)
        yield f"(all threads merged into {dump}; open with python -m pstats)"
        for order in ("tottime", "cumulative"):
            text = io.StringIO()
            stats.stream = text  # type: ignore[attr-defined]
            stats.sort_stats(order).print_stats(top)
            yield ""
            yield f"-- top {top} functions by {order} (CPU, all threads)"
            yield from (line for line in text.getvalue().splitlines()
                        if line.strip() and not line.startswith(("   Ordered", "   List")))


def _apply_what_if(fixes: list[str]) -> None:
    """Candidate changes, patched into this (the benchmark's jit-bot) process only."""
    for fix in fixes:
        name, _, value = fix.partition("=")
        if name == "switch":
            sys.setswitchinterval(float(value))
        elif name == "no-notifier":
            import bot.delivery

            bot.delivery.Delivery.start = lambda self: None  # type: ignore[method-assign]


def instrumented_bot() -> None:
    """jit-bot's own main(), run by `Bot` (never by bot/ itself) when a --what-if or --profile
    is asked for. JIT_BENCH_WHAT_IF: candidate fixes to patch in first. JIT_BENCH_PROFILE:
    where to write step timings and a stack sample (every 10 ms) when jit-bot stops;
    with JIT_BENCH_CPROFILE=1, also per-thread cProfile on CPU time."""
    import bot.main

    _apply_what_if([f for f in os.environ.get(WHAT_IF_ENV, "").split(",") if f])
    if not os.environ.get(PROFILE_ENV):
        bot.main.main()
        return
    out = Path(os.environ[PROFILE_ENV])
    timings = _Timings()
    _instrument(timings)
    sampler = _Sampler(interval=0.010)
    sampler.start()
    profiles = _ThreadProfiles() if os.environ.get(CPROFILE_ENV) else None
    if profiles is not None:
        profiles.start()  # after the sampler, so that its own work is not profiled
    t0 = time.perf_counter()
    try:
        bot.main.main()
    finally:
        ran = time.perf_counter() - t0
        cpu = list(profiles.lines(out.with_suffix(".pstats"))) if profiles else []
        sampler.stop.set()
        sampler.join()
        lines = [f"jit-bot ran {ran:.1f}s", "", *timings.lines(), "", *cpu, "",
                 *sampler.lines()]
        out.write_text("\n".join(lines) + "\n")


# ---- command line ------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--both", action="store_true",
                        help="run on a new SQLite file, then on the PostgreSQL server given "
                             "by --database-url")
    parser.add_argument("--requests", type=int, default=REQUESTS, metavar="N",
                        help=f"measured requests (default {REQUESTS})")
    parser.add_argument("--clients", type=int, default=CLIENTS, metavar="N",
                        help=f"concurrent sender threads (default {CLIENTS})")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="profile jit-bot (step timings and stack samples) into DIR")
    parser.add_argument("--cprofile", action="store_true",
                        help="with --profile: also cProfile every thread on CPU time (slows "
                             "jit-bot several-fold; for where the CPU goes, not for latency)")
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
    if args.cprofile and not args.profile:
        parser.error("--cprofile needs --profile DIR")
    urls: list[str | None] = [args.database_url]
    if args.both:
        if not args.database_url or make_url(args.database_url).get_backend_name() != "postgresql":
            parser.error("--both needs --database-url postgresql+psycopg://...")
        urls = [None, args.database_url]
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
        args.profile = args.profile.resolve()
    options = Options(args.requests, args.clients, args.profile, args.cprofile, what_if)
    reports = []
    for url in urls:
        with environment(url) as env:
            reports.append(run(env, options))
    if args.json and len(reports) > 1:
        print(json.dumps([r.as_dict() for r in reports], indent=2, sort_keys=True, default=str))
        return
    for report in reports:
        report.emit(args.json)


if __name__ == "__main__":
    main()
