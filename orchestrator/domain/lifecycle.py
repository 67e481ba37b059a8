"""The state machine: from (what happened, the attempt, now) to a decision.

Every legal transition is listed once, in TRANSITIONS; the dispatcher, the sweeper, the
webhook receiver and the admin actions carry decisions out, and the SQL that moves rows in
bulk (claims, requeues) writes only transitions listed here: Postgres refuses any other
(migration 0011's cancellation_transitions, a copy of this table kept equal by a test).
What a provider's callback does (settle, check first, or leave it to the attempt in flight)
is decided here too, by the pure rules of the sibling module webhook_rules.py, which Postgres
looks up in tables kept equal to them (migration 0012) instead of deciding in plpgsql.
Times are passed in, never read, so the 72-hour path is tested without waiting 72 hours.
"""

from __future__ import annotations

import enum
import math
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from orchestrator.domain.model import (
    ConfirmedVia,
    Evidence,
    Outcome,
    Queued,
    Refused,
    RetryLater,
    Settled,
    Status,
    StatusResult,
    StillOpen,
)

EXHAUSTED = "exhausted"
ABANDONED = "abandoned"


class Cause(enum.StrEnum):
    """Why a transition happened; the `cause` of each history row."""

    ENQUEUED = "enqueued"
    CLAIMED = "claimed"
    PROVIDER_QUEUED_CANCEL = "provider_queued_cancel"
    PROVIDER_ANSWERED = "provider_answered"
    STATUS_CHECK = "status_check"
    RETRY_SCHEDULED = "retry_scheduled"
    GAVE_UP = "gave_up"
    LEASE_EXPIRED = "lease_expired"
    #: The claiming instance holds no owner lock any more: it died (workers/sweeper.py).
    OWNER_GONE = "owner_gone"
    RELEASED_ON_SHUTDOWN = "released_on_shutdown"
    THROTTLED = "throttled"
    CONFIRMATION_OVERDUE = "confirmation_overdue"
    WEBHOOK = "webhook"
    WEBHOOK_NEEDS_CHECK = "webhook_needs_check"
    RETRY_REQUESTED = "retry_requested"
    ABANDONED = "abandoned"


_Q, _S, _A = Status.QUEUED, Status.SENDING, Status.AWAITING_CONFIRMATION
_C, _F = Status.CONFIRMED, Status.FAILED
OPEN = (_Q, _S, _A)

#: (from, to, cause): every transition a cancellation may make. None is "not yet recorded".
TRANSITIONS: frozenset[tuple[Status | None, Status, Cause]] = frozenset(
    {
        (None, _Q, Cause.ENQUEUED),
        (_Q, _S, Cause.CLAIMED),
        (_S, _A, Cause.PROVIDER_QUEUED_CANCEL),
        (_S, _C, Cause.PROVIDER_ANSWERED),
        (_S, _F, Cause.PROVIDER_ANSWERED),
        (_S, _C, Cause.STATUS_CHECK),
        (_S, _F, Cause.STATUS_CHECK),
        (_S, _Q, Cause.RETRY_SCHEDULED),
        (_S, _F, Cause.GAVE_UP),
        (_S, _Q, Cause.LEASE_EXPIRED),
        (_S, _Q, Cause.OWNER_GONE),
        (_S, _Q, Cause.RELEASED_ON_SHUTDOWN),
        (_S, _Q, Cause.THROTTLED),
        (_A, _Q, Cause.CONFIRMATION_OVERDUE),
        (_A, _Q, Cause.WEBHOOK_NEEDS_CHECK),
        (_Q, _Q, Cause.WEBHOOK_NEEDS_CHECK),
        (_Q, _Q, Cause.RETRY_REQUESTED),
        (_A, _Q, Cause.RETRY_REQUESTED),
    }
    | {(status, end, Cause.WEBHOOK) for status in OPEN for end in (_C, _F)}
    | {(status, _F, Cause.ABANDONED) for status in OPEN}
)


def is_legal(from_status: Status | None, to_status: Status, cause: str) -> bool:
    return (from_status, to_status, cause) in TRANSITIONS


@dataclass(frozen=True)
class Policy:
    #: How long after the enqueue the orchestrator keeps trying before it gives up.
    retry_for_s: float = 259_200.0
    #: An optional cap on attempts besides the time limit; 0 means none.
    max_attempts: int = 0
    confirm_timeout_s: float = 3600.0
    backoff_base_s: float = 2.0
    backoff_max_s: float = 900.0
    #: The longest wait a provider's hint (Retry-After, a rate-limit reset) may impose.
    max_provider_wait_s: float = 3600.0


