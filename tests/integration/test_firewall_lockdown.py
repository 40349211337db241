"""jit enable / disable on targets behind an Azure Firewall: standing DNAT rules to a managed
port recorded whole and removed, put back exactly; the posture watch of the firewall.

The real azure-mgmt-network SDK over HTTPS to the ARM emulator, classic rules and Firewall
Policy, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from jitcore.cli import cli
from jitcore.domain import Status
from jitcore.errors import ProviderError
from jitcore.lockdown import Lockdowns
from jitcore.policy_file import parse_policy
from jitcore.service import JitService
from jitcore.store import Store
from tests.fakes.arm import FIREWALL_WRITE, ArmEmulator, Call, rule_properties
from tests.support.azure import SUBSCRIPTION, emulator_provider
from tests.support.fixtures import ManualClock, RecordingNotifier
from tests.support.policies import APPROVER, REQUESTER, firewall_policy_data

ADMIN = "cli:ops"
HUB, FIREWALL, POLICY, PUBLIC_IP = "rg-hub", "fw-hub", "fwpol-hub", "20.30.40.50"
SPOKE, NSG = "rg-spoke", "nsg-spoke"
VM, OTHER_VM = "10.1.0.4", "10.1.0.9"  # hub-vm's address (ssh 22, rdp 3389), another VM's


def dnat(name: str, port: int, to: str, to_port: int, sources: tuple[str, ...] = ("*",),
         protocol: str = "TCP", **extra: Any) -> dict[str, Any]:
    """A DNAT rule, its protocol under "protocol" (each mode names the field differently)."""
    return {"name": name, "sourceAddresses": list(sources), "destinationAddresses": [PUBLIC_IP],
            "destinationPorts": [str(port)], "translatedAddress": to,
            "translatedPort": str(to_port), "protocol": protocol, **extra}


def classic(name: str, priority: int, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {"name": name, "properties": {"priority": priority, "action": {"type": "Dnat"},
                                         "rules": [_as(rule, "protocols") for rule in rules]}}


def in_policy(name: str, priority: int, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {"ruleCollectionType": "FirewallPolicyNatRuleCollection", "name": name,
            "priority": priority, "action": {"type": "DNAT"},
            "rules": [{**_as(rule, "ipProtocols"), "ruleType": "NatRule"} for rule in rules]}


def _as(rule: dict[str, Any], key: str) -> dict[str, Any]:
    return {**{k: v for k, v in rule.items() if k != "protocol"}, key: [rule["protocol"]]}


# Standing rules: (collection, its priority, rules); in policy mode, by rule collection group.
INBOUND = [dnat("web-in", 443, VM, 443),  # not a managed port
           dnat("ssh-in", 2222, VM, 22, description="ssh for the vendor"),  # managed
           dnat("other-ssh", 2223, OTHER_VM, 22),  # another VM
           dnat("rdp-gw", 3392, VM, 3389, sources=("10.20.0.0/16",)),  # managed
           dnat("ssh-udp", 2224, VM, 22, protocol="UDP")]  # ssh is TCP
VENDOR = [dnat("rdp-in", 3390, VM, 3389, sources=("192.0.2.0/24",))]  # managed: emptied
TAIL = [dnat("api-in", 8443, OTHER_VM, 8443)]
ADMIN_GROUP = [dnat("rdp-admin", 3391, VM, 3389, sources=("198.51.100.0/24",))]


def seed(emulator: ArmEmulator, mode: str) -> None:
    """The firewall (classic) or policy (groups `standing` and `admin`) with standing rules."""
    if mode == "classic":
        emulator.add_firewall(SUBSCRIPTION, HUB, FIREWALL, public_ip=PUBLIC_IP, nat_collections=[
            classic("inbound", 200, INBOUND), classic("vendor", 300, VENDOR),
            classic("tail", 400, TAIL)], network_collections=[
            {"name": "dns", "properties": {"priority": 100, "action": {"type": "Allow"},
                                           "rules": [{"name": "dns", "protocols": ["UDP"],
                                                      "sourceAddresses": ["10.0.0.0/8"],
                                                      "destinationAddresses": ["*"],
                                                      "destinationPorts": ["53"]}]}}])
        return
    emulator.add_rule_collection_group(SUBSCRIPTION, HUB, POLICY, "standing", 200, [
        in_policy("inbound", 100, INBOUND), in_policy("vendor", 150, VENDOR),
        in_policy("tail", 200, TAIL)])
    emulator.add_rule_collection_group(SUBSCRIPTION, HUB, POLICY, "admin", 300, [
        in_policy("admin-nat", 100, ADMIN_GROUP)])


PLANNED = {"classic": ["inbound/rdp-gw", "inbound/ssh-in", "vendor/rdp-in"],
           "policy": ["admin/admin-nat/rdp-admin", "standing/inbound/rdp-gw",
                      "standing/inbound/ssh-in", "standing/vendor/rdp-in"]}


# What changes with every write: etags and provisioning states.
_UNSTABLE = frozenset({"etag", "provisioningState"})


def stripped(value: Any) -> Any:
    """ARM JSON without what changes with every write."""
    if isinstance(value, dict):
        return {k: stripped(v) for k, v in value.items() if k not in _UNSTABLE}
    if isinstance(value, list):
        return [stripped(v) for v in value]
    return value


def content(emulator: ArmEmulator, mode: str) -> Any:
    """The firewall as ARM shows it (classic), or every rule collection group by name."""
    if mode == "classic":
        return stripped(emulator.firewall(SUBSCRIPTION, HUB, FIREWALL))
    ids = emulator.firewall_policy(SUBSCRIPTION, HUB, POLICY)["properties"]["ruleCollectionGroups"]
    names = [item["id"].rsplit("/", 1)[1] for item in ids]
    return {name: stripped(emulator.rule_collection_group(SUBSCRIPTION, HUB, POLICY, name))
            for name in names}


def dnat_names(emulator: ArmEmulator, mode: str) -> set[str]:
    """Every DNAT rule of the firewall, as collection/rule (group/collection/rule)."""
    found = content(emulator, mode)
    if mode == "classic":
        return {f"{c['name']}/{r['name']}" for c in found["properties"]["natRuleCollections"]
                for r in c["properties"]["rules"]}
    return {f"{g}/{c['name']}/{r['name']}" for g, group in found.items()
            for c in group["properties"]["ruleCollections"] for r in c["rules"]}


@pytest.fixture
def emulator(arm_emulator: ArmEmulator) -> ArmEmulator:
    arm_emulator.add_firewall(SUBSCRIPTION, HUB, FIREWALL, public_ip=PUBLIC_IP)
    arm_emulator.add_firewall_policy(SUBSCRIPTION, HUB, POLICY)
    arm_emulator.add_nsg(SUBSCRIPTION, SPOKE, NSG)
    return arm_emulator


@pytest.fixture(params=["classic", "policy"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def make_service(store: Store, clock: ManualClock, notifier: RecordingNotifier,
                 emulator: ArmEmulator, mode: str, nsg: str | None = None) -> JitService:
    data = firewall_policy_data(emulator.url, SUBSCRIPTION, mode=mode, nsg=nsg)
    return JitService(store, parse_policy(data, "test-policy.yaml"),
                      {"azure": emulator_provider(emulator)}, notifier, clock)


@pytest.fixture
def service(store: Store, clock: ManualClock, notifier: RecordingNotifier,
            emulator: ArmEmulator, mode: str) -> JitService:
    return make_service(store, clock, notifier, emulator, mode)


def grant(service: JitService, port: str = "ssh") -> int:
    gid = service.request(REQUESTER, "hub-vm", port, timedelta(minutes=30), "203.0.113.7",
                          "fix replication").grant.id
    service.approve(gid, APPROVER)
    opened = service.open(gid)
    assert opened.status is Status.ACTIVE, opened.error
    return gid


# ---- enable and disable ---------------------------------------------------------------------


def test_enable_then_disable_is_the_identity(service: JitService, emulator: ArmEmulator,
                                             mode: str) -> None:
    seed(emulator, mode)
    before = content(emulator, mode)
    lockdowns = Lockdowns(service)
    emulator.clear_calls()

    plan = lockdowns.plan_enable("hub-vm")
    assert sorted(rule.ref for rule in plan.remove) == PLANNED[mode]
    assert (plan.add, plan.blockers) == ((), ())  # no deny rules: DNAT forwards only what it names
    ssh = next(rule for rule in plan.remove if rule.ref.endswith("ssh-in"))
    assert "DNAT TCP 20.30.40.50:2222 from * -> 10.1.0.4:22" in ssh.summary
    assert ssh.body["rule"]["description"] == "ssh for the vendor"
    lockdowns.enable("hub-vm", ADMIN, plan)

    during = dnat_names(emulator, mode)
    assert not set(PLANNED[mode]) & during
    unmanaged = {"inbound/web-in", "inbound/other-ssh", "inbound/ssh-udp", "tail/api-in"}
    prefix = "" if mode == "classic" else "standing/"
    assert {prefix + ref for ref in unmanaged} <= during  # only managed ports went
    if mode == "classic":
        assert emulator.nat_collection(SUBSCRIPTION, HUB, FIREWALL, "vendor") is None  # emptied
    else:
        assert emulator.rule_collection_group(SUBSCRIPTION, HUB, POLICY, "admin") is None
        standing = emulator.rule_collection_group(SUBSCRIPTION, HUB, POLICY, "standing")
        assert standing is not None
        assert [c["name"] for c in standing["properties"]["ruleCollections"]] == \
            ["inbound", "tail"]
    [status] = lockdowns.status(["hub-vm"])
    assert status.enabled and len(status.snapshot) == len(PLANNED[mode])

    gid = grant(service)  # grants open meanwhile, in jit's own collection
    assert lockdowns.check_posture() == {"hub-vm": []}

    assert lockdowns.disable("hub-vm", ADMIN) == []
    assert service.get(gid).status is Status.CLOSED
    assert content(emulator, mode) == before  # rule for rule, in order, collections whole
    assert not [c.path for c in emulator.calls if "networksecuritygroups" in c.path.lower()]


def test_enable_leaves_jits_collection_and_active_grants_alone(
        service: JitService, emulator: ArmEmulator, mode: str) -> None:
    seed(emulator, mode)
    before = content(emulator, mode)
    gid = grant(service, "rdp")
    with_grant = jits_rules(emulator, mode)
    assert list(with_grant) == [f"jit-{gid}"]
    lockdowns = Lockdowns(service)

    lockdowns.enable("hub-vm", ADMIN, lockdowns.plan_enable("hub-vm"))
    assert jits_rules(emulator, mode) == with_grant
    assert lockdowns.check_posture() == {"hub-vm": []}

    assert lockdowns.disable("hub-vm", ADMIN) == []  # revokes the grant, then restores
    assert service.get(gid).status is Status.CLOSED
    assert content(emulator, mode) == before


def jits_rules(emulator: ArmEmulator, mode: str) -> dict[str, Any]:
    if mode == "classic":
        collection = emulator.nat_collection(SUBSCRIPTION, HUB, FIREWALL, "jit")
        rules = collection["properties"]["rules"] if collection else []
    else:
        group = emulator.rule_collection_group(SUBSCRIPTION, HUB, POLICY, "jit")
        rules = group["properties"]["ruleCollections"][0]["rules"] if group else []
    return {rule["name"]: rule for rule in rules}


def test_a_target_with_a_firewall_and_an_nsg_closes_both_and_restores_both(
        store: Store, clock: ManualClock, notifier: RecordingNotifier, emulator: ArmEmulator,
        mode: str) -> None:
    seed(emulator, mode)
    emulator.add_rule(SUBSCRIPTION, SPOKE, NSG, "allow-https",
                      rule_properties(300, 443, source="10.0.1.0/26", destination=VM))
    service = make_service(store, clock, notifier, emulator, mode, nsg=NSG)
    before, nsg_before = content(emulator, mode), nsg_content(emulator)
    lockdowns = Lockdowns(service)

    plan = lockdowns.plan_enable("hub-vm")
    assert sorted(rule.ref for rule in plan.remove) == PLANNED[mode]
    assert [line.split(":")[0] for line in plan.add] == ["jit-deny-22-tcp", "jit-deny-3389-tcp"]
    lockdowns.enable("hub-vm", ADMIN, plan)
    assert nsg_content(emulator)["jit-deny-22-tcp"]["access"] == "Deny"
    assert not set(PLANNED[mode]) & dnat_names(emulator, mode)

    gid = grant(service)  # a DNAT rule and an NSG rule, ahead of the deny rules
    assert nsg_content(emulator)[f"jit-{gid}"]["priority"] == 100
    assert lockdowns.check_posture() == {"hub-vm": []}

    assert lockdowns.disable("hub-vm", ADMIN) == []
    assert nsg_content(emulator) == nsg_before
    assert content(emulator, mode) == before


def test_a_firewall_refusing_enable_leaves_the_nsg_as_it_was(
        store: Store, clock: ManualClock, notifier: RecordingNotifier,
        emulator: ArmEmulator) -> None:
    """The NSG is closed first; when the firewall then refuses its write, the NSG is put back
    and nothing is recorded: the target is not half enabled."""
    seed(emulator, "classic")
    service = make_service(store, clock, notifier, emulator, "classic", nsg=NSG)
    before, nsg_before = content(emulator, "classic"), nsg_content(emulator)
    lockdowns = Lockdowns(service)
    plan = lockdowns.plan_enable("hub-vm")

    def refuse(call: Call, headers: Message) -> None:
        if call.method == "GET" and call.path.lower().endswith(f"/azurefirewalls/{FIREWALL}"):
            emulator.faults.fail_writes_next(1, status=400, code="AzureFirewallUpdateFailed",
                                             message="The firewall is being upgraded.")

    ArmEmulator.observers.append(refuse)
    try:
        with pytest.raises(ProviderError, match=r"firewall fw-hub .*being upgraded"):
            lockdowns.enable("hub-vm", ADMIN, plan)
    finally:
        ArmEmulator.observers.remove(refuse)
        emulator.faults.heal()
    assert nsg_content(emulator) == nsg_before  # the deny rules went again
    assert content(emulator, "classic") == before
    assert not lockdowns.status(["hub-vm"])[0].enabled


def nsg_content(emulator: ArmEmulator) -> dict[str, Any]:
    return {rule["name"]: stripped(rule["properties"])
            for rule in emulator.rules(SUBSCRIPTION, SPOKE, NSG)}


# ---- posture and differences ----------------------------------------------------------------


def test_posture_reports_a_foreign_dnat_rule_and_an_edited_jit_collection(
        service: JitService, emulator: ArmEmulator, notifier: RecordingNotifier,
        mode: str) -> None:
    seed(emulator, mode)
    lockdowns = Lockdowns(service)
    lockdowns.enable("hub-vm", ADMIN, lockdowns.plan_enable("hub-vm"))
    assert lockdowns.check_posture() == {"hub-vm": []}

    sneaky = [dnat("back-in", 4022, VM, 22, sources=("203.0.113.0/24",))]
    edited = [dnat("backdoor", 4389, VM, 3389), dnat("jit-77", 4080, VM, 8080),
              dnat("jit-78", 4081, OTHER_VM, 8080),  # another target's grant, perhaps
              dnat("jit-79", 4082, VM, 22)]  # a grant from anywhere
    if mode == "classic":
        add_collections(emulator, classic("sneaky", 500, sneaky), classic("jit", 600, edited))
    else:
        emulator.add_rule_collection_group(SUBSCRIPTION, HUB, POLICY, "sneaky", 500,
                                           [in_policy("sneaky", 100, sneaky)])
        emulator.add_rule_collection_group(SUBSCRIPTION, HUB, POLICY, "jit", 600, [
            in_policy("jit", 100, edited), in_policy("extra", 200, TAIL)])

    problems = lockdowns.check_posture()["hub-vm"]
    g = "" if mode == "classic" else "sneaky/"
    j = "" if mode == "classic" else "jit/"
    assert problems[0] == (f"DNAT rule {g}sneaky/back-in of {where(mode)} forwards ssh (22) "
                           "outside jit: DNAT TCP 20.30.40.50:4022 from 203.0.113.0/24 -> "
                           "10.1.0.4:22")
    edits = [p for p in problems if "in jit's collection" in p]
    assert [p.split(" ", 1)[0] for p in edits] == [f"{j}jit/backdoor", f"{j}jit/jit-77",
                                                   f"{j}jit/jit-79"]
    assert "is not one of jit's rules (jit names its rules jit-<grant id>)" in edits[0]
    assert "on a port that is not a managed port of hub-vm" in edits[1]
    assert "lets ssh in from wider than its policy allows" in edits[2]
    if mode == "policy":
        assert problems[-1] == (f"jit's rule collection group jit in {where(mode)} holds "
                                "collections jit did not make: extra")
    assert len(problems) == (4 if mode == "classic" else 5)
    alerts = [a for a in notifier.alerts if a.startswith("posture of hub-vm")]
    assert len(alerts) == len(problems)


def where(mode: str) -> str:
    if mode == "classic":
        return f"firewall {FIREWALL} (resource group {HUB})"
    return f"firewall policy {POLICY} of firewall {FIREWALL} (resource group {HUB})"


def add_collections(emulator: ArmEmulator, *collections: dict[str, Any]) -> None:
    """Another tool's write: the firewall's NAT collections as they are, and these."""
    current = emulator.firewall(SUBSCRIPTION, HUB, FIREWALL)["properties"]
    kept = [{"name": c["name"], "properties": {k: v for k, v in c["properties"].items()
                                               if k != "provisioningState"}}
            for c in current["natRuleCollections"]]
    networks = [{"name": c["name"], "properties": {k: v for k, v in c["properties"].items()
                                                   if k != "provisioningState"}}
                for c in current["networkRuleCollections"]]
    emulator.add_firewall(SUBSCRIPTION, HUB, FIREWALL, public_ip=PUBLIC_IP,
                          nat_collections=[*kept, *collections], network_collections=networks)


def test_disable_keeps_a_rule_put_back_meanwhile_and_says_it_differs(
        service: JitService, emulator: ArmEmulator, mode: str) -> None:
    seed(emulator, mode)
    lockdowns = Lockdowns(service)
    lockdowns.enable("hub-vm", ADMIN, lockdowns.plan_enable("hub-vm"))
    again = [dnat("rdp-in", 3390, VM, 3389, sources=("192.0.2.7",))]  # by hand, narrower
    if mode == "classic":
        add_collections(emulator, classic("vendor", 300, again))
    else:
        standing = emulator.rule_collection_group(SUBSCRIPTION, HUB, POLICY, "standing")
        assert standing is not None
        collections = stripped(standing["properties"]["ruleCollections"])
        emulator.add_rule_collection_group(SUBSCRIPTION, HUB, POLICY, "standing", 200, [
            *collections, in_policy("vendor", 150, again)])

    differences = lockdowns.disable("hub-vm", ADMIN)
    vendor = "vendor/rdp-in" if mode == "classic" else "standing/vendor/rdp-in"
    assert len(differences) == 1, differences
    assert differences[0].startswith(f"{vendor} is back but differs: now DNAT TCP "
                                     "20.30.40.50:3390 from 192.0.2.7 -> 10.1.0.4:3389, was ")
    assert "192.0.2.0/24" in differences[0]
    assert f"{vendor.rsplit('/', 1)[0]}/rdp-in" in dnat_names(emulator, mode)
    assert not lockdowns.status(["hub-vm"])[0].enabled


def test_a_foreign_write_during_enable_is_kept(
        store: Store, clock: ManualClock, notifier: RecordingNotifier,
        emulator: ArmEmulator) -> None:
    """Someone writes the firewall between jit's read and its write: jit's PUT is refused
    (412), and jit reads again, removes what it planned and keeps the other change."""
    seed(emulator, "classic")
    lockdowns = Lockdowns(make_service(store, clock, notifier, emulator, "classic"))
    plan = lockdowns.plan_enable("hub-vm")
    done = threading.Event()

    def meddle(call: Call, headers: Message) -> None:
        if not done.is_set() and call.method == "GET" and \
                call.path.lower().endswith(f"/azurefirewalls/{FIREWALL}"):
            done.set()
            add_collections(emulator, classic("ops", 700, [dnat("ops-web", 9443, OTHER_VM,
                                                                 443)]))

    ArmEmulator.observers.append(meddle)
    try:
        lockdowns.enable("hub-vm", ADMIN, plan)
    finally:
        ArmEmulator.observers.remove(meddle)
    assert done.is_set()
    writes = [c.status for c in emulator.calls_to(FIREWALL_WRITE)]
    assert writes[0] == 412 and writes[-1] in (200, 201), writes
    names = dnat_names(emulator, "classic")
    assert "ops/ops-web" in names and not set(PLANNED["classic"]) & names


# ---- the CLI --------------------------------------------------------------------------------


class _TokenHandler(BaseHTTPRequestHandler):
    """An App Service managed-identity endpoint: a token for whoever asks with the header."""

    def do_GET(self) -> None:
        if self.headers.get("X-IDENTITY-HEADER") != "emulator-secret":
            self.send_error(401)
            return
        body = json.dumps({"access_token": "emulator-token", "expires_on": "4102444800",
                           "resource": "https://management.azure.com",
                           "token_type": "Bearer"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def identity_endpoint() -> Iterator[str]:
    """Where `jit`'s DefaultAzureCredential gets its token, as on App Service."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _TokenHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/msi/token"
    server.shutdown()
    server.server_close()


