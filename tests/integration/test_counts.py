"""The counters behind /v1/stats and the dashboard (0013): equal to a live count whatever path
moved the rows, filled from the rows already there on upgrade, and read without a scan of the
table; and the claim, which reads the due index in order instead of sorting the backlog."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from orchestrator.store import migrations
from orchestrator.store.queries import QUERIES
from orchestrator.web import keys
from tests.conftest import _admin, with_database
from tests.integration.conftest import Harness
from tests.integration.test_callbacks import abandon
from tests.integration.test_trust import until_terminal

TRUTO = {"integrated_account_id": "62f44730-dd91-461e-bd6a-aedd9e0ad79d", "message": "m"}
OPEN = ("queued", "sending", "awaiting_confirmation")

LIVE = "SELECT provider, status, count(*) AS n FROM cancellations GROUP BY provider, status"
COUNTERS = (
    "SELECT provider, status, sum(n) AS n FROM provider_counts"
    " GROUP BY provider, status HAVING sum(n) <> 0"
)


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Dropbox Sign's callbacks settle (the webhook path), as well as the status checks."""
    return {"dropbox_sign_confirm_by": "webhook"}


def by_key(records: list[asyncpg.Record]) -> dict[tuple[str, str], int]:
    return {(r["provider"], r["status"]): int(r["n"]) for r in records}


async def agree(harness: Harness, db: asyncpg.Connection) -> dict[tuple[str, str], int]:
    """The counters, the dashboard's counts and /v1/stats all equal a live count."""
    live = by_key(await db.fetch(LIVE))
    terminal = {k: n for k, n in live.items() if k[1] not in OPEN}
    assert by_key(await db.fetch(COUNTERS)) == terminal
    store = harness.app[keys.STORE]
    dashboard = await store.counts_by_provider()
    assert {(p, s): n for p, counts in dashboard.items() for s, n in counts.items()} == live
    response = await harness.client.get("/v1/stats")
    stats = await response.json()
    for status in (*OPEN, "confirmed", "failed"):
        assert stats[status] == sum(n for (_, s), n in live.items() if s == status), status
    assert stats["total"] == sum(live.values())
    return live


async def test_the_counters_equal_a_live_count_whatever_path_moved_the_rows(
    harness: Harness, db: asyncpg.Connection
) -> None:
    """Enqueue, the dispatcher's confirm and fail, a webhook that settles, abandon, retry,
    the sweeper's requeue of an overdue row, a fold of the shards and retention's delete:
    after each, the counters by provider and status equal count(*) GROUP BY provider, status."""
    sweeper = harness.app[keys.SWEEPER]
    harness.sim.seed_request("dropbox_sign", "sr-signed", "completed")
    settled = [await harness.enqueue(f"sr-settle-{i}") for i in range(3)]
    signed = await harness.enqueue("sr-signed")
    truto = [
        await harness.enqueue(f"wf-count-{i}", provider="truto", params=TRUTO) for i in range(2)
    ]
    dropped = await harness.enqueue("sr-abandoned")
    assert (await agree(harness, db))[("dropbox_sign", "queued")] == 5

    await abandon(harness, dropped["id"])  # queued -> failed, by an operator
    await agree(harness, db)
    await harness.dispatch()  # webhooks settle Dropbox Sign; Truto answers; sr-signed fails
    for created in (*settled, signed, *truto):
        await until_terminal(harness, created["id"])
    live = await agree(harness, db)
    assert live[("dropbox_sign", "confirmed")] == 3
    assert live[("dropbox_sign", "failed")] == 2
    assert live[("truto", "confirmed")] == 2

    harness.sim.configure({"dropbox_sign": {"lose_cancel_rate": 1.0}})  # no callback comes
    overdue = await harness.enqueue("sr-overdue")
    retried = await harness.enqueue("sr-retried")
    await harness.dispatch()
    assert (await harness.get(overdue["id"]))["status"] == "awaiting_confirmation"
    response = await harness.client.post(
        f"/v1/cancellations/{retried['id']}/retry", json={"reason": "try now"}
    )
    assert response.status == 200, await response.text()
    await agree(harness, db)

    harness.advance(3601)
    sweeper.retention_s = 600  # everything that ended so far ended before the cut-off
    report = await sweeper.run_once()  # requeues the overdue one, deletes the 7 that ended
    sweeper.retention_s = 0
    assert (report.overdue, report.deleted) == (1, 7)
    live = await agree(harness, db)
    assert not any(s in ("confirmed", "failed") for _, s in live)

    harness.sim.configure({"dropbox_sign": {"lose_cancel_rate": 0.0}})
    for created in (overdue, retried):
        assert (await until_terminal(harness, created["id"]))["status"] == "confirmed"
    await harness.app[keys.STORE].fold_counts()
    assert await db.fetchval("SELECT count(*) FROM provider_counts WHERE shard <> 0") == 0
    assert (await agree(harness, db)) == {("dropbox_sign", "confirmed"): 2}


