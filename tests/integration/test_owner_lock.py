"""Crash recovery by the owner lock (issue 17): a dead instance's claims come back as soon as
Postgres has dropped its lock; a live one's never do; a lost lock connection stops claims.

Each OwnerLock here is its own Postgres session, as each instance's is: stopping one closes
its connection, which is how Postgres learns of a `kill -9`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import asyncpg

from orchestrator.store.owner_lock import OwnerLock
from orchestrator.web import keys
from orchestrator.workers.dispatcher import DispatchConfig, Dispatcher
from orchestrator.workers.sweeper import Sweeper
from tests.integration.conftest import Harness
from tests.integration.processes import wait_for


def dispatcher_of(harness: Harness, owner: str, may_claim: Callable[[], bool]) -> Dispatcher:
    first = harness.app[keys.DISPATCHER]
    return Dispatcher(
        first.store,
        first.http,
        first.providers,
        first.accounts,
        first.policy,
        DispatchConfig(batch=2, lease_s=first.config.lease_s),
        harness.clock,
        owner=owner,
        may_claim=may_claim,
    )


class Instance:
    """An instance's owner lock, held by a task, and its dispatcher."""

    def __init__(self, harness: Harness, dsn: str, owner: str, retry_s: float = 0.2) -> None:
        self.lock = OwnerLock(dsn, owner, check_s=0.05, retry_s=retry_s)
        self.dispatcher = dispatcher_of(harness, owner, self.lock.held)
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._stopping = asyncio.Event()
        self._task = asyncio.create_task(self.lock.run(self._stopping))
        await asyncio.wait_for(self.lock.wait_held(), 10)

    async def stop(self) -> None:
        """The lock's session ends, as it does when the process dies."""
        self._stopping.set()
        if self._task is not None:
            await asyncio.wait_for(self._task, 10)
            self._task = None


@contextlib.asynccontextmanager
async def instances(harness: Harness, dsn: str, *owners: str) -> AsyncIterator[list[Instance]]:
    started = [Instance(harness, dsn, owner) for owner in owners]
    try:
        for instance in started:
            await instance.start()
        yield started
    finally:
        for instance in started:
            await instance.stop()


async def leased(db: asyncpg.Connection) -> dict[str, int]:
    rows = await db.fetch(
        "SELECT lease_owner, count(*) AS n FROM cancellations WHERE status = 'sending'"
        " GROUP BY lease_owner"
    )
    return {r["lease_owner"]: r["n"] for r in rows}


async def workers_of(db: asyncpg.Connection, cause: str) -> list[str | None]:
    """The `worker` of each history row with this cause."""
    rows = await db.fetch(
        "SELECT evidence->>'worker' AS w FROM cancellation_events WHERE cause = $1 ORDER BY id",
        cause,
    )
    return [r["w"] for r in rows]


async def test_a_dead_owners_rows_are_requeued_and_a_live_owners_are_not(
    harness: Harness, dsn: str, db: asyncpg.Connection
) -> None:
    for n in range(4):
        await harness.enqueue(f"ol-{n}")
    sweeper = Sweeper(harness.app[keys.STORE], harness.clock, owner_grace_s=0)
    async with instances(harness, dsn, "alive", "dead") as (alive, dead):
        stale = await dead.dispatcher.claim(2)
        assert len(await alive.dispatcher.claim(2)) == 2
        # Both hold their locks: nobody's rows are touched, however often it is checked.
        assert (await sweeper.release_dead_owners()).owner_gone == 0
        assert await leased(db) == {"alive": 2, "dead": 2}

        await dead.stop()  # Postgres drops the lock with the session
        report = await sweeper.release_dead_owners()
        assert (report.owner_gone, report.leases_expired) == (2, 0)
        assert await leased(db) == {"alive": 2}
        assert await workers_of(db, "owner_gone") == ["dead", "dead"]
        assert await workers_of(db, "lease_expired") == []

        # The dead instance's answers, were they to arrive, match no row: the fence holds
        # (the provider's own callbacks, which would settle the rows, are held back here).
        harness.sim.configure({"dropbox_sign": {"drop_callback_rate": 1.0}})
        state = "SELECT status, version FROM cancellations WHERE id = ANY($1) ORDER BY id"
        ids = [row.id for row in stale]
        before = [tuple(r) for r in await db.fetch(state, ids)]
        assert {status for status, _ in before} == {"queued"}
        for row in stale:
            await dead.dispatcher.process(row)
        await harness.provider_idle()
        assert [tuple(r) for r in await db.fetch(state, ids)] == before


