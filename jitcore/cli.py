"""`jit`: the admin command. Validate policy, migrate, inspect, revoke, reconcile, audit, run."""

from __future__ import annotations

import getpass
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TextIO

import click

from jitcore import audit
from jitcore.bootstrap import Paths
from jitcore.domain import HOLDS_RULE, GrantView, Status, format_duration
from jitcore.errors import JitError
from jitcore.policy import AwsLocation, Policy
from jitcore.store import Store, repository, upgrade
from jitcore.store.db import redacted_url

if TYPE_CHECKING:
    from jitcore.service import JitService

CONFIG_HELP = "Policy file [env JIT_CONFIG, default ./jit.yaml]."
DB_HELP = "Database URL [env JIT_DATABASE_URL, default sqlite:///./jit.db]."


class Context:
    def __init__(self, config: str | None, database_url: str | None) -> None:
        self.paths = Paths.from_env(config, database_url)

    def service(self) -> JitService:
        from jitcore.bootstrap import build_service  # the cloud SDKs load only when needed

        return build_service(self.paths)

    def store(self) -> Store:
        store = Store.from_url(self.paths.database_url)
        store.check_schema()
        return store


pass_context = click.make_pass_decorator(Context)


@contextmanager
def _errors() -> Iterator[None]:
    """jit's own errors end the command with their message and exit 1: never a traceback."""
    try:
        yield
    except JitError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "-c", metavar="FILE", help=CONFIG_HELP)
