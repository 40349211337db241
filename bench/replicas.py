"""Replicas: 1, 2 and 3 `jit run` processes on one PostgreSQL draining 5,000 due grants.

    .venv/bin/python -m bench.replicas --database-url postgresql+psycopg://... [--json]
    .venv/bin/python bench/replicas.py --database-url postgresql+psycopg://...   (the same)

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

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

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


def run_one(env: Environment, replicas: int, report: Report) -> float:
    """Set up from scratch, drain with `replicas` processes, add the figures; closes/s."""
    label = f"{replicas} replica{'s' if replicas > 1 else ''}"
    key = f"replicas_{replicas}"
    ec2 = ec2_client()
    groups = create_groups(ec2, DUE // RULES_PER_GROUP)
    config = env.tmp / "jit.yaml"
    config.write_text(yaml.safe_dump(policy_data(groups), sort_keys=False))
    writer, db = make_engine(env.database_url), reader_engine(env.database_url)

    setup = time.monotonic()
    due = seeds(1, DUE, groups, [now()] * DUE)  # the due instant is set just before writing
    progress(f"{label}: opening {DUE} real rules in {len(groups)} groups")
    open_rules(AwsProvider(), build_policy(groups), due)
    report.context[f"{key}_setup_s"] = round(time.monotonic() - setup, 1)

    child_env = {**os.environ, "JIT_CONFIG": str(config), "JIT_DATABASE_URL": env.database_url,
                 "JIT_LOG_FORMAT": "json"}
    progress(f"{label}: starting {replicas} x `python {' '.join(COMMAND)}`")
    procs = [Replica(i + 1, env.tmp, child_env) for i in range(replicas)]
    problems: list[str] = []
    try:
        started = time.monotonic()
        while not all(p.running() for p in procs):
            dead = [p for p in procs if p.process.poll() is not None]
            if dead or time.monotonic() - started > START_TIMEOUT:
                tail = "\n".join((p.stderr() + p.stdout())[-2000:] for p in dead or procs)
                raise RuntimeError(f"{label}: not every replica started:\n{tail}")
            time.sleep(0.05)
        report.context[f"{key}_start_s"] = round(time.monotonic() - started, 2)
        time.sleep(SETTLE)

        due_at = now() + LEAD
        for seed in due:
            seed.expires_at, seed.opened_at = due_at, due_at - timedelta(minutes=30)
        write = time.monotonic()
        insert_grants(writer, due)
        report.context[f"{key}_rows_written_s"] = round(time.monotonic() - write, 2)
        if now() > due_at - MARGIN:
            raise RuntimeError(f"{label}: the rows were not written {MARGIN.total_seconds()} s "
                               "ahead of T; raise LEAD")
        progress(f"{label}: {DUE} grants due at T = {due_at:%H:%M:%S.%f}")

        wait_until(due_at)
        cpu0, moto0 = sum(p.cpu_seconds() for p in procs), env.moto.cpu_seconds()
        deadline = time.monotonic() + DRAIN_TIMEOUT
        done = False
        while time.monotonic() < deadline and all(p.process.poll() is None for p in procs):
            if count_status(db, 1, DUE, Status.CLOSED) == DUE:
                done = True
                break
            time.sleep(0.1)
        alive = all(p.process.poll() is None for p in procs)
        cpu = sum(p.cpu_seconds() for p in procs) - cpu0 if alive else float("nan")
        moto_cpu = env.moto.cpu_seconds() - moto0
        if not done:
            problems.append(f"not all {DUE} grants closed within {DRAIN_TIMEOUT:.0f} s"
                            + ("" if alive else " (a replica died)"))
    finally:
        codes = [p.stop() for p in procs]

    times = closed_times(db, list(range(1, DUE + 1)))
    lateness = [(closed - expires).total_seconds() for expires, closed in times.values()]
    closed_at = [closed for _, closed in times.values()]
    last = max(closed_at) if closed_at else None
    first = min(closed_at) if closed_at else None
    drain = (last - due_at).total_seconds() if last else float("nan")
    rate = len(times) / drain if last else float("nan")

    events = closed_events(db, 1, DUE)
    once = sum(1 for n in events.values() if n == 1)
    with Session(db) as session:
        chain = audit.verify(session)
    left = count_jit_rules(ec2, groups)
    per_replica = [p.closes() for p in procs]
    for p in procs:
        problems += [f"replica {p.index}: {line[:300]}" for line in p.problems()]
        if BANNER.replace("running", "stopped") not in p.stderr():
            problems.append(f"replica {p.index}: no 'jit engine stopped' on stderr")
    if any(code != 0 for code in codes):
        problems.append(f"exit codes {codes}")
    if len(times) != DUE or once != DUE or len(events) != DUE:
        problems.append(f"{len(times)} CLOSED, {once} with exactly one closed event, "
                        f"{len(events)} with any")
    if not chain.ok:
        problems.append(f"audit chain broken at #{chain.bad_seq}: {chain.problem}")
    if left:
        problems.append(f"{left} jit rules left in moto")
    if sum(per_replica) != len(times):
        problems.append(f"the replicas' logs count {sum(per_replica)} closes, the database "
                        f"{len(times)}")
    idle = [p.index for p, n in zip(procs, per_replica, strict=True) if n == 0]
    writer.dispose()
    db.dispose()

    report.add(f"{label}: closed", len(times), f"of {DUE}")
    report.add(f"{label}: lateness p50", percentile(lateness, 50), "s")
    report.add(f"{label}: lateness p99", percentile(lateness, 99), "s")
    report.add(f"{label}: lateness max", max(lateness) if lateness else float("nan"), "s")
    report.add(f"{label}: drain time (T -> last close)", drain, "s")
    report.add(f"{label}: work time (first -> last)",
               (last - first).total_seconds() if last and first else float("nan"), "s")
    report.add(f"{label}: closes per second", rate, "closes/s")
    report.add(f"{label}: CPU of the replicas", cpu, "s")
    report.add(f"{label}: CPU of moto", moto_cpu, "s")
    closes = max(len(times), 1)
    report.add(f"{label}: replica CPU per close", cpu / closes * 1000, "ms")
    report.add(f"{label}: moto CPU per close", moto_cpu / closes * 1000, "ms")
    report.add(f"{label}: replicas+moto CPU / drain", (cpu + moto_cpu) / drain, "cores")
    report.context[f"{key}_closes_each"] = "/".join(str(n) for n in per_replica)
    report.context[f"{key}_exit_codes"] = codes
    warnings = sum((p.warnings() for p in procs), Counter())
    report.context[f"{key}_log_warnings"] = "; ".join(
        f"{n} x {message}" for message, n in warnings.most_common()) or "none"
    report.context[f"{key}_audit_events_verified"] = chain.checked
    report.context[f"{key}_checks"] = "; ".join(problems) if problems else "all passed"
    if idle:
        progress(f"{label}: replica(s) {idle} closed nothing")
    if problems:
        progress(f"{label}: CHECKS FAILED: {'; '.join(problems)[:3000]}")
    progress(f"{label}: drained in {drain:.2f}s ({rate:.0f} closes/s); closes per replica "
             f"{per_replica}")
    return rate


def main(argv: list[str] | None = None) -> None:
    parser = argument_parser(__doc__)
    args = parser.parse_args(argv)
    if args.database_url is None or make_url(args.database_url).get_backend_name() != "postgresql":
        parser.error("PostgreSQL is required (--database-url postgresql+psycopg://...): on "
                     "SQLite only one process may run jit's engine, so there are no replicas")
    report = Report("replicas")
    report.context.update(database=database_label(args.database_url),
                          moto="separate process (python -m moto.server), fresh for each N",
                          due_grants=DUE, groups=DUE // RULES_PER_GROUP,
                          command="python " + " ".join(COMMAND),
                          sweep_batch=os.environ.get(BATCH_ENV) or "100 (default)",
                          lease=os.environ.get(LEASE_ENV) or "60s (default)",
                          cpus=os.cpu_count(),
                          load_average_at_start=" ".join(f"{x:.2f}" for x in os.getloadavg()))
    started = time.monotonic()
    rates: dict[int, float] = {}
    for replicas in REPLICAS:
        with environment(args.database_url) as env:
            report.context["database"] = database_label(env.database_url)
            rates[replicas] = run_one(env, replicas, report)
            report.context[f"replicas_{replicas}_moto_peak_rss_mb"] = round(
                proc_status_kb(env.moto.process.pid, "VmHWM") / 1024)
    for replicas in REPLICAS[1:]:
        report.add(f"scaling: closes/s {replicas} vs 1 replica", rates[replicas] / rates[1],
                   "x")
    report.context["total_s"] = round(time.monotonic() - started, 1)
    report.emit(args.json)
    if any(v != "all passed" for k, v in report.context.items() if k.endswith("_checks")):
        sys.exit(1)


if __name__ == "__main__":
    main()
