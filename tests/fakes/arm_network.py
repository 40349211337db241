"""Virtual networks, subnets and network interfaces for the ARM emulator: state and ARM JSON.

Read-only over HTTP: tests seed them with `ArmEmulator.add_vnet`, `add_subnet` and `add_nic`,
and the emulator serves them as GETs. The JSON follows the vendor examples of the REST API
specification (Azure/azure-rest-api-specs, Microsoft.Network stable 2024-05-01:
NetworkInterfaceGet.json, NetworkInterfaceListAll.json, VirtualNetworkListAll.json,
SubnetGet.json), trimmed to what a network without public IPs, peerings or load balancers has:
a NIC names its `virtualMachine`, its `networkSecurityGroup` and, per IP configuration, its
`subnet`; a subnet names its `networkSecurityGroup` and, back, the IP configurations in it.
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

Json = dict[str, Any]

VNET_TYPE = "Microsoft.Network/virtualNetworks"
SUBNET_TYPE = "Microsoft.Network/virtualNetworks/subnets"
NIC_TYPE = "Microsoft.Network/networkInterfaces"
IP_CONFIGURATION_TYPE = "Microsoft.Network/networkInterfaces/ipConfigurations"
IP_CONFIGURATION = "ipconfig1"  # the one IP configuration each emulated NIC has

_ID = re.compile(
    r"/subscriptions/(?P<subscription>[^/]+)/resourceGroups/(?P<group>[^/]+)"
    r"/providers/Microsoft\.Network/(?P<kind>[^/]+)/(?P<name>[^/]+)"
    r"(?:/(?P<child_kind>[^/]+)/(?P<child>[^/]+))?",
    re.IGNORECASE,
)


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


def _etag() -> str:
    return f'W/"{uuid.uuid4()}"'


def _group_id(subscription: str, resource_group: str) -> str:
    return f"/subscriptions/{subscription}/resourceGroups/{resource_group}"


@dataclass
class Subnet:
    name: str
    address_prefix: ipaddress.IPv4Network | ipaddress.IPv6Network
    nsg_id: str | None = None
    etag: str = field(default_factory=_etag)


@dataclass
class Vnet:
    subscription: str
    resource_group: str
    name: str
    location: str
    address_prefix: ipaddress.IPv4Network | ipaddress.IPv6Network
    subnets: dict[str, Subnet] = field(default_factory=dict)
    etag: str = field(default_factory=_etag)
    resource_guid: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def id(self) -> str:
        return (f"{_group_id(self.subscription, self.resource_group)}"
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
    etag: str = field(default_factory=_etag)
    resource_guid: str = field(default_factory=lambda: str(uuid.uuid4()))
    mac_address: str = field(default_factory=lambda: "-".join(
        f"{byte:02X}" for byte in (0x00, 0x0D, 0x3A, *uuid.uuid4().bytes[:3])))

    @property
    def id(self) -> str:
        return (f"{_group_id(self.subscription, self.resource_group)}"
                f"/providers/Microsoft.Network/networkInterfaces/{self.name}")

    @property
    def ip_configuration_id(self) -> str:
        return f"{self.id}/ipConfigurations/{IP_CONFIGURATION}"


def _reference(resource_id: str | None) -> Json:
    return {"networkSecurityGroup": {"id": resource_id}} if resource_id else {}


def render_subnet(vnet: Vnet, subnet: Subnet, nics: Iterable[Nic]) -> Json:
    """A subnet as GET .../subnets/{name} answers it; `nics`: every NIC, to find those in it."""
    subnet_id = vnet.subnet_id(subnet.name).lower()
    in_it = [{"id": nic.ip_configuration_id} for nic in nics
             if nic.subnet_id.lower() == subnet_id]
    properties: Json = {"provisioningState": "Succeeded",
                        "addressPrefix": str(subnet.address_prefix),
                        **_reference(subnet.nsg_id)}
    if in_it:
        properties["ipConfigurations"] = in_it
    properties.update(privateEndpointNetworkPolicies="Disabled",
                      privateLinkServiceNetworkPolicies="Enabled")
    return {"name": subnet.name, "id": vnet.subnet_id(subnet.name), "etag": subnet.etag,
            "type": SUBNET_TYPE, "properties": properties}


def render_vnet(vnet: Vnet, nics: Iterable[Nic]) -> Json:
    """A virtual network with its subnets inline, as GET and the lists answer it."""
    every_nic = list(nics)
    return {
        "name": vnet.name, "id": vnet.id, "etag": vnet.etag, "type": VNET_TYPE,
        "location": vnet.location,
        "properties": {
            "provisioningState": "Succeeded",
            "resourceGuid": vnet.resource_guid,
            "addressSpace": {"addressPrefixes": [str(vnet.address_prefix)]},
            "dhcpOptions": {"dnsServers": []},
            "subnets": [render_subnet(vnet, subnet, every_nic)
                        for subnet in vnet.subnets.values()],
            "virtualNetworkPeerings": [],
            "enableDdosProtection": False,
        },
    }


def render_nic(nic: Nic) -> Json:
    """A network interface with its one IP configuration, as GET and the lists answer it."""
    address = ipaddress.ip_address(nic.private_ip)
    ip_configuration = {
        "name": IP_CONFIGURATION, "id": nic.ip_configuration_id, "etag": nic.etag,
        "type": IP_CONFIGURATION_TYPE,
        "properties": {
            "provisioningState": "Succeeded",
            "privateIPAddress": nic.private_ip,
            "privateIPAllocationMethod": "Static",
            "subnet": {"id": nic.subnet_id},
            "primary": True,
            "privateIPAddressVersion": f"IPv{address.version}",
        },
    }
    properties: Json = {
        "provisioningState": "Succeeded",
        "resourceGuid": nic.resource_guid,
        "ipConfigurations": [ip_configuration],
        "dnsSettings": {"dnsServers": [], "appliedDnsServers": []},
        "enableAcceleratedNetworking": False,
        "vnetEncryptionSupported": False,
        "enableIPForwarding": False,
        "disableTcpStateTracking": False,
        **_reference(nic.nsg_id),
        "nicType": "Standard",
    }
    if nic.vm_id is not None:
        properties.update(macAddress=nic.mac_address, primary=nic.primary,
                          virtualMachine={"id": nic.vm_id})
    return {"name": nic.name, "id": nic.id, "etag": nic.etag, "type": NIC_TYPE,
            "location": nic.location, "properties": properties}
