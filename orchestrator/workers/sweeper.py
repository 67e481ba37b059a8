"""Finds cancellations nobody confirmed in time and hands them back to the dispatcher.

One round is pure SQL: expired leases go back to the queue, and overdue
`awaiting_confirmation` rows go back flagged `needs_check`, so the dispatcher asks the
provider for the request's status before it sends the cancel again. Each UPDATE takes its
rows with SKIP LOCKED, so with several instances every overdue row is taken by one of them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from orchestrator.clock import Clock
from orchestrator.metrics import Metrics
from orchestrator.store.repository import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepReport:
    leases_expired: int
    overdue: int


class Sweeper:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        *,
        batch: int = 1000,
        on_work: Callable[[], None] = lambda: None,
        metrics: Metrics | None = None,
    ) -> None:
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
            found = await self.store.requeue_expired_leases(now, self.batch)
            leases += found
            if found < self.batch:
                break
        for _ in range(max_batches):
            found = await self.store.requeue_overdue(now, self.batch)
            overdue += found
            if found < self.batch:
                break
        await self.store.fold_counts()
        self.metrics.swept.labels("lease_expired").inc(leases)
        self.metrics.swept.labels("overdue").inc(overdue)
        if leases or overdue:
            log.info(
                "sweep: %d expired leases and %d overdue cancellations requeued", leases, overdue
            )
            self.on_work()
        return SweepReport(leases, overdue)
