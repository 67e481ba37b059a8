"""Long polls are capped per instance (ORCH_MAX_LONG_POLLS): beyond it, 429 with Retry-After."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from orchestrator.web import keys
from tests.integration.conftest import Harness
from tests.integration.test_long_polling import until


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"max_long_polls": 2}


async def until_waiting(harness: Harness, count: int) -> None:
    service = harness.app[keys.SERVICE]
    await until(lambda: service.long_polls == count)


async def test_the_third_concurrent_waiter_gets_429_and_a_freed_place_is_taken_again(
    harness: Harness,
) -> None:
    first = await harness.enqueue("sr-poll-1")
    second = await harness.enqueue("sr-poll-2")
    polls = [
        asyncio.create_task(harness.client.get(f"/v1/cancellations/{c['id']}?wait=30"))
        for c in (first, second)
    ]
    try:
        await until_waiting(harness, 2)
        metrics = await (await harness.client.get("/metrics")).text()
        assert "orchestrator_long_polls_waiting 2.0" in metrics

        refused = await harness.client.get(f"/v1/cancellations/{first['id']}?wait=5")
        assert refused.status == 429
        assert refused.headers["Content-Type"] == "application/problem+json"
        assert int(refused.headers["Retry-After"]) > 0
        assert "ORCH_MAX_LONG_POLLS" in (await refused.json())["detail"]
        # Without ?wait nothing waits: a plain read is never refused by the cap.
        assert (await harness.client.get(f"/v1/cancellations/{first['id']}")).status == 200

        abandoned = await harness.client.post(
            f"/v1/cancellations/{first['id']}/abandon", json={"reason": "end the first poll"}
        )
        assert abandoned.status == 200
        assert (await polls[0]).status == 200  # the change ended the first wait
        await until_waiting(harness, 1)

        accepted = await harness.client.get(f"/v1/cancellations/{second['id']}?wait=0.2")
        assert accepted.status == 200
    finally:
        for poll in polls:
            poll.cancel()
        await asyncio.gather(*polls, return_exceptions=True)
    await until_waiting(harness, 0)
    metrics = await (await harness.client.get("/metrics")).text()
    assert "orchestrator_long_polls_waiting 0.0" in metrics
