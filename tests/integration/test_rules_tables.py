"""Postgres carries out the rules of domain/webhook_rules.py; it decides nothing itself.

Migration 0012 holds each rule as a table of every combination of its facts; the plpgsql
functions compute the facts and look the action up. These tests keep each table equal to
its Python function (as test_transitions_table.py does for cancellation_transitions), show
that the functions follow the table, and check the one fact that is a comparison of times at
its edge.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from orchestrator.domain import lifecycle
from orchestrator.domain.lifecycle import Policy
from orchestrator.domain.model import Outcome, Queued, Settled, Status, WebhookEvent
from orchestrator.store import db as store_db
from orchestrator.store.repository import NewCancellation, Store, WebhookOutcome
from tests import rules_sql

SKEW_S = 300
#: Whole seconds, so that a time one microsecond off survives the float event time.
NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


@pytest.fixture
async def store(dsn: str) -> AsyncIterator[Store]:
    pool = await store_db.create_pool(dsn, 2)
    try:
        yield Store(pool)
    finally:
        await pool.close()


@pytest.mark.parametrize(
    ("query", "columns", "rows"),
    [
        ("SELECT * FROM webhook_rules", rules_sql.WEBHOOK_COLUMNS, rules_sql.webhook_rows()),
        (
            "SELECT * FROM attempt_end_rules",
            rules_sql.ATTEMPT_END_COLUMNS,
            rules_sql.attempt_end_rows(),
        ),
        (
            "SELECT * FROM stored_event_rules",
            rules_sql.STORED_EVENT_COLUMNS,
            rules_sql.stored_event_rows(),
        ),
    ],
)
async def test_each_rules_table_is_its_python_function(
    db: asyncpg.Connection, query: str, columns: tuple[str, ...], rows: list[rules_sql.Row]
) -> None:
    """Every combination of facts, with the action the function gives it, and nothing else."""
    table = query.rsplit(" ", 1)[-1]
    in_db = {tuple(r[c] for c in columns) for r in await db.fetch(query)}
    in_code = set(rows)
    assert len(in_code) == len(rows)
    assert in_db - in_code == set(), f"in {table}, not what webhook_rules.py decides"
    assert in_code - in_db == set(), f"decided by webhook_rules.py, missing from {table}"


def new(resource_id: str) -> NewCancellation:
    return NewCancellation("dropbox_sign", "default", resource_id, None, {}, {}, None, "h")


def canceled(resource_id: str, key: str, at: datetime) -> WebhookEvent:
    effect = Settled(Outcome.CANCELED, True, {"seen": key})
    return WebhookEvent(
        "dropbox_sign",
        "default",
        resource_id,
        "signature_request_canceled",
        at.timestamp(),
        key,
        {},
        effect,
    )


async def awaiting(store: Store, resource_id: str) -> None:
    """A cancellation whose cancel call was first sent at NOW, awaiting its callback."""
    row, _ = await store.enqueue(new(resource_id), NOW)
    (sent,) = await store.claim_due(NOW, 10, "w", 90, {"dropbox_sign:default": None})
    queued = lifecycle.after_cancel(Queued(), lifecycle.Attempt(1, NOW), NOW, Policy())
    applied = await store.apply(sent, queued, NOW, submitted=True)
    assert applied is not None and applied.status is Status.AWAITING_CONFIRMATION
    assert applied.first_sent_at == NOW and row.id == applied.id


async def record(store: Store, event: WebhookEvent) -> WebhookOutcome:
    return (await store.record_webhook(event, NOW, skew_s=SKEW_S, settle=True)).outcome


async def test_an_event_exactly_at_the_first_send_minus_the_skew_settles(store: Store) -> None:
    """The age fact at its edge: `fresh` includes the first cancel call minus the skew; one
    microsecond earlier is `older`, which only asks for a check."""
    edge = NOW - timedelta(seconds=SKEW_S)
    await awaiting(store, "sr-edge")
    await awaiting(store, "sr-edge-older")
    assert await record(store, canceled("sr-edge", "at-edge", edge)) is WebhookOutcome.APPLIED
    older = canceled("sr-edge-older", "before-edge", edge - timedelta(microseconds=1))
    assert await record(store, older) is WebhookOutcome.CHECK


async def test_record_webhook_event_does_what_the_table_says(
    store: Store, db: asyncpg.Connection
) -> None:
    """Change one row and the function follows it: the decision is the table's (so the
    Python function's, which the test above keeps equal), not an IF chain's in plpgsql."""
    await awaiting(store, "sr-ruled")
    await db.execute(
        "UPDATE webhook_rules SET outcome = 'check', used = true, to_status = 'queued',"
        " cause = 'webhook_needs_check'"
        " WHERE target_status = 'awaiting_confirmation' AND settle_mode AND age = 'fresh'"
    )
    assert await record(store, canceled("sr-ruled", "fresh", NOW)) is WebhookOutcome.CHECK
    assert await db.fetchval("SELECT status FROM cancellations") == "queued"
