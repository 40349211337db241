"""Long-running operations: ARM's asynchronous writes, one writer per resource at a time.

A PUT or DELETE that ARM accepts starts an `Operation` and answers at once, pointing at the
operation's status with `Azure-AsyncOperation` (and, for DELETE, `Location`); the operation
finishes `op_delay` seconds later, checked lazily on every request (`settle`: no timer
threads). While it runs, the resource takes no other write (409 AnotherOperationInProgress).
The kind that started it says what finishing means (`on_finish`). The status URLs:

    GET /subscriptions/{s}/providers/Microsoft.Network/locations/{l}/operations/{id}
        200 {"status": "InProgress" | "Succeeded" | "Failed", "error"?}
    GET .../locations/{l}/operationResults/{id}
        202 while in progress (Location: itself), 204 when done, 500 with its error if failed
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

from tests.fakes.arm.errors import ArmError, Json
from tests.fakes.arm.faults import Faults
from tests.fakes.arm.model import Resource
from tests.fakes.arm.routing import Answer, Headers, Request, Route, Settings

OPERATION_READ = "Microsoft.Network/locations/operations/read"
OPERATION_RESULT_READ = "Microsoft.Network/locations/operationResults/read"
# Not verified against Azure: the action ARM checks for a firewall policy's operation status.
NFV_OPERATION_READ = "Microsoft.Network/locations/nfvOperations/read"

_LOCATION = ("subscriptions", None, "providers", "microsoft.network", "locations", None)


@dataclass
class Operation:
    id: str
    subscription: str
    location: str
    api_version: str
    kind: str  # "put" or "delete"
    resource: Resource | None  # None: a stand-in for another client's operation
    ready_at: float
    error: Json | None = None
    done: bool = False
    on_finish: Callable[[Operation], None] | None = None  # the kind's part of finishing
    poll: str = "operations"  # the status URL's collection: operations or nfvOperations
    notifies: bool = False  # answers carry `Azure-AsyncNotification: Enabled` (firewalls)

    @property
    def status(self) -> str:
        if not self.done:
            return "InProgress"
        return "Failed" if self.error else "Succeeded"


class Operations:
    """Every operation started, the status routes, and the write lock of each resource."""

    routes: tuple[Route, ...] = (
        Route((*_LOCATION, "operations", None), "operation", {"GET": OPERATION_READ}),
        Route((*_LOCATION, "operationresults", None), "operation_result",
              {"GET": OPERATION_RESULT_READ}),
        Route((*_LOCATION, "nfvoperations", None), "nfv_operation", {"GET": NFV_OPERATION_READ}),
    )

    def __init__(self, settings: Settings, faults: Faults) -> None:
        self._settings = settings
        self._faults = faults
        self._operations: dict[str, Operation] = {}
        self._pending: list[Operation] = []

    # -- writes --------------------------------------------------------------------------

    def admit_write(self, request: Request, resource: Resource | None, location: str) -> None:
        """Injected write failures and conflicts first, then the resource's own write lock.

        `location`: where the resource is (or its resource group, for a new one).
        """
        failure = self._faults.take_write_failure(request.method)
        if failure is not None:
            if failure.code == "AnotherOperationInProgress" and failure.message is None:
                raise self._in_progress(request, None, location)
            raise ArmError(failure.status, failure.code,
                           failure.message or f"The request failed with code '{failure.code}'.")
        if self._faults.take_conflict():
            raise self._in_progress(request, None, location)
        if resource is not None and resource.operation is not None:
            raise self._in_progress(request, resource.operation, location)

    def start(self, request: Request, resource: Resource, kind: str, state: str,
              on_finish: Callable[[Operation], None]) -> Operation:
        """Start a write of `resource`: it is in `state` and has a new etag until it ends."""
        operation = Operation(
            id=str(uuid.uuid4()), subscription=resource.subscription,
            location=resource.location, api_version=request.api_version, kind=kind,
            resource=resource, ready_at=time.monotonic() + self._settings.op_delay,
            error=self._faults.take_operation_failure(), on_finish=on_finish,
            poll=resource.poll, notifies=resource.notifies)
        resource.operation = operation
        resource.state = state
        resource.etag = resource.fresh_etag()
        self._operations[operation.id] = operation
        self._pending.append(operation)
        return operation

    def async_headers(self, operation: Operation, *, location: bool = False) -> Headers:
        """What an accepted write answers with: where to poll, and how soon."""
        headers = [("Azure-AsyncOperation", self._url(operation, operation.poll))]
        if operation.notifies:
            headers.append(("Azure-AsyncNotification", "Enabled"))
        if location:
            headers.append(("Location", self._url(operation, "operationResults")))
        headers.append(("Retry-After", str(self._settings.retry_after)))
        return headers

    def _in_progress(self, request: Request, operation: Operation | None,
                     location: str) -> ArmError:
        if operation is None:  # someone else's write: an operation that has already finished
            operation = Operation(str(uuid.uuid4()), request.params[0], location,
                                  request.api_version, "put", None, 0.0, done=True)
            self._operations[operation.id] = operation
        return ArmError(409, "AnotherOperationInProgress",
                        "Another operation on this or dependent resource is in progress. To "
                        "retrieve status of the operation use uri: "
                        f"{self._url(operation, operation.poll)}.")

    # -- time ----------------------------------------------------------------------------

    def settle(self) -> None:
        """Finish every operation whose time has come."""
        now = time.monotonic()
        for operation in [op for op in self._pending if op.ready_at <= now]:
            self._pending.remove(operation)
            operation.done = True
            resource = operation.resource
            if resource is None:
                continue
            resource.operation = None
            if operation.on_finish is not None:
                operation.on_finish(operation)

    def next_due(self) -> float | None:
        """When the next operation in progress finishes (time.monotonic()); None if none is."""
        return min((op.ready_at for op in self._pending), default=None)

    # -- the status routes ---------------------------------------------------------------

    def serve(self, request: Request) -> Answer:
        operation = self._operations.get(request.params[2].lower())
        if operation is None or operation.subscription.lower() != request.params[0].lower():
            raise ArmError(404, "NotFound", f"Operation {request.params[2]} not found.")
        retry = [("Retry-After", str(self._settings.retry_after))]
        if request.route is not None and request.route.name in ("operation", "nfv_operation"):
            body: Json = {"status": operation.status}
            if operation.error:
                body["error"] = {**operation.error, "details": []}
            return Answer(200, body, retry if not operation.done else [])
        if not operation.done:
            return Answer(202, None, [("Location", self._url(operation, "operationResults")),
                                      *retry])
        if operation.error:
            raise ArmError(500, operation.error["code"], operation.error["message"])
        # As recorded for a firewall's DELETE: the final 204 still names both status URLs.
        headers = self.async_headers(operation, location=True)
        return Answer(204, None, [item for item in headers if item[0] != "Retry-After"])

    def _url(self, operation: Operation, kind: str = "operations") -> str:
        return (f"{self._settings.url}/subscriptions/{operation.subscription}/providers/"
                f"Microsoft.Network/locations/{operation.location}/{kind}/{operation.id}"
                f"?api-version={quote(operation.api_version, safe='')}")


def check_preconditions(request: Request, current_etag: str | None) -> None:
    """`If-Match` and `If-None-Match` against the resource's etag (None: it does not exist).

    A bare-GUID etag (firewall policies) matches with or without quotes: the body gives it
    bare, the `ETag` header quoted.
    """
    exists = current_etag is not None
    if_match = request.headers.get("If-Match")
    if_none_match = request.headers.get("If-None-Match")
    accepted = {"*", current_etag, f'"{current_etag}"'}
    if if_match is not None and not (exists and if_match.strip() in accepted):
        raise ArmError(412, "PreconditionFailed",
                       f"Precondition failed: If-Match {if_match} does not match the "
                       f"current etag {current_etag or '(no such resource)'}.")
    if if_none_match is not None and if_none_match.strip() == "*" and exists:
        raise ArmError(412, "PreconditionFailed",
                       "Precondition failed: If-None-Match * but the resource exists.")
