"""Prometheus metrics (prometheus-client), one registry per app so tests can run several.

Labels are bounded sets (provider, status, outcome, cause, reason), never an id. The gauges
of open cancellations describe the whole database, not this process: workers/gauges.py
reads them on an interval, so every instance reports the same values (aggregate with max).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from orchestrator.domain.model import Cancellation, Outcome, ProviderName, Status
from orchestrator.store.repository import OpenCount

#: Enqueue to terminal status: a second to three days (ORCH_RETRY_FOR_S's default).
TIME_TO_TERMINAL_BUCKETS = (
    1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 43200, 86400, 172800, 259200,
)  # fmt: skip


#: Items per shared commit: a lone request is 1; store/flusher.py caps a group at 256.
COMMIT_GROUP_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.enqueued = Counter(
            "orchestrator_enqueued_total",
            "Enqueue requests, by provider and whether they created a cancellation",
            ["provider", "created"],
            registry=self.registry,
        )
        self.transitions = Counter(
            "orchestrator_transitions_total",
            "Cancellation state changes made by the dispatcher and operators' actions,"
            " by new status and cause",
            ["status", "cause"],
            registry=self.registry,
        )
        self.fenced = Counter(
            "orchestrator_fenced_results_total",
            "Provider answers dropped because the row changed meanwhile (lease lost, webhook won)",
            registry=self.registry,
        )
        self.provider_calls = Histogram(
            "orchestrator_provider_call_seconds",
            "Provider calls (with their quick retries), by provider, operation and result",
            ["provider", "operation", "result"],
            registry=self.registry,
        )
        self.webhooks = Counter(
            "orchestrator_webhooks_total",
            "Webhooks received, by provider and outcome (applied, stored, duplicate, rejected)",
            ["provider", "outcome"],
            registry=self.registry,
        )
        self.webhook_rejections = Counter(
            "orchestrator_webhook_rejections_total",
            "Webhooks refused, by provider and reason (signature, stale, malformed, ...)",
            ["provider", "reason"],
            registry=self.registry,
        )
        self.retention_deleted = Counter(
            "orchestrator_retention_deleted_total",
            "Rows deleted by retention, by kind (cancellations, inbox_events)",
            ["kind"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "orchestrator_dispatch_in_flight",
            "Cancellations this process is sending right now",
            registry=self.registry,
        )
        self.long_polls = Gauge(
            "orchestrator_long_polls_waiting",
            "Long polls (GET /v1/cancellations/{id}?wait=) waiting in this process now",
            registry=self.registry,
        )
        self.swept = Counter(
            "orchestrator_swept_total",
            "Rows the sweeper requeued, by reason (lease_expired, owner_gone, overdue)",
            ["reason"],
            registry=self.registry,
        )
        self.callback_attempts = Counter(
            "orchestrator_callback_attempts_total",
            "Completion callback attempts, by cause (callback_delivered, callback_failed, "
            "callback_gave_up)",
            ["cause"],
            registry=self.registry,
        )

        # Shared commits (issue 18, store/flusher.py).
        self.commit_groups = Histogram(
            "orchestrator_commit_group_size",
            "Items written by one shared commit, by kind (enqueue, decision, webhook) and"
            " whether the group failed and each item was then written alone (fell_back)",
            ["kind", "fell_back"],
            buckets=COMMIT_GROUP_BUCKETS,
            registry=self.registry,
        )

        self.time_to_terminal = Histogram(
            "orchestrator_time_to_terminal_seconds",
            "Seconds from enqueue to a terminal status, by provider, status and outcome"
            " (none: failed without one), observed by the instance that recorded the end",
            ["provider", "status", "outcome"],
            buckets=TIME_TO_TERMINAL_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "orchestrator_queue_depth",
            "Queued cancellations by provider, due now or later (database-wide, read on an"
            " interval)",
            ["provider", "due"],
            registry=self.registry,
        )
        self.sending = Gauge(
            "orchestrator_sending",
            "Cancellations leased to a worker by provider (database-wide, read on an interval)",
            ["provider"],
            registry=self.registry,
        )
        self.leases_expired = Gauge(
            "orchestrator_leases_expired",
            "Leased cancellations whose lease ran out, by provider, until the sweeper requeues"
            " them (database-wide, read on an interval)",
            ["provider"],
            registry=self.registry,
        )
        self.awaiting_confirmation = Gauge(
            "orchestrator_awaiting_confirmation",
            "Cancellations sent and awaiting the provider's confirmation, by provider"
            " (database-wide, read on an interval)",
            ["provider"],
            registry=self.registry,
        )
        self.overdue = Gauge(
            "orchestrator_confirmation_overdue",
            "Cancellations awaiting confirmation past their confirm_by, by provider, until the"
            " sweeper requeues them (database-wide, read on an interval)",
            ["provider"],
            registry=self.registry,
        )
        self.gauges_read_at = Gauge(
            "orchestrator_gauges_read_timestamp_seconds",
            "When the database-wide gauges were last read (Unix time); stale if it lags",
            registry=self.registry,
        )

    def transitioned(self, row: Cancellation, cause: str) -> None:
        """Count a transition this process just applied (the one place `transitions` is
        counted), and observe its time to terminal if it ended the cancellation."""
        self.transitions.labels(row.status, cause).inc()
        self.ended(row)

    def ended(self, row: Cancellation) -> None:
        """Observe the time to terminal of a row this process just moved to a terminal status."""
        if row.status.is_terminal:
            self.ended_at(row.provider, row.status, row.outcome, row.created_at, row.updated_at)

    def ended_at(
        self,
        provider: str,
        status: Status,
        outcome: Outcome | None,
        created_at: datetime,
        ended_at: datetime,
    ) -> None:
        self.time_to_terminal.labels(provider, status.value, outcome or "none").observe(
            max(0.0, (ended_at - created_at).total_seconds())
        )

    def set_open_counts(self, counts: Iterable[OpenCount], now: datetime) -> None:
        """Every provider's gauges, zero where the database has no row (series never vanish)."""
        values: dict[tuple[str, Status], OpenCount] = {(c.provider, c.status): c for c in counts}
        for provider in ProviderName:
            queued = values.get((provider, Status.QUEUED))
            sending = values.get((provider, Status.SENDING))
            awaiting = values.get((provider, Status.AWAITING_CONFIRMATION))
            self.queue_depth.labels(provider, "now").set(queued.due if queued else 0)
            self.queue_depth.labels(provider, "later").set(
                queued.count - queued.due if queued else 0
            )
            self.sending.labels(provider).set(sending.count if sending else 0)
            self.leases_expired.labels(provider).set(sending.due if sending else 0)
            self.awaiting_confirmation.labels(provider).set(awaiting.count if awaiting else 0)
            self.overdue.labels(provider).set(awaiting.due if awaiting else 0)
        self.gauges_read_at.set(now.timestamp())

    def flushed(self, kind: str, size: int, fell_back: bool) -> None:
        """A shared commit of `size` items of `kind` (SharedStore's on_flush)."""
        self.commit_groups.labels(kind, str(fell_back).lower()).observe(size)

    def render(self) -> bytes:
        return generate_latest(self.registry)
