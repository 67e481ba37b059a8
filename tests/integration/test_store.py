"""The store's contract with the schema: row shape, and events kept across an upgrade."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import orjson
import pytest

from orchestrator.domain import lifecycle
from orchestrator.domain.model import ConfirmedVia, Outcome, Settled, WebhookEvent
from orchestrator.store import db as store_db
from orchestrator.store import migrations
from orchestrator.store.repository import Cancellation, NewCancellation, Store, WebhookOutcome
from tests.conftest import _admin, with_database


async def test_cancellation_fields_are_the_table_columns_in_order(db: asyncpg.Connection) -> None:
    # Cancellation.from_record builds positionally from SELECT * and RETURNING *.
    columns = await db.fetch(
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_name = 'cancellations' ORDER BY ordinal_position"
    )
    assert [c["column_name"] for c in columns] == [f.name for f in dataclasses.fields(Cancellation)]


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


async def test_events_stored_before_0003_still_settle_a_later_enqueue(
    empty_dsn: str, tmp_path: Path
) -> None:
    """0003 moved the decision into the inbox; rows stored by 0002 get theirs from `effect`."""
    copy_migrations(tmp_path, upto=2)
    received = datetime(2026, 11, 1, tzinfo=UTC)
    conn = await asyncpg.connect(empty_dsn)
    try:
        assert await migrations.migrate(conn, tmp_path) == [1, 2]
        for resource_id, effect in [
            ("sr-old-canceled", {"outcome": "canceled", "ok": True, "evidence": {"e": 1}}),
            ("sr-old-signed", {"outcome": "completed", "ok": False, "evidence": {}}),
        ]:
            await conn.execute(
                "INSERT INTO webhook_inbox (provider, account, dedupe_key, resource_id,"
                " event_type, effect, payload, received_at)"
                " VALUES ('dropbox_sign', 'default', $1, $1, 'x', $2::jsonb, '{}', $3)",
                resource_id,
                orjson.dumps(effect).decode(),
                received,
            )
        assert await migrations.migrate(conn) == [
            m.version for m in migrations.discover() if m.version > 2
        ]
    finally:
        await conn.close()

    async with open_store(empty_dsn) as store:
        now = datetime.now(UTC)
        canceled, created = await store.enqueue(new("sr-old-canceled"), now)
        assert created
        assert (canceled.status, canceled.outcome, canceled.confirmed_via) == (
            "confirmed",
            "canceled",
            "webhook",
        )
        signed, _ = await store.enqueue(new("sr-old-signed"), now)
        assert (signed.status, signed.outcome, signed.confirmed_via) == (
            "failed",
            "completed",
            None,
        )
        assert signed.last_error is not None
        assert signed.last_error["code"] == "completed"
        assert signed.last_error["message"] == "the request is completed"
        history = await store.events(canceled.id)
        assert history is not None
        (event,) = [e for e in history if e.to_status == "confirmed"]
        assert event.cause == "webhook"
        assert event.evidence["e"] == 1
        assert isinstance(event.evidence["inbox_event_id"], int)


@pytest.fixture
async def store(dsn: str) -> AsyncIterator[Store]:
    async with open_store(dsn) as store:
        yield store


def canceled(resource_id: str, key: str) -> WebhookEvent:
    effect = Settled(Outcome.CANCELED, True, {"seen": key}, provider_state={"state": key})
    return WebhookEvent(
        "dropbox_sign", "default", resource_id, "signature_request_canceled", None, key, {}, effect
    )


async def test_a_settling_event_is_stored_once_and_linked_to_what_it_settled(
    store: Store, db: asyncpg.Connection
) -> None:
    now = datetime.now(UTC)
    open_one, _ = await store.enqueue(new("sr-open"), now)
    assert await store.record_webhook(canceled("sr-open", "e1"), now) is WebhookOutcome.APPLIED
    assert await store.record_webhook(canceled("sr-early", "e2"), now) is WebhookOutcome.STORED
    assert await store.record_webhook(canceled("sr-early", "e2"), now) is WebhookOutcome.DUPLICATE
    early, _ = await store.enqueue(new("sr-early"), now)

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
        settled = await store.get(cancellation.id)
        assert settled is not None
        assert (settled.status, settled.confirmed_via) == ("confirmed", "webhook")
        assert settled.provider_state == {"state": key}


async def test_counts_kept_by_the_0002_triggers_carry_over_to_terminal_counters(
    empty_dsn: str, tmp_path: Path
) -> None:
    """0004 drops the triggers: open statuses are counted live, terminal ones carry over."""
    copy_migrations(tmp_path, upto=3)
    await migrate(empty_dsn, tmp_path)
    async with open_store(empty_dsn) as store:
        now = datetime.now(UTC)
        rows = [(await store.enqueue(new(f"sr-count-{n}"), now))[0] for n in range(4)]
        done = lifecycle.settle(Settled(Outcome.CANCELED, True), ConfirmedVia.WEBHOOK, "test")
        await store.apply(rows[0], done, now, submitted=False)

        await migrate(empty_dsn)
        await store.apply(rows[1], done, now, submitted=False)
        stats = await store.stats(now)
        assert {k: stats[k] for k in ("total", "queued", "confirmed", "failed")} == {
            "total": 4,
            "queued": 2,
            "confirmed": 2,
            "failed": 0,
        }