def test_cli_enable_and_disable_print_what_they_remove_and_restore(
        db_url: str, emulator: ArmEmulator, identity_endpoint: str, tmp_path: Path) -> None:
    seed(emulator, "classic")
    before = content(emulator, "classic")
    config = tmp_path / "jit.yaml"
    config.write_text(yaml.safe_dump(firewall_policy_data(emulator.url, SUBSCRIPTION)))
    env: dict[str, str | None] = {
        "JIT_CONFIG": str(config), "JIT_DATABASE_URL": db_url,
        "IDENTITY_ENDPOINT": identity_endpoint, "IDENTITY_HEADER": "emulator-secret",
        "REQUESTS_CA_BUNDLE": emulator.ca_bundle}
    env |= dict.fromkeys(("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET",
                          "AZURE_FEDERATED_TOKEN_FILE", "MSI_ENDPOINT", "IMDS_ENDPOINT"))

    def jit(*args: str) -> Any:
        return CliRunner().invoke(cli, list(args), env=env)

    scope = (f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{HUB}/providers/"
             f"Microsoft.Network/azureFirewalls/{FIREWALL}")
    enabled = jit("enable", "hub-vm", "--yes")
    assert enabled.exit_code == 0, enabled.output
    lines = enabled.output.splitlines()
    assert lines[0] == "enable jit on hub-vm:"
    assert lines[1] == (f"  remove (recorded, restored by disable): {scope} inbound/ssh-in: "
                        "DNAT TCP 20.30.40.50:2222 from * -> 10.1.0.4:22 (collection inbound "
                        "at priority 200)")
    assert lines[2].startswith(f"  remove (recorded, restored by disable): {scope} "
                               "inbound/rdp-gw: DNAT TCP 20.30.40.50:3392 from 10.20.0.0/16")
    assert lines[3].startswith(f"  remove (recorded, restored by disable): {scope} "
                               "vendor/rdp-in: DNAT TCP 20.30.40.50:3390 from 192.0.2.0/24")
    assert lines[-1] == "jit enabled on hub-vm"
    assert not set(PLANNED["classic"]) & dnat_names(emulator, "classic")

    disabled = jit("disable", "hub-vm", "--yes")
    assert disabled.exit_code == 0, disabled.output
    assert f"  restore: {scope} inbound/ssh-in: DNAT TCP 20.30.40.50:2222" in disabled.output
    assert f"  restore: {scope} vendor/rdp-in: DNAT TCP" in disabled.output
    assert disabled.output.endswith("jit disabled on hub-vm: the firewall is as it was\n")
    assert content(emulator, "classic") == before
