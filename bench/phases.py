"""The benchmark's phases. Each returns a plain dict of figures that run.py reports.

Both implementations (the service and the baseline) go through the same functions, against
the same simulator and the same PostgreSQL, so their figures can be divided.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import psutil

import load
from harness import (
    Blackhole,
    Child,
    CpuMeter,
    OtherLoad,
    Postgres,
    clean_env,
    cpu_seconds,
    free_port,
    machine_busy_seconds,
    peak_rss_bytes,
    percentile,
    sampled_peak_rss,
    triggers_off,
    wait_http,
)

SIM_API_KEY = "sim-dropbox-sign-api-key"  # the simulator's default Dropbox Sign key
SIM_ACCOUNT_ID = "sim-account"
UNLIMITED_PER_MIN = "1000000000"


@dataclass(frozen=True)
class Impl:
    """How to start one implementation and where it keeps its rows."""

    name: str  # "service" or "baseline"
    table: str  # where its rows are read (the service's: a view joining two tables, 0016)
    start: Callable[[str, int, str, dict[str, str]], Child]  # dsn, port, provider url, env
    #: The tables that hold the rows, the one with the status (and the triggers) first, if
    #: `table` is not a table: what is updated, vacuumed and polled directly.
    tables: tuple[str, ...] = ()

    @property
    def is_service(self) -> bool:
        return self.name == "service"

    @property
    def state_table(self) -> str:
        """The table with the status, its partial indexes and its triggers."""
        return self.tables[0] if self.tables else self.table

    @property
    def stored_in(self) -> str:
        """Its tables, for a VACUUM."""
        return ", ".join(self.tables or (self.table,))


class Run:
    """What every phase needs: the database, the simulator, the log directory, the clock."""

    def __init__(
        self, pg: Postgres, log_dir: Path, children: list[Child], variants: list[str]
    ) -> None:
        self.pg = pg
        self.variants = variants  # bench/variants.py prototypes applied to the service
        self.settle_s = 1.5
        self.log_dir = log_dir
        self.children = children  # everything started, for the final clean-up
        self.sim: Child | None = None
        self.sim_url = ""
        self.blackhole = Blackhole()
        #: pg_stat_statements is loaded: the end-to-end rounds record their top statements.
        self.statements = False

    def child(self, name: str, argv: list[str], env: dict[str, str]) -> Child:
        child = Child(name, argv, env, self.log_dir)
        self.children.append(child)
        child.start()
        return child

    # --- the two implementations ------------------------------------------------------

    def service(self, dsn: str, port: int, provider_url: str, env: dict[str, str]) -> Child:
        argv = [sys.executable, "-m", "orchestrator", "serve"]
        if self.variants:
            argv = [sys.executable, str(Path(__file__).with_name("variants.py")), "serve"]
            env = {**env, "BENCH_VARIANTS": ",".join(self.variants)}
        return self.child(
            f"service-{port}",
            argv,
            clean_env(
                {
                    "DATABASE_URL": dsn,
                    "ORCH_HOST": "127.0.0.1",
                    "ORCH_PORT": str(port),
                    "DROPBOX_SIGN_BASE_URL": provider_url,
                    "DROPBOX_SIGN_API_KEY": SIM_API_KEY,
                    "DROPBOX_SIGN_RATE_LIMIT_PER_MIN": UNLIMITED_PER_MIN,
                    # Like for like with the baseline and the figures in docs/benchmarks.md:
                    # a callback confirms. The default (status) adds a status call per cancel.
                    "DROPBOX_SIGN_CONFIRM_BY": "webhook",
                    "ORCH_SHUTDOWN_TIMEOUT_S": "2",
                    **env,
                }
            ),
        )

    def baseline(self, dsn: str, port: int, provider_url: str, env: dict[str, str]) -> Child:
        return self._baseline("baseline", dsn, port, provider_url, env)

    def naive(self, dsn: str, port: int, provider_url: str, env: dict[str, str]) -> Child:
        """Issue 18's naive service: the baseline with one UPDATE per provider answer."""
        return self._baseline("naive", dsn, port, provider_url, env, ["--naive"])

    def _baseline(
        self,
        name: str,
        dsn: str,
        port: int,
        provider_url: str,
        env: dict[str, str],
        extra: list[str] | None = None,
    ) -> Child:
        argv = [
            sys.executable,
            str(Path(__file__).with_name("baseline.py")),
            "--dsn",
            dsn,
            "--port",
            str(port),
            "--provider-url",
            provider_url,
            "--api-key",
            SIM_API_KEY,
        ]
        if "ORCH_HTTP_TIMEOUT_S" in env:
            argv += ["--provider-timeout", env["ORCH_HTTP_TIMEOUT_S"]]
        return self.child(f"{name}-{port}", argv + (extra or []), clean_env({}))

    def impls(self, naive: bool = False) -> list[Impl]:
        """The service and the lean baseline; with `naive`, issue 18's naive service too."""
        return [
            Impl(
                "service",
                "cancellations",
                self.service,
                ("cancellation_state", "cancellation_requests"),
            ),
            Impl("baseline", "baseline_cancellations", self.baseline),
        ] + ([Impl("naive", "baseline_cancellations", self.naive)] if naive else [])

    # --- the simulator ----------------------------------------------------------------

    async def start_simulator(self, callback_delay_s: float) -> None:
        port = free_port()
        self.sim = self.child(
            "simulator",
            [
                sys.executable,
                "-m",
                "orchestrator.simulator",
                "--port",
                str(port),
                "--seed",
                "1",
                "--callback-url",
                "http://127.0.0.1:9/unset",
                "--set",
                f"callback_delay_s={callback_delay_s}",
            ],
            clean_env({}),
        )
        self.sim_url = f"http://127.0.0.1:{port}"
        await wait_http(f"{self.sim_url}/_sim/stats", self.sim)

    async def sim_call(self, method: str, path: str, body: Any = None) -> Any:
        async with (
            aiohttp.ClientSession() as http,
            http.request(method, self.sim_url + path, json=body) as response,
        ):
            response.raise_for_status()
            return await response.json()

    @property
    def dropbox_sign_url(self) -> str:
        return f"{self.sim_url}/dropbox_sign/v3"


