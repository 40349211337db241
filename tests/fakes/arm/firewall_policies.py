"""Firewall policies and their rule collection groups: seeding, HTTP and their ARM JSON.

    GET .../resourceGroups/{rg}/providers/Microsoft.Network/firewallPolicies[/{policy}]
    GET .../firewallPolicies/{policy}/ruleCollectionGroups
    GET|PUT|DELETE .../firewallPolicies/{policy}/ruleCollectionGroups/{group}

A policy is seeded (no PUT); its groups are written over HTTP. As recorded
(tests/fakes/reference/azure-firewall/cli-recording-firewall-policy-rcg.yaml): a group's PUT
replaces the whole group, answers 201 then 200 with provisioningState "Updating" and
`Azure-AsyncOperation` at .../locations/{l}/nfvOperations/{id}; the etag is a bare GUID in the
body (quoted in the `ETag` header) that changes with each PUT and stays when the operation ends.
`If-Match` takes either form. One group write at a time per policy (409
AnotherOperationInProgress); a DELETE answers 202 (`Location` too) or 204 if there is no group.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from tests.fakes.arm.errors import ArmError, Json, bad_format, child_not_found, resource_not_found
from tests.fakes.arm.firewall_rules import check_unique_in_group, policy_collection, priority
from tests.fakes.arm.model import (
    FirewallPolicy,
    ResourceGroup,
    Resources,
    RuleCollectionGroup,
    check_name,
    normalise_location,
)
from tests.fakes.arm.operations import Operation, Operations, check_preconditions
from tests.fakes.arm.routing import IN_GROUP, Answer, Request, Route, Settings, page

POLICY_TYPE = "Microsoft.Network/FirewallPolicies"  # the casing ARM answers with
GROUP_TYPE = f"{POLICY_TYPE}/RuleCollectionGroups"
_ACTION = "Microsoft.Network/firewallPolicies"
POLICY_READ = f"{_ACTION}/read"
GROUP_READ, GROUP_WRITE, GROUP_DELETE = (
    f"{_ACTION}/ruleCollectionGroups/{verb}" for verb in ("read", "write", "delete"))

_POLICIES = (*IN_GROUP, "firewallpolicies")
_GROUPS = (*_POLICIES, None, "rulecollectiongroups")


class FirewallPolicies:
    """The firewallPolicies kind and its ruleCollectionGroups: routes, seeding, JSON."""

    routes: tuple[Route, ...] = (
        Route(_POLICIES, "policies", {"GET": POLICY_READ}),
        Route((*_POLICIES, None), "policy", {"GET": POLICY_READ}),
        Route(_GROUPS, "rule_collection_groups", {"GET": GROUP_READ}),
        Route((*_GROUPS, None), "rule_collection_group",
              {"GET": GROUP_READ, "PUT": GROUP_WRITE, "DELETE": GROUP_DELETE}, writable=True),
    )

    def __init__(self, resources: Resources, operations: Operations, settings: Settings) -> None:
        self._resources = resources
        self._operations = operations
        self._settings = settings

    # -- seeding and reading back ----------------------------------------------------------

    def add_policy(self, subscription: str, resource_group: str, name: str, location: str,
                   properties: Mapping[str, Any] | None) -> FirewallPolicy:
        check_name(name)
        group = self._resources.add_group(subscription, resource_group, location)
        policy = FirewallPolicy(group.subscription, group.name, name,
                                normalise_location(location), extra=dict(properties or {}))
        group.firewall_policies[name.lower()] = policy
        return policy

    def add_group(self, policy: FirewallPolicy, name: str, group_priority: int,
                  collections: Iterable[Json]) -> RuleCollectionGroup:
        """A rule collection group in place at once (ValueError if it is invalid)."""
        try:
            check_name(name)
            stored = self._checked(group_priority, list(collections))
        except ArmError as exc:
            raise ValueError(str(exc)) from exc
        rule_group = self._new_group(policy, name)
        rule_group.priority, rule_group.collections = stored
        policy.groups[name.lower()] = rule_group
        return rule_group

    def policy(self, subscription: str, resource_group: str, name: str) -> FirewallPolicy:
        """KeyError if there is no such policy."""
        return self._resources.group(subscription, resource_group).firewall_policies[name.lower()]

    # -- JSON ------------------------------------------------------------------------------

    def render_policy(self, policy: FirewallPolicy) -> Json:
        properties: Json = {"sku": {"tier": "Standard"}, "threatIntelMode": "Alert",
                            **policy.extra, "childPolicies": [],
                            "ruleCollectionGroups": [{"id": rule_group.id}
                                                     for rule_group in policy.groups.values()],
                            "firewalls": [], "provisioningState": policy.state}
        body: Json = {"properties": properties, "id": policy.id, "name": policy.name,
                      "type": POLICY_TYPE, "etag": policy.etag, "location": policy.location}
        if policy.tags is not None:
            body["tags"] = policy.tags
        return body

    @staticmethod
    def render_group(rule_group: RuleCollectionGroup) -> Json:
        return {"properties": {"priority": rule_group.priority,
                               "ruleCollections": rule_group.collections,
                               "provisioningState": rule_group.state},
                "id": rule_group.id, "name": rule_group.name, "type": GROUP_TYPE,
                "etag": rule_group.etag, "location": rule_group.location}

    # -- HTTP ------------------------------------------------------------------------------

    def serve(self, request: Request) -> Answer:
        assert request.route is not None
        route = request.route.name
        group = self._resources.requested_group(request.params[0], request.params[1])
        if route == "policies":
            items = [self.render_policy(policy) for policy in group.firewall_policies.values()]
            return Answer(200, page(request, items, self._settings))
        policy = group.firewall_policies.get(request.params[2].lower())
        if policy is None:
            # Not verified against Azure: a group request under a missing policy names the
            # policy (DELETE included), as the emulator does for rules under a missing NSG.
            raise resource_not_found(group.name, request.params[2], "firewallPolicies")
        if route == "policy":
            return Answer(200, self.render_policy(policy), [("ETag", f'"{policy.etag}"')])
        if route == "rule_collection_groups":
            items = [self.render_group(item) for item in policy.groups.values()]
            return Answer(200, page(request, items, self._settings))
        return self._serve_group(request, group, policy, request.params[3])

    def _serve_group(self, request: Request, group: ResourceGroup, policy: FirewallPolicy,
                     name: str) -> Answer:
        rule_group = policy.groups.get(name.lower())
        if request.method == "GET":
            if rule_group is None:
                raise child_not_found(f"{policy.id}/ruleCollectionGroups/{name}")
            return Answer(200, self.render_group(rule_group), [("ETag", f'"{rule_group.etag}"')])
        busy = next((item for item in policy.groups.values() if item.operation), rule_group)
        self._operations.admit_write(request, busy, policy.location)
        check_preconditions(request, rule_group.etag if rule_group else None)
        if request.method == "PUT":
            return self._put_group(request, policy, name, rule_group)
        if rule_group is None:
            return Answer(204)
        operation = self._operations.start(request, rule_group, "delete", "Deleting",
                                           self._group_deleted(policy))
        return Answer(202, None, self._operations.async_headers(operation, location=True))

    def _put_group(self, request: Request, policy: FirewallPolicy, name: str,
                   rule_group: RuleCollectionGroup | None) -> Answer:
        check_name(name)
        body = request.json_body()
        properties = body.get("properties")
        if not isinstance(properties, dict):
            raise bad_format("Required property 'properties' not found in JSON.", "properties")
        wanted = properties.get("ruleCollections") or []
        if not isinstance(wanted, list):
            raise bad_format("Cannot deserialize the current JSON object into a list.",
                             "properties.ruleCollections")
        stored = self._checked(properties.get("priority"), wanted)
        creating = rule_group is None
        if rule_group is None:
            rule_group = self._new_group(policy, name)
            policy.groups[name.lower()] = rule_group
        rule_group.priority, rule_group.collections = stored
        operation = self._operations.start(request, rule_group, "put", "Updating", _written)
        return Answer(201 if creating else 200, self.render_group(rule_group),
                      self._operations.async_headers(operation))

    @staticmethod
    def _checked(group_priority: object, wanted: list[Any]) -> tuple[int, list[Json]]:
        number = priority(group_priority, "rule collection group")
        collections = [policy_collection(item) for item in wanted]
        check_unique_in_group(collections)
        return number, collections

    @staticmethod
    def _new_group(policy: FirewallPolicy, name: str) -> RuleCollectionGroup:
        return RuleCollectionGroup(policy.subscription, policy.resource_group, name,
                                   policy.location, policy=policy.name)

    # -- when a write ends -----------------------------------------------------------------

    @staticmethod
    def _group_deleted(policy: FirewallPolicy) -> Callable[[Operation], None]:
        def finished(operation: Operation) -> None:
            rule_group = operation.resource
            assert isinstance(rule_group, RuleCollectionGroup)
            if operation.error:
                rule_group.state = "Failed"
            elif policy.groups.get(rule_group.name.lower()) is rule_group:
                del policy.groups[rule_group.name.lower()]
        return finished


def _written(operation: Operation) -> None:
    """As recorded, the group keeps the etag its PUT gave it when the operation ends."""
    assert operation.resource is not None
    operation.resource.state = "Failed" if operation.error else "Succeeded"
