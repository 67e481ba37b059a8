"""Fault 1, crash: 1,000 cancels, `kill -9` while the dispatcher is busy, then a restart.

Every accepted cancellation must end terminal and agree with the provider, none may be
confirmed twice, and a cancel may reach the provider twice only if it was in flight (leased,
its answer not recorded) when the process died.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from orchestrator.simulator.app import SimulatorServer
from orchestrator.simulator.faults import Faults
from orchestrator.simulator.hub import Simulator
from tests.faults import common
from tests.integration.processes import ServiceProcess, wait_for

TOTAL = 1000


@pytest.fixture
async def sim() -> AsyncIterator[SimulatorServer]:
    """Every provider answer takes 50 ms, so the kill always finds calls in flight."""
    async with SimulatorServer(Simulator(faults=Faults(slow_rate=1.0, slow_s=0.05))) as server:
        yield server


@pytest.mark.timeout(240)
async def test_kill_9_while_dispatching_1000_cancels(
    sim: SimulatorServer, dsn: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    env = common.service_env(sim, dsn)
    log = tmp_path / "service.log"
    service = ServiceProcess(env, log)
    sim.simulator.dropbox_sign.callback_url = f"{service.url}/webhooks/dropbox_sign"
    items = common.spread("crash", TOTAL)
    load: asyncio.Task[list[str]] | None = None
    try:
        service.start()
        await service.wait_ready()
        started = time.monotonic()
        async with aiohttp.ClientSession() as http:
            caller = common.Caller(http, service.url)
            load = asyncio.create_task(caller.enqueue_all(items))

            async def a_third_sent() -> bool:
                calls = sum(p.counters.cancel_calls for p in sim.simulator.providers.values())
                return calls >= TOTAL // 3

            await wait_for(a_third_sent, 60, interval_s=0.01, what="a third of the cancels sent")
            service.kill()
            killed = time.monotonic()
            # The dead process's transactions are rolled back: what is left in `sending` is
            # exactly what it held (claimed, answer not recorded).
            in_flight = {
                (r["provider"], r["resource_id"])
                for r in await db.fetch(
                    "SELECT provider, resource_id FROM cancellations WHERE status = 'sending'"
                )
            }
            accepted_at_kill = await db.fetchval("SELECT count(*) FROM cancellations")
            terminal_at_kill = await common.terminal_count(db)

            service = ServiceProcess(env, log, port=service.port)
            service.start()
            await service.wait_ready()
            ready_after_s = time.monotonic() - killed
            accepted = await load
            drained_s = await common.wait_all_terminal(db, TOTAL, timeout_s=120)
            since_kill_s = time.monotonic() - killed
            total_s = time.monotonic() - started
    finally:
        if load is not None and not load.done():
            load.cancel()
            with contextlib.suppress(BaseException):
                await load
        service.stop()

    duplicates = common.provider_duplicates(sim)
    duplicated = common.duplicated_requests(sim)
    in_flight_by_provider = Counter(provider for provider, _ in in_flight)
    print(
        f"\ncrash: {TOTAL} cancels over 3 providers; at the kill {accepted_at_kill} accepted,"
        f" {terminal_at_kill} terminal, {len(in_flight)} in flight {dict(in_flight_by_provider)};"
        f" restarted and ready in"
        f" {ready_after_s:.1f}s; all terminal {since_kill_s:.1f}s after the kill"
        f" ({drained_s:.1f}s after the enqueues ended, {total_s:.1f}s in all);"
        f" duplicate cancel calls at the providers: {sum(duplicates.values())} {duplicates};"
        f" enqueue retries after connection errors: {caller.network_errors}"
    )

    assert len(set(accepted)) == TOTAL
    assert await common.lost(db, accepted) == []
    assert await db.fetchval("SELECT count(*) FROM cancellations") == TOTAL
    statuses = dict(await db.fetch("SELECT status, count(*) FROM cancellations GROUP BY status"))
    assert statuses == {"confirmed": TOTAL}
    assert await common.confirmed_twice(db) == []
    assert await common.broken_chains(db) == []
    assert await common.disagreements(db, sim) == []
    assert caller.unexpected == []
    # Only a cancel whose answer died with the process may be sent again, and at most once.
    assert duplicated <= in_flight, duplicated - in_flight
    assert sum(duplicates.values()) <= len(in_flight)
    assert "Traceback" not in log.read_text()
