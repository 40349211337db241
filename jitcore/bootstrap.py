"""The one place that wires real objects together (the CLI and the bot call it)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from jitcore.store.db import DEFAULT_DATABASE_URL

if TYPE_CHECKING:
    from jitcore.policy import Policy
    from jitcore.ports import Directory, Notifier
    from jitcore.service import EngineSettings, JitService
    from jitcore.store import Store

DEFAULT_CONFIG = "./jit.yaml"


@dataclass(frozen=True, slots=True)
class Paths:
    config: str
    database_url: str

    @classmethod
    def from_env(cls, config: str | None = None, database_url: str | None = None) -> Paths:
        return cls(
            config=config or os.environ.get("JIT_CONFIG") or DEFAULT_CONFIG,
            database_url=database_url or os.environ.get("JIT_DATABASE_URL")
            or DEFAULT_DATABASE_URL,
        )


def build_service(paths: Paths, *, notifier: Notifier | None = None,
                  directory: Directory | None = None, policy: Policy | None = None,
                  settings: EngineSettings | None = None,
                  store: Store | None = None) -> JitService:
    """Policy, store (checked to be migrated), providers, notifier and clock -> the service."""
    from jitcore.policy_file import load_policy
    from jitcore.ports import LogNotifier, SystemClock
    from jitcore.providers.registry import build_providers
    from jitcore.service import JitService
    from jitcore.store import Store as StoreImpl

    policy = policy or load_policy(paths.config)
    store = store or StoreImpl.from_url(paths.database_url)
    store.check_schema()
    providers = build_providers(t.cloud for t in policy.targets.values())
    return JitService(store, policy, providers, notifier or LogNotifier(), SystemClock(),
                      directory=directory, settings=settings)
