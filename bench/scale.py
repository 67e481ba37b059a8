"""Rounds at scale (issue 18, item 5): the claim, the sweep, retention and the `/v1/stats`
statements timed in a table of 1,000,000 and of 10,000,000 cancellations, so whoever makes
their cost flat in the table's size has a "before" to compare with.

The table is filled by Postgres itself (INSERT ... SELECT FROM generate_series), with its
secondary indexes and the keys that point at it dropped during the load and built again
afterwards (CREATE INDEX sorts; ten million random inserts into ten b-trees would take an
hour here). Since migration 0016 the table is two, cancellation_requests and
cancellation_state (`cancellations` is a view joining them, whose INSTEAD OF trigger would
write one row at a time): each is filled by its own INSERT from the same generated rows, the
request first, and the keys and indexes of both are dropped and built again
(bench/state_apart.py). Their sizes are reported summed (what the one table was) and apart.

The mix is what a service that has run for months holds: almost every row terminal (97%
confirmed, 3% failed, spread over the last 90 days, stored in time order), a fixed backlog of
open rows (due, backing off, leased, awaiting a callback, overdue), and some terminal rows
ended before ORCH_RETENTION_S's default with the history and inbox event a real cancel leaves
(only those rows have history: see sweep.py).

Every round goes through a `Store` over a pool of one connection, as the service calls it;
each phase's `pg_stat_database` deltas (tuples fetched and returned, buffers hit and read)
are read after forcing that connection's statistics out (`pg_stat_force_next_flush`).
The plans are `EXPLAIN (ANALYZE, BUFFERS)` after the timed rounds, rolled back; the claim's
through auto_explain (its statements run inside plpgsql), captured as notices.
"""

from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from orchestrator.clock import SystemClock
from orchestrator.store import db, migrations
from orchestrator.store.queries import QUERIES
from orchestrator.store.repository import Store
from orchestrator.workers.sweeper import Sweeper

import state_apart
import sweep
from harness import triggers_off

ACCOUNT = "dropbox_sign:default"
#: The open rows, whatever the table's size: a queue's backlog does not grow with history.
BACKLOG_SHARES = {
    "queued_due": 0.50,
    "queued_later": 0.10,
    "sending": 0.05,
    "awaiting": 0.30,
    "overdue": 0.05,
}

# Two INSERTs fill the tables, each from the same rows: `_ROWS`, then its own INSERT.
# $1 rows, $2 now, $3..$7 the backlog's counts (in the order of BACKLOG_SHARES), $8 expired
# rows; row g's kind follows from its number: the expired rows first (oldest), then the
# terminal ones in time order, then the backlog (newest). Its id is made from g (an md5 read
# as a uuid: random, as gen_random_uuid()'s, and the same in both statements).
_ROWS = """
WITH p AS (
    SELECT $1::bigint AS n, $2::timestamptz AS now, $8::bigint AS expired,
           $1::bigint - $3::bigint AS due_from,
           $1::bigint - $3::bigint - $4::bigint AS later_from,
           $1::bigint - $3::bigint - $4::bigint - $5::bigint AS sending_from,
           $1::bigint - $3::bigint - $4::bigint - $5::bigint - $6::bigint AS awaiting_from,
           $1::bigint - $3::bigint - $4::bigint - $5::bigint - $6::bigint - $7::bigint
               AS overdue_from
), k AS (
    SELECT g,
        CASE
            WHEN g <= p.expired THEN 'expired'
            WHEN g > p.due_from THEN 'queued_due'
            WHEN g > p.later_from THEN 'queued_later'
            WHEN g > p.sending_from THEN 'sending'
            WHEN g > p.awaiting_from THEN 'awaiting'
            WHEN g > p.overdue_from THEN 'overdue'
            ELSE 'terminal'
        END AS kind,
        CASE WHEN g <= p.expired  -- 91 to 120 days ago; the rest 2 hours to 80 days ago
             THEN p.now
                  - make_interval(secs => 7862400 + (p.expired - g) * 2505600.0 / p.expired)
             ELSE p.now - make_interval(secs => 7200 + (p.n - g) * 6912000.0 / p.n)
        END AS created
    FROM p, generate_series(1, p.n) g
), r AS (
    SELECT g, kind, created, md5('bench-scale-' || g)::uuid AS id,
        CASE WHEN kind IN ('expired', 'terminal') AND g % 33 = 0 THEN 'failed'
             WHEN kind IN ('expired', 'terminal') THEN 'confirmed'
             WHEN kind IN ('queued_due', 'queued_later') THEN 'queued'
             WHEN kind = 'sending' THEN 'sending'
             ELSE 'awaiting_confirmation' END AS status
    FROM k
)
"""

