"""What the fault tests share: the service's environment, a client that enqueues and retries
like a careful caller, and the checks every fault must pass (nothing lost, nothing twice).

The service runs as `python -m orchestrator serve` (tests.integration.processes); the provider
simulators run in the test's own event loop, on loopback, so the test reads their call logs.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg
import orjson

from orchestrator.simulator.app import SimulatorServer

PROVIDERS = ("dropbox_sign", "truto", "aptly")
PROBLEM = "application/problem+json"
TERMINAL = ("confirmed", "failed")

PARAMS: dict[str, dict[str, Any]] = {
    "dropbox_sign": {},
    "truto": {
        "integrated_account_id": "62f44730-dd91-461e-bd6a-aedd9e0ad79d",
        "message": "contract changed",
    },
    "aptly": {"status": "Cancelled", "documentId": "30af6294-e42a-4c31-9a6f-88b1bdba06e1"},
}


def cancel_body(provider: str, resource_id: str, account: str = "default") -> dict[str, Any]:
    body: dict[str, Any] = {"provider": provider, "resource_id": resource_id}
    if account != "default":
        body["account"] = account
    if PARAMS[provider]:
        body["params"] = PARAMS[provider]
    return body


def spread(prefix: str, count: int) -> list[tuple[str, str]]:
    """`count` (provider, resource id) pairs, round-robin over the three providers."""
    return [(PROVIDERS[n % len(PROVIDERS)], f"{prefix}-{n}") for n in range(count)]


def service_env(sim: SimulatorServer, dsn: str, **extra: str) -> dict[str, str]:
    """All three providers pointed at the simulator; short leases and sweeps, fast polls."""
    return {
        **sim.env(),
        "DATABASE_URL": dsn,
        "DROPBOX_SIGN_RATE_LIMIT_PER_MIN": "1000000",
        "ORCH_LEASE_S": "3",
        "ORCH_SWEEP_INTERVAL_S": "0.5",
        "ORCH_CONFIRM_TIMEOUT_S": "5",
        "ORCH_BACKOFF_BASE_S": "0.2",
        "ORCH_BACKOFF_MAX_S": "2",
        "ORCH_DISPATCH_CONCURRENCY": "32",
        "ORCH_DISPATCH_POLL_S": "0.2",
        "ORCH_SHUTDOWN_TIMEOUT_S": "3",
        "ORCH_LOG_LEVEL": "INFO",
        **extra,
    }


def is_problem(status: int, content_type: str, text: str) -> bool:
    """An RFC 9457 body with this status and non-empty type, title and detail."""
    if content_type != PROBLEM:
        return False
    try:
        body = orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return (
        isinstance(body, dict)
        and body.get("status") == status
        and all(isinstance(body.get(m), str) and body[m] for m in ("type", "title", "detail"))
    )


@dataclass
class Caller:
    """A caller that enqueues with an Idempotency-Key and retries what did not get an answer
    (connection refused or reset, 503), as a real client of this API should. It records every
    answer, so a test can assert nothing else (no 500, no hang) was ever seen."""

    http: aiohttp.ClientSession
    url: str
    give_up_s: float = 60.0
    statuses: Counter[int] = field(default_factory=Counter)
    network_errors: int = 0
    slowest_s: float = 0.0
    unexpected: list[str] = field(default_factory=list)

    async def enqueue(self, provider: str, resource_id: str) -> str:
        """The cancellation's id once accepted (202, or 200 for a retry that had landed)."""
        deadline = time.monotonic() + self.give_up_s
        body = cancel_body(provider, resource_id)
        headers = {"Idempotency-Key": f"key-{resource_id}"}
        while True:
            started = time.monotonic()
            try:
                async with self.http.post(
                    f"{self.url}/v1/cancellations", json=body, headers=headers
                ) as response:
                    text = await response.text()
                    self.statuses[response.status] += 1
                    self.slowest_s = max(self.slowest_s, time.monotonic() - started)
                    if response.status in (200, 202):
                        return str(orjson.loads(text)["id"])
                    if response.status != 503 or not is_problem(503, response.content_type, text):
                        self.unexpected.append(f"{response.status} {text[:300]}")
                        raise AssertionError(f"enqueue answered {response.status}: {text}")
            except aiohttp.ClientError:
                self.network_errors += 1
            if time.monotonic() > deadline:
                raise TimeoutError(f"{resource_id} not accepted in {self.give_up_s}s")
            await asyncio.sleep(0.1)

    async def enqueue_all(self, items: list[tuple[str, str]], parallel: int = 32) -> list[str]:
        limit = asyncio.Semaphore(parallel)

        async def one(provider: str, resource_id: str) -> str:
            async with limit:
                return await self.enqueue(provider, resource_id)

        return list(await asyncio.gather(*(one(p, r) for p, r in items)))


