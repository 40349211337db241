"""Recovery after downtime: how fast a freshly started `jit run` closes what came due meanwhile.

    .venv/bin/python -m bench.recovery [--json] [--database-url URL]
    .venv/bin/python bench/recovery.py          (the same)

Set-up (not measured): moto runs in its own process (`python -m moto.server`). 100,000 ACTIVE
grants are written straight into the database, each with its rule handle and its audit
history (requested, approved, opening, opened; hash-chained), as the service would have
written them. 1,000 of them are overdue (expired 1 s to 30 min ago, as if jit had been down)
and have real rules in moto, 50 in each of 20 security groups, opened with the real
AwsProvider. The other 99,000 are due 10-55 minutes later and have realistic rule handles
(sgr-... ids) but no rule in moto (moto caps a VPC group at 60 inbound rules).

Measured: `python -m jitcore run` as a subprocess (JIT_CONFIG = a policy YAML with one target
per group, JIT_DATABASE_URL = the scratch database, AWS_ENDPOINT_URL = moto, dummy
credentials). From just before the process is spawned until all 1,000 overdue grants are
CLOSED, taken from the largest closed_at in the database (the poll, every 50 ms with an
engine that never takes SQLite's write lock, only notices it). Peak RSS is the child's VmHWM
from /proc just before SIGTERM. (getrusage(RUSAGE_CHILDREN).ru_maxrss is printed too but is
not used: Linux counts in it the parent's RSS that the child inherits at fork, before exec,
so it shows this benchmark process's size, not jit's.)
Targets: all closed within 2 s of start; peak RSS under 150 MB. Takes 70-85 s today: about
30 s writing the 100,000 grants (400,000 audit events), the rest waiting for jit to drain.
"""

from __future__ import annotations

import os
import random
import resource
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

if __package__ in (None, ""):  # run as a file: make `bench` and `jitcore` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    REPO_ROOT,
    RULES_PER_GROUP,
    Environment,
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
    policy_data,
    process_cpu_seconds,
    progress,
    reader_engine,
    seeds,
)
from jitcore.domain import Status
from jitcore.providers.aws import AwsProvider
from jitcore.store import make_engine

TOTAL = 100_000
OVERDUE = 1_000
TIME_TARGET = 2.0  # s
RSS_TARGET_MB = 150.0
TIMEOUT = 60.0


def proc_status_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


@dataclass(frozen=True)
class Watched:
    """What `jit run` did from its start until every overdue grant was closed (or not)."""

    spawned_at: datetime
    observed: float | None  # s until the poll saw every overdue grant CLOSED
    hwm_kb: int  # its peak RSS just before SIGTERM (0 if it had died)
    cpu: float  # s, until all closed (nan if it had died)
    moto_cpu: float  # s, the same window
    code: int
    output: str


