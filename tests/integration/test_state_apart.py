"""The state apart from the request (0016, issue 18 item 4): what one state change writes,
read from the WAL, and the view that keeps every read as it was.

Each WAL test takes the records one statement wrote in its own database (pg_walinspect's
pg_get_wal_block_info) and counts, by relation, the b-tree entries inserted and the heap
tuples written: a state change writes one new version of the cancellation_state row and the
index entries of that table only (its primary key and the partial index of the new status,
plus the one-open rule's while the cancellation stays open), and nothing at all in
cancellation_requests. `dsn` (tests/conftest.py) checks after every test of the suite that
the two halves of every cancellation agree.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from orchestrator.domain import lifecycle
from orchestrator.domain.lifecycle import Cause
from orchestrator.domain.model import ConfirmedVia, Outcome, Settled
from orchestrator.store import db as store_db
from orchestrator.store.repository import NewCancellation, Store

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
#: WAL records that add an entry to a b-tree leaf (a split carries its new entry too).
BTREE_INSERTS = ("INSERT_LEAF", "INSERT_POST", "SPLIT_L", "SPLIT_R")

WAL_BLOCKS = """
SELECT w.record_type, w.resource_manager, coalesce(i.indrelid, c.oid)::regclass::text AS tbl,
       c.relname AS rel