# --- shared steps ---------------------------------------------------------------------


async def _start(
    run: Run, impl: Impl, db: str, provider_url: str, env: dict[str, str], port: int = 0
) -> tuple[Child, str]:
    port = port or free_port()
    child = impl.start(run.pg.database(db), port, provider_url, env)
    url = f"http://127.0.0.1:{port}"
    await wait_http(f"{url}/readyz", child, timeout_s=60)
    await asyncio.sleep(run.settle_s)  # the backends flush their statistics before "before"
    return child, url


async def _stop_and_count(
    run: Run, child: Child, db: str, before: Any, extra_xacts: int = 0
) -> dict[str, int]:
    """Stop the process (its backends exit and flush their statistics), then diff."""
    await asyncio.to_thread(child.stop)
    await asyncio.sleep(0.3)
    after = await run.pg.counters(db)
    diff = after.minus(before, await run.pg.lsn_diff(after.lsn, before.lsn))
    diff["xact_commit"] -= extra_xacts
    return diff


def _per(value: float, count: int, scale: float = 1.0) -> float | None:
    return round(value * scale / count, 3) if count else None


async def _costs(
    run: Run, child: Child, block: Callable[[], Awaitable[Any]]
) -> tuple[Any, dict[str, float]]:
    """Run `block`, measuring CPU of the implementation, Postgres, the simulator and us."""
    pg_cpu, proc, me = CpuMeter(run.pg.postmaster_pid), child.process(), psutil.Process()
    sim = run.sim.process() if run.sim else None

    def split() -> tuple[float, float]:
        times = proc.cpu_times()
        return float(times.user), float(times.system)

    user_system = split()

    def read() -> tuple[float, ...]:
        ours = (cpu_seconds(proc), pg_cpu.read(), cpu_seconds(sim) if sim else 0.0)
        return (*ours, cpu_seconds(me), machine_busy_seconds(), time.monotonic())

    marks = read()
    async with sampled_peak_rss(child.pid) as rss:
        result = await block()
    ends = read()
    used = [end - mark for end, mark in zip(ends, marks, strict=True)]
    wall = used[5]
    ends_split = split()
    cpu = {
        "cpu_s": used[0],
        "cpu_user_s": ends_split[0] - user_system[0],
        "cpu_system_s": ends_split[1] - user_system[1],
        "pg_cpu_s": used[1],
        "sim_cpu_s": used[2],
        "loadgen_cpu_s": used[3],
        # CPU the machine spent on anything else meanwhile (other people's work, the kernel):
        # a large share means the figures of this phase are disturbed.
        "foreign_cpu_share": max(0.0, used[4] - sum(used[:4])) / (wall * (os.cpu_count() or 1)),
        "wall_s": wall,
        "peak_rss_bytes": rss["peak_rss"],
        "hwm_rss_bytes": peak_rss_bytes(child.pid),
    }
    return result, cpu


