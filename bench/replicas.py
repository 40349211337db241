"""Replicas: 1, 2 and 3 `jit run` processes on one PostgreSQL draining 5,000 due grants.

    .venv/bin/python -m bench.replicas --database-url postgresql+psycopg://... [--json]
    .venv/bin/python bench/replicas.py --database-url postgresql+psycopg://...   (the same)
    options: --due N (5,000 by default) --replicas N[,N] (1,2,3 by default), for a quick look

PostgreSQL is required: replicas split the sweep with FOR UPDATE SKIP LOCKED, and on SQLite
only one process may run the engine (a second one refuses to start), so a SQLite URL, or no
URL, is refused.

Set-up (not measured), once for each N in 1, 2, 3, from scratch: a new moto server in its own
process (`python -m moto.server`) and a new, migrated scratch database. 100 security groups
get 50 real jit rules each, opened with the real AwsProvider and tagged with their grant ids:
5,000 grants, spread round-robin over the groups, as bench.common.seeds does. Then N
`python -m jitcore run --interval 1 --reconcile-every 0` processes start (JIT_CONFIG = a
policy YAML with one target per group, JIT_DATABASE_URL = the scratch database,
AWS_ENDPOINT_URL = moto with dummy credentials, JIT_LOG_FORMAT=json; JIT_SWEEP_BATCH and
JIT_LEASE are passed on as set, so the defaults 100 and 60s unless you set them). Once every
one has printed "jit engine running" on stderr and a further 1.5 s has passed (its first
sweep, which runs at once, is over), the 5,000 grant rows are written straight into the
database, with rule handles and audit history (requested, approved, opening, opened;
hash-chained), as the service would have written them, all due at the same instant
T = 6 s after the write began (the write takes 1.5-3 s; it must end 0.5 s before T or the
run stops). Grants that end within 5 minutes get their expiry warning from the engine (at most
100 per sweep and replica), so some are warned before T and each replica's first sweep
after T warns up to 100 more before it closes: that is the real engine's work.

Measured, for each N: from T until the 5,000 are CLOSED (a poll every 100 ms). Per grant,
lateness = closed_at - expires_at as stored in the database.

Reported, for each N: grants closed; drain time from T to the last closed_at in the
database; work time from the first to the last close; closes/s = 5,000 / drain time;
lateness p50/p99/max; the CPU seconds of the N processes together and of moto's process,
from T until the poll saw all closed, each also per close; those two together over the drain
time, in cores; and then closes/s(N) / closes/s(1) for N = 2 and 3 (the scaling ratio). No
targets: these figures are for reading, not for passing. The context lines give, per N, how
many grants each replica closed (counted from its JSON log lines), their exit codes, their
warning lines (by message), moto's peak RSS, and the checks below.

Checked, for each N (a failure is listed in the context, and the exit status is 1): every
replica exits 0 on SIGTERM within 15 s (else SIGKILL); every grant is CLOSED and has exactly
one `closed` audit event; the audit chain verifies (jitcore.audit.verify); no jit rule is
left in moto's 100 groups; no replica logged an error or a traceback; the replicas' logs
count as many closes as the database holds.

What bounds scaling, on a 2-core machine: the cores. moto is one Python process (one GIL)
serving every replica, and shares the 2 cores with the N replicas and PostgreSQL (whose CPU
is not measured). A sweep claims a target's due grants together (JIT_SWEEP_BATCH at a time),
so a batch of 100 costs about two revokes and two describes, not one of each per grant; the
replicas then take turns at moto. moto's DescribeSecurityGroupRules copies every rule it
holds in the region on each call, whatever the filter (about 25 ms with 1,000 rules, 105 ms
with 5,000): against AWS, which filters server-side, the cloud's share is smaller. Other
people's work on the same machine makes every figure noisy: compare runs made close
together. Takes about 4-5 minutes: 1 minute per N opening the 5,000 rules in moto, then
10-20 s of drain.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

if __package__ in (None, ""):  # run as a file: make `bench` and `jitcore` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import Engine as Database
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from bench.common import (
    REPO_ROOT,
    RULES_PER_GROUP,
    Environment,
    GrantSeed,
    Report,
    argument_parser,
    build_policy,
    closed_times,
    count_jit_rules,
    count_status,
    create_groups,
    database_label,
    ec2_client,
    environment,
    insert_grants,
    now,
    open_rules,
    percentile,
    policy_data,
    process_cpu_seconds,
    progress,
    reader_engine,
    seeds,
)
from bench.recovery import proc_status_kb
from jitcore import audit
from jitcore.bootstrap import BATCH_ENV, LEASE_ENV
from jitcore.domain import EventKind, Status
from jitcore.providers.aws import AwsProvider
from jitcore.store import make_engine
from jitcore.store.models import AuditEvent

REPLICAS = (1, 2, 3)
DUE = 5_000
LEAD = timedelta(seconds=6)  # from just before the rows are written to T
MARGIN = timedelta(seconds=0.5)  # the rows must be in this long before T
SETTLE = 1.5  # s after the last "jit engine running": every first sweep is over
START_TIMEOUT = 30.0  # s
DRAIN_TIMEOUT = 900.0  # s: moto alone needs 5-7 minutes for one replica (see above)
COMMAND = ["-m", "jitcore", "run", "--interval", "1", "--reconcile-every", "0"]
BANNER = "jit engine running"


class Replica:
    """One `python -m jitcore run` child: its JSON log lines (stdout) and its banner (stderr)
    each go to a file of their own."""

    def __init__(self, index: int, tmp: Path, child_env: dict[str, str]) -> None:
        self.index = index
        self.out_path = tmp / f"replica-{index}.log"
        self.err_path = tmp / f"replica-{index}.err"
        with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
            self.process = subprocess.Popen([sys.executable, *COMMAND], cwd=REPO_ROOT,
                                            env=child_env, stdout=out, stderr=err)
        self.returncode: int | None = None

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    def running(self) -> bool:
        return self.process.poll() is None and BANNER in self.stderr()

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.process.pid)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.returncode = self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            self.returncode = -signal.SIGKILL
        return self.returncode

    def closes(self) -> int:
        """Grants this replica closed: its service's `closed` lines in the JSON log."""
        count = 0
        for line in self.stdout().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("event") == EventKind.CLOSED.value:
                count += 1
        return count

    def problems(self) -> list[str]:
        """Log lines at level error or above, tracebacks, and anything that is not JSON."""
        found: list[str] = []
        for line in self.stdout().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                found.append(line)
                continue
            if not isinstance(record, dict) or record.get("level") in ("error", "critical") \
                    or "exc" in record or "Traceback" in line:
                found.append(line)
        found += [line for line in self.stderr().splitlines()
                  if "error" in line.lower() or "Traceback" in line]
        return found

    def warnings(self) -> Counter[str]:
        """Warning lines by logger and message, numbers replaced by N."""
        found: Counter[str] = Counter()
        for line in self.stdout().splitlines():
            if '"level": "warning"' in line:
                record = json.loads(line)
                message = re.sub(r"[0-9]+", "N", str(record.get("message")))[:100]
                found[f"{record.get('logger')}: {message}"] += 1
        return found


