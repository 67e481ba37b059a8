"""Bearer tokens guard /v1; health checks and provider webhooks stay open."""

from __future__ import annotations

from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest

from orchestrator.providers.dropbox_sign import event_hash
from tests.integration.conftest import Harness

BODY = {"provider": "dropbox_sign", "resource_id": "sr-1"}


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"api_tokens": "t1,t2"}


async def assert_unauthorized(response: aiohttp.ClientResponse) -> None:
    text = await response.text()
    assert response.status == 401, text
    assert response.content_type == "application/problem+json"
    assert response.headers.get("WWW-Authenticate", "").startswith("Bearer")
    problem = orjson.loads(text)
    assert problem["status"] == 401
    assert {"type", "title", "detail"} <= set(problem)


BAD_AUTHORIZATIONS: list[tuple[str, str | None]] = [
    ("no header", None),
    ("a wrong token", "Bearer wrong"),
    ("a token that only starts like one", "Bearer t1x"),
    ("an empty token", "Bearer "),
    ("the Basic scheme", "Basic dDE6"),
    ("no scheme", "t1"),
]


async def test_v1_refuses_requests_without_a_valid_token(
    harness: Harness, db: asyncpg.Connection, subtests: pytest.Subtests
) -> None:
    for case, authorization in BAD_AUTHORIZATIONS:
        with subtests.test(case):
            headers = {"Authorization": authorization} if authorization is not None else {}
            await assert_unauthorized(
                await harness.client.post("/v1/cancellations", json=BODY, headers=headers)
            )
            await assert_unauthorized(await harness.client.get("/v1/stats", headers=headers))
            await assert_unauthorized(
                await harness.client.get("/v1/cancellations", headers=headers)
            )
            assert await db.fetchval("SELECT count(*) FROM cancellations") == 0


async def test_either_token_is_accepted(harness: Harness, db: asyncpg.Connection) -> None:
    for n, token in enumerate(["t1", "t2"], start=1):
        auth = {"Authorization": f"Bearer {token}"}
        body = {**BODY, "resource_id": f"sr-{token}"}
        response = await harness.client.post("/v1/cancellations", json=body, headers=auth)
        assert response.status == 202, await response.text()
        created = await response.json()

        response = await harness.client.get(f"/v1/cancellations/{created['id']}", headers=auth)
        assert response.status == 200
        response = await harness.client.get("/v1/stats", headers=auth)
        assert (await response.json())["total"] == n
    assert await db.fetchval("SELECT count(*) FROM cancellations") == 2


async def test_health_and_webhooks_need_no_token(harness: Harness) -> None:
    response = await harness.client.get("/healthz")
    assert response.status == 200

    key = harness.sim.dropbox_sign.settings.api_key
    event_time, event_type = "1714559990", "callback_test"
    callback = {
        "event": {
            "event_time": event_time,
            "event_type": event_type,
            "event_hash": event_hash(key, event_time, event_type),
        }
    }
    form = aiohttp.FormData(default_to_multipart=True)
    form.add_field("json", orjson.dumps(callback).decode())
    response = await harness.client.post("/webhooks/dropbox_sign", data=form)
    assert response.status == 200, await response.text()
    assert await response.text() == "Hello API Event Received"
