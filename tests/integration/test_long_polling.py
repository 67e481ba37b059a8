"""GET /v1/cancellations/{id}?wait=: ETags, 304s and long polls woken by LISTEN/NOTIFY.

Every wait is bounded by asyncio.timeout; nothing asserts how long anything took.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest

from orchestrator.clock import ManualClock
from orchestrator.simulator.app import SimulatorServer
from orchestrator.web import keys
from orchestrator.web.app import create_app
from tests.integration.conftest import AiohttpClient, Harness, make_settings

BOUND_S = 20


async def until(condition: Callable[[], bool]) -> None:
    """Until a state another task reaches holds (bounded; the pause is only a yield)."""
    async with asyncio.timeout(BOUND_S):
        while not condition():  # noqa: ASYNC110 - another task's state; no event to wait on
            await asyncio.sleep(0.01)


async def enqueue(harness: Harness, resource_id: str) -> tuple[uuid.UUID, str]:
    """A new cancellation's id and entity tag (the enqueue answer carries it)."""
    body = {"provider": "dropbox_sign", "resource_id": resource_id}
    response = await harness.client.post("/v1/cancellations", json=body)
    assert response.status == 202
    return uuid.UUID((await response.json())["id"]), response.headers["ETag"]


async def status_of(response: aiohttp.ClientResponse) -> tuple[int, dict[str, Any] | None]:
    if response.status == 304:
        assert await response.read() == b""
        return 304, None
    body: dict[str, Any] = await response.json()
    return response.status, body


async def test_the_status_carries_an_etag_and_answers_if_none_match_with_304(
    harness: Harness,
) -> None:
    ident, tag = await enqueue(harness, "sr-etag")
    path = f"/v1/cancellations/{ident}"
    response = await harness.client.get(path)
    assert response.headers["ETag"] == tag
    assert tag.startswith(f'"{ident}-v')

    for header in (tag, f"W/{tag}", f'"other", {tag}', "*"):
        response = await harness.client.get(path, headers={"If-None-Match": header})
        assert response.status == 304, header
        assert response.headers["ETag"] == tag
    response = await harness.client.get(path, headers={"If-None-Match": '"stale-v0"'})
    assert response.status == 200
    assert (await response.json())["id"] == str(ident)

    await harness.dispatch()
    response = await harness.client.get(path, headers={"If-None-Match": tag})
    assert response.status == 200
    assert response.headers["ETag"] != tag
    assert (await response.json())["status"] == "confirmed"


@pytest.mark.parametrize(
    "query", ["wait=61", "wait=-1", "wait=soon", "wait=nan", "until=forever", "wiat=5"]
)
async def test_a_wait_outside_0_to_60_seconds_is_a_422_naming_it(
    harness: Harness, query: str
) -> None:
    created = await harness.enqueue("sr-wait")
    response = await harness.client.get(f"/v1/cancellations/{created['id']}?{query}")
    assert response.status == 422
    assert response.content_type == "application/problem+json"
    problem = await response.json()
    assert [e["field"] for e in problem["errors"]] == [query.split("=")[0]]


async def test_a_long_poll_returns_as_soon_as_the_cancellation_changes(harness: Harness) -> None:
    path = "/v1/cancellations/{}?wait=60"
    feed = harness.app[keys.CHANGES]
    async with asyncio.timeout(BOUND_S):
        await feed.listening()
        for n, conditional in enumerate([True, False]):
            ident, tag = await enqueue(harness, f"sr-poll-{n}")
            headers = {"If-None-Match": tag} if conditional else {}
            poll = asyncio.create_task(harness.client.get(path.format(ident), headers=headers))
            await until(lambda: feed.waiting(ident) == 1)  # noqa: B023 - awaited here
            assert not poll.done()
            await harness.dispatch()
            response = await poll
            assert response.status == 200
            assert response.headers["ETag"] != tag
            assert (await response.json())["status"] != "queued"


async def test_a_wait_that_sees_no_change_ends_in_304_or_the_same_state(harness: Harness) -> None:
    ident, tag = await enqueue(harness, "sr-quiet")
    path = f"/v1/cancellations/{ident}?wait=0.2"
    async with asyncio.timeout(BOUND_S):
        response = await harness.client.get(path, headers={"If-None-Match": tag})
        assert response.status == 304
        assert response.headers["ETag"] == tag
        response = await harness.client.get(path)
        assert response.status == 200
        assert response.headers["ETag"] == tag
    assert harness.app[keys.CHANGES].waiting(ident) == 0


async def test_a_changed_or_ended_cancellation_is_answered_at_once(harness: Harness) -> None:
    ident, stale = await enqueue(harness, "sr-ended")
    path = f"/v1/cancellations/{ident}"
    abandoned = await harness.client.post(f"{path}/abandon", json={"reason": "test"})
    assert abandoned.status == 200
    async with asyncio.timeout(BOUND_S):  # far less than the 60 s asked for
        response = await harness.client.get(f"{path}?wait=60", headers={"If-None-Match": stale})
        assert response.status == 200
        assert (await response.json())["status"] == "failed"
        response = await harness.client.get(f"{path}?wait=60&until=terminal")
        assert response.status == 200
        tag = response.headers["ETag"]
        response = await harness.client.get(f"{path}?wait=60", headers={"If-None-Match": tag})
        assert response.status == 304


