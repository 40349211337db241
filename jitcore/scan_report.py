"""What `jit scan` prints: the table, the JSON and the suggested policy targets.

Pure functions of the machines `jitcore.scan` classified; no cloud and no I/O here.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from jitcore.scan import MANAGED_PORTS, Machine, Status, parse_arm_id

_COLUMNS = ("STATUS", "CLOUD", "PLACE", "MACHINE", "PRIVATE IP", "DETAIL")
_TARGET_NAME = re.compile(r"[^a-z0-9._-]+")


# ---- the table and the JSON -----------------------------------------------------------------


def render_table(machines: Sequence[Machine]) -> str:
    """A fixed-width table, one line per exposure, and a summary line."""
    if not machines:
        return "no machines found"
    rows: list[tuple[str, ...]] = []
    for m in machines:
        details = [str(e) for e in m.exposures]
        if m.status is not Status.NOT_CONFIGURED or not m.exposures:
            details.insert(0, m.reason)
        rows.append((str(m.status), m.cloud, m.place, m.name, m.private_ip or "-", details[0]))
        rows += [("", "", "", "", "", detail) for detail in details[1:]]
    widths = [max(len(row[i]) for row in [_COLUMNS, *rows]) for i in range(len(_COLUMNS) - 1)]
    lines = ["  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)),
                        row[-1]]).rstrip()
             for row in [_COLUMNS, *rows]]
    return "\n".join([*lines, "", summary(machines)])


def summary(machines: Sequence[Machine]) -> str:
    """E.g. "4 machines: 1 configured, 2 not configured (1 exposed), 1 unsupported", where
    exposed counts the not-configured machines with an open management port."""
    counts = Counter(m.status for m in machines)
    exposed = sum(1 for m in machines if m.status is Status.NOT_CONFIGURED and m.exposed)
    noun = "machine" if len(machines) == 1 else "machines"
    return (f"{len(machines)} {noun}: {counts[Status.CONFIGURED]} configured, "
            f"{counts[Status.NOT_CONFIGURED]} not configured ({exposed} exposed), "
            f"{counts[Status.UNSUPPORTED]} unsupported")


def to_json(machines: Sequence[Machine]) -> list[dict[str, Any]]:
    """The machines as JSON-ready dicts (the CLI's --json)."""
    return [{
        "cloud": m.cloud, "id": m.id, "name": m.name, "place": m.place,
        "private_ip": m.private_ip, "firewalls": list(m.firewalls), "status": str(m.status),
        "exposed": m.exposed, "reason": m.reason, "target": m.target,
        "exposures": [{"port": e.port, "service": e.service, "protocol": e.protocol,
                       "source": e.source, "firewall": e.firewall, "rule": e.rule,
                       "via": e.via or None}
                      for e in m.exposures],
    } for m in machines]


# ---- the policy suggestion ------------------------------------------------------------------


def suggest_policy(machines: Sequence[Machine]) -> str:
    """A YAML `targets:` section with one target per exposed machine jit does not guard yet.

    AWS targets name the instance (jit then keeps a group of its own for it); Azure targets
    name the NSG in front of the machine (the network interface's if it has one) and its
    private address. Ports are the exposed managed ports. Merged into a policy that has
    defaults (approvers), it passes `jitcore.policy_file.parse_policy`. A VM exposed through
    an Azure Firewall alone is left to the operator, with a note: its target's `firewall`
    section needs the firewall's resource group and a range of mapped ports to choose; for a
    VM exposed both ways, the DNAT exposures are comments and the NSG target takes the ports
    its NSG exposes.
    """
    wanted, notes = _suggestable([m for m in machines
                                  if m.status is Status.NOT_CONFIGURED and m.exposed])
    if not wanted:
        return "\n".join(["# No machine outside jit exposes a management port that a target "
                          "could be suggested for.", *notes]) + "\n"
    lines = ["# Suggested jit targets for machines that expose a management port.",
             "# Add them under `targets:` in the policy, review names, approvers and",
             "# durations, then enable them so that jit closes the standing rules.",
             *notes, "targets:"]
    taken: set[str] = set()
    for machine in wanted:
        lines += _target_lines(machine, _target_name(machine, taken))
    return "\n".join(lines) + "\n"


def _suggestable(exposed: list[Machine]) -> tuple[list[Machine], list[str]]:
    """The machines a target can be suggested for, and a note for each of the others."""
    wanted: list[Machine] = []
    notes: list[str] = []
    for m in exposed:
        if m.cloud == "azure" and not m.private_ip:  # an Azure target needs the VM's address
            notes.append(f"# {m.name} ({m.id}) has no private address: add its target by hand.")
        elif all(e.via for e in m.exposures):
            firewalls = ", ".join(sorted({e.firewall for e in m.exposures}))
            notes.append(f"# {m.name} ({m.id}) is exposed through firewall {firewalls} only: "
                         "add a target with a `firewall` section for it by hand.")
        else:
            wanted.append(m)
    return wanted, notes


def _target_lines(machine: Machine, name: str) -> list[str]:
    """One suggested target: its exposures as comments, its location, its exposed ports."""
    return [f"  {name}:",
            *(f"    # {exposure}" for exposure in machine.exposures),
            *_location_lines(machine),
            "    ports:",
            *(f"      {MANAGED_PORTS[port]}: {port}"
              for port in sorted({e.port for e in machine.exposures if not e.via}))]


def _location_lines(machine: Machine) -> list[str]:
    if machine.cloud == "aws":
        return ["    aws:", f"      region: {_quoted(machine.place)}",
                f"      instance_id: {_quoted(machine.id)}"]
    subscription, resource_group, nsg = parse_arm_id(machine.firewalls[0])
    lines = [f"    # also in front of it: {', '.join(machine.firewalls[1:])}"] \
        if len(machine.firewalls) > 1 else []
    return [*lines, "    azure:", f"      subscription_id: {_quoted(subscription)}",
            f"      resource_group: {_quoted(resource_group)}",
            f"      network_security_group: {_quoted(nsg)}",
            f"      destination: {_quoted(machine.private_ip or '')}"]


def _target_name(machine: Machine, taken: set[str]) -> str:
    """The machine's name as a valid, unused target name (lowercase, at most 63 characters)."""
    base = _TARGET_NAME.sub("-", machine.name.lower()).strip("-._")[:60] or machine.cloud
    name, number = base, 2
    while name in taken:
        name, number = f"{base}-{number}", number + 1
    taken.add(name)
    return name


def _quoted(text: str) -> str:
    return json.dumps(text)  # a JSON string is a valid YAML double-quoted scalar
