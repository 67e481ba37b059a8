"""Sweeper at scale: a big, mostly terminal table with a few overdue rows, one round timed.

The table is bulk-loaded with COPY (asyncpg copy_records_to_table), and cancellation_counts
written once from the terminal totals, which is what apply_decision would have left behind.
"""

from __future__ import annotations

import random
import re
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from orchestrator.clock import SystemClock
from orchestrator.store import db, migrations
from orchestrator.store.queries import QUERIES
from orchestrator.store.repository import Store
from orchestrator.workers.sweeper import Sweeper

# The columns this loader fills; any other column keeps its default.
_COLUMNS = (
    "id",
    "provider",
    "account",
    "resource_id",
    "status",
    "outcome",
    "confirmed_via",
    "attempts",
    "version",
    "needs_check",
    "reason",
    "metadata",
    "params",
    "request_hash",
    "next_attempt_at",
    "created_at",
    "updated_at",
    "submitted_at",
    "confirm_by",
    "confirmed_at",
)


def _plan(rows: int, overdue: int) -> Counter[str]:
    """99% terminal; of the open 1%, `overdue` are past confirm_by, the rest are not due."""
    open_rows = max(overdue, rows // 100)
    rest = open_rows - overdue
    terminal = rows - open_rows
    failed = terminal * 3 // 100
    return Counter(
        {
            "overdue": overdue,
            "awaiting": rest * 2 // 3,
            "queued_later": rest - rest * 2 // 3,
            "confirmed": terminal - failed,
            "failed": failed,
        }
    )


def _records(rows: int, overdue: int, now: datetime, seed: int) -> Iterator[tuple[Any, ...]]:
    rng = random.Random(seed)
    kinds = [k for k, n in _plan(rows, overdue).items() for _ in range(n)]
    rng.shuffle(kinds)
    hour = timedelta(hours=1)
    for n, kind in enumerate(kinds):
        created = now - timedelta(seconds=rng.uniform(7200, 30 * 86400))
        submitted = created + timedelta(seconds=1)
        status: str = "confirmed"
        outcome: str | None = "canceled"
        via: str | None = "webhook"
        confirm_by = submitted + hour
        next_at = confirmed_at = None
        if kind == "confirmed":
            confirmed_at = submitted + timedelta(seconds=rng.uniform(0.05, 60))
        elif kind == "failed":
            status, outcome, via = "failed", "completed", None
        elif kind == "overdue":
            status, outcome, via = "awaiting_confirmation", None, None
            confirm_by = now - timedelta(seconds=rng.uniform(1, 3600))
        elif kind == "awaiting":
            status, outcome, via = "awaiting_confirmation", None, None
            created, submitted = now - timedelta(seconds=60), now - timedelta(seconds=59)
            confirm_by = submitted + hour
        else:  # queued_later: backing off after a 5xx
            status, outcome, via = "queued", None, None
            next_at = now + timedelta(seconds=rng.uniform(60, 900))
        yield (
            uuid.UUID(int=rng.getrandbits(128), version=4),
            "dropbox_sign",
            "default",
            f"{n:040x}",
            status,
            outcome,
            via,
            1,
            3,
            False,
            "bench: bulk",
            "{}",
            "{}",
            "bench",
            next_at,
            created,
            confirmed_at or submitted,
            submitted,
            confirm_by,
            confirmed_at,
        )


async def load(dsn: str, rows: int, overdue: int) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        await migrations.migrate(conn)
        now = datetime.now(UTC)
        started = time.perf_counter()
        await conn.copy_records_to_table(
            "cancellations", records=_records(rows, overdue, now, seed=rows), columns=_COLUMNS
        )
        await conn.execute(
            "INSERT INTO cancellation_counts (status, shard, n)"
            " SELECT status, 0, count(*) FROM cancellations"
            " WHERE status IN ('confirmed', 'failed') GROUP BY status"
        )
        loaded = time.perf_counter() - started
        await conn.execute("VACUUM (ANALYZE) cancellations")
        size = await conn.fetchval("SELECT pg_total_relation_size('cancellations')")
    finally:
        await conn.close()
    return {
        "rows": rows,
        "overdue": overdue,
        "load_s": round(loaded, 1),
        "vacuum_analyze_s": round(time.perf_counter() - started - loaded, 1),
        "table_bytes": int(size),
    }


def _inner_select(name: str, alias: str) -> str:
    """The `alias AS (...)` step of a named query, parentheses matched."""
    sql = QUERIES[name]
    match = re.search(rf"\b{alias}\s+AS\s*\(", sql)
    if match is None:
        raise LookupError(f"no {alias!r} step in query {name!r}")
    depth, start = 1, match.end()
    for i in range(start, len(sql)):
        depth += {"(": 1, ")": -1}.get(sql[i], 0)
        if depth == 0:
            return sql[start:i].strip()
    raise LookupError(f"unbalanced parentheses in query {name!r}")


async def explain(conn: asyncpg.Connection, sql: str, *args: Any) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) in a transaction rolled back: FOR UPDATE takes locks."""
    tx = conn.transaction()
    await tx.start()
    try:
        rows = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + sql, *args)
    finally:
        await tx.rollback()
    return "\n".join(r[0] for r in rows)


async def measure(dsn: str, overdue: int, rounds: int) -> dict[str, Any]:
    """Time Sweeper.run_once `rounds` times; between rounds the requeued rows are put back."""
    pool = await db.create_pool(dsn, 8)
    conn = await asyncpg.connect(dsn)
    try:
        await pool.fetchval("SELECT 1")  # a warm connection, as in a running service
        now = datetime.now(UTC)
        plan = await explain(conn, _inner_select("requeue_overdue", "overdue"), now, 1000)
        store = Store(pool)
        sweeper = Sweeper(store, SystemClock())

        async def put_back() -> None:
            await conn.execute(
                "UPDATE cancellations SET status = 'awaiting_confirmation', needs_check = false,"
                " next_attempt_at = NULL WHERE status = 'queued' AND needs_check"
            )
            await conn.execute("VACUUM (ANALYZE) cancellations")

        lsn = "SELECT pg_current_wal_lsn()::text"
        wal_diff = "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)::bigint"
        times_ms: list[float] = []
        requeued: list[int] = []
        wal_bytes: list[int] = []
        for _ in range(rounds):
            before = await conn.fetchval(lsn)
            started = time.perf_counter()
            report = await sweeper.run_once()
            times_ms.append((time.perf_counter() - started) * 1000)
            wal_bytes.append(int(await conn.fetchval(wal_diff, before)))
            requeued.append(report.overdue)
            await put_back()
        # Where a round's time goes: its three statements one by one, then the plan of the
        # whole requeue (run for real, triggers and all, and rolled back).
        steps_ms: dict[str, float] = {}
        steps = {
            "requeue_expired_leases": lambda: store.requeue_expired_leases(
                datetime.now(UTC), sweeper.batch
            ),
            "requeue_overdue": lambda: store.requeue_overdue(datetime.now(UTC), sweeper.batch),
            "fold_counts": store.fold_counts,
        }
        for name, step in steps.items():
            started = time.perf_counter()
            await step()
            steps_ms[name] = round((time.perf_counter() - started) * 1000, 2)
        await put_back()
        full_plan = await explain(conn, QUERIES["requeue_overdue"], datetime.now(UTC), 1000)
        await conn.execute("VACUUM (ANALYZE) cancellations")
        # And a round with nothing overdue: the price of the sweeper's interval when idle.
        await conn.execute(
            "UPDATE cancellations SET confirm_by = confirm_by + interval '1 day'"
            " WHERE status = 'awaiting_confirmation' AND confirm_by <= now()"
        )
        await conn.execute("VACUUM (ANALYZE) cancellations")
        started = time.perf_counter()
        idle = await sweeper.run_once()
        idle_ms = (time.perf_counter() - started) * 1000
    finally:
        await conn.close()
        await pool.close()
    return {
        "round_ms": round(statistics.median(times_ms), 2),
        "rounds_ms": [round(t, 2) for t in times_ms],
        "requeued": requeued,
        "wal_bytes": wal_bytes,
        "idle_round_ms": round(idle_ms, 2),
        "idle_requeued": idle.overdue,
        "steps_ms": steps_ms,
        "plan": plan,
        "full_plan": full_plan,
    }
