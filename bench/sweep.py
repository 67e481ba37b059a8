"""Sweeper at scale: a big, mostly terminal table with a few overdue rows, one round timed;
then retention: terminal rows older than ORCH_RETENTION_S deleted in batches, timed.

The table is bulk-loaded with COPY (asyncpg copy_records_to_table) into the two tables of
migration 0016, cancellation_requests then cancellation_state (bench/state_apart.py; the
`cancellations` view's INSTEAD OF trigger would take them one row at a time), and
provider_counts written once from the terminal totals, which is what the triggers would have
left behind. The resets between rounds update cancellation_state, as the sweep itself does.
The expired rows (terminal, ended before the retention's cut-off) get the history a real
cancel leaves (four events) and, when confirmed by callback, the inbox event that confirmed
them; old and recent inbox events that no cancellation used are loaded too. Only the expired
rows get history: in production `cancellation_events` holds about four rows per
cancellation, so its index is larger than here.
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

import state_apart
from harness import triggers_off

#: ORCH_RETENTION_S's default (90 days): the expired rows ended before now minus this.
RETENTION_S = 7_776_000
#: The sweeper's batch (Sweeper.retention_batch) and its batches per round (run_once).
RETENTION_BATCH = 500
RETENTION_MAX_BATCHES = 10

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


#: A reset between sweep rounds: the rows the sweep requeued awaiting their callback again.
#: The state alone (0016), found through cancellation_state_due; run with 0011's transition
#: trigger off.
PUT_BACK = """
UPDATE cancellation_state SET status = 'awaiting_confirmation', needs_check = false,
    next_attempt_at = NULL
