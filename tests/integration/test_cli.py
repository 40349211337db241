"""The `jit` admin command as an operator uses it: click's runner in-process, against real
SQLite and PostgreSQL databases and real boto3 talking to moto's server over HTTP."""

from __future__ import annotations

import json
import socket
import traceback
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result
from sqlalchemy import select

from jitcore.cli import cli
from jitcore.domain import Status
from jitcore.policy_file import load_policy
from jitcore.providers.aws import AwsProvider
from jitcore.service import JitService
from jitcore.store import Store
from jitcore.store.db import SCHEMA_REVISION, head_revision
from jitcore.store.models import AuditEvent
from tests.support.aws import jit_rule_ids, plant_marked_rule
from tests.support.fixtures import ManualClock, RecordingNotifier, new_postgres_database
from tests.support.policies import APPROVER, AUTO_USER, REQUESTER, aws_policy_data

SOURCE = "203.0.113.7"
GHOST_GROUP = "sg-0000000000000dead"  # named by the policy, never created in moto
GRANT_KEYS = {
    "id", "status", "requester", "target", "cloud", "service", "port", "protocol", "source",
    "duration", "reason", "created_at", "decided_by", "opened_at", "expires_at", "closed_at",
    "close_reason", "rule", "error", "entry",
}


def jit(*args: str, env: Mapping[str, str | None] | None = None) -> Result:
    """Run `jit ARGS` in-process; anything but a clean exit (0, 1 or 2) fails the test."""
    result = CliRunner().invoke(cli, list(args), env=env, prog_name="jit")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        trace = "".join(traceback.format_exception(result.exception))
        raise AssertionError(f"`jit {' '.join(args)}` raised instead of exiting:\n{trace}")
    assert "Traceback" not in result.output
    return result


def free_port() -> int:
    """A local TCP port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---- help ---------------------------------------------------------------------------------

HELP = {
    (): ["just-in-time network access to cloud VMs", "check", "db", "grants", "revoke",
         "reconcile", "audit", "run", "--config", "--database-url"],
    ("check",): ["Validate the policy file and print what it allows", "--config"],
    ("db",): ["Database schema", "upgrade"],
    ("db", "upgrade"): ["Create or migrate the database schema to the latest version"],
    ("grants",): ["List requests and grants", "--active", "--json", "--limit"],
    ("revoke",): ["Close an active grant now", "GRANT_ID", "--reason",
                  "recorded in the audit log"],
    ("reconcile",): ["Remove rules carrying jit's marker that no live grant is behind",
                     "--dry-run"],
    ("audit",): ["tamper-evident audit log", "verify", "export"],
    ("audit", "verify"): ["Check the hash chain", "first event that does not hold"],
    ("audit", "export"): ["JSON Lines", "--since", "--output"],
    ("run",): ["Run the expiry engine alone", "SIGTERM", "--interval", "--reconcile-every"],
}


@pytest.mark.parametrize("command", list(HELP), ids=lambda c: " ".join(c) or "jit")
def test_help_describes_every_command(command: tuple[str, ...]) -> None:
    for flag in ("--help", "-h"):
        result = jit(*command, flag)
        assert result.exit_code == 0, result.output
        assert result.stdout.startswith(f"Usage: jit {' '.join(command)}".rstrip())
        for phrase in HELP[command]:
            assert phrase in result.stdout, f"{phrase!r} missing from `jit {command} {flag}`"
        assert result.stderr == ""


def test_version() -> None:
    result = jit("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == "jit, version 0.1.0"


# ---- check --------------------------------------------------------------------------------

GOOD_POLICY = """\
slack:
  approvals_channel: C0123APPROVE
  audit_channel: C0123AUDIT
defaults:
  max_duration: 3h
  approval_timeout: 1h
  requesters: ["*"]
  approvers: ["U0LEAD1", "@sre-leads"]
