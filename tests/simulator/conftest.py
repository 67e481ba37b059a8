"""Fixtures for the simulator tests: one simulator server and one callback receiver per test,
both on loopback, and a client session.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from orchestrator.simulator import (
    DropboxSignSettings,
    Faults,
    Simulator,
    SimulatorServer,
    TrutoSettings,
)
from tests.simulator.support import DS_KEY, Call, Receiver


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.stop()


@pytest.fixture
async def server(receiver: Receiver) -> AsyncIterator[SimulatorServer]:
    sim = Simulator(
        dropbox_sign=DropboxSignSettings(
            api_key=DS_KEY,
            callback_url=receiver.url,
            callback_delay_s=0.01,
            callback_backoff_s=0.01,
            callback_backoff_max_s=0.05,
            callback_timeout_s=1.0,
        ),
        truto=TrutoSettings(webhook_url=receiver.url, webhook_backoff_s=0.01),
        faults=Faults(seed=7),
    )
    async with SimulatorServer(sim) as srv:
        yield srv


@pytest.fixture
def sim(server: SimulatorServer) -> Simulator:
    return server.simulator


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def call(http: aiohttp.ClientSession) -> Call:
    async def do(method: str, url: str, **kwargs: Any) -> tuple[int, Any, Any]:
        async with http.request(method, url, **kwargs) as response:
            text = await response.text()
            return response.status, json.loads(text) if text else None, response.headers

    return do
