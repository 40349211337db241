"""ARM's front door: every request's checks, its route to a kind, and ARM's headers around
the answer, as recorded (tests/fakes/reference/azure/).

Checks run in this order: authentication (401), api-version (400), injected throttling (429),
routing (404/405); then the kind's own: resource group and resource existence (404), for PUTs
the resource name (400), for writes the injected faults, the resource's write lock (409),
`If-Match`/`If-None-Match` (412), then the body (400). Every request is recorded as a `Call`.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from urllib.parse import parse_qsl, urlsplit

from tests.fakes.arm.errors import ArmError
from tests.fakes.arm.faults import Faults, throttled
from tests.fakes.arm.operations import Operations
from tests.fakes.arm.routing import Answer, Headers, Kind, Request, match

_INITIAL_QUOTA = {"reads": 11999, "writes": 1199, "deletes": 14999}
_NOTHING_HERE = ("The ARM emulator serves network security groups, their security rules, "
                 "virtual networks, subnets, network interfaces, Azure Firewalls and firewall "
                 "policies with their rule collection groups only; nothing at '{path}'.")


@dataclass(frozen=True)
class Call:
    """One request the emulator answered; `at` is `time.monotonic()` on arrival."""

    method: str
    path: str
    query: dict[str, str]
    status: int
    operation: str | None  # the ARM action, e.g. "Microsoft.Network/.../securityRules/write"
    at: float
    error_code: str | None = None

    @property
    def ok(self) -> bool:
        return self.status < 400


@dataclass
class Reply:
    status: int
    headers: Headers
    body: bytes


Observer = Callable[[Call, Message], None]


class Gateway:
    """Answers raw requests for the kinds behind it, under the emulator's lock."""

    def __init__(self, lock: threading.RLock, kinds: Sequence[Kind], operations: Operations,
                 faults: Faults, observers: list[Observer]) -> None:
        self._lock = lock
        self._kinds = {route.name: kind for kind in (operations, *kinds) for route in kind.routes}
        self._routes = [route for kind in (*kinds, operations) for route in kind.routes]
        self._operations = operations
        self._faults = faults
        self._observers = observers  # shared and live: observers come and go
        self._quota: dict[tuple[str, str], int] = {}
        self.calls: list[Call] = []

    def dispatch(self, method: str, target: str, headers: Message, body: bytes) -> Reply:
        parts = urlsplit(target)
        query = {k.lower(): v for k, v in parse_qsl(parts.query, keep_blank_values=True)}
        request = Request(method, parts.path, query, headers, body)
        request.route, request.params = match(self._routes, parts.path)
        at = time.monotonic()
        with self._lock:
            self._operations.settle()
            error_code = None
            try:
                answer = self._answer(request)
            except ArmError as exc:
                answer = Answer(exc.status, exc.body(), [*exc.headers, *_error_headers(exc)])
                error_code = exc.code
            reply = self._reply(request, answer)
            call = Call(method, parts.path, dict(query), answer.status, request.operation, at,
                        error_code)
            self.calls.append(call)
            for observer in self._observers:
                observer(call, headers)
            return reply

    def _answer(self, request: Request) -> Answer:
        _authenticate(request)
        if not request.api_version:
            raise ArmError(400, "MissingApiVersionParameter",
                           "The api-version query parameter (?api-version=) is required for all "
                           "requests.", gateway=True)
        retry_after = self._faults.take_throttle(request.write)
        if retry_after is not None:
            raise throttled(retry_after, request.method,
                            request.params[0] if request.params else "")
        if request.route is None:
            raise ArmError(404, "NotFound", _NOTHING_HERE.format(path=request.path))
        if request.operation is None:
            raise ArmError(405, "MethodNotAllowed",
                           f"The requested resource does not support http method "
                           f"'{request.method}'.")
        return self._kinds[request.route.name].serve(request)

    def _reply(self, request: Request, answer: Answer) -> Reply:
        """ARM's headers around an answer, as recorded."""
        body = answer.body
        payload = json.dumps(body, indent=2).encode() if body is not None else b""
        headers = [("Cache-Control", "no-cache"), ("Pragma", "no-cache")]
        if body is not None:
            headers.append(("Content-Type", "application/json; charset=utf-8"))
        headers.append(("Expires", "-1"))
        if request.method == "GET" and answer.status == 200:
            headers.append(("Vary", "Accept-Encoding"))
        headers.extend(answer.headers)
        headers.extend(self._quota_header(request))
        correlation = request.headers.get("x-ms-correlation-request-id") or str(uuid.uuid4())
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        headers += [
            ("x-ms-request-id", str(uuid.uuid4())),
            ("x-ms-correlation-request-id", correlation),
            ("x-ms-routing-request-id", f"WESTEUROPE:{stamp}:{correlation}"),
            ("Strict-Transport-Security", "max-age=31536000; includeSubDomains"),
            ("X-Content-Type-Options", "nosniff"),
        ]
        if not any(key == "x-ms-failure-cause" for key, _ in answer.headers):
            headers.append(("x-ms-arm-service-request-id", str(uuid.uuid4())))
        return Reply(answer.status, headers, payload)

    def _quota_header(self, request: Request) -> Headers:
        if not request.params:
            return []
        kind = {"PUT": "writes", "DELETE": "deletes"}.get(request.method, "reads")
        key = (request.params[0].lower(), kind)
        remaining = self._quota.get(key, _INITIAL_QUOTA[kind] + 1) - 1
        self._quota[key] = remaining if remaining > 0 else _INITIAL_QUOTA[kind]
        return [(f"x-ms-ratelimit-remaining-subscription-{kind}", str(remaining))]


def _error_headers(error: ArmError) -> Headers:
    return [("x-ms-failure-cause", "gateway")] if error.gateway else []


def _authenticate(request: Request) -> None:
    authorization = request.headers.get("Authorization")
    if authorization is None:
        problem = "is missing"
    elif re.fullmatch(r"Bearer\s+\S+", authorization.strip()):
        return
    else:
        problem = "is provided in an invalid format"
    challenge = ('Bearer authorization_uri="https://login.windows.net/", '
                 'error="invalid_token", error_description="The authentication failed '
                 f"because of {'missing' if authorization is None else 'malformed'} "
                 "'Authorization' header.\"")
    raise ArmError(401, "AuthenticationFailed",
                   f"Authentication failed. The 'Authorization' header {problem}.",
                   gateway=True, headers=[("WWW-Authenticate", challenge)])
