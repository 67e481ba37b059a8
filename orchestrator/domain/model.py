"""The vocabulary of a cancellation: statuses, outcomes and what providers answer.

Pure: no I/O and no imports from the rest of the package, so every rule can be tested
with a table of cases.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any


class ProviderName(enum.StrEnum):
    DROPBOX_SIGN = "dropbox_sign"
    TRUTO = "truto"
    APTLY = "aptly"


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


Evidence = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Cancellation:
    """One row of `cancellations`, field for column (a test holds the two together)."""

    id: uuid.UUID
    provider: ProviderName
    account: str
    resource_id: str
    status: Status
    outcome: Outcome | None
    confirmed_via: ConfirmedVia | None
    attempts: int
    version: int
    needs_check: bool
    reason: str | None
    metadata: dict[str, Any]
    params: dict[str, Any]
    provider_state: dict[str, Any] | None
    idempotency_key: str | None
    request_hash: str
    next_attempt_at: datetime | None
    lease_owner: str | None
    lease_expires_at: datetime | None
    last_error: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime
    submitted_at: datetime | None
    confirm_by: datetime | None
    confirmed_at: datetime | None
    #: When the first attempt was claimed: callbacks older than this (less the allowed
    #: clock skew) cannot be about our cancel.
    first_sent_at: datetime | None
    #: Where to POST the cancellation once it ends (0006_completion_callbacks.sql).
    callback_url: str | None
    #: Who the callbacks are signed for: the enqueuing token's name (0008_who_acted.sql).
    callback_receiver: str | None = None
    #: The cause and evidence of the transition being written, set by its writer in the same
    #: statement; the trigger record_transition (0011) moves them into the history and clears
    #: them (an enqueued row keeps the enqueue's until its first update). Not for reading.
    transition_cause: str | None = None
    transition_evidence: dict[str, Any] | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Cancellation:
        """From a mapping of column name to value; the enums are checked here."""
        values = {name: row[name] for name in _CANCELLATION_FIELDS}
        values["provider"] = ProviderName(values["provider"])
        values["status"] = Status(values["status"])
        if values["outcome"] is not None:
            values["outcome"] = Outcome(values["outcome"])
        if values["confirmed_via"] is not None:
            values["confirmed_via"] = ConfirmedVia(values["confirmed_via"])
        return cls(**values)

    @property
    def key(self) -> str:
        """The provider account this cancellation is sent through, as "provider:account"."""
        return f"{self.provider}:{self.account}"


_CANCELLATION_FIELDS = tuple(f.name for f in fields(Cancellation))


@dataclass(frozen=True, slots=True)
class Event:
    """One transition in a cancellation's history."""

    id: int
    at: datetime
    from_status: Status | None
    to_status: Status
    cause: str
    evidence: dict[str, Any]


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
    #: The request may have reached the provider (a timeout, a reset, a 5xx): the next
    #: attempt checks the request's status before it reads a refusal as final.
    may_have_landed: bool = False


@dataclass(frozen=True)
class Refused:
    """The provider refused the cancel (a 4xx other than "gone" or "not found"). What that
    means depends on the request's state, so a status check decides: a request already
    canceled by an earlier attempt whose answer was lost is not a failure."""

    code: str
    message: str
    evidence: Evidence = field(default_factory=dict)
    details: dict[str, Any] | None = None


@dataclass(frozen=True)
class StillOpen:
    """A status check found the request still open: the cancel must be sent (again)."""

    evidence: Evidence = field(default_factory=dict)


CancelResult = Queued | Settled | RetryLater | Refused
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
