"""Network security groups and their security rules: seeding, HTTP and their ARM JSON.

    GET|PUT|DELETE .../resourceGroups/{rg}/providers/Microsoft.Network/networkSecurityGroups/{n}
    GET|PUT|DELETE .../networkSecurityGroups/{n}/securityRules/{rule}
    GET .../networkSecurityGroups (per resource group and per subscription), .../securityRules

Writes are asynchronous (operations.py): PUT answers 201/200 and DELETE 202; a missing rule's
DELETE answers 204. The NSG's etag changes when a write starts and when it ends, and every
rule carries the NSG's etag. A failed operation leaves the rule and the NSG in
provisioningState "Failed".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from tests.fakes.arm.errors import (
    ArmError,
    Json,
    bad_format,
    child_not_found,
    missing_properties,
    resource_not_found,
)
from tests.fakes.arm.model import (
    Nsg,
    ResourceGroup,
    Resources,
    Rule,
    check_name,
    new_etag,
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
from tests.fakes.arm.security_rules import DEFAULT_RULES, check_fits, normalise_rule

NSG_TYPE = "Microsoft.Network/networkSecurityGroups"
RULE_TYPE = "Microsoft.Network/networkSecurityGroups/securityRules"
DEFAULT_RULE_TYPE = "Microsoft.Network/networkSecurityGroups/defaultSecurityRules"
NSG_READ, NSG_WRITE, NSG_DELETE = (f"{NSG_TYPE}/{verb}" for verb in ("read", "write", "delete"))
RULE_READ, RULE_WRITE, RULE_DELETE = (f"{RULE_TYPE}/{verb}" for verb in ("read", "write", "delete"))

_NSGS = (*IN_GROUP, "networksecuritygroups")
_LIST_PROPERTIES = ("sourcePortRanges", "destinationPortRanges", "sourceAddressPrefixes",
                    "destinationAddressPrefixes")


def render_rule(nsg: Nsg, rule: Rule, kind: str = "securityRules") -> Json:
    properties: Json = {"provisioningState": rule.state, **rule.properties}
    for plural in _LIST_PROPERTIES:
        properties.setdefault(plural, [])
    return {
        "name": rule.name, "id": nsg.rule_id(rule.name, kind), "etag": nsg.etag,
        "type": RULE_TYPE if kind == "securityRules" else DEFAULT_RULE_TYPE,
        "properties": properties,
    }


class NetworkSecurityGroups:
    """The NSG kind: its routes, its seeding and reading back, its JSON."""

    routes: tuple[Route, ...] = (
        Route((*IN_SUBSCRIPTION, "networksecuritygroups"), "all_nsgs", {"GET": NSG_READ}),
        Route(_NSGS, "nsgs", {"GET": NSG_READ}),
        Route((*_NSGS, None), "nsg",
              {"GET": NSG_READ, "PUT": NSG_WRITE, "DELETE": NSG_DELETE}, writable=True),
        Route((*_NSGS, None, "securityrules"), "rules", {"GET": RULE_READ}),
        Route((*_NSGS, None, "securityrules", None), "rule",
              {"GET": RULE_READ, "PUT": RULE_WRITE, "DELETE": RULE_DELETE}, writable=True),
    )

    def __init__(self, resources: Resources, operations: Operations, settings: Settings) -> None:
        self._resources = resources
        self._operations = operations
        self._settings = settings

    # -- seeding -------------------------------------------------------------------------

    def add_nsg(self, subscription: str, resource_group: str, name: str, location: str,
                rules: Iterable[Mapping[str, Any]], tags: Mapping[str, str] | None) -> Nsg:
        group = self._resources.add_group(subscription, resource_group, location)
        nsg = Nsg(group.subscription, group.name, name, normalise_location(location),
                  tags=dict(tags) if tags is not None else None)
        group.nsgs[name.lower()] = nsg
        for rule in rules:
            self.plant(nsg, rule["name"], rule.get("properties", {}), "Succeeded", True)
        return nsg

    def add_rule(self, subscription: str, resource_group: str, nsg: str, name: str,
                 properties: Mapping[str, Any], state: str, validate: bool) -> Json:
        target = self._resources.nsg(subscription, resource_group, nsg)
        rule = self.plant(target, name, properties, state, validate)
        target.etag = new_etag()
        return render_rule(target, rule)

    @staticmethod
    def plant(nsg: Nsg, name: str, properties: Mapping[str, Any], state: str,
              validate: bool) -> Rule:
        """A rule put in place without a request (ValueError if `validate` and it is bad)."""
        if not validate:
            stored = {k: v for k, v in properties.items() if k != "provisioningState"}
        else:
            try:
                check_name(name)
                stored = normalise_rule(properties, nsg.rule_id(name))
                check_fits(nsg, name, stored)
            except ArmError as exc:
                raise ValueError(str(exc)) from exc
        rule = Rule(name, stored, state)
        nsg.rules[name.lower()] = rule
        return rule

    # -- JSON ----------------------------------------------------------------------------

    def render(self, nsg: Nsg) -> Json:
        body: Json = {"name": nsg.name, "id": nsg.id, "etag": nsg.etag, "type": NSG_TYPE,
                      "location": nsg.location}
        if nsg.tags is not None:
            body["tags"] = nsg.tags
        defaults = [Rule(name, properties, nsg.state) for name, properties in DEFAULT_RULES]
        body["properties"] = {
            "provisioningState": nsg.state,
            "resourceGuid": nsg.resource_guid,
            "securityRules": [render_rule(nsg, rule) for rule in nsg.rules.values()],
            "defaultSecurityRules": [render_rule(nsg, rule, "defaultSecurityRules")
                                     for rule in defaults],
        }
        body["properties"].update(self._associations(nsg))
        return body

    def _associations(self, nsg: Nsg) -> Json:
        """The NICs and subnets behind the NSG, as ARM lists them (only when there are any)."""
        nsg_id = nsg.id.lower()
        nics = [{"id": nic.id} for nic in self._resources.nics()
                if (nic.nsg_id or "").lower() == nsg_id]
        subnets = [{"id": vnet.subnet_id(subnet.name)} for vnet in self._resources.vnets()
                   for subnet in vnet.subnets.values() if (subnet.nsg_id or "").lower() == nsg_id]
        return {key: value for key, value in (("networkInterfaces", nics), ("subnets", subnets))
                if value}

    # -- HTTP ----------------------------------------------------------------------------

    def serve(self, request: Request) -> Answer:
        assert request.route is not None
        route = request.route.name
        if route == "all_nsgs":
            groups = self._resources.in_subscription(request.params[0])
            return Answer(200, page(request, [self.render(nsg) for group in groups
                                              for nsg in group.nsgs.values()], self._settings))
        group = self._resources.requested_group(request.params[0], request.params[1])
        if route == "nsgs":
            items = [self.render(nsg) for nsg in group.nsgs.values()]
            return Answer(200, page(request, items, self._settings))
        name = request.params[2]
        nsg = group.nsgs.get(name.lower())
        if route == "nsg":
            return self._serve_nsg(request, group, name, nsg)
        if nsg is None:
            # Not verified against Azure: a rule request under a missing NSG names the NSG
            # (DELETE included), so that a vanished NSG is never taken for a deleted rule.
            raise resource_not_found(group.name, name)
        if route == "rules":
            items = [render_rule(nsg, rule) for rule in nsg.rules.values()]
            return Answer(200, page(request, items, self._settings))
        return self._serve_rule(request, nsg, request.params[3])

    def _serve_nsg(self, request: Request, group: ResourceGroup, name: str,
                   nsg: Nsg | None) -> Answer:
        if request.method == "GET":
            if nsg is None:
                raise resource_not_found(group.name, name)
            return Answer(200, self.render(nsg), [("ETag", nsg.etag)])
        if request.method == "PUT":
            return self._put_nsg(request, group, name, nsg)
        self._operations.admit_write(request, nsg, nsg.location if nsg else group.location)
        check_preconditions(request, nsg.etag if nsg else None)
        if nsg is None:
            return Answer(204)
        for rule in nsg.rules.values():
            rule.state = "Deleting"
        operation = self._operations.start(request, nsg, "delete", "Deleting",
                                           self._nsg_deleted)
        return Answer(202, None, self._operations.async_headers(operation, location=True))

    def _put_nsg(self, request: Request, group: ResourceGroup, name: str,
                 nsg: Nsg | None) -> Answer:
        check_name(name)
        self._operations.admit_write(request, nsg, nsg.location if nsg else group.location)
        check_preconditions(request, nsg.etag if nsg else None)
        body = request.json_body()
        location = self._put_location(body, group, nsg)
        wanted = self._wanted_rules(body)
        creating = nsg is None
        if nsg is None:
            nsg = Nsg(group.subscription, group.name, name, normalise_location(location))
        staged = Nsg(nsg.subscription, nsg.resource_group, nsg.name, nsg.location)
        for item in wanted:
            if not isinstance(item, dict) or not isinstance(item.get("properties"), dict):
                raise missing_properties()
            rule_name = str(item.get("name") or "")
            check_name(rule_name)
            stored = normalise_rule(item["properties"], nsg.rule_id(rule_name))
            check_fits(staged, rule_name, stored)
            staged.rules[rule_name.lower()] = Rule(rule_name, stored, "Updating")
        nsg.rules = staged.rules
        nsg.tags = body["tags"] if isinstance(body.get("tags"), dict) else None
        group.nsgs[name.lower()] = nsg
        operation = self._operations.start(request, nsg, "put", "Updating", self._nsg_written)
        return Answer(201 if creating else 200, self.render(nsg),
                      self._operations.async_headers(operation))

    @staticmethod
    def _put_location(body: Json, group: ResourceGroup, nsg: Nsg | None) -> str:
        location = body.get("location")
        if nsg is None and not location:
            raise ArmError(400, "LocationRequired",
                           "The location property is required for this definition.")
        if nsg is not None and location and normalise_location(str(location)) != nsg.location:
            raise ArmError(400, "InvalidResourceLocation",
                           f"The resource '{nsg.name}' already exists in location "
                           f"'{nsg.location}' in resource group '{group.name}'. A resource with "
                           f"the same name cannot be created in location '{location}'. Please "
                           "select a new resource name.")
        return str(location)

    @staticmethod
    def _wanted_rules(body: Json) -> list[Any]:
        properties = body.get("properties") or {}
        wanted = properties.get("securityRules") if isinstance(properties, dict) else "?"
        wanted = [] if wanted is None else wanted
        if not isinstance(wanted, list):
            raise bad_format("Cannot deserialize the current JSON object into a list.",
                             "properties.securityRules")
        return wanted

    def _serve_rule(self, request: Request, nsg: Nsg, name: str) -> Answer:
        rule = nsg.rules.get(name.lower())
        if request.method == "GET":
            if rule is None:
                raise child_not_found(nsg.rule_id(name))
            return Answer(200, render_rule(nsg, rule), [("ETag", nsg.etag)])
        if request.method == "PUT":
            return self._put_rule(request, nsg, name, rule)
        self._operations.admit_write(request, nsg, nsg.location)
        check_preconditions(request, nsg.etag if rule else None)
        if rule is None:
            return Answer(204)  # ARM deletes are idempotent
        rule.state = "Deleting"
        operation = self._operations.start(request, nsg, "delete", "Updating",
                                           self._rule_finished(name.lower()))
        return Answer(202, None, self._operations.async_headers(operation, location=True))

    def _put_rule(self, request: Request, nsg: Nsg, name: str, rule: Rule | None) -> Answer:
        check_name(name)
        self._operations.admit_write(request, nsg, nsg.location)
        check_preconditions(request, nsg.etag if rule else None)
        body = request.json_body()
        if not isinstance(body.get("properties"), dict):
            raise missing_properties()
        display = rule.name if rule else name
        stored = normalise_rule(body["properties"], nsg.rule_id(display))
        check_fits(nsg, display, stored)
        created = rule is None
        if rule is None:
            rule = nsg.rules[name.lower()] = Rule(display, stored)
        rule.properties, rule.state = stored, "Updating"
        operation = self._operations.start(request, nsg, "put", "Updating",
                                           self._rule_finished(name.lower()))
        return Answer(201 if created else 200, render_rule(nsg, rule),
                      self._operations.async_headers(operation))

    # -- when a write ends ---------------------------------------------------------------

    def _nsg_deleted(self, operation: Operation) -> None:
        nsg = operation.resource
        assert isinstance(nsg, Nsg)
        if operation.error:
            self._settled(nsg, "Failed")
            return
        group = self._resources.find_group(nsg.subscription, nsg.resource_group)
        if group is not None and group.nsgs.get(nsg.name.lower()) is nsg:
            del group.nsgs[nsg.name.lower()]

    def _nsg_written(self, operation: Operation) -> None:
        assert isinstance(operation.resource, Nsg)
        self._settled(operation.resource, "Failed" if operation.error else "Succeeded")

    def _rule_finished(self, key: str) -> Callable[[Operation], None]:
        def finished(operation: Operation) -> None:
            nsg = operation.resource
            assert isinstance(nsg, Nsg)
            state = "Failed" if operation.error else "Succeeded"
            if operation.kind == "delete" and not operation.error:
                nsg.rules.pop(key, None)
            elif key in nsg.rules:
                nsg.rules[key].state = state
            nsg.state = state
            nsg.etag = new_etag()
        return finished

    @staticmethod
    def _settled(nsg: Nsg, state: str) -> None:
        """A write of the whole NSG has ended: every rule and the NSG are in `state`."""
        for rule in nsg.rules.values():
            rule.state = state
        nsg.state = state
        nsg.etag = new_etag()