# --- 1 and 3: the API alone (enqueue, webhook ingest) ----------------------------------


async def api_phase(
    run: Run,
    impl: Impl,
    enqueue_n: int,
    webhook_n: int,
    concurrency: int,
    timeout_s: float,
    batch_items: int = 0,
    batch_size: int = 100,
) -> dict[str, Any]:
    """Enqueue N with the dispatcher held by a stalled provider (it takes one batch and
    waits), then (the service alone: the baseline has no batch endpoint) `batch_items` more
    through POST /v1/cancellations/batch, `batch_size` to a request; then mark the rows as
    sent and post W signed callbacks for them."""
    db = f"bench_api_{impl.name}"
    await run.pg.create_database(db)
    stalled = {"ORCH_HTTP_TIMEOUT_S": "3600", "ORCH_SHUTDOWN_TIMEOUT_S": "0.5"}
    ids = load.resource_ids(f"api-{impl.name}", enqueue_n)
    out: dict[str, Any] = {}

    child, url = await _start(run, impl, db, run.blackhole.url + "/v3", stalled)
    before = await run.pg.counters(db)
    requests = load.enqueue_requests(ids)
    result, cpu = await _costs(
        run, child, lambda: load.post_all(url, requests, concurrency, timeout_s)
    )
    pg = await _stop_and_count(run, child, db, before)
    out["enqueue"] = _figures(result.summary(), cpu, pg, result.count)
    if impl.is_service and batch_items > 0:
        out["batch"] = await _batch_enqueue(
            run, child_of=impl, db=db, items=batch_items, size=batch_size, timeout_s=timeout_s
        )

    conn = await asyncpg.connect(run.pg.database(db))
    try:
        # What a dispatcher would have left behind: every row sent, awaiting its callback.
        # (The stalled calls ended at the stop: the service requeued them, the baseline,
        # which does not retry, failed them.)
        # No transition makes this move (0011 refuses it): the service's trigger is off for it.
        # The service's state is updated in its table (0016), as the service does: through the
        # view each row would be rewritten by the INSTEAD OF trigger, one call at a time.
        async with contextlib.AsyncExitStack() as stack:
            if impl.is_service:
                await stack.enter_async_context(triggers_off(conn, impl.state_table, "transition"))
            await conn.execute(
                f"UPDATE {impl.state_table} SET status = 'awaiting_confirmation'"  # noqa: S608
                " WHERE status IN ('queued', 'sending', 'failed')"
            )
        if impl.is_service:
            await conn.execute(
                f"UPDATE {impl.state_table} SET submitted_at = updated_at,"  # noqa: S608
                " first_sent_at = updated_at, next_attempt_at = NULL,"
                " lease_owner = NULL, lease_expires_at = NULL,"
                " confirm_by = updated_at + interval '1 hour', version = version + 1"
                " WHERE status = 'awaiting_confirmation'"
            )
        await conn.execute(f"VACUUM (ANALYZE) {impl.stored_in}")
        open_ids = [
            r[0]
            for r in await conn.fetch(
                f"SELECT resource_id FROM {impl.table}"  # noqa: S608
                " WHERE status = 'awaiting_confirmation' LIMIT $1",
                webhook_n,
            )
        ]
    finally:
        await conn.close()

    child, url = await _start(run, impl, db, run.blackhole.url + "/v3", stalled)
    before = await run.pg.counters(db)
    callbacks = load.callback_requests(
        open_ids, SIM_API_KEY, SIM_ACCOUNT_ID, "/webhooks/dropbox_sign"
    )
    result, cpu = await _costs(
        run, child, lambda: load.post_all(url, callbacks, concurrency, timeout_s)
    )
    pg = await _stop_and_count(run, child, db, before)
    out["webhook"] = _figures(result.summary(), cpu, pg, result.count)
    conn = await asyncpg.connect(run.pg.database(db))
    try:
        statuses = await conn.fetch(
            f"SELECT status, count(*) AS n FROM {impl.table} GROUP BY status"  # noqa: S608
        )
        counts = {r["status"]: r["n"] for r in statuses}
        out["webhook"]["confirmed_rows"] = counts.get("confirmed", 0)
        out["webhook"]["rows_by_status"] = counts
        out["webhook"]["callbacks_sent"] = len(callbacks)
    finally:
        await conn.close()
    return out