FROM pg_get_wal_block_info($1, $2, false) w
JOIN pg_class c ON c.relfilenode = w.relfilenode
LEFT JOIN pg_index i ON i.indexrelid = c.oid
WHERE w.reldatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND w.relforknumber = 0
"""


class Written:
    """What the WAL says one statement wrote: b-tree entries and heap records, by relation."""

    def __init__(self, records: list[asyncpg.Record]) -> None:
        self.index_entries: Counter[str] = Counter()
        self.index_entries_by_table: Counter[str] = Counter()
        self.heap: Counter[tuple[str, str]] = Counter()
        for r in records:
            if r["resource_manager"] == "Btree" and r["record_type"] in BTREE_INSERTS:
                self.index_entries[r["rel"]] += 1
                self.index_entries_by_table[r["tbl"]] += 1
            elif r["resource_manager"] == "Heap":
                self.heap[(r["tbl"], r["record_type"])] += 1

    def __repr__(self) -> str:
        return f"index entries {dict(self.index_entries)}, heap {dict(self.heap)}"


async def written(db: asyncpg.Connection, statement: Callable[[], Awaitable[Any]]) -> Written:
    await db.execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
    start = await db.fetchval("SELECT pg_current_wal_insert_lsn()")
    await statement()
    end = await db.fetchval("SELECT pg_current_wal_insert_lsn()")
    for _ in range(100):  # the records are readable once flushed (synchronous_commit may be off)
        if await db.fetchval("SELECT pg_current_wal_flush_lsn() >= $1::pg_lsn", end):
            break
        await asyncio.sleep(0.05)
    return Written(await db.fetch(WAL_BLOCKS, start, end))


async def enqueue(db: asyncpg.Connection, resource_id: str, key: str | None = None) -> uuid.UUID:
    ident = uuid.uuid4()
    result = await db.fetchval(
        "SELECT result FROM enqueue_cancellation($1, 'dropbox_sign', 'default', $2, 'test',"
        " '{}', '{}', $3, 'h', $4, NULL, NULL)",
        ident,
        resource_id,
        key,
        NOW,
    )
    assert result == "created"
    return ident


async def apply(db: asyncpg.Connection, ident: uuid.UUID, decision: dict[str, Any]) -> None:
    version, status = await db.fetchrow(
        "SELECT version, status FROM cancellation_state WHERE id = $1", ident
    )
    applied = await db.fetch(
        "SELECT * FROM apply_decision($1, $2, $3, $4, $5, false)",
        ident,
        version,
        status,
        NOW,
        json.dumps(decision),
    )
    assert len(applied) == 1


AWAIT = {
    "status": "awaiting_confirmation",
    "cause": "provider_queued_cancel",
    "confirm_by": (NOW + timedelta(hours=1)).isoformat(),
}
CONFIRM = {"status": "confirmed", "cause": "webhook", "confirmed_via": "webhook"}


async def test_a_state_change_writes_the_state_row_and_its_indexes_only(
    db: asyncpg.Connection,
) -> None:
    """The claim, the provider's answer and the callback, each on a request that had an
    idempotency key: one new version of the cancellation_state row, its primary key, the
    partial index of the new status and, while the cancellation stays open, the one-open
    rule's entry; nothing in cancellation_requests, whose 4 indexes an update of the old
    table wrote into every time. Plus the history row and its key."""
    await enqueue(db, "sr-warm", key="warm")  # the first write of each page is a whole page
    ident = await enqueue(db, "sr-apart", key="key-apart")
    accounts = ["dropbox_sign:default"]
    steps: dict[str, tuple[Callable[[], Awaitable[Any]], set[str]]] = {
        "claimed": (
            lambda: db.fetch("SELECT * FROM claim_rows($1, 1, 'w', 30, $2)", NOW, accounts),
            {"cancellation_state_pkey", "cancellation_state_leased", "cancellation_state_one_open"},
        ),
        "awaiting": (
            lambda: apply(db, ident, AWAIT),
            {
                "cancellation_state_pkey",
                "cancellation_state_overdue",
                "cancellation_state_one_open",
            },
        ),
        "confirmed": (
            lambda: apply(db, ident, CONFIRM),
            {"cancellation_state_pkey", "cancellation_state_terminal_at"},
        ),
    }
    await db.execute(
        "UPDATE cancellation_state SET next_attempt_at = $1 WHERE id <> $2",
        NOW + timedelta(days=1),
        ident,
    )
    for step, (statement, entries) in steps.items():
        wrote = await written(db, statement)
        state_writes = (
            wrote.heap[("cancellation_state", "UPDATE")]
            + wrote.heap[("cancellation_state", "HOT_UPDATE")]
        )
        assert state_writes == 1, (step, wrote)
        assert not [k for k in wrote.heap if k[0] == "cancellation_requests"], (step, wrote)
        assert wrote.index_entries_by_table["cancellation_requests"] == 0, (step, wrote)
        assert set(wrote.index_entries_by_table) <= {
            "cancellation_state",
            "cancellation_events",
            "provider_counts",
        }, (step, wrote)
        assert {
            rel for rel in wrote.index_entries if rel.startswith("cancellation_state")
        } == entries, (step, wrote)
        assert wrote.index_entries_by_table["cancellation_state"] == len(entries), (step, wrote)
        assert wrote.index_entries_by_table["cancellation_events"] == 1, (step, wrote)
    row = await db.fetchrow("SELECT status, confirmed_at FROM cancellations WHERE id = $1", ident)
    assert row["status"] == "confirmed" and row["confirmed_at"] == NOW


async def test_the_view_is_the_table_it_replaced(db: asyncpg.Connection) -> None:
    """cancellations has the columns, in the order and of the types, that the table of
    0001-0015 had, and each row is its two halves joined (as_cancellation builds the same
    row from them, as the writers return it)."""
    columns = await db.fetch(
        "SELECT column_name, data_type FROM information_schema.columns"
        " WHERE table_name = 'cancellations' ORDER BY ordinal_position"
    )
    assert [c["column_name"] for c in columns][:5] == [
        "id",
        "provider",
        "account",
        "resource_id",
        "status",
    ]
    assert len(columns) == 30
    ident = await enqueue(db, "sr-view", key="key-view")
    await db.fetch("SELECT * FROM claim_rows($1, 1, 'w', 30, $2)", NOW, ["dropbox_sign:default"])
    viewed = await db.fetchrow("SELECT * FROM cancellations WHERE id = $1", ident)
    built = await db.fetchrow(
        "SELECT c.* FROM cancellation_requests r JOIN cancellation_state s ON s.id = r.id,"
        " LATERAL as_cancellation(r, s) c WHERE r.id = $1",
        ident,
    )
    assert dict(viewed) == dict(built)
    assert viewed["status"] == "sending" and viewed["idempotency_key"] == "key-view"


async def test_writes_to_the_view_reach_both_halves(db: asyncpg.Connection) -> None:
    """An operator's or a script's INSERT, UPDATE and DELETE on cancellations still work, and
    still pass the state's triggers: a bare UPDATE of the status is still refused (TR001),
    an UPDATE of the request's columns reaches both halves, a DELETE removes both."""
    ident = uuid.uuid4()
    await db.execute(
        "INSERT INTO cancellations (id, provider, account, resource_id, status, request_hash,"
        " created_at, updated_at, next_attempt_at, transition_cause)"
        " VALUES ($1, 'dropbox_sign', 'default', 'sr-bare', 'queued', 'h', $2, $2, $2,"
        " 'enqueued')",
        ident,
        NOW,
    )
    assert (
        await db.fetchval(
            "SELECT count(*) FROM cancellation_events WHERE cancellation_id = $1", ident
        )
        == 1
    )
    await db.execute("UPDATE cancellations SET resource_id = 'sr-moved' WHERE id = $1", ident)
    assert (
        await db.fetchval(
            "SELECT r.resource_id || '/' || s.resource_id FROM cancellation_requests r"
            " JOIN cancellation_state s USING (id) WHERE id = $1",
            ident,
        )
        == "sr-moved/sr-moved"
    )
    try:
        await db.execute("UPDATE cancellations SET status = 'confirmed' WHERE id = $1", ident)
    except asyncpg.PostgresError as refused:
        assert refused.sqlstate == "TR001"
    else:
        raise AssertionError("a bare status change was applied")
    await db.execute("DELETE FROM cancellations WHERE id = $1", ident)
    for table in ("cancellation_requests", "cancellation_state"):
        assert await db.fetchval(f"SELECT count(*) FROM {table} WHERE id = $1", ident) == 0  # noqa: S608


async def test_what_a_decision_returns_is_the_row_as_stored(dsn: str) -> None:
    """apply_decision returns the state alone and the store merges it into the request it
    holds (with_state): the Cancellation it hands back equals a fresh read of the view, for
    each step of a cancel, so nothing a caller sees is stale."""
    pool = await store_db.create_pool(dsn, 2)
    try:
        store = Store(pool)
        row, _ = await store.enqueue(
            NewCancellation("dropbox_sign", "default", "sr-merge", "why", {"k": 1}, {}, "k-m", "h"),
            NOW,
        )
        (claimed,) = await store.claim_due(NOW, 1, "w", 30.0, {"dropbox_sign:default": None})
        assert claimed == await store.get(row.id)
        done = lifecycle.settle(
            Settled(Outcome.CANCELED, True), ConfirmedVia.WEBHOOK, Cause.WEBHOOK
        )
        applied = await store.apply(claimed, done, NOW + timedelta(seconds=1), submitted=True)
        assert applied is not None and applied.status.value == "confirmed"
        assert applied == await store.get(row.id)
        assert applied.metadata == {"k": 1} and applied.idempotency_key == "k-m"
        assert await store.apply(claimed, done, NOW, submitted=True) is None  # the fence held
    finally:
        await pool.close()
