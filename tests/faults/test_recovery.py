"""Fault 7, crash recovery (issue 17): a dead instance's claims are back in seconds, a live
one's are never taken, however slow its provider call.

Two service processes share one database, with the default lease (90 s) and sweep interval
(30 s), so neither can be what brings the rows back: only the owner check (every
ORCH_OWNER_CHECK_S, an owner seen without its lock for ORCH_OWNER_GRACE_S) can.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
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

TOTAL = 600
#: The issue's bound: every cancel terminal within this long after the load ends.
RECOVERY_BOUND_S = 20.0
DEFAULTS = {"ORCH_LEASE_S": "90", "ORCH_SWEEP_INTERVAL_S": "30"}


@pytest.fixture
async def sim() -> AsyncIterator[SimulatorServer]:
    """Every provider answer takes 50 ms, so the kill always finds calls in flight."""
    async with SimulatorServer(Simulator(faults=Faults(slow_rate=1.0, slow_s=0.05))) as server:
        yield server


def owner_of(service: ServiceProcess) -> str:
    """The instance's owner id, from its start-up line."""
    found = re.search(r"dispatcher (\S+), sweeper", service.log_path.read_text())
    assert found is not None, service.log_path.read_text()[-2000:]
    return found.group(1)


async def start_all(services: list[ServiceProcess]) -> None:
    for service in services:
        service.start()
    await asyncio.gather(*(s.wait_ready() for s in services))


async def causes(db: asyncpg.Connection) -> dict[str, int]:
    rows = await db.fetch("SELECT cause, count(*) AS n FROM cancellation_events GROUP BY cause")
    return {r["cause"]: r["n"] for r in rows}


