"""Shared set-up for the benchmarks: a moto server, policies, scratch databases, bulk grants.

Not a benchmark itself. The moto server always runs as a separate process
(`python -m moto.server`), so moto's CPU time is not charged to the process being measured;
on a small machine it still competes for the same cores, which is why every benchmark also
reports how much CPU moto used in the measured window.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, func, insert, select, text
from sqlalchemy.engine import make_url

from jitcore import audit
from jitcore.domain import EventKind, Status, format_duration
from jitcore.policy import Policy
from jitcore.policy_file import parse_policy
from jitcore.ports import RuleSpec
from jitcore.providers.aws import AwsProvider
from jitcore.service import ENGINE_ACTOR
from jitcore.store import make_engine, upgrade
from jitcore.store.models import AuditEvent, Grant, RuleHandle

REPO_ROOT = Path(__file__).resolve().parent.parent
AWS_REGION = "us-east-1"
REQUESTER = "U0BENCHREQ"
APPROVER = "U0BENCHAPR"
SERVICE = "ssh"
PORT = 22
PROTOCOL = "tcp"
APPROVAL_TIMEOUT = timedelta(hours=1)
RULES_PER_GROUP = 50  # moto (like AWS) refuses a 61st inbound rule in a VPC security group
_FIRST_SOURCE = int(IPv4Address("11.0.0.1"))  # public space, outside the policy's private ranges

_started = time.monotonic()


def progress(message: str) -> None:
    """Progress goes to stderr, so stdout carries only the figures."""
    print(f"[{time.monotonic() - _started:7.2f}s] {message}", file=sys.stderr, flush=True)


# ---- command line and report ----------------------------------------------------------------


def argument_parser(doc: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=(doc or "").split("\n\n")[0],
        epilog="Progress is written to stderr; the figures to stdout.",
    )
    parser.add_argument(
        "--database-url", metavar="URL",
        help="a PostgreSQL server (e.g. postgresql+psycopg://postgres@127.0.0.1:55432/postgres):"
             " a scratch database is created there and dropped afterwards. A sqlite:/// URL is"
             " used as given (the file must be new). Default: a new SQLite file in a temp dir.",
    )
    parser.add_argument("--json", action="store_true",
                        help="print one JSON summary on stdout instead of plain lines")
    return parser


@dataclass(slots=True)
class Figure:
    name: str
    value: float
    unit: str
    target: str | None = None
    met: bool | None = None


@dataclass(slots=True)
class Report:
    bench: str
    figures: list[Figure] = field(default_factory=list)
    context: dict[str, Any] = field(default_factory=dict)

    def add(self, name: str, value: float, unit: str, *, target: str | None = None,
            met: bool | None = None) -> None:
        self.figures.append(Figure(name, value, unit, target, met))

    def as_dict(self) -> dict[str, Any]:
        """The JSON summary `emit(as_json=True)` prints, as a dict."""
        return {
            "bench": self.bench,
            "figures": {f.name: {"value": round(f.value, 6), "unit": f.unit,
                                 "target": f.target, "met": f.met} for f in self.figures},
            "context": self.context,
        }

    def emit(self, as_json: bool) -> None:
        if as_json:
            print(json.dumps(self.as_dict(), indent=2, sort_keys=True, default=str))
            return
        print(f"== {self.bench}")
        for key, value in self.context.items():
            print(f"   {key}: {value}")
        for f in self.figures:
            line = f"{f.name:<40} {_number(f.value):>10} {f.unit}"
            if f.target is not None:
                verdict = "MET" if f.met else "MISSED"
                line = f"{line:<60} target {f.target}: {verdict}"
            print(line)


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:.3f}"


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


# ---- moto ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def use_aws_endpoint(endpoint: str) -> None:
    """Point boto3 (here and in every child process) at moto with dummy credentials."""
    os.environ.update({
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": AWS_REGION,
        "AWS_CONFIG_FILE": "/nonexistent/jit-bench/aws-config",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/jit-bench/aws-credentials",
        "AWS_EC2_METADATA_DISABLED": "true",
    })
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_ENDPOINT_URL_EC2",
                 "AWS_ENDPOINT_URL_STS", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS"):
        os.environ.pop(name, None)


class MotoServer:
    """`python -m moto.server` in a child process on a free local port."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = (log_dir / "moto.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=log_dir,
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto server exited with {self.process.returncode}")
            try:
                with urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"moto server did not answer on {self.url} within {timeout}s")

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.process.pid)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process (all its threads), from /proc."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(slots=True)
class Environment:
    """What every benchmark starts from: a temp dir, moto, the AWS environment and a database."""

    tmp: Path
    moto: MotoServer
    database_url: str


