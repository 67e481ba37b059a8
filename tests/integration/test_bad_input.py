"""Bad input over real HTTP: the right 4xx, as application/problem+json, and nothing changed.

Each family of cases shares one service (a database clone costs more than all its cases
together); every case is its own subtest and checks that the counts did not move.
"""

from __future__ import annotations

import io
import uuid
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest

from orchestrator.providers.dropbox_sign import event_hash
from tests.integration.conftest import Harness

PROBLEM = "application/problem+json"
ONE_MIB = 1_048_576
JSON = "application/json"


async def problem(response: aiohttp.ClientResponse, status: int) -> dict[str, Any]:
    """Assert an RFC 9457 problem with this status and return its body."""
    text = await response.text()
    assert response.status == status, text
    assert response.content_type == PROBLEM, (response.content_type, text)
    body: dict[str, Any] = orjson.loads(text)
    assert {"type", "title", "status", "detail"} <= set(body), body
    assert body["status"] == status
    for member in ("type", "title", "detail"):
        assert isinstance(body[member], str), body
        assert body[member], body
    return body


def names_field(body: dict[str, Any], field: str) -> bool:
    """Whether the problem's `errors` list the field, or a member of it (metadata.a)."""
    named = [error["field"] for error in body.get("errors", [])]
    return any(name == field or name.startswith(field + ".") for name in named)


async def counts(harness: Harness, db: asyncpg.Connection) -> dict[str, int]:
    response = await harness.client.get("/v1/stats")
    assert response.status == 200
    stats = await response.json()
    return {
        "stats_total": stats["total"],
        "cancellations": await db.fetchval("SELECT count(*) FROM cancellations"),
        "events": await db.fetchval("SELECT count(*) FROM cancellation_events"),
        "inbox": await db.fetchval("SELECT count(*) FROM webhook_inbox"),
    }


NOTHING = {"stats_total": 0, "cancellations": 0, "events": 0, "inbox": 0}
VALID: dict[str, Any] = {"provider": "dropbox_sign", "resource_id": "sr-1"}


def body(**changes: Any) -> bytes:
    """VALID with `changes`; a value of `...` removes the field."""
    data = {**VALID, **changes}
    return orjson.dumps({k: v for k, v in data.items() if v is not ...})


# --- POST /v1/cancellations -----------------------------------------------------------

# (case, body, content type, status, the field the problem must name)
BAD_ENQUEUES: list[tuple[str, bytes, str, int, str | None]] = [
    ("unknown field", body(colour="red"), JSON, 422, "colour"),
    ("resource_id: 123", body(resource_id=123), JSON, 422, "resource_id"),
    ('metadata: "x"', body(metadata="x"), JSON, 422, "metadata"),
    ("params: [1]", body(params=[1]), JSON, 422, "params"),
    ("provider: 5", body(provider=5), JSON, 422, "provider"),
    ("missing resource_id", body(resource_id=...), JSON, 422, "resource_id"),
    ("missing provider", body(provider=...), JSON, 422, "provider"),
    ("empty resource_id", body(resource_id=""), JSON, 422, "resource_id"),
    ("resource_id with a space", body(resource_id="sr 1"), JSON, 422, "resource_id"),
    ("resource_id too long", body(resource_id="x" * 257), JSON, 422, "resource_id"),
    ("unknown provider", body(provider="docusign"), JSON, 422, "provider"),
    ("unknown account", body(account="nobody"), JSON, 422, "account"),
    ("malformed account", body(account="bad name!"), JSON, 422, "account"),
    ("reason too long", body(reason="x" * 2001), JSON, 422, "reason"),
    ("params dropbox_sign does not take", body(params={"a": 1}), JSON, 422, "params"),
    ("a NUL character in reason", body(reason="a\x00b"), JSON, 422, "reason"),
    ("a NUL character in metadata", body(metadata={"a": "x\x00"}), JSON, 422, "metadata"),
    (
        "an integer beyond 64 bits in metadata",
        b'{"provider": "dropbox_sign", "resource_id": "sr-1", "metadata": {"n": 1'
        + b"0" * 30
        + b"}}",
        JSON,
        422,
        "metadata",
    ),
    (
        "a float beyond the 64-bit integer range in metadata",
        b'{"provider": "dropbox_sign", "resource_id": "sr-1", "metadata": {"n": [1e30]}}',
        JSON,
        422,
        "metadata",
    ),
    ("a JSON array", orjson.dumps([VALID]), JSON, 422, "body"),
    ("JSON null", b"null", JSON, 422, "body"),
    ("a JSON string", b'"sr-1"', JSON, 422, "body"),
    ("malformed JSON", b'{"provider": "dropbox_sign",', JSON, 400, None),
    ("an empty body", b"", JSON, 400, None),
    ("bytes that are not UTF-8", b'{"provider": "\xff"}', JSON, 400, None),
    ("text/plain", body(), "text/plain", 415, None),
    (
        "a form",
        b"provider=dropbox_sign&resource_id=sr-1",
        "application/x-www-form-urlencoded",
        415,
        None,
    ),
]


