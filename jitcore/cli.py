"""`jit`: the admin command. Validate policy, migrate, inspect, revoke, reconcile, audit, run."""

from __future__ import annotations

import getpass
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TextIO

import click

from jitcore import audit
from jitcore import cli_render as render
from jitcore.bootstrap import Paths
from jitcore.domain import HOLDS_RULE, Status
from jitcore.errors import JitError
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


def _echo(lines: Iterable[str]) -> None:
    for line in lines:
        click.echo(line)


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
    _echo(render.policy_lines(policy))


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
@click.option("--json", "as_json", is_flag=True, help="A JSON list of grants.")
@click.option("--limit", default=200, show_default=True, type=click.IntRange(min=1),
              help="Newest first, at most this many.")
@pass_context
def grants(obj: Context, active: bool, as_json: bool, limit: int) -> None:
    """List requests and grants."""
    with _errors(), obj.store().read() as session:
        rows = repository.list_views(session, HOLDS_RULE if active else None, limit)
    if as_json:  # a list, empty or not
        click.echo(json.dumps([render.grant_json(view) for view in rows], indent=2,
                              sort_keys=True))
        return
    if not rows:
        click.echo("no grants" if not active else "no active grants")
        return
    _echo(render.grant_table(rows))


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
    _echo([render.orphan_line(orphan, dry_run) for orphan in orphans])
    sys.exit(0 if dry_run or all(orphan.removed for orphan in orphans) else 1)


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
        _echo(render.enable_plan_lines(target, plan, take_over))
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
        _echo(render.disable_plan_lines(target, active, lockdown))
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
        _echo([json.dumps(render.status_json(t))] if as_json else render.status_lines(t))
    if service.outbox is not None:
        _print_delivery(service.store, as_json)


def _print_delivery(store: Store, as_json: bool) -> None:
    """The Slack outbox: what is owed and not yet delivered, and what failed for good."""
    from jitcore import outbox

    with _errors(), store.read() as session:
        owed = outbox.backlog(session)
    now = datetime.now(UTC)
    _echo([json.dumps(render.delivery_json(owed, now))] if as_json
          else render.delivery_lines(owed, now))


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
    from jitcore.scan import run_scan
    from jitcore.scan_report import render_table, suggest_policy, to_json

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
        click.echo(render_table(machines))  # it ends with the summary line


def _enabled_targets(obj: Context) -> list[Any]:
    """The targets jit is enabled on; none when there is no policy file or database yet."""
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
    # The cloud clients are built now, not by the first sweep's closes beside its claims.
    service.warm_up()
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


def _plugins() -> None:
    """Commands other packages add to `jit` (entry points "jit.commands"): `jit demo` comes
    from jit-bot's playground, which jitcore does not import itself."""
    from importlib.metadata import entry_points

    for point in entry_points(group="jit.commands"):
        if point.name in cli.commands:
            continue
        try:
            command = point.load()
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not take the rest down
            command = _unavailable(point.name, exc)
        cli.add_command(command, point.name)


def _unavailable(name: str, exc: Exception) -> click.Command:
    def refuse() -> None:
        raise click.ClickException(f"jit {name} cannot load: {exc}")

    return click.Command(name, callback=refuse, help=f"(unavailable: {exc})")


def main() -> None:
    _plugins()
    cli(prog_name="jit")
