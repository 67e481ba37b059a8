"""Reads the database-wide gauges (queue depth, awaiting confirmation, overdue) on an interval.

One grouped statement every ORCH_METRICS_INTERVAL_S instead of counting on every scrape, so
neither a scraper nor several of them can load the database.
"""

from __future__ import annotations

from orchestrator.clock import Clock
from orchestrator.metrics import Metrics
from orchestrator.store.repository import OpenCount, Store


class GaugeReader:
    def __init__(self, store: Store, clock: Clock, metrics: Metrics) -> None:
        self.store = store
        self.clock = clock
        self.metrics = metrics

    async def run_once(self) -> list[OpenCount]:
        now = self.clock.now()
        counts = await self.store.open_counts(now)
        self.metrics.set_open_counts(counts, now)
        return counts
