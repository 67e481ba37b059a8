"""The use cases, above the store and the providers (cancellations.py), and what they accept
(inputs.py)."""

from orchestrator.service.cancellations import (
    ANONYMOUS,
    Caller,
    Enqueued,
    EventsPage,
    ItemResult,
    Page,
    Readiness,
    Service,
    WebhookPolicy,
    etag,
    is_current,
)
from orchestrator.service.inputs import (
    ActionRequest,
    BatchItem,
    BatchRequest,
    EnqueueRequest,
    EventsQuery,
    ListQuery,
    WaitQuery,
)
from orchestrator.service.overview import Overdue, Overview

__all__ = [
    "ANONYMOUS",
    "ActionRequest",
    "BatchItem",
    "BatchRequest",
    "Caller",
    "EnqueueRequest",
    "Enqueued",
    "EventsPage",
    "EventsQuery",
    "ItemResult",
    "ListQuery",
    "Overdue",
    "Overview",
    "Page",
    "Readiness",
    "Service",
    "WaitQuery",
    "WebhookPolicy",
    "etag",
    "is_current",
]
