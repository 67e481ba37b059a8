"""Claims due cancellations, calls the provider, and records what the answer means.

A claim is a lease plus a fencing token (the row's version). Every write goes through
Store.apply with that version, so a worker whose lease ran out, or whose row a webhook
settled meanwhile, can never overwrite a newer state: its write simply matches no row.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

import aiohttp
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_random_exponential,
)

from orchestrator import errors, logs
from orchestrator.clock import Clock
from orchestrator.domain import lifecycle
from orchestrator.domain.model import Cancellation, Queued, Refused, RetryLater, Settled
from orchestrator.metrics import Metrics
from orchestrator.providers import base
from orchestrator.providers.registry import Accounts
from orchestrator.store.repository import Store
from orchestrator.workers.loop import sleep_or_stop

log = logging.getLogger(__name__)

T = TypeVar("T")

#: In-process tries per provider call before the retry becomes a durable reschedule, and
#: the full-jitter exponential wait between them (up to QUICK_WAIT_S * 2**try, at most
#: QUICK_WAIT_MAX_S).
QUICK_TRIES = 3
QUICK_WAIT_S = 0.1
QUICK_WAIT_MAX_S = 1.0


def worker_id() -> str:
    return f"{socket.gethostname()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class DispatchConfig:
    batch: int = 32
    concurrency: int = 32
    lease_s: float = 90.0
    poll_s: float = 1.0


def _quick_retry(result: object) -> bool:
    """Blips (network, 5xx) are retried at once; an answer that names a wait never is."""
    return isinstance(result, RetryLater) and result.delay_s is None


class Dispatcher:
    def __init__(
        self,
        store: Store,
        http: aiohttp.ClientSession,
        providers: dict[str, base.Provider],
        accounts: Accounts,
        policy: lifecycle.Policy,
        config: DispatchConfig,
        clock: Clock,
        owner: str | None = None,
        rng: random.Random | None = None,
        metrics: Metrics | None = None,
        may_claim: Callable[[], bool] = lambda: True,
    ) -> None:
        self.metrics = metrics or Metrics()
        #: False while this instance's owner lock is not held (store/owner_lock.py): another
        #: instance may then take its rows, so it claims none until the lock is back.
        self.may_claim = may_claim
        self.store = store
        self.http = http
        self.providers = providers
        self.accounts = accounts
        self.policy = policy
        self.config = config
        self.clock = clock
        self.owner = owner or worker_id()
        self.rng = rng or random.Random()
        self._wake = asyncio.Event()
        #: Pauses this process heard of (a 429's wait), checked before every call, so rows
        #: already claimed wait too; other instances learn of them at their next claim.
        self.paused_until: dict[str, datetime] = {}
        self._inflight: set[asyncio.Task[None]] = set()

    def wake(self) -> None:
        """New work exists (an enqueue, a sweep): claim now instead of at the next poll."""
        self._wake.set()

    def served(self) -> dict[str, float | None]:
        """The accounts this instance can send through, with their limits per minute. Rows
        of any other account are left to an instance that has it: they cost no attempt."""
        return {
            account.key: account.rate_limit_per_min
            for account in self.accounts.all()
            if self.providers[account.provider].check_account(account) is None
        }

    async def claim(self, limit: int) -> list[Cancellation]:
        """Lease up to `limit` due rows, each account within its shared budget."""
        return await self.store.claim_due(
            self.clock.now(), limit, self.owner, self.config.lease_s, self.served()
        )

    async def run_once(self) -> int:
        """Claim one batch and see every row of it through; returns how many were claimed."""
        if not self.may_claim():
            return 0
        rows = await self.claim(self.config.batch)
        await asyncio.gather(*(self.process(row) for row in rows))
        return len(rows)

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            # Cleared before claiming: a wake-up that comes while we claim is not lost.
            self._wake.clear()
            free = self.config.concurrency - len(self._inflight)
            claimed: list[Cancellation] = []
            if free > 0 and not self.may_claim():
                await sleep_or_stop(stopping, self.config.poll_s)
                continue
            if free > 0:
                try:
                    claimed = await self.claim(min(free, self.config.batch))
                except errors.DatabaseUnavailable as exc:
                    log.warning("dispatcher: %s", exc.detail)
                    await sleep_or_stop(stopping, self.config.poll_s)
                    continue
                for row in claimed:
                    task = asyncio.create_task(self.process(row), name=f"dispatch-{row.id}")
                    self._inflight.add(task)
                    task.add_done_callback(self._finished)
            if claimed and len(claimed) == min(free, self.config.batch):
                await asyncio.sleep(0)  # more may be due; yield, then claim again
                continue
            waits = [
                asyncio.ensure_future(self._wake.wait()),
                asyncio.ensure_future(stopping.wait()),
            ]
            await asyncio.wait(
                waits, timeout=self.config.poll_s, return_when=asyncio.FIRST_COMPLETED
            )
            for waiter in waits:
                waiter.cancel()

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        if not task.cancelled() and task.exception() is None:
            self._wake.set()  # a slot is free
        elif not task.cancelled():
            log.error("dispatch task %s failed", task.get_name(), exc_info=task.exception())

    async def drain(self, timeout_s: float) -> int:
        """Let in-flight calls finish within the timeout, then give back what is left."""
        if self._inflight:
            await asyncio.wait(set(self._inflight), timeout=timeout_s)
        for task in list(self._inflight):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._inflight, return_exceptions=True)
        released = await self.store.release_leases(self.owner, self.clock.now())
        if released:
            log.info("released %d cancellations still in flight at shutdown", released)
        return released

    # --- one cancellation ---------------------------------------------------------------

    async def process(self, row: Cancellation) -> None:
        with (
            logs.bind(cancellation_id=row.id, provider=row.provider, resource_id=row.resource_id),
            self.metrics.in_flight.track_inprogress(),
        ):
            try:
                await self._process(row)
            except errors.DatabaseUnavailable as exc:
                # An outage, not a bug: the row stays leased to us, so it comes back when the
                # lease ends (or at once if this instance is gone) and is tried again then.
                log.warning(
                    "cancellation %s: the database stayed unavailable (%s); it is tried again"
                    " when its lease ends",
                    row.id,
                    exc.detail,
                )

    async def _process(self, row: Cancellation) -> None:
        decision, submitted = await self._decide(row)
        applied = await self._record(row, decision, submitted)
        if applied is None:
            self.metrics.fenced.inc()
            log.info(
                "cancellation %s changed while attempt %d was in flight; its result (%s) is"
                " dropped",
                row.id,
                row.attempts,
                decision.status,
            )
        else:
            self.metrics.transitioned(applied, decision.cause)
            log.debug("cancellation %s → %s (%s)", row.id, applied.status, decision.cause)

    async def _record(
        self, row: Cancellation, decision: lifecycle.Decision, submitted: bool
    ) -> Cancellation | None:
        try:
            return await self.store.apply(row, decision, self.clock.now(), submitted=submitted)
        except errors.DatabaseUnavailable as exc:
            log.warning("dispatcher: recording %s: %s; retrying", row.id, exc.detail)
        # The provider has answered; losing that answer to a database blip would mean sending
        # the cancel again after the lease, so keep trying while the lease still holds.
        recording = AsyncRetrying(
            stop=stop_after_delay(self.config.lease_s / 2),
            wait=wait_random_exponential(multiplier=0.2, max=3.0),
            retry=retry_if_exception_type(errors.DatabaseUnavailable),
            reraise=True,
        )
        applied: Cancellation | None = await recording(
            self.store.apply, row, decision, self.clock.now(), submitted=submitted
        )
        return applied

    async def _decide(self, row: Cancellation) -> tuple[lifecycle.Decision, bool]:
        """One attempt: a status check first if the row needs one, then the cancel, then a
        status check if the provider refused it. The claim paid for the first call; any
        further call takes its own from the account's budget, or the row goes back."""
        provider = self.providers[row.provider]
        account = self.accounts.get(row.provider, row.account)
        assert account is not None, "claims take only rows of served accounts"
        target = base.Target(row.resource_id, row.reason, row.params)
        attempt = lifecycle.Attempt(row.attempts, row.created_at)
        calls = Calls(self, account, check_pending=row.needs_check)

        if row.needs_check:
            checked = await calls.make(
                "status", lambda: provider.status(self.http, account, target)
            )
            if isinstance(checked, Throttled):
                return checked.decision, False
            calls.check_pending = False
            decision = lifecycle.after_status_check(
                checked, attempt, self.clock.now(), self.policy, self.rng
            )
            if decision is not None:
                return decision, False

        result = await calls.make("cancel", lambda: provider.cancel(self.http, account, target))
        if isinstance(result, Throttled):
            return result.decision, False
        if isinstance(result, Refused):
            checked = await calls.make(
                "status", lambda: provider.status(self.http, account, target)
            )
            if isinstance(checked, Throttled):
                return checked.decision, False
            return (
                lifecycle.after_refusal(
                    result, checked, attempt, self.clock.now(), self.policy, self.rng
                ),
                True,
            )
        decision = lifecycle.after_cancel(result, attempt, self.clock.now(), self.policy, self.rng)
        return decision, isinstance(result, Queued | Settled)