targets:
  prod-db:
    aws: {region: us-east-1, security_group_id: sg-0123456789abcdef0}
    ports:
      ssh: {port: 22, max_duration: 1h, allowed_sources: ["198.51.100.0/24"]}
      rdp: {port: 3389, max_duration: 5h}
    auto_approve: {users: ["U0ONCALL"], max_duration: 30m}
  web-vm:
    azure:
      subscription_id: 00000000-0000-0000-0000-000000000000
      resource_group: rg-web
      network_security_group: nsg-web
      destination: 10.0.1.4
    max_duration: 2h
    ports: {rdp: 3389, winrm: 5985}
    approvers: ["@windows-admins"]
"""


def _sections(output: str) -> dict[str, list[str]]:
    """`jit check` output split into one block of lines per target, keyed by its name."""
    blocks: dict[str, list[str]] = {}
    for block in output.strip().split("\n\n")[1:]:
        head, *lines = block.splitlines()
        blocks[head.split()[0]] = [" ".join(line.split()) for line in lines]
    return blocks


def test_check_valid_policy_prints_summary(tmp_path: Path) -> None:
    policy = tmp_path / "jit.yaml"
    policy.write_text(GOOD_POLICY)

    result = jit("check", "--config", str(policy))
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0] == f"{policy}: ok, 2 target(s)"
    assert lines[1] == "slack: approvals C0123APPROVE, audit C0123AUDIT"
    assert "prod-db  [aws us-east-1 sg-0123456789abcdef0]" in lines
    assert ("web-vm  [azure 00000000-0000-0000-0000-000000000000/rg-web/nsg-web -> 10.0.1.4]"
            in lines)

    blocks = _sections(result.stdout)
    assert blocks["prod-db"] == [
        "ssh 22/tcp up to 1h from 198.51.100.0/24",
        # The port asks for 5h; the defaults' 3h is what a request can actually get.
        "rdp 3389/tcp up to 3h from 0.0.0.0/0, ::/0",
        "requesters: *",
        "approvers: U0LEAD1, @sre-leads",
        "auto-approve: U0ONCALL up to 30m",
    ]
    assert blocks["web-vm"] == [
        "rdp 3389/tcp up to 2h from 0.0.0.0/0, ::/0",
        "winrm 5985/tcp up to 2h from 0.0.0.0/0, ::/0",
        "requesters: *",
        "approvers: @windows-admins",
    ]


def test_check_finds_the_policy_the_usual_ways(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    policy = tmp_path / "site.yaml"
    policy.write_text(GOOD_POLICY)
    by_group_option = jit("--config", str(policy), "check")
    by_env = jit("check", env={"JIT_CONFIG": str(policy)})
    for result in (by_group_option, by_env):
        assert result.exit_code == 0, result.output
        assert result.stdout.startswith(f"{policy}: ok, 2 target(s)\n")

    monkeypatch.chdir(tmp_path)
    (tmp_path / "jit.yaml").write_text(GOOD_POLICY.split("  web-vm:")[0])
    default = jit("check", env={"JIT_CONFIG": None})
    assert default.exit_code == 0, default.output
    assert default.stdout.startswith("./jit.yaml: ok, 1 target(s)\n")


def test_check_bad_policy_names_file_and_field(tmp_path: Path) -> None:
    policy = tmp_path / "jit.yaml"
    policy.write_text(GOOD_POLICY.replace("max_duration: 1h,", "max_duration: 25h,"))

    result = jit("check", "--config", str(policy))
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == (f"error: {policy}: targets.prod-db.ports.ssh.max_duration: "
                             "25h is longer than the 24h limit\n")


def test_check_reports_every_problem(tmp_path: Path) -> None:
    policy = tmp_path / "jit.yaml"
    policy.write_text(GOOD_POLICY.replace("C0123APPROVE", "general")
                      .replace("port: 22,", "port: 99999,"))

    result = jit("check", "-c", str(policy))
    assert result.exit_code == 1
    problems = result.stderr.splitlines()
    assert problems[0].startswith(f"error: {policy}: slack.approvals_channel: 'general'")
    assert any(p.startswith(f"{policy}: targets.prod-db.ports.ssh.port: 99999 is out of range")
               for p in problems[1:]), result.stderr


def test_check_unparsable_yaml(tmp_path: Path) -> None:
    policy = tmp_path / "jit.yaml"
    policy.write_text("targets: [\n")
    result = jit("check", "-c", str(policy))
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: {policy}: line 2, column 1: ")


def test_check_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    result = jit("check", "--config", str(missing))
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == (f"error: {missing}: file not found "
                             "(set JIT_CONFIG or pass --config)\n")


# ---- the database ------------------------------------------------------------------------


def test_schema_revision_is_alembics_head() -> None:
    assert head_revision() is not None
    assert head_revision() == SCHEMA_REVISION


@pytest.fixture(params=["sqlite", "postgres"])
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database nobody has migrated: a new SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    with new_postgres_database("jit_cli_fresh") as url:
        yield url


def test_db_upgrade_creates_schema(empty_db_url: str, tmp_path: Path) -> None:
    policy = tmp_path / "jit.yaml"
    policy.write_text(GOOD_POLICY)

    first = jit("--database-url", empty_db_url, "db", "upgrade")
    assert first.exit_code == 0, first.output
    assert first.stdout == f"database at revision {SCHEMA_REVISION}\n"
    again = jit("db", "upgrade", env={"JIT_DATABASE_URL": empty_db_url})
    assert again.exit_code == 0, again.output
    assert again.stdout == f"database at revision {SCHEMA_REVISION}\n"

    store = Store.from_url(empty_db_url)
    try:
        store.check_schema()  # raises unless at head
    finally:
        store.dispose()
    listed = jit("--database-url", empty_db_url, "--config", str(policy), "grants")
    assert (listed.exit_code, listed.stdout) == (0, "no grants\n")
    verified = jit("--database-url", empty_db_url, "audit", "verify")
    assert verified.exit_code == 0 and verified.stdout.startswith("ok: 0 events")


UNMIGRATED_COMMANDS = [
    ("grants",), ("grants", "--json"), ("revoke", "1", "--reason", "done"), ("reconcile",),
    ("audit", "verify"), ("audit", "export"),
]


@pytest.mark.parametrize("command", UNMIGRATED_COMMANDS, ids=" ".join)
def test_unmigrated_database_says_run_db_upgrade(command: tuple[str, ...],
                                                 empty_db_url: str, tmp_path: Path) -> None:
    policy = tmp_path / "jit.yaml"
    policy.write_text(GOOD_POLICY)
    result = jit("--database-url", empty_db_url, "--config", str(policy), *command)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith("error: ")
    assert "run `jit db upgrade`" in result.stderr
    assert len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize("command", [("db", "upgrade"), ("grants",), ("audit", "verify"),
                                     ("audit", "export")], ids=" ".join)
def test_unreachable_postgres(command: tuple[str, ...], tmp_path: Path) -> None:
    policy = tmp_path / "jit.yaml"
    policy.write_text(GOOD_POLICY)
    url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/postgres"
    result = jit("--database-url", url, "--config", str(policy), *command)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith("error: cannot reach the database: ")


def test_unopenable_sqlite_path() -> None:
    result = jit("--database-url", "sqlite:////nonexistent/jit-tests/jit.db", "db", "upgrade")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: cannot reach the database: ")


@pytest.mark.parametrize("url", ["not a url", "mysql://jit@127.0.0.1/jit"])
def test_malformed_database_url_is_a_clean_error(url: str) -> None:
    result = jit("--database-url", url, "audit", "verify")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and "database" in result.stderr


# ---- grants, revoke and reconcile against moto ---------------------------------------------


class Installation:
    """A policy file, a database and a service writing to both, as `jit-bot` would."""

    def __init__(self, db_url: str, policy: Path, service: JitService, ec2: Any,
                 group_id: str, clock: ManualClock) -> None:
        self.db_url, self.policy, self.service = db_url, policy, service
        self.ec2, self.group_id, self.clock = ec2, group_id, clock

    def jit(self, *args: str) -> Result:
        return jit("--database-url", self.db_url, "--config", str(self.policy), *args)

    def active_grant(self, source: str = SOURCE, port: str = "ssh",
                     minutes: int = 30) -> int:
        gid = self.service.request(REQUESTER, "prod-db", port, timedelta(minutes=minutes),
                                   source, "fix replication").grant.id
        self.service.approve(gid, APPROVER)
        assert self.service.open(gid).status is Status.ACTIVE
        return gid

    def audit(self, grant_id: int | None) -> list[AuditEvent]:
        with self.service.store.read() as session:
            return list(session.scalars(select(AuditEvent).where(
                AuditEvent.grant_id == grant_id).order_by(AuditEvent.seq)))


@pytest.fixture
def install(db_url: str, aws_group: Any, tmp_path: Path) -> Iterator[Installation]:
    data = aws_policy_data(aws_group.group_id)
    data["targets"]["ghost-db"] = {"aws": {"region": "us-east-1",
                                           "security_group_id": GHOST_GROUP},
                                   "ports": {"ssh": 22}}
    policy = tmp_path / "jit.yaml"
    policy.write_text(yaml.safe_dump(data))
    store = Store.from_url(db_url)
    clock = ManualClock(datetime.now(UTC).replace(microsecond=0))
    service = JitService(store, load_policy(str(policy)), {"aws": AwsProvider()},
                         RecordingNotifier(), clock)
    yield Installation(db_url, policy, service, aws_group.ec2, aws_group.group_id, clock)
    store.dispose()


def _table(output: str) -> dict[int, list[str]]:
    """`jit grants` rows by id: [status, target, service, port, source, requester, until]."""
    header, *rows = output.splitlines()
    assert header.split() == ["ID", "STATUS", "TARGET", "PORT", "SOURCE", "REQUESTER", "UNTIL"]
    table: dict[int, list[str]] = {}
    for row in rows:
        gid, status, target, service, port, source, requester, *until = row.split()
        table[int(gid)] = [status, target, service, port, source, requester, " ".join(until)]
    return table


def test_grants_in_every_state(install: Installation) -> None:
    service, clock = install.service, install.clock
    pending = service.request(REQUESTER, "prod-db", "ssh", timedelta(minutes=10),
                              SOURCE).grant.id
    denied = service.request(REQUESTER, "prod-db", "rdp", timedelta(minutes=10),
                             "198.51.100.4").grant.id
    service.deny(denied, APPROVER, "not today")
    active = install.active_grant("203.0.113.8", minutes=45)
    active_view = service.get(active)
    closed = install.active_grant("203.0.113.9")
    clock.advance(timedelta(minutes=5))
    service.revoke(closed, REQUESTER, "done")
    auto = service.request(AUTO_USER, "prod-db", "ssh", timedelta(minutes=20),
                           "2001:db8::7").grant.id
    failed = service.request(REQUESTER, "ghost-db", "ssh", timedelta(minutes=10),
                             SOURCE).grant.id
    service.approve(failed, APPROVER)
    assert service.open(failed).status is Status.FAILED

    listed = install.jit("grants")
    assert listed.exit_code == 0, listed.output
    table = _table(listed.stdout)
    assert list(table) == sorted(table, reverse=True), "newest first"
    assert set(table) == {pending, denied, active, closed, auto, failed}
    until = f"{active_view.expires_at:%Y-%m-%d %H:%M:%S}Z"
    assert table[pending][:1] + table[pending][4:] == ["PENDING", "203.0.113.7/32",
                                                       REQUESTER, "-"]
    assert table[denied][:5] == ["DENIED", "prod-db", "rdp", "3389", "198.51.100.4/32"]
    assert table[active] == ["ACTIVE", "prod-db", "ssh", "22", "203.0.113.8/32", REQUESTER,
                             until]
    assert table[closed][0] == "CLOSED"
    assert table[auto][:1] + table[auto][4:5] == ["APPROVED", "2001:db8::7/128"]
    assert table[failed][:2] == ["FAILED", "ghost-db"]

    only_active = install.jit("grants", "--active")
    assert only_active.exit_code == 0, only_active.output
    assert _table(only_active.stdout) == {active: table[active]}

    as_json = install.jit("grants", "--json")
    assert as_json.exit_code == 0, as_json.output
    lines = json.loads(as_json.stdout)
    assert [g["id"] for g in lines] == list(table)
    for grant in lines:
        assert set(grant) == GRANT_KEYS
    by_id = {g["id"]: g for g in lines}
    assert {gid: g["status"] for gid, g in by_id.items()} == {
        pending: "PENDING", denied: "DENIED", active: "ACTIVE", closed: "CLOSED",
        auto: "APPROVED", failed: "FAILED"}
    assert by_id[active]["source"] == "203.0.113.8/32"
    assert by_id[active]["expires_at"] == until.replace(" ", "T")
    assert by_id[active]["duration"] == "45m"
    assert by_id[active]["rule"] in jit_rule_ids(install.ec2, install.group_id)
    assert by_id[active]["decided_by"] == APPROVER
    assert (by_id[pending]["expires_at"], by_id[pending]["rule"]) == (None, None)
    assert by_id[closed]["close_reason"] == "revoked" and by_id[closed]["closed_at"]
    assert by_id[auto]["decided_by"] == "policy"
    assert GHOST_GROUP in by_id[failed]["error"]
    assert by_id[denied]["reason"] == "" and by_id[active]["reason"] == "fix replication"

    active_json = install.jit("grants", "--active", "--json")
    assert [grant["id"] for grant in json.loads(active_json.stdout)] == [active]
    limited = install.jit("grants", "--limit", "2")
    assert list(_table(limited.stdout)) == list(table)[:2]


def test_grants_when_there_are_none(install: Installation) -> None:
    assert install.jit("grants").stdout == "no grants\n"
    assert install.jit("grants", "--active").stdout == "no active grants\n"
    for listing in (("grants", "--json"), ("grants", "--active", "--json")):
        empty = install.jit(*listing)
        assert (empty.exit_code, empty.stdout) == (0, "[]\n")  # a JSON list, even when empty
        assert json.loads(empty.stdout) == []


def test_grants_negative_limit_is_a_usage_error(db_url: str, tmp_path: Path) -> None:
    policy = tmp_path / "jit.yaml"
    policy.write_text(GOOD_POLICY)
    result = jit("--database-url", db_url, "--config", str(policy), "grants", "--limit", "-1")
    assert result.exit_code == 2


def test_revoke_closes_the_rule(install: Installation,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOGNAME", "ops-dana")  # getpass.getuser() reads it first
    gid = install.active_grant()
    other = install.active_grant("203.0.113.99")
    rule = install.service.get(gid).rule_ref
    assert rule in jit_rule_ids(install.ec2, install.group_id)

    result = install.jit("revoke", str(gid), "--reason", "incident over, closing early")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"#{gid} revoked: rule closed\n"

    assert jit_rule_ids(install.ec2, install.group_id) == {install.service.get(other).rule_ref}
    view = install.service.get(gid)
    assert view.status is Status.CLOSED and view.close_reason == "revoked"
    assert install.service.get(other).status is Status.ACTIVE
    events = {e.action: e for e in install.audit(gid)}
    assert events["closing"].actor == events["closed"].actor == "cli:ops-dana"
    assert json.loads(events["closing"].details)["note"] == "incident over, closing early"

    exported = install.jit("audit", "export")
    assert exported.exit_code == 0, exported.output
    closing = [e for e in map(json.loads, exported.stdout.splitlines())
               if e["grant_id"] == gid and e["action"] == "closing"]
    assert [(e["actor"], e["details"]["note"]) for e in closing] == [
        ("cli:ops-dana", "incident over, closing early")]
    verified = install.jit("audit", "verify")
    assert verified.exit_code == 0 and verified.stdout.startswith("ok: ")
    out = install.policy.with_name("audit.jsonl")
    to_file = install.jit("audit", "export", "--output", str(out))
    assert (to_file.exit_code, to_file.stdout) == (0, "")
    assert out.read_text() == exported.stdout
    later = f"{datetime.now(UTC) + timedelta(hours=1):%Y-%m-%dT%H:%M:%S}Z"
    assert install.jit("audit", "export", "--since", later).stdout == ""
    bad_since = install.jit("audit", "export", "--since", "yesterday")
    assert bad_since.exit_code == 2 and "not an ISO 8601 time" in bad_since.stderr

    again = install.jit("revoke", str(gid), "--reason", "twice")
    assert again.exit_code == 1
    assert again.stderr == f"error: #{gid} is already closed; cannot revoke it\n"


def test_revoke_refusals_change_nothing(install: Installation) -> None:
    gid = install.active_grant()
    pending = install.service.request(REQUESTER, "prod-db", "ssh", timedelta(minutes=5),
                                      "198.51.100.3").grant.id
    rules = jit_rule_ids(install.ec2, install.group_id)
    events_before = len(install.audit(gid)) + len(install.audit(pending))

    unknown = install.jit("revoke", "4242", "--reason", "typo")
    assert unknown.exit_code == 1
    assert unknown.stderr == "error: no request #4242\n"

    not_active = install.jit("revoke", str(pending), "--reason", "never opened")
    assert not_active.exit_code == 1
    assert not_active.stderr.startswith(f"error: #{pending} is ")
    assert "pending" in not_active.stderr and "cannot revoke" in not_active.stderr

    no_reason = install.jit("revoke", str(gid))
    assert no_reason.exit_code == 2
    assert "Missing option '--reason'" in no_reason.stderr

    not_a_number = install.jit("revoke", "abc", "--reason", "x")
    assert not_a_number.exit_code == 2
    assert "'abc' is not a valid integer" in not_a_number.stderr

    assert install.service.get(gid).status is Status.ACTIVE
    assert install.service.get(pending).status is Status.PENDING
    assert jit_rule_ids(install.ec2, install.group_id) == rules
    assert len(install.audit(gid)) + len(install.audit(pending)) == events_before


def test_reconcile_removes_orphans(install: Installation) -> None:
    ec2, group_id = install.ec2, install.group_id
    live = install.active_grant()
    live_rule = install.service.get(live).rule_ref
    plant_marked_rule(ec2, group_id)
    orphan = (jit_rule_ids(ec2, group_id) - {live_rule}).pop()
    line = (f"{orphan} in {group_id} (prod-db, port 3389 from 198.51.100.9/32, "
            "marked #999)")

    dry = install.jit("reconcile", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert dry.stdout == f"would remove: {line}\n"
    assert jit_rule_ids(ec2, group_id) == {live_rule, orphan}
    assert install.audit(999) == []

    done = install.jit("reconcile")
    assert done.exit_code == 0, done.output
    assert done.stdout == f"removed: {line}\n"
    assert jit_rule_ids(ec2, group_id) == {live_rule}
    assert [e.action for e in install.audit(999)] == ["orphan_removed"]
    assert install.service.get(live).status is Status.ACTIVE

    clean = install.jit("reconcile")
    assert (clean.exit_code, clean.stdout) == (0, "no orphan rules\n")
    assert install.jit("reconcile", "--dry-run").stdout == "no orphan rules\n"


def test_check_through_env_does_not_need_a_database(tmp_path: Path) -> None:
    policy = tmp_path / "jit.yaml"
    policy.write_text(GOOD_POLICY)
    url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/postgres"
    result = jit("check", env={"JIT_CONFIG": str(policy), "JIT_DATABASE_URL": url})
    assert result.exit_code == 0, result.output
