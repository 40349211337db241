"""Azure Firewalls with classic rule collections: seeding, HTTP and their ARM JSON.

    GET|PUT|DELETE .../resourceGroups/{rg}/providers/Microsoft.Network/azureFirewalls/{name}
    GET .../azureFirewalls (per resource group, and per subscription: list_all)

As recorded (tests/fakes/reference/azure-firewall/cli-recording-firewall-classic-rules.yaml):
rules have no endpoint of their own, a caller GETs the firewall and PUTs it whole; PUT answers
201 (create) or 200 (update) with provisioningState "Updating", `Azure-AsyncOperation` and
`Azure-AsyncNotification: Enabled`; DELETE answers 202 with `Location` too. The etag, W/"<guid>",
changes when a write starts and when it ends; every collection carries the firewall's etag and
provisioning state. `If-Match` is honoured and one write at a time is taken (operations.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from tests.fakes.arm.errors import ArmError, Json, bad_format, resource_not_found
from tests.fakes.arm.firewall_rules import check_unique, classic_collection
from tests.fakes.arm.model import (
    FIREWALL_COLLECTION_KINDS,
    Firewall,
    ResourceGroup,
    Resources,
    check_name,
    group_id,
    normalise_location,
)
from tests.fakes.arm.operations import Operation, Operations, check_preconditions
from tests.fakes.arm.routing import (
    IN_GROUP,
    IN_SUBSCRIPTION,
    Answer,
    Request,
    Route,
    Settings,
    page,
)

FIREWALL_TYPE = "Microsoft.Network/azureFirewalls"
FIREWALL_READ, FIREWALL_WRITE, FIREWALL_DELETE = (
    f"{FIREWALL_TYPE}/{verb}" for verb in ("read", "write", "delete"))
IP_CONFIGURATION_TYPE = f"{FIREWALL_TYPE}/azureFirewallIpConfigurations"

_FIREWALLS = (*IN_GROUP, "azurefirewalls")
# Properties the emulator builds itself; any other is stored and echoed as given.
_OWN = frozenset({"provisioningState", "sku", "threatIntelMode", "ipConfigurations",
                  "additionalProperties", *FIREWALL_COLLECTION_KINDS})


def ip_configuration(public_ip_id: str, subnet_id: str, private_ip: str) -> Json:
    """The one IP configuration of a firewall in a virtual network, without id and etag."""
    return {"name": "azureFirewallIpConfiguration",
            "properties": {"privateIPAddress": private_ip, "subnet": {"id": subnet_id},
                           "publicIPAddress": {"id": public_ip_id}}}


class Firewalls:
    """The azureFirewalls kind: its routes, its seeding and reading back, its JSON."""

    routes: tuple[Route, ...] = (
        Route((*IN_SUBSCRIPTION, "azurefirewalls"), "all_firewalls", {"GET": FIREWALL_READ}),
        Route(_FIREWALLS, "firewalls", {"GET": FIREWALL_READ}),
        Route((*_FIREWALLS, None), "firewall",
              {"GET": FIREWALL_READ, "PUT": FIREWALL_WRITE, "DELETE": FIREWALL_DELETE},
              writable=True),
    )

    def __init__(self, resources: Resources, operations: Operations, settings: Settings) -> None:
        self._resources = resources
        self._operations = operations
        self._settings = settings

    # -- seeding and reading back ----------------------------------------------------------

    def add_firewall(self, subscription: str, resource_group: str, name: str, location: str,
                     public_ip: str | None, collections: Mapping[str, Iterable[Json]]) -> Firewall:
        """A firewall in place at once (ValueError if a collection is invalid)."""
        check_name(name)
        group = self._resources.add_group(subscription, resource_group, location)
        firewall = Firewall(group.subscription, group.name, name, normalise_location(location))
        if public_ip is not None:
            base = f"{group_id(group.subscription, group.name)}/providers/Microsoft.Network"
            firewall.ip_configurations = [ip_configuration(
                f"{base}/publicIPAddresses/{name}-pip",
                f"{base}/virtualNetworks/{name}-vnet/subnets/AzureFirewallSubnet", "10.0.1.4")]
            firewall.public_ip = public_ip
        try:
            firewall.collections = self._collections(
                {kind: list(items) for kind, items in collections.items()})
        except ArmError as exc:
            raise ValueError(str(exc)) from exc
        group.firewalls[name.lower()] = firewall
        return firewall

    def firewall(self, subscription: str, resource_group: str, name: str) -> Firewall:
        """KeyError if there is no such firewall."""
        return self._resources.group(subscription, resource_group).firewalls[name.lower()]

    # -- JSON ------------------------------------------------------------------------------

    def render(self, firewall: Firewall) -> Json:
        body: Json = {"name": firewall.name, "id": firewall.id, "etag": firewall.etag,
                      "type": FIREWALL_TYPE, "location": firewall.location}
        if firewall.tags is not None:
            body["tags"] = firewall.tags
        extra = dict(firewall.extra)
        properties: Json = {
            "provisioningState": firewall.state, "sku": firewall.sku,
            "threatIntelMode": firewall.threat_intel_mode,
            "additionalProperties": extra.pop("additionalProperties", {}),
            "ipConfigurations": [self._render_ip(firewall, item)
                                 for item in firewall.ip_configurations],
            **extra,
        }
        for kind in ("networkRuleCollections", "applicationRuleCollections",
                     "natRuleCollections"):
            properties[kind] = [self._render_collection(firewall, kind, item)
                                for item in firewall.collections[kind]]
        body["properties"] = properties
        return body

    @staticmethod
    def _render_ip(firewall: Firewall, item: Json) -> Json:
        name = str(item.get("name") or "")
        return {"name": name, "id": f"{firewall.id}/ipConfigurations/{name}",
                "etag": firewall.etag, "type": IP_CONFIGURATION_TYPE,
                "properties": {"provisioningState": firewall.state,
                               **(item.get("properties") or {})}}

    @staticmethod
    def _render_collection(firewall: Firewall, kind: str, item: Json) -> Json:
        return {"name": item["name"], "id": f"{firewall.id}/{kind}/{item['name']}",
                "etag": firewall.etag,
                "properties": {"provisioningState": firewall.state, **item["properties"]},
                "type": f"{FIREWALL_TYPE}/{kind}"}

    # -- HTTP ------------------------------------------------------------------------------

    def serve(self, request: Request) -> Answer:
        assert request.route is not None
        if request.route.name == "all_firewalls":
            groups = self._resources.in_subscription(request.params[0])
            return Answer(200, page(request, [self.render(firewall) for group in groups
                                              for firewall in group.firewalls.values()],
                                    self._settings))
        group = self._resources.requested_group(request.params[0], request.params[1])
        if request.route.name == "firewalls":
            items = [self.render(firewall) for firewall in group.firewalls.values()]
            return Answer(200, page(request, items, self._settings))
        name = request.params[2]
        firewall = group.firewalls.get(name.lower())
        if request.method == "GET":
            if firewall is None:
                raise resource_not_found(group.name, name, "azureFirewalls")
            return Answer(200, self.render(firewall), [("ETag", firewall.etag)])
        if request.method == "PUT":
            return self._put(request, group, name, firewall)
        self._operations.admit_write(request, firewall,
                                     firewall.location if firewall else group.location)
        check_preconditions(request, firewall.etag if firewall else None)
        if firewall is None:
            return Answer(204)
        operation = self._operations.start(request, firewall, "delete", "Deleting",
                                           self._deleted)
        return Answer(202, None, self._operations.async_headers(operation, location=True))

    def _put(self, request: Request, group: ResourceGroup, name: str,
             firewall: Firewall | None) -> Answer:
        check_name(name)
        self._operations.admit_write(request, firewall,
                                     firewall.location if firewall else group.location)
        check_preconditions(request, firewall.etag if firewall else None)
        body = request.json_body()
        location = _location(body, group, firewall)
        properties = body.get("properties") or {}
        if not isinstance(properties, dict):
            raise bad_format("Cannot deserialize the current value into an object.",
                             "properties")
        collections = self._collections({kind: properties.get(kind) or []
                                         for kind in FIREWALL_COLLECTION_KINDS})
        creating = firewall is None
        if firewall is None:
            firewall = Firewall(group.subscription, group.name, name, location)
        self._apply(firewall, body, properties, collections)
        group.firewalls[name.lower()] = firewall
        operation = self._operations.start(request, firewall, "put", "Updating", self._written)
        return Answer(201 if creating else 200, self.render(firewall),
                      self._operations.async_headers(operation))

    @staticmethod
    def _collections(wanted: Mapping[str, Any]) -> dict[str, list[Json]]:
        collections: dict[str, list[Json]] = {kind: [] for kind in FIREWALL_COLLECTION_KINDS}
        for kind, items in wanted.items():
            if kind not in collections or not isinstance(items, list):
                raise bad_format("Cannot deserialize the current JSON object into a list.",
                                 f"properties.{kind}")
            collections[kind] = [classic_collection(kind, item) for item in items]
        check_unique(collections)
        return collections

    @staticmethod
    def _apply(firewall: Firewall, body: Json, properties: Json,
               collections: dict[str, list[Json]]) -> None:
        sku = properties.get("sku")
        tier = sku.get("tier") if isinstance(sku, dict) else None
        firewall.sku = {"name": (sku or {}).get("name") or "AZFW_VNet", "tier": tier or "Standard"}
        firewall.threat_intel_mode = str(properties.get("threatIntelMode") or "Alert")
        firewall.ip_configurations = _ip_configurations(properties.get("ipConfigurations"),
                                                        firewall.ip_configurations)
        firewall.extra = {k: v for k, v in properties.items() if k not in _OWN}
        firewall.extra["additionalProperties"] = properties.get("additionalProperties") or {}
        firewall.tags = body["tags"] if isinstance(body.get("tags"), dict) else None
        firewall.collections = collections

    # -- when a write ends -----------------------------------------------------------------

    def _deleted(self, operation: Operation) -> None:
        firewall = operation.resource
        assert isinstance(firewall, Firewall)
        if operation.error:
            firewall.state, firewall.etag = "Failed", firewall.fresh_etag()
            return
        group = self._resources.find_group(firewall.subscription, firewall.resource_group)
        if group is not None and group.firewalls.get(firewall.name.lower()) is firewall:
            del group.firewalls[firewall.name.lower()]

    @staticmethod
    def _written(operation: Operation) -> None:
        firewall = operation.resource
        assert isinstance(firewall, Firewall)
        firewall.state = "Failed" if operation.error else "Succeeded"
        firewall.etag = firewall.fresh_etag()


def _ip_configurations(value: object, before: list[Json]) -> list[Json]:
    """The IP configurations a PUT gives, as stored: name and properties, no read-only parts.
    The private address is ARM's to assign (read-only): a configuration the firewall had
    keeps it when the PUT leaves it out, as an SDK's PUT of a firewall it read does."""
    items = value if isinstance(value, list) else []
    assigned = {str(item.get("name")).lower(): item["properties"].get("privateIPAddress")
                for item in before if isinstance(item.get("properties"), dict)}
    stored = []
    for item in items:
        if not isinstance(item, dict):
            continue
        properties = {k: v for k, v in (item.get("properties") or {}).items()
                      if k != "provisioningState"}
        kept = assigned.get(str(item.get("name")).lower())
        if kept and "privateIPAddress" not in properties:
            properties["privateIPAddress"] = kept
        stored.append({"name": item.get("name"), "properties": properties})
    return stored


def _location(body: Json, group: ResourceGroup, existing: Firewall | None) -> str:
    location = body.get("location")
    if existing is None and not location:
        raise ArmError(400, "LocationRequired",
                       "The location property is required for this definition.")
    if existing is not None and location and normalise_location(str(location)) != \
            existing.location:
        raise ArmError(400, "InvalidResourceLocation",
                       f"The resource '{existing.name}' already exists in location "
                       f"'{existing.location}' in resource group '{group.name}'. A resource "
                       f"with the same name cannot be created in location '{location}'. "
                       "Please select a new resource name.")
    return existing.location if existing is not None else normalise_location(str(location))
