"""The narrow boundary to Postgres: rows become dataclasses, driver errors become ours.

Every statement comes from queries.sql. Each public method is one transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from orchestrator import errors
from orchestrator.domain import lifecycle
from orchestrator.domain.model import Cancellation, Event, Settled, Status, WebhookEvent
from orchestrator.domain.webhook_rules import WebhookOutcome as WebhookOutcome  # re-exported
from orchestrator.store import migrations
from orchestrator.store.db import translate_errors
from orchestrator.store.queries import QUERIES as Q


@dataclass(frozen=True, slots=True)
class NewCancellation:
    provider: str
    account: str
    resource_id: str
    reason: str | None
    metadata: dict[str, Any]
    params: dict[str, Any]
    idempotency_key: str | None
    request_hash: str
    callback_url: str | None = None
    #: Who enqueued it ("token:<name>" or "anonymous"), for the history and the callbacks.
    enqueued_by: str | None = None


@dataclass(frozen=True, slots=True)
class WebhookRecorded:
    outcome: WebhookOutcome
    #: When the cancellation the event settled was enqueued (APPLIED only).
    settled_created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class OpenCount:
    """Open cancellations of one provider in one status, and how many of them are due."""

    provider: str
    status: Status
    count: int
    due: int


def _request_key(new: NewCancellation) -> tuple[str, str, str]:
    return (new.provider, new.account, new.resource_id)


#: The columns of cancellation_state (0016) that Cancellation has: what a decision can change.
STATE_FIELDS = (
    "status",
    "outcome",
    "confirmed_via",
    "attempts",
    "version",
    "needs_check",
    "provider_state",
    "next_attempt_at",
    "lease_owner",
    "lease_expires_at",
    "last_error",
    "updated_at",
    "submitted_at",
    "confirm_by",
    "confirmed_at",
    "first_sent_at",
)


_FIELDS = tuple(f.name for f in fields(Cancellation))


def with_state(cancellation: Cancellation, state: Mapping[str, Any]) -> Cancellation:
    """The cancellation with the state apply_decision returned (0016: the state row alone;
    the request's columns never change, so the ones the caller holds are current)."""
    row = {name: getattr(cancellation, name) for name in _FIELDS}
    row.update({name: state[name] for name in STATE_FIELDS})
    return Cancellation.from_row(row)


def enqueued(found: Cancellation | None, result: str) -> tuple[Cancellation, bool]:
    """(it, created) from enqueue_cancellation's answer; a key conflict raises Conflict."""
    if result == "key_reused":
        assert found is not None
        raise errors.Conflict(
            "this Idempotency-Key was used with a different request body",
            cancellation_id=str(found.id),
        )
    if result == "key_taken" or found is None:
        raise errors.Conflict("a concurrent request took this idempotency key")
    return found, result == "created"


def effect_to_json(effect: Settled) -> dict[str, Any]:
    return {
        "outcome": effect.outcome.value,
        "ok": effect.ok,
        "error_code": effect.error_code,
        "error_message": effect.error_message,
        "evidence": effect.evidence,
    }


def decision_json(decision: lifecycle.Decision, now: datetime) -> dict[str, Any]:
    """A decision as the database function apply_decision reads it (migrations/schema.sql);
    keys without a value are left out."""
    data: dict[str, Any] = {
        "status": decision.status.value,
        "cause": decision.cause.value,
        "evidence": decision.evidence,
    }
    if decision.needs_check:
        data["needs_check"] = True
    if decision.refund_attempt:
        data["refund_attempt"] = True
    if decision.next_attempt_at is not None:
        data["next_attempt_at"] = decision.next_attempt_at
    if decision.confirm_by is not None:
        data["confirm_by"] = decision.confirm_by
    if decision.outcome is not None:
        data["outcome"] = decision.outcome.value
    if decision.confirmed_via is not None:
        data["confirmed_via"] = decision.confirmed_via.value
    if decision.provider_state is not None:
        data["provider_state"] = decision.provider_state
    if decision.error is not None:
        data["error"] = {
            "code": decision.error.code,
            "message": decision.error.message,
            "at": now,
        }
        if decision.error.details:
            data["error"]["details"] = decision.error.details
    return data


@dataclass(frozen=True, slots=True)
class Requeued:
    """Leased rows put back in the queue: their lease ran out, or their owner is gone."""

    lease_expired: int
    owner_gone: int

    @property
    def total(self) -> int:
        return self.lease_expired + self.owner_gone


class Store:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    # --- enqueue ------------------------------------------------------------------------

    async def enqueue(self, new: NewCancellation, now: datetime) -> tuple[Cancellation, bool]:
        """Record a cancellation; returns (it, created). Existing answers are returned as-is.

        A stored webhook event for the same request settles the new cancellation at once.
        """
        async with translate_errors():
            record = await self.pool.fetchrow(
                Q["enqueue"],
                uuid.uuid4(),
                new.provider,
                new.account,
                new.resource_id,
                new.reason,
                new.metadata,
                new.params,
                new.idempotency_key,
                new.request_hash,
                now,
                new.callback_url,
                new.enqueued_by,
            )
        assert record is not None
        found = Cancellation.from_row(record) if record["id"] is not None else None
        return enqueued(found, record["result"])

    async def enqueue_batch(
        self, news: list[NewCancellation], now: datetime, *, chunk: int = 250
    ) -> list[tuple[Cancellation | None, str]]:
        """Record many cancellations, `chunk` to a statement (each its own transaction);
        returns (it, result) in the order given, result as enqueue_cancellation says it:
        created, existing, key_reused or key_taken (with no cancellation)."""
        # Sorted by request, so that concurrent batches take their advisory locks in one order.
        order = sorted(range(len(news)), key=lambda i: _request_key(news[i]))
        results: list[tuple[Cancellation | None, str] | None] = [None] * len(news)
        for start in range(0, len(order), chunk):
            part = order[start : start + chunk]
            rows = [news[i] for i in part]
            async with translate_errors():
                records = await self.pool.fetch(
                    Q["enqueue_batch"],
                    [uuid.uuid4() for _ in rows],
                    [n.provider for n in rows],
                    [n.account for n in rows],
                    [n.resource_id for n in rows],
                    [n.reason for n in rows],
                    [n.metadata for n in rows],
                    [n.params for n in rows],
                    [n.idempotency_key for n in rows],
                    [n.request_hash for n in rows],
                    part,
                    [n.callback_url for n in rows],
                    now,
                    [n.enqueued_by for n in rows],
                )
            for record in records:
                found = Cancellation.from_row(record) if record["id"] is not None else None
                results[record["position"]] = (found, record["result"])
        assert all(r is not None for r in results)
        return [r for r in results if r is not None]

    # --- reads --------------------------------------------------------------------------

    async def get(self, cancellation_id: uuid.UUID) -> Cancellation | None:
        async with translate_errors():
            record = await self.pool.fetchrow(Q["get_cancellation"], cancellation_id)
        return Cancellation.from_row(record) if record is not None else None

    async def list_cancellations(
        self,
        *,
        status: str | None,
        provider: str | None,
        resource_id: str | None,
        after: tuple[datetime, uuid.UUID] | None,
        limit: int,
    ) -> list[Cancellation]:
        after_at, after_id = after if after else (None, None)
        async with translate_errors():
            records = await self.pool.fetch(
                Q["list_cancellations"], status, provider, resource_id, after_at, after_id, limit
            )
        return [Cancellation.from_row(r) for r in records]

    async def events(
        self, cancellation_id: uuid.UUID, after: int = 0, limit: int = 1_000_000
    ) -> list[Event] | None:
        """Up to `limit` events of the history after event id `after`, oldest first; None if
        there is no such cancellation."""
        async with translate_errors():
            records = await self.pool.fetch(Q["list_events"], cancellation_id, after, limit)
        if not records:
            return None
        return [
            Event(
                id=r["id"],
                at=r["at"],
                from_status=Status(r["from_status"]) if r["from_status"] else None,
                to_status=Status(r["to_status"]),
                cause=r["cause"],
                evidence=r["evidence"],
            )
            for r in records
            if r["id"] is not None
        ]

    async def stats(self, now: datetime) -> dict[str, Any]:
        async with translate_errors():
            record = await self.pool.fetchrow(Q["stats"], now)
        assert record is not None
        counts = {status.value: int(record["counts"].get(status.value, 0)) for status in Status}
        return {
            "total": sum(counts.values()),
            **counts,
            "overdue": record["overdue"],
            "last_confirmed_at": record["last_confirmed_at"],
        }

    async def counts_by_provider(self) -> dict[str, dict[str, int]]:
        """provider -> status -> how many; providers and statuses without a row are absent."""
        async with translate_errors():
            records = await self.pool.fetch(Q["counts_by_provider"])
        counts: dict[str, dict[str, int]] = {}
        for r in records:
            counts.setdefault(r["provider"], {})[r["status"]] = int(r["n"])
        return counts

    async def overdue(self, now: datetime, limit: int) -> list[Cancellation]:
        async with translate_errors():
            records = await self.pool.fetch(Q["overdue_cancellations"], now, limit)
        return [Cancellation.from_row(r) for r in records]

    async def recent_failures(self, limit: int) -> list[Cancellation]:
        async with translate_errors():
            records = await self.pool.fetch(Q["recent_failures"], limit)
        return [Cancellation.from_row(r) for r in records]

    async def open_counts(self, now: datetime) -> list[OpenCount]:
        """Open rows by provider and status; `due` as of `now` (queries.sql, open_counts)."""
        async with translate_errors():
            records = await self.pool.fetch(Q["open_counts"], now)
        return [OpenCount(r["provider"], Status(r["status"]), r["n"], r["due"]) for r in records]

    async def schema_version(self) -> int | None:
        async with translate_errors(), self.pool.acquire() as conn:
            return await migrations.current_version(conn)

    async def watch(self, cancellation_id: uuid.UUID, watcher: uuid.UUID, until: datetime) -> None:
        """Have the cancellation's changes announced (NOTIFY) until `until` or unwatch()."""
        async with translate_errors():
            await self.pool.execute(Q["watch_cancellation"], cancellation_id, watcher, until)

    async def unwatch(self, cancellation_id: uuid.UUID, watcher: uuid.UUID) -> None:
        async with translate_errors():
            await self.pool.execute(Q["unwatch_cancellation"], cancellation_id, watcher)

    async def delete_stale_watches(self, now: datetime, limit: int) -> int:
        async with translate_errors():
            result: str = await self.pool.execute(Q["delete_stale_watches"], now, limit)
        return int(result.rsplit(" ", 1)[-1])

    async def unserved_accounts(self, served: list[str]) -> dict[str, int]:
        """Queued rows by account, for the accounts not in `served`."""
        async with translate_errors():
            records = await self.pool.fetch(Q["unserved_accounts"], served)
        return {r["account"]: r["queued"] for r in records}

    # --- the dispatcher's side ----------------------------------------------------------

    async def claim_due(
        self,
        now: datetime,
        limit: int,
        owner: str,
        lease_s: float,
        accounts: dict[str, float | None],
    ) -> list[Cancellation]:
        """Lease up to `limit` due rows of `accounts` ("provider:account" -> calls per minute,
        None for no limit), each within its shared budget and none while it is paused."""
        async with translate_errors():
            records = await self.pool.fetch(
                Q["claim_due"], now, limit, owner, lease_s, list(accounts), list(accounts.values())
            )
        return [Cancellation.from_row(r) for r in records]

    async def take_call(self, account: str, per_min: float, now: datetime) -> float:
        """Take one call from the account's budget: 0.0, or the seconds until one is free."""
        async with translate_errors():
            wait: float = await self.pool.fetchval(Q["take_call"], account, per_min, now)
        return wait

    async def pause_account(self, account: str, until: datetime, now: datetime) -> None:
        async with translate_errors():
            await self.pool.execute(Q["pause_account"], account, until, now)

    async def apply(
        self,
        cancellation: Cancellation,
        decision: lifecycle.Decision,
        now: datetime,
        *,
        submitted: bool,
    ) -> Cancellation | None:
        """Carry out a decision; None if the row moved on meanwhile (the fence held)."""
        async with translate_errors():
            record = await self.pool.fetchrow(
                Q["apply_decision"],
                cancellation.id,
                cancellation.version,
                cancellation.status,
                now,
                decision_json(decision, now),
                submitted,
            )
        return with_state(cancellation, record) if record is not None else None

    # --- webhooks -----------------------------------------------------------------------

    async def record_webhook(
        self, event: WebhookEvent, now: datetime, *, skew_s: float, settle: bool
    ) -> WebhookRecorded:
        """Store a verified event once and act on the open cancellation it reports, if any.

        The event settles that cancellation only if `settle` and it is no older than the
        cancellation's first cancel call minus `skew_s`; otherwise it makes the next attempt
        a status check, at most one due or in flight per cancellation
        (domain/webhook_rules.py decides; 0012_rules_from_python.sql carries it out).
        """
        async with translate_errors():
            record = await self.pool.fetchrow(
                Q["record_webhook_event"], *webhook_args(event, now, skew_s=skew_s, settle=settle)
            )
        assert record is not None
        return WebhookRecorded(WebhookOutcome(record["outcome"]), record["created_at"])

    # --- retention ----------------------------------------------------------------------

    async def delete_expired(self, before: datetime, limit: int) -> tuple[int, int]:
        """Delete up to `limit` terminal cancellations that ended before `before` and up to
        `limit` unused inbox events received before it; returns both counts."""
        async with translate_errors():
            cancellations: int = await self.pool.fetchval(
                Q["delete_expired_cancellations"], before, limit
            )
            events: int = await self.pool.fetchval(Q["delete_unused_inbox_events"], before, limit)
        return cancellations, events

    # --- the sweeper's side -------------------------------------------------------------

    async def requeue_expired_leases(
        self, now: datetime, limit: int, gone: list[str] | None = None
    ) -> Requeued:
        """Requeue up to `limit` rows whose lease ran out or whose owner, one of `gone`,
        still holds no owner lock (queries.sql says how that is decided safely)."""
        async with translate_errors():
            record = await self.pool.fetchrow(Q["requeue_expired_leases"], now, limit, gone or [])
        assert record is not None
        return Requeued(record["lease_expired"], record["owner_gone"])

    async def owners_without_lock(self) -> list[str]:
        """Owners of leased rows whose instance holds no owner lock right now."""
        async with translate_errors():
            records = await self.pool.fetch(Q["owners_without_lock"])
        return [r["lease_owner"] for r in records]

    async def requeue_overdue(self, now: datetime, limit: int) -> int:
        async with translate_errors():
            count: int = await self.pool.fetchval(Q["requeue_overdue"], now, limit)
        return count

    async def release_leases(self, owner: str, now: datetime) -> int:
        async with translate_errors():
            count: int = await self.pool.fetchval(Q["release_leases"], owner, now)
        return count

    async def fold_counts(self) -> None:
        async with translate_errors(), self.pool.acquire() as conn, conn.transaction():
            if await conn.fetchval(Q["try_lock_fold"]):
                await conn.execute(Q["fold_counts"])


def webhook_args(
    event: WebhookEvent, now: datetime, *, skew_s: float, settle: bool
) -> tuple[Any, ...]:
    """record_webhook_event's twelve arguments, in its order."""
    effect = decision = None
    if event.effect is not None:
        effect = effect_to_json(event.effect)
        decision = decision_json(lifecycle.from_webhook(event.effect), now)
    event_time = (
        datetime.fromtimestamp(event.event_time, UTC) if event.event_time is not None else None
    )
    return (
        event.provider,
        event.account,
        event.dedupe_key,
        _without_nul(event.resource_id),
        _without_nul(event.event_type),
        event_time,
        effect,
        decision,
        _without_nul(event.payload),
        now,
        timedelta(seconds=skew_s),
        settle,
    )


def _without_nul(value: Any) -> Any:
    """jsonb cannot hold U+0000; a provider's event may (say, in a title). Keep the rest."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    return value
