"""The store's contract with the schema: row shape, and events kept across an upgrade."""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import orjson
import pytest

from orchestrator.domain import lifecycle
from orchestrator.domain.lifecycle import Cause, Policy
from orchestrator.domain.model import (
    Cancellation,
    ConfirmedVia,
    Outcome,
    Queued,
    Settled,
    Status,
    WebhookEvent,
)
from orchestrator.store import db as store_db
from orchestrator.store import migrations
from orchestrator.store.repository import NewCancellation, Store, WebhookOutcome
from tests.conftest import _admin, with_database


async def test_cancellation_fields_are_the_table_columns(db: asyncpg.Connection) -> None:
    """Cancellation.from_row maps by column name: every column has its field and back."""
    columns = await db.fetch(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'cancellations'"
    )
    assert {c["column_name"] for c in columns} == {f.name for f in dataclasses.fields(Cancellation)}


@pytest.fixture
async def empty_dsn(pg_server: str) -> AsyncIterator[str]:
    name = "upgrade_from_0002"
    await _admin(
        pg_server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"CREATE DATABASE {name}"
    )
    try:
        yield with_database(pg_server, name)
    finally:
        await _admin(pg_server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


async def migrate(dsn: str, directory: Path = migrations.DEFAULT_DIR) -> list[int]:
    conn = await asyncpg.connect(dsn)
    try:
        return await migrations.migrate(conn, directory)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def open_store(dsn: str) -> AsyncIterator[Store]:
    pool = await store_db.create_pool(dsn, 2)
    try:
        yield Store(pool)
    finally:
        await pool.close()


def copy_migrations(directory: Path, upto: int) -> None:
    for migration in migrations.discover():
        if migration.version <= upto:
            (directory / f"{migration.version:04d}_{migration.name}.sql").write_text(migration.sql)


def new(resource_id: str) -> NewCancellation:
    return NewCancellation("dropbox_sign", "default", resource_id, None, {}, {}, None, "h")


async def test_events_stored_before_0005_make_a_later_enqueue_check_first(
    empty_dsn: str, tmp_path: Path
) -> None:
    """0005 stops stored events from settling a later enqueue on their own: events already
    waiting in the inbox become evidence, and the first attempt checks the status."""
    copy_migrations(tmp_path, upto=4)
    received = datetime(2026, 11, 1, tzinfo=UTC)
    conn = await asyncpg.connect(empty_dsn)
    try:
        assert await migrations.migrate(conn, tmp_path) == [1, 2, 3, 4]
        await conn.execute(
            "INSERT INTO webhook_inbox (provider, account, dedupe_key, resource_id,"
            " event_type, effect, payload, received_at)"
            " VALUES ('dropbox_sign', 'default', 'k', 'sr-old', 'signature_request_canceled',"
            " $1::jsonb, '{}', $2)",
            orjson.dumps({"outcome": "canceled", "ok": True, "evidence": {}}).decode(),
            received,
        )
        assert await migrations.migrate(conn) == [
            m.version for m in migrations.discover() if m.version > 4
        ]
    finally:
        await conn.close()

    async with open_store(empty_dsn) as store:
        row, created = await store.enqueue(new("sr-old"), datetime.now(UTC))
        assert created
        assert (row.status, row.needs_check) == (Status.QUEUED, True)
        history = await store.events(row.id)
        assert history is not None
        (enqueued,) = history
        assert [e["event_type"] for e in enqueued.evidence["stored_events"]] == [
            "signature_request_canceled"
        ]


@pytest.fixture
async def store(dsn: str) -> AsyncIterator[Store]:
    async with open_store(dsn) as store:
        yield store


def canceled(resource_id: str, key: str, at: datetime) -> WebhookEvent:
    effect = Settled(Outcome.CANCELED, True, {"seen": key}, provider_state={"state": key})
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


async def record(store: Store, event: WebhookEvent, now: datetime) -> WebhookOutcome:
    return (await store.record_webhook(event, now, skew_s=300, settle=True)).outcome


async def test_a_settling_event_is_stored_once_and_linked_to_what_it_used(
    store: Store, db: asyncpg.Connection
) -> None:
    now = datetime.now(UTC)
    open_one, _ = await store.enqueue(new("sr-open"), now)
    await store.claim_due(now, 10, "w", 90, {"dropbox_sign:default": None})
    assert await record(store, canceled("sr-open", "e1", now), now) is WebhookOutcome.APPLIED
    assert await record(store, canceled("sr-early", "e2", now), now) is WebhookOutcome.STORED
    assert await record(store, canceled("sr-early", "e2", now), now) is WebhookOutcome.DUPLICATE
    early, _ = await store.enqueue(new("sr-early"), now)
    assert (early.status, early.needs_check) == (Status.QUEUED, True)

    inbox = {
        r["dedupe_key"]: r
        for r in await db.fetch(
            "SELECT dedupe_key, processed_at, cancellation_id FROM webhook_inbox"
        )
    }
    assert set(inbox) == {"e1", "e2"}
    for key, cancellation in [("e1", open_one), ("e2", early)]:
        assert inbox[key]["cancellation_id"] == cancellation.id
        assert inbox[key]["processed_at"] is not None
    settled = await store.get(open_one.id)
    assert settled is not None
    assert (settled.status, settled.confirmed_via) == ("confirmed", "webhook")
    assert settled.provider_state == {"state": "e1"}


async def test_an_event_older_than_the_first_cancel_call_only_asks_for_a_check(
    store: Store,
) -> None:
    """The replay defence: event_hash does not cover the request id, so a genuine event
    re-posted for another request must not settle it if it predates that request's cancel."""
    now = datetime.now(UTC)
    row, _ = await store.enqueue(new("sr-target"), now)
    await store.claim_due(now, 10, "w", 90, {"dropbox_sign:default": None})
    old = canceled("sr-target", "replayed", now - timedelta(seconds=301))
    # Being sent: left pending; the attempt's own write makes the check due (0009).
    assert await record(store, old, now) is WebhookOutcome.COALESCED
    sent = await store.get(row.id)
    assert sent is not None and sent.status is Status.SENDING
    checked = await store.apply(
        sent,
        lifecycle.after_cancel(Queued(), lifecycle.Attempt(1, now), now, Policy()),
        now,
        submitted=True,
    )
    assert checked is not None
    assert (checked.status, checked.needs_check) == (Status.QUEUED, True)
    assert checked.next_attempt_at == now
    old_again = canceled("sr-target", "replayed-again", now - timedelta(seconds=301))
    assert await record(store, old_again, now) is WebhookOutcome.COALESCED  # already due
    fresh = canceled("sr-target", "fresh", now - timedelta(seconds=299))
    await store.claim_due(now, 10, "w", 90, {"dropbox_sign:default": None})
    assert await record(store, fresh, now) is WebhookOutcome.APPLIED


async def test_counts_kept_by_the_0002_triggers_carry_over_to_terminal_counters(
    empty_dsn: str, tmp_path: Path
) -> None:
    """0004 drops the triggers: open statuses are counted live, terminal ones carry over."""
    copy_migrations(tmp_path, upto=3)
    await migrate(empty_dsn, tmp_path)
    now = datetime.now(UTC)
    confirm = '{"status": "confirmed", "cause": "webhook"}'
    conn = await asyncpg.connect(empty_dsn)
    try:  # the schema of 0003, written by its own functions
        ids = []
        for n in range(4):
            ident = uuid.uuid4()
            await conn.execute(
                "SELECT result FROM enqueue_cancellation($1, 'dropbox_sign', 'default', $2,"
                " NULL, '{}', '{}', NULL, 'h', $3)",
                ident,
                f"sr-count-{n}",
                now,
            )
            ids.append(ident)
        await conn.execute(
            "SELECT id FROM apply_decision($1, 0, 'queued', $2, $3::jsonb, false)",
            ids[0],
            now,
            confirm,
        )
    finally:
        await conn.close()
    await migrate(empty_dsn)
    async with open_store(empty_dsn) as store:
        second = await store.get(ids[1])
        assert second is not None
        done = lifecycle.settle(
            Settled(Outcome.CANCELED, True), ConfirmedVia.WEBHOOK, Cause.WEBHOOK
        )
        await store.apply(second, done, now, submitted=False)
        stats = await store.stats(now)
        assert {k: stats[k] for k in ("total", "queued", "confirmed", "failed")} == {
            "total": 4,
            "queued": 2,
            "confirmed": 2,
            "failed": 0,
        }
