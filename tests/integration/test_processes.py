"""Real processes: SIGKILL in the middle of dispatch, and SIGTERM under load.

The service runs as `python -m orchestrator serve` against the test's database and the
simulator (in this process, on loopback). Nothing accepted may be lost, none confirmed twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from orchestrator.simulator.app import SimulatorServer
from orchestrator.simulator.faults import Faults
from orchestrator.simulator.hub import Simulator
from tests.integration.processes import ServiceProcess, wait_for


@pytest.fixture
async def slow_sim() -> AsyncIterator[SimulatorServer]:
    """Every provider answer takes a while, so a kill always finds calls in flight."""
    async with SimulatorServer(Simulator(faults=Faults(slow_rate=1.0, slow_s=0.05))) as server:
        yield server


def service_env(sim: SimulatorServer, dsn: str, **extra: str) -> dict[str, str]:
    return {
        "DATABASE_URL": dsn,
        "DROPBOX_SIGN_BASE_URL": sim.dropbox_sign_url,
        "DROPBOX_SIGN_API_KEY": sim.simulator.dropbox_sign.settings.api_key,
        "DROPBOX_SIGN_RATE_LIMIT_PER_MIN": "1000000",
        "ORCH_LEASE_S": "3",
        "ORCH_SWEEP_INTERVAL_S": "0.5",
        "ORCH_CONFIRM_TIMEOUT_S": "5",
        "ORCH_DISPATCH_CONCURRENCY": "16",
        "ORCH_DISPATCH_POLL_S": "0.2",
        "ORCH_SHUTDOWN_TIMEOUT_S": "5",
        "ORCH_LOG_LEVEL": "INFO",
        **extra,
    }


async def enqueue_many(http: aiohttp.ClientSession, url: str, ids: list[str]) -> list[str]:
    limit = asyncio.Semaphore(32)

    async def one(resource_id: str) -> str:
        async with (
            limit,
            http.post(
                f"{url}/v1/cancellations",
                json={"provider": "dropbox_sign", "resource_id": resource_id},
            ) as response,
        ):
            assert response.status == 202, await response.text()
            return str((await response.json())["id"])

    return list(await asyncio.gather(*(one(i) for i in ids)))


async def terminal_count(db: asyncpg.Connection) -> int:
    return int(
        await db.fetchval(
            "SELECT count(*) FROM cancellations WHERE status IN ('confirmed', 'failed')"
        )
    )


async def test_kill_9_during_dispatch_loses_nothing(
    slow_sim: SimulatorServer, dsn: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    total = 300
    env = service_env(slow_sim, dsn)
    service = ServiceProcess(env, tmp_path / "service.log")
    slow_sim.simulator.dropbox_sign.callback_url = f"{service.url}/webhooks/dropbox_sign"
    try:
        service.start()
        await service.wait_ready()
        async with aiohttp.ClientSession() as http:
            await enqueue_many(http, service.url, [f"sr-crash-{n}" for n in range(total)])

        async def cancels_sent() -> bool:
            return bool(slow_sim.simulator.stats()["dropbox_sign"]["cancel_calls"] >= total // 3)

        await wait_for(cancels_sent, 30, what="a third of the cancels sent")
        in_flight_at_kill = await db.fetchval(
            "SELECT count(*) FROM cancellations WHERE status = 'sending'"
        )
        service.kill()

        restarted = ServiceProcess(env, tmp_path / "service.log", port=service.port)
        service = restarted
        service.start()
        await service.wait_ready()

        async def all_terminal() -> bool:
            return await terminal_count(db) == total

        await wait_for(all_terminal, 60, interval_s=0.2, what="every cancellation terminal")
    finally:
        service.stop()

    statuses = dict(await db.fetch("SELECT status, count(*) FROM cancellations GROUP BY status"))
    assert statuses == {"confirmed": total}
    twice = await db.fetchval(
        "SELECT count(*) FROM (SELECT cancellation_id FROM cancellation_events"
        " WHERE to_status = 'confirmed' GROUP BY cancellation_id HAVING count(*) > 1) t"
    )
    assert twice == 0
    sim_stats: dict[str, Any] = slow_sim.simulator.stats()["dropbox_sign"]
    duplicates = sim_stats["cancel_calls"] - total
    print(
        f"\nkill -9: {total} cancels, {in_flight_at_kill} in flight at the kill, "
        f"{duplicates} duplicate cancel calls at the provider"
    )
    # A duplicate is only allowed for a cancel that was in flight when the process died
    # (its answer was lost with the process; the expired lease sends it again).
    assert 0 <= duplicates <= in_flight_at_kill + 16


async def test_sigterm_under_load_leaves_nothing_in_sending(
    slow_sim: SimulatorServer, dsn: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    slow_sim.simulator.configure({"slow_s": 0.5})
    env = service_env(slow_sim, dsn, ORCH_SHUTDOWN_TIMEOUT_S="2")
    service = ServiceProcess(env, tmp_path / "service.log")
    slow_sim.simulator.dropbox_sign.callback_url = f"{service.url}/webhooks/dropbox_sign"
    try:
        service.start()
        await service.wait_ready()
        async with aiohttp.ClientSession() as http:
            await enqueue_many(http, service.url, [f"sr-term-{n}" for n in range(100)])

        async def some_sending() -> bool:
            return bool(
                await db.fetchval("SELECT count(*) FROM cancellations WHERE status = 'sending'")
            )

        await wait_for(some_sending, 10, interval_s=0.02, what="calls in flight")
        service.terminate()
        assert service.wait_exit(timeout_s=15) == 0
    finally:
        service.stop()

    assert await db.fetchval("SELECT count(*) FROM cancellations WHERE status = 'sending'") == 0
    assert await db.fetchval("SELECT count(*) FROM cancellations") == 100
    log = (tmp_path / "service.log").read_text()
    assert "Traceback" not in log, log[-3000:]
