"""Simultaneous approvals on Azure: how long until every rule is open, in writes' time.

    .venv/bin/python -m bench.azure_burst [--json] [--database-url URL] [--op-delay S]
    .venv/bin/python bench/azure_burst.py ...          (the same)

Set-up (not measured): the ARM emulator (tests/fakes/arm/) runs in its own process
over HTTPS with eleven empty NSGs, an Azure Firewall (classic rules) and a Firewall Policy,
and every write takes `--op-delay` seconds (default 2) to finish; while one is in progress on
a resource, ARM refuses another write to it (`AnotherOperationInProgress`), as real ARM does.
The policy has eleven NSG targets (band 100-199 each) and two firewall targets (mapped ports
50000-50999), one per mode. jit's AzureProvider talks to the emulator through the real
azure-mgmt-network SDK, polling every 0.05 s (ARM normally says `Retry-After: 10`; the
emulator says nothing, so the client's own interval applies). SQLite file database unless
--database-url names another.

Measured, four scenarios of 100 grants: on one NSG (nsg-0); spread over ten other NSGs (ten
each); through one firewall, classic rules; through one firewall, Firewall Policy. Each grant
is requested and approved first (not timed); then 100 threads call `JitService.open` at once,
as 100 Approve clicks would. Reported: the time from the start until the last grant is ACTIVE,
its ratio to one write's time (op delay), the accepted writes (PUTs) of the NSG, firewall or
rule collection group, and the ratio to the one-writer bound of writing grant by grant (grants
per resource x op delay). Checked: every grant ACTIVE, every rule in place and unique (NSG
priority in the band; DNAT mapped port in the range). Also reported: ARM answers by method,
status and error code. Takes about a minute at the default op delay.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

if __package__ in (None, ""):  # run as a file: make `bench`, `jitcore` and `tests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    APPROVER,
    REPO_ROOT,
    REQUESTER,
    Report,
    argument_parser,
    database_label,
    progress,
    scratch_database,
    source_for,
)
from jitcore.domain import Status
from jitcore.policy import Policy
from jitcore.policy_file import parse_policy
from jitcore.ports import LogNotifier, SystemClock
from jitcore.providers.azure import AzureProvider
from jitcore.service import JitService
from jitcore.store import Store
from tests.support.azure import StaticTokenCredential

SUBSCRIPTION = "00000000-0000-0000-0000-0000000be7c4"
RESOURCE_GROUP = "rg-bench"
NSGS = 11  # nsg-0 for the first scenario, nsg-1..nsg-10 for the second
GRANTS = 100
OP_DELAY = 2.0
PUBLIC_IP = "20.30.40.50"
WRITES = ("Microsoft.Network/networkSecurityGroups/write",
          "Microsoft.Network/azureFirewalls/write",
          "Microsoft.Network/firewallPolicies/ruleCollectionGroups/write")
POLL = 0.05

# The emulator in a child process: prints its URL and CA file, serves until stdin closes,
# then prints what it saw per operation and error code.
_EMULATOR_CHILD = """\
import json, sys
from tests.fakes.arm import ArmEmulator
WRITES = ("Microsoft.Network/networkSecurityGroups/write",
          "Microsoft.Network/azureFirewalls/write",
          "Microsoft.Network/firewallPolicies/ruleCollectionGroups/write")
