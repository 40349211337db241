"""What the `jit` command prints: lines of text and JSON-ready values, built from jitcore's
own values. Pure: `jitcore.cli` reads and writes, this module only renders."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from jitcore.domain import GrantView, format_duration
from jitcore.policy import AwsLocation, Policy, Target
from jitcore.ports import Lockdown, LockdownPlan

if TYPE_CHECKING:
    from jitcore.lockdown import TargetStatus
    from jitcore.outbox import Backlog
    from jitcore.reconcile import Orphan


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


# ---- jit check ------------------------------------------------------------------------------


def policy_lines(policy: Policy) -> list[str]:
    """The Slack channels, then each target: its ports, who may request and approve."""
    lines = []
    if policy.slack:
        lines.append(f"slack: approvals {policy.slack.approvals_channel}, "
                     f"audit {policy.slack.audit_channel}")
    for target in policy.targets.values():
        lines += _target_lines(target)
    return lines


def _target_lines(target: Target) -> list[str]:
    lines = [f"\n{target.name}  [{target.location.resource}]"]
    if isinstance(target.location, AwsLocation) and target.location.role_arn:
        lines.append(f"  role: {target.location.role_arn}")
    for port in target.ports.values():
        sources = ", ".join(str(s) for s in port.allowed_sources)
        port_text = f"{port.port}/{port.protocol}"
        lines.append(f"  {port.name:<12} {port_text:<10} up to "
                     f"{format_duration(target.port_max_duration(port)):<6} from {sources}")
    lines.append(f"  requesters: {', '.join(target.requesters) or '(none)'}")
    lines.append(f"  approvers:  {', '.join(target.approvers) or '(none)'}")
    if target.auto_approve:
        limit = target.auto_approve.max_duration
        lines.append(f"  auto-approve: {', '.join(target.auto_approve.users)}"
                     + (f" up to {format_duration(limit)}" if limit else ""))
    return lines


# ---- jit grants -----------------------------------------------------------------------------


def grant_table(views: Sequence[GrantView]) -> list[str]:
    """A header and one fixed-width line per grant; under a grant through a DNAT, where
    to connect."""
    lines = [f"{'ID':>6}  {'STATUS':<12} {'TARGET':<16} {'PORT':<10} {'SOURCE':<20} "
             f"{'REQUESTER':<12} UNTIL"]
    for view in views:
        until = f"{view.expires_at:%Y-%m-%d %H:%M:%SZ}" if view.expires_at else "-"
        lines.append(f"{view.id:>6}  {view.status.value:<12} {view.target:<16} "
                     f"{view.service + ' ' + str(view.port):<10} {view.source:<20} "
                     f"{view.requester:<12} {until}")
        if view.entry is not None:  # through a DNAT: on a line of its own, under the grant
            lines.append(f"{'':>6}  connect to {view.entry}")
    return lines


def grant_json(view: GrantView) -> dict[str, Any]:
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
        "entry": str(view.entry) if view.entry else None,
    }


# ---- jit reconcile --------------------------------------------------------------------------


def orphan_line(orphan: Orphan, dry_run: bool) -> str:
    state = ("would remove" if dry_run else "removed" if orphan.removed
             else f"could NOT remove ({orphan.error})")
    grant = f"#{orphan.grant_id}" if orphan.grant_id is not None else "no grant"
    return (f"{state}: {orphan.ref} in {orphan.scope} ({orphan.target}, port {orphan.port} "
            f"from {orphan.source}, marked {grant})")


# ---- jit enable / disable -------------------------------------------------------------------


def enable_plan_lines(target: str, plan: LockdownPlan, take_over: bool) -> list[str]:
    lines = [f"enable jit on {target}:"]
    lines += [f"  remove (recorded, restored by disable): {rule.scope} {rule.ref}: "
              f"{rule.summary}" for rule in plan.remove]
    verb = "remove (recorded, restored by disable)" if take_over else "BLOCKS"
    lines += [f"  {verb}: {rule.ref}: {rule.summary}" for rule in plan.blockers]
    lines += [f"  add: {line}" for line in plan.add]
    if not (plan.remove or plan.blockers or plan.add):
        lines.append("  nothing to change: no rule opens a managed port")
    return lines


def disable_plan_lines(target: str, active: Sequence[int], lockdown: Lockdown) -> list[str]:
    lines = [f"disable jit on {target}:"]
    lines += [f"  revoke grant #{grant_id} (reason: target disabled)" for grant_id in active]
    lines += [f"  remove: {deny['name']}" for deny in lockdown.created.get("deny", [])]
    if lockdown.created.get("group_id"):
        lines.append(f"  remove: jit's group {lockdown.created['group_id']}")
    lines += [f"  restore: {rule.scope} {rule.ref}: {rule.summary}" for rule in lockdown.removed]
    return lines


# ---- jit status -----------------------------------------------------------------------------


def status_json(status: TargetStatus) -> dict[str, Any]:
    return {
        "target": status.target, "cloud": status.cloud, "enabled": status.enabled,
        "changed_at": _iso(status.changed_at), "changed_by": status.changed_by,
        "jit_rules": list(status.jit_rules), "snapshot": list(status.snapshot),
        "active_grants": status.active_grants, "checked_at": _iso(status.checked_at),
        "problems": list(status.problems)}


def status_lines(status: TargetStatus) -> list[str]:
    """Enabled or not, since when and by whom; for an enabled target what jit holds and the
    last posture check."""
    t = status
    state = "enabled" if t.enabled else "not enabled"
    since = f" since {t.changed_at:%Y-%m-%d %H:%M}Z by {t.changed_by}" if t.enabled \
        and t.changed_at else ""
    lines = [f"{t.target} ({t.cloud}): {state}{since}, {t.active_grants} active grant(s)"]
    if not t.enabled:
        return lines
    checked = f"{t.checked_at:%Y-%m-%d %H:%M:%S}Z" if t.checked_at else "not yet"
    return [*lines,
            f"  jit rules: {', '.join(t.jit_rules) or 'none'}",
            f"  snapshot: {len(t.snapshot)} rule(s) to restore on disable",
            *(f"    {line}" for line in t.snapshot),
            f"  posture: checked {checked}; "
            + ("; ".join(t.problems) if t.problems else "no problems")]


def delivery_json(owed: Backlog, now: datetime) -> dict[str, Any]:
    """The Slack outbox: what is owed and not yet delivered, and what failed for good."""
    return {"slack_delivery": {
        "pending": owed.pending, "oldest_pending_seconds": round(owed.oldest_age(now), 1),
        "failed": owed.failed, "recent_failures": _failures(owed)}}


def delivery_lines(owed: Backlog, now: datetime) -> list[str]:
    oldest = (f", the oldest for {format_duration(timedelta(seconds=owed.oldest_age(now)))}"
              if owed.pending else "")
    lines = [f"Slack delivery: {owed.pending} pending{oldest}; {owed.failed} failed"]
    for failure in _failures(owed):
        about = f"#{failure['grant_id']}" if failure["grant_id"] is not None else "alert"
        lines.append(f"  {about} {failure['post']} to {failure['channel']}: {failure['error']} "
                     f"({failure['at']})")
    if owed.failed:
        lines.append("  fix the cause (invite the bot, restore the channel), then "
                     "`jit outbox retry` sends them again")
    return lines


def _failures(owed: Backlog) -> list[dict[str, Any]]:
    return [{"id": row.id, "grant_id": row.grant_id, "post": row.post,
             "channel": row.channel, "error": row.last_error, "at": _iso(row.done_at)}
            for row in owed.recent_failures]
