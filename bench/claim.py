"""The dispatcher's claim, before and after the shared rate budget (issue 10, item 9).

A table of due `queued` rows (bulk-loaded with COPY, one account), then N claims of 32 rows
one after another from a `Store` over an asyncpg pool, for each way of claiming:

    unlimited        claim_due() with the account unlimited: one query inside the function
    limited          claim_due() with the account limited (so high the budget never binds):
                     its account_budgets row is locked, refilled and written in each claim
    before           the single CTE statement the claim was before 0005 (c8e7384), run
                     directly against the same rows; the limit was kept in-process then
    before-no-notify the same, with the NOTIFY trigger of 0005 disabled: the table as it was

Since 0016 the status, and the triggers of 0005-0015, are in cancellation_state (the rows are
loaded into it and cancellation_requests directly, not through the `cancellations` view).
The "before" ways read and update cancellation_state, the table the old statement's CTE
would name today (locking and moving the same rows through the same partial index,
cancellation_state_due), and return each claimed row joined with its request, as claim_rows
does since 0016, so that every way returns the same full rows. They run with 0011's
transition trigger off (the old statement wrote its own history). Through the view the old
statement would instead update row by row through the INSTEAD OF trigger, rewriting every
column of the state: a cost the claim never had, then or now.

Each is one statement, so one round trip and one transaction per claim. Between runs the
claimed rows are put back and the table vacuumed; the ways are interleaved over `repeat`
runs and each figure is the median.
"""

from __future__ import annotations

import random
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from orchestrator.domain.model import Cancellation
from orchestrator.store import db, migrations
from orchestrator.store.repository import Store

import state_apart
from harness import CpuMeter, triggers_off

ACCOUNT = "dropbox_sign:default"
HIGH_LIMIT_PER_MIN = 1_000_000_000.0  # the bench's own setting (DROPBOX_SIGN_RATE_LIMIT_PER_MIN)
LEASE_S = 30.0
OWNER = "bench-claim"
WARMUP = 5  # claims before the timed ones: plpgsql compiles, statements are prepared

# The claim before 0005 (orchestrator/store/queries.sql at c8e7384, `claim_due`), verbatim
# but for its table, cancellation_state since 0016, and the full row it returns: the claimed
# states joined with their requests, as claim_rows returns them (see the docstring).
# $4: accounts to leave alone (throttled in-process), $6: if not null, the only ones to take.
BEFORE_SQL = """
WITH due AS (
    SELECT id FROM cancellation_state
    WHERE status = 'queued' AND next_attempt_at <= $1
      AND NOT (provider || ':' || account = ANY ($4::text[]))
      AND ($6::text[] IS NULL OR provider || ':' || account = ANY ($6::text[]))
    ORDER BY next_attempt_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE cancellation_state c
    SET status = 'sending', attempts = c.attempts + 1, version = c.version + 1,
        lease_owner = $3, lease_expires_at = $1 + make_interval(secs => $5), updated_at = $1
    FROM due WHERE c.id = due.id
    RETURNING c AS s, c.id, c.attempts, c.needs_check
), event AS (
    INSERT INTO cancellation_events (cancellation_id, at, from_status, to_status, cause, evidence)
    SELECT id, $1, 'queued', 'sending', 'claimed',
           jsonb_build_object('attempt', attempts, 'worker', $3, 'status_check_first', needs_check)
    FROM claimed
)
SELECT v.*
FROM claimed JOIN cancellation_requests r ON r.id = claimed.id,
     LATERAL as_cancellation(r, claimed.s) v;
"""

WAYS = ("unlimited", "limited", "before", "before-no-notify")

_COLUMNS = (
    "id",
    "provider",
    "account",
    "resource_id",
    "status",
    "attempts",
    "version",
    "reason",
    "metadata",
    "params",
    "request_hash",
    "next_attempt_at",
    "created_at",
    "updated_at",
)


def _records(rows: int, now: datetime) -> Iterator[tuple[Any, ...]]:
    rng = random.Random(rows)
    for n in range(rows):
        created = now - timedelta(seconds=rng.uniform(60, 3600))
        yield (
            uuid.UUID(int=rng.getrandbits(128), version=4),
            "dropbox_sign",
            "default",
            f"claim-{n:034x}",
            "queued",
            0,
            1,
            "bench: claim",
            "{}",
            "{}",
            "bench",
            created,
            created,
            created,
        )


async def load(dsn: str, rows: int) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        await migrations.migrate(conn)
        started = time.perf_counter()
        # Synthetic queued rows with no enqueue behind them: no history row either (0011);
        # written to the two tables of 0016, not through the view.
        await state_apart.copy_cancellations(conn, _records(rows, datetime.now(UTC)), _COLUMNS)
        await state_apart.vacuum(conn)
    finally:
        await conn.close()
    return {"rows": rows, "load_s": round(time.perf_counter() - started, 1)}