@dataclass(frozen=True)
class Attempt:
    """The attempt being decided: its number (this one included) and when the cancel was
    enqueued, from which the time limit runs."""

    number: int
    enqueued_at: datetime


@dataclass(frozen=True)
class ErrorInfo:
    code: str
    message: str
    details: dict[str, Any] | None = None


@dataclass(frozen=True)
class Decision:
    """A transition to carry out. `cause` names why, for the events history."""

    status: Status
    cause: Cause
    evidence: Evidence = field(default_factory=dict)
    next_attempt_at: datetime | None = None
    confirm_by: datetime | None = None
    outcome: Outcome | None = None
    confirmed_via: ConfirmedVia | None = None
    error: ErrorInfo | None = None
    provider_state: dict[str, Any] | None = None
    #: The next attempt asks the provider for the request's status before it cancels.
    needs_check: bool = False
    #: The attempt this claim counted did not happen (the row was given back unsent).
    refund_attempt: bool = False


def bounded_wait(seconds: float, policy: Policy) -> float:
    """A provider's wait hint as a wait we keep to: never negative, never longer than the
    policy allows, and a hint that is not a finite number is read as the longest wait."""
    if not math.isfinite(seconds):
        return policy.max_provider_wait_s
    return min(max(seconds, 0.0), policy.max_provider_wait_s)


def backoff_s(
    attempts: int, policy: Policy, hint_s: float | None = None, rng: random.Random | None = None
) -> float:
    """Exponential backoff with equal jitter; a provider's hint is a floor, never shortened
    (but bounded, see bounded_wait)."""
    rng = rng or random.Random()
    exponent = min(max(attempts - 1, 0), 62)  # past this the cap applies anyway; no overflow
    ceiling = min(policy.backoff_max_s, policy.backoff_base_s * 2**exponent)
    delay = ceiling / 2 + rng.uniform(0, ceiling / 2)
    if hint_s is not None and not hint_s <= 0:  # NaN included: bounded_wait reads it
        hint = bounded_wait(hint_s, policy)
        delay = max(delay, hint + rng.uniform(0, min(1.0, hint * 0.1)))
    return float(delay)


def deadline(attempt: Attempt, policy: Policy) -> datetime:
    return attempt.enqueued_at + timedelta(seconds=policy.retry_for_s)


def _out_of_tries(attempt: Attempt, now: datetime, policy: Policy) -> str | None:
    """Why no further attempt may follow this one, or None."""
    if now >= deadline(attempt, policy):
        return f"still failing {policy.retry_for_s:.0f}s after the enqueue"
    if policy.max_attempts and attempt.number >= policy.max_attempts:
        return f"gave up after {attempt.number} attempts"
    return None


def settle(result: Settled, via: ConfirmedVia, cause: Cause) -> Decision:
    if result.ok:
        return Decision(
            status=Status.CONFIRMED,
            cause=cause,
            evidence=result.evidence,
            outcome=result.outcome,
            confirmed_via=via,
            provider_state=result.provider_state,
        )
    return Decision(
        status=Status.FAILED,
        cause=cause,
        evidence=result.evidence,
        outcome=result.outcome,
        provider_state=result.provider_state,
        error=ErrorInfo(
            code=result.error_code or result.outcome.value,
            message=result.error_message or f"the request is {result.outcome.value}",
            details=result.error_details,
        ),
    )


def gave_up(evidence: Evidence, message: str, details: dict[str, Any] | None = None) -> Decision:
    return Decision(
        status=Status.FAILED,
        cause=Cause.GAVE_UP,
        evidence=evidence,
        error=ErrorInfo(code=EXHAUSTED, message=message, details=details),
    )


def retry(
    result: RetryLater,
    attempt: Attempt,
    now: datetime,
    policy: Policy,
    rng: random.Random | None,
    *,
    check_first: bool = False,
) -> Decision:
    """Try again after a backoff, or give up once the time (or the optional attempt cap)
    is spent. The last attempt is scheduled no later than the deadline, so the full
    window is used. A failure that may have reached the provider makes the next attempt
    check the request's status first."""
    if reason := _out_of_tries(attempt, now, policy):
        return gave_up(
            result.evidence,
            f"{reason}; last error: {result.message}",
            {"last_code": result.code, **(result.details or {})},
        )
    delay = backoff_s(attempt.number, policy, result.delay_s, rng)
    when = min(now + timedelta(seconds=delay), deadline(attempt, policy))
    return Decision(
        status=Status.QUEUED,
        cause=Cause.RETRY_SCHEDULED,
        evidence={**result.evidence, "retry_in_s": round((when - now).total_seconds(), 3)},
        next_attempt_at=when,
        error=ErrorInfo(code=result.code, message=result.message, details=result.details),
        needs_check=check_first or result.may_have_landed,
    )


