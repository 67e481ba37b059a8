"""The state machine: from (what happened, attempts so far, now) to a decision.

The dispatcher, the sweeper and the webhook receiver carry decisions out; none of them
decides anything on its own. Times are passed in, never read, so the 60-minute path is
tested without waiting 60 minutes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from orchestrator.domain.model import (
    CancelResult,
    ConfirmedVia,
    Evidence,
    Outcome,
    Queued,
    RetryLater,
    Settled,
    Status,
    StatusResult,
    StillOpen,
)

EXHAUSTED = "exhausted"


@dataclass(frozen=True)
class Policy:
    max_attempts: int = 8
    confirm_timeout_s: float = 3600.0
    backoff_base_s: float = 2.0
    backoff_max_s: float = 900.0


@dataclass(frozen=True)
class ErrorInfo:
    code: str
    message: str
    details: dict[str, Any] | None = None


@dataclass(frozen=True)
class Decision:
    """A transition to carry out. `cause` names why, for the events history."""

    status: Status
    cause: str
    evidence: Evidence = field(default_factory=dict)
    next_attempt_at: datetime | None = None
    confirm_by: datetime | None = None
    outcome: Outcome | None = None
    confirmed_via: ConfirmedVia | None = None
    error: ErrorInfo | None = None
    provider_state: dict[str, Any] | None = None


def backoff_s(
    attempts: int, policy: Policy, hint_s: float | None = None, rng: random.Random | None = None
) -> float:
    """Exponential backoff with equal jitter; a provider's hint is a floor, never shortened."""
    rng = rng or random.Random()
    exponent = min(max(attempts - 1, 0), 62)  # past this the cap applies anyway; no overflow
    ceiling = min(policy.backoff_max_s, policy.backoff_base_s * 2**exponent)
    delay = ceiling / 2 + rng.uniform(0, ceiling / 2)
    if hint_s is not None and hint_s > 0:
        delay = max(delay, hint_s + rng.uniform(0, min(1.0, hint_s * 0.1)))
    return float(delay)


def settle(result: Settled, via: ConfirmedVia, cause: str) -> Decision:
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


def exhausted(evidence: Evidence, message: str, details: dict[str, Any] | None = None) -> Decision:
    return Decision(
        status=Status.FAILED,
        cause="attempts_exhausted",
        evidence=evidence,
        error=ErrorInfo(code=EXHAUSTED, message=message, details=details),
    )


def retry(
    result: RetryLater, attempts: int, now: datetime, policy: Policy, rng: random.Random | None
) -> Decision:
    error = ErrorInfo(code=result.code, message=result.message, details=result.details)
    if attempts >= policy.max_attempts:
        return exhausted(
            result.evidence,
            f"gave up after {attempts} attempts; last error: {result.message}",
            {"last_code": result.code, **(result.details or {})},
        )
    delay = backoff_s(attempts, policy, result.delay_s, rng)
    return Decision(
        status=Status.QUEUED,
        cause="retry_scheduled",
        evidence={**result.evidence, "retry_in_s": round(delay, 3)},
        next_attempt_at=now + timedelta(seconds=delay),
        error=error,
    )


def after_cancel(
    result: CancelResult,
    attempts: int,
    now: datetime,
    policy: Policy,
    rng: random.Random | None = None,
) -> Decision:
    """What the answer to a cancel call means for the cancellation."""
    if isinstance(result, Queued):
        return Decision(
            status=Status.AWAITING_CONFIRMATION,
            cause="provider_queued_cancel",
            evidence=result.evidence,
            confirm_by=now + timedelta(seconds=policy.confirm_timeout_s),
        )
    if isinstance(result, Settled):
        return settle(result, ConfirmedVia.PROVIDER_RESPONSE, "provider_answered")
    return retry(result, attempts, now, policy, rng)


def after_status_check(
    result: StatusResult,
    attempts: int,
    now: datetime,
    policy: Policy,
    rng: random.Random | None = None,
) -> Decision | None:
    """What a reconciliation's status check means; None means: send the cancel again now."""
    if isinstance(result, Settled):
        return settle(result, ConfirmedVia.RECONCILIATION, "status_check")
    if isinstance(result, StillOpen):
        if attempts > policy.max_attempts:
            return exhausted(
                result.evidence,
                f"still open at the provider after {attempts - 1} cancel attempts "
                "without a confirmation",
            )
        return None
    return retry(result, attempts, now, policy, rng)


def from_webhook(effect: Settled) -> Decision:
    return settle(effect, ConfirmedVia.WEBHOOK, "webhook")