def seed(env: Environment, report: Report) -> tuple[Any, list[str], Path]:
    """OVERDUE real rules in moto, and TOTAL grants in the database: the EC2 client, the
    groups and the policy file."""
    ec2 = ec2_client()
    groups = create_groups(ec2, -(-OVERDUE // RULES_PER_GROUP))
    config = env.tmp / "jit.yaml"
    config.write_text(yaml.safe_dump(policy_data(groups), sort_keys=False))
    writer = make_engine(env.database_url)
    setup = time.monotonic()
    start = now()
    overdue = seeds(1, OVERDUE, groups,
                    [start - timedelta(seconds=random.uniform(1, 1800)) for _ in range(OVERDUE)])
    progress(f"opening {OVERDUE} real rules in {len(groups)} groups")
    open_rules(AwsProvider(), build_policy(groups), overdue)
    progress(f"inserting {TOTAL} grants with rule handles and audit history")
    later = [start + timedelta(seconds=random.uniform(600, 3300))
             for _ in range(TOTAL - OVERDUE)]
    insert_grants(writer, overdue)
    insert_grants(writer, seeds(OVERDUE + 1, TOTAL - OVERDUE, groups, later))
    writer.dispose()
    report.context["setup_s"] = round(time.monotonic() - setup, 1)
    return ec2, groups, config


def watch(env: Environment, config: Path, db: Any) -> Watched:
    """Start `python -m jitcore run`, poll until every overdue grant is CLOSED, SIGTERM it."""
    child_env = {**os.environ, "JIT_CONFIG": str(config),
                 "JIT_DATABASE_URL": env.database_url}
    log_path = env.tmp / "jit-run.log"
    progress("starting `python -m jitcore run`")
    with log_path.open("wb") as log:
        moto0 = env.moto.cpu_seconds()
        spawned_at, t0 = now(), time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "jitcore", "run"], cwd=REPO_ROOT,
                                env=child_env, stdout=log, stderr=subprocess.STDOUT)
        observed = None
        while time.monotonic() - t0 < TIMEOUT and proc.poll() is None:
            if count_status(db, 1, OVERDUE, Status.CLOSED) == OVERDUE:
                observed = time.monotonic() - t0
                break
            time.sleep(0.05)
        alive = proc.poll() is None
        hwm_kb = proc_status_kb(proc.pid, "VmHWM") if alive else 0
        cpu = process_cpu_seconds(proc.pid) if alive else float("nan")
        moto_cpu = env.moto.cpu_seconds() - moto0
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
    return Watched(spawned_at, observed, hwm_kb, cpu, moto_cpu, code,
                   log_path.read_text(errors="replace"))


def run(env: Environment) -> Report:
    report = Report("recovery")
    report.context.update(database=database_label(env.database_url),
                          moto="separate process (python -m moto.server)",
                          grants=TOTAL, overdue=OVERDUE, command="python -m jitcore run")
    ec2, groups, config = seed(env, report)
    db = reader_engine(env.database_url)
    watched = watch(env, config, db)
    rusage_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # moto is still running
    if watched.observed is None:
        progress(f"not all overdue grants closed; jit run exited {watched.code}:\n"
                 f"{watched.output[-3000:]}")

    times = closed_times(db, list(range(1, OVERDUE + 1)))
    closed_at = [closed for _, closed in times.values()]
    nan = float("nan")
    all_closed = (max(closed_at) - watched.spawned_at).total_seconds() if closed_at else nan
    first = (min(closed_at) - watched.spawned_at).total_seconds() if closed_at else nan
    report.add("overdue grants closed", len(times), f"of {OVERDUE}")
    report.add("start -> first close", first, "s")
    report.add("start -> all closed (closed_at in DB)", all_closed, "s",
               target=f"< {TIME_TARGET:.0f} s",
               met=len(times) == OVERDUE and all_closed < TIME_TARGET)
    report.add("start -> all closed (seen by 50 ms poll)",
               watched.observed if watched.observed is not None else nan, "s")
    report.add("close rate after the first close",
               (len(times) - 1) / (all_closed - first) if all_closed > first else nan,
               "closes/s")
    report.add("peak RSS of jit run (VmHWM)", watched.hwm_kb / 1024, "MB",
               target=f"< {RSS_TARGET_MB:.0f} MB", met=0 < watched.hwm_kb / 1024 < RSS_TARGET_MB)
    report.add("ru_maxrss of children (see docstring)", rusage_kb / 1024, "MB")
    report.add("CPU of jit run until all closed", watched.cpu, "s")
    report.add("CPU of moto in the same window", watched.moto_cpu, "s")
    report.context["jit_run_exit_code"] = watched.code
    report.context["jit_run_stopped_cleanly"] = "jit engine stopped" in watched.output
    report.context["jit_rules_left_in_moto"] = count_jit_rules(ec2, groups)
    report.context["not_due_still_active"] = count_status(db, OVERDUE + 1, TOTAL, Status.ACTIVE)
    db.dispose()
    return report


def main(argv: list[str] | None = None) -> None:
    args = argument_parser(__doc__).parse_args(argv)
    with environment(args.database_url) as env:
        report = run(env)
    report.emit(args.json)


if __name__ == "__main__":
    main()
