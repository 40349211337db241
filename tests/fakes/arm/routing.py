"""What the emulator is asked and answers: requests, routes to the resource kinds, list pages.

A route is a path pattern (lower-case literals; None stands for a name, kept in
`Request.params`) and the ARM action each method it accepts stands for; a method it does not
list answers 405. Each kind of resource (nsgs.py, network.py, operations.py) declares its
routes and serves the requests matched to them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from email.message import Message
from typing import Protocol
from urllib.parse import quote, unquote

from tests.fakes.arm.errors import Json, bad_format

Headers = list[tuple[str, str]]
Pattern = tuple[str | None, ...]

IN_SUBSCRIPTION: Pattern = ("subscriptions", None, "providers", "microsoft.network")
IN_GROUP: Pattern = ("subscriptions", None, "resourcegroups", None, "providers",
                     "microsoft.network")


@dataclass(frozen=True)
class Route:
    pattern: Pattern
    name: str
    actions: Mapping[str, str]  # method -> the ARM action it stands for
    writable: bool = False  # its PUT and DELETE are writes (faults, `writes_only` throttling)


@dataclass
class Answer:
    status: int
    body: Json | None = None
    headers: Headers = field(default_factory=list)


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: Message
    body: bytes
    route: Route | None = None
    params: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return self.query.get("api-version", "")

    @property
    def operation(self) -> str | None:
        """The ARM action this request stands for; None if its route does not take it."""
        return self.route.actions.get(self.method) if self.route else None

    @property
    def write(self) -> bool:
        return self.route is not None and self.route.writable and self.method in ("PUT",
                                                                                   "DELETE")

    def json_body(self) -> Json:
        """The body as a JSON object; ARM's 400 if it is not one."""
        try:
            body = json.loads(self.body or b"null")
        except ValueError as exc:
            raise bad_format(f"Unexpected character encountered while parsing value: {exc}.")\
                from exc
        if not isinstance(body, dict):
            raise bad_format("Cannot deserialize the request body into an object.")
        return body


class Kind(Protocol):
    """A kind of resource the emulator serves."""

    routes: tuple[Route, ...]

    def serve(self, request: Request) -> Answer:
        """Answer a request matched to one of `routes` (raises ArmError for errors)."""
        ...


@dataclass
class Settings:
    """The emulator's knobs (see ArmEmulator) and its base URL."""

    url: str = ""
    op_delay: float = 0.0
    retry_after: int = 0
    page_size: int | None = None


def match(routes: Iterable[Route], path: str) -> tuple[Route | None, tuple[str, ...]]:
    """The first route whose pattern fits `path`, and the names in it."""
    segments = [unquote(segment) for segment in path.strip("/").split("/")]
    for route in routes:
        if len(route.pattern) != len(segments):
            continue
        params = []
        for expected, segment in zip(route.pattern, segments, strict=True):
            if expected is None:
                if not segment:
                    break
                params.append(segment)
            elif expected != segment.lower():
                break
        else:
            return route, tuple(params)
    return None, ()


def page(request: Request, items: list[Json], settings: Settings) -> Json:
    """A list answer: at most `page_size` items and a `nextLink` to the rest."""
    if not settings.page_size:
        return {"value": items}
    token = request.query.get("$skiptoken", "0")
    start = int(token) if token.isdigit() else 0
    end = start + settings.page_size
    body: Json = {"value": items[start:end]}
    if end < len(items):
        body["nextLink"] = (f"{settings.url}{request.path}?api-version="
                            f"{quote(request.api_version, safe='')}&$skiptoken={end}")
    return body


def whole_seconds(seconds: float) -> int:
    if seconds < 0 or int(seconds) != seconds:
        raise ValueError(f"Retry-After must be whole seconds (the SDK parses it with int()), "
                         f"not {seconds!r}")
    return int(seconds)