with ArmEmulator(op_delay=float(sys.argv[1])) as arm:
    for n in range(int(sys.argv[2])):
        arm.add_nsg(sys.argv[3], sys.argv[4], f"nsg-{n}")
    arm.add_firewall(sys.argv[3], sys.argv[4], "fw-hub", public_ip=sys.argv[5])
    arm.add_firewall_policy(sys.argv[3], sys.argv[4], "fwpol-hub")
    print(arm.url, arm.ca_bundle, flush=True)
    for line in sys.stdin:
        if line.strip() == "counts":
            counts = {}
            for call in arm.calls:
                key = f"{call.method} {call.status} {call.error_code or ''}".strip()
                if call.operation in WRITES and call.status in (200, 201):
                    key = "accepted writes"
                counts[key] = counts.get(key, 0) + 1
            print(json.dumps(counts), flush=True)
        elif line.startswith("rules "):
            nsg = line.split()[1]
            print(json.dumps(arm.rules(sys.argv[3], sys.argv[4], nsg)), flush=True)
        elif line.startswith("dnat "):
            if line.split()[1] == "classic":
                found = arm.nat_collection(sys.argv[3], sys.argv[4], "fw-hub", "jit")
                rules = found["properties"]["rules"] if found else []
            else:
                group = arm.rule_collection_group(sys.argv[3], sys.argv[4], "fwpol-hub", "jit")
                rules = group["properties"]["ruleCollections"][0]["rules"] if group else []
            print(json.dumps(rules), flush=True)
        elif line.strip() == "clear":
            arm.clear_calls()
            print("{}", flush=True)
