"""Prometheus metrics (prometheus-client), one registry per app so tests can run several."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


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
            "Cancellation state changes made by the dispatcher, by new status and cause",
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
        self.swept = Counter(
            "orchestrator_swept_total",
            "Rows the sweeper requeued, by reason (lease_expired, overdue)",
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

    def render(self) -> bytes:
        return generate_latest(self.registry)
