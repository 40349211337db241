"""The network around the NSGs: virtual networks, subnets and network interfaces.

Read-only over HTTP (GET; other methods answer 405): tests seed them with
`ArmEmulator.add_vnet`, `add_subnet` and `add_nic`, and the emulator serves them one by one or
listed per resource group or per subscription. The JSON follows the vendor examples of the REST
API specification (Azure/azure-rest-api-specs, Microsoft.Network stable 2024-05-01:
NetworkInterfaceGet.json, NetworkInterfaceListAll.json, VirtualNetworkListAll.json,
SubnetGet.json), trimmed to what a network without public IPs, peerings or load balancers has:
a NIC names its `virtualMachine`, its `networkSecurityGroup` and, per IP configuration, its
`subnet`; a subnet names its `networkSecurityGroup` and, back, the IP configurations in it; a
virtual network holds its subnets inline.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from tests.fakes.arm.errors import Json, child_not_found, resource_not_found
from tests.fakes.arm.model import Nic, ResourceGroup, Resources, Subnet, Vnet, normalise_location
from tests.fakes.arm.routing import (
    IN_GROUP,
    IN_SUBSCRIPTION,
    Answer,
    Request,
    Route,
    Settings,
    page,
)

VNET_TYPE = "Microsoft.Network/virtualNetworks"
SUBNET_TYPE = "Microsoft.Network/virtualNetworks/subnets"
NIC_TYPE = "Microsoft.Network/networkInterfaces"
IP_CONFIGURATION_TYPE = "Microsoft.Network/networkInterfaces/ipConfigurations"
IP_CONFIGURATION = "ipconfig1"  # the one IP configuration each emulated NIC has
NIC_READ = "Microsoft.Network/networkInterfaces/read"
VNET_READ = "Microsoft.Network/virtualNetworks/read"
SUBNET_READ = "Microsoft.Network/virtualNetworks/subnets/read"

_VNETS = (*IN_GROUP, "virtualnetworks")


def ip_configuration_id(nic: Nic) -> str:
    return f"{nic.id}/ipConfigurations/{IP_CONFIGURATION}"


def _reference(resource_id: str | None) -> Json:
    return {"networkSecurityGroup": {"id": resource_id}} if resource_id else {}


def render_subnet(vnet: Vnet, subnet: Subnet, nics: Iterable[Nic]) -> Json:
    """A subnet as GET .../subnets/{name} answers it; `nics`: every NIC, to find those in it."""
    subnet_id = vnet.subnet_id(subnet.name).lower()
    in_it = [{"id": ip_configuration_id(nic)} for nic in nics
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
        "name": IP_CONFIGURATION, "id": ip_configuration_id(nic), "etag": nic.etag,
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


class Networks:
    """The network kind: virtual networks with their subnets, and network interfaces."""

    routes: tuple[Route, ...] = (
        Route((*IN_SUBSCRIPTION, "networkinterfaces"), "all_nics", {"GET": NIC_READ}),
        Route((*IN_SUBSCRIPTION, "virtualnetworks"), "all_vnets", {"GET": VNET_READ}),
        Route((*IN_GROUP, "networkinterfaces"), "nics", {"GET": NIC_READ}),
        Route((*IN_GROUP, "networkinterfaces", None), "nic", {"GET": NIC_READ}),
        Route(_VNETS, "vnets", {"GET": VNET_READ}),
        Route((*_VNETS, None), "vnet", {"GET": VNET_READ}),
        Route((*_VNETS, None, "subnets"), "subnets", {"GET": SUBNET_READ}),
        Route((*_VNETS, None, "subnets", None), "subnet", {"GET": SUBNET_READ}),
    )

    def __init__(self, resources: Resources, settings: Settings) -> None:
        self._resources = resources
        self._settings = settings

    # -- seeding -------------------------------------------------------------------------

    def add_vnet(self, subscription: str, resource_group: str, name: str, address_prefix: str,
                 location: str) -> Vnet:
        group = self._resources.add_group(subscription, resource_group, location)
        vnet = Vnet(group.subscription, group.name, name, normalise_location(location),
                    ipaddress.ip_network(address_prefix))
        group.vnets[name.lower()] = vnet
        return vnet

    def add_subnet(self, subscription: str, resource_group: str, vnet: str, name: str,
                   address_prefix: str, nsg_id: str | None) -> str:
        network = self._resources.group(subscription, resource_group).vnets[vnet.lower()]
        prefix = ipaddress.ip_network(address_prefix)
        if prefix.version != network.address_prefix.version or not prefix.subnet_of(
                network.address_prefix):  # type: ignore[arg-type]  # same version
            raise ValueError(f"subnet {name} ({prefix}) is outside virtual network "
                             f"{network.name} ({network.address_prefix})")
        if nsg_id is not None:
            self._resources.nsg_by_id(nsg_id)
        network.subnets[name.lower()] = Subnet(name, prefix, nsg_id)
        return network.subnet_id(name)

    def add_nic(self, subscription: str, resource_group: str, name: str, subnet_id: str,
                private_ip: str, nsg_id: str | None, vm_id: str | None, location: str) -> Nic:
        subnet = self._resources.subnet_by_id(subnet_id)
        if ipaddress.ip_address(private_ip) not in subnet.address_prefix:
            raise ValueError(f"{private_ip} is outside subnet {subnet.name} "
                             f"({subnet.address_prefix})")
        if nsg_id is not None:
            self._resources.nsg_by_id(nsg_id)
        group = self._resources.add_group(subscription, resource_group, location)
        previous = group.nics.get(name.lower())
        if previous is not None and vm_id is not None and previous.vm_id == vm_id:
            primary = previous.primary
        else:
            primary = vm_id is not None and not any(
                (nic.vm_id or "").lower() == vm_id.lower() for nic in self._resources.nics()
                if nic is not previous)
        nic = Nic(group.subscription, group.name, name, normalise_location(location),
                  subnet_id, private_ip, nsg_id, vm_id, primary)
        group.nics[name.lower()] = nic
        return nic

    # -- HTTP ----------------------------------------------------------------------------

    def serve(self, request: Request) -> Answer:
        assert request.route is not None
        route = request.route.name
        if route in ("all_nics", "all_vnets"):
            return Answer(200, page(request, self._list_subscription(request), self._settings))
        group = self._resources.requested_group(request.params[0], request.params[1])
        nics = self._resources.nics()
        if route == "nics":
            items = [render_nic(nic) for nic in group.nics.values()]
            return Answer(200, page(request, items, self._settings))
        if route == "vnets":
            items = [render_vnet(vnet, nics) for vnet in group.vnets.values()]
            return Answer(200, page(request, items, self._settings))
        name = request.params[2]
        if route == "nic":
            nic = group.nics.get(name.lower())
            if nic is None:
                raise resource_not_found(group.name, name, "networkInterfaces")
            return Answer(200, render_nic(nic), [("ETag", nic.etag)])
        return self._serve_vnet(request, group, name, nics)

    def _list_subscription(self, request: Request) -> list[Json]:
        groups = self._resources.in_subscription(request.params[0])
        if request.route is not None and request.route.name == "all_nics":
            return [render_nic(nic) for group in groups for nic in group.nics.values()]
        nics = self._resources.nics()
        return [render_vnet(vnet, nics) for group in groups for vnet in group.vnets.values()]

    def _serve_vnet(self, request: Request, group: ResourceGroup, name: str,
                    nics: list[Nic]) -> Answer:
        """A virtual network, its subnets, or one of them."""
        vnet = group.vnets.get(name.lower())
        if vnet is None:  # subnets under a missing network too, as for rules under an NSG
            raise resource_not_found(group.name, name, "virtualNetworks")
        assert request.route is not None
        if request.route.name == "vnet":
            return Answer(200, render_vnet(vnet, nics), [("ETag", vnet.etag)])
        if request.route.name == "subnets":
            items = [render_subnet(vnet, subnet, nics) for subnet in vnet.subnets.values()]
            return Answer(200, page(request, items, self._settings))
        subnet = vnet.subnets.get(request.params[3].lower())
        if subnet is None:  # the network provider's own 404, as for a missing rule
            raise child_not_found(vnet.subnet_id(request.params[3]))
        return Answer(200, render_subnet(vnet, subnet, nics), [("ETag", subnet.etag)])