@contextmanager
def environment(database_url: str | None) -> Iterator[Environment]:
    with tempfile.TemporaryDirectory(prefix="jit-bench-") as tmp_name:
        tmp = Path(tmp_name)
        progress("starting moto server (separate process)")
        moto = MotoServer(tmp)
        try:
            use_aws_endpoint(moto.url)
            with scratch_database(database_url, tmp) as url:
                yield Environment(tmp, moto, url)
        finally:
            moto.stop()


@contextmanager
def scratch_database(url: str | None, tmp: Path) -> Iterator[str]:
    """A new, migrated database; a PostgreSQL one is dropped again afterwards."""
    if url is None:
        url = f"sqlite:///{tmp / 'jit.db'}"
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        yield url
        return
    name = f"jit_bench_{os.getpid()}"
    admin = make_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    scratch = parsed.set(database=name).render_as_string(hide_password=False)
    try:
        engine = make_engine(scratch)
        upgrade(engine)
        engine.dispose()
        yield scratch
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def reader_engine(url: str) -> Engine:
    """An engine for the benchmark's own polling. On SQLite it does not use jit's
    BEGIN IMMEDIATE (make_engine), so polling never takes the write lock from the engine."""
    if make_url(url).get_backend_name() == "sqlite":
        return create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
    return make_engine(url)


def database_label(url: str) -> str:
    parsed = make_url(url)
    return "sqlite file" if parsed.get_backend_name() == "sqlite" else (
        f"postgresql {parsed.host}:{parsed.port}/{parsed.database}")


# ---- security groups and policy ---------------------------------------------------------


def ec2_client() -> Any:
    import boto3

    return boto3.client("ec2", region_name=AWS_REGION)


def create_groups(ec2: Any, count: int, prefix: str = "bench") -> list[str]:
    """`count` empty security groups in one new VPC."""
    vpc_id = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    return [
        ec2.create_security_group(GroupName=f"{prefix}-{i:02d}", Description=f"{prefix} {i}",
                                  VpcId=vpc_id)["GroupId"]
        for i in range(count)
    ]


def target_name(index: int) -> str:
    return f"bench-{index:02d}"


def policy_data(groups: Sequence[str]) -> dict[str, Any]:
    """One AWS target per security group, ssh up to 1 h, named approver, anyone requests."""
    return {
        "slack": {"approvals_channel": "C0BENCHAPR", "audit_channel": "C0BENCHAUD"},
        "defaults": {"max_duration": "3h", "approval_timeout": "1h",
                     "requesters": ["*"], "approvers": [APPROVER]},
        "targets": {
            target_name(i): {
                "aws": {"region": AWS_REGION, "security_group_id": group},
                "ports": {SERVICE: {"port": PORT, "max_duration": "1h"}},
            }
            for i, group in enumerate(groups)
        },
    }


def build_policy(groups: Sequence[str]) -> Policy:
    return parse_policy(policy_data(groups), "bench-policy")


def source_for(n: int) -> str:
    """A distinct public /32 for every n."""
    return f"{IPv4Address(_FIRST_SOURCE + n)}/32"


