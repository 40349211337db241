"""The emulator's resources: resource groups holding NSGs (with their rules), virtual networks
(with their subnets), network interfaces, Azure Firewalls (with their rule collections) and
firewall policies (with their rule collection groups), each with an etag.

`Resource` is what ARM writes asynchronously: a top-level resource with a provisioning state
and at most one write in progress (`operation`). A new kind of resource is a dataclass
deriving from it (its `resource_type` names it in ids), a dict in `ResourceGroup`, and a
module serving it (see nsgs.py).
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from tests.fakes.arm.errors import ArmError, Json, resource_group_not_found

if TYPE_CHECKING:
    from tests.fakes.arm.operations import Operation

_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,78}[A-Za-z0-9_])?")
_ID = re.compile(
    r"/subscriptions/(?P<subscription>[^/]+)/resourceGroups/(?P<group>[^/]+)"
    r"/providers/Microsoft\.Network/(?P<kind>[^/]+)/(?P<name>[^/]+)"
    r"(?:/(?P<child_kind>[^/]+)/(?P<child>[^/]+))?",
    re.IGNORECASE,
)
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def new_etag() -> str:
    return f'W/"{uuid.uuid4()}"'


def new_guid() -> str:
    return str(uuid.uuid4())


def normalise_location(value: str) -> str:
    """ARM's form of a location: "West Europe" is westeurope."""
    return value.replace(" ", "").lower()


def group_id(subscription: str, resource_group: str) -> str:
    return f"/subscriptions/{subscription}/resourceGroups/{resource_group}"


def check_name(name: str) -> None:
    """A resource's (or a child's) name, as the network provider accepts it."""
    if not _NAME.fullmatch(name):
        raise ArmError(400, "InvalidResourceName",
                       f"Resource name {name} is invalid. The name can be up to 80 characters "
                       "long. It must begin with a word character, and it must end with a "
                       "word character or with '_'. The name may contain word characters or "
                       "'.', '-', '_'.")


@dataclass(frozen=True)
class ResourceId:
    """The parts of a Microsoft.Network resource id (one level of child at most)."""

    subscription: str
    resource_group: str
    kind: str
    name: str
    child_kind: str | None
    child: str | None


def parse_id(resource_id: str) -> ResourceId:
    """Split an ARM id such as .../virtualNetworks/vnet/subnets/default; ValueError if not one."""
    match = _ID.fullmatch(resource_id)
    if match is None:
        raise ValueError(f"not a Microsoft.Network resource id: {resource_id!r}")
    return ResourceId(match["subscription"], match["group"], match["kind"].lower(), match["name"],
                      match["child_kind"].lower() if match["child_kind"] else None,
                      match["child"])


@dataclass
class Resource:
    """A top-level Microsoft.Network resource that ARM writes asynchronously."""

    resource_type: ClassVar[str]  # as in ids, e.g. "networkSecurityGroups"
    poll: ClassVar[str] = "operations"  # where its operations are polled: .../locations/{l}/{poll}
    notifies: ClassVar[bool] = False  # its writes answer `Azure-AsyncNotification: Enabled`

    subscription: str
    resource_group: str
    name: str
    location: str
    etag: str = field(default_factory=new_etag)
    resource_guid: str = field(default_factory=new_guid)
    state: str = "Succeeded"  # provisioningState
    operation: Operation | None = None  # the write in progress, if any

    @property
    def id(self) -> str:
        return (f"{group_id(self.subscription, self.resource_group)}"
                f"/providers/Microsoft.Network/{self.resource_type}/{self.name}")

    def fresh_etag(self) -> str:
        """A new etag in the resource's form (a weak one, W/"<guid>", unless it says otherwise)."""
        return new_etag()


@dataclass
class Rule:
    name: str
    properties: Json
    state: str = "Succeeded"


@dataclass
class Nsg(Resource):
    resource_type: ClassVar[str] = "networkSecurityGroups"

    tags: Json | None = None
    rules: dict[str, Rule] = field(default_factory=dict)  # by lower-case name, in order made

    def rule_id(self, name: str, kind: str = "securityRules") -> str:
        return f"{self.id}/{kind}/{name}"


FIREWALL_COLLECTION_KINDS = ("applicationRuleCollections", "natRuleCollections",
                             "networkRuleCollections")


@dataclass
class Firewall(Resource):
    """An Azure Firewall (classic rules): its rule collections by kind, stored as
    `{"name", "properties": {"priority", "action", "rules"}}` in the order given."""

    resource_type: ClassVar[str] = "azureFirewalls"
    notifies: ClassVar[bool] = True  # as recorded

    tags: Json | None = None
    sku: Json = field(default_factory=lambda: {"name": "AZFW_VNet", "tier": "Standard"})
    threat_intel_mode: str = "Alert"
    ip_configurations: list[Json] = field(default_factory=list)  # as given, without ids
    public_ip: str | None = None  # the address of its public IP, when seeded with one
    extra: Json = field(default_factory=dict)  # other properties, echoed as given
    collections: dict[str, list[Json]] = field(default_factory=lambda: {
        kind: [] for kind in FIREWALL_COLLECTION_KINDS})


@dataclass
class FirewallPolicy(Resource):
    """A firewall policy; its rule collection groups by lower-case name, in order made."""

    resource_type: ClassVar[str] = "firewallPolicies"
    poll: ClassVar[str] = "nfvOperations"

    tags: Json | None = None
    extra: Json = field(default_factory=dict)  # properties other than the groups, as given
    groups: dict[str, RuleCollectionGroup] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.etag = self.fresh_etag()

    def fresh_etag(self) -> str:
        return new_guid()  # as recorded: a bare GUID


