"""Reading back: keyset pagination, filters, one cancellation's history, and the stats."""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import datetime
from typing import Any

import asyncpg

from tests.integration.conftest import Harness

STATUSES = ("queued", "sending", "awaiting_confirmation", "confirmed", "failed")


async def enqueue_five(harness: Harness) -> list[dict[str, Any]]:
    """sr-0 … sr-4, one second apart, so creation order is unambiguous."""
    created = []
    for n in range(5):
        created.append(await harness.enqueue(f"sr-{n}"))
        harness.advance(1)
    return created


async def list_page(harness: Harness, **query: Any) -> dict[str, Any]:
    response = await harness.client.get(
        "/v1/cancellations", params={k: str(v) for k, v in query.items()}
    )
    page: dict[str, Any] = await response.json()
    assert response.status == 200, page
    return page


def ids(page: dict[str, Any]) -> list[str]:
    return [item["id"] for item in page["items"]]


async def test_pages_of_two_newest_first(harness: Harness) -> None:
    created = await enqueue_five(harness)
    newest_first = [c["id"] for c in reversed(created)]

    pages = [await list_page(harness, limit=2)]
    while pages[-1]["next"] is not None:
        pages.append(await list_page(harness, limit=2, after=pages[-1]["next"]))

    assert [len(p["items"]) for p in pages] == [2, 2, 1]
    assert pages[-1]["next"] is None
    seen = [ident for page in pages for ident in ids(page)]
    assert seen == newest_first
    assert len(set(seen)) == 5
    times = [datetime.fromisoformat(item["created_at"]) for p in pages for item in p["items"]]
    assert times == sorted(times, reverse=True)


async def test_a_full_page_with_nothing_after_it_has_no_next(harness: Harness) -> None:
    await enqueue_five(harness)
    page = await list_page(harness, limit=5)
    assert len(page["items"]) == 5
    assert page["next"] is None
    assert (await list_page(harness))["next"] is None


async def test_a_new_row_does_not_shift_the_pages_already_handed_out(harness: Harness) -> None:
    created = await enqueue_five(harness)
    first = await list_page(harness, limit=2)
    await harness.enqueue("sr-late")
    second = await list_page(harness, limit=2, after=first["next"])
    assert ids(second) == [created[2]["id"], created[1]["id"]]


async def test_filters(harness: Harness, db: asyncpg.Connection) -> None:
    harness.sim.seed_request("dropbox_sign", "sr-0", "completed")
    created = await enqueue_five(harness)
    assert await harness.dispatch() == 5
    late = await harness.enqueue("sr-late")

    by_status = {status: ids(await list_page(harness, status=status)) for status in STATUSES}
    assert by_status["failed"] == [created[0]["id"]]
    assert by_status["confirmed"] == [c["id"] for c in reversed(created[1:])]
    assert by_status["queued"] == [late["id"]]
    assert by_status["sending"] == by_status["awaiting_confirmation"] == []

    assert ids(await list_page(harness, resource_id="sr-2")) == [created[2]["id"]]
    assert ids(await list_page(harness, resource_id="sr-none")) == []
    assert len(ids(await list_page(harness, provider="dropbox_sign"))) == 6
    assert ids(await list_page(harness, provider="truto")) == []
    assert ids(await list_page(harness, provider="dropbox_sign", status="failed")) == [
        created[0]["id"]
    ]

    # Filters and pagination together: the cursor keeps the filter's rows only.
    first = await list_page(harness, status="confirmed", limit=3)
    rest = await list_page(harness, status="confirmed", limit=3, after=first["next"])
    assert ids(first) + ids(rest) == by_status["confirmed"]
    assert rest["next"] is None

    rows = await db.fetch("SELECT id::text, status FROM cancellations")
    assert {r["id"]: r["status"] for r in rows} == {
        ident: status for status, found in by_status.items() for ident in found
    }


