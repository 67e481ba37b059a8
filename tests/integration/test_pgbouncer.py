"""Behind PgBouncer in transaction mode (issue 17): DATABASE_URL is the pooler, and
DATABASE_DIRECT_URL, PostgreSQL itself, carries what a transaction pooler cannot.

Two real `orchestrator serve` processes share one real PgBouncer (Debian's 1.18, which knows
nothing of protocol-level prepared statements): both migrate at start through the direct URL
(one applies, the other waits on the migrations' session advisory lock and finds nothing to
do), a few hundred cancels are enqueued through both at 32 in flight and all confirm with no
5xx, a long poll on one instance is woken by a change the other made (LISTEN on the direct
connection), neither log has a prepared-statement error, and the pooler's own `SHOW STATS`
proves the traffic went through it.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from orchestrator.simulator.app import SimulatorServer
from orchestrator.simulator.dropbox_sign import DropboxSignSettings
from orchestrator.simulator.hub import Simulator
from orchestrator.store import migrations
from tests.conftest import _admin, with_database
from tests.faults import common
from tests.integration.pgbouncer import PgBouncer, pgbouncer_binary
from tests.integration.processes import ServiceProcess

CANCELS = 300
IN_FLIGHT = 32
#: Server connections the pooler keeps for the database: the two instances' 16 share them.
POOL_SIZE = 5
#: The long poll's wait; a poll woken by its change answers long before it runs out.
WAIT_S = 30
_names = itertools.count()


@pytest.fixture
def pooled_database(pg_server: str) -> Iterator[tuple[str, PgBouncer]]:
    """An empty database (the services migrate it) and a PgBouncer in front of it."""
    if pgbouncer_binary() is None:
        if os.environ.get("CI"):
            pytest.fail(
                "pgbouncer is not installed; .ci/run installs it (apt-get install pgbouncer)"
            )
        pytest.skip("pgbouncer is not installed (apt-get install pgbouncer); CI installs it")
    name = f"pooled_{os.getpid()}_{next(_names)}"
    asyncio.run(_admin(pg_server, f"CREATE DATABASE {name}"))
    bouncer = PgBouncer(pg_server, name, pool_size=POOL_SIZE)
    try:
        bouncer.start()
        yield with_database(pg_server, name), bouncer
    finally:
        bouncer.stop()
        asyncio.run(_admin(pg_server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture
async def sim() -> AsyncIterator[SimulatorServer]:
    # Callbacks two seconds late: a long poll started after the cancel call is still waiting
    # when the confirming callback lands.
    simulator = Simulator(dropbox_sign=DropboxSignSettings(callback_delay_s=2.0))
    async with SimulatorServer(simulator) as server:
        yield server


async def long_poll(http: aiohttp.ClientSession, url: str) -> tuple[dict[str, object], float]:
    started = time.monotonic()
    async with http.get(url, params={"wait": str(WAIT_S), "until": "terminal"}) as response:
        assert response.status == 200, await response.text()
        return await response.json(), time.monotonic() - started


@pytest.mark.timeout(120)
async def test_two_instances_behind_pgbouncer_in_transaction_mode(
    pooled_database: tuple[str, PgBouncer], sim: SimulatorServer, tmp_path: Path
) -> None:
    direct, bouncer = pooled_database
    env = common.service_env(
        sim,
        bouncer.dsn,
        DATABASE_DIRECT_URL=direct,
        ORCH_DATABASE_POOLER="transaction",
        ORCH_DISPATCH_CONCURRENCY="16",
    )
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    services = [ServiceProcess(env, log) for log in logs]
    a, b = services
    sim.simulator.dropbox_sign.callback_url = f"{a.url}/webhooks/dropbox_sign"
    before = await asyncio.to_thread(bouncer.stats)
    started = time.monotonic()
    try:
        for service in services:
            service.start()
        await asyncio.gather(*(service.wait_ready() for service in services))
        async with aiohttp.ClientSession() as http:
            # A long poll on B, woken by the callback that A records.
            caller_a = common.Caller(http, a.url)
            watched = await caller_a.enqueue("dropbox_sign", "pooled-watched")
            async with http.get(f"{b.url}/v1/cancellations/{watched}") as response:
                status_at_start = (await response.json())["status"]
            polled, poll_s = await long_poll(http, f"{b.url}/v1/cancellations/{watched}")

            # The load, half through each instance.
            items = common.spread("pooled", CANCELS)
            callers = [common.Caller(http, service.url) for service in services]
            load_started = time.monotonic()
            halves = await asyncio.gather(
                callers[0].enqueue_all(items[0::2], parallel=IN_FLIGHT // 2),
                callers[1].enqueue_all(items[1::2], parallel=IN_FLIGHT // 2),
            )
            accepted = [*halves[0], *halves[1]]
            db = await asyncpg.connect(direct)
            try:
                drained_s = await common.wait_all_terminal(db, CANCELS + 1, timeout_s=60)
                load_s = time.monotonic() - load_started
                assert await common.lost(db, accepted) == []
                statuses = dict(
                    await db.fetch("SELECT status, count(*) FROM cancellations GROUP BY status")
                )
                schema = await migrations.current_version(db)
            finally:
                await db.close()
    finally:
        for service in services:
            service.stop()
    # `orchestrator migrate` with the same settings goes direct too (through the pooler its
    # session lock and statement cache would fail): nothing is left to apply.
    migrate = await asyncio.to_thread(
        functools.partial(
            subprocess.run,
            [sys.executable, "-m", "orchestrator", "migrate"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    )
    assert migrate.returncode == 0, migrate.stderr
    assert "applied 0 migration(s)" in migrate.stdout
    await asyncio.sleep(1.5)  # the admin console's totals are refreshed every stats_period (1 s)
    after = await asyncio.to_thread(bouncer.stats)
    pooled_xacts = after["total_xact_count"] - before["total_xact_count"]
    pooled_queries = after["total_query_count"] - before["total_query_count"]
    texts = [log.read_text() for log in logs]
    print(
        f"\nbehind pgbouncer (transaction mode, {POOL_SIZE} server connections for two"
        f" instances of 8 client connections each): {CANCELS} cancels at {IN_FLIGHT} in flight"
        f" accepted"
        f" and terminal in {load_s:.1f}s ({drained_s:.1f}s waiting for the last); statuses"
        f" {statuses}; {pooled_xacts} transactions and {pooled_queries} queries through the"
        f" pooler ({pooled_xacts / (CANCELS + 1):.1f} per cancel); answers"
        f" {dict(callers[0].statuses + callers[1].statuses)}; the long poll on B woke"
        f" {poll_s:.2f}s after it started ({status_at_start} -> {polled['status']});"
        f" whole test {time.monotonic() - started:.1f}s"
    )
    # Migrations went direct, under the session advisory lock: one instance applied them.
    assert schema == migrations.latest_version()
    applied = [text.count("applied migration 0001_") for text in texts]
    assert sorted(applied) == [0, 1], applied
    # Every cancel confirmed, and no answer was a 5xx (not even a 503 retried).
    assert statuses == {"confirmed": CANCELS + 1}
    for caller in callers:
        assert caller.unexpected == []
        assert not [s for s in caller.statuses if s >= 500], caller.statuses
    # The long poll ended because the change was announced (B's LISTEN, on the direct
    # connection, heard A's commit through the pooler), not because its wait ran out: a
    # poll the feed never wakes reads the row again only at the end of its wait.
    assert status_at_start not in common.TERMINAL
    assert polled["status"] == "confirmed"
    assert poll_s < WAIT_S - 10, poll_s
    # Nothing relied on a named prepared statement or other session state.
    for text in texts:
        assert "prepared statement" not in text
        assert "InvalidSQLStatementName" not in text
        assert "CRITICAL" not in text
    # The pool's traffic went through the pooler: at least a transaction per cancel.
    assert pooled_xacts >= CANCELS, (before, after, bouncer.log())