async def _put_back(conn: asyncpg.Connection) -> None:
    """Every claimed row queued again, its claim's history gone, the budget reset. The
    state alone changed (0016): the requests are not written, only vacuumed with it."""
    async with triggers_off(conn, "cancellation_state", "transition"):  # no transition: a reset
        await conn.execute(
            "UPDATE cancellation_state SET status = 'queued', attempts = 0, lease_owner = NULL,"
            " lease_expires_at = NULL, first_sent_at = NULL WHERE status = 'sending'"
        )
    await conn.execute("DELETE FROM cancellation_events WHERE cause = 'claimed'")
    await conn.execute("DELETE FROM account_budgets")
    await state_apart.vacuum(conn, "cancellation_events", "account_budgets")


def _claimer(way: str, store: Store, pool: asyncpg.Pool) -> Callable[[int], Awaitable[int]]:
    """One claim of up to `limit` rows the way named; returns how many it took."""
    if way in ("unlimited", "limited"):
        accounts: dict[str, float | None] = {
            ACCOUNT: None if way == "unlimited" else HIGH_LIMIT_PER_MIN
        }

        async def new(limit: int) -> int:
            rows = await store.claim_due(datetime.now(UTC), limit, OWNER, LEASE_S, accounts)
            return len(rows)

        return new

    async def before(limit: int) -> int:
        # As the old dispatcher called it for an account with no limit: nothing excluded.
        records = await pool.fetch(BEFORE_SQL, datetime.now(UTC), limit, OWNER, [], LEASE_S, None)
        return len([Cancellation.from_row(r) for r in records])

    return before


async def _one_run(dsn: str, pg: CpuMeter, way: str, claims: int, batch: int) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    pool = await db.create_pool(dsn, 8)
    try:
        trigger = "DISABLE" if way == "before-no-notify" else "ENABLE"
        # The triggers are on cancellation_state since 0016 (the view has none to disable).
        await conn.execute(f"ALTER TABLE cancellation_state {trigger} TRIGGER cancellation_changed")
        # Before 0011 the claim wrote its own history, and nothing checked transitions.
        trigger = "DISABLE" if way.startswith("before") else "ENABLE"
        await conn.execute(f"ALTER TABLE cancellation_state {trigger} TRIGGER transition")
        await conn.execute(
            f"ALTER TABLE cancellation_events {trigger} TRIGGER event_is_a_transition"
        )
        claim = _claimer(way, Store(pool), pool)
        for _ in range(WARMUP):
            await claim(batch)
        xid = "SELECT pg_current_xact_id()::text::bigint"
        wal = "SELECT pg_current_wal_lsn()::text"
        first_xid, first_lsn = await conn.fetchval(xid), await conn.fetchval(wal)
        pg_before = pg.read()
        times: list[float] = []
        taken = 0
        started = time.perf_counter()
        for _ in range(claims):
            t0 = time.perf_counter()
            taken += await claim(batch)
            times.append((time.perf_counter() - t0) * 1000)
        total_ms = (time.perf_counter() - started) * 1000
        pg_cpu_s = pg.read() - pg_before
        # pg_current_xact_id() takes an id itself: the one read above and the one now.
        xacts = await conn.fetchval(xid) - first_xid - 1
        wal_bytes = await conn.fetchval(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)::bigint", first_lsn
        )
    finally:
        await conn.execute("ALTER TABLE cancellation_state ENABLE TRIGGER cancellation_changed")
        await pool.close()
        await conn.close()
    return {
        "way": way,
        "claims": claims,
        "rows": taken,
        "ms_per_claim": round(statistics.median(times), 3),
        "mean_ms_per_claim": round(total_ms / claims, 3),
        "p99_ms": round(sorted(times)[max(0, round(0.99 * len(times)) - 1)], 3),
        "ms_per_row": round(total_ms / taken, 4) if taken else None,
        "pg_cpu_ms_per_claim": round(pg_cpu_s * 1000 / claims, 3),
        "xacts_per_claim": round(xacts / claims, 3),
        "round_trips_per_claim": 1,  # one statement sent per claim, in each way
        "wal_bytes_per_claim": round(int(wal_bytes) / claims),
    }


async def measure(
    dsn: str, postmaster_pid: int, claims: int, batch: int, repeat: int
) -> dict[str, Any]:
    """The ways interleaved `repeat` times; each figure the median of its runs."""
    pg = CpuMeter(postmaster_pid)
    runs: dict[str, list[dict[str, Any]]] = {way: [] for way in WAYS}
    conn = await asyncpg.connect(dsn)
    try:
        for _ in range(max(1, repeat)):
            for way in WAYS:
                await _put_back(conn)
                runs[way].append(await _one_run(dsn, pg, way, claims, batch))
        await _put_back(conn)
    finally:
        await conn.close()
    out: dict[str, Any] = {"claims": claims, "batch": batch, "repeat": repeat}
    for way, done in runs.items():
        figures = {
            key: statistics.median(r[key] for r in done)
            for key in done[0]
            if isinstance(done[0][key], int | float) and done[0][key] is not None
        }
        out[way] = {**figures, "runs": done}
    return out