_FILL_REQUESTS = (
    _ROWS
    + """
INSERT INTO cancellation_requests (id, provider, account, resource_id, reason, metadata, params,
    request_hash, created_at)
SELECT id, 'dropbox_sign', 'default', 'scale-' || g, 'bench: scale', '{}', '{}', 'bench', created
FROM r
"""
)

_FILL_STATE = (
    _ROWS
    + """
INSERT INTO cancellation_state (id, provider, account, resource_id, status, outcome,
    confirmed_via, attempts, version, next_attempt_at, lease_owner, lease_expires_at,
    updated_at, submitted_at, first_sent_at, confirm_by, confirmed_at)
SELECT id, 'dropbox_sign', 'default', 'scale-' || g, status,
    CASE status WHEN 'confirmed' THEN 'canceled' WHEN 'failed' THEN 'completed' END,
    CASE WHEN status = 'confirmed' THEN 'webhook' END,
    CASE WHEN kind = 'queued_due' THEN 0 ELSE 1 END, 3,
    CASE kind WHEN 'queued_due' THEN created
              WHEN 'queued_later' THEN $2::timestamptz + make_interval(secs => 60 + g % 840) END,
    CASE WHEN kind = 'sending' THEN 'bench-live' END,
    CASE WHEN kind = 'sending' THEN $2::timestamptz + interval '1 hour' END,
    CASE WHEN status = 'confirmed' THEN created + interval '2 seconds'
         ELSE created + interval '1 second' END,
    CASE WHEN kind NOT IN ('queued_due', 'queued_later') THEN created + interval '1 second' END,
    CASE WHEN kind NOT IN ('queued_due', 'queued_later') THEN created + interval '1 second' END,
    CASE WHEN kind = 'overdue' THEN $2::timestamptz - make_interval(secs => 1 + g % 3600)
         WHEN kind = 'awaiting' THEN $2::timestamptz + interval '1 hour'
         WHEN status IN ('confirmed', 'failed') THEN created + interval '1 hour' END,
    CASE WHEN status = 'confirmed' THEN created + interval '2 seconds' END
FROM r
"""
)


def backlog_counts(backlog: int) -> list[int]:
    return [int(backlog * share) for share in BACKLOG_SHARES.values()]


