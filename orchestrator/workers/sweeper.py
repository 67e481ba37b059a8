"""Finds cancellations nobody confirmed in time and hands them back to the dispatcher.

One round is pure SQL: expired leases go back to the queue, overdue
`awaiting_confirmation` rows go back flagged `needs_check`, so the dispatcher asks the
provider for the request's status before it sends the cancel again, and retention deletes
what ended longer ago than ORCH_RETENTION_S. Each UPDATE takes its
rows with SKIP LOCKED, so with several instances every overdue row is taken by one of them.

Between rounds, a cheaper check runs every ORCH_OWNER_CHECK_S: the owners of leased rows
whose instance holds no owner lock (store/owner_lock.py). Postgres drops a session's locks
when the session ends, so a crashed instance's rows come back in seconds, not at the end of
their lease. An owner must be seen without its lock for ORCH_OWNER_GRACE_S first: an instance
whose lock connection blinked (a Postgres restart, a failover) re-takes it meanwhile and keeps
its rows. The lease stays the backstop for an instance that is connected but hung.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from orchestrator.clock import Clock
from orchestrator.metrics import Metrics
from orchestrator.store.repository import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepReport:
    leases_expired: int
    overdue: int
    deleted: int = 0
    inbox_deleted: int = 0
    owner_gone: int = 0


class Sweeper:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        *,
        batch: int = 1000,
        retention_s: float = 0.0,
        retention_batch: int = 500,
        served: Callable[[], list[str]] = list,
        on_work: Callable[[], None] = lambda: None,
        metrics: Metrics | None = None,
        owner_grace_s: float = 5.0,
    ) -> None:
        self.served = served
        self.owner_grace_s = owner_grace_s
        #: Owners last seen without their lock, and since when (time.monotonic()).
        self._lockless_since: dict[str, float] = {}
        self._unserved: dict[str, int] = {}
        self.retention_s = retention_s
        self.retention_batch = retention_batch
        self.metrics = metrics or Metrics()
        self.store = store
        self.clock = clock
        self.batch = batch
        self.on_work = on_work

    async def run_once(self, max_batches: int = 10) -> SweepReport:
        """One round: every expired lease and overdue row (up to max_batches batches) requeued."""
        now = self.clock.now()
        leases = overdue = 0
        for _ in range(max_batches):
            requeued = await self.store.requeue_expired_leases(now, self.batch)
            leases += requeued.total
            if requeued.total < self.batch:
                break
        for _ in range(max_batches):
            found = await self.store.requeue_overdue(now, self.batch)
            overdue += found
            if found < self.batch:
                break
        deleted, inbox_deleted = await self._retain(now, max_batches)
        await self._note_unserved()
        await self.store.delete_stale_watches(now, self.batch)
        await self.store.fold_counts()
        self.metrics.swept.labels("lease_expired").inc(leases)
        self.metrics.swept.labels("overdue").inc(overdue)
        if leases or overdue:
            log.info(
                "sweep: %d expired leases and %d overdue cancellations requeued", leases, overdue
            )
            self.on_work()
        return SweepReport(leases, overdue, deleted, inbox_deleted)

    async def release_dead_owners(self, max_batches: int = 10) -> SweepReport:
        """The quick check: rows of owners without their lock for owner_grace_s go back to
        the queue now, through the same requeue as expired leases (which it does too)."""
        seen = time.monotonic()
        lockless = await self.store.owners_without_lock()
        self._lockless_since = {o: self._lockless_since.get(o, seen) for o in lockless}
        gone = [
            o for o, since in self._lockless_since.items() if seen - since >= self.owner_grace_s
        ]
        leases = owner_gone = 0
        for _ in range(max_batches):
            found = await self.store.requeue_expired_leases(self.clock.now(), self.batch, gone)
            leases += found.lease_expired
            owner_gone += found.owner_gone
            if found.total < self.batch:
                break
        self.metrics.swept.labels("lease_expired").inc(leases)
        self.metrics.swept.labels("owner_gone").inc(owner_gone)
        if owner_gone:
            log.warning(
                "%d cancellations of instances that are gone (%s) requeued",
                owner_gone,
                ", ".join(sorted(gone)),
            )
        if leases:
            log.info("%d expired leases requeued", leases)
        if leases or owner_gone:
            self.on_work()
        return SweepReport(leases, 0, owner_gone=owner_gone)

    async def _note_unserved(self) -> None:
        """Queued rows of accounts this instance cannot send through wait for one that can;
        say so when that changes (readiness shows it too)."""
        unserved = await self.store.unserved_accounts(self.served())
        if unserved.keys() != self._unserved.keys():
            if unserved:
                log.warning(
                    "queued cancellations of accounts this instance lacks, left to an instance"
                    " that has them: %s",
                    ", ".join(f"{k} ({n})" for k, n in sorted(unserved.items())),
                )
            else:
                log.info("every queued cancellation's account is served here again")
        self._unserved = unserved

    async def _retain(self, now: datetime, max_batches: int) -> tuple[int, int]:
        """Delete what ended more than retention_s ago, in small batches (short locks)."""
        if not self.retention_s:
            return 0, 0
        before = now - timedelta(seconds=self.retention_s)
        deleted = inbox_deleted = 0
        for _ in range(max_batches):
            rows, events = await self.store.delete_expired(before, self.retention_batch)
            deleted += rows
            inbox_deleted += events
            if rows < self.retention_batch and events < self.retention_batch:
                break
        self.metrics.retention_deleted.labels("cancellations").inc(deleted)
        self.metrics.retention_deleted.labels("inbox_events").inc(inbox_deleted)
        if deleted or inbox_deleted:
            log.info(
                "retention: deleted %d cancellations and %d unused inbox events that ended "
                "before %s",
                deleted,
                inbox_deleted,
                before.isoformat(),
            )
        return deleted, inbox_deleted
