"""A local Azure Resource Manager for network security groups, as moto's server is for AWS.

The real azure-mgmt-network SDK talks to it over HTTPS (the SDK only sends bearer tokens over
TLS), trusting a CA made for the emulator alone:

    with ArmEmulator() as arm:
        arm.add_nsg(SUB, "rg-app", "nsg-app")
        client = network_client(arm, SUB)                  # tests/support/azure.py
        client.security_rules.begin_create_or_update(
            "rg-app", "nsg-app", "jit-1",
            {"properties": rule_properties(100, 22, source="203.0.113.7")}).result()
        assert arm.rule(SUB, "rg-app", "nsg-app", "jit-1")["properties"]["priority"] == 100

It answers like ARM as recorded (tests/fakes/reference/azure/, checked by
tests/integration/test_arm_emulator_conformance.py): `Authorization: Bearer ...` and an
`api-version` are required (any version is accepted); NSG and rule PUT/DELETE are asynchronous
(201/200 with `Azure-AsyncOperation`; DELETE 202 with `Location` too) and finish `op_delay`
seconds later; one write per NSG at a time (409 AnotherOperationInProgress); the NSG's etag
changes when a write starts and when it ends, and every rule carries the NSG's etag; rules are
validated the way the network provider does it. Around the NSGs, the network they protect
(virtual networks, subnets, network interfaces) can be seeded and read.

Azure Firewalls answer like ARM as recorded (tests/fakes/reference/azure-firewall/, checked by
tests/integration/test_arm_firewall_conformance.py), through the same operations, faults and
`If-Match`:

    arm.add_firewall(SUB, "rg-edge", "fw-edge", public_ip="198.51.100.10")
    client.azure_firewalls.begin_create_or_update("rg-edge", "fw-edge", firewall).result()
    arm.nat_collection(SUB, "rg-edge", "fw-edge", "jit")     # as the firewall's GET shows it

- classic rules: `azureFirewalls/{name}` is read and PUT whole (201/200 "Updating",
  `Azure-AsyncOperation`, `Azure-AsyncNotification: Enabled`; DELETE 202); its etag, W/"<guid>",
  changes when a write starts and ends and is on every collection; NAT collections are
  validated (action Dnat|Snat, "DNAT" accepted and echoed "Dnat", priority 100-65000, names
  unique in the firewall, priorities per kind of collection, rule fields).
- firewall policies (seeded, GET only) and their `ruleCollectionGroups/{name}` (GET, list, PUT
  of the whole group 201/200 polled at .../nfvOperations/{id}, DELETE): the etag is a bare GUID
  that changes per PUT; one group write at a time per policy; NAT collections
  (FirewallPolicyNatRuleCollection, NatRule with ipProtocols) validated as the classic ones.

The modules, one job each:
- server.py: `ArmEmulator`, the HTTPS server, its knobs, seeding and reading back without HTTP.
- gateway.py: ARM's front door: authentication, api-version, throttling, routing, ARM's
  headers, and the record of every request (`Call`) with the ARM action it stands for.
- routing.py: requests, routes (path patterns and their ARM actions), list pages.
- model.py: the resources: resource groups, NSGs and rules, virtual networks, subnets, NICs,
  firewalls, firewall policies and their rule collection groups.
- nsgs.py, network.py: each kind of resource: its routes, its HTTP answers, its ARM JSON.
- security_rules.py: a rule's validation and stored form, the default rules.
- firewalls.py, firewall_policies.py: Azure Firewalls, firewall policies and their rule
  collection groups; firewall_rules.py: their rule collections' validation and stored form.
- operations.py: long-running operations (Azure-AsyncOperation / Location polling), the one
  writer per resource, `If-Match`.
- faults.py: `Faults`, switches for 429 with Retry-After, AnotherOperationInProgress and
  injected failures.
- errors.py: ARM's error answers.

A new kind of resource is a dataclass in model.py, a dict for it in `ResourceGroup`, a module
like nsgs.py (routes, `serve`, seeding, JSON), and its place in `ArmEmulator.__init__`'s list
of kinds; operations, faults and the gateway serve it as they are (firewalls.py and
firewall_policies.py were added that way).

Choices where Azure's exact answer is not on record (each marked in the code):
- A rule request (GET, PUT, DELETE, list) under an NSG that does not exist answers 404
  ResourceNotFound naming the NSG, DELETE included: a caller cannot mistake a vanished NSG for a
  deleted rule. A rule DELETE of a missing rule in an existing NSG answers 204, like ARM.
- A flat rule body (no `properties`) answers 400 InvalidRequestFormat saying 'properties' is
  missing; both singular and plural forms of a field (e.g. sourceAddressPrefix and
  sourceAddressPrefixes) answer 400 InvalidRequestFormat.
- 412 PreconditionFailed messages, the 404 for an unknown operation id, and `Retry-After`
  whole seconds only (the SDK parses it with int(); ARM sends 10, the emulator 0 by default).
- A failed operation leaves the rule and the NSG in provisioningState "Failed".
- A subscription-wide list in a subscription the emulator holds no resource group of answers
  404 SubscriptionNotFound.
- Firewall validation errors (codes and wording, firewall_rules.py); a group request under a
  missing policy answers 404 naming the policy; the ARM action of an nfvOperations poll.
"""

from tests.fakes.arm.errors import ArmError
from tests.fakes.arm.faults import Faults
from tests.fakes.arm.firewall_policies import GROUP_DELETE, GROUP_READ, GROUP_WRITE, POLICY_READ
from tests.fakes.arm.firewalls import FIREWALL_DELETE, FIREWALL_READ, FIREWALL_WRITE
from tests.fakes.arm.gateway import Call
from tests.fakes.arm.network import NIC_READ, SUBNET_READ, VNET_READ
from tests.fakes.arm.nsgs import (
    NSG_DELETE,
    NSG_READ,
    NSG_TYPE,
    NSG_WRITE,
    RULE_DELETE,
    RULE_READ,
    RULE_TYPE,
    RULE_WRITE,
)
from tests.fakes.arm.operations import (
    NFV_OPERATION_READ,
    OPERATION_READ,
    OPERATION_RESULT_READ,
)
from tests.fakes.arm.security_rules import DEFAULT_RULES, MAX_RULES, rule_properties
from tests.fakes.arm.server import ArmEmulator

__all__ = [
    "DEFAULT_RULES",
    "FIREWALL_DELETE",
    "FIREWALL_READ",
    "FIREWALL_WRITE",
    "GROUP_DELETE",
    "GROUP_READ",
    "GROUP_WRITE",
    "MAX_RULES",
    "NFV_OPERATION_READ",
    "NIC_READ",
    "NSG_DELETE",
    "NSG_READ",
    "NSG_TYPE",
    "NSG_WRITE",
    "OPERATION_READ",
    "OPERATION_RESULT_READ",
    "POLICY_READ",
    "RULE_DELETE",
    "RULE_READ",
    "RULE_TYPE",
    "RULE_WRITE",
    "SUBNET_READ",
    "VNET_READ",
    "ArmEmulator",
    "ArmError",
    "Call",
    "Faults",
    "rule_properties",
]