WHERE status = 'queued' AND needs_check
"""


def expired_rows(rows: int, wanted: int) -> int:
    """How many terminal rows are past retention: `wanted`, at most a quarter of the table."""
    return max(0, min(wanted, rows // 4))


def _plan(rows: int, overdue: int, expired: int = 0) -> Counter[str]:
    """99% terminal; of the open 1%, `overdue` are past confirm_by, the rest are not due.
    `expired` of the terminal rows (3% of them failed) ended before the retention cut-off."""
    open_rows = max(overdue, rows // 100)
    rest = open_rows - overdue
    terminal = rows - open_rows
    failed = terminal * 3 // 100
    expired_failed = expired * 3 // 100
    return Counter(
        {
            "overdue": overdue,
            "awaiting": rest * 2 // 3,
            "queued_later": rest - rest * 2 // 3,
            "confirmed": terminal - failed - (expired - expired_failed),
            "failed": failed - expired_failed,
            "expired_confirmed": expired - expired_failed,
            "expired_failed": expired_failed,
        }
    )


def _records(
    rows: int, overdue: int, expired: int, now: datetime, seed: int
) -> Iterator[tuple[Any, ...]]:
    rng = random.Random(seed)
    kinds = [k for k, n in _plan(rows, overdue, expired).items() for _ in range(n)]
    rng.shuffle(kinds)
    # The expired rows first: rows are inserted in time order, so the oldest share pages.
    kinds.sort(key=lambda kind: not kind.startswith("expired_"))
    hour = timedelta(hours=1)
    for n, kind in enumerate(kinds):
        created = now - timedelta(seconds=rng.uniform(7200, 30 * 86400))
        submitted = created + timedelta(seconds=1)
        status: str = "confirmed"
        outcome: str | None = "canceled"
        via: str | None = "webhook"
        confirm_by = submitted + hour
        next_at = confirmed_at = None
        if kind.startswith("expired_"):  # ended 1 to 30 days before the retention cut-off
            created = now - timedelta(seconds=RETENTION_S + rng.uniform(86400, 30 * 86400))
            submitted = created + timedelta(seconds=1)
            confirm_by = submitted + hour
            kind = kind.removeprefix("expired_")
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


# The history of an expired row, as a real cancel leaves it: (seconds after created_at,
# from, to, cause, evidence). The last step is its terminal status's.
_HISTORY = (
    (0, None, "queued", "enqueued", '{"reason": "bench: bulk"}'),
    (0.5, "queued", "sending", "claimed", '{"attempt": 1, "worker": "bench"}'),
    (1, "sending", "awaiting_confirmation", "provider_queued_cancel", '{"http_status": 200}'),
)

# A ~1.7 KB payload, the size of a Dropbox Sign callback's stored JSON.
_PAYLOAD_SQL = (
    "jsonb_build_object('event', jsonb_build_object('event_type',"
    " 'signature_request_canceled', 'event_time', extract(epoch FROM {at})::bigint::text,"
    " 'event_hash', md5({key}) || md5({key} || 'x'), 'event_metadata',"
    " jsonb_build_object('reported_for_account_id', 'sim-account')),"
    " 'signature_request', jsonb_build_object('signature_request_id', {resource},"
    " 'title', 'bench', 'is_complete', false, 'is_declined', false,"
    " 'padding', repeat('x', 1400)))"
)


async def _load_expired_extras(conn: asyncpg.Connection, now: datetime, unused: int) -> None:
    """History for every expired row, the inbox event that confirmed each expired confirmed
    row, and `unused` old plus `unused` recent inbox events nobody used.

    The expired rows are found in cancellation_state (0016: their status, updated_at and the
    copies of provider, account and resource_id); only their first three history rows need
    the request's created_at, read through the `cancellations` view. Both tables are
    analyzed first, so that the join starts from the few expired states
    (cancellation_state_terminal_at) rather than a freshly loaded table's every request."""
    cutoff = now - timedelta(seconds=RETENTION_S)
    await conn.execute(f"ANALYZE {', '.join(state_apart.TABLES)}")
    values = ", ".join(
        f"({offset}, {'NULL' if frm is None else repr(frm)}, '{to}', '{cause}', '{evidence}')"
        for offset, frm, to, cause, evidence in _HISTORY
    )
    await conn.execute(
        "INSERT INTO cancellation_events (cancellation_id, at, from_status, to_status, cause,"  # noqa: S608
        " evidence)"
        " SELECT c.id, c.created_at + make_interval(secs => h.offset_s), h.from_status,"
        " h.to_status, h.cause, h.evidence::jsonb"
        f" FROM cancellations c, (VALUES {values}) AS h(offset_s, from_status, to_status,"
        " cause, evidence)"
        " WHERE c.status IN ('confirmed', 'failed') AND c.updated_at < $1"
        " UNION ALL"
        " SELECT c.id, c.updated_at, 'awaiting_confirmation', c.status,"
        " 'webhook', '{}'::jsonb"
        " FROM cancellation_state c"
        " WHERE c.status IN ('confirmed', 'failed') AND c.updated_at < $1",
        cutoff,
    )
    payload = _PAYLOAD_SQL.format(at="c.updated_at", key="c.id::text", resource="c.resource_id")
    await conn.execute(
        "INSERT INTO webhook_inbox (provider, account, dedupe_key, resource_id, event_type,"  # noqa: S608
        " event_time, effect, payload, received_at, processed_at, cancellation_id)"
        " SELECT c.provider, c.account, 'bench-' || c.id, c.resource_id,"
        " 'signature_request_canceled', c.updated_at, '{\"kind\": \"canceled\"}'::jsonb,"
        f" {payload}, c.updated_at, c.updated_at, c.id"
        " FROM cancellation_state c WHERE c.status = 'confirmed' AND c.updated_at < $1",
        cutoff,
    )
    payload = _PAYLOAD_SQL.format(at="t.at", key="t.n::text", resource="'unused-' || t.n")
    await conn.execute(
        "INSERT INTO webhook_inbox (provider, account, dedupe_key, resource_id, event_type,"  # noqa: S608
        " event_time, effect, payload, received_at)"
        " SELECT 'dropbox_sign', 'default', 'bench-unused-' || t.n, 'unused-' || t.n,"
        " 'signature_request_canceled', t.at, '{\"kind\": \"canceled\"}'::jsonb,"
        f" {payload}, t.at"
        " FROM (SELECT n, CASE WHEN n % 2 = 0 THEN $1::timestamptz - make_interval(secs => n)"
        " ELSE $2::timestamptz - make_interval(secs => n) END AS at"
        " FROM generate_series(1, $3::int) n) t",
        cutoff,
        now,
        2 * unused,
    )


