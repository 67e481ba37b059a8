"""The use cases, above the store and the providers (cancellations.py), and what they accept
(inputs.py)."""

from orchestrator.service.cancellations import (
    Enqueued,
    Page,
    Readiness,
    Service,
    WebhookPolicy,
    etag,
    is_current,
)
from orchestrator.service.inputs import ActionRequest, EnqueueRequest, ListQuery, WaitQuery
from orchestrator.service.overview import Overdue, Overview

__all__ = [
    "ActionRequest",
    "EnqueueRequest",
    "Enqueued",
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