#: Batches in flight at once: each carries `batch_size` items, so a few fill the pool.
BATCH_CONCURRENCY = 4


async def _batch_enqueue(
    run: Run, child_of: Impl, db: str, items: int, size: int, timeout_s: float
) -> dict[str, Any]:
    """Throughput of POST /v1/cancellations/batch, per request and per item."""
    stalled = {"ORCH_HTTP_TIMEOUT_S": "3600", "ORCH_SHUTDOWN_TIMEOUT_S": "0.5"}
    child, url = await _start(run, child_of, db, run.blackhole.url + "/v3", stalled)
    before = await run.pg.counters(db)
    requests = load.batch_requests(load.resource_ids(f"batch-{child_of.name}", items), size)
    result, cpu = await _costs(
        run, child, lambda: load.post_all(url, requests, BATCH_CONCURRENCY, timeout_s)
    )
    pg = await _stop_and_count(run, child, db, before)
    summary = result.summary()
    sent = min(items, result.count * size)
    figures = _figures(summary, cpu, pg, sent)  # the costs per item
    figures.update(
        batch_size=size,
        concurrency=BATCH_CONCURRENCY,
        items=sent,
        items_per_s=round(sent / result.seconds, 1) if result.seconds else None,
    )
    return figures


def _figures(
    summary: dict[str, Any], cpu: dict[str, float], pg: dict[str, int], count: int
) -> dict[str, Any]:
    return {
        **summary,
        "cpu_ms_per_op": _per(cpu["cpu_s"], count, 1000),
        "pg_cpu_ms_per_op": _per(cpu["pg_cpu_s"], count, 1000),
        "loadgen_cpu_ms_per_op": _per(cpu["loadgen_cpu_s"], count, 1000),
        "xacts_per_op": _per(pg["xact_commit"], count),
        "wal_bytes_per_op": _per(pg["wal_bytes"], count),
        "peak_rss_mb": round(cpu["peak_rss_bytes"] / 2**20, 1),
        "other_load_pct": round(100 * cpu["foreign_cpu_share"], 1),
        "cpu": {k: round(v, 3) for k, v in cpu.items()},
        "pg": pg,
    }


# --- 2: end to end --------------------------------------------------------------------


