"""The vocabulary of a cancellation: statuses, outcomes and what providers answer.

Pure: no I/O and no imports from the rest of the package, so every rule can be tested
with a table of cases.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Status(enum.StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    AWAITING_CONFIRMATION = "awaiting_confirmation"
    CONFIRMED = "confirmed"
    FAILED = "failed"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({Status.CONFIRMED, Status.FAILED})
OPEN = frozenset(Status) - TERMINAL


class ConfirmedVia(enum.StrEnum):
    WEBHOOK = "webhook"
    PROVIDER_RESPONSE = "provider_response"
    RECONCILIATION = "reconciliation"


class Outcome(enum.StrEnum):
    """What became of the signature request (or workflow, or action) at the provider."""

    CANCELED = "canceled"
    DECLINED = "declined"
    EXPIRED = "expired"
    COMPLETED = "completed"
    NOT_FOUND = "not_found"
    NOT_CANCELABLE = "not_cancelable"
    UNKNOWN = "unknown"


Evidence = dict[str, Any]


# --- What a provider call can tell us -------------------------------------------------


@dataclass(frozen=True)
class Queued:
    """The provider accepted the cancel but confirms it later (Dropbox Sign's 200)."""

    evidence: Evidence = field(default_factory=dict)


@dataclass(frozen=True)
class Settled:
    """The request reached a final state at the provider; `ok`: is that what we wanted?"""

    outcome: Outcome
    ok: bool
    evidence: Evidence = field(default_factory=dict)
    provider_state: dict[str, Any] | None = None
    error_code: str | None = None
    error_message: str | None = None
    error_details: dict[str, Any] | None = None


@dataclass(frozen=True)
class RetryLater:
    """A transient failure: network, timeout, 429, 5xx. `delay_s` is the provider's hint, if any."""

    code: str
    message: str
    delay_s: float | None = None
    evidence: Evidence = field(default_factory=dict)
    details: dict[str, Any] | None = None


@dataclass(frozen=True)
class StillOpen:
    """A status check found the request still open: the cancel must be sent (again)."""

    evidence: Evidence = field(default_factory=dict)


CancelResult = Queued | Settled | RetryLater
StatusResult = Settled | StillOpen | RetryLater


@dataclass(frozen=True)
class WebhookEvent:
    """A verified provider event, reduced to what the lifecycle needs."""

    provider: str
    account: str
    resource_id: str | None
    event_type: str
    event_time: float | None
    dedupe_key: str
    payload: dict[str, Any]
    effect: Settled | None = None
