"""Which providers exist and which accounts are configured for each.

Adding a provider: write its module, add one line to PROVIDERS.
"""

from __future__ import annotations

from collections.abc import Iterable

from orchestrator.config import ConfigError, Settings
from orchestrator.providers import base
from orchestrator.providers.aptly import Aptly
from orchestrator.providers.dropbox_sign import DropboxSign
from orchestrator.providers.truto import Truto

PROVIDERS: dict[str, base.Provider] = {
    provider.name: provider for provider in (DropboxSign(), Truto(), Aptly())
}

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
    """The environment's one account per provider, plus those of ORCH_CONFIG."""
    accounts = []
    for entry in settings.accounts():
        if entry.provider not in PROVIDERS:
            known = ", ".join(sorted(PROVIDERS))
            raise ConfigError(f"ORCH_CONFIG: unknown provider {entry.provider!r} (known: {known})")
        accounts.append(
            base.Account(
                provider=entry.provider,
                name=entry.name,
                base_url=entry.base_url,
                secret=entry.secret,
                webhook_secret=entry.webhook_secret,
                rate_limit_per_min=entry.rate_limit_per_min,
                account_id=entry.account_id,
            )
        )
    return Accounts(accounts)