async def e2e_phase(
    run: Run,
    impl: Impl,
    n: int,
    concurrency: int,
    timeout_s: float,
    profile_to: Path | None = None,
) -> dict[str, Any]:
    """N cancels through the API to the Dropbox Sign simulator and back by callback, from
    the first enqueue to the last confirmation in Postgres."""
    db = f"bench_e2e_{impl.name}"
    await run.pg.create_database(db)
    await run.sim_call("POST", "/_sim/reset")
    port = free_port()
    await run.sim_call(
        "PATCH", "/_sim/faults", {"callback_url": f"http://127.0.0.1:{port}/webhooks/dropbox_sign"}
    )
    child, url = await _start(run, impl, db, run.dropbox_sign_url, {}, port)
    before = await run.pg.counters(db)
    if run.statements:
        await run.pg.reset_statements()
    profiler = _start_profiler(run, child, profile_to) if profile_to else None

    ids = load.resource_ids(f"e2e-{impl.name}", n)
    requests = load.enqueue_requests(ids)
    polls = 0
    poll_tuples = {"tup_fetched": 0, "tup_returned": 0}
    # Counted in the table with the status (the service's: cancellation_state, in its partial
    # index cancellation_state_terminal_at), not through the view: a join at 10 Hz would add
    # its own cost to Postgres's CPU.
    polled = impl.state_table
    terminal_sql = f"SELECT count(*) FROM {polled} WHERE status IN ('confirmed', 'failed')"  # noqa: S608

    async def block() -> tuple[load.LoadResult, int]:
        """Enqueue everything, then poll (10 Hz) until every accepted cancel is terminal."""
        nonlocal polls
        deadline = time.monotonic() + timeout_s
        enqueue = asyncio.create_task(load.post_all(url, requests, concurrency, timeout_s))
        done = 0
        # Closed before the statistics are read, so its own transactions are flushed too.
        conn = await asyncpg.connect(run.pg.database(db))
        try:
            relations = await conn.fetchval(_RELATIONS, polled)
            while time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                if not enqueue.done():
                    continue
                # The counters hold whatever this backend has not flushed yet, which it
                # does only between transactions: the difference inside one is the poll's.
                async with conn.transaction():
                    first = await conn.fetchrow(_XACT_TUPLES, relations)
                    done = await conn.fetchval(terminal_sql)
                    then = await conn.fetchrow(_XACT_TUPLES, relations)
                assert first is not None and then is not None
                for key in poll_tuples:
                    poll_tuples[key] += int(then[key] or 0) - int(first[key] or 0)
                polls += 1
                # Only what was accepted: an enqueue refused (a 503 under load) never ends.
                if done >= enqueue.result().summary()["ok"]:
                    break
        finally:
            await conn.close()
        return await enqueue, done

    (result, done), cpu = await _costs(run, child, block)
    pg = await _stop_and_count(run, child, db, before, extra_xacts=polls)
    # The polls read the table too: what they read, counted in their own transactions,
    # comes off the tuples, so those are the implementation's own.
    for key, value in poll_tuples.items():
        pg[key] = max(0, pg[key] - value)
    if profiler is not None and profiler.proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(profiler.proc.wait, 60)
        profiler.stop()
    conn = await asyncpg.connect(run.pg.database(db))
    try:
        rows = await conn.fetch(
            f"SELECT status, extract(epoch FROM created_at) AS created,"  # noqa: S608
            f" extract(epoch FROM confirmed_at) AS confirmed FROM {impl.table}"
        )
        history = (
            await conn.fetchval("SELECT count(*) FROM cancellation_events")
            if impl.is_service
            else 0
        )
        # Every index costs a write per non-HOT update; which ones did the run use?
        index_scans = {
            r["indexrelname"]: r["idx_scan"]
            for r in await conn.fetch(
                "SELECT indexrelname, idx_scan FROM pg_stat_user_indexes ORDER BY indexrelname"
            )
        }
    finally:
        await conn.close()

    confirmed = [r for r in rows if r["status"] == "confirmed" and r["confirmed"] is not None]
    statements = await run.pg.statements(db, len(confirmed)) if run.statements else None
    ttc = [float(r["confirmed"] - r["created"]) for r in confirmed]
    last = max((float(r["confirmed"]) for r in confirmed), default=float("nan"))
    span = last - result.first_sent_at
    sim = await run.sim_call("GET", "/_sim/stats")
    count = len(confirmed)
    return {
        "cancels": n,
        "enqueued": result.count,
        "confirmed": count,
        "terminal": done,
        "complete": count == n,
        "seconds": round(span, 3),
        "confirmed_per_s": round(count / span, 1) if span > 0 else None,
        "ttc_p50_ms": round(percentile(ttc, 0.50) * 1000, 1),
        "ttc_p99_ms": round(percentile(ttc, 0.99) * 1000, 1),
        "enqueue": result.summary(),
        "cpu_ms_per_cancel": _per(cpu["cpu_s"], count, 1000),
        "cpu_s_per_1000": _per(cpu["cpu_s"], count, 1000),
        "pg_cpu_s_per_1000": _per(cpu["pg_cpu_s"], count, 1000),
        "total_cpu_s_per_1000": _per(cpu["cpu_s"] + cpu["pg_cpu_s"], count, 1000),
        "sim_cpu_s_per_1000": _per(cpu["sim_cpu_s"], count, 1000),
        "loadgen_cpu_s_per_1000": _per(cpu["loadgen_cpu_s"], count, 1000),
        "peak_rss_mb": round(cpu["peak_rss_bytes"] / 2**20, 1),
        "hwm_rss_mb": round(cpu["hwm_rss_bytes"] / 2**20, 1),
        "xacts_per_cancel": _per(pg["xact_commit"], count),
        "tup_inserted_per_cancel": _per(pg["tup_inserted"], count),
        "tup_updated_per_cancel": _per(pg["tup_updated"], count),
        "tup_fetched_per_cancel": _per(pg["tup_fetched"], count),
        "tup_returned_per_cancel": _per(pg["tup_returned"], count),
        "polls": polls,
        "poll_tuples": poll_tuples,
        "wal_bytes_per_cancel": _per(pg["wal_bytes"], count),
        "wal_lsn_bytes_per_cancel": _per(pg["wal_lsn_bytes"], count),
        "history_rows": history,
        "index_scans": index_scans,
        **({"statements": statements} if statements is not None else {}),
        "other_load_pct": round(100 * cpu["foreign_cpu_share"], 1),
        "provider": {
            k: sim["dropbox_sign"].get(k)
            for k in ("cancel_calls", "status_calls", "callbacks_delivered", "callback_failures")
        },
        "cpu": {k: round(v, 3) for k, v in cpu.items()},
        "pg": pg,
    }