def after_cancel(
    result: Queued | Settled | RetryLater,
    attempt: Attempt,
    now: datetime,
    policy: Policy,
    rng: random.Random | None = None,
) -> Decision:
    """What the answer to a cancel call means (a refusal goes through after_refusal)."""
    if isinstance(result, Queued):
        return Decision(
            status=Status.AWAITING_CONFIRMATION,
            cause=Cause.PROVIDER_QUEUED_CANCEL,
            evidence=result.evidence,
            confirm_by=now + timedelta(seconds=policy.confirm_timeout_s),
        )
    if isinstance(result, Settled):
        return settle(result, ConfirmedVia.PROVIDER_RESPONSE, Cause.PROVIDER_ANSWERED)
    return retry(result, attempt, now, policy, rng)


def after_status_check(
    result: StatusResult,
    attempt: Attempt,
    now: datetime,
    policy: Policy,
    rng: random.Random | None = None,
) -> Decision | None:
    """What a status check before a cancel means; None means: send the cancel now."""
    if isinstance(result, Settled):
        return settle(result, ConfirmedVia.RECONCILIATION, Cause.STATUS_CHECK)
    if isinstance(result, StillOpen):
        if now >= deadline(attempt, policy):
            return gave_up(
                result.evidence,
                f"still open at the provider {policy.retry_for_s:.0f}s after the enqueue",
            )
        return None
    return retry(result, attempt, now, policy, rng, check_first=True)


def after_refusal(
    refused: Refused,
    checked: StatusResult,
    attempt: Attempt,
    now: datetime,
    policy: Policy,
    rng: random.Random | None = None,
) -> Decision:
    """A refused cancel, read with the status check it prompted. Only a request that the
    check finds still open makes the refusal final; a check that fails transiently decides
    nothing, and the cancellation is tried again."""
    evidence = {"cancel": refused.evidence, "status": checked.evidence}
    if isinstance(checked, Settled):
        return settle(
            Settled(
                checked.outcome,
                checked.ok,
                evidence,
                provider_state=checked.provider_state,
                error_code=checked.error_code or refused.code,
                error_message=None if checked.ok else refused.message,
                error_details=refused.details,
            ),
            ConfirmedVia.RECONCILIATION,
            Cause.STATUS_CHECK,
        )
    if isinstance(checked, StillOpen):
        return settle(
            Settled(
                Outcome.NOT_CANCELABLE,
                False,
                evidence,
                error_code=refused.code,
                error_message=refused.message,
                error_details=refused.details,
            ),
            ConfirmedVia.PROVIDER_RESPONSE,
            Cause.PROVIDER_ANSWERED,
        )
    return retry(
        RetryLater(checked.code, checked.message, checked.delay_s, evidence, checked.details),
        attempt,
        now,
        policy,
        rng,
        check_first=True,
    )


def from_webhook(effect: Settled) -> Decision:
    return settle(effect, ConfirmedVia.WEBHOOK, Cause.WEBHOOK)


def throttled(until: datetime, evidence: Evidence, needs_check: bool = False) -> Decision:
    """Give a claimed row back unsent: the account has no budget left for its call (a row
    whose status check had not happened yet still needs it)."""
    return Decision(
        status=Status.QUEUED,
        cause=Cause.THROTTLED,
        evidence=evidence,
        next_attempt_at=until,
        needs_check=needs_check,
        refund_attempt=True,
    )


# --- operators' actions ----------------------------------------------------------------


def retry_now(status: Status, now: datetime, evidence: Evidence) -> Decision | str:
    """An operator asks for the next attempt now, with a status check first; a str says
    why the cancellation's state does not allow it."""
    if status.is_terminal:
        return f"the cancellation is already {status}; nothing is left to retry"
    if status is Status.SENDING:
        return "the cancellation is being sent right now; wait for the attempt to end"
    return Decision(
        status=Status.QUEUED,
        cause=Cause.RETRY_REQUESTED,
        evidence=evidence,
        next_attempt_at=now,
        needs_check=True,
    )


def abandon(status: Status, reason: str, evidence: Evidence) -> Decision | str:
    """An operator gives up on the cancellation: it ends failed, code `abandoned`."""
    if status.is_terminal:
        return f"the cancellation is already {status}; it cannot be abandoned"
    return Decision(
        status=Status.FAILED,
        cause=Cause.ABANDONED,
        evidence=evidence,
        error=ErrorInfo(code=ABANDONED, message=reason),
    )