"""


class Emulator:
    def __init__(self, op_delay: float) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _EMULATOR_CHILD, str(op_delay), str(NSGS), SUBSCRIPTION,
             RESOURCE_GROUP, PUBLIC_IP], cwd=REPO_ROOT, text=True, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE)
        assert self.process.stdin is not None and self.process.stdout is not None
        self._stdin: IO[str] = self.process.stdin
        self._stdout: IO[str] = self.process.stdout
        self.url, self.ca_bundle = self._stdout.readline().split()

    def ask(self, line: str) -> Any:
        import json

        self._stdin.write(line + "\n")
        self._stdin.flush()
        return json.loads(self._stdout.readline())

    def stop(self) -> None:
        self._stdin.close()
        self.process.wait(timeout=10)


def policy(url: str) -> Policy:
    targets = {
        f"vm-{n}": {"azure": {"subscription_id": SUBSCRIPTION, "resource_group": RESOURCE_GROUP,
                              "network_security_group": f"nsg-{n}",
                              "destination": f"10.0.{n}.4", "arm_endpoint": url},
                    "ports": {"ssh": 22}}
        for n in range(NSGS)}
    for mode in ("classic", "policy"):
        firewall = {"name": "fw-hub", "resource_group": RESOURCE_GROUP, "public_ip": PUBLIC_IP,
                    "mapped_ports": [50000, 50999]}
        if mode == "policy":
            firewall["policy"] = "fwpol-hub"
        targets[f"hub-{mode}"] = {
            "azure": {"subscription_id": SUBSCRIPTION, "resource_group": RESOURCE_GROUP,
                      "destination": "10.1.0.4", "arm_endpoint": url, "firewall": firewall},
            "ports": {"ssh": 22}}
    return parse_policy({"defaults": {"max_duration": "3h", "requesters": ["*"],
                                      "approvers": [APPROVER]}, "targets": targets},
                        "bench-policy.yaml")


@dataclass(slots=True)
class Outcome:
    seconds: float
    statuses: Counter[str]


def burst(service: JitService, targets: list[str], first_source: int) -> tuple[Outcome, list[int]]:
    grants = []
    for n, target in enumerate(targets):
        gid = service.request(REQUESTER, target, "ssh", timedelta(hours=1),
                              source_for(first_source + n), "bench").grant.id
        service.approve(gid, APPROVER)
        grants.append(gid)
    statuses: Counter[str] = Counter()
    lock = threading.Lock()
    start = threading.Barrier(len(grants) + 1)

    def open_one(gid: int) -> None:
        start.wait()
        status = service.open(gid).status
        with lock:
            statuses[status.value] += 1

    threads = [threading.Thread(target=open_one, args=(gid,)) for gid in grants]
    for thread in threads:
        thread.start()
    start.wait()
    t0 = time.perf_counter()
    for thread in threads:
        thread.join()
    return Outcome(time.perf_counter() - t0, statuses), grants


def check_rules(emulator: Emulator, service: JitService, grants: list[int]) -> str:
    """'' if every grant's rule is in place and unique: an NSG priority inside the band, or
    a DNAT rule at a mapped port inside the range."""
    by_target: dict[str, list[int]] = {}
    for gid in grants:
        grant = service.get(gid)
        if grant.status is not Status.ACTIVE:
            return f"#{gid} is {grant.status.value}: {grant.error}"
        by_target.setdefault(str(grant.target), []).append(gid)
    for target, ids in by_target.items():
        if target.startswith("hub-"):
            rules = {r["name"]: int(r["destinationPorts"][0])
                     for r in emulator.ask(f"dnat {target.removeprefix('hub-')}")}
            where, low, high = "fw-hub", 50000, 50999
        else:
            where = target.replace("vm-", "nsg-")
            rules = {r["name"]: r["properties"]["priority"] for r in emulator.ask(f"rules {where}")}
            low, high = 100, 199
        missing = [gid for gid in ids if f"jit-{gid}" not in rules]
        if missing:
            return f"{where} lacks the rules of {missing}"
        slots = [rules[f"jit-{gid}"] for gid in ids]
        if len(set(slots)) != len(slots) or not all(low <= p <= high for p in slots):
            return f"{where}: {sorted(slots)} are not unique inside {low}-{high}"
    return ""


def run(database_url: str | None, op_delay: float, tmp: Path) -> Report:
    report = Report("azure_burst")
    emulator = Emulator(op_delay)
    try:
        with scratch_database(database_url, tmp) as url:
            report.context.update(database=database_label(url), emulator="separate process",
                                  op_delay_s=op_delay, poll_interval_s=POLL, grants=GRANTS)
            store = Store.from_url(url)
            provider = AzureProvider(credential=StaticTokenCredential(), polling_interval=POLL,
                                     client_options={"connection_verify": emulator.ca_bundle})
            service = JitService(store, policy(emulator.url), {"azure": provider},
                                 LogNotifier(), SystemClock())
            scenarios = [("one NSG", ["vm-0"] * GRANTS, GRANTS),
                         ("ten NSGs", [f"vm-{1 + n % 10}" for n in range(GRANTS)],
                          GRANTS // 10),
                         ("one firewall, classic", ["hub-classic"] * GRANTS, GRANTS),
                         ("one firewall, policy", ["hub-policy"] * GRANTS, GRANTS)]
            for offset, (name, targets, per_resource) in enumerate(scenarios):
                emulator.ask("clear")
                progress(f"{name}: {GRANTS} simultaneous opens")
                outcome, grants = burst(service, targets, first_source=offset * 1000)
                problem = check_rules(emulator, service, grants)
                counts = emulator.ask("counts")
                report.add(f"{name}: all open after", outcome.seconds, "s")
                ratio = outcome.seconds / op_delay
                report.add(f"{name}: ratio to one write", ratio, "x", target="under 3x",
                           met=ratio < 3)
                report.add(f"{name}: accepted writes (PUTs)", counts.get("accepted writes", 0),
                           "")
                report.add(f"{name}: ratio to writing grant by grant",
                           outcome.seconds / (per_resource * op_delay), "x")
                report.context[f"{name}: grants by status"] = dict(outcome.statuses)
                report.context[f"{name}: rules checked"] = problem or "all present, unique"
                report.context[f"{name}: ARM answers"] = counts
            store.dispose()
    finally:
        emulator.stop()
    return report


def main(argv: list[str] | None = None) -> None:
    import tempfile

    parser = argument_parser(__doc__)
    parser.add_argument("--op-delay", type=float, default=OP_DELAY, metavar="S",
                        help=f"seconds each ARM write takes to finish (default {OP_DELAY})")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="jit-bench-") as tmp:
        report = run(args.database_url, args.op_delay, Path(tmp))
    report.emit(args.json)


if __name__ == "__main__":
    main()