@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_kill_9_of_one_instance_under_load_every_cancel_terminal_within_20s(
    sim: SimulatorServer, dsn: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    env = common.service_env(sim, dsn, **DEFAULTS)
    survivor = ServiceProcess(env, tmp_path / "survivor.log")
    victim = ServiceProcess(env, tmp_path / "victim.log")
    sim.simulator.dropbox_sign.callback_url = f"{survivor.url}/webhooks/dropbox_sign"
    items = common.spread("recover", TOTAL)
    load: asyncio.Task[list[str]] | None = None
    try:
        await start_all([survivor, victim])
        dead = owner_of(victim)
        async with aiohttp.ClientSession() as http:
            # Every enqueue goes through the survivor; both instances claim and send.
            caller = common.Caller(http, survivor.url)
            load = asyncio.create_task(caller.enqueue_all(items))

            async def victim_busy() -> bool:
                held = await db.fetchval(
                    "SELECT count(*) FROM cancellations"
                    " WHERE status = 'sending' AND lease_owner = $1",
                    dead,
                )
                return int(held) >= 8

            await wait_for(victim_busy, 60, interval_s=0.01, what="the victim holding rows")
            victim.kill()
            killed = time.monotonic()
            in_flight = {
                (r["provider"], r["resource_id"])
                for r in await db.fetch(
                    "SELECT provider, resource_id FROM cancellations"
                    " WHERE status = 'sending' AND lease_owner = $1",
                    dead,
                )
            }
            accepted = await load
            load_ended = time.monotonic()
            recovery_s = await common.wait_all_terminal(db, TOTAL, timeout_s=RECOVERY_BOUND_S)
            since_kill_s = time.monotonic() - killed
        released_at = await db.fetchval(
            "SELECT max(at) - min(at) FROM cancellation_events WHERE cause = 'owner_gone'"
        )
        assert survivor.proc is not None and survivor.proc.poll() is None
    finally:
        if load is not None and not load.done():
            load.cancel()
            with contextlib.suppress(BaseException):
                await load
        survivor.stop()
        victim.stop()

    duplicates = common.provider_duplicates(sim)
    seen = await causes(db)
    print(
        f"\nrecovery: {TOTAL} cancels through 2 instances, one killed (kill -9) holding"
        f" {len(in_flight)} rows, {load_ended - killed:.1f}s before the load ended; all terminal"
        f" {recovery_s:.1f}s after the load ended ({since_kill_s:.1f}s after the kill; lease 90s,"
        f" sweep 30s); {seen.get('owner_gone', 0)} rows requeued as owner_gone (spread"
        f" {released_at}), {seen.get('lease_expired', 0)} as lease_expired; duplicate cancel"
        f" calls at the providers: {sum(duplicates.values())}"
    )

    assert len(set(accepted)) == TOTAL
    assert await common.lost(db, accepted) == []
    assert await common.terminal_count(db) == TOTAL
    # What the victim held came back because its owner was gone, not because a lease ran out.
    assert seen.get("owner_gone") == len(in_flight)
    assert "lease_expired" not in seen
    assert await common.confirmed_twice(db) == []
    assert await common.broken_chains(db) == []
    assert await common.disagreements(db, sim) == []
    assert caller.unexpected == []
    assert common.duplicated_requests(sim) <= in_flight
    assert "Traceback" not in survivor.log_path.read_text()


STUCK_S = 60.0
#: The backend holding an owner's instance lock (a bigint advisory lock: its two halves).
LOCK_HOLDER = (
    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1"
    " AND ((classid::bigint << 32) | objid::bigint) = hashtextextended($1, 0)"
)


@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_a_live_instance_stuck_60s_in_provider_calls_keeps_its_rows(
    dsn: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    """The provider takes a minute to answer; the other instance checks for dead owners
    every 2 s meanwhile and never takes the rows, not even when the holder's lock connection
    is cut (it takes the lock again within the grace), and each cancel reaches the provider
    once."""
    faults = Faults(slow_rate=1.0, slow_s=STUCK_S)
    async with SimulatorServer(Simulator(faults=faults)) as sim:
        # Every call takes a minute here, status checks too: a callback confirms (webhook
        # mode), so each cancel is one stuck call, not a stuck cancel and a stuck check.
        env = common.service_env(
            sim,
            dsn,
            **DEFAULTS,
            ORCH_HTTP_TIMEOUT_S=str(STUCK_S + 20),
            DROPBOX_SIGN_CONFIRM_BY="webhook",
        )
        services = [ServiceProcess(env, tmp_path / f"slow-{n}.log") for n in range(2)]
        sim.simulator.dropbox_sign.callback_url = f"{services[0].url}/webhooks/dropbox_sign"
        try:
            await start_all(services)
            owners = {owner_of(s) for s in services}
            items = common.spread("stuck", 6)
            started = time.monotonic()
            async with aiohttp.ClientSession() as http:
                accepted = await common.Caller(http, services[0].url).enqueue_all(items)

            async def all_sent() -> bool:
                calls = sum(p.counters.cancel_calls for p in sim.simulator.providers.values())
                return calls >= len(items)

            await wait_for(all_sent, 10, what="every cancel sent")
            holders = {
                r["lease_owner"]
                for r in await db.fetch(
                    "SELECT lease_owner FROM cancellations WHERE status = 'sending'"
                )
            }
            # Meanwhile the holders' lock connections are cut: each takes its lock again
            # within the grace, so nothing is handed over.
            cut = time.monotonic()
            for holder in holders:
                old = await db.fetchval(LOCK_HOLDER, holder)
                assert old is not None, holder
                assert await db.fetchval("SELECT pg_terminate_backend($1)", old)

                async def retaken(holder: str = holder, old: int = old) -> bool:
                    pid = await db.fetchval(LOCK_HOLDER, holder)
                    return pid is not None and pid != old

                await wait_for(retaken, 10, what="the instance lock taken again")
            retaken_s = time.monotonic() - cut
            await common.wait_all_terminal(db, len(items), timeout_s=STUCK_S + 25)
            took_s = time.monotonic() - started
            logs = "".join(s.log_path.read_text() for s in services)
            assert logs.count("is held again; claiming resumes") == len(holders)
            assert all(s.proc is not None and s.proc.poll() is None for s in services)
        finally:
            for service in services:
                service.stop()

    seen = await causes(db)
    calls = sum(p.counters.cancel_calls for p in sim.simulator.providers.values())
    print(
        f"\nslow but live: {len(items)} cancels held {took_s:.0f}s by {len(holders)} live"
        f" instance(s) while each other checked for dead owners every 2s; their lock"
        f" connections cut (pg_terminate_backend) and the locks re-taken in {retaken_s:.1f}s;"
        f" {calls} cancel calls,"
        f" requeued {seen.get('owner_gone', 0)} as owner_gone,"
        f" {seen.get('lease_expired', 0)} as lease_expired"
    )
    assert holders <= owners
    assert await common.lost(db, accepted) == []
    assert "owner_gone" not in seen
    assert "lease_expired" not in seen
    assert seen["claimed"] == len(items)  # nobody took a row over
    assert calls == len(items)
    assert await common.broken_chains(db) == []