async def test_a_delete_or_truncate_by_hand_takes_rows_off_the_counters(
    harness: Harness, db: asyncpg.Connection
) -> None:
    """The triggers keep the counters whoever deletes: not only retention's statement."""
    for i in range(3):
        await abandon(harness, (await harness.enqueue(f"sr-hand-{i}"))["id"])
    await harness.enqueue("sr-hand-open")
    await db.execute("DELETE FROM cancellations WHERE resource_id IN ('sr-hand-0', 'sr-hand-open')")
    assert (await agree(harness, db))[("dropbox_sign", "failed")] == 2
    await db.execute("TRUNCATE cancellation_state, cancellation_requests")
    assert await agree(harness, db) == {}


# --- the upgrade ---------------------------------------------------------------------------


@pytest.fixture
async def upgrade_dsn(pg_server: str) -> AsyncIterator[str]:
    name = "upgrade_to_counts_by_provider"
    await _admin(
        pg_server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"CREATE DATABASE {name}"
    )
    try:
        yield with_database(pg_server, name)
    finally:
        await _admin(pg_server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def this_migration() -> int:
    (version,) = [m.version for m in migrations.discover() if m.name == "counts_by_provider"]
    return version


async def test_the_upgrade_fills_the_counters_from_the_rows_already_there(
    upgrade_dsn: str, tmp_path: Path
) -> None:
    """Rows ended before 0013 (by the functions of the release before) are counted by
    provider and status once it is applied, and the counters keep counting after it."""
    before = [m for m in migrations.discover() if m.version < this_migration()]
    for m in before:
        (tmp_path / m.filename).write_text(m.sql)
    now = datetime.now(UTC)
    conn = await asyncpg.connect(upgrade_dsn)
    try:
        assert await migrations.migrate(conn, tmp_path) == [m.version for m in before]
        ends = {"dropbox_sign": ["confirmed"] * 3 + ["failed"], "truto": ["failed"] * 2}
        ids = {}
        for provider, statuses in ends.items():
            for n, status in enumerate([*statuses, "queued"]):
                ident = uuid.uuid4()
                await conn.execute(
                    "SELECT result FROM enqueue_cancellation($1, $2, 'default', $3,"
                    " NULL, '{}', '{}', NULL, 'h', $4)",
                    ident,
                    provider,
                    f"up-{provider}-{n}",
                    now,
                )
                ids[(provider, n)] = ident
                if status != "queued":
                    cause = "webhook" if status == "confirmed" else "abandoned"
                    decision = json.dumps({"status": status, "cause": cause})
                    await conn.execute(
                        "SELECT id FROM apply_decision($1, 0, 'queued', $2, $3::jsonb, false)",
                        ident,
                        now,
                        decision,
                    )
        assert await migrations.migrate(conn) == [
            m.version for m in migrations.discover() if m.version >= this_migration()
        ]
        expected = {
            ("dropbox_sign", "confirmed"): 3,
            ("dropbox_sign", "failed"): 1,
            ("truto", "failed"): 2,
        }
        assert by_key(await conn.fetch(COUNTERS)) == expected
        live = by_key(await conn.fetch(LIVE))
        assert {k: n for k, n in live.items() if k[1] not in OPEN} == expected

        # Counting goes on: one more ends, one is deleted.
        decision = json.dumps({"status": "failed", "cause": "abandoned"})
        await conn.execute(
            "SELECT id FROM apply_decision($1, 0, 'queued', $2, $3::jsonb, false)",
            ids[("truto", 2)],
            now,
            decision,
        )
        await conn.execute("DELETE FROM cancellations WHERE id = $1", ids[("dropbox_sign", 0)])
        rows = await conn.fetch(QUERIES["counts_by_provider"])
        assert by_key(rows) == by_key(await conn.fetch(LIVE))
        assert by_key(await conn.fetch(COUNTERS)) == {
            ("dropbox_sign", "confirmed"): 2,
            ("dropbox_sign", "failed"): 1,
            ("truto", "failed"): 3,
        }
    finally:
        await conn.close()


# --- no scan of the table ------------------------------------------------------------------

#: The only ways stats and counts_by_provider may read cancellations: a partial index of the
#: open statuses (bounded by the backlog), or the newest confirmed row of the terminal rows'
#: index (last_confirmed_at: a walk back to the first confirmed entry).
BOUNDED = {
    "cancellation_state_one_open",
    "cancellation_state_due",
    "cancellation_state_leased",
    "cancellation_state_overdue",
    "cancellation_state_terminal_at",
}


def scans_of_cancellations(plan: dict[str, Any]) -> list[tuple[str, str | None]]:
    """Every read of the two tables: (node, index), with a bitmap's heap scan left out (its
    bitmap index scans name the indexes it reads)."""
    found = []
    index = plan.get("Index Name")
    table = plan.get("Relation Name")
    if index is not None and index.startswith("cancellation_"):
        found.append((plan["Node Type"], index))
    elif table in ("cancellation_state", "cancellation_requests") and plan["Node Type"] != (
        "Bitmap Heap Scan"
    ):
        found.append((plan["Node Type"], None))
    for child in plan.get("Plans", []):
        found.extend(scans_of_cancellations(child))
    return found


@pytest.mark.parametrize("query", ["stats", "counts_by_provider"])
async def test_the_counts_read_no_more_of_the_table_than_the_backlog(
    db: asyncpg.Connection, query: str
) -> None:
    """With sequential scans priced out (as in a table of millions), every read of
    cancellations in the statement goes through an open status's partial index, or takes the
    newest confirmed row: no plan exists that counts the history row by row."""
    await db.execute("ANALYZE cancellation_state, cancellation_requests")  # not the view
    await db.execute("SET enable_seqscan = off")
    args = [datetime.now(UTC)] if query == "stats" else []
    (plan,) = json.loads(await db.fetchval(f"EXPLAIN (FORMAT JSON) {QUERIES[query]}", *args))
    scans = scans_of_cancellations(plan["Plan"])
    assert scans, plan
    assert all(index in BOUNDED for _, index in scans), scans


# --- the claim -----------------------------------------------------------------------------


async def test_the_claim_reads_the_due_index_in_order_without_sorting_the_backlog(
    harness: Harness, db: asyncpg.Connection
) -> None:
    """The claim's rows come from cancellation_state_due in next_attempt_at order, stopping at the
    limit: no sort of every due row, even where the planner would rather sort (here random
    reads priced a thousand times a sequential one; at scale, its estimate of the due rows
    is too low). A row queued again with an earlier time than rows claimed before it is
    still the first one claimed."""
    for i in range(5):
        await harness.enqueue(f"sr-order-{i}")
        harness.advance(1)
    store = harness.app[keys.STORE]
    first = await store.claim_due(harness.clock.now(), 2, "w", 30.0, {"dropbox_sign:default": None})
    assert sorted(r.resource_id for r in first) == ["sr-order-0", "sr-order-1"]
    # sr-order-0 back in the queue, due at a time before any row still queued.
    await db.execute(
        "UPDATE cancellations SET status = 'queued', version = version + 1,"
        " next_attempt_at = created_at - interval '1 hour', lease_owner = NULL,"
        " lease_expires_at = NULL, transition_cause = 'lease_expired'"
        " WHERE resource_id = 'sr-order-0'"
    )
    plans: list[str] = []

    def listen(_: Any, message: Any) -> None:
        plans.append(str(message.message))

    db.add_log_listener(listen)
    async with db.transaction():
        await db.execute(
            "LOAD 'auto_explain'; SET LOCAL auto_explain.log_min_duration = 0;"
            " SET LOCAL auto_explain.log_nested_statements = on;"
            " SET LOCAL auto_explain.log_level = notice;"
            " SET LOCAL random_page_cost = 1000; SET LOCAL seq_page_cost = 0.01"
        )
        claimed = await db.fetch(
            "SELECT resource_id FROM claim_rows($1, 2, 'w2', 30, $2)",
            harness.clock.now(),
            ["dropbox_sign:default"],
        )
    db.remove_log_listener(listen)
    assert sorted(r["resource_id"] for r in claimed) == ["sr-order-0", "sr-order-2"]
    (due,) = [p for p in plans if "ORDER BY next_attempt_at" in p and "Update on" in p]
    assert "Index Scan using cancellation_state_due" in due, due
    assert "Sort" not in due.split("Update on", 1)[1], due