async def load(dsn: str, rows: int, backlog: int, expired: int) -> dict[str, Any]:
    """The two tables, their indexes rebuilt, the counters, the expired rows' history;
    vacuumed."""
    backlog = min(backlog, rows // 4)
    expired = min(expired, rows // 4)
    counts = backlog_counts(backlog)
    conn = await asyncpg.connect(dsn, command_timeout=3600)
    try:
        await migrations.migrate(conn)
        await conn.execute("SET maintenance_work_mem = '256MB'")
        started = time.perf_counter()
        # Both tables of 0016 (the view has no indexes of its own).
        deps = await state_apart.drop_dependents(conn)
        now = datetime.now(UTC)
        await conn.execute(_FILL_REQUESTS, rows, now, *counts, expired)
        requests_filled = time.perf_counter()
        # Synthetic rows in every status: no transition wrote them (0011's trigger is off).
        async with triggers_off(conn, "cancellation_state", "transition_on_insert"):
            await conn.execute(_FILL_STATE, rows, now, *counts, expired)
        filled = time.perf_counter()
        await state_apart.rebuild_dependents(conn, deps)
        indexed = time.perf_counter()
        await conn.execute(
            "INSERT INTO provider_counts (provider, status, shard, n)"
            " SELECT provider, status, 0, count(*) FROM cancellation_state"
            " WHERE status IN ('confirmed', 'failed') GROUP BY provider, status"
        )
        if expired:
            await sweep._load_expired_extras(conn, now, unused=max(1, expired // 10))
        await state_apart.vacuum(conn, "cancellation_events", "webhook_inbox")
        build_s = time.perf_counter() - started
        # What `cancellations` was before 0016: the two tables' sums, and each apart.
        size = await state_apart.sizes(conn)
        database = await conn.fetchval("SELECT pg_database_size(current_database())")
    finally:
        await conn.close()
    return {
        "rows": rows,
        "backlog": dict(zip(BACKLOG_SHARES, counts, strict=True)),
        "expired": expired,
        "fill_s": round(filled - started, 1),
        "requests_fill_s": round(requests_filled - started, 1),
        "state_fill_s": round(filled - requests_filled, 1),
        "index_s": round(indexed - filled, 1),
        "build_s": round(build_s, 1),
        **size,
        "database_bytes": int(database),
    }


_STATS = (
    "SELECT tup_fetched, tup_returned, tup_inserted, tup_updated, tup_deleted, blks_hit,"
    " blks_read FROM pg_stat_database WHERE datname = current_database()"
)


async def _counters(admin: asyncpg.Connection, pool: asyncpg.Pool) -> dict[str, int]:
    """pg_stat_database now, the pool's and our own pending statistics flushed first."""
    await pool.fetchval("SELECT pg_stat_force_next_flush()")
    await admin.fetchval("SELECT pg_stat_force_next_flush()")
    row = await admin.fetchrow(_STATS)
    assert row is not None
    return {k: int(v) for k, v in row.items()}


def _summary(
    times_ms: list[float], before: dict[str, int], after: dict[str, int]
) -> dict[str, Any]:
    n = len(times_ms)
    ordered = sorted(times_ms)
    per = {k: round((after[k] - before[k]) / n, 1) if n else None for k in before}
    return {
        "rounds": n,
        "mean_ms": round(statistics.fmean(times_ms), 2) if n else None,
        "p50_ms": round(statistics.median(times_ms), 2) if n else None,
        "p95_ms": round(ordered[max(0, round(0.95 * n + 0.5) - 1)], 2) if n else None,
        "times_ms": [round(t, 2) for t in times_ms],
        "per_round": per,
    }


async def _auto_explain(conn: asyncpg.Connection, sql: str, *args: Any) -> str:
    """Every statement `sql` runs, nested ones included, with ANALYZE and BUFFERS; rolled back."""
    notices: list[str] = []

    def listen(_: Any, message: Any) -> None:
        notices.append(str(message.message))

    statement = await conn.prepare(sql)  # asyncpg's type introspection: before, not logged
    conn.add_log_listener(listen)
    tx = conn.transaction()
    await tx.start()
    try:
        await conn.execute(
            "LOAD 'auto_explain'; SET LOCAL auto_explain.log_min_duration = 0;"
            " SET LOCAL auto_explain.log_analyze = on; SET LOCAL auto_explain.log_buffers = on;"
            " SET LOCAL auto_explain.log_nested_statements = on;"
            " SET LOCAL auto_explain.log_level = notice"
        )
        await statement.fetch(*args)
    finally:
        await tx.rollback()
        conn.remove_log_listener(listen)
    # A row trigger's statement is logged once per row: keep the first, say how many.
    seen: dict[str, list[str]] = {}
    for notice in notices:
        text = notice.split("Query Text:", 1)[-1].split("\n", 1)[0].strip()
        seen.setdefault(text, []).append(notice)
    return "\n\n".join(
        same[0] + (f"\n(and {len(same) - 1} more like it)" if len(same) > 1 else "")
        for same in seen.values()
    )


async def measure(
    dsn: str, stats_rounds: int, retention_rounds: int, sweep_rounds: int, claims: int
) -> dict[str, Any]:
    pool = await db.create_pool(dsn, 1)
    admin = await asyncpg.connect(dsn, command_timeout=600)
    store = Store(pool)
    out: dict[str, Any] = {}
    try:
        await pool.fetchval("SELECT 1")
        # /v1/stats and the dashboard's counts, as the service calls them.
        for name, call in (
            ("stats", lambda: store.stats(datetime.now(UTC))),
            ("counts_by_provider", store.counts_by_provider),
        ):
            await call()  # warm: plans cached, pages in memory, as when polled
            before, times = await _counters(admin, pool), []
            for _ in range(stats_rounds):
                t0 = time.perf_counter()
                await call()
                times.append((time.perf_counter() - t0) * 1000)
            out[name] = _summary(times, before, await _counters(admin, pool))
        out["stats"]["plan"] = await sweep.explain(admin, QUERIES["stats"], datetime.now(UTC))
        out["counts_by_provider"]["plan"] = await sweep.explain(
            admin, QUERIES["counts_by_provider"]
        )

        # Retention: Store.delete_expired(cut-off, 500), one batch a round, no VACUUM between.
        cutoff = datetime.now(UTC) - timedelta(seconds=sweep.RETENTION_S)
        before, times, deleted = await _counters(admin, pool), [], 0
        for _ in range(retention_rounds):
            t0 = time.perf_counter()
            rows, _inbox = await store.delete_expired(cutoff, sweep.RETENTION_BATCH)
            times.append((time.perf_counter() - t0) * 1000)
            deleted += rows
        out["retention"] = {
            **_summary(times, before, await _counters(admin, pool)),
            "deleted": deleted,
            "plan": await sweep.explain(
                admin, QUERIES["delete_expired_cancellations"], cutoff, sweep.RETENTION_BATCH
            ),
        }

        # The sweep: Sweeper.run_once() (no retention); the requeued rows put back between
        # rounds, outside the figures, without a VACUUM.
        sweeper = Sweeper(store, SystemClock(), served=lambda: [ACCOUNT])
        times, requeued = [], []
        totals: dict[str, int] = {}
        for _ in range(sweep_rounds):
            before = await _counters(admin, pool)
            t0 = time.perf_counter()
            report = await sweeper.run_once()
            times.append((time.perf_counter() - t0) * 1000)
            after = await _counters(admin, pool)
            for k in before:
                totals[k] = totals.get(k, 0) + after[k] - before[k]
            requeued.append(report.overdue)
            # A reset of the state alone (0016), as in sweep.py.
            async with triggers_off(admin, "cancellation_state", "transition"):
                await admin.execute(sweep.PUT_BACK)
        out["sweep"] = {
            **_summary(times, dict.fromkeys(totals, 0), totals),
            "requeued": requeued,
            "plan": await sweep.explain(admin, QUERIES["requeue_overdue"], datetime.now(UTC), 1000),
        }

        # The claim: claim_due() of 32 rows of the one account, unlimited, one after another.
        owner, now = "bench-scale", datetime.now(UTC)
        for _ in range(3):  # warm: plpgsql compiled, statements prepared
            await store.claim_due(now, 32, owner, 30.0, {ACCOUNT: None})
        before, times, taken = await _counters(admin, pool), [], 0
        for _ in range(claims):
            t0 = time.perf_counter()
            taken += len(await store.claim_due(datetime.now(UTC), 32, owner, 30.0, {ACCOUNT: None}))
            times.append((time.perf_counter() - t0) * 1000)
        out["claim"] = {
            **_summary(times, before, await _counters(admin, pool)),
            "claimed": taken,
            "plan": await _auto_explain(
                admin,
                QUERIES["claim_due"],
                datetime.now(UTC),
                32,
                owner,
                30.0,
                [ACCOUNT],
                [None],
            ),
        }
    finally:
        await admin.close()
        await pool.close()
    return out
