"""Which providers exist and which accounts are configured for each.

Adding a provider: write its module, add one line to PROVIDERS.
"""

from __future__ import annotations

from collections.abc import Iterable

from orchestrator.config import Settings
from orchestrator.providers import base
from orchestrator.providers.dropbox_sign import DropboxSign

PROVIDERS: dict[str, base.Provider] = {provider.name: provider for provider in (DropboxSign(),)}

WEBHOOK_ROUTES: dict[str, base.Provider] = {
    name: provider for provider in PROVIDERS.values() for name in provider.webhook_names
}


class Accounts:
    """The configured accounts, by provider and name."""

    def __init__(self, accounts: Iterable[base.Account]) -> None:
        self._by_key = {(a.provider, a.name): a for a in accounts}

    def get(self, provider: str, name: str) -> base.Account | None:
        return self._by_key.get((provider, name))

    def for_provider(self, provider: str) -> list[base.Account]:
        return [a for (p, _), a in self._by_key.items() if p == provider]

    def all(self) -> list[base.Account]:
        return list(self._by_key.values())


def accounts_from_settings(settings: Settings) -> Accounts:
    """The single-account configuration from environment variables."""
    return Accounts(
        [
            base.Account(
                provider="dropbox_sign",
                name="default",
                base_url=settings.dropbox_sign_base_url,
                secret=settings.dropbox_sign_api_key,
                rate_limit_per_min=settings.dropbox_sign_rate_limit_per_min,
            ),
        ]
    )
