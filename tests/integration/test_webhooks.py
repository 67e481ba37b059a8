"""The Dropbox Sign webhook receiver over real HTTP: formats, acknowledgement, storage."""

from __future__ import annotations

import time

import asyncpg
import orjson
import pytest

from orchestrator.providers.dropbox_sign import ACK, event_hash
from tests.integration.conftest import Harness


def signed_event(
    key: str, event_type: str, resource_id: str | None, event_time: str | None = None
) -> bytes:
    event_time = event_time or str(int(time.time()))
    payload: dict[str, object] = {
        "event": {
            "event_type": event_type,
            "event_time": event_time,
            "event_hash": event_hash(key, event_time, event_type),
            "event_metadata": {"reported_for_account_id": "acct-1"},
        }
    }
    if resource_id is not None:
        payload["signature_request"] = {"signature_request_id": resource_id, "is_complete": False}
    return orjson.dumps(payload)


async def test_json_body_callbacks_confirm_too(harness: Harness) -> None:
    harness.sim.configure({"dropbox_sign": {"callback_format": "json"}})
    created = await harness.enqueue("sr-json")
    await harness.dispatch()
    row = await harness.get(created["id"])
    # Understood: it prompted the check that confirmed it (DROPBOX_SIGN_CONFIRM_BY=status).
    assert (row["status"], row["confirmed_via"]) == ("confirmed", "reconciliation")


@pytest.mark.parametrize("path", ["/webhooks/dropbox_sign", "/webhooks/hellosign"])
async def test_callback_test_and_unknown_events_are_acknowledged_and_stored(
    harness: Harness, db: asyncpg.Connection, path: str
) -> None:
    key = harness.sim.dropbox_sign.settings.api_key
    for event_type, resource in [
        ("callback_test", None),
        ("signature_request_viewed", "sr-viewed"),
        ("some_future_event", "sr-viewed"),
    ]:
        response = await harness.client.post(
            path,
            data=signed_event(key, event_type, resource),
            headers={"Content-Type": "application/json"},
        )
        assert response.status == 200
        assert await response.text() == ACK
    rows = await db.fetch("SELECT event_type, effect FROM webhook_inbox ORDER BY id")
    assert [r["event_type"] for r in rows] == [
        "callback_test",
        "signature_request_viewed",
        "some_future_event",
    ]
    assert all(r["effect"] is None for r in rows)


@pytest.mark.parametrize("event_time", ["1e20", "nan", "-5"])
async def test_a_signed_callback_with_an_unreadable_time_is_stored_not_a_500(
    harness: Harness, db: asyncpg.Connection, event_time: str
) -> None:
    key = harness.sim.dropbox_sign.settings.api_key
    response = await harness.client.post(
        "/webhooks/dropbox_sign",
        data=signed_event(key, "signature_request_canceled", "sr-odd-time", event_time),
        headers={"Content-Type": "application/json"},
    )
    assert response.status == 200, await response.text()
    stored = await db.fetchval(
        "SELECT count(*) FROM webhook_inbox WHERE resource_id = 'sr-odd-time'"
    )
    assert stored == 1


async def test_viewed_event_does_not_settle_a_later_cancellation(harness: Harness) -> None:
    key = harness.sim.dropbox_sign.settings.api_key
    await harness.client.post(
        "/webhooks/dropbox_sign",
        data=signed_event(key, "signature_request_viewed", "sr-view2"),
        headers={"Content-Type": "application/json"},
    )
    created = await harness.enqueue("sr-view2")
    assert created["status"] == "queued"


async def test_forged_callback_changes_nothing(harness: Harness, db: asyncpg.Connection) -> None:
    harness.sim.configure({"dropbox_sign": {"drop_callback_rate": 1.0}})
    created = await harness.enqueue("sr-forged")
    await harness.dispatch()
    before = await harness.get(created["id"])
    response = await harness.client.post(
        "/webhooks/dropbox_sign",
        data=signed_event("not-the-key", "signature_request_canceled", "sr-forged"),
        headers={"Content-Type": "application/json"},
    )
    assert response.status == 401
    assert response.content_type == "application/problem+json"
    assert await harness.get(created["id"]) == before
    assert await db.fetchval("SELECT count(*) FROM webhook_inbox") == 0
