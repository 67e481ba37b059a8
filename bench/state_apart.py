"""The two tables of migration 0016 (cancellation_requests, cancellation_state) for the loaders.

Since 0016 `cancellations` is a view joining them; a write to it goes through the INSTEAD OF
trigger write_through, one plpgsql call and two single-row inserts per row, far too slow for
a bulk load, and a view has no triggers to disable, no indexes to drop and nothing to
vacuum. So the loaders write the tables directly: the request first, then its state (the
table with the triggers of 0005-0015, transition_on_insert off for synthetic rows), and the
resets of the benchmark update cancellation_state, as the service's own statements do.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from typing import Any

import asyncpg

from harness import triggers_off

REQUESTS = "cancellation_requests"
STATE = "cancellation_state"
#: Both, the request first (the order they are written in).
TABLES = (REQUESTS, STATE)

#: The view's columns each table holds; provider, account, resource_id and callback_url are
#: in both (copies in the state, for the claim, the one-open rule and the outbox).
REQUEST_COLUMNS = frozenset(
    {
        "id",
        "provider",
        "account",
        "resource_id",
        "reason",
        "metadata",
        "params",
        "idempotency_key",
        "request_hash",
        "created_at",
        "callback_url",
        "callback_receiver",
    }
)
STATE_COLUMNS = frozenset(
    {
        "id",
        "provider",
        "account",
        "resource_id",
        "callback_url",
        "status",
        "version",
        "updated_at",
        "attempts",
        "needs_check",
        "next_attempt_at",
        "lease_owner",
        "lease_expires_at",
        "confirm_by",
        "submitted_at",
        "first_sent_at",
        "confirmed_at",
        "outcome",
        "confirmed_via",
        "provider_state",
        "last_error",
        "transition_cause",
        "transition_evidence",
    }
)

#: Records per COPY: the records are made once and each chunk copied into both tables, so
#: the loader's memory does not grow with the table.
CHUNK = 50_000


async def copy_cancellations(
    conn: asyncpg.Connection,
    records: Iterable[Sequence[Any]],
    columns: Sequence[str],
    chunk: int = CHUNK,
) -> None:
    """Rows of the view (`columns` of it, in that order) COPYed into its two tables, in one
    transaction with transition_on_insert off: synthetic rows in any status, which no
    transition wrote (0011). Returns when both tables hold every row."""
    unknown = set(columns) - REQUEST_COLUMNS - STATE_COLUMNS
    if unknown:
        raise ValueError(f"columns in neither table: {sorted(unknown)}")
    if "id" not in columns:
        raise ValueError("the id joins the two tables: it must be loaded")
    request_at = [i for i, c in enumerate(columns) if c in REQUEST_COLUMNS]
    state_at = [i for i, c in enumerate(columns) if c in STATE_COLUMNS]
    request_columns = [columns[i] for i in request_at]
    state_columns = [columns[i] for i in state_at]
    it = iter(records)
    async with triggers_off(conn, STATE, "transition_on_insert"):
        while part := list(itertools.islice(it, chunk)):
            await conn.copy_records_to_table(
                REQUESTS,
                records=[tuple(r[i] for i in request_at) for r in part],
                columns=request_columns,
            )
            await conn.copy_records_to_table(
                STATE,
                records=[tuple(r[i] for i in state_at) for r in part],
                columns=state_columns,
            )


# Everything that indexes or points at a table ($1), to drop before a bulk load and build
# again after it: foreign keys pointing at it, its primary key, its other indexes.
DEPENDENTS = """
SELECT 'fk' AS kind, conname AS name, conrelid::regclass::text AS tab,
       pg_get_constraintdef(oid) AS def
FROM pg_constraint WHERE contype = 'f' AND confrelid = $1::regclass
UNION ALL
SELECT 'pk', conname, conrelid::regclass::text, pg_get_constraintdef(oid)
FROM pg_constraint WHERE contype = 'p' AND conrelid = $1::regclass
UNION ALL
SELECT 'index', i.indexrelid::regclass::text, $1::regclass::text, pg_get_indexdef(i.indexrelid)
FROM pg_index i WHERE i.indrelid = $1::regclass
  AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)
"""


async def drop_dependents(
    conn: asyncpg.Connection, tables: Sequence[str] = TABLES
) -> list[asyncpg.Record]:
    """Drop what DEPENDENTS lists for each of `tables`; returns it, for `rebuild_dependents`."""
    deps: list[asyncpg.Record] = []
    for table in tables:
        deps += await conn.fetch(DEPENDENTS, table)
    for d in deps:
        if d["kind"] == "index":
            await conn.execute(f"DROP INDEX {d['name']}")
        else:
            await conn.execute(f"ALTER TABLE {d['tab']} DROP CONSTRAINT {d['name']}")
    return deps


async def rebuild_dependents(conn: asyncpg.Connection, deps: Sequence[asyncpg.Record]) -> None:
    """The primary keys first, then the indexes, then the keys pointing at the tables."""
    for kind in ("pk", "index", "fk"):
        for d in deps:
            if d["kind"] != kind:
                continue
            if kind == "index":
                await conn.execute(d["def"])
            else:
                await conn.execute(f"ALTER TABLE {d['tab']} ADD CONSTRAINT {d['name']} {d['def']}")


async def vacuum(conn: asyncpg.Connection, *others: str) -> None:
    """VACUUM (ANALYZE) both tables (and `others`)."""
    await conn.execute(f"VACUUM (ANALYZE) {', '.join((*TABLES, *others))}")


async def sizes(conn: asyncpg.Connection) -> dict[str, int]:
    """Heap and index bytes of each table (requests_*, state_*) and their sums (heap_bytes,
    index_bytes): what `cancellations` was before 0016."""
    out: dict[str, int] = {"heap_bytes": 0, "index_bytes": 0}
    for table, short in ((REQUESTS, "requests"), (STATE, "state")):
        row = await conn.fetchrow(
            "SELECT pg_relation_size($1::regclass) AS heap,"
            " pg_indexes_size($1::regclass) AS indexes",
            table,
        )
        assert row is not None
        out[f"{short}_heap_bytes"] = int(row["heap"])
        out[f"{short}_index_bytes"] = int(row["indexes"])
        out["heap_bytes"] += int(row["heap"])
        out["index_bytes"] += int(row["indexes"])
    return out


async def total_bytes(conn: asyncpg.Connection) -> int:
    """pg_total_relation_size of both tables (heap, indexes, TOAST)."""
    return int(
        await conn.fetchval(
            "SELECT pg_total_relation_size($1::regclass) + pg_total_relation_size($2::regclass)",
            *TABLES,
        )
    )
