"""The service under test, served over real HTTP on loopback, wired to the provider simulator.

Workers do not run by themselves here: a test steps them (`dispatch()`, `sweep()`) and moves
the clock, so the 60-minute path takes milliseconds and nothing depends on sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from orchestrator.clock import ManualClock
from orchestrator.config import Settings, load_settings
from orchestrator.simulator.app import SimulatorServer
from orchestrator.simulator.hub import Simulator
from orchestrator.web import keys
from orchestrator.web.app import create_app
from orchestrator.workers.sweeper import SweepReport
from tests.tokens import SECRET_KEY

AiohttpClient = Callable[..., Awaitable[TestClient[Any, Any]]]


@dataclass
class Harness:
    client: TestClient[Any, Any]
    app: web.Application
    clock: ManualClock
    sim: Simulator
    sim_server: SimulatorServer

    async def enqueue(
        self,
        resource_id: str,
        *,
        expect: int = 202,
        headers: dict[str, str] | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        body = {"provider": "dropbox_sign", "resource_id": resource_id, **fields}
        response = await self.client.post("/v1/cancellations", json=body, headers=headers)
        data: dict[str, Any] = await response.json()
        assert response.status == expect, data
        return data

    async def get(self, cancellation_id: str) -> dict[str, Any]:
        response = await self.client.get(f"/v1/cancellations/{cancellation_id}")
        assert response.status == 200
        data: dict[str, Any] = await response.json()
        return data

    async def events(self, cancellation_id: str) -> list[dict[str, Any]]:
        response = await self.client.get(f"/v1/cancellations/{cancellation_id}/events")
        assert response.status == 200
        data: dict[str, Any] = await response.json()
        return list(data["events"])

    async def dispatch(self) -> int:
        """One dispatcher pass and what it leads to at once: after each pass, wait until the
        simulator has delivered its callbacks, and pass again while anything is due (under
        DROPBOX_SIGN_CONFIRM_BY=status a callback only makes a status check due now, as the
        running service's wake-up would). Returns what the first pass claimed."""
        claimed = await self.dispatch_once()
        for _ in range(10):
            if not await self.dispatch_once():
                break
        return claimed

    async def dispatch_once(self) -> int:
        """Exactly one dispatcher pass, then wait until the simulator's callbacks arrived."""
        claimed = await self.app[keys.DISPATCHER].run_once()
        await self.provider_idle()
        return claimed

    async def provider_idle(self) -> None:
        async with asyncio.timeout(10):
            await self.sim.wait_idle()

    async def sweep(self) -> SweepReport:
        return await self.app[keys.SWEEPER].run_once()

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    def sim_stats(self, provider: str = "dropbox_sign") -> dict[str, Any]:
        return self.sim.stats()[provider]


def make_settings(sim_server: SimulatorServer, dsn: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": dsn,
        **sim_server.settings(),
        "dropbox_sign_rate_limit_per_min": 100_000,
        "http_timeout_s": 2,
        "backoff_base_s": 1,
        "api_tokens": "",
        "secret_key": SECRET_KEY,
    }
    values.update(overrides)
    return load_settings(**values)


@pytest.fixture
async def sim_server() -> AsyncIterator[SimulatorServer]:
    async with SimulatorServer(Simulator()) as server:
        yield server


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Override in a test module (or parametrize) to change the service's settings."""
    return {}


@pytest.fixture
async def harness(
    aiohttp_client: AiohttpClient,
    sim_server: SimulatorServer,
    dsn: str,
    settings_overrides: dict[str, Any],
) -> Harness:
    clock = ManualClock()
    settings = make_settings(sim_server, dsn, **settings_overrides)
    app = create_app(settings, dsn, clock=clock, run_workers=False)
    client = await aiohttp_client(app)
    sim_server.simulator.dropbox_sign.callback_url = str(client.make_url("/webhooks/dropbox_sign"))
    return Harness(client, app, clock, sim_server.simulator, sim_server)