async def test_an_owner_is_released_only_after_the_grace_and_keeps_its_rows_if_it_comes_back(
    harness: Harness, dsn: str, db: asyncpg.Connection
) -> None:
    for n in range(2):
        await harness.enqueue(f"og-{n}")
    sweeper = Sweeper(harness.app[keys.STORE], harness.clock, owner_grace_s=0.5)
    async with instances(harness, dsn, "blinking") as (blinking,):
        assert len(await blinking.dispatcher.claim(2)) == 2
        await blinking.stop()
        # Seen without its lock: the grace starts, nothing is released yet.
        assert (await sweeper.release_dead_owners()).owner_gone == 0
        await blinking.start()  # it comes back within the grace, same owner
        await asyncio.sleep(0.6)
        assert (await sweeper.release_dead_owners()).owner_gone == 0
        assert await leased(db) == {"blinking": 2}

        await blinking.stop()
        assert (await sweeper.release_dead_owners()).owner_gone == 0
        await asyncio.sleep(0.6)  # still without its lock after the grace: gone
        assert (await sweeper.release_dead_owners()).owner_gone == 2
        assert await leased(db) == {}


async def test_a_lost_lock_connection_stops_claims_until_the_lock_is_taken_again(
    harness: Harness, dsn: str, db: asyncpg.Connection
) -> None:
    await harness.enqueue("ok-1")
    instance = Instance(harness, dsn, "cut", retry_s=1.0)
    await instance.start()
    try:
        pid = instance.lock.server_pid
        assert await db.fetchval("SELECT pg_terminate_backend($1)", pid)
        await wait_for(
            lambda: asyncio.sleep(0, not instance.lock.held()), 5, 0.01, "the loss noticed"
        )
        assert await instance.dispatcher.run_once() == 0  # no claim without the lock
        assert await db.fetchval("SELECT count(*) FROM cancellations WHERE status = 'queued'")

        await asyncio.wait_for(instance.lock.wait_held(), 10)
        assert instance.lock.taken == 2
        assert instance.lock.server_pid != pid
        assert await instance.dispatcher.run_once() == 1
    finally:
        await instance.stop()


async def test_rows_in_flight_when_the_lock_connection_is_cut_are_answered_once(
    harness: Harness, dsn: str, db: asyncpg.Connection
) -> None:
    """A cut longer than the grace: another instance takes the rows over and confirms them;
    the first instance's late answers are fenced off. Each request is confirmed once."""
    for n in range(2):
        await harness.enqueue(f"oc-{n}")
    sweeper = Sweeper(harness.app[keys.STORE], harness.clock, owner_grace_s=0)
    async with instances(harness, dsn, "rescuer") as (rescuer,):
        cut = Instance(harness, dsn, "cut", retry_s=30.0)  # it will not be back in time
        await cut.start()
        try:
            in_flight = await cut.dispatcher.claim(2)
            assert await db.fetchval("SELECT pg_terminate_backend($1)", cut.lock.server_pid)
            await wait_for(lambda: asyncio.sleep(0, not cut.lock.held()), 5, 0.01, "the loss")
            assert (await sweeper.release_dead_owners()).owner_gone == 2
            assert await rescuer.dispatcher.run_once() == 2
            await harness.provider_idle()
            # DROPBOX_SIGN_CONFIRM_BY=status: the callbacks prompted the checks that confirm.
            assert await rescuer.dispatcher.run_once() == 2
            await harness.provider_idle()
            confirmed = [await harness.get(str(row.id)) for row in in_flight]
            assert {c["status"] for c in confirmed} == {"confirmed"}

            for row in in_flight:  # the provider answers the first instance at last
                await cut.dispatcher.process(row)
            await harness.provider_idle()
            assert [await harness.get(str(row.id)) for row in in_flight] == confirmed
            twice = await db.fetchval(
                "SELECT count(*) FROM (SELECT cancellation_id FROM cancellation_events"
                " WHERE to_status = 'confirmed' GROUP BY 1 HAVING count(*) > 1) t"
            )
            assert twice == 0
        finally:
            await cut.stop()