@dataclass
class RuleCollectionGroup(Resource):
    """A rule collection group of a policy (`resource_group`, `name`: those of the group)."""

    resource_type: ClassVar[str] = "ruleCollectionGroups"
    poll: ClassVar[str] = "nfvOperations"

    policy: str = ""
    priority: int = 0
    collections: list[Json] = field(default_factory=list)

    @property
    def id(self) -> str:
        return (f"{group_id(self.subscription, self.resource_group)}/providers/Microsoft.Network"
                f"/firewallPolicies/{self.policy}/ruleCollectionGroups/{self.name}")

    def __post_init__(self) -> None:
        self.etag = self.fresh_etag()

    def fresh_etag(self) -> str:
        return new_guid()


@dataclass
class Subnet:
    name: str
    address_prefix: Network
    nsg_id: str | None = None
    etag: str = field(default_factory=new_etag)


@dataclass
class Vnet:
    subscription: str
    resource_group: str
    name: str
    location: str
    address_prefix: Network
    subnets: dict[str, Subnet] = field(default_factory=dict)
    etag: str = field(default_factory=new_etag)
    resource_guid: str = field(default_factory=new_guid)

    @property
    def id(self) -> str:
        return (f"{group_id(self.subscription, self.resource_group)}"
                f"/providers/Microsoft.Network/virtualNetworks/{self.name}")

    def subnet_id(self, name: str) -> str:
        return f"{self.id}/subnets/{name}"


@dataclass
class Nic:
    subscription: str
    resource_group: str
    name: str
    location: str
    subnet_id: str
    private_ip: str
    nsg_id: str | None = None
    vm_id: str | None = None
    primary: bool = False  # the VM's first NIC; ARM reports `primary` only on attached NICs
    etag: str = field(default_factory=new_etag)
    resource_guid: str = field(default_factory=new_guid)
    mac_address: str = field(default_factory=lambda: "-".join(
        f"{byte:02X}" for byte in (0x00, 0x0D, 0x3A, *uuid.uuid4().bytes[:3])))

    @property
    def id(self) -> str:
        return (f"{group_id(self.subscription, self.resource_group)}"
                f"/providers/Microsoft.Network/networkInterfaces/{self.name}")


@dataclass
class ResourceGroup:
    subscription: str
    name: str
    location: str
    nsgs: dict[str, Nsg] = field(default_factory=dict)  # each kind by lower-case name
    vnets: dict[str, Vnet] = field(default_factory=dict)
    nics: dict[str, Nic] = field(default_factory=dict)
    firewalls: dict[str, Firewall] = field(default_factory=dict)
    firewall_policies: dict[str, FirewallPolicy] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return group_id(self.subscription, self.name)


class Resources:
    """Every resource group the emulator holds; names are case-insensitive, as on ARM.

    Not thread-safe by itself: the emulator holds its lock around every use.
    """

    def __init__(self) -> None:
        self._groups: dict[tuple[str, str], ResourceGroup] = {}

    def add_group(self, subscription: str, name: str, location: str) -> ResourceGroup:
        """The resource group, created if it is missing."""
        return self._groups.setdefault((subscription.lower(), name.lower()), ResourceGroup(
            subscription, name, normalise_location(location)))

    def group(self, subscription: str, name: str) -> ResourceGroup:
        """KeyError if there is no such resource group."""
        return self._groups[(subscription.lower(), name.lower())]

    def find_group(self, subscription: str, name: str) -> ResourceGroup | None:
        return self._groups.get((subscription.lower(), name.lower()))

    def requested_group(self, subscription: str, name: str) -> ResourceGroup:
        """The resource group a request names; ARM's 404 if there is none."""
        group = self.find_group(subscription, name)
        if group is None:
            raise resource_group_not_found(name)
        return group

    def in_subscription(self, subscription: str) -> list[ResourceGroup]:
        """Every resource group of the subscription; ARM's 404 if it holds none."""
        groups = [group for (key, _), group in self._groups.items()
                  if key == subscription.lower()]
        if not groups:
            raise ArmError(404, "SubscriptionNotFound",
                           f"The subscription '{subscription}' could not be found.", gateway=True)
        return groups

    def nsg(self, subscription: str, resource_group: str, name: str) -> Nsg:
        """KeyError if there is no such NSG."""
        return self.group(subscription, resource_group).nsgs[name.lower()]

    def nsg_by_id(self, nsg_id: str) -> Nsg:
        parts = parse_id(nsg_id)
        try:
            if parts.kind != "networksecuritygroups" or parts.child is not None:
                raise KeyError(nsg_id)
            return self.nsg(parts.subscription, parts.resource_group, parts.name)
        except KeyError:
            raise ValueError(f"no network security group {nsg_id} is seeded") from None

    def subnet_by_id(self, subnet_id: str) -> Subnet:
        parts = parse_id(subnet_id)
        try:
            if parts.kind != "virtualnetworks" or parts.child_kind != "subnets" or not parts.child:
                raise KeyError(subnet_id)
            vnet = self.group(parts.subscription, parts.resource_group).vnets[parts.name.lower()]
            return vnet.subnets[parts.child.lower()]
        except KeyError:
            raise ValueError(f"no subnet {subnet_id} is seeded") from None

    def nics(self) -> list[Nic]:
        return [nic for group in self._groups.values() for nic in group.nics.values()]

    def vnets(self) -> list[Vnet]:
        return [vnet for group in self._groups.values() for vnet in group.vnets.values()]
