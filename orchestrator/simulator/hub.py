"""The three providers behind one object, so tests seed, fault and read them in one place.

Everything the ``/_sim`` control plane offers over HTTP is a method here first; the HTTP
routes only translate, which lets in-process tests skip HTTP entirely.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from orchestrator.simulator.aptly import AptlySettings, AptlySimulator
from orchestrator.simulator.base import ProviderSimulator
from orchestrator.simulator.dropbox_sign import DropboxSignSettings, DropboxSignSimulator
from orchestrator.simulator.faults import ConfigError, Faults
from orchestrator.simulator.records import iso
from orchestrator.simulator.truto import TrutoSettings, TrutoSimulator


class UnknownProvider(LookupError):
    """The name is not one of ``dropbox_sign``, ``truto``, ``aptly``."""


class Simulator:
    """``faults`` is a template: every provider gets its own copy (and its own random
    sequence derived from the seed)."""

    def __init__(
        self,
        *,
        dropbox_sign: DropboxSignSettings | None = None,
        truto: TrutoSettings | None = None,
        aptly: AptlySettings | None = None,
        faults: Faults | None = None,
    ) -> None:
        self.dropbox_sign = DropboxSignSimulator(dropbox_sign, faults)
        self.truto = TrutoSimulator(truto, faults)
        self.aptly = AptlySimulator(aptly, faults)
        self.providers: dict[str, ProviderSimulator] = {
            p.name: p for p in (self.dropbox_sign, self.truto, self.aptly)
        }
        #: Every request's method and path as it arrived (raw, before any routing), so a
        #: test can show what never reached a provider (a path an id rewrote).
        self.received: list[tuple[str, str]] = []

    def provider(self, name: str) -> ProviderSimulator:
        try:
            return self.providers[name]
        except KeyError:
            raise UnknownProvider(f"unknown provider {name!r}") from None

    def stats(self) -> dict[str, dict[str, Any]]:
        return {name: p.stats() for name, p in self.providers.items()}

    def reset(self) -> None:
        self.received.clear()
        for p in self.providers.values():
            p.reset()

    def config(self) -> dict[str, dict[str, Any]]:
        return {name: p.config() for name, p in self.providers.items()}

    def configure(self, changes: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """Apply ``changes`` atomically and return the new configuration.

        A key naming a provider holds that provider's changes; any other key applies to
        every provider that has such a setting, unless the provider's own section says
        otherwise. A key no provider has is an error.
        """
        per: dict[str, dict[str, Any]] = {name: {} for name in self.providers}
        for name in self.providers:
            section = changes.get(name, {})
            if not isinstance(section, Mapping):
                raise ConfigError(f"{name} must be an object of settings")
            per[name].update(section)
        for key, value in changes.items():
            if key in self.providers:
                continue
            targets = [name for name, p in self.providers.items() if p.knows(key)]
            if not targets:
                raise ConfigError(f"unknown setting {key!r}")
            for name in targets:
                per[name].setdefault(key, value)
        for name, provider_changes in per.items():
            self.providers[name].check(provider_changes)
        for name, provider_changes in per.items():
            self.providers[name].configure(provider_changes)
        return self.config()

    def seed_request(self, provider: str, request_id: str, state: str) -> dict[str, Any]:
        return self.provider(provider).seed(request_id, state).to_dict()

    def get_request(self, provider: str, request_id: str) -> dict[str, Any] | None:
        return self.provider(provider).request_info(request_id)

    def emit(self, provider: str, request_id: str | None, event_type: str) -> dict[str, Any]:
        target = self.provider(provider)
        if isinstance(target, DropboxSignSimulator | TrutoSimulator):
            return target.emit(request_id, event_type)
        raise ConfigError(f"{provider} sends no events")

    def send_callback(
        self,
        provider: str,
        request_id: str | None,
        event_type: str,
        event_time: str | float | None = None,
    ) -> dict[str, Any]:
        """Post a signed event about ``request_id`` that changes nothing at the provider.

        ``event_time`` dates it: for Dropbox Sign the ``event_time`` (a number becomes whole
        Unix seconds, a string is sent as given and hashed as given); for Truto the
        ``created_at`` (a number becomes ISO 8601, a string is sent as given)."""
        target = self.provider(provider)
        if event_time is not None and not isinstance(event_time, str):
            try:
                if isinstance(target, DropboxSignSimulator):
                    event_time = str(int(event_time))
                else:
                    event_time = iso(float(event_time))
            except (OverflowError, ValueError, OSError):
                raise ConfigError(f"event_time {event_time!r} is not a usable time") from None
        if isinstance(target, DropboxSignSimulator):
            return target.send_callback(request_id, event_type, event_time)
        if isinstance(target, TrutoSimulator):
            return target.emit(request_id, event_type, event_time)
        raise ConfigError(f"{provider} sends no events")

    def redirect_followed(self, provider: str) -> None:
        self.provider(provider).counters.redirects_followed += 1

    async def wait_idle(self) -> None:
        """Bound it with ``asyncio.timeout``; see ``ProviderSimulator.wait_idle``."""
        for p in self.providers.values():
            await p.wait_idle()

    async def aclose(self) -> None:
        for p in self.providers.values():
            await p.aclose()


SIMULATOR_KEY = web.AppKey("simulator", Simulator)