async def test_bad_enqueues_are_refused_and_store_nothing(
    harness: Harness, db: asyncpg.Connection, subtests: pytest.Subtests
) -> None:
    for case, payload, content_type, status, field in BAD_ENQUEUES:
        with subtests.test(case):
            response = await harness.client.post(
                "/v1/cancellations", data=payload, headers={"Content-Type": content_type}
            )
            found = await problem(response, status)
            if field is not None:
                assert names_field(found, field), found
                assert field in found["detail"], found
            assert await counts(harness, db) == NOTHING


async def test_a_body_over_one_mib_is_413(harness: Harness, db: asyncpg.Connection) -> None:
    oversized = body(metadata={"blob": "x" * ONE_MIB})
    response = await harness.client.post(
        "/v1/cancellations", data=io.BytesIO(oversized), headers={"Content-Type": JSON}
    )
    await problem(response, 413)
    assert await counts(harness, db) == NOTHING

    # The control: just under the limit, the same request is accepted.
    padding = ONE_MIB - len(body(metadata={"blob": ""})) - 1
    response = await harness.client.post(
        "/v1/cancellations",
        data=io.BytesIO(body(metadata={"blob": "x" * padding})),
        headers={"Content-Type": JSON},
    )
    assert response.status == 202, await response.text()


async def test_bad_idempotency_keys_are_422(
    harness: Harness, db: asyncpg.Connection, subtests: pytest.Subtests
) -> None:
    for case, key in [("non-ASCII", "clé-ü"), ("300 characters", "k" * 300), ("a space", "a b")]:
        with subtests.test(case):
            response = await harness.client.post(
                "/v1/cancellations", json=VALID, headers={"Idempotency-Key": key}
            )
            found = await problem(response, 422)
            assert names_field(found, "Idempotency-Key"), found
            assert await counts(harness, db) == NOTHING


async def test_an_idempotency_key_reused_with_another_body_is_409(
    harness: Harness, db: asyncpg.Connection, subtests: pytest.Subtests
) -> None:
    headers = {"Idempotency-Key": "order-42"}
    first = await harness.enqueue("sr-1", headers=headers)
    before = await counts(harness, db)
    assert before == {**NOTHING, "stats_total": 1, "cancellations": 1, "events": 1}

    others = [
        ("another resource", {**VALID, "resource_id": "sr-2"}),
        ("the same resource with a reason", {**VALID, "reason": "changed my mind"}),
    ]
    for case, second in others:
        with subtests.test(case):
            response = await harness.client.post("/v1/cancellations", json=second, headers=headers)
            found = await problem(response, 409)
            assert found["cancellation_id"] == first["id"]
            assert await harness.get(first["id"]) == first
            assert await counts(harness, db) == before

    # The same key with the same body is a replay: the first answer again, nothing new.
    assert await harness.enqueue("sr-1", headers=headers, expect=200) == first
    assert await counts(harness, db) == before


# --- reads, routes and methods --------------------------------------------------------

UNKNOWN = str(uuid.UUID(int=42))

# (method, path, status, the field the problem must name)
BAD_READS: list[tuple[str, str, int, str | None]] = [
    ("GET", "/v1/cancellations/not-a-uuid", 404, None),
    ("GET", "/v1/cancellations/not-a-uuid/events", 404, None),
    ("GET", f"/v1/cancellations/{UNKNOWN}", 404, None),
    ("GET", f"/v1/cancellations/{UNKNOWN}/events", 404, None),
    ("GET", "/v1/cancellations?status=bogus", 422, "status"),
    ("GET", "/v1/cancellations?limit=0", 422, "limit"),
    ("GET", "/v1/cancellations?limit=1000", 422, "limit"),
    ("GET", "/v1/cancellations?limit=ten", 422, "limit"),
    ("GET", "/v1/cancellations?after=garbage", 422, "after"),
    ("GET", f"/v1/cancellations/{UNKNOWN}/events?after=garbage", 422, "after"),
    ("GET", f"/v1/cancellations/{UNKNOWN}/events?after=-1", 422, "after"),
    ("GET", f"/v1/cancellations/{UNKNOWN}/events?limit=0", 422, "limit"),
    ("GET", f"/v1/cancellations/{UNKNOWN}/events?limit=201", 422, "limit"),
    ("GET", f"/v1/cancellations/{UNKNOWN}/events?colour=red", 422, "colour"),
    ("GET", "/v1/cancellations?resource_id=a%20b", 422, "resource_id"),
    ("GET", "/v1/cancellations?colour=red", 422, "colour"),
    ("GET", "/v1/cancellations?provider=%00", 422, "provider"),
    ("GET", "/v1/nothing-here", 404, None),
    ("GET", "/nothing-here", 404, None),
    ("DELETE", "/v1/cancellations", 405, None),
    ("PUT", f"/v1/cancellations/{UNKNOWN}", 405, None),
    ("GET", "/webhooks/dropbox_sign", 405, None),
    ("POST", "/webhooks/nobody", 404, None),
]