def closed_events(db: Database, first: int, last: int) -> dict[int, int]:
    """grant id -> how many `closed` audit events it has, for grants first..last."""
    with db.connect() as conn:
        rows = conn.execute(
            select(AuditEvent.grant_id, func.count())
            .where(AuditEvent.grant_id.between(first, last),
                   AuditEvent.action == EventKind.CLOSED.value)
            .group_by(AuditEvent.grant_id))
        return {int(gid): int(n) for gid, n in rows if gid is not None}


def wait_until(instant: datetime) -> None:
    while now() < instant:
        time.sleep(0.01)


@dataclass
class Run:
    """One N's set-up and what happened to it."""

    replicas: int
    ec2: Any
    groups: list[str]
    config: Path
    writer: Database
    db: Database
    due: list[GrantSeed]
    procs: list[Replica] = field(default_factory=list)
    due_at: datetime | None = None
    cpu: float = float("nan")  # s: the replicas, T -> all closed
    moto_cpu: float = float("nan")  # s: moto, the same window
    codes: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.due)

    @property
    def label(self) -> str:
        return f"{self.replicas} replica{'s' if self.replicas > 1 else ''}"

    @property
    def key(self) -> str:
        return f"replicas_{self.replicas}"


def set_up(env: Environment, replicas: int, count: int, report: Report) -> Run:
    """Groups, a policy, and `count` real rules opened in moto (their rows not written yet)."""
    ec2 = ec2_client()
    groups = create_groups(ec2, -(-count // RULES_PER_GROUP))
    config = env.tmp / "jit.yaml"
    config.write_text(yaml.safe_dump(policy_data(groups), sort_keys=False))
    due = seeds(1, count, groups, [now()] * count)  # the due instant is set just before writing
    run = Run(replicas, ec2, groups, config, make_engine(env.database_url),
              reader_engine(env.database_url), due)
    setup = time.monotonic()
    progress(f"{run.label}: opening {run.count} real rules in {len(groups)} groups")
    open_rules(AwsProvider(), build_policy(groups), due)
    report.context[f"{run.key}_setup_s"] = round(time.monotonic() - setup, 1)
    return run


def start_replicas(env: Environment, run: Run, report: Report) -> None:
    """N `jit run` processes, each past its banner; RuntimeError if one does not get there."""
    child_env = {**os.environ, "JIT_CONFIG": str(run.config),
                 "JIT_DATABASE_URL": env.database_url, "JIT_LOG_FORMAT": "json"}
    progress(f"{run.label}: starting {run.replicas} x `python {' '.join(COMMAND)}`")
    run.procs = [Replica(i + 1, env.tmp, child_env) for i in range(run.replicas)]
    started = time.monotonic()
    while not all(p.running() for p in run.procs):
        dead = [p for p in run.procs if p.process.poll() is not None]
        if dead or time.monotonic() - started > START_TIMEOUT:
            tail = "\n".join((p.stderr() + p.stdout())[-2000:] for p in dead or run.procs)
            raise RuntimeError(f"{run.label}: not every replica started:\n{tail}")
        time.sleep(0.05)
    report.context[f"{run.key}_start_s"] = round(time.monotonic() - started, 2)


def write_due_rows(run: Run, report: Report) -> None:
    """The grant rows, all due at T = LEAD from now; RuntimeError if not in MARGIN early."""
    due_at = now() + LEAD
    for seed in run.due:
        seed.expires_at, seed.opened_at = due_at, due_at - timedelta(minutes=30)
    write = time.monotonic()
    insert_grants(run.writer, run.due)
    report.context[f"{run.key}_rows_written_s"] = round(time.monotonic() - write, 2)
    if now() > due_at - MARGIN:
        raise RuntimeError(f"{run.label}: the rows were not written {MARGIN.total_seconds()} s "
                           "ahead of T; raise LEAD")
    run.due_at = due_at
    progress(f"{run.label}: {run.count} grants due at T = {due_at:%H:%M:%S.%f}")


def drain(env: Environment, run: Run) -> None:
    """From T until every grant is CLOSED (a poll every 100 ms), a replica dies, or the
    timeout; the CPU the replicas and moto spent meanwhile."""
    assert run.due_at is not None
    wait_until(run.due_at)
    cpu0, moto0 = sum(p.cpu_seconds() for p in run.procs), env.moto.cpu_seconds()
    deadline = time.monotonic() + DRAIN_TIMEOUT
    done = False
    while time.monotonic() < deadline and all(p.process.poll() is None for p in run.procs):
        if count_status(run.db, 1, run.count, Status.CLOSED) == run.count:
            done = True
            break
        time.sleep(0.1)
    alive = all(p.process.poll() is None for p in run.procs)
    if alive:
        run.cpu = sum(p.cpu_seconds() for p in run.procs) - cpu0
    run.moto_cpu = env.moto.cpu_seconds() - moto0
    if not done:
        run.problems.append(f"not all {run.count} grants closed within {DRAIN_TIMEOUT:.0f} s"
                            + ("" if alive else " (a replica died)"))


def check(run: Run, times: dict[int, tuple[datetime, datetime]]) -> tuple[int, list[int]]:
    """The checks of the module docstring, into `run.problems`; the audit events verified
    and each replica's closes."""
    events = closed_events(run.db, 1, run.count)
    once = sum(1 for n in events.values() if n == 1)
    with Session(run.db) as session:
        chain = audit.verify(session)
    left = count_jit_rules(run.ec2, run.groups)
    per_replica = [p.closes() for p in run.procs]
    for p in run.procs:
        run.problems += [f"replica {p.index}: {line[:300]}" for line in p.problems()]
        if BANNER.replace("running", "stopped") not in p.stderr():
            run.problems.append(f"replica {p.index}: no 'jit engine stopped' on stderr")
    if any(code != 0 for code in run.codes):
        run.problems.append(f"exit codes {run.codes}")
    if not len(times) == once == len(events) == run.count:
        run.problems.append(f"{len(times)} CLOSED, {once} with exactly one closed event, "
                            f"{len(events)} with any")
    if not chain.ok:
        run.problems.append(f"audit chain broken at #{chain.bad_seq}: {chain.problem}")
    if left:
        run.problems.append(f"{left} jit rules left in moto")
    if sum(per_replica) != len(times):
        run.problems.append(f"the replicas' logs count {sum(per_replica)} closes, the "
                            f"database {len(times)}")
    return chain.checked, per_replica


def add_figures(run: Run, times: dict[int, tuple[datetime, datetime]],
                report: Report) -> tuple[float, float]:
    """The figures of one N; its drain time and closes per second."""
    assert run.due_at is not None
    label = run.label
    lateness = [(closed - expires).total_seconds() for expires, closed in times.values()]
    closed_at = [closed for _, closed in times.values()]
    nan = float("nan")
    drain_s = (max(closed_at) - run.due_at).total_seconds() if closed_at else nan
    work_s = (max(closed_at) - min(closed_at)).total_seconds() if closed_at else nan
    rate = len(times) / drain_s if closed_at else nan
    closes = max(len(times), 1)
    report.add(f"{label}: closed", len(times), f"of {run.count}")
    report.add(f"{label}: lateness p50", percentile(lateness, 50), "s")
    report.add(f"{label}: lateness p99", percentile(lateness, 99), "s")
    report.add(f"{label}: lateness max", max(lateness) if lateness else nan, "s")
    report.add(f"{label}: drain time (T -> last close)", drain_s, "s")
    report.add(f"{label}: work time (first -> last)", work_s, "s")
    report.add(f"{label}: closes per second", rate, "closes/s")
    report.add(f"{label}: CPU of the replicas", run.cpu, "s")
    report.add(f"{label}: CPU of moto", run.moto_cpu, "s")
    report.add(f"{label}: replica CPU per close", run.cpu / closes * 1000, "ms")
    report.add(f"{label}: moto CPU per close", run.moto_cpu / closes * 1000, "ms")
    report.add(f"{label}: replicas+moto CPU / drain", (run.cpu + run.moto_cpu) / drain_s,
               "cores")
    return drain_s, rate


def run_one(env: Environment, replicas: int, report: Report, count: int = DUE) -> float:
    """Set up from scratch, drain `count` grants with `replicas` processes, add the figures;
    closes/s."""
    run = set_up(env, replicas, count, report)
    try:
        start_replicas(env, run, report)
        time.sleep(SETTLE)
        write_due_rows(run, report)
        drain(env, run)
    finally:
        run.codes = [p.stop() for p in run.procs]
    times = closed_times(run.db, list(range(1, run.count + 1)))
    verified, per_replica = check(run, times)
    run.writer.dispose()
    run.db.dispose()
    drain_s, rate = add_figures(run, times, report)
    key = run.key
    report.context[f"{key}_closes_each"] = "/".join(str(n) for n in per_replica)
    report.context[f"{key}_exit_codes"] = run.codes
    warnings = sum((p.warnings() for p in run.procs), Counter())
    report.context[f"{key}_log_warnings"] = "; ".join(
        f"{n} x {message}" for message, n in warnings.most_common()) or "none"
    report.context[f"{key}_audit_events_verified"] = verified
    report.context[f"{key}_checks"] = "; ".join(run.problems) if run.problems else "all passed"
    idle = [p.index for p, n in zip(run.procs, per_replica, strict=True) if n == 0]
    if idle:
        progress(f"{run.label}: replica(s) {idle} closed nothing")
    if run.problems:
        progress(f"{run.label}: CHECKS FAILED: {'; '.join(run.problems)[:3000]}")
    progress(f"{run.label}: drained in {drain_s:.2f}s "
             f"({rate:.0f} closes/s); closes per replica {per_replica}")
    return rate


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argument_parser(__doc__)
    parser.add_argument("--due", type=int, default=DUE, metavar="N",
                        help=f"due grants to drain (default {DUE}; fewer for a quick look)")
    parser.add_argument("--replicas", default=",".join(map(str, REPLICAS)), metavar="N[,N]",
                        help="how many replicas, in turn (default %(default)s)")
    args = parser.parse_args(argv)
    if args.database_url is None or make_url(args.database_url).get_backend_name() != "postgresql":
        parser.error("PostgreSQL is required (--database-url postgresql+psycopg://...): on "
                     "SQLite only one process may run jit's engine, so there are no replicas")
    try:
        args.replicas = tuple(int(n) for n in args.replicas.split(","))
    except ValueError:
        parser.error(f"--replicas takes numbers separated by commas, not {args.replicas!r}")
    if args.due < 1 or min(args.replicas) < 1:
        parser.error("--due and --replicas must be at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    report = Report("replicas")
    report.context.update(database=database_label(args.database_url),
                          moto="separate process (python -m moto.server), fresh for each N",
                          due_grants=args.due, groups=-(-args.due // RULES_PER_GROUP),
                          command="python " + " ".join(COMMAND),
                          sweep_batch=os.environ.get(BATCH_ENV) or "100 (default)",
                          lease=os.environ.get(LEASE_ENV) or "60s (default)",
                          cpus=os.cpu_count(),
                          load_average_at_start=" ".join(f"{x:.2f}" for x in os.getloadavg()))
    started = time.monotonic()
    rates: dict[int, float] = {}
    for replicas in args.replicas:
        with environment(args.database_url) as env:
            report.context["database"] = database_label(env.database_url)
            rates[replicas] = run_one(env, replicas, report, args.due)
            report.context[f"replicas_{replicas}_moto_peak_rss_mb"] = round(
                proc_status_kb(env.moto.process.pid, "VmHWM") / 1024)
    for replicas in (n for n in args.replicas if n > 1 and 1 in rates):
        report.add(f"scaling: closes/s {replicas} vs 1 replica", rates[replicas] / rates[1],
                   "x")
    report.context["total_s"] = round(time.monotonic() - started, 1)
    report.emit(args.json)
    if any(v != "all passed" for k, v in report.context.items() if k.endswith("_checks")):
        sys.exit(1)


if __name__ == "__main__":
    main()
