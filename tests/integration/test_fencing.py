"""Leases, fencing and several workers on one database."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from orchestrator.store import db, migrations
from orchestrator.store.repository import Store
from orchestrator.web import keys
from orchestrator.web.app import create_app
from orchestrator.workers.dispatcher import DispatchConfig, Dispatcher
from orchestrator.workers.sweeper import Sweeper
from tests.integration.conftest import AiohttpClient, Harness, make_settings
from tests.integration.processes import free_port


def second_dispatcher(harness: Harness, owner: str) -> Dispatcher:
    first = harness.app[keys.DISPATCHER]
    return Dispatcher(
        first.store,
        first.http,
        first.providers,
        first.accounts,
        first.policy,
        DispatchConfig(batch=50, lease_s=first.config.lease_s),
        harness.clock,
        owner=owner,
    )


async def test_expired_lease_is_requeued_and_the_stale_worker_is_fenced_off(
    harness: Harness,
) -> None:
    created = await harness.enqueue("sr-lease")
    stale = harness.app[keys.DISPATCHER]
    (row,) = await stale.claim(10)  # ... and then this worker stalls

    harness.advance(stale.config.lease_s + 1)
    report = await harness.sweep()
    assert report.leases_expired == 1
    assert (await harness.get(created["id"]))["status"] == "queued"

    rescuer = second_dispatcher(harness, "rescuer")
    assert await rescuer.run_once() == 1
    await harness.provider_idle()
    assert await rescuer.run_once() == 1  # the check the cancel's callback prompted
    await harness.provider_idle()
    confirmed = await harness.get(created["id"])
    assert confirmed["status"] == "confirmed"

    await stale.process(row)  # the stalled worker wakes up with its old version
    after = await harness.get(created["id"])
    assert after == confirmed
    assert [e["cause"] for e in await harness.events(created["id"])].count("lease_expired") == 1


async def test_concurrent_dispatchers_never_claim_the_same_row(harness: Harness) -> None:
    for n in range(60):
        await harness.enqueue(f"sr-multi-{n}")
    workers = [second_dispatcher(harness, f"worker-{i}") for i in range(3)]
    batches = await asyncio.gather(*(w.claim(25) for w in workers))
    ids = [row.id for batch in batches for row in batch]
    assert len(ids) == 60
    assert len(set(ids)) == 60


async def test_database_down_gives_503_not_a_hang(
    aiohttp_client: AiohttpClient, sim_server: Any, dsn: str
) -> None:
    dead = "postgresql://postgres@127.0.0.1:1/nowhere"
    settings = make_settings(sim_server, dead)
    client: TestClient[Any, Any] = await aiohttp_client(
        create_app(settings, dead, run_workers=False)
    )
    response = await client.post(
        "/v1/cancellations", json={"provider": "dropbox_sign", "resource_id": "sr-down"}
    )
    assert response.status == 503
    assert response.content_type == "application/problem+json"
    ready = await client.get("/readyz")
    assert ready.status == 503
    assert (await client.get("/healthz")).status == 200


async def test_readyz_reports_a_schema_behind_the_code(
    harness: Harness, db: asyncpg.Connection
) -> None:
    assert (await harness.client.get("/readyz")).status == 200
    await db.execute("DELETE FROM schema_migrations")
    response = await harness.client.get("/readyz")
    assert response.status == 503
    assert (await response.json())["expected"] == migrations.latest_version()


async def test_stats_follow_every_transition(harness: Harness) -> None:
    harness.sim.seed_request("dropbox_sign", "sr-s2", "completed")
    harness.sim.configure({"dropbox_sign": {"drop_callback_rate": 1.0}})
    for resource in ("sr-s1", "sr-s2", "sr-s3"):
        await harness.enqueue(resource)
    stats = await (await harness.client.get("/v1/stats")).json()
    assert (stats["total"], stats["queued"]) == (3, 3)
    await harness.dispatch()
    await harness.app[keys.SWEEPER].store.fold_counts()
    stats = await (await harness.client.get("/v1/stats")).json()
    assert stats["awaiting_confirmation"] == 2
    assert stats["failed"] == 1
    assert stats["total"] == 3
    harness.advance(3601)
    stats = await (await harness.client.get("/v1/stats")).json()
    assert stats["overdue"] == 2
    await harness.sweep()
    await harness.dispatch()
    stats = await (await harness.client.get("/v1/stats")).json()
    assert (stats["confirmed"], stats["failed"], stats["overdue"]) == (2, 1, 0)
    assert stats["last_confirmed_at"] is not None


async def test_a_sweep_round_takes_every_overdue_row_in_batches(harness: Harness) -> None:
    harness.sim.configure({"dropbox_sign": {"drop_callback_rate": 1.0}})
    for n in range(5):
        await harness.enqueue(f"sr-batch-{n}")
    await harness.dispatch()
    harness.advance(3601)
    sweeper = Sweeper(harness.app[keys.STORE], harness.clock, batch=2)
    assert (await sweeper.run_once()).overdue == 5
    assert (await sweeper.run_once()).overdue == 0


async def test_an_answer_the_database_cannot_take_in_time_is_a_warning_and_the_row_comes_back(
    harness: Harness, caplog: Any
) -> None:
    """A provider answered but the database stayed away longer than half the lease: the
    attempt ends with a warning (an outage, not a bug), and the row is sent again after its
    lease, ending once."""
    created = await harness.enqueue("sr-outage")
    first = harness.app[keys.DISPATCHER]
    (row,) = await first.claim(10)
    nowhere = await db.create_pool(
        f"postgresql://postgres@127.0.0.1:{free_port()}/none", 1, acquire_timeout_s=0.05
    )
    cut_off = Dispatcher(
        Store(nowhere),
        first.http,
        first.providers,
        first.accounts,
        first.policy,
        DispatchConfig(batch=1, lease_s=0.4),
        harness.clock,
        owner=row.lease_owner,
    )
    try:
        with caplog.at_level("WARNING", logger="orchestrator.workers.dispatcher"):
            await cut_off.process(row)  # before: DatabaseUnavailable escaped the task
    finally:
        await nowhere.close()
    await harness.provider_idle()
    assert harness.sim_stats()["cancel_calls"] == 1  # the provider did answer
    assert any("stayed unavailable" in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
    assert (await harness.get(created["id"]))["status"] == "sending"

    harness.advance(first.config.lease_s + 1)
    assert (await harness.sweep()).leases_expired == 1
    await harness.dispatch()
    assert (await harness.get(created["id"]))["status"] == "confirmed"