@click.option("--database-url", metavar="URL", help=DB_HELP)
@click.option("--verbose", "-v", is_flag=True, help="Log what the engine does.")
@click.version_option(package_name="jit")
@click.pass_context
def cli(ctx: click.Context, config: str | None, database_url: str | None,
        verbose: bool) -> None:
    """jit: just-in-time network access to cloud VMs.

    Management ports stay closed; jit opens one port for one address for a while, and
    closes it again. This command administers a jit installation.
    """
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("apscheduler", "botocore", "azure"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    ctx.obj = Context(config, database_url)


@cli.command()
@click.option("--config", "-c", "config", metavar="FILE", help=CONFIG_HELP)
@pass_context
def check(obj: Context, config: str | None) -> None:
    """Validate the policy file and print what it allows."""
    from jitcore.policy_file import load_policy

    path = config or obj.paths.config
    with _errors():
        policy = load_policy(path)
    click.echo(f"{path}: ok, {len(policy.targets)} target(s)")
    _print_policy(policy)


def _print_policy(policy: Policy) -> None:
    if policy.slack:
        click.echo(f"slack: approvals {policy.slack.approvals_channel}, "
                   f"audit {policy.slack.audit_channel}")
    for target in policy.targets.values():
        click.echo(f"\n{target.name}  [{target.location.resource}]")
        if isinstance(target.location, AwsLocation) and target.location.role_arn:
            click.echo(f"  role: {target.location.role_arn}")
        for port in target.ports.values():
            sources = ", ".join(str(s) for s in port.allowed_sources)
            port_text = f"{port.port}/{port.protocol}"
            click.echo(f"  {port.name:<12} {port_text:<10} up to "
                       f"{format_duration(target.port_max_duration(port)):<6} from {sources}")
        click.echo(f"  requesters: {', '.join(target.requesters) or '(none)'}")
        click.echo(f"  approvers:  {', '.join(target.approvers) or '(none)'}")
        if target.auto_approve:
            limit = target.auto_approve.max_duration
            click.echo(f"  auto-approve: {', '.join(target.auto_approve.users)}"
                       + (f" up to {format_duration(limit)}" if limit else ""))


@cli.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@pass_context
def db_upgrade(obj: Context) -> None:
    """Create or migrate the database schema to the latest version."""
    with _errors():
        store = Store.from_url(obj.paths.database_url)
        revision = upgrade(store.engine)
    click.echo(f"database at revision {revision}")


@cli.command()
@click.option("--active", is_flag=True, help="Only grants that hold (or are removing) a rule.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--limit", default=200, show_default=True, type=click.IntRange(min=1),
              help="Newest first, at most this many.")
@pass_context
def grants(obj: Context, active: bool, as_json: bool, limit: int) -> None:
    """List requests and grants."""
    with _errors(), obj.store().read() as session:
        rows = repository.list_views(session, HOLDS_RULE if active else None, limit)
    if as_json:
        for view in rows:
            click.echo(json.dumps(_grant_json(view), sort_keys=True))
        return
    if not rows:
        click.echo("no grants" if not active else "no active grants")
        return
    click.echo(f"{'ID':>6}  {'STATUS':<12} {'TARGET':<16} {'PORT':<10} {'SOURCE':<20} "
               f"{'REQUESTER':<12} UNTIL")
    for view in rows:
        until = f"{view.expires_at:%Y-%m-%d %H:%M:%SZ}" if view.expires_at else "-"
        click.echo(f"{view.id:>6}  {view.status.value:<12} {view.target:<16} "
                   f"{view.service + ' ' + str(view.port):<10} {view.source:<20} "
                   f"{view.requester:<12} {until}")


def _grant_json(view: GrantView) -> dict[str, Any]:
    def iso(value: datetime | None) -> str | None:
        return value.isoformat().replace("+00:00", "Z") if value else None

    return {
        "id": view.id, "status": view.status.value, "requester": view.requester,
        "target": view.target, "cloud": view.cloud, "service": view.service,
        "port": view.port, "protocol": view.protocol, "source": view.source,
        "duration": format_duration(view.duration), "reason": view.reason,
        "created_at": iso(view.created_at), "decided_by": view.decided_by,
        "opened_at": iso(view.opened_at), "expires_at": iso(view.expires_at),
        "closed_at": iso(view.closed_at), "close_reason": view.close_reason,
        "rule": view.rule_ref, "error": view.error,
    }


@cli.command()
@click.argument("grant_id", type=int)
@click.option("--reason", required=True, help="Why; recorded in the audit log.")
@pass_context
def revoke(obj: Context, grant_id: int, reason: str) -> None:
    """Close an active grant now."""
    if not reason.strip():
        raise click.BadParameter("give the reason in words", param_hint="--reason")
    with _errors():
        view = obj.service().revoke(grant_id, _actor(), reason, admin=True)
    if view.status is Status.CLOSED:
        click.echo(f"#{grant_id} revoked: rule closed")
    else:
        click.echo(f"#{grant_id} is {view.status.value}: the close failed ({view.error}); "
                   "the engine keeps retrying", err=True)
        sys.exit(1)


@cli.command()
@click.option("--dry-run", is_flag=True, help="Only list the orphans; remove nothing.")
@pass_context
def reconcile(obj: Context, dry_run: bool) -> None:
    """Remove rules carrying jit's marker that no live grant is behind (orphans)."""
    with _errors():
        orphans = obj.service().reconcile(dry_run=dry_run)
    if not orphans:
        click.echo("no orphan rules")
        return
    failed = False
    for o in orphans:
        state = ("would remove" if dry_run else "removed" if o.removed
                 else f"could NOT remove ({o.error})")
        failed = failed or (not dry_run and not o.removed)
        grant = f"#{o.grant_id}" if o.grant_id is not None else "no grant"
        click.echo(f"{state}: {o.ref} in {o.scope} ({o.target}, port {o.port} from "
                   f"{o.source}, marked {grant})")
    sys.exit(1 if failed else 0)


@cli.command()
@click.argument("target")
@click.option("--yes", "-y", is_flag=True, help="Apply the plan without asking.")
@click.option("--dry-run", is_flag=True, help="Only print the plan.")
@click.option("--take-over", is_flag=True,
              help="Record and remove the rules that would let a managed port in ahead of "
                   "jit (disable puts them back).")
@pass_context
def enable(obj: Context, target: str, yes: bool, dry_run: bool, take_over: bool) -> None:
    """Keep TARGET's managed ports closed by default: print the plan, then apply it."""
    from jitcore.lockdown import Lockdowns

    with _errors():
        lockdowns = Lockdowns(obj.service())
        plan = lockdowns.plan_enable(target)
        click.echo(f"enable jit on {target}:")
        for rule in plan.remove:
            click.echo(f"  remove (recorded, restored by disable): {rule.scope} {rule.ref}: "
                       f"{rule.summary}")
        for rule in plan.blockers:
            verb = "remove (recorded, restored by disable)" if take_over else "BLOCKS"
            click.echo(f"  {verb}: {rule.ref}: {rule.summary}")
        for line in plan.add:
            click.echo(f"  add: {line}")
        if not (plan.remove or plan.blockers or plan.add):
            click.echo("  nothing to change: no rule opens a managed port")
        if dry_run:
            return
        if plan.blockers and not take_over:
            lockdowns.enable(target, _actor(), plan, take_over=False)  # refuses, naming them
        if not yes:
            click.confirm("apply this plan?", abort=True)
        lockdowns.enable(target, _actor(), plan, take_over=take_over)
    click.echo(f"jit enabled on {target}")


@cli.command()
@click.argument("target")
@click.option("--yes", "-y", is_flag=True, help="Go ahead without asking.")
@click.option("--dry-run", is_flag=True, help="Only print what would change.")
@pass_context
def disable(obj: Context, target: str, yes: bool, dry_run: bool) -> None:
    """Revoke TARGET's grants, remove jit's rules and restore the recorded ones exactly."""
    from jitcore.lockdown import Lockdowns

    with _errors():
        lockdowns = Lockdowns(obj.service())
        active, lockdown = lockdowns.plan_disable(target)
        click.echo(f"disable jit on {target}:")
        for grant_id in active:
            click.echo(f"  revoke grant #{grant_id} (reason: target disabled)")
        for name in lockdown.created.get("deny", []):
            click.echo(f"  remove: {name['name']}")
        if lockdown.created.get("group_id"):
            click.echo(f"  remove: jit's group {lockdown.created['group_id']}")
        for rule in lockdown.removed:
            click.echo(f"  restore: {rule.scope} {rule.ref}: {rule.summary}")
        if dry_run:
            return
        if not yes:
            click.confirm("go ahead?", abort=True)
        differences = lockdowns.disable(target, _actor())
    if differences:
        click.echo(f"jit disabled on {target}, but the firewall differs from before:", err=True)
        for line in differences:
            click.echo(f"  {line}", err=True)
        sys.exit(1)
    click.echo(f"jit disabled on {target}: the firewall is as it was")


@cli.command()
@click.argument("targets", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per target.")
@pass_context
def status(obj: Context, targets: tuple[str, ...], as_json: bool) -> None:
    """Whether jit is enabled on each target, what it holds, and the last posture check."""
    from jitcore.lockdown import Lockdowns

    with _errors():
        service = obj.service()
        found = Lockdowns(service).status(targets)
    for t in found:
        if as_json:
            click.echo(json.dumps({
                "target": t.target, "cloud": t.cloud, "enabled": t.enabled,
                "changed_at": t.changed_at.isoformat() if t.changed_at else None,
                "changed_by": t.changed_by, "jit_rules": list(t.jit_rules),
                "snapshot": list(t.snapshot), "active_grants": t.active_grants,
                "checked_at": t.checked_at.isoformat() if t.checked_at else None,
                "problems": list(t.problems)}))
            continue
        state = "enabled" if t.enabled else "not enabled"
        since = f" since {t.changed_at:%Y-%m-%d %H:%M}Z by {t.changed_by}" if t.enabled \
            and t.changed_at else ""
        click.echo(f"{t.target} ({t.cloud}): {state}{since}, {t.active_grants} active grant(s)")
        if t.enabled:
            click.echo(f"  jit rules: {', '.join(t.jit_rules) or 'none'}")
            click.echo(f"  snapshot: {len(t.snapshot)} rule(s) to restore on disable")
            for line in t.snapshot:
                click.echo(f"    {line}")
            checked = f"{t.checked_at:%Y-%m-%d %H:%M:%S}Z" if t.checked_at else "not yet"
            click.echo(f"  posture: checked {checked}; "
                       + ("; ".join(t.problems) if t.problems else "no problems"))
    if service.outbox is not None:
        _print_delivery(service.store, as_json)


def _print_delivery(store: Store, as_json: bool) -> None:
    """The Slack outbox: what is owed and not yet delivered, and what failed for good."""
    from jitcore import outbox

    with _errors(), store.read() as session:
        owed = outbox.backlog(session)
    now = datetime.now(UTC)
    failures = [{"id": row.id, "grant_id": row.grant_id, "post": row.post,
                 "channel": row.channel, "error": row.last_error,
                 "at": row.done_at.isoformat() if row.done_at else None}
                for row in owed.recent_failures]
    if as_json:
        click.echo(json.dumps({"slack_delivery": {
            "pending": owed.pending, "oldest_pending_seconds": round(owed.oldest_age(now), 1),
            "failed": owed.failed, "recent_failures": failures}}))
        return
    oldest = (f", the oldest for {format_duration(timedelta(seconds=owed.oldest_age(now)))}"
              if owed.pending else "")
    click.echo(f"Slack delivery: {owed.pending} pending{oldest}; {owed.failed} failed")
    for failure in failures:
        about = f"#{failure['grant_id']}" if failure["grant_id"] is not None else "alert"
        click.echo(f"  {about} {failure['post']} to {failure['channel']}: {failure['error']} "
                   f"({failure['at']})")
    if owed.failed:
        click.echo("  fix the cause (invite the bot, restore the channel), then "
                   "`jit outbox retry` sends them again")


@cli.group("outbox")
def outbox_group() -> None:
    """The Slack posts events owe (delivered by jit-bot)."""


@outbox_group.command("retry")
@pass_context
def outbox_retry(obj: Context) -> None:
    """Send the posts that failed for good again (once their cause is fixed)."""
    from jitcore import outbox

    with _errors():
        store = obj.store()
    with _errors(), store.transaction() as session:
        count = outbox.requeue_failed(session, datetime.now(UTC))
    click.echo(f"{count} failed post(s) queued again; jit-bot sends them")


@cli.command()
@click.option("--aws-region", "aws_regions", multiple=True, metavar="REGION",
              help="An AWS region to scan (repeatable).")
@click.option("--azure-subscription", "azure_subscriptions", multiple=True, metavar="ID",
              help="An Azure subscription to scan (repeatable).")
@click.option("--azure-endpoint", metavar="URL",
              help="ARM endpoint for a sovereign cloud or Azure Stack [default: public].")
@click.option("--json", "as_json", is_flag=True, help="A JSON list of machines.")
@click.option("--suggest", is_flag=True,
              help="Print a policy snippet that would cover the exposed machines.")
@pass_context
def scan(obj: Context, aws_regions: tuple[str, ...], azure_subscriptions: tuple[str, ...],
         azure_endpoint: str | None, as_json: bool, suggest: bool) -> None:
    """Find VMs whose management ports are reachable from anywhere, as Defender does."""
    from jitcore.scan import render_table, run_scan, suggest_policy, summary, to_json

    if not aws_regions and not azure_subscriptions:
        raise click.UsageError("name at least one --aws-region or --azure-subscription")
    with _errors():
        enabled = _enabled_targets(obj)
        machines = run_scan(aws_regions, azure_subscriptions, enabled,
                            azure_endpoint=azure_endpoint)
    if as_json:
        click.echo(json.dumps(to_json(machines), indent=2))
    elif suggest:
        click.echo(suggest_policy(machines))
    else:
        click.echo(render_table(machines))
        click.echo(summary(machines))


def _enabled_targets(obj: Context) -> list[Any]:
    """The targets jit is enabled on; none when there is no policy file or database yet."""
    import os

    from jitcore.lockdown import Lockdowns

    if not os.path.exists(obj.paths.config):
        click.echo(f"note: no policy at {obj.paths.config}: no machine counts as configured",
                   err=True)
        return []
    service = obj.service()
    return [service.policy.targets[s.target] for s in Lockdowns(service).status() if s.enabled]


@cli.group("audit")
def audit_group() -> None:
    """The tamper-evident audit log."""


@audit_group.command("verify")
@pass_context
def audit_verify(obj: Context) -> None:
    """Check the hash chain; exit 1 naming the first event that does not hold."""
    with _errors(), obj.store().read() as session:
        result = audit.verify(session)
    if result.ok:
        click.echo(f"ok: {result.checked} events, head #{result.head_seq} {result.head_hash}")
        return
    click.echo(f"audit chain BROKEN at event #{result.bad_seq}: {result.problem} "
               f"({result.checked} events before it verified)", err=True)
    sys.exit(1)


def _parse_since(_ctx: click.Context, _param: click.Parameter,
                 value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 time, "
                                 "e.g. 2026-11-01T00:00:00Z") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@audit_group.command("export")
@click.option("--since", callback=_parse_since, metavar="TIME",
              help="Only events at or after this ISO 8601 time (UTC if no offset).")
@click.option("--output", "-o", type=click.File("w"), default="-",
              help="Write here instead of stdout.")
@pass_context
def audit_export(obj: Context, since: datetime | None, output: TextIO) -> None:
    """Write audit events as JSON Lines, for a SIEM."""
    with _errors(), obj.store().read() as session:
        for event in audit.export(session, since):
            output.write(json.dumps(event, sort_keys=True, ensure_ascii=False) + "\n")


@cli.command()
@click.option("--interval", default=1.0, show_default=True, help="Seconds between sweeps.")
@click.option("--reconcile-every", default=600.0, show_default=True,
              help="Seconds between reconciles (0 turns them off).")
@pass_context
def run(obj: Context, interval: float, reconcile_every: float) -> None:
    """Run the expiry engine alone (deployments without Slack). Stops on SIGTERM/SIGINT."""
    from jitcore import logs
    from jitcore.scheduler import Engine

    with _errors():
        logs.check_format(os.environ)
    logs.configure(secrets=[logs.url_password(obj.paths.database_url)])
    with _errors():
        _migrate_sqlite(obj.paths.database_url)
        service = obj.service()
    if service.outbox is not None:
        click.echo("the policy has a slack: section: the posts events owe wait in the "
                   "database until a jit-bot delivers them (`jit status` shows the backlog)",
                   err=True)
    engine = Engine(service, timedelta(seconds=interval),
                    timedelta(seconds=reconcile_every) if reconcile_every > 0 else None)
    stop = threading.Event()
    _on_signals(lambda: stop.set())
    click.echo(f"jit engine running ({redacted_url(obj.paths.database_url)}, "
               f"{obj.paths.config}); "
               "Ctrl-C to stop", err=True)
    with _errors():  # SQLite: another process may hold the engine
        engine.run_until(stop)
    click.echo("jit engine stopped", err=True)


def _migrate_sqlite(url: str) -> None:
    """A single-process SQLite install migrates itself; PostgreSQL takes `jit db upgrade`."""
    store = Store.from_url(url)
    if store.dialect == "sqlite":
        upgrade(store.engine)
    store.dispose()


def _on_signals(handler: Callable[[], None]) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: handler())


def main() -> None:
    cli(prog_name="jit")
