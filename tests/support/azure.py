"""The real Azure SDK pointed at the local ARM emulator (tests/fakes/arm/).

    def test_something(arm_emulator: ArmEmulator) -> None:
        arm_emulator.add_nsg(SUBSCRIPTION, "rg-app", "nsg-app")
        client = network_client(arm_emulator)
        client.network_security_groups.get("rg-app", "nsg-app")
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
from azure.core.credentials import AccessToken

from tests.fakes.arm import ArmEmulator

if TYPE_CHECKING:
    from azure.mgmt.network import NetworkManagementClient

    from tests.support.cloud_calls import CloudCallRecorder

SUBSCRIPTION = "00000000-0000-0000-0000-00000000a11e"
ARM_SCOPE = "https://management.azure.com/.default"


class StaticTokenCredential:
    """An azure.core TokenCredential that always hands out "emulator-token" (valid 1 h).

    `scopes` records the scopes asked for, one tuple per call.
    """

    def __init__(self, token: str = "emulator-token") -> None:
        self.token = token
        self.scopes: list[tuple[str, ...]] = []
        self._lock = threading.Lock()

    def get_token(self, *scopes: str, claims: str | None = None, tenant_id: str | None = None,
                  enable_cae: bool = False, **kwargs: Any) -> AccessToken:
        with self._lock:
            self.scopes.append(scopes)
        return AccessToken(self.token, int(time.time()) + 3600)


def network_client(emulator: ArmEmulator, subscription_id: str = SUBSCRIPTION,
                   **kwargs: Any) -> NetworkManagementClient:
    """A NetworkManagementClient for `emulator`: its URL, its CA, a static token.

    Polls every 0.05 s unless the emulator's Retry-After says otherwise; `kwargs` go to the
    client (e.g. retry_total=0, retry_backoff_factor=0.01, credential=...).
    """
    from azure.mgmt.network import NetworkManagementClient  # heavy: imported when used

    options: dict[str, Any] = {
        "credential": StaticTokenCredential(),
        "credential_scopes": [ARM_SCOPE],
        "connection_verify": emulator.ca_bundle,
        "polling_interval": 0.05,
        **kwargs,
    }
    credential = options.pop("credential")
    return NetworkManagementClient(credential, subscription_id, base_url=emulator.url, **options)


@pytest.fixture
def arm_emulator(cloud_calls: CloudCallRecorder) -> Iterator[ArmEmulator]:
    """A started ArmEmulator (default settings; change `op_delay`, `faults`... as needed).

    The test's requests to it are recorded (`cloud_calls`), for the least-privilege check.
    """
    with ArmEmulator() as emulator:
        yield emulator


def emulator_provider(emulator: ArmEmulator, **kwargs: Any) -> Any:
    """jit's AzureProvider for `emulator`: a static token, its CA, quick polls and retries."""
    from jitcore.providers.azure import AzureProvider, Backoff

    options: dict[str, Any] = {"credential": StaticTokenCredential(), "polling_interval": 0.05,
                               "backoff": Backoff(attempts=12, base=0.02, cap=0.3),
                               "client_options": {"connection_verify": emulator.ca_bundle,
                                                  "retry_backoff_factor": 0.05}}
    options.update(kwargs)
    return AzureProvider(**options)
