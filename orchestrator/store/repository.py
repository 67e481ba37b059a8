"""The narrow boundary to Postgres: rows become dataclasses, driver errors become ours.

Every statement comes from queries.sql. Each public method is one transaction.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from orchestrator import errors
from orchestrator.domain import lifecycle
from orchestrator.domain.model import Outcome, Settled, Status, WebhookEvent
from orchestrator.store.db import translate_errors
from orchestrator.store.queries import QUERIES as Q


@dataclass(frozen=True, slots=True)
class Cancellation:
    id: uuid.UUID
    provider: str
    account: str
    resource_id: str
    status: str
    outcome: str | None
    confirmed_via: str | None
    attempts: int
    version: int
    needs_check: bool
    reason: str | None
    metadata: dict[str, Any]
    params: dict[str, Any]
    provider_state: dict[str, Any] | None
    idempotency_key: str | None
    request_hash: str
    next_attempt_at: datetime | None
    lease_owner: str | None
    lease_expires_at: datetime | None
    last_error: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime
    submitted_at: datetime | None
    confirm_by: datetime | None
    confirmed_at: datetime | None

    @classmethod
    def from_record(cls, record: asyncpg.Record) -> Cancellation:
        return cls(**dict(record))


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


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    at: datetime
    from_status: str | None
    to_status: str
    cause: str
    evidence: dict[str, Any]


class WebhookOutcome(enum.StrEnum):
    DUPLICATE = "duplicate"
    APPLIED = "applied"
    STORED = "stored"


def effect_to_json(effect: Settled) -> dict[str, Any]:
    return {
        "outcome": effect.outcome.value,
        "ok": effect.ok,
        "error_code": effect.error_code,
        "error_message": effect.error_message,
        "evidence": effect.evidence,
    }


def effect_from_json(data: dict[str, Any]) -> Settled:
    return Settled(
        Outcome(data["outcome"]),
        bool(data["ok"]),
        dict(data.get("evidence") or {}),
        error_code=data.get("error_code"),
        error_message=data.get("error_message"),
    )


def _error_json(decision: lifecycle.Decision, now: datetime) -> dict[str, Any] | None:
    if decision.error is None:
        return None
    error: dict[str, Any] = {
        "code": decision.error.code,
        "message": decision.error.message,
        "at": now.isoformat(),
    }
    if decision.error.details:
        error["details"] = decision.error.details
    return error


class Store:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    # --- enqueue ------------------------------------------------------------------------

    async def enqueue(self, new: NewCancellation, now: datetime) -> tuple[Cancellation, bool]:
        """Record a cancellation; returns (it, created). Existing answers are returned as-is.

        A stored webhook event for the same request settles the new cancellation at once.
        """
        async with translate_errors(), self.pool.acquire() as conn, conn.transaction():
            await conn.execute(Q["lock_resource"], new.provider, new.account, new.resource_id)
            existing = await self._existing(conn, new)
            if existing is not None:
                return existing, False
            record = await conn.fetchrow(
                Q["insert_cancellation"],
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
                {"reason": new.reason} if new.reason else {},
            )
            if record is None:
                # Lost a race on the idempotency key with a request for another resource.
                existing = await self._existing(conn, new)
                if existing is None:
                    raise errors.Conflict("a concurrent request took this idempotency key")
                return existing, False
            created = Cancellation.from_record(record)
            pending = await conn.fetchrow(
                Q["pending_event_for_resource"], new.provider, new.account, new.resource_id
            )
            if pending is not None:
                effect = effect_from_json(pending["effect"])
                settled = await self._settle(conn, created, effect, pending["id"], now)
                created = settled or created
            return created, True

    async def _existing(
        self, conn: asyncpg.Connection, new: NewCancellation
    ) -> Cancellation | None:
        if new.idempotency_key is not None:
            record = await conn.fetchrow(Q["find_by_idempotency_key"], new.idempotency_key)
            if record is not None:
                if record["request_hash"] != new.request_hash:
                    raise errors.Conflict(
                        "this Idempotency-Key was used with a different request body",
                        cancellation_id=str(record["id"]),
                    )
                return Cancellation.from_record(record)
        record = await conn.fetchrow(
            Q["find_open_for_resource"], new.provider, new.account, new.resource_id
        )
        return Cancellation.from_record(record) if record is not None else None

    # --- reads --------------------------------------------------------------------------

    async def get(self, cancellation_id: uuid.UUID) -> Cancellation | None:
        async with translate_errors():
            record = await self.pool.fetchrow(Q["get_cancellation"], cancellation_id)
        return Cancellation.from_record(record) if record is not None else None

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
        return [Cancellation.from_record(r) for r in records]

    async def events(self, cancellation_id: uuid.UUID) -> list[Event]:
        async with translate_errors():
            records = await self.pool.fetch(Q["list_events"], cancellation_id)
        return [Event(**dict(r)) for r in records]

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

    async def ping(self) -> None:
        async with translate_errors():
            await self.pool.fetchval(Q["ping"])

    # --- the dispatcher's side ----------------------------------------------------------

    async def claim_due(
        self,
        now: datetime,
        limit: int,
        owner: str,
        lease_s: float,
        *,
        exclude: list[str],
        only: list[str] | None = None,
    ) -> list[Cancellation]:
        """Lease up to `limit` due rows; accounts are named "provider:account"."""
        async with translate_errors():
            records = await self.pool.fetch(
                Q["claim_due"], now, limit, owner, exclude, lease_s, only
            )
        return [Cancellation.from_record(r) for r in records]

    async def apply(
        self,
        cancellation: Cancellation,
        decision: lifecycle.Decision,
        now: datetime,
        *,
        submitted: bool,
    ) -> Cancellation | None:
        """Carry out a decision; None if the row moved on meanwhile (the fence held)."""
        async with translate_errors(), self.pool.acquire() as conn:
            return await self._apply(conn, cancellation, decision, now, submitted=submitted)

    async def _apply(
        self,
        conn: asyncpg.Connection,
        cancellation: Cancellation,
        decision: lifecycle.Decision,
        now: datetime,
        *,
        submitted: bool,
    ) -> Cancellation | None:
        record = await conn.fetchrow(
            Q["apply_decision"],
            cancellation.id,
            cancellation.version,
            decision.status.value,
            now,
            decision.next_attempt_at,
            decision.confirm_by,
            decision.outcome.value if decision.outcome else None,
            decision.confirmed_via.value if decision.confirmed_via else None,
            _error_json(decision, now),
            decision.provider_state,
            submitted,
            cancellation.status,
            decision.cause,
            decision.evidence,
        )
        return Cancellation.from_record(record) if record is not None else None

    # --- webhooks -----------------------------------------------------------------------

    async def record_webhook(self, event: WebhookEvent, now: datetime) -> WebhookOutcome:
        """Store a verified event once and settle the open cancellation it reports, if any."""
        effect = effect_to_json(event.effect) if event.effect else None
        payload = _without_nul(event.payload)
        event_time = (
            datetime.fromtimestamp(event.event_time, UTC) if event.event_time is not None else None
        )
        async with translate_errors(), self.pool.acquire() as conn, conn.transaction():
            if event.resource_id is not None:
                await conn.execute(
                    Q["lock_resource"], event.provider, event.account, event.resource_id
                )
            inbox_id = await conn.fetchval(
                Q["insert_inbox_event"],
                event.provider,
                event.account,
                event.dedupe_key,
                _without_nul(event.resource_id),
                _without_nul(event.event_type),
                event_time,
                effect,
                payload,
                now,
            )
            if inbox_id is None:
                return WebhookOutcome.DUPLICATE
            if event.effect is None or event.resource_id is None:
                return WebhookOutcome.STORED
            record = await conn.fetchrow(
                Q["find_open_for_resource"], event.provider, event.account, event.resource_id
            )
            if record is None:
                return WebhookOutcome.STORED
            target = Cancellation.from_record(record)
            await self._settle(conn, target, event.effect, inbox_id, now)
            return WebhookOutcome.APPLIED

    async def _settle(
        self,
        conn: asyncpg.Connection,
        target: Cancellation,
        effect: Settled,
        inbox_id: int,
        now: datetime,
    ) -> Cancellation | None:
        """Settle an open cancellation by a stored event, and mark the request's pending
        events as used by it. Shared by a webhook that finds the cancellation open and an
        enqueue that finds the event already stored."""
        decision = _with_evidence(lifecycle.from_webhook(effect), {"inbox_event_id": inbox_id})
        settled = await self._apply(conn, target, decision, now, submitted=False)
        await conn.execute(
            Q["mark_events_processed"],
            target.provider,
            target.account,
            target.resource_id,
            now,
            target.id,
        )
        return settled

    # --- the sweeper's side -------------------------------------------------------------

    async def requeue_expired_leases(self, now: datetime, limit: int) -> int:
        async with translate_errors():
            count: int = await self.pool.fetchval(Q["requeue_expired_leases"], now, limit)
        return count

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


def _without_nul(value: Any) -> Any:
    """jsonb cannot hold U+0000; a provider's event may (say, in a title). Keep the rest."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    return value


def _with_evidence(decision: lifecycle.Decision, extra: dict[str, Any]) -> lifecycle.Decision:
    from dataclasses import replace

    return replace(decision, evidence={**decision.evidence, **extra})
