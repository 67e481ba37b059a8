"""Postgres refuses what lifecycle.TRANSITIONS does not list (migration 0011, issue 18).

The table cancellation_transitions is the database's copy of TRANSITIONS; a history row or a
status change it does not list raises SQLSTATE TR001, which the store reads as a bug.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest

from orchestrator import errors
from orchestrator.domain import lifecycle
from orchestrator.domain.lifecycle import Cause
from orchestrator.domain.model import ConfirmedVia, Outcome, Settled, Status
from orchestrator.store import db as store_db
from orchestrator.store.repository import NewCancellation, Store
from tests.integration.conftest import Harness
from tests.tokens import token

OPS_TOKEN = token("ops")
AS_OPS = {"Authorization": f"Bearer {OPS_TOKEN}"}


@pytest.fixture
async def store(dsn: str) -> AsyncIterator[Store]:
    pool = await store_db.create_pool(dsn, 2)
    try:
        yield Store(pool)
    finally:
        await pool.close()


async def confirmed_row(store: Store, resource_id: str) -> str:
    now = datetime.now(UTC)
    row, _ = await store.enqueue(
        NewCancellation("dropbox_sign", "default", resource_id, None, {}, {}, None, "h"), now
    )
    done = lifecycle.settle(Settled(Outcome.CANCELED, True), ConfirmedVia.WEBHOOK, Cause.WEBHOOK)
    applied = await store.apply(row, done, now, submitted=False)
    assert applied is not None and applied.status is Status.CONFIRMED
    return str(row.id)


async def test_the_table_is_lifecycle_transitions(db: asyncpg.Connection) -> None:
    rows = await db.fetch("SELECT from_status, to_status, cause FROM cancellation_transitions")
    in_db = {(r["from_status"], r["to_status"], r["cause"]) for r in rows}
    in_code = {(f.value if f else None, t.value, c.value) for f, t, c in lifecycle.TRANSITIONS}
    assert len(rows) == len(in_db), "a transition is listed twice"
    assert in_db - in_code == set(), "in cancellation_transitions, not in TRANSITIONS"
    assert in_code - in_db == set(), "in TRANSITIONS, not in cancellation_transitions"


async def test_a_bare_update_cannot_reopen_a_confirmed_cancellation(
    store: Store, db: asyncpg.Connection
) -> None:
    ident = await confirmed_row(store, "sr-reopen")
    with pytest.raises(asyncpg.PostgresError, match="confirmed -> queued") as raised:
        await db.execute("UPDATE cancellations SET status = 'queued' WHERE id = $1", ident)
    assert raised.value.sqlstate == store_db.ILLEGAL_TRANSITION
    assert await db.fetchval("SELECT status FROM cancellations WHERE id = $1", ident) == (
        "confirmed"
    )


async def test_a_history_row_the_table_lacks_is_refused(
    store: Store, db: asyncpg.Connection
) -> None:
    ident = await confirmed_row(store, "sr-resurrect")
    with pytest.raises(asyncpg.PostgresError, match="resurrected") as raised:
        await db.execute(
            "INSERT INTO cancellation_events (cancellation_id, at, from_status, to_status, cause)"
            " VALUES ($1, now(), 'confirmed', 'queued', 'resurrected')",
            ident,
        )
    assert raised.value.sqlstate == store_db.ILLEGAL_TRANSITION


async def test_the_store_reads_a_refused_transition_as_a_bug(
    store: Store, db: asyncpg.Connection
) -> None:
    """Not a 4xx: IllegalTransition is no OrchestratorError, so the web layer answers 500
    and logs it at ERROR with its traceback (web/problems.py's unhandled branch)."""
    ident = await confirmed_row(store, "sr-bug")
    with pytest.raises(errors.IllegalTransition, match="confirmed -> failed"):
        async with store_db.translate_errors():
            await db.execute("UPDATE cancellations SET status = 'failed' WHERE id = $1", ident)
    assert not issubclass(errors.IllegalTransition, errors.OrchestratorError)


async def test_a_transition_written_by_hand_gets_its_history_row_from_the_trigger(
    store: Store, db: asyncpg.Connection
) -> None:
    """One writer (0011): whoever moves a row only names the cause and evidence on it; the
    trigger writes the history row and clears the two columns before the row is stored."""
    now = datetime.now(UTC)
    row, _ = await store.enqueue(
        NewCancellation("dropbox_sign", "default", "sr-by-hand", None, {}, {}, None, "h"), now
    )
    await db.execute(
        "UPDATE cancellations SET status = 'queued', transition_cause = 'retry_requested',"
        ' transition_evidence = \'{"by": "ops"}\', updated_at = $2 WHERE id = $1',
        row.id,
        now,
    )
    history = await db.fetch(
        "SELECT from_status, to_status, cause, evidence, at FROM cancellation_events"
        " WHERE cancellation_id = $1 ORDER BY id",
        row.id,
    )
    assert [(h["from_status"], h["to_status"], h["cause"]) for h in history] == [
        (None, "queued", "enqueued"),
        ("queued", "queued", "retry_requested"),
    ]
    assert history[1]["evidence"] == '{"by": "ops"}' and history[1]["at"] == now
    left = await db.fetchrow(
        "SELECT transition_cause, transition_evidence FROM cancellations WHERE id = $1", row.id
    )
    assert tuple(left) == (None, None)
    await db.execute("UPDATE cancellations SET metadata = '{\"x\": 1}' WHERE id = $1", row.id)
    assert (
        await db.fetchval(
            "SELECT count(*) FROM cancellation_events WHERE cancellation_id = $1", row.id
        )
        == 2
    ), "a change of other columns is no transition"


@pytest.mark.parametrize("settings_overrides", [{"api_tokens": f"{OPS_TOKEN}:enqueue+read+admin"}])
async def test_a_transition_the_database_refuses_is_a_500_logged_as_an_error(
    harness: Harness, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    """At the edge: were the table and TRANSITIONS to drift apart, the refused transition is
    the service's bug (500, ERROR with its traceback), never the client's (a 4xx), and the
    cancellation is left as it was."""
    created = await harness.enqueue("sr-drift", headers=AS_OPS)
    await db.execute("DELETE FROM cancellation_transitions WHERE cause = 'abandoned'")
    response = await harness.client.post(
        f"/v1/cancellations/{created['id']}/abandon", json={"reason": "drift"}, headers=AS_OPS
    )
    assert response.status == 500, await response.text()
    assert response.content_type == "application/problem+json"
    (logged,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert logged.exc_info is not None and logged.exc_info[0] is errors.IllegalTransition
    assert await db.fetchval("SELECT status FROM cancellations") == "queued"


async def test_a_confirmed_row_ends_when_it_was_confirmed(
    store: Store, db: asyncpg.Connection
) -> None:
    """/v1/stats's last_confirmed_at reads the newest confirmed row's updated_at (0015): a
    confirmed row whose confirmed_at differs from its updated_at is refused, by a bare
    UPDATE too, and the stored row keeps its times."""
    ident = await confirmed_row(store, "sr-ended")
    before = await db.fetchrow(
        "SELECT confirmed_at, updated_at FROM cancellations WHERE id = $1", ident
    )
    assert before["confirmed_at"] == before["updated_at"]
    for change in ("confirmed_at = confirmed_at - interval '1 second'", "updated_at = now()"):
        with pytest.raises(asyncpg.CheckViolationError, match="confirmed_at_is_the_end"):
            await db.execute(f"UPDATE cancellations SET {change} WHERE id = $1", ident)  # noqa: S608
    after = await db.fetchrow(
        "SELECT confirmed_at, updated_at FROM cancellations WHERE id = $1", ident
    )
    assert after == before
