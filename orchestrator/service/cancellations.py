"""The use cases: everything a caller can ask of the orchestrator, one method each.

HTTP handlers, the CLI, the demo and the dashboard call these and only translate; the
store and the adapters below never see a request. Errors are the domain's (errors.*).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from pydantic import ValidationError

from orchestrator import errors, logs
from orchestrator.clock import Clock
from orchestrator.domain import lifecycle
from orchestrator.domain.model import Cancellation, Event
from orchestrator.metrics import Metrics
from orchestrator.providers import base
from orchestrator.providers.registry import WEBHOOK_ROUTES, Accounts
from orchestrator.service.callbacks import CallbackPolicy, check_callback_url
from orchestrator.service.inputs import (
    BatchItem,
    EnqueueRequest,
    EventsQuery,
    ListQuery,
    decode_cursor,
    encode_cursor,
    valid_idempotency_key,
)
from orchestrator.service.overview import Overdue, Overview
from orchestrator.store import migrations
from orchestrator.store.changes import ChangeFeed
from orchestrator.store.repository import NewCancellation, Store, WebhookOutcome

log = logging.getLogger(__name__)

#: A watch outlives its poll by this much, in case the poller dies before removing it; the
#: sweeper deletes what is left.
WATCH_MARGIN_S = 60.0
#: When a long poll refused at the cap is told to ask again (Retry-After, seconds).
LONG_POLL_RETRY_AFTER_S = 2


@dataclass(frozen=True)
class WebhookPolicy:
    """How far a callback is believed (issue 10: replays)."""

    #: Truto events older than this are refused.
    replay_window_s: float = 300.0
    #: How much earlier than a cancellation's first cancel call a settling event may be.
    clock_skew_s: float = 300.0
    #: Providers whose settling events only prompt a status check, never settle.
    confirm_by_status: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Caller:
    """Who asks (issue 16): the history's name for them, the accounts they may act on
    (None: all), and the scope their idempotency keys live in (None: the anonymous one)."""

    actor: str = "anonymous"
    accounts: frozenset[str] | None = None
    scope: str | None = None

    def check_account(self, provider: str, account: str) -> None:
        key = f"{provider}/{account}"
        if self.accounts is not None and key not in self.accounts:
            raise errors.Forbidden(f"{self.actor} may not act on the account {key}", account=key)

    def scoped_key(self, idempotency_key: str | None) -> str | None:
        """The key as stored: a caller's keys never meet another's (0x1f cannot occur in
        a key, which is printable ASCII)."""
        if idempotency_key is None or self.scope is None:
            return idempotency_key
        return f"{self.scope}\x1f{idempotency_key}"


ANONYMOUS = Caller()


@dataclass(frozen=True)
class Enqueued:
    cancellation: Cancellation
    created: bool


@dataclass(frozen=True)
class ItemResult:
    """One item of a batch: enqueued (created, or found), or refused with the error saying
    why; a reused key is refused with the cancellation it was used for."""

    cancellation: Cancellation | None
    created: bool = False
    error: errors.OrchestratorError | None = None


@dataclass(frozen=True)
class Page:
    items: list[Cancellation]
    next: str | None


@dataclass(frozen=True)
class EventsPage:
    items: list[Event]
    next: str | None


@dataclass(frozen=True)
class Readiness:
    ready: bool
    details: dict[str, Any] = field(default_factory=dict)


class Service:
    def __init__(
        self,
        store: Store,
        providers: dict[str, base.Provider],
        accounts: Accounts,
        clock: Clock,
        metrics: Metrics,
        *,
        webhooks: WebhookPolicy | None = None,
        callbacks: CallbackPolicy | None = None,
        on_new_work: Callable[[], None] = lambda: None,
        changes: ChangeFeed | None = None,
        max_long_polls: int = 1000,
    ) -> None:
        self.store = store
        self.providers = providers
        self.accounts = accounts
        self.clock = clock
        self.metrics = metrics
        self.webhooks = webhooks or WebhookPolicy()
        self.callbacks = callbacks or CallbackPolicy()
        self.on_new_work = on_new_work
        self.changes = changes
        #: Long polls may wait at once in this process (ORCH_MAX_LONG_POLLS): each holds a
        #: connection, a watch row and a subscription, so a flood of them is refused early.
        self.max_long_polls = max_long_polls
        self.long_polls = 0

    # --- callers' use cases -------------------------------------------------------------

    async def enqueue(
        self, request: EnqueueRequest, idempotency_key: str | None, caller: Caller = ANONYMOUS
    ) -> Enqueued:
        """Record a cancel (or find the one that answers it) and wake the dispatcher."""
        if idempotency_key is not None and not valid_idempotency_key(idempotency_key):
            raise errors.InvalidRequest.field(
                "Idempotency-Key", "must be 1-255 printable ASCII characters"
            )
        new = self._new_cancellation(request, idempotency_key, caller)
        row, created = await self.store.enqueue(new, self.clock.now())
        self.metrics.enqueued.labels(request.provider, str(created).lower()).inc()
        if created:
            self.on_new_work()
        return Enqueued(row, created)

    async def enqueue_batch(
        self,
        items: Sequence[Any],
        caller: Caller = ANONYMOUS,
        *,
        allowed: int | None = None,
        refused: errors.OrchestratorError | None = None,
    ) -> list[ItemResult]:
        """Enqueue each item as `enqueue` would, in a few transactions rather than one per
        item; a bad item is refused on its own (fields named `items[i].field`). Only the
        first `allowed` items are taken (the caller's rate); the rest are `refused`."""
        results: list[ItemResult | None] = [None] * len(items)
        news: list[NewCancellation] = []
        positions: list[int] = []
        for index, raw in enumerate(items):
            if allowed is not None and index >= allowed and refused is not None:
                results[index] = ItemResult(None, error=refused)
                continue
            try:
                item = BatchItem.model_validate(raw)
                news.append(
                    self._new_cancellation(item.enqueue_request(), item.idempotency_key, caller)
                )
                positions.append(index)
            except ValidationError as exc:
                refused = errors.InvalidRequest.from_validation(exc, f"item {index}")
                results[index] = ItemResult(None, error=_at_item(index, refused))
            except errors.InvalidRequest as exc:
                results[index] = ItemResult(None, error=_at_item(index, exc))
            except errors.OrchestratorError as exc:
                results[index] = ItemResult(None, error=exc)
        stored = await self.store.enqueue_batch(news, self.clock.now()) if news else []
        for index, new, (row, result) in zip(positions, news, stored, strict=True):
            if result in ("created", "existing"):
                created = result == "created"
                self.metrics.enqueued.labels(new.provider, str(created).lower()).inc()
                results[index] = ItemResult(row, created)
            elif result == "key_reused" and row is not None:
                reused = errors.Conflict(
                    f"items[{index}].idempotency_key was used with a different request body",
                    cancellation_id=str(row.id),
                )
                results[index] = ItemResult(row, error=reused)
            else:
                taken = errors.Conflict(
                    f"items[{index}]: a concurrent request took this idempotency key"
                )
                results[index] = ItemResult(None, error=taken)
        if any(r is not None and r.created for r in results):
            self.on_new_work()
        return [r for r in results if r is not None]

    def _new_cancellation(
        self, request: EnqueueRequest, idempotency_key: str | None, caller: Caller
    ) -> NewCancellation:
        """What the store records for a request, once the account and params are checked."""
        provider = self.providers[request.provider]
        account = self.accounts.get(request.provider, request.account)
        if account is None:
            raise errors.InvalidRequest.field(
                "account", f"no {request.provider} account named {request.account!r}"
            )
        caller.check_account(request.provider, request.account)
        params = provider.validate_params(request.params)
        if problem := provider.check_account(account):
            raise errors.ProviderNotConfigured(problem)
        if request.callback_url is not None:
            check_callback_url(request.callback_url, self.callbacks)
        return NewCancellation(
            provider=request.provider,
            account=request.account,
            resource_id=request.resource_id,
            reason=request.reason,
            metadata=request.metadata,
            params=params,
            idempotency_key=caller.scoped_key(idempotency_key),
            request_hash=request.request_hash(),
            callback_url=request.callback_url,
            enqueued_by=caller.actor,
        )

    async def get(self, cancellation_id: uuid.UUID) -> Cancellation:
        row = await self.store.get(cancellation_id)
        if row is None:
            raise errors.NotFound(f"no cancellation {cancellation_id}")
        return row

    async def wait_for_change(
        self,
        cancellation_id: uuid.UUID,
        seen: Collection[str] = (),
        wait_s: float = 0,
        *,
        until_terminal: bool = False,
    ) -> Cancellation:
        """The cancellation once it differs from what the caller has seen (`seen`: entity
        tags; none means the version read now), or as it is after `wait_s`.

        A terminal cancellation is answered at once. With `until_terminal`, only a terminal
        state ends the wait early. Woken by the change feed (LISTEN/NOTIFY), never by a
        sleep loop: each round subscribes first, then reads, then waits, so no change falls
        between the read and the wait."""
        if wait_s <= 0 or self.changes is None:
            return await self.get(cancellation_id)
        if self.long_polls >= self.max_long_polls:
            raise errors.TooManyRequests(
                f"{self.long_polls} long polls are waiting here already, the most this"
                " instance holds (ORCH_MAX_LONG_POLLS); ask again without ?wait, or later",
                retry_after_s=LONG_POLL_RETRY_AFTER_S,
            )
        self.long_polls += 1
        self.metrics.long_polls.inc()
        try:
            return await self._wait(cancellation_id, seen, wait_s, until_terminal)
        finally:
            self.long_polls -= 1
            self.metrics.long_polls.dec()

    async def _wait(
        self, cancellation_id: uuid.UUID, seen: Collection[str], wait_s: float, until_terminal: bool
    ) -> Cancellation:
        assert self.changes is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        known = set(seen)
        # Changes are announced only for watched cancellations (0007): watch before the
        # first read, so a change committed after that read is always announced.
        watcher = uuid.uuid4()
        until = self.clock.now() + timedelta(seconds=wait_s + WATCH_MARGIN_S)
        await self.store.watch(cancellation_id, watcher, until)
        try:
            while True:
                with self.changes.subscribe(cancellation_id) as changed:
                    row = await self.get(cancellation_id)
                    if not known:
                        known = {etag(row)}
                    done = row.status.is_terminal or (
                        not until_terminal and not is_current(row, known)
                    )
                    remaining = deadline - loop.time()
                    if done or remaining <= 0 or self.changes.closed:
                        return row
                    await asyncio.wait([changed], timeout=remaining)
        finally:
            with contextlib.suppress(errors.DatabaseUnavailable):
                await self.store.unwatch(cancellation_id, watcher)

    async def events(
        self, cancellation_id: uuid.UUID, query: EventsQuery | None = None
    ) -> EventsPage:
        """A page of the history, oldest first; `next` is the cursor of the page after it."""
        query = query or EventsQuery.model_validate({})
        after = int(query.after) if query.after else 0
        history = await self.store.events(cancellation_id, after, query.limit + 1)
        if history is None:
            raise errors.NotFound(f"no cancellation {cancellation_id}")
        page = history[: query.limit]
        return EventsPage(page, str(page[-1].id) if len(history) > query.limit else None)

    async def list_cancellations(self, query: ListQuery) -> Page:
        rows = await self.store.list_cancellations(
            status=query.status,
            provider=query.provider,
            resource_id=query.resource_id,
            after=decode_cursor(query.after) if query.after else None,
            limit=query.limit + 1,
        )
        page = rows[: query.limit]
        return Page(page, encode_cursor(page[-1]) if len(rows) > query.limit else None)

    async def stats(self) -> dict[str, Any]:
        return await self.store.stats(self.clock.now())

    async def overview(self, limit: int = 20) -> Overview:
        """The dashboard's front page: counts by status and provider, the overdue (longest
        first), the latest failures and the newest cancellations, `limit` of each."""
        now = self.clock.now()
        overdue = await self.store.overdue(now, limit)
        return Overview(
            at=now,
            totals=await self.stats(),
            by_provider=await self.store.counts_by_provider(),
            overdue=[
                Overdue(row, (now - row.confirm_by).total_seconds())
                for row in overdue
                if row.confirm_by is not None
            ],
            failures=await self.store.recent_failures(limit),
            newest=await self.store.list_cancellations(
                status=None, provider=None, resource_id=None, after=None, limit=limit
            ),
        )

    # --- providers' callbacks -----------------------------------------------------------

    async def receive_webhook(
        self, route: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[str, WebhookOutcome]:
        """Verify, parse and record one callback; returns the acknowledgement the provider
        expects, and what became of the event."""
        provider = WEBHOOK_ROUTES.get(route)
        if provider is None:
            raise errors.WebhookRejected(
                errors.RejectReason.NO_ENDPOINT, f"no webhook endpoint for {route!r}"
            )
        try:
            event = provider.parse_webhook(
                headers,
                body,
                self.accounts.for_provider(provider.name),
                self.clock.now().timestamp(),
                self.webhooks.replay_window_s,
                self.webhooks.clock_skew_s,
            )
        except errors.WebhookRejected as exc:
            self.metrics.webhooks.labels(provider.name, "rejected").inc()
            self.metrics.webhook_rejections.labels(provider.name, exc.reason.value).inc()
            raise
        now = self.clock.now()
        recorded = await self.store.record_webhook(
            event,
            now,
            skew_s=self.webhooks.clock_skew_s,
            settle=provider.name not in self.webhooks.confirm_by_status,
        )
        outcome = recorded.outcome
        self.metrics.webhooks.labels(provider.name, outcome.value).inc()
        if recorded.settled_created_at is not None and event.effect is not None:
            ended = lifecycle.from_webhook(event.effect)
            self.metrics.ended_at(
                provider.name, ended.status, ended.outcome, recorded.settled_created_at, now
            )
        if outcome is WebhookOutcome.CHECK:
            self.on_new_work()
        with logs.bind(provider=provider.name, resource_id=event.resource_id):
            log.debug(
                "webhook %s %s for %s: %s",
                provider.name,
                event.event_type,
                event.resource_id or "-",
                outcome.value,
            )
        return provider.webhook_ack, outcome

    # --- operators' use cases -----------------------------------------------------------

    async def retry(self, cancellation_id: uuid.UUID, reason: str, caller: Caller) -> Cancellation:
        """The next attempt happens now, checking the provider's status first."""
        row = await self.get(cancellation_id)
        caller.check_account(row.provider, row.account)
        decision = lifecycle.retry_now(row.status, self.clock.now(), _action(reason, caller.actor))
        applied = await self._act(row, decision)
        self.on_new_work()
        return applied

    async def abandon(
        self, cancellation_id: uuid.UUID, reason: str, caller: Caller
    ) -> Cancellation:
        """End the cancellation failed, code `abandoned`, with the operator's reason."""
        row = await self.get(cancellation_id)
        caller.check_account(row.provider, row.account)
        decision = lifecycle.abandon(row.status, reason, _action(reason, caller.actor))
        return await self._act(row, decision)

    async def _act(self, row: Cancellation, decision: lifecycle.Decision | str) -> Cancellation:
        if isinstance(decision, str):
            raise errors.Conflict(decision, cancellation_status=row.status.value)
        applied = await self.store.apply(row, decision, self.clock.now(), submitted=False)
        if applied is None:
            raise errors.Conflict(
                "the cancellation changed while the action was being applied; look again"
            )
        self.metrics.transitioned(applied, decision.cause)
        with logs.bind(cancellation_id=row.id, provider=row.provider, resource_id=row.resource_id):
            log.info(
                "%s by %s: %s -> %s (%s)",
                decision.cause,
                decision.evidence.get("by", "?"),
                row.status,
                applied.status,
                decision.evidence.get("reason", ""),
            )
        return applied

    # --- the service itself -------------------------------------------------------------

    async def readiness(self) -> Readiness:
        """Ready when the database answers and its schema is the code's."""
        try:
            current = await self.store.schema_version()
        except errors.DatabaseUnavailable as exc:
            # Why, for whoever is on call: refused, timed out, no free connection, ...
            error = exc.extra.get("error")
            state = "busy or not answering" if error == "PoolTimeout" else "unreachable"
            return Readiness(False, {"database": state, "error": error, "detail": exc.detail})
        expected = migrations.latest_version()
        details: dict[str, Any] = {"database": "ok", "schema": current}
        if current != expected:
            details["expected"] = expected
            return Readiness(False, details)
        unserved = await self.store.unserved_accounts(self.served_accounts())
        if unserved:
            details["unserved_accounts"] = unserved
        return Readiness(True, details)

    def served_accounts(self) -> list[str]:
        """The accounts this instance can send cancels through ("provider:account")."""
        return [
            account.key
            for account in self.accounts.all()
            if self.providers[account.provider].check_account(account) is None
        ]


def _at_item(index: int, exc: errors.InvalidRequest) -> errors.InvalidRequest:
    """The same refusal, its fields named within the batch: `items[3].resource_id`."""
    where = f"items[{index}]"
    fields = [
        {
            **f,
            "field": where if f["field"] == "body" else f"{where}.{f['field']}",
        }
        for f in exc.extra["errors"]
    ]
    names = ", ".join(f["field"] for f in fields)
    return errors.InvalidRequest(f"{where} is invalid: {names}", fields)


def etag(row: Cancellation) -> str:
    """The entity tag of a cancellation's state: its version changes with every change."""
    return f'"{row.id}-v{row.version}"'


def is_current(row: Cancellation, seen: Collection[str]) -> bool:
    """Whether one of the entity tags a caller has seen (or `*`) still describes the row."""
    return "*" in seen or etag(row) in seen


def _action(reason: str, actor: str) -> dict[str, Any]:
    return {"reason": reason, "by": actor}