def count_jit_rules(ec2: Any, groups: Sequence[str]) -> int:
    """Inbound rules carrying jit's grant tag in these groups."""
    paginator = ec2.get_paginator("describe_security_group_rules")
    total = 0
    for group in groups:
        for page in paginator.paginate(Filters=[{"Name": "group-id", "Values": [group]},
                                                {"Name": "tag-key", "Values": ["jit:grant"]}]):
            total += sum(1 for r in page["SecurityGroupRules"] if not r["IsEgress"])
    return total


# ---- grants written straight into the database ------------------------------------------


@dataclass(slots=True)
class GrantSeed:
    """An ACTIVE grant as the service leaves it after request -> approve -> open."""

    id: int
    target: str
    group_id: str
    source: str
    opened_at: datetime
    expires_at: datetime
    rule_ref: str | None = None  # None: a realistic id, but no rule behind it in moto

    @property
    def ref(self) -> str:
        return self.rule_ref or f"sgr-{self.id:017x}"


def seeds(first_id: int, count: int, groups: Sequence[str], expires: Sequence[datetime],
          duration: timedelta = timedelta(minutes=30)) -> list[GrantSeed]:
    """`count` grants from `first_id` on, spread round-robin over the groups' targets."""
    return [
        GrantSeed(id=gid, target=target_name(i % len(groups)), group_id=groups[i % len(groups)],
                  source=source_for(gid), opened_at=expires[i] - duration,
                  expires_at=expires[i])
        for i, gid in enumerate(range(first_id, first_id + count))
    ]


def open_rules(provider: AwsProvider, policy: Policy, grants: Sequence[GrantSeed],
               workers: int = 8) -> None:
    """Open each grant's real rule in moto (tagged with its id) and record the rule id."""

    def one(seed: GrantSeed) -> None:
        target = policy.targets[seed.target]
        spec = RuleSpec(grant_id=seed.id, target=target, port=target.ports[SERVICE],
                        source=seed.source, description=f"jit grant #{seed.id} for {REQUESTER}")
        opened = provider.open_rule(spec)
        seed.rule_ref = opened.ref

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(one, grants))


def next_grant_id(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.coalesce(func.max(Grant.id), 0))).scalar_one()) + 1


def insert_grants(engine: Engine, grants: Sequence[GrantSeed], chunk: int = 5000) -> None:
    """Write ACTIVE grants, their rule handles and their audit history (requested, approved,
    opening, opened, hash-chained onto the current head) exactly as the service would have.
    Rule handle ids equal grant ids."""
    with engine.begin() as conn:  # engine from make_engine: SQLite takes the write lock here
        if conn.dialect.name == "postgresql":  # the lock audit.append takes for the chain head
            conn.execute(select(func.pg_advisory_xact_lock(audit._CHAIN_LOCK_KEY)))
        head = conn.execute(select(AuditEvent.seq, AuditEvent.hash)
                            .order_by(AuditEvent.seq.desc()).limit(1)).first()
        seq, prev = (head[0], head[1]) if head else (0, audit.GENESIS)
        for start in range(0, len(grants), chunk):
            part = grants[start:start + chunk]
            events: list[dict[str, Any]] = []
            for g in part:
                for row in _history(g):
                    seq += 1
                    row["seq"] = seq
                    row["prev_hash"] = prev
                    row["hash"] = prev = audit.chain_hash(prev, _event_body(row))
                    row["details"] = audit.canonical_json(row["details"])
                    events.append(row)
            conn.execute(insert(RuleHandle), [_handle_row(g) for g in part])
            conn.execute(insert(Grant), [_grant_row(g) for g in part])
            conn.execute(insert(AuditEvent), events)
        if conn.dialect.name == "postgresql":  # explicit ids do not advance the sequences
            for table in ("grants", "rule_handles"):
                conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                  f"(SELECT max(id) FROM {table}))"))


