"""Which provider serves which cloud. The SDKs are imported only when a provider is built."""

from __future__ import annotations

from collections.abc import Iterable

from jitcore.ports import Provider


def build_providers(clouds: Iterable[str]) -> dict[str, Provider]:
    """Providers for the clouds the policy uses (aws, azure)."""
    providers: dict[str, Provider] = {}
    for cloud in set(clouds):
        if cloud == "aws":
            from jitcore.providers.aws import AwsProvider

            providers["aws"] = AwsProvider()
        elif cloud == "azure":
            from jitcore.providers.azure import AzureProvider

            providers["azure"] = AzureProvider()
    return providers
