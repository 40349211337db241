"""The ARM emulator through the real azure-mgmt-network SDK: the network around the NSGs
(virtual networks, subnets, NICs; read-only)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import requests
from azure.core.exceptions import ResourceNotFoundError
from azure.mgmt.network import NetworkManagementClient

from tests.fakes.arm import (
    DEFAULT_RULES,
    NIC_READ,
    NSG_READ,
    SUBNET_READ,
    VNET_READ,
    ArmEmulator,
    rule_properties,
)
from tests.support.arm_requests import (
    API,
    NSG,
    RG,
    error_of,
)
from tests.support.azure import SUBSCRIPTION, network_client

# -- the network around the NSGs: virtual networks, subnets, NICs (read-only) -------------------

VNET, SUBNET_APP, SUBNET_DB = "vnet-app", "app", "db"


def vm_id(name: str, rg: str = RG) -> str:
    return (f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{rg}/providers/Microsoft.Compute/"
            f"virtualMachines/{name}")


@dataclass(frozen=True)
class Network:
    """What `network` seeded: NSG ids, subnet ids and NIC ids."""

    nsg_app: str
    nsg_db: str
    subnet_app: str
    subnet_db: str
    nic_web: str
    nic_db: str
    nic_spare: str


@pytest.fixture
def network(arm_emulator: ArmEmulator) -> Network:
    """RG: vnet-app 10.0.0.0/16 with subnets app (behind nsg-app) and db (no NSG); NICs web-nic
    (VM web, no NSG of its own) in app, db-nic (VM db, behind nsg-db) in db; in rg-other a
    spare NIC attached to no VM."""
    arm = arm_emulator
    nsg_app = arm.add_nsg(SUBSCRIPTION, RG, NSG)
    nsg_db = arm.add_nsg(SUBSCRIPTION, RG, "nsg-db")
    arm.add_vnet(SUBSCRIPTION, RG, VNET, "10.0.0.0/16")
    subnet_app = arm.add_subnet(SUBSCRIPTION, RG, VNET, SUBNET_APP, "10.0.1.0/24", nsg_id=nsg_app)
    subnet_db = arm.add_subnet(SUBSCRIPTION, RG, VNET, SUBNET_DB, "10.0.2.0/24")
    nic_web = arm.add_nic(SUBSCRIPTION, RG, "web-nic", subnet_app, "10.0.1.4", vm_id=vm_id("web"))
    nic_db = arm.add_nic(SUBSCRIPTION, RG, "db-nic", subnet_db, "10.0.2.4", nsg_id=nsg_db,
                         vm_id=vm_id("db"))
    nic_spare = arm.add_nic(SUBSCRIPTION, "rg-other", "spare-nic", subnet_db, "10.0.2.9")
    return Network(nsg_app, nsg_db, subnet_app, subnet_db, nic_web, nic_db, nic_spare)


def test_nics_are_listed_per_subscription_and_group(
        network: Network, arm_emulator: ArmEmulator, client: NetworkManagementClient) -> None:
    everywhere = list(client.network_interfaces.list_all())
    in_rg = list(client.network_interfaces.list(RG))
    in_other = list(client.network_interfaces.list("rg-other"))

    assert [nic.id for nic in everywhere] == [network.nic_web, network.nic_db, network.nic_spare]
    assert [nic.name for nic in in_rg] == ["web-nic", "db-nic"]
    assert [nic.name for nic in in_other] == ["spare-nic"]
    assert [c.status for c in arm_emulator.calls_to(NIC_READ)] == [200, 200, 200]
    assert arm_emulator.calls[0].path == (f"/subscriptions/{SUBSCRIPTION}/providers/"
                                          "Microsoft.Network/networkInterfaces")


def test_a_nic_names_its_vm_nsg_subnet_and_address(
        network: Network, client: NetworkManagementClient) -> None:
    db = client.network_interfaces.get(RG, "db-nic")
    web = client.network_interfaces.get(RG, "web-nic")
    spare = client.network_interfaces.get("rg-other", "spare-nic")

    assert db.id == network.nic_db
    assert db.type == "Microsoft.Network/networkInterfaces"
    assert db.provisioning_state == "Succeeded"
    assert db.virtual_machine.id == vm_id("db")
    assert db.network_security_group.id == network.nsg_db
    assert db.primary is True
    (configuration,) = db.ip_configurations
    assert configuration.id == f"{network.nic_db}/ipConfigurations/ipconfig1"
    assert configuration.private_ip_address == "10.0.2.4"
    assert configuration.subnet.id == network.subnet_db
    assert configuration.primary is True
    assert web.network_security_group is None  # its subnet's NSG is on the subnet, not here
    assert web.virtual_machine.id == vm_id("web")
    assert spare.virtual_machine is None and spare.primary is None


def test_a_vms_first_nic_is_its_primary(network: Network, arm_emulator: ArmEmulator,
                                        client: NetworkManagementClient) -> None:
    arm_emulator.add_nic(SUBSCRIPTION, RG, "db-nic-2", network.subnet_db, "10.0.2.5",
                         vm_id=vm_id("db"))
    arm_emulator.add_nic(SUBSCRIPTION, RG, "db-nic", network.subnet_db, "10.0.2.4",
                         vm_id=vm_id("db"))  # replaced: still the first

    assert client.network_interfaces.get(RG, "db-nic").primary is True
    assert client.network_interfaces.get(RG, "db-nic-2").primary is False


def test_virtual_networks_carry_their_subnets_inline(
        network: Network, arm_emulator: ArmEmulator, client: NetworkManagementClient) -> None:
    arm_emulator.add_vnet(SUBSCRIPTION, "rg-other", "vnet-other", "192.168.0.0/24",
                          location="North Europe")

    everywhere = list(client.virtual_networks.list_all())
    in_rg = list(client.virtual_networks.list(RG))
    vnet = client.virtual_networks.get(RG, VNET)

    assert [v.name for v in everywhere] == [VNET, "vnet-other"]
    assert [v.name for v in in_rg] == [VNET]
    assert everywhere[1].location == "northeurope"
    assert everywhere[1].subnets == []
    assert vnet.type == "Microsoft.Network/virtualNetworks"
    assert vnet.address_space.address_prefixes == ["10.0.0.0/16"]
    app, db = vnet.subnets
    assert (app.id, app.address_prefix) == (network.subnet_app, "10.0.1.0/24")
    assert app.network_security_group.id == network.nsg_app
    assert [c.id for c in app.ip_configurations] == [
        f"{network.nic_web}/ipConfigurations/ipconfig1"]
    assert db.network_security_group is None
    assert [c.id for c in db.ip_configurations] == [
        f"{network.nic_db}/ipConfigurations/ipconfig1",
        f"{network.nic_spare}/ipConfigurations/ipconfig1"]
    assert {c.operation for c in arm_emulator.calls} == {VNET_READ}


def test_subnets_are_listed_and_fetched(
        network: Network, arm_emulator: ArmEmulator, client: NetworkManagementClient) -> None:
    listed = list(client.subnets.list(RG, VNET))
    app = client.subnets.get(RG, VNET, SUBNET_APP)

    assert [(s.name, s.address_prefix) for s in listed] == [
        (SUBNET_APP, "10.0.1.0/24"), (SUBNET_DB, "10.0.2.0/24")]
    assert app.id == network.subnet_app
    assert app.type == "Microsoft.Network/virtualNetworks/subnets"
    assert app.network_security_group.id == network.nsg_app
    assert app.provisioning_state == "Succeeded"
    assert [c.operation for c in arm_emulator.calls] == [SUBNET_READ, SUBNET_READ]


def test_nsgs_are_listed_per_subscription_with_what_they_protect(
        network: Network, arm_emulator: ArmEmulator, client: NetworkManagementClient) -> None:
    arm_emulator.add_nsg(SUBSCRIPTION, "rg-other", "nsg-other",
                         rules=[{"name": "ssh", "properties": rule_properties(100, 22)}])
    arm_emulator.add_nsg("11111111-1111-1111-1111-111111111111", RG, "elsewhere")

    groups = list(client.network_security_groups.list_all())

    assert [g.id for g in groups] == [
        network.nsg_app, network.nsg_db,
        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-other/providers/Microsoft.Network/"
        "networkSecurityGroups/nsg-other"]
    app, db, other = groups
    assert [s.id for s in app.subnets] == [network.subnet_app]
    assert app.network_interfaces is None
    assert [n.id for n in db.network_interfaces] == [network.nic_db]
    assert [r.name for r in other.security_rules] == ["ssh"]
    assert len(other.default_security_rules) == len(DEFAULT_RULES)
    assert arm_emulator.calls_to(NSG_READ)[0].path == (
        f"/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Network/networkSecurityGroups")


def test_network_lists_follow_next_link_when_paged(
        network: Network, arm_emulator: ArmEmulator, client: NetworkManagementClient) -> None:
    arm_emulator.page_size = 2
    for index in range(3):
        arm_emulator.add_nic(SUBSCRIPTION, RG, f"extra-{index}", network.subnet_db,
                             f"10.0.2.{20 + index}")
        arm_emulator.add_subnet(SUBSCRIPTION, RG, VNET, f"extra-{index}", f"10.0.{10 + index}.0/24")
        arm_emulator.add_vnet(SUBSCRIPTION, RG, f"vnet-{index}")
        arm_emulator.add_nsg(SUBSCRIPTION, RG, f"nsg-{index}")

    nics = [nic.name for nic in client.network_interfaces.list_all()]
    nics_in_rg = [nic.name for nic in client.network_interfaces.list(RG)]
    subnets = [subnet.name for subnet in client.subnets.list(RG, VNET)]
    vnets = [vnet.name for vnet in client.virtual_networks.list_all()]
    nsgs = [nsg.name for nsg in client.network_security_groups.list_all()]

    assert nics == ["web-nic", "db-nic", "extra-0", "extra-1", "extra-2", "spare-nic"]
    assert nics_in_rg == nics[:-1]
    assert subnets == [SUBNET_APP, SUBNET_DB, "extra-0", "extra-1", "extra-2"]
    assert vnets == [VNET, "vnet-0", "vnet-1", "vnet-2"]
    assert nsgs == [NSG, "nsg-db", "nsg-0", "nsg-1", "nsg-2"]
    tokens = [c.query.get("$skiptoken") for c in arm_emulator.calls]
    assert tokens == [None, "2", "4", None, "2", "4", None, "2", "4", None, "2", None, "2", "4"]
    assert all(c.query["api-version"] for c in arm_emulator.calls)


def test_missing_network_resources_answer_404(
        network: Network, arm_emulator: ArmEmulator, client: NetworkManagementClient) -> None:
    with pytest.raises(ResourceNotFoundError) as no_nic:
        client.network_interfaces.get(RG, "nic-nowhere")
    with pytest.raises(ResourceNotFoundError) as no_vnet:
        client.virtual_networks.get(RG, "vnet-nowhere")
    with pytest.raises(ResourceNotFoundError) as no_parent:
        client.subnets.get(RG, "vnet-nowhere", SUBNET_APP)
    with pytest.raises(ResourceNotFoundError) as no_subnet:
        client.subnets.get(RG, VNET, "subnet-nowhere")
    with pytest.raises(ResourceNotFoundError) as no_group:
        list(client.network_interfaces.list("rg-nowhere"))
    with pytest.raises(ResourceNotFoundError) as no_subscription:
        list(network_client(arm_emulator, "22222222-2222-2222-2222-222222222222")
             .network_interfaces.list_all())

    assert error_of(no_nic)[:2] == (404, "ResourceNotFound")
    assert error_of(no_nic)[2].startswith(
        f"The Resource 'Microsoft.Network/networkInterfaces/nic-nowhere' under resource group "
        f"'{RG}' was not found.")
    assert error_of(no_vnet)[2].startswith(
        "The Resource 'Microsoft.Network/virtualNetworks/vnet-nowhere' under")
    assert error_of(no_parent)[1] == "ResourceNotFound"
    assert error_of(no_subnet) == (
        404, "NotFound", f"Resource {network.subnet_app.rsplit('/', 1)[0]}/subnet-nowhere "
                         "not found.")
    assert error_of(no_group)[1] == "ResourceGroupNotFound"
    assert error_of(no_subscription) == (
        404, "SubscriptionNotFound",
        "The subscription '22222222-2222-2222-2222-222222222222' could not be found.")


def test_network_resources_need_a_token_and_an_api_version_and_are_read_only(
        network: Network, arm_emulator: ArmEmulator) -> None:
    base = f"{arm_emulator.url}/subscriptions/{SUBSCRIPTION}"
    urls = [f"{base}/providers/Microsoft.Network/networkInterfaces",
            f"{base}/providers/Microsoft.Network/virtualNetworks",
            f"{base}/providers/Microsoft.Network/networkSecurityGroups",
            f"{base}/resourceGroups/{RG}/providers/Microsoft.Network/networkInterfaces/db-nic",
            f"{base}/resourceGroups/{RG}/providers/Microsoft.Network/virtualNetworks/{VNET}"
            f"/subnets/{SUBNET_APP}"]
    token = {"Authorization": "Bearer x"}

    def get(url: str, **kwargs: Any) -> int:
        return requests.get(url, verify=arm_emulator.ca_bundle, timeout=5, **kwargs).status_code

    assert [get(f"{url}?api-version={API}") for url in urls] == [401] * 5
    assert [get(url, headers=token) for url in urls] == [400] * 5
    assert [get(f"{url}?api-version={API}", headers=token) for url in urls] == [200] * 5
    put = requests.put(f"{urls[3]}?api-version={API}", json={"location": "westeurope"},
                       verify=arm_emulator.ca_bundle, timeout=5, headers=token)
    assert put.status_code == 405
    assert put.json()["error"]["code"] == "MethodNotAllowed"


def test_seeding_the_network_refuses_what_arm_would(
        network: Network, arm_emulator: ArmEmulator, client: NetworkManagementClient) -> None:
    arm = arm_emulator
    with pytest.raises(ValueError, match="outside virtual network"):
        arm.add_subnet(SUBSCRIPTION, RG, VNET, "wide", "10.1.0.0/24")
    with pytest.raises(ValueError, match="no network security group"):
        arm.add_subnet(SUBSCRIPTION, RG, VNET, "typo", "10.0.9.0/24",
                       nsg_id=network.nsg_app + "-typo")
    with pytest.raises(KeyError):
        arm.add_subnet(SUBSCRIPTION, RG, "vnet-nowhere", "s", "10.0.9.0/24")
    with pytest.raises(ValueError, match="outside subnet"):
        arm.add_nic(SUBSCRIPTION, RG, "nic", network.subnet_app, "10.0.2.4")
    with pytest.raises(ValueError, match="no subnet"):
        arm.add_nic(SUBSCRIPTION, RG, "nic", network.subnet_app + "-typo", "10.0.1.5")
    with pytest.raises(ValueError, match="no network security group"):
        arm.add_nic(SUBSCRIPTION, RG, "nic", network.subnet_app, "10.0.1.5", nsg_id=network.nic_db)

    assert [s.name for s in client.subnets.list(RG, VNET)] == [SUBNET_APP, SUBNET_DB]
    assert [n.name for n in client.network_interfaces.list(RG)] == ["web-nic", "db-nic"]
