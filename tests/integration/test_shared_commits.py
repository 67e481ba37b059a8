"""Shared commits (issue 18, store/flusher.py): concurrent enqueues, decisions and webhooks
are each written by one statement, every caller getting its own answer after the commit.

To make a group whatever the machine's speed, a test holds a lock the first write needs
(from its own connection, as another instance would): that flush waits, the next requests
pile up behind it, and once the lock is let go they are written together. Group sizes are
read from the orchestrator_commit_group_size histogram, the operators' view of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from orchestrator import errors
from orchestrator.domain import lifecycle
from orchestrator.domain.model import Cancellation, Status
from orchestrator.store.flusher import Flusher
from orchestrator.store.shared import SharedStore
from orchestrator.web import keys
from tests.integration.conftest import Harness
from tests.integration.test_webhooks import signed_event

PROVIDER, ACCOUNT = "dropbox_sign", "default"


def shared(harness: Harness) -> SharedStore:
    store = harness.app[keys.STORE]
    assert isinstance(store, SharedStore)
    return store


def groups(harness: Harness, kind: str, fell_back: bool = False) -> tuple[float, float]:
    """(groups written, items in them) of `kind` so far."""
    registry = harness.app[keys.METRICS].registry
    labels = {"kind": kind, "fell_back": str(fell_back).lower()}
    count = registry.get_sample_value("orchestrator_commit_group_size_count", labels) or 0.0
    total = registry.get_sample_value("orchestrator_commit_group_size_sum", labels) or 0.0
    return count, total


async def until(check: Callable[[], Awaitable[bool]]) -> None:
    """Wait until `check()` holds (bounded: a stuck test fails rather than hangs)."""
    async with asyncio.timeout(20):
        while not await check():  # noqa: ASYNC110 - another session's or task's state
            await asyncio.sleep(0.01)


async def waiting_on_lock(db: asyncpg.Connection) -> bool:
    """Whether some other session waits for a lock (the held-back flush)."""
    waiting: int = await db.fetchval(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
    )
    return waiting > 0


@contextlib.asynccontextmanager
async def held(dsn: str, statement: str, *args: Any) -> AsyncIterator[asyncpg.Connection]:
    """A transaction of another session holding what `statement` locks, until the block ends."""
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute(statement, *args)
            yield conn
    finally:
        await conn.close()


def hold_request(dsn: str, resource_id: str) -> contextlib.AbstractAsyncContextManager[Any]:
    """Hold the per-request advisory lock enqueues and webhooks of `resource_id` take."""
    return held(dsn, "SELECT lock_request($1, $2, $3)", PROVIDER, ACCOUNT, resource_id)


async def post(harness: Harness, body: dict[str, Any], key: str | None = None) -> tuple[int, Any]:
    headers = {"Idempotency-Key": key} if key else None
    response = await harness.client.post("/v1/cancellations", json=body, headers=headers)
    return response.status, await response.json()


def cancel(resource_id: str, **fields: Any) -> dict[str, Any]:
    return {"provider": PROVIDER, "resource_id": resource_id, **fields}


async def grouped(
    harness: Harness,
    dsn: str,
    db: asyncpg.Connection,
    flusher: Flusher[Any, Any],
    blocker: Callable[[], Awaitable[Any]],
    lock: contextlib.AbstractAsyncContextManager[Any],
    calls: list[Callable[[], Awaitable[Any]]],
) -> tuple[Any, list[Any]]:
    """Run `blocker` alone while `lock` holds it back, then `calls` together as one group;
    returns what each returned (or raised)."""
    async with lock:
        first = asyncio.ensure_future(blocker())
        await until(lambda: waiting_on_lock(db))
        rest = [asyncio.ensure_future(call()) for call in calls]

        async def all_pending() -> bool:
            return flusher.pending == len(calls)

        await until(all_pending)
    answers = await asyncio.gather(first, *rest, return_exceptions=True)
    return answers[0], list(answers[1:])


# --- enqueues --------------------------------------------------------------------------


async def test_concurrent_enqueues_share_one_commit_and_each_caller_gets_its_own_answer(
    harness: Harness, dsn: str, db: asyncpg.Connection
) -> None:
    earlier = await harness.enqueue("sr-earlier", headers={"Idempotency-Key": "k-old"})
    before = groups(harness, "enqueue")
    calls = [
        # Ten new requests: each created.
        *[lambda i=i: post(harness, cancel(f"sr-new-{i}")) for i in range(10)],
        # Three asking for the same resource: one cancellation for all three.
        *[lambda: post(harness, cancel("sr-same")) for _ in range(3)],
        # The same key with another body than its first use (stored before): 409.
        lambda: post(harness, cancel("sr-other"), key="k-old"),
        # One key, two different requests in the same group: one wins, the other is 409.
        lambda: post(harness, cancel("sr-key-a"), key="k-new"),
        lambda: post(harness, cancel("sr-key-b"), key="k-new"),
    ]
    first, answers = await grouped(
        harness,
        dsn,
        db,
        shared(harness).enqueues,
        lambda: post(harness, cancel("sr-blocker")),
        hold_request(dsn, "sr-blocker"),
        calls,
    )

    assert first[0] == 202
    for status, body in answers[:10]:
        assert (status, body["status"]) == (202, "queued"), body
    same = answers[10:13]
    # One created it (202), the others found it (200), as if they had come one by one.
    assert sorted(status for status, _ in same) == [200, 200, 202]
    assert len({body["id"] for _, body in same}) == 1
    same_rows = "SELECT count(*) FROM cancellations WHERE resource_id = 'sr-same'"
    assert await db.fetchval(same_rows) == 1
    reused_status, reused = answers[13]
    assert reused_status == 409 and reused["cancellation_id"] == earlier["id"], reused
    key_answers = sorted(status for status, _ in answers[14:16])
    assert key_answers == [202, 409], answers[14:16]
    stored = await db.fetchval("SELECT count(*) FROM cancellations WHERE idempotency_key = 'k-new'")
    assert stored == 1

    # The blocker alone, then the sixteen others in one group: two commits, not seventeen.
    count, items = groups(harness, "enqueue")
    assert (count - before[0], items - before[1]) == (2, 17)
    assert groups(harness, "enqueue", fell_back=True) == (0, 0)
    # The enqueued counter still counts each request, as without groups.
    metrics = harness.app[keys.METRICS].registry
    created = metrics.get_sample_value(
        "orchestrator_enqueued_total", {"provider": PROVIDER, "created": "true"}
    )
    assert created == 1 + 1 + 10 + 1 + 1  # earlier, blocker, new ones, sr-same, k-new's winner


async def test_an_enqueue_caught_in_a_deadlock_with_another_instance_fails_alone(
    harness: Harness, dsn: str, db: asyncpg.Connection
) -> None:
    """Another instance's transaction holds an uncommitted row with key k-dl, then waits for
    a request this group has locked: a deadlock (40P01) with the group's statement, which is
    rolled back. Each item is then written alone: sr-dl-1 is created, and sr-dl-2 learns, as
    it would have alone, that k-dl was used for another request (409)."""
    other = await asyncpg.connect(dsn)
    try:
        # The group, not the other instance, is the one Postgres rolls back.
        await other.execute("SET deadlock_timeout = '60s'")
        async with hold_request(dsn, "sr-dl-0"):
            first = asyncio.ensure_future(post(harness, cancel("sr-dl-0")))
            await until(lambda: waiting_on_lock(db))
            rest = [
                asyncio.ensure_future(post(harness, cancel("sr-dl-1"), key="k-dl-1")),
                asyncio.ensure_future(post(harness, cancel("sr-dl-2"), key="k-dl")),
            ]

            async def all_pending() -> bool:
                return shared(harness).enqueues.pending == 2

            await until(all_pending)
            transaction = other.transaction()
            await transaction.start()
            taken = await other.fetchrow(
                "SELECT (e.cancellation).id FROM enqueue_cancellation($1, $2, $3, 'sr-dl-x',"
                " NULL, '{}', '{}', 'k-dl', 'another body', now(), NULL, NULL) e",
                uuid.uuid4(),
                PROVIDER,
                ACCOUNT,
            )
        # The group runs now: it locks sr-dl-1, then waits for k-dl's uncommitted row.
        await first
        await until(lambda: waiting_on_lock(db))
        await other.execute("SELECT lock_request($1, $2, 'sr-dl-1')", PROVIDER, ACCOUNT)
        await transaction.commit()
        (status_1, body_1), (status_2, body_2) = await asyncio.gather(*rest)
    finally:
        await other.close()
    assert (status_1, body_1["status"]) == (202, "queued"), body_1
    assert status_2 == 409 and body_2["cancellation_id"] == str(taken["id"]), body_2
    assert groups(harness, "enqueue", fell_back=True) == (1, 2)


async def test_a_lone_enqueue_is_a_group_of_one(harness: Harness) -> None:
    before = groups(harness, "enqueue")
    await harness.enqueue("sr-lone")
    count, items = groups(harness, "enqueue")
    assert (count - before[0], items - before[1]) == (1, 1)


async def test_each_202_is_sent_after_its_commit(
    harness: Harness, dsn: str, db: asyncpg.Connection
) -> None:
    """The moment a caller has its answer, the row is there for any other session to read."""
    async with hold_request(dsn, "sr-hold"):
        first = asyncio.ensure_future(post(harness, cancel("sr-hold")))
        await until(lambda: waiting_on_lock(db))
        pending = [asyncio.ensure_future(post(harness, cancel(f"sr-seen-{i}"))) for i in range(8)]

        async def all_pending() -> bool:
            return shared(harness).enqueues.pending == 8

        await until(all_pending)
    seen = []
    for answer in asyncio.as_completed([first, *pending]):
        status, body = await answer
        assert status == 202
        # Read at once, from another connection: a 202 for an uncommitted row would miss.
        found = await db.fetchval("SELECT status FROM cancellations WHERE id = $1", body["id"])
        seen.append(found)
    assert seen == ["queued"] * 9


async def test_enqueues_refused_once_the_store_is_closed(harness: Harness) -> None:
    """Stopping writes what is pending, then refuses more with a 503 (Retry-After)."""
    await shared(harness).close(1.0)
    status, body = await post(harness, cancel("sr-late"))
    assert status == 503, body


async def test_stopping_fails_what_could_not_be_written_in_time_with_a_503(
    harness: Harness, dsn: str, db: asyncpg.Connection
) -> None:
    """A flush held up past the shutdown timeout is given up: its caller and the one waiting
    behind it each get DatabaseUnavailable (a 503), none is left waiting."""
    store = shared(harness)
    async with hold_request(dsn, "sr-stuck"):
        stuck = asyncio.ensure_future(post(harness, cancel("sr-stuck")))
        await until(lambda: waiting_on_lock(db))
        behind = asyncio.ensure_future(post(harness, cancel("sr-behind")))

        async def queued() -> bool:
            return store.enqueues.pending == 1

        await until(queued)
        await store.close(0.2)
        answers = await asyncio.gather(stuck, behind)
    assert [status for status, _ in answers] == [503, 503], answers


# --- decisions -------------------------------------------------------------------------


async def queued_rows(harness: Harness, count: int, prefix: str) -> list[Cancellation]:
    rows = []
    for i in range(count):
        created = await harness.enqueue(f"{prefix}-{i}")
        row = await shared(harness).get(created["id"])
        assert row is not None and row.status is Status.QUEUED
        rows.append(row)
    return rows


def retry_now(harness: Harness) -> lifecycle.Decision:
    decision = lifecycle.retry_now(Status.QUEUED, harness.clock.now(), {"by": "test"})
    assert isinstance(decision, lifecycle.Decision)
    return decision


async def test_decisions_share_one_commit_and_the_fence_still_holds(
    harness: Harness, dsn: str, db: asyncpg.Connection
) -> None:
    store = shared(harness)
    blocker, fresh, stale, other = await queued_rows(harness, 4, "sr-decide")
    decision, now = retry_now(harness), harness.clock.now()
    # `stale` moves on before its decision is written: its version no longer matches.
    moved = await store.apply(stale, decision, now, submitted=False)
    assert moved is not None and moved.version == stale.version + 1
    before = groups(harness, "decision")

    first, answers = await grouped(
        harness,
        dsn,
        db,
        store.decisions,
        lambda: store.apply(blocker, decision, now, submitted=False),
        held(dsn, "SELECT 1 FROM cancellations WHERE id = $1 FOR UPDATE", blocker.id),
        [
            lambda: store.apply(fresh, decision, now, submitted=False),
            lambda: store.apply(stale, decision, now, submitted=False),
            lambda: store.apply(other, decision, now, submitted=False),
        ],
    )

    assert first is not None and first.version == blocker.version + 1
    applied_fresh, fenced, applied_other = answers
    assert isinstance(applied_fresh, Cancellation) and applied_fresh.id == fresh.id
    assert applied_fresh.version == fresh.version + 1 and applied_fresh.needs_check
    assert fenced is None
    assert isinstance(applied_other, Cancellation) and applied_other.id == other.id
    # The fenced decision wrote nothing: one retry_requested in its history, from `moved`.
    causes = await db.fetch(
        "SELECT cause FROM cancellation_events WHERE cancellation_id = $1 ORDER BY id", stale.id
    )
    assert [r["cause"] for r in causes] == ["enqueued", "retry_requested"]
    count, items = groups(harness, "decision")
    assert (count - before[0], items - before[1]) == (2, 4)


async def test_one_bad_decision_fails_alone_and_the_rest_of_its_group_is_written(
    harness: Harness, dsn: str, db: asyncpg.Connection
) -> None:
    """An illegal transition (Postgres raises TR001) fails the group's statement: nothing of
    it is committed, each item is written alone, and only the bad one's caller gets the error
    it would have got alone."""
    store = shared(harness)
    blocker, good, bad, also_good = await queued_rows(harness, 4, "sr-bad")
    decision, now = retry_now(harness), harness.clock.now()
    illegal = dataclasses.replace(
        decision, status=Status.CONFIRMED, cause=lifecycle.Cause.PROVIDER_ANSWERED
    )
    first, answers = await grouped(
        harness,
        dsn,
        db,
        store.decisions,
        lambda: store.apply(blocker, decision, now, submitted=False),
        held(dsn, "SELECT 1 FROM cancellations WHERE id = $1 FOR UPDATE", blocker.id),
        [
            lambda: store.apply(good, decision, now, submitted=False),
            lambda: store.apply(bad, illegal, now, submitted=False),
            lambda: store.apply(also_good, decision, now, submitted=False),
        ],
    )
    assert isinstance(first, Cancellation)
    applied_good, refused, applied_also = answers
    assert isinstance(applied_good, Cancellation) and applied_good.version == good.version + 1
    assert isinstance(refused, errors.IllegalTransition), refused
    assert isinstance(applied_also, Cancellation) and applied_also.version == also_good.version + 1
    assert await db.fetchval("SELECT status FROM cancellations WHERE id = $1", bad.id) == "queued"
    assert groups(harness, "decision", fell_back=True) == (1, 3)


async def test_a_lost_database_fails_every_caller_of_the_group_with_a_503(
    harness: Harness, dsn: str, db: asyncpg.Connection
) -> None:
    """The group's connection is cut mid-statement: each caller gets DatabaseUnavailable, as
    the direct call would, and nobody waits out a retry of each item in turn."""
    store = shared(harness)
    blocker, one, two = await queued_rows(harness, 3, "sr-cut")
    decision, now = retry_now(harness), harness.clock.now()
    async with held(dsn, "SELECT 1 FROM cancellations WHERE id = $1 FOR UPDATE", one.id):
        first = asyncio.ensure_future(store.apply(blocker, decision, now, submitted=False))
        await first
        group = [
            asyncio.ensure_future(store.apply(row, decision, now, submitted=False))
            for row in (one, two)
        ]
        await until(lambda: waiting_on_lock(db))
        await db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        )
        answers = await asyncio.gather(*group, return_exceptions=True)
    assert [type(a) for a in answers] == [errors.DatabaseUnavailable] * 2, answers
    assert groups(harness, "decision", fell_back=True) == (0, 0)


# --- webhooks --------------------------------------------------------------------------


async def test_webhooks_share_one_commit_and_duplicates_still_make_one_inbox_row(
    harness: Harness, dsn: str, db: asyncpg.Connection
) -> None:
    created = await harness.enqueue("sr-hook")
    key = harness.sim.dropbox_sign.settings.api_key
    at = str(int(time.time()))
    same = signed_event(key, "signature_request_canceled", "sr-hook", at)
    others = [
        signed_event(key, "signature_request_declined", "sr-hook", at),
        signed_event(key, "signature_request_all_signed", "sr-hook", at),
    ]
    unknown = signed_event(key, "signature_request_canceled", "sr-nobody", at)

    async def send(body: bytes) -> int:
        response = await harness.client.post(
            "/webhooks/dropbox_sign", data=body, headers={"Content-Type": "application/json"}
        )
        assert await response.text()
        return response.status

    before = groups(harness, "webhook")
    first, answers = await grouped(
        harness,
        dsn,
        db,
        shared(harness).webhooks,
        lambda: send(signed_event(key, "signature_request_canceled", "sr-block", at)),
        hold_request(dsn, "sr-block"),
        [
            *[lambda: send(same) for _ in range(3)],
            *[lambda b=b: send(b) for b in others],
            lambda: send(unknown),
        ],
    )
    assert [first, *answers] == [200] * 7
    inbox = await db.fetch(
        "SELECT resource_id, event_type FROM webhook_inbox ORDER BY resource_id, event_type"
    )
    assert [(r["resource_id"], r["event_type"]) for r in inbox] == [
        ("sr-block", "signature_request_canceled"),
        ("sr-hook", "signature_request_all_signed"),
        ("sr-hook", "signature_request_canceled"),
        ("sr-hook", "signature_request_declined"),
        ("sr-nobody", "signature_request_canceled"),
    ]
    # Under DROPBOX_SIGN_CONFIRM_BY=status each event only asks for a check: the first asks,
    # the others find it asked already. One check in the history, whatever the group's order.
    history = await harness.events(created["id"])
    assert [e["cause"] for e in history] == ["enqueued", "webhook_needs_check"]
    registry = harness.app[keys.METRICS].registry

    def outcome(name: str) -> float:
        labels = {"provider": PROVIDER, "outcome": name}
        return registry.get_sample_value("orchestrator_webhooks_total", labels) or 0.0

    assert (outcome("duplicate"), outcome("check"), outcome("coalesced")) == (2, 1, 2)
    assert outcome("stored") == 2
    count, items = groups(harness, "webhook")
    assert (count - before[0], items - before[1]) == (2, 7)


@pytest.mark.parametrize("settings_overrides", [{"dropbox_sign_confirm_by": "webhook"}])
async def test_a_settling_webhook_in_a_group_settles_its_cancellation_once(
    harness: Harness, dsn: str, db: asyncpg.Connection
) -> None:
    """Trusted callbacks: two different settling events for one sent cancellation in one
    group. The first settles it; the second finds it settled and is only stored."""
    created = await harness.enqueue("sr-settle")
    harness.sim.configure({"dropbox_sign": {"drop_callback_rate": 1.0}})
    await harness.dispatch()
    row = await harness.get(created["id"])
    assert row["status"] == "awaiting_confirmation", row
    key = harness.sim.dropbox_sign.settings.api_key
    at = str(int(time.time()) + 5)

    async def send(body: bytes) -> int:
        response = await harness.client.post(
            "/webhooks/dropbox_sign", data=body, headers={"Content-Type": "application/json"}
        )
        return response.status

    first, answers = await grouped(
        harness,
        dsn,
        db,
        shared(harness).webhooks,
        lambda: send(signed_event(key, "signature_request_canceled", "sr-block", at)),
        hold_request(dsn, "sr-block"),
        [
            lambda: send(signed_event(key, "signature_request_canceled", "sr-settle", at)),
            lambda: send(signed_event(key, "signature_request_declined", "sr-settle", at)),
        ],
    )
    assert [first, *answers] == [200] * 3
    settled = await harness.get(created["id"])
    assert settled["status"] in ("confirmed", "failed")
    assert settled["confirmed_via"] == "webhook"
    causes = [e["cause"] for e in await harness.events(created["id"])]
    assert causes.count("webhook") == 1, causes
    registry = harness.app[keys.METRICS].registry
    ended = registry.get_sample_value(
        "orchestrator_time_to_terminal_seconds_count",
        {"provider": PROVIDER, "status": settled["status"], "outcome": settled["outcome"]},
    )
    assert ended == 1