# The table and its indexes, and what the current transaction read of them so far: the
# end-to-end poll's own tuples (pg_stat_database sums the same counters over relations).
_RELATIONS = (
    "SELECT array_agg(oid) FROM (SELECT $1::regclass::oid AS oid UNION ALL"
    " SELECT indexrelid FROM pg_index WHERE indrelid = $1::regclass) r"
)
_XACT_TUPLES = (
    "SELECT sum(pg_stat_get_xact_tuples_fetched(r))::bigint AS tup_fetched,"
    " sum(pg_stat_get_xact_tuples_returned(r))::bigint AS tup_returned FROM unnest($1::oid[]) r"
)


def _start_profiler(run: Run, child: Child, out: Path) -> Child | None:
    """py-spy on the process for the whole phase (raw collapsed stacks), if installed."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not os.path.exists(spy):
        print("py-spy is not installed (.venv/bin/pip install py-spy); no profile", flush=True)
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    argv = [spy, "record", "--pid", str(child.pid), "--rate", "250", "--format", "raw"]
    return run.child("py-spy", [*argv, "--output", str(out), "--nonblocking"], clean_env({}))


# --- 4: the sweeper -------------------------------------------------------------------


async def sweep_phase(
    run: Run, rows: int, overdue: int, rounds: int, expired: int = 0, retention_rounds: int = 3
) -> dict[str, Any]:
    """The sweeper's round at this size, then (if rows are past retention) its deletes."""
    import sweep

    db = f"bench_sweep_{rows}"
    dsn = await run.pg.create_database(db)
    loaded = await sweep.load(dsn, rows, overdue, sweep.expired_rows(rows, expired))
    other = OtherLoad(run.pg.postmaster_pid)
    measured = await sweep.measure(dsn, overdue, rounds)
    measured["other_load_pct"] = round(100 * other.share(), 1)
    if loaded["expired"]:
        other = OtherLoad(run.pg.postmaster_pid)
        measured["retention"] = await sweep.measure_retention(dsn, retention_rounds)
        measured["retention"]["other_load_pct"] = round(100 * other.share(), 1)
    return {**loaded, **measured}


# --- 5: the claim, before and after the shared budget ----------------------------------


async def claim_phase(run: Run, rows: int, claims: int, batch: int, repeat: int) -> dict[str, Any]:
    import claim

    dsn = await run.pg.create_database("bench_claim")
    loaded = await claim.load(dsn, rows)
    other = OtherLoad(run.pg.postmaster_pid)
    measured = await claim.measure(dsn, run.pg.postmaster_pid, claims, batch, repeat)
    return {**loaded, **measured, "other_load_pct": round(100 * other.share(), 1)}


# --- 5b: pgbench ----------------------------------------------------------------------


