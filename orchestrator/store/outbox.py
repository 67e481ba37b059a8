"""The completion callbacks' outbox (0006_completion_callbacks.sql), behind the same narrow
boundary as the rest of the store: rows become dataclasses, driver errors become ours.

Deliveries are written by the database itself, in the transaction that ends a cancellation;
this side only claims them and records each attempt.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from orchestrator.domain.callbacks import AttemptOutcome
from orchestrator.domain.model import Cancellation
from orchestrator.store.db import translate_errors
from orchestrator.store.queries import QUERIES as Q


@dataclass(frozen=True)
class Delivery:
    """One claimed delivery: `attempt` is this attempt's number and the claim's fence."""

    id: uuid.UUID
    url: str
    ended_at: datetime
    attempt: int
    cancellation: Cancellation

    @property
    def webhook_id(self) -> str:
        """The same on every attempt, so a receiver can drop a repeat (at least once)."""
        return f"msg_{self.id.hex}"


class Outbox:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def claim(self, now: datetime, limit: int, owner: str, lease_s: float) -> list[Delivery]:
        """Lease up to `limit` due deliveries for `lease_s` (SKIP LOCKED: several instances
        share the outbox)."""
        async with translate_errors():
            records = await self.pool.fetch(
                Q["claim_callbacks"], now, limit, owner, now + timedelta(seconds=lease_s)
            )
        return [_delivery(r) for r in records]

    async def finish(self, delivery: Delivery, outcome: AttemptOutcome, now: datetime) -> bool:
        """Record the attempt and what follows; False if a later claim took the delivery
        over meanwhile (this attempt's lease ran out), and nothing was written."""
        async with translate_errors():
            count: int = await self.pool.fetchval(
                Q["finish_callback_attempt"],
                delivery.id,
                delivery.attempt,
                now,
                outcome.cause.value,
                {"webhook_id": delivery.webhook_id, **outcome.evidence},
                outcome.state.value,
                outcome.next_attempt_at,
            )
        return count == 1


def _delivery(record: Any) -> Delivery:
    return Delivery(
        id=record["delivery_id"],
        url=record["delivery_url"],
        ended_at=record["ended_at"],
        attempt=record["delivery_attempt"],
        cancellation=Cancellation.from_row(record),
    )
