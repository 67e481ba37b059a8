"""Truto's webhook, in the form its documentation writes created_at (`2024-09-10 12:00:00`,
UTC without a zone), posted over HTTP to the service while the process's zone is New York,
Tokyo or UTC: a fresh one is taken, one an hour old refused (tests/unit/test_provider_times.py
has the table)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, timedelta

import orjson
import pytest

from orchestrator.simulator.truto import signature as truto_signature
from tests.integration.conftest import Harness


@pytest.fixture(params=["America/New_York", "Asia/Tokyo", "UTC"])
def host_zone(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("TZ", request.param)
    time.tzset()
    try:
        yield request.param
    finally:
        monkeypatch.undo()
        time.tzset()


async def post_truto(harness: Harness, created_at: str) -> tuple[int, str]:
    body = orjson.dumps(
        {
            "id": str(uuid.uuid4()),
            "event": "record:updated",
            "payload": {"id": "wf-zone"},
            "created_at": created_at,
        }
    )
    secret = harness.sim.truto.settings.webhook_secret
    assert secret is not None
    response = await harness.client.post(
        "/webhooks/truto",
        data=body,
        headers={
            "Content-Type": "application/json",
            "X-Truto-Signature": truto_signature(secret, body),
        },
    )
    return response.status, await response.text()


async def test_a_truto_webhook_in_its_documented_form_is_read_as_utc(
    harness: Harness, host_zone: str
) -> None:
    now = harness.clock.now().astimezone(UTC)
    documented = "%Y-%m-%d %H:%M:%S"
    status, answer = await post_truto(harness, now.strftime(documented))
    assert status == 200, answer

    status, answer = await post_truto(harness, (now - timedelta(hours=1)).strftime(documented))
    assert 400 <= status < 500, answer
    assert "older than" in answer