async def pgbench_phase(run: Run, seconds: int, clients: int) -> dict[str, Any]:
    """The database's raw limit here: a one-row INSERT per transaction. Then a one-row UPDATE
    per transaction, without and with a pg_notify in it: what 0005's NOTIFY trigger (every
    version change of a cancellation) costs a commit here."""
    db = "bench_pgbench"
    dsn = await run.pg.create_database(db)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "CREATE TABLE pgbench_insert (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
            " at timestamptz NOT NULL DEFAULT now(), payload text NOT NULL)"
        )
        await conn.execute(
            "CREATE TABLE pgbench_update (id int PRIMARY KEY, n bigint NOT NULL);"
            " INSERT INTO pgbench_update SELECT g, 0 FROM generate_series(1, 10000) g"
        )
    finally:
        await conn.close()
    # The same statement both times; only the pg_notify differs.
    update = (
        "\\set id random(1, 10000)\n"
        "WITH u AS (UPDATE pgbench_update SET n = n + 1 WHERE id = :id RETURNING id)"
        " SELECT {} FROM u;\n"
    )
    out = await _pgbench(
        run, db, seconds, clients, "INSERT INTO pgbench_insert (payload) VALUES ('cancel');\n"
    )
    out["update"] = await _pgbench(run, db, seconds, clients, update.format("id::text"))
    out["update_notify"] = await _pgbench(
        run, db, seconds, clients, update.format("pg_notify('bench', id::text)")
    )
    return out


async def _pgbench(run: Run, db: str, seconds: int, clients: int, sql: str) -> dict[str, Any]:
    """pgbench -c clients -T seconds with one custom script, one transaction per run of it."""
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as script:
        script.write(sql)
    os.chmod(script.name, 0o644)
    argv = [
        str(run.pg.bin_dir / "pgbench"),
        "-h",
        run.pg.socket_dir,
        "-U",
        "postgres",
        "-n",
        "-c",
        str(clients),
        "-j",
        str(min(clients, os.cpu_count() or 1)),
        "-T",
        str(seconds),
        "-f",
        script.name,
        db,
    ]
    pg_cpu = CpuMeter(run.pg.postmaster_pid)
    start_cpu = pg_cpu.read()
    before = await run.pg.counters(db)
    try:
        completed = await asyncio.to_thread(
            subprocess.run, argv, capture_output=True, text=True, timeout=seconds + 60
        )
    finally:
        os.unlink(script.name)
    used = pg_cpu.read() - start_cpu
    await asyncio.sleep(0.3)
    after = await run.pg.counters(db)
    if completed.returncode != 0:
        raise RuntimeError(f"pgbench failed: {completed.stderr[-2000:]}")
    tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", completed.stdout)
    latency = re.search(r"latency average = ([\d.]+) ms", completed.stdout)
    xacts = after.xact_commit - before.xact_commit
    return {
        "clients": clients,
        "seconds": seconds,
        "tps": float(tps.group(1)) if tps else None,
        "latency_avg_ms": float(latency.group(1)) if latency else None,
        "pg_cpu_ms_per_xact": _per(used, xacts, 1000),
        "wal_bytes_per_xact": _per(after.wal_bytes - before.wal_bytes, xacts),
    }


# --- 6: rounds at scale (issue 18) ------------------------------------------------------


async def scale_phase(
    run: Run,
    rows: int,
    backlog: int,
    expired: int,
    stats_rounds: int,
    retention_rounds: int,
    sweep_rounds: int,
    claims: int,
) -> dict[str, Any]:
    """Claim, sweep, retention and /v1/stats rounds in a table of `rows` (bench/scale.py);
    the database is dropped afterwards, so ten million rows do not stay on the disk."""
    import scale

    db = f"bench_scale_{rows}"
    dsn = await run.pg.create_database(db)
    try:
        other = OtherLoad(run.pg.postmaster_pid)
        loaded = await scale.load(dsn, rows, backlog, expired)
        loaded["build_other_load_pct"] = round(100 * other.share(), 1)
        load_avg = os.getloadavg()
        other = OtherLoad(run.pg.postmaster_pid)
        measured = await scale.measure(dsn, stats_rounds, retention_rounds, sweep_rounds, claims)
        measured["other_load_pct"] = round(100 * other.share(), 1)
        measured["load_average"] = [round(x, 2) for x in (*load_avg, *os.getloadavg())]
    finally:
        await run.pg.drop_database(db)
    return {**loaded, **measured}
