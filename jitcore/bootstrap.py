"""The one place that wires real objects together (the CLI and the bot call it)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

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


LEASE_ENV = "JIT_LEASE"
BATCH_ENV = "JIT_SWEEP_BATCH"


def engine_settings(env: Mapping[str, str] | None = None, **overrides: Any) -> EngineSettings:
    """The engine's settings, with what the environment sets:

    JIT_LEASE        how long a claimed cloud step (an open, a close) is left to the process
                     that claimed it before another replica takes it over (default 60s)
    JIT_SWEEP_BATCH  grants a sweep claims per transaction (default 100): smaller batches
                     spread a burst of expiries over more replicas
    """
    from jitcore.domain import parse_duration
    from jitcore.errors import SettingsError
    from jitcore.service import EngineSettings

    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    lease = env.get(LEASE_ENV, "").strip()
    if lease:
        try:
            values["lease"] = parse_duration(lease)
        except ValueError as exc:
            raise SettingsError(f"{LEASE_ENV}={lease!r}: {exc}") from None
    batch = env.get(BATCH_ENV, "").strip()
    if batch:
        if not (batch.isascii() and batch.isdigit()) or not 1 <= int(batch) <= 10_000:
            raise SettingsError(f"{BATCH_ENV}={batch!r}: use a whole number from 1 to 10000")
        values["batch"] = int(batch)
    return EngineSettings(**{**values, **overrides})


def build_service(paths: Paths, *, notifier: Notifier | None = None,
                  directory: Directory | None = None, policy: Policy | None = None,
                  settings: EngineSettings | None = None,
                  store: Store | None = None, metrics: bool = False) -> JitService:
    """Policy, store (checked to be migrated), providers, notifier and clock -> the service.
    With `metrics`, the process's Prometheus metrics are registered (for /metrics)."""
    from jitcore.policy_file import load_policy
    from jitcore.ports import LogNotifier, SystemClock
    from jitcore.providers.registry import build_providers
    from jitcore.service import JitService
    from jitcore.store import Store as StoreImpl

    policy = policy or load_policy(paths.config)
    store = store or StoreImpl.from_url(paths.database_url)
    store.check_schema()
    providers = build_providers(t.cloud for t in policy.targets.values())
    clock = SystemClock()
    grant_metrics = None
    if metrics:
        from jitcore.metrics import install

        grant_metrics = install(store, clock)
    return JitService(store, policy, providers, notifier or LogNotifier(), clock,
                      directory=directory, settings=settings or engine_settings(),
                      metrics=grant_metrics)
