"""The Store whose enqueues, decisions and webhooks share commits (issue 18, store/flusher.py).

Same methods, same answers, same errors as Store: the service and the dispatcher do not
know their call was written together with others. Each group is one statement over the
plpgsql function the single call uses (queries.sql: enqueue_batch, apply_decisions,
record_webhook_events), so every item keeps its own locks, fence and rules; items are sorted
so that concurrent groups take their locks in one order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from orchestrator import errors
from orchestrator.domain import lifecycle
from orchestrator.domain.model import Cancellation, WebhookEvent
from orchestrator.store.db import translate_errors
from orchestrator.store.flusher import MAX_GROUP, Flusher, no_report
from orchestrator.store.queries import QUERIES as Q
from orchestrator.store.repository import (
    NewCancellation,
    Store,
    WebhookOutcome,
    WebhookRecorded,
    decision_json,
    enqueued,
    webhook_args,
    with_state,
)


@dataclass(frozen=True, slots=True)
class _Enqueue:
    new: NewCancellation
    now: datetime


@dataclass(frozen=True, slots=True)
class _Decision:
    row: Cancellation
    decision: lifecycle.Decision
    now: datetime
    submitted: bool


@dataclass(frozen=True, slots=True)
class _Webhook:
    event: WebhookEvent
    now: datetime
    skew_s: float
    settle: bool


class SharedStore(Store):
    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        max_group: int = MAX_GROUP,
        on_flush: Callable[[str, int, bool], None] = no_report,
    ) -> None:
        super().__init__(pool)
        self.enqueues: Flusher[_Enqueue, tuple[Cancellation, bool]] = Flusher(
            "enqueue",
            self._enqueue_group,
            self._enqueue_one,
            max_group=max_group,
            on_flush=on_flush,
        )
        self.decisions: Flusher[_Decision, Cancellation | None] = Flusher(
            "decision", self._apply_group, self._apply_one, max_group=max_group, on_flush=on_flush
        )
        self.webhooks: Flusher[_Webhook, WebhookRecorded] = Flusher(
            "webhook",
            self._webhook_group,
            self._webhook_one,
            max_group=max_group,
            on_flush=on_flush,
        )

    async def close(self, timeout_s: float) -> None:
        """Write what is pending (within the timeout), then refuse more: before the pool
        closes."""
        await asyncio.gather(
            *(
                flusher.close(timeout_s)
                for flusher in (self.enqueues, self.decisions, self.webhooks)
            )
        )

    # --- the calls, as Store's ----------------------------------------------------------

    async def enqueue(self, new: NewCancellation, now: datetime) -> tuple[Cancellation, bool]:
        return await self.enqueues.submit(_Enqueue(new, now))

    async def apply(
        self,
        cancellation: Cancellation,
        decision: lifecycle.Decision,
        now: datetime,
        *,
        submitted: bool,
    ) -> Cancellation | None:
        return await self.decisions.submit(_Decision(cancellation, decision, now, submitted))

    async def record_webhook(
        self, event: WebhookEvent, now: datetime, *, skew_s: float, settle: bool
    ) -> WebhookRecorded:
        return await self.webhooks.submit(_Webhook(event, now, skew_s, settle))

    # --- one alone: Store's own call ----------------------------------------------------

    async def _enqueue_one(self, item: _Enqueue) -> tuple[Cancellation, bool]:
        return await super().enqueue(item.new, item.now)

    async def _apply_one(self, item: _Decision) -> Cancellation | None:
        return await super().apply(item.row, item.decision, item.now, submitted=item.submitted)

    async def _webhook_one(self, item: _Webhook) -> WebhookRecorded:
        return await super().record_webhook(
            item.event, item.now, skew_s=item.skew_s, settle=item.settle
        )

    # --- a group: one statement ---------------------------------------------------------

    async def _enqueue_group(
        self, items: list[_Enqueue]
    ) -> Sequence[tuple[Cancellation, bool] | Exception]:
        # One `now` for the group, its latest: the moment they are all recorded is later still.
        stored = await self.enqueue_batch(
            [item.new for item in items], max(item.now for item in items), chunk=len(items)
        )
        answers: list[tuple[Cancellation, bool] | Exception] = []
        for found, result in stored:
            try:
                answers.append(enqueued(found, result))
            except errors.Conflict as exc:
                answers.append(exc)
        return answers

    async def _apply_group(self, items: list[_Decision]) -> Sequence[Cancellation | None]:
        order = sorted(range(len(items)), key=lambda i: items[i].row.id)
        rows = [items[i] for i in order]
        async with translate_errors():
            records = await self.pool.fetch(
                Q["apply_decisions"],
                [d.row.id for d in rows],
                [d.row.version for d in rows],
                [d.row.status for d in rows],
                [d.now for d in rows],
                [decision_json(d.decision, d.now) for d in rows],
                [d.submitted for d in rows],
                order,
            )
        results: list[Cancellation | None] = [None] * len(items)
        for record in records:
            if record["id"] is not None:
                position = record["position"]
                results[position] = with_state(items[position].row, record)
        return results

    async def _webhook_group(self, items: list[_Webhook]) -> Sequence[WebhookRecorded]:
        args = [webhook_args(w.event, w.now, skew_s=w.skew_s, settle=w.settle) for w in items]
        # By request (provider, account, resource_id), as enqueue_batch sorts: one lock order.
        order = sorted(range(len(items)), key=lambda i: (args[i][0], args[i][1], args[i][3] or ""))
        columns = [[args[i][k] for i in order] for k in range(12)]
        async with translate_errors():
            records = await self.pool.fetch(Q["record_webhook_events"], *columns, order)
        results: list[WebhookRecorded | None] = [None] * len(items)
        for record in records:
            results[record["position"]] = WebhookRecorded(
                WebhookOutcome(record["outcome"]), record["created_at"]
            )
        assert all(r is not None for r in results), "record_webhook_events lost an item"
        return [r for r in results if r is not None]
