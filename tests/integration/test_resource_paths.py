"""A resource id cannot rewrite the provider's URL path (issue 16): refused at enqueue, and
never sent for a row stored before enqueue refused it."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from tests.integration.conftest import Harness

#: ids that could change the request path once normalised or decoded on the way
BAD_IDS = ["..", ".", "...", "a/../b", "%2e%2e", "%2F", "a?b", "a#b", "a\\b", "cancel/.."]


@pytest.mark.parametrize("resource_id", BAD_IDS)
async def test_an_id_that_could_change_the_path_is_422_and_nothing_is_stored(
    harness: Harness, db: asyncpg.Connection, resource_id: str
) -> None:
    problem = await harness.enqueue(resource_id, expect=422)
    assert problem["errors"][0]["field"] == "resource_id"
    assert "one segment of the provider's URL path" in problem["errors"][0]["message"]

    response = await harness.client.post(
        "/v1/cancellations/batch",
        json={
            "items": [
                {"provider": "dropbox_sign", "resource_id": resource_id},
                {"provider": "dropbox_sign", "resource_id": "sr-fine"},
            ]
        },
    )
    results = (await response.json())["results"]
    assert [r["status"] for r in results] == [422, 202]
    assert results[0]["problem"]["errors"][0]["field"] == "items[0].resource_id"
    stored = await db.fetch("SELECT resource_id FROM cancellations")
    assert [r["resource_id"] for r in stored] == ["sr-fine"]


@pytest.mark.parametrize(
    ("stored_id", "sent_path"),
    [
        ("..", None),
        (".", None),
        ("", None),
        ("a/../b", "/dropbox_sign/v3/signature_request/cancel/a%2F..%2Fb"),
        ("%2e%2e", "/dropbox_sign/v3/signature_request/cancel/%252e%252e"),
        ("x?y#z", "/dropbox_sign/v3/signature_request/cancel/x%3Fy%23z"),
    ],
)
async def test_a_stored_row_with_such_an_id_never_reaches_outside_the_cancel_path(
    harness: Harness, db: asyncpg.Connection, stored_id: str, sent_path: str | None
) -> None:
    """As an old row would be: written before enqueue refused these ids."""
    created = await harness.enqueue("sr-old")
    await db.execute(
        "UPDATE cancellations SET resource_id = $2 WHERE id = $1",
        uuid.UUID(created["id"]),
        stored_id,
    )
    harness.sim.received.clear()
    await harness.dispatch()

    paths = [path for _, path in harness.sim.received]
    if sent_path is None:
        assert paths == []
        row = await harness.get(created["id"])
        assert (row["status"], row["outcome"]) == ("failed", "not_cancelable")
        assert row["last_error"]["code"] == "invalid_resource_id"
    else:
        assert paths and set(paths) <= {
            sent_path,
            sent_path.replace("/signature_request/cancel/", "/signature_request/"),
        }