@dataclass(frozen=True)
class Throttled:
    """The account's budget has no call left for this row before `until`."""

    until: datetime
    decision: lifecycle.Decision


class Calls:
    """The provider calls of one attempt: each within the account's shared budget (the
    first was paid by the claim), with a few quick tries for blips, timed in the metrics.

    A plain loop, not a tenacity retrier: building one per call was 3.7% of the service's
    CPU end to end (docs/benchmarks.md), and almost every call needs one try.
    """

    def __init__(
        self, dispatcher: Dispatcher, account: base.Account, *, check_pending: bool
    ) -> None:
        self.d = dispatcher
        self.account = account
        self.paid = 1
        #: A row given back before its status check keeps needing one.
        self.check_pending = check_pending

    async def make(self, operation: str, call: Callable[[], Awaitable[T]]) -> T | Throttled:
        d = self.d
        started = time.perf_counter()
        deadline = started + d.config.lease_s / 4
        for tried in range(1, QUICK_TRIES + 1):
            if throttled := await self._clear(deadline):
                return throttled
            result = await call()
            await self._pause_if_asked(result)
            if not _quick_retry(result) or tried == QUICK_TRIES:
                break
            wait = d.rng.uniform(0, min(QUICK_WAIT_MAX_S, QUICK_WAIT_S * 2**tried))
            if time.perf_counter() + wait >= deadline:
                break
            await asyncio.sleep(wait)
        d.metrics.provider_calls.labels(
            self.account.provider, operation, type(result).__name__
        ).observe(time.perf_counter() - started)
        return result

    async def _clear(self, deadline: float) -> Throttled | None:
        """None when the call may go now. A wait for the account that ends before this
        attempt's deadline is slept out; a longer one gives the row back, so no claimed
        row waits past its lease."""
        while (throttled := await self._pay()) is not None:
            before = self.d.clock.now()
            wait = (throttled.until - before).total_seconds()
            if time.perf_counter() + wait >= deadline:
                return throttled
            await asyncio.sleep(wait)
            if self.d.clock.now() <= before:  # a clock that does not move (a test's)
                return throttled
        return None

    async def _pay(self) -> Throttled | None:
        now = self.d.clock.now()
        paused = self.d.paused_until.get(self.account.key)
        if paused is not None and paused > now:
            evidence = {"account": self.account.key, "paused_until": paused}
            return Throttled(paused, lifecycle.throttled(paused, evidence, self.check_pending))
        if self.paid:
            self.paid -= 1
            return None
        if self.account.rate_limit_per_min is None:
            return None
        wait = await self.d.store.take_call(self.account.key, self.account.rate_limit_per_min, now)
        if wait <= 0:
            return None
        wait = lifecycle.bounded_wait(wait, self.d.policy)
        evidence = {"account": self.account.key, "wait_s": wait}
        until = now + timedelta(seconds=wait)
        return Throttled(until, lifecycle.throttled(until, evidence, self.check_pending))

    async def _pause_if_asked(self, result: object) -> None:
        """A provider's wait holds for every caller of the account, on every instance."""
        if isinstance(result, RetryLater) and result.delay_s:
            now = self.d.clock.now()
            until = now + timedelta(seconds=lifecycle.bounded_wait(result.delay_s, self.d.policy))
            known = self.d.paused_until.get(self.account.key)
            self.d.paused_until[self.account.key] = max(until, known) if known else until
            await self.d.store.pause_account(self.account.key, until, now)