async def test_bad_reads_are_problems_and_change_nothing(
    harness: Harness, db: asyncpg.Connection, subtests: pytest.Subtests
) -> None:
    existing = await harness.enqueue("sr-existing")
    before = await counts(harness, db)
    for method, path, status, field in BAD_READS:
        with subtests.test(f"{method} {path}"):
            response = await harness.client.request(method, path)
            found = await problem(response, status)
            if field is not None:
                assert names_field(found, field), found
            if status == 405:
                assert response.headers.get("Allow"), "a 405 names the methods allowed"
            assert await counts(harness, db) == before
            assert await harness.get(existing["id"]) == existing


# --- webhooks -------------------------------------------------------------------------


def canceled_callback(resource_id: str, key: str) -> aiohttp.FormData:
    event_time = "1714559990"
    event_type = "signature_request_canceled"
    payload = {
        "event": {
            "event_time": event_time,
            "event_type": event_type,
            "event_hash": event_hash(key, event_time, event_type),
        },
        "signature_request": {"signature_request_id": resource_id},
    }
    form = aiohttp.FormData(default_to_multipart=True)
    form.add_field("json", orjson.dumps(payload).decode())
    return form


async def test_a_webhook_with_a_bad_hash_is_401_and_changes_nothing(
    harness: Harness, db: asyncpg.Connection
) -> None:
    created = await harness.enqueue("sr-1")
    before = await counts(harness, db)
    response = await harness.client.post(
        "/webhooks/dropbox_sign", data=canceled_callback("sr-1", "not-the-api-key")
    )
    await problem(response, 401)
    assert await db.fetchval("SELECT count(*) FROM webhook_inbox") == 0
    assert await counts(harness, db) == before
    assert await harness.get(created["id"]) == created
    assert [e["cause"] for e in await harness.events(created["id"])] == ["enqueued"]

    # The control: only the hash differs, and this delivery does settle the cancellation.
    key = harness.sim.dropbox_sign.settings.api_key
    response = await harness.client.post(
        "/webhooks/dropbox_sign", data=canceled_callback("sr-1", key)
    )
    assert response.status == 200, await response.text()
    assert await db.fetchval("SELECT count(*) FROM webhook_inbox") == 1
    # Its cancel was never sent, so the event cannot settle it: it asks for a status check.
    assert [e["cause"] for e in await harness.events(created["id"])] == [
        "enqueued",
        "webhook_needs_check",
    ]


async def test_a_verified_callback_with_a_nul_in_its_payload_is_stored(
    harness: Harness, db: asyncpg.Connection
) -> None:
    """Provider content is not ours to refuse: a 5xx would only make Dropbox Sign redeliver
    the same event for days."""
    key = harness.sim.dropbox_sign.settings.api_key
    event_time, event_type = "1714559990", "signature_request_viewed"
    payload = {
        "event": {
            "event_time": event_time,
            "event_type": event_type,
            "event_hash": event_hash(key, event_time, event_type),
        },
        "signature_request": {"signature_request_id": "sr-1", "title": "Lease\x00 2024"},
    }
    form = aiohttp.FormData(default_to_multipart=True)
    form.add_field("json", orjson.dumps(payload).decode())
    response = await harness.client.post("/webhooks/dropbox_sign", data=form)
    assert response.status == 200, await response.text()
    assert await db.fetchval("SELECT count(*) FROM webhook_inbox") == 1


BAD_WEBHOOKS: list[tuple[str, bytes, str, int]] = [
    ("over the size limit", b"x" * (ONE_MIB + 1), JSON, 413),
    ("malformed JSON", b"{not json", JSON, 400),
    ("text/plain", b"json=%7B%7D", "text/plain", 415),
    ("broken multipart", b"--b\r\n\r\n{}\r\n", "multipart/form-data; boundary=b", 400),
    ("no event", b'{"signature_request": {}}', JSON, 400),
]


async def test_bad_webhooks_are_refused_and_store_nothing(
    harness: Harness, db: asyncpg.Connection, subtests: pytest.Subtests
) -> None:
    created = await harness.enqueue("sr-1")
    before = await counts(harness, db)
    for case, data, content_type, status in BAD_WEBHOOKS:
        with subtests.test(case):
            response = await harness.client.post(
                "/webhooks/dropbox_sign",
                data=io.BytesIO(data),
                headers={"Content-Type": content_type},
            )
            await problem(response, status)
            assert await counts(harness, db) == before
            assert await harness.get(created["id"]) == created