async def terminal_count(db: asyncpg.Connection) -> int:
    return int(
        await db.fetchval(
            "SELECT count(*) FROM cancellations WHERE status IN ('confirmed', 'failed')"
        )
    )


async def wait_all_terminal(db: asyncpg.Connection, total: int, timeout_s: float) -> float:
    """Seconds until `total` cancellations are terminal; raises if not within the timeout."""
    started = time.monotonic()
    deadline = started + timeout_s
    while True:
        done = await terminal_count(db)
        if done >= total:
            return time.monotonic() - started
        if time.monotonic() > deadline:
            statuses = dict(
                await db.fetch("SELECT status, count(*) FROM cancellations GROUP BY status")
            )
            raise TimeoutError(f"{done}/{total} terminal after {timeout_s}s: {statuses}")
        await asyncio.sleep(0.1)


async def confirmed_twice(db: asyncpg.Connection) -> list[str]:
    """Cancellations with more than one event into `confirmed` (must be none)."""
    rows = await db.fetch(
        "SELECT cancellation_id FROM cancellation_events WHERE to_status = 'confirmed'"
        " GROUP BY cancellation_id HAVING count(*) > 1"
    )
    return [str(r["cancellation_id"]) for r in rows]


async def broken_chains(db: asyncpg.Connection) -> list[str]:
    """Cancellations whose history is not one chain: each event must start from the status
    the previous one ended in. Two workers holding the row at once, or a transition out of a
    terminal status, would break it."""
    rows = await db.fetch(
        "SELECT cancellation_id, from_status, to_status, cause FROM cancellation_events"
        " ORDER BY cancellation_id, id"
    )
    broken: list[str] = []
    previous: dict[Any, str | None] = {}
    for row in rows:
        key = row["cancellation_id"]
        expected = previous.get(key)
        if row["from_status"] != expected or expected in TERMINAL:
            broken.append(f"{key}: {row['cause']} from {row['from_status']} after {expected}")
        previous[key] = row["to_status"]
    return broken


async def lost(db: asyncpg.Connection, accepted: list[str]) -> list[str]:
    """Accepted ids that are not stored, or not terminal."""
    rows = await db.fetch(
        "SELECT id::text, status FROM cancellations WHERE id = ANY($1::uuid[])", accepted
    )
    terminal = {r["id"] for r in rows if r["status"] in TERMINAL}
    return [i for i in accepted if i not in terminal]


async def disagreements(db: asyncpg.Connection, sim: SimulatorServer) -> list[str]:
    """Terminal states the provider does not share: confirmed while the request is not
    canceled there, or failed (or still open) although the provider canceled it."""
    found = []
    for row in await db.fetch(
        "SELECT provider, resource_id, status, last_error FROM cancellations"
    ):
        state = sim.simulator.provider(row["provider"]).state_of(row["resource_id"])
        if (row["status"] == "confirmed") != (state == "canceled"):
            found.append(f"{row['provider']}/{row['resource_id']}: {row['status']} vs {state}")
    return found


def provider_duplicates(sim: SimulatorServer) -> dict[str, int]:
    """Cancel calls for a request the provider had already canceled (or queued to cancel)."""
    return {name: p.counters.duplicate_cancel_calls for name, p in sim.simulator.providers.items()}


def duplicated_requests(sim: SimulatorServer) -> set[tuple[str, str]]:
    return {
        (name, rec.id)
        for name, p in sim.simulator.providers.items()
        for rec in p.records.values()
        if rec.duplicate_cancel_calls
    }
