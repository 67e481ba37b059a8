"""POST /v1/cancellations/batch: one answer per item, in order; a bad item sinks nothing."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from tests.integration.conftest import Harness

PATH = "/v1/cancellations/batch"


def item(resource_id: str, **fields: Any) -> dict[str, Any]:
    return {"provider": "dropbox_sign", "resource_id": resource_id, **fields}


async def post_batch(harness: Harness, items: Any) -> list[dict[str, Any]]:
    response = await harness.client.post(PATH, json={"items": items})
    body = await response.json()
    assert response.status == 207, body
    results: list[dict[str, Any]] = body["results"]
    assert len(results) == len(items)
    return results


async def test_each_item_gets_its_own_status_in_order(
    harness: Harness, db: asyncpg.Connection
) -> None:
    items: list[Any] = [
        item("sr-a"),
        item("sr-a"),  # the same request again: the open cancellation answers it
        item(""),
        item("sr-k", idempotency_key="key-1"),
        item("sr-other", idempotency_key="key-1"),  # the key, reused for another body
        "not an object",
        item("sr-b", account="nowhere"),
        item("sr-c", params={"x": 1}),
        item("sr-d", colour="red"),
        item("sr-e", idempotency_key=""),
        {"provider": "acme", "resource_id": "sr-f"},
        item("sr-g", callback_url="http://127.0.0.1:9/done"),  # no ORCH_CALLBACK_SECRET here
    ]
    results = await post_batch(harness, items)
    assert [r["status"] for r in results] == [
        *(202, 200, 422, 202, 409, 422, 422, 422, 422, 422, 422, 422)
    ]

    assert results[1]["cancellation"]["id"] == results[0]["cancellation"]["id"]
    reused = results[4]
    assert reused["cancellation"]["id"] == results[3]["cancellation"]["id"]
    assert reused["problem"]["status"] == 409
    assert "items[4].idempotency_key" in reused["problem"]["detail"]

    fields = {
        2: ["items[2].resource_id"],
        5: ["items[5]"],
        6: ["items[6].account"],
        7: ["items[7].params"],
        8: ["items[8].colour"],
        9: ["items[9].idempotency_key"],
        10: ["items[10].provider"],
        11: ["items[11].callback_url"],
    }
    for index, expected in fields.items():
        problem = results[index]["problem"]
        assert problem["type"] == "/problems/invalid-request", problem
        assert [e["field"] for e in problem["errors"]] == expected, problem
        assert "cancellation" not in results[index]
    assert await db.fetchval("SELECT count(*) FROM cancellations") == 2

    assert await harness.dispatch() == 2
    for result in (results[0], results[3]):
        assert (await harness.get(result["cancellation"]["id"]))["status"] == "confirmed"


async def test_an_item_key_is_the_idempotency_key_header_of_a_single_enqueue(
    harness: Harness,
) -> None:
    single = await harness.enqueue(
        "sr-single", headers={"Idempotency-Key": "shared"}, reason="r", metadata={"n": 1}
    )
    same = item("sr-single", reason="r", metadata={"n": 1}, idempotency_key="shared")
    (result,) = await post_batch(harness, [same])
    assert result["status"] == 200
    assert result["cancellation"]["id"] == single["id"]
    (result,) = await post_batch(harness, [{**same, "reason": "another"}])
    assert result["status"] == 409
    assert result["cancellation"]["id"] == single["id"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"items": []}, "items"),
        ({"items": [item(f"sr-{n}") for n in range(1001)]}, "items"),
        ({"items": {"a": 1}}, "items"),
        ({}, "items"),
        ({"items": [item("sr-1")], "more": 1}, "more"),
    ],
)
async def test_a_batch_out_of_shape_is_refused_whole(
    harness: Harness, db: asyncpg.Connection, body: dict[str, Any], field: str
) -> None:
    response = await harness.client.post(PATH, json=body)
    assert response.status == 422
    problem = await response.json()
    assert [e["field"] for e in problem["errors"]] == [field]
    assert await db.fetchval("SELECT count(*) FROM cancellations") == 0


async def test_a_thousand_items_take_a_few_transactions_not_one_each(
    harness: Harness, db: asyncpg.Connection
) -> None:
    results = await post_batch(harness, [item(f"sr-{n:04}") for n in range(1000)])
    assert {r["status"] for r in results} == {202}
    assert [r["cancellation"]["resource_id"] for r in results] == [
        f"sr-{n:04}" for n in range(1000)
    ]
    assert await db.fetchval("SELECT count(*) FROM cancellations") == 1000
    # Rows written by one transaction share its id (xmin); a request's row is never updated.
    transactions = await db.fetchval("SELECT count(DISTINCT xmin::text) FROM cancellation_requests")
    assert 1 <= transactions <= 4


async def test_concurrent_batches_over_the_same_requests_neither_deadlock_nor_duplicate(
    harness: Harness, db: asyncpg.Connection
) -> None:
    forward = [item(f"sr-{n:03}") for n in range(300)]
    backward = list(reversed(forward))
    async with asyncio.timeout(60):
        first, second = await asyncio.gather(
            post_batch(harness, forward), post_batch(harness, backward)
        )
    assert await db.fetchval("SELECT count(*) FROM cancellations") == 300
    created = [r for r in first + second if r["status"] == 202]
    assert {r["status"] for r in first + second} == {200, 202}
    assert len(created) == 300
    assert len({r["cancellation"]["id"] for r in first + second}) == 300