def _times(g: GrantSeed) -> tuple[datetime, datetime, datetime]:
    created = g.opened_at - timedelta(seconds=40)
    decided = g.opened_at - timedelta(seconds=1)
    opening = g.opened_at - timedelta(milliseconds=20)
    return created, decided, opening


def _grant_row(g: GrantSeed) -> dict[str, Any]:
    created, decided, _ = _times(g)
    return {
        "id": g.id, "status": Status.ACTIVE.value, "requester": REQUESTER, "target": g.target,
        "cloud": "aws", "service": SERVICE, "port": PORT, "protocol": PROTOCOL,
        "source": g.source, "duration_s": int((g.expires_at - g.opened_at).total_seconds()),
        "reason": "benchmark", "created_at": created, "lapses_at": created + APPROVAL_TIMEOUT,
        "decided_by": APPROVER, "decided_at": decided, "decision_note": None,
        "opened_at": g.opened_at, "expires_at": g.expires_at, "closed_at": None,
        "close_reason": None, "closed_by": None, "next_attempt_at": None, "attempts": 0,
        "last_error": None, "rule_handle_id": g.id,
    }


def _handle_row(g: GrantSeed) -> dict[str, Any]:
    return {"id": g.id, "cloud": "aws", "scope": g.group_id, "ref": g.ref, "port": PORT,
            "protocol": PROTOCOL, "source": g.source, "owned": True, "created_at": g.opened_at,
            "removed_at": None}


def _history(g: GrantSeed) -> list[dict[str, Any]]:
    created, decided, opening = _times(g)
    duration = g.expires_at - g.opened_at

    def event(at: datetime, actor: str, kind: EventKind, **details: Any) -> dict[str, Any]:
        return {"at": at, "actor": actor, "action": kind.value, "grant_id": g.id,
                "target": g.target, "port": PORT, "source": g.source, "details": details}

    return [
        event(created, REQUESTER, EventKind.REQUESTED, status=Status.PENDING.value,
              duration=format_duration(duration), reason="benchmark"),
        event(decided, APPROVER, EventKind.APPROVED, status=Status.APPROVED.value),
        event(opening, ENGINE_ACTOR, EventKind.OPENING, status=Status.OPENING.value,
              retry=False),
        event(g.opened_at, ENGINE_ACTOR, EventKind.OPENED, status=Status.ACTIVE.value,
              scope=g.group_id, rule=g.ref, created=True, owned=True,
              expires_at=g.expires_at.isoformat()),
    ]


def _event_body(row: dict[str, Any]) -> dict[str, Any]:
    """What audit.event_body returns for this row once stored."""
    at = row["at"].astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    return {"seq": row["seq"], "at": at, "actor": row["actor"], "action": row["action"],
            "grant_id": row["grant_id"], "target": row["target"], "port": row["port"],
            "source": row["source"], "details": row["details"]}


def closed_times(engine: Engine, ids: Sequence[int]) -> dict[int, tuple[datetime, datetime]]:
    """For the CLOSED grants among `ids`: id -> (expires_at, closed_at)."""
    out: dict[int, tuple[datetime, datetime]] = {}
    with engine.connect() as conn:
        for start in range(0, len(ids), 900):
            rows = conn.execute(
                select(Grant.id, Grant.expires_at, Grant.closed_at)
                .where(Grant.id.in_(ids[start:start + 900]),
                       Grant.status == Status.CLOSED.value))
            for gid, expires, closed in rows:
                if expires is not None and closed is not None:
                    out[gid] = (expires, closed)
    return out


def count_status(engine: Engine, ids_from: int, ids_to: int, status: Status) -> int:
    with engine.connect() as conn:
        return int(conn.execute(
            select(func.count()).select_from(Grant)
            .where(Grant.id.between(ids_from, ids_to), Grant.status == status.value)
        ).scalar_one())


def now() -> datetime:
    return datetime.now(UTC)