async def test_until_terminal_waits_through_the_intermediate_states(harness: Harness) -> None:
    ident, _ = await enqueue(harness, "sr-until")
    feed = harness.app[keys.CHANGES]
    async with asyncio.timeout(BOUND_S):
        await feed.listening()
        poll = asyncio.create_task(
            harness.client.get(f"/v1/cancellations/{ident}?wait=60&until=terminal")
        )
        await until(lambda: feed.waiting(ident) == 1)
        await harness.dispatch()  # sending, then awaiting confirmation, then the webhook
        status, body = await status_of(await poll)
    assert status == 200
    assert body is not None and body["status"] == "confirmed"


async def test_a_change_made_by_another_instance_wakes_the_poll(
    harness: Harness,
    aiohttp_client: AiohttpClient,
    sim_server: SimulatorServer,
    dsn: str,
) -> None:
    """Two apps on one database: the change goes through one, the poll waits on the other."""
    other_app = create_app(
        make_settings(sim_server, dsn), dsn, clock=ManualClock(), run_workers=False
    )
    other = await aiohttp_client(other_app)
    ident, tag = await enqueue(harness, "sr-across")
    feed = other_app[keys.CHANGES]
    async with asyncio.timeout(BOUND_S):
        await feed.listening()
        poll = asyncio.create_task(
            other.get(f"/v1/cancellations/{ident}?wait=60", headers={"If-None-Match": tag})
        )
        await until(lambda: feed.waiting(ident) == 1)
        assert harness.app[keys.CHANGES].waiting(ident) == 0
        response = await harness.client.post(
            f"/v1/cancellations/{ident}/abandon", json={"reason": "across"}
        )
        assert response.status == 200
        status, body = await status_of(await poll)
    assert status == 200
    assert body is not None and body["status"] == "failed"


async def test_the_listener_reconnects_and_polls_still_wake(
    harness: Harness, db: asyncpg.Connection
) -> None:
    ident, tag = await enqueue(harness, "sr-reconnect")
    feed = harness.app[keys.CHANGES]
    feed.retry_s = 0.05
    feed.check_s = 0.05
    async with asyncio.timeout(BOUND_S):
        await feed.listening()
        assert feed.connections == 1
        poll = asyncio.create_task(
            harness.client.get(f"/v1/cancellations/{ident}?wait=60", headers={"If-None-Match": tag})
        )
        await until(lambda: feed.waiting(ident) == 1)
        assert await db.fetchval("SELECT pg_terminate_backend($1)", feed.server_pid)
        await until(lambda: feed.connections == 2 and feed.waiting(ident) == 1)
        assert not poll.done()  # woken by the loss and the reconnection, it is still current
        await harness.dispatch()
        response = await poll
    assert response.status == 200
    assert response.headers["ETag"] != tag


async def test_only_watched_cancellations_are_announced(
    harness: Harness, dsn: str, db: asyncpg.Connection
) -> None:
    """NOTIFY costs every commit that sends it, so a change is announced only while a long
    poll watches that cancellation (migrations/0007)."""
    created = await harness.enqueue("sr-watched")
    heard: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(dsn)
    try:
        await listener.add_listener("cancellation_changed", lambda *a: heard.put_nowait(a[3]))
        bump = "UPDATE cancellations SET version = version + 1 WHERE id = $1"
        await db.execute(bump, uuid.UUID(created["id"]))
        await listener.fetchval("SELECT 1")  # notifications arrive before this answer
        assert heard.empty()

        store = harness.app[keys.STORE]
        watcher = uuid.uuid4()
        until = harness.clock.now() + timedelta(seconds=60)
        await store.watch(uuid.UUID(created["id"]), watcher, until)
        await db.execute(bump, uuid.UUID(created["id"]))
        async with asyncio.timeout(5):
            assert await heard.get() == created["id"]

        await store.unwatch(uuid.UUID(created["id"]), watcher)
        await db.execute(bump, uuid.UUID(created["id"]))
        await listener.fetchval("SELECT 1")
        assert heard.empty()
    finally:
        await listener.close()


async def test_a_change_in_flight_when_the_poll_starts_is_never_missed(
    harness: Harness, dsn: str, db: asyncpg.Connection
) -> None:
    """A change whose trigger looked for watches before this poll's watch was committed
    announces nothing, and the poll's first read comes before it commits. The watch waits
    that change out (FOR SHARE on the row), so the read after it sees the change; before,
    the poll slept out its whole wait (60 s, past this test's bound) before it saw it."""
    ident, tag = await enqueue(harness, "sr-in-flight")
    feed = harness.app[keys.CHANGES]
    observer = await asyncpg.connect(dsn)
    try:
        async with asyncio.timeout(BOUND_S):
            await feed.listening()
            change = db.transaction()
            await change.start()
            await db.execute("UPDATE cancellations SET version = version + 1 WHERE id = $1", ident)
            poll = asyncio.create_task(
                harness.client.get(
                    f"/v1/cancellations/{ident}?wait=60", headers={"If-None-Match": tag}
                )
            )
            blocked = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            # Until the poll has watched and read, or waits to watch (no event to wait on).
            while feed.waiting(ident) == 0 and await observer.fetchval(blocked) == 0:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            await change.commit()
            response = await poll
    finally:
        await observer.close()
    assert response.status == 200
    assert response.headers["ETag"] != tag