async def load(dsn: str, rows: int, overdue: int, expired: int = 0) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        await migrations.migrate(conn)
        now = datetime.now(UTC)
        started = time.perf_counter()
        # Synthetic rows in every status: no transition wrote them (0011's trigger is off);
        # the request and the state of each written to their tables (0016), not the view.
        await state_apart.copy_cancellations(
            conn, _records(rows, overdue, expired, now, seed=rows), _COLUMNS
        )
        await conn.execute(
            "INSERT INTO provider_counts (provider, status, shard, n)"
            " SELECT provider, status, 0, count(*) FROM cancellation_state"
            " WHERE status IN ('confirmed', 'failed') GROUP BY provider, status"
        )
        loaded = time.perf_counter() - started
        if expired:
            await _load_expired_extras(conn, now, unused=max(1, expired // 10))
        extras = time.perf_counter() - started - loaded
        for table in (*state_apart.TABLES, "cancellation_events", "webhook_inbox"):
            await conn.execute(f"VACUUM (ANALYZE) {table}")
        # What `cancellations` was before 0016: both tables (heap, indexes, TOAST).
        size = await state_apart.total_bytes(conn)
        parts = await state_apart.sizes(conn)
        history = await conn.fetchval("SELECT count(*) FROM cancellation_events")
        inbox = await conn.fetchval("SELECT count(*) FROM webhook_inbox")
    finally:
        await conn.close()
    return {
        "rows": rows,
        "overdue": overdue,
        "expired": expired,
        "history_rows": int(history),
        "inbox_events": int(inbox),
        "load_s": round(loaded, 1),
        "load_extras_s": round(extras, 1),
        "vacuum_analyze_s": round(time.perf_counter() - started - loaded - extras, 1),
        "table_bytes": int(size),
        **{k: v for k, v in parts.items() if k.startswith(("requests_", "state_"))},
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
        # The loader's account is served, as in a service that has its key.
        sweeper = Sweeper(store, SystemClock(), served=lambda: ["dropbox_sign:default"])

        async def put_back() -> None:
            # A reset of the state alone (0016): the requests are never written.
            async with triggers_off(conn, "cancellation_state", "transition"):
                await conn.execute(PUT_BACK)
            await conn.execute("VACUUM (ANALYZE) cancellation_state")

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
        # The same rounds without 0005's NOTIFY trigger (a pg_notify per requeued row).
        quiet_ms: list[float] = []
        await conn.execute("ALTER TABLE cancellation_state DISABLE TRIGGER cancellation_changed")
        try:
            for _ in range(max(1, rounds // 2)):
                started = time.perf_counter()
                await sweeper.run_once()
                quiet_ms.append((time.perf_counter() - started) * 1000)
                await put_back()
        finally:
            await conn.execute("ALTER TABLE cancellation_state ENABLE TRIGGER cancellation_changed")
        full_plan = await explain(conn, QUERIES["requeue_overdue"], datetime.now(UTC), 1000)
        await conn.execute("VACUUM (ANALYZE) cancellation_state")
        # And a round with nothing overdue: the price of the sweeper's interval when idle.
        await conn.execute(
            "UPDATE cancellation_state SET confirm_by = confirm_by + interval '1 day'"
            " WHERE status = 'awaiting_confirmation' AND confirm_by <= now()"
        )
        await conn.execute("VACUUM (ANALYZE) cancellation_state")
        idle_runs: list[float] = []
        for _ in range(3):
            started = time.perf_counter()
            idle = await sweeper.run_once()
            idle_runs.append((time.perf_counter() - started) * 1000)
        idle_ms = statistics.median(idle_runs)
        # An idle round's statements one by one, and the plan of the one added in 0005.
        idle_steps_ms: dict[str, float] = {}
        idle_steps = {
            **steps,
            "unserved_accounts": lambda: store.unserved_accounts(["dropbox_sign:default"]),
        }
        for name, step in idle_steps.items():
            started = time.perf_counter()
            await step()
            idle_steps_ms[name] = round((time.perf_counter() - started) * 1000, 2)
        unserved_plan = await explain(conn, QUERIES["unserved_accounts"], ["dropbox_sign:default"])
    finally:
        await conn.close()
        await pool.close()
    return {
        "round_ms": round(statistics.median(times_ms), 2),
        "rounds_ms": [round(t, 2) for t in times_ms],
        "requeued": requeued,
        "wal_bytes": wal_bytes,
        "rounds_without_notify_ms": [round(t, 2) for t in quiet_ms],
        "idle_round_ms": round(idle_ms, 2),
        "idle_rounds_ms": [round(t, 2) for t in idle_runs],
        "idle_steps_ms": idle_steps_ms,
        "unserved_plan": unserved_plan,
        "idle_requeued": idle.overdue,
        "steps_ms": steps_ms,
        "plan": plan,
        "full_plan": full_plan,
    }


async def measure_retention(dsn: str, rounds: int) -> dict[str, Any]:
    """Retention at this size: `Store.delete_expired(before, 500)` timed for one batch and
    for a full round (up to 10 batches, as Sweeper._retain runs them), `rounds` times each;
    the plan of the delete; then a round with nothing left to delete.

    The rounds run one after another without a VACUUM between them, as the sweeper's would
    between two runs of autovacuum. Each deleted row takes its history with it (deleted by the
    same statement since 0011; before, ON DELETE CASCADE) and the inbox event it used; old
    unused inbox events go in the same call.
    """
    pool = await db.create_pool(dsn, 8)
    conn = await asyncpg.connect(dsn)
    store = Store(pool)
    lsn = "SELECT pg_current_wal_lsn()::text"
    wal_diff = "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)::bigint"
    # The rows counted in each table of 0016: retention deletes the request with the state.
    counts = (
        "SELECT (SELECT count(*) FROM cancellation_state) AS rows,"
        " (SELECT count(*) FROM cancellation_requests) AS requests,"
        " (SELECT count(*) FROM cancellation_events) AS history,"
        " (SELECT count(*) FROM webhook_inbox) AS inbox"
    )

    async def timed(batches: int) -> dict[str, Any]:
        """Up to `batches` calls, stopping at the first short one (Sweeper._retain's loop)."""
        before_counts = await conn.fetchrow(counts)
        before_lsn = await conn.fetchval(lsn)
        cutoff = datetime.now(UTC) - timedelta(seconds=RETENTION_S)
        deleted = events = calls = 0
        started = time.perf_counter()
        for _ in range(batches):
            rows, inbox = await store.delete_expired(cutoff, RETENTION_BATCH)
            deleted, events, calls = deleted + rows, events + inbox, calls + 1
            if rows < RETENTION_BATCH and inbox < RETENTION_BATCH:
                break
        ms = (time.perf_counter() - started) * 1000
        wal = int(await conn.fetchval(wal_diff, before_lsn))
        after_counts = await conn.fetchrow(counts)
        return {
            "ms": round(ms, 2),
            "calls": calls,
            "deleted": deleted,
            "inbox_deleted": events,
            "history_deleted": int(before_counts["history"] - after_counts["history"]),
            # 0016: the requests go with their states, in the same statement.
            "requests_deleted": int(before_counts["requests"] - after_counts["requests"]),
            "wal_bytes": wal,
        }

    try:
        await pool.fetchval("SELECT 1")  # a warm connection, as in a running service
        cutoff = datetime.now(UTC) - timedelta(seconds=RETENTION_S)
        # Run for real (triggers and all), rolled back; first, while every expired row is
        # still there.
        plan = await explain(conn, QUERIES["delete_expired_cancellations"], cutoff, RETENTION_BATCH)
        inbox_plan = await explain(
            conn, QUERIES["delete_unused_inbox_events"], cutoff, RETENTION_BATCH
        )
        batches = [await timed(1) for _ in range(rounds)]
        full = [await timed(RETENTION_MAX_BATCHES) for _ in range(rounds)]
        # Whatever is left, untimed; then the steady state: a round that finds nothing.
        while sum(await store.delete_expired(cutoff, 5000)):
            pass
        for table in (*state_apart.TABLES, "cancellation_events", "webhook_inbox"):
            await conn.execute(f"VACUUM (ANALYZE) {table}")
        idle = [await timed(RETENTION_MAX_BATCHES) for _ in range(max(3, rounds))]
        left = await conn.fetchrow(counts)
    finally:
        await conn.close()
        await pool.close()

    def median(runs: list[dict[str, Any]], key: str) -> float | None:
        values = [r[key] for r in runs]
        return round(statistics.median(values), 2) if values else None

    return {
        "retention_s": RETENTION_S,
        "batch": RETENTION_BATCH,
        "batch_ms": median(batches, "ms"),
        "batch_deleted": median(batches, "deleted"),
        "batch_wal_bytes": median(batches, "wal_bytes"),
        "batches": batches,
        "round_ms": median(full, "ms"),
        "round_deleted": median(full, "deleted"),
        "round_wal_bytes": median(full, "wal_bytes"),
        "rounds": full,
        "idle_round_ms": median(idle, "ms"),
        "idle_rounds": idle,
        "left": dict(left),
        "plan": plan,
        "inbox_plan": inbox_plan,
    }
