"""SlackDirectory: jitcore's Directory port; @usergroup handles resolved through Slack."""

from __future__ import annotations

import threading
import time

from slack_sdk import WebClient


class SlackDirectory:
    """Members of `@handle` usergroups, cached for `ttl` seconds (a short cache: a person
    removed from a group loses approval rights within that time)."""

    def __init__(self, client: WebClient, ttl: float = 60.0) -> None:
        self._client = client
        self._ttl = ttl
        self._lock = threading.Lock()
        self._ids: tuple[float, dict[str, str]] | None = None
        self._members: dict[str, tuple[float, frozenset[str]]] = {}

    def members(self, handle: str) -> frozenset[str]:
        now = time.monotonic()
        with self._lock:
            cached = self._members.get(handle)
            if cached and now - cached[0] < self._ttl:
                return cached[1]
        group_id = self._group_ids(now).get(handle.lstrip("@").lower())
        if group_id is None:
            users: frozenset[str] = frozenset()
        else:
            response = self._client.usergroups_users_list(usergroup=group_id)
            users = frozenset(response.get("users") or [])
        with self._lock:
            self._members[handle] = (now, users)
        return users

    def _group_ids(self, now: float) -> dict[str, str]:
        with self._lock:
            if self._ids and now - self._ids[0] < self._ttl:
                return self._ids[1]
        groups = self._client.usergroups_list().get("usergroups") or []
        ids = {str(g["handle"]).lower(): str(g["id"]) for g in groups}
        with self._lock:
            self._ids = (now, ids)
        return ids