async def test_events_come_in_the_order_they_happened(harness: Harness) -> None:
    created = await harness.enqueue("sr-1", reason="duplicate request")
    await harness.dispatch()
    response = await harness.client.get(f"/v1/cancellations/{created['id']}/events")
    assert response.status == 200
    history = await response.json()
    assert history["cancellation_id"] == created["id"]
    events = history["events"]

    assert [(e["from_status"], e["to_status"], e["cause"]) for e in events] == [
        (None, "queued", "enqueued"),
        ("queued", "sending", "claimed"),
        ("sending", "awaiting_confirmation", "provider_queued_cancel"),
        ("awaiting_confirmation", "queued", "webhook_needs_check"),
        ("queued", "sending", "claimed"),
        ("sending", "confirmed", "status_check"),
    ]
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)
    times = [datetime.fromisoformat(e["at"]) for e in events]
    assert times == sorted(times)
    for before, after in itertools.pairwise(events):
        assert after["from_status"] == before["to_status"]
    assert events[0]["evidence"] == {"reason": "duplicate request", "by": "anonymous"}
    assert events[-1]["to_status"] == (await harness.get(created["id"]))["status"]


async def test_the_history_comes_in_pages(harness: Harness) -> None:
    """limit and after, as the list has them: pages of two, oldest first, whose `next` is
    the cursor of the following page, together the whole history, with nothing twice."""
    created = await harness.enqueue("sr-paged")
    for n in range(6):
        response = await harness.client.post(
            f"/v1/cancellations/{created['id']}/retry", json={"reason": f"try {n}"}
        )
        assert response.status == 200, await response.text()
    url = f"/v1/cancellations/{created['id']}/events"
    whole = await (await harness.client.get(url)).json()
    assert len(whole["events"]) == 7 and whole["next"] is None

    pages: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        params = {"limit": "2", **({"after": after} if after else {})}
        response = await harness.client.get(url, params=params)
        assert response.status == 200
        pages.append(await response.json())
        assert len(pages[-1]["events"]) <= 2
        after = pages[-1]["next"]
        if after is None:
            break
    assert [len(p["events"]) for p in pages] == [2, 2, 2, 1]
    assert [e for p in pages for e in p["events"]] == whole["events"]

    past_the_end = await harness.client.get(url, params={"after": str(10**17)})
    assert (await past_the_end.json()) == {
        "cancellation_id": created["id"],
        "events": [],
        "next": None,
    }
    response = await harness.client.get(url, params={"after": "not-a-cursor"})
    assert response.status == 422
    assert response.content_type == "application/problem+json"
    assert (await response.json())["errors"][0]["field"] == "after"


async def test_stats_match_the_rows(harness: Harness, db: asyncpg.Connection) -> None:
    async def stats() -> dict[str, Any]:
        response = await harness.client.get("/v1/stats")
        assert response.status == 200
        data: dict[str, Any] = await response.json()
        return data

    async def rows_by_status() -> Counter[str]:
        records = await db.fetch("SELECT status FROM cancellations")
        return Counter(r["status"] for r in records)

    empty = await stats()
    assert empty["total"] == 0
    assert all(empty[s] == 0 for s in STATUSES)
    assert empty["last_confirmed_at"] is None

    harness.sim.seed_request("dropbox_sign", "sr-0", "completed")
    await enqueue_five(harness)
    queued = await stats()
    assert (queued["total"], queued["queued"]) == (5, 5)

    await harness.dispatch()
    await harness.enqueue("sr-late")
    after = await stats()
    expected = await rows_by_status()
    assert after["total"] == sum(expected.values()) == 6
    assert {s: after[s] for s in STATUSES} == {s: expected.get(s, 0) for s in STATUSES}
    assert (after["confirmed"], after["failed"], after["queued"]) == (4, 1, 1)
    assert after["overdue"] == 0
    last = await db.fetchval("SELECT max(confirmed_at) FROM cancellations")
    assert datetime.fromisoformat(after["last_confirmed_at"]) == last

    # Folding the counter shards (the sweeper does it) changes no number.
    await harness.sweep()
    assert await stats() == after
