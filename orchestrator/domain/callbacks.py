"""Completion callbacks: what one delivery attempt's answer means, and when to try again.

Pure, like lifecycle.py: the time and the randomness are passed in. A callback attempt is
not a transition of the cancellation (it stays confirmed or failed); its history rows are
kept apart from the transition log (0006_completion_callbacks.sql).
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from orchestrator.domain import lifecycle


class AttemptCause(enum.StrEnum):
    """The `cause` of a callback attempt's row in the events history."""

    DELIVERED = "callback_delivered"
    FAILED = "callback_failed"
    GAVE_UP = "callback_gave_up"


class DeliveryState(enum.StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    GAVE_UP = "gave_up"


@dataclass(frozen=True)
class DeliveryPolicy:
    #: How long after the terminal state deliveries are tried (ORCH_CALLBACK_RETRY_FOR_S).
    retry_for_s: float = 86_400.0
    backoff_base_s: float = 2.0
    backoff_max_s: float = 900.0


@dataclass(frozen=True)
class Answer:
    """What one POST came to: the receiver's HTTP status, or why there was none.

    `error` is a class (connect_failed, timeout, tls, refused_address, callback_refused, ...),
    never an error's text, which would name addresses and ports in a history any `read`
    token can see; `reason` is a fixed sentence for a person."""

    status: int | None = None
    error: str | None = None
    reason: str | None = None
    #: No later attempt can do better (the host is no longer allowed): give up now.
    final: bool = False

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass(frozen=True)
class AttemptOutcome:
    cause: AttemptCause
    state: DeliveryState
    evidence: dict[str, Any]
    #: When the next attempt is due; only while the delivery stays pending.
    next_attempt_at: datetime | None = None


def deadline(ended_at: datetime, policy: DeliveryPolicy) -> datetime:
    return ended_at + timedelta(seconds=policy.retry_for_s)


def after_attempt(
    answer: Answer,
    attempt: int,
    ended_at: datetime,
    now: datetime,
    policy: DeliveryPolicy,
    rng: random.Random | None = None,
) -> AttemptOutcome:
    """A 2xx ends the delivery; a final answer (a host no longer allowed) gives it up at
    once; anything else is tried again after an exponential backoff with jitter, the last
    try no later than the deadline, and once the deadline has passed a failed attempt gives
    the delivery up. An attempt is always made, however late the
    delivery comes due (a worker that was down for longer than the window still tries once)."""
    evidence: dict[str, Any] = {"attempt": attempt}
    if answer.status is not None:
        evidence["http_status"] = answer.status
    if answer.error is not None:
        evidence["error"] = answer.error
    if answer.reason is not None:
        evidence["reason"] = answer.reason
    if answer.ok:
        return AttemptOutcome(AttemptCause.DELIVERED, DeliveryState.DELIVERED, evidence)
    end = deadline(ended_at, policy)
    if answer.final:
        return AttemptOutcome(AttemptCause.GAVE_UP, DeliveryState.GAVE_UP, evidence)
    if now >= end:
        evidence["gave_up_after_s"] = round((now - ended_at).total_seconds(), 3)
        return AttemptOutcome(AttemptCause.GAVE_UP, DeliveryState.GAVE_UP, evidence)
    delay = lifecycle.backoff_s(
        attempt,
        lifecycle.Policy(backoff_base_s=policy.backoff_base_s, backoff_max_s=policy.backoff_max_s),
        rng=rng,
    )
    when = min(now + timedelta(seconds=delay), end)
    evidence["retry_in_s"] = round((when - now).total_seconds(), 3)
    return AttemptOutcome(AttemptCause.FAILED, DeliveryState.PENDING, evidence, when)
