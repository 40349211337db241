"""ARM's error answers: `{"error": {"code", "message", "details"}}` with an HTTP status."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

Json = dict[str, Any]


class ArmError(Exception):
    """An ARM error answer.

    `gateway` marks errors the ARM front door gives itself (authentication, api-version,
    throttling, missing resource group or resource); they carry `x-ms-failure-cause: gateway`
    and no `x-ms-arm-service-request-id`, which only the resource provider adds.
    """

    def __init__(self, status: int, code: str, message: str, *,
                 details: Iterable[Json] = (), gateway: bool = False,
                 headers: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(f"{code}: {message}")
        self.status, self.code, self.message = status, code, message
        self.details = list(details)
        self.gateway = gateway
        self.headers = list(headers)

    def body(self) -> Json:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


def bad_format(message: str, path: str = "") -> ArmError:
    """A body the resource provider cannot read (JSON.NET's wording in the detail)."""
    detail = {"code": "InvalidJson", "message": message + (f" Path '{path}'." if path else "")}
    return ArmError(400, "InvalidRequestFormat", "Cannot parse the request.", details=[detail])


def missing_parameter(parameter: str, rule_id: str) -> ArmError:
    return ArmError(400, "SecurityRuleParameterMissing",
                    f"Required security rule parameter {parameter} is missing for security rule "
                    f"with Id: {rule_id}.")


def missing_properties() -> ArmError:
    """A flat rule body, its fields outside `properties`.

    Not verified against Azure (the network provider's exact answer to a flat body is
    unknown); InvalidRequestFormat is what it uses for request bodies it cannot read.
    """
    return ArmError(400, "InvalidRequestFormat",
                    "Cannot parse the request. Required property 'properties' is missing: "
                    "a security rule's fields go inside 'properties'.",
                    details=[{"code": "MissingJsonProperty",
                              "message": "Required property 'properties' not found in JSON. "
                                         "Path ''."}])


def resource_group_not_found(name: str) -> ArmError:
    return ArmError(404, "ResourceGroupNotFound",
                    f"Resource group '{name}' could not be found.", gateway=True)


def resource_not_found(group: str, name: str, kind: str = "networkSecurityGroups") -> ArmError:
    """The front door's 404 for a top-level resource missing from its resource group."""
    return ArmError(404, "ResourceNotFound",
                    f"The Resource 'Microsoft.Network/{kind}/{name}' under "
                    f"resource group '{group}' was not found. For more details please "
                    "go to https://aka.ms/ARMResourceNotFoundFix", gateway=True)


def child_not_found(child_id: str) -> ArmError:
    """The network provider's own 404 for a missing child (a rule, a subnet)."""
    return ArmError(404, "NotFound", f"Resource {child_id} not found.")
