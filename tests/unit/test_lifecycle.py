"""The state machine as a table: (what happened, attempts so far) -> the decision."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.domain import lifecycle
from orchestrator.domain.lifecycle import EXHAUSTED, Policy
from orchestrator.domain.model import (
    ConfirmedVia,
    Outcome,
    Queued,
    RetryLater,
    Settled,
    Status,
    StillOpen,
)

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
POLICY = Policy(max_attempts=5, confirm_timeout_s=3600.0, backoff_base_s=2.0, backoff_max_s=900.0)

CANCELED = Settled(Outcome.CANCELED, ok=True, evidence={"http_status": 410})
COMPLETED = Settled(
    Outcome.COMPLETED,
    ok=False,
    evidence={"event_type": "signature_request_all_signed"},
    error_code="completed",
    error_message="every signer signed before the cancel took effect",
)
NOT_FOUND_BARE = Settled(Outcome.NOT_FOUND, ok=False)
BLIP = RetryLater("http_503", "POST /x answered 503", evidence={"http_status": 503})


class Extremes(random.Random):
    """A Random whose uniform() always answers one end of the range, to pin exact bounds."""

    def __init__(self, high: bool) -> None:
        super().__init__(0)
        self.high = high

    def uniform(self, a: float, b: float) -> float:
        return b if self.high else a


def ceiling(attempts: int, policy: Policy = POLICY) -> float:
    return float(min(policy.backoff_max_s, policy.backoff_base_s * 2 ** max(attempts - 1, 0)))


# --- after_cancel ---------------------------------------------------------------------


def test_queued_cancel_awaits_confirmation_until_the_timeout() -> None:
    decision = lifecycle.after_cancel(Queued({"http_status": 200}), 1, NOW, POLICY)
    assert decision.status is Status.AWAITING_CONFIRMATION
    assert decision.cause == "provider_queued_cancel"
    assert decision.confirm_by == NOW + timedelta(seconds=3600)
    assert decision.evidence == {"http_status": 200}
    assert decision.next_attempt_at is None
    assert decision.error is None
    assert decision.confirmed_via is None


@pytest.mark.parametrize(
    ("result", "status", "outcome", "via", "error_code", "error_message"),
    [
        pytest.param(
            CANCELED,
            Status.CONFIRMED,
            Outcome.CANCELED,
            ConfirmedVia.PROVIDER_RESPONSE,
            None,
            None,
            id="settled-ok",
        ),
        pytest.param(
            COMPLETED,
            Status.FAILED,
            Outcome.COMPLETED,
            None,
            "completed",
            "every signer signed before the cancel took effect",
            id="settled-not-ok",
        ),
        pytest.param(
            NOT_FOUND_BARE,
            Status.FAILED,
            Outcome.NOT_FOUND,
            None,
            "not_found",
            "the request is not_found",
            id="settled-not-ok-without-error-text",
        ),
    ],
)
def test_settled_cancel(
    result: Settled,
    status: Status,
    outcome: Outcome,
    via: ConfirmedVia | None,
    error_code: str | None,
    error_message: str | None,
) -> None:
    decision = lifecycle.after_cancel(result, 1, NOW, POLICY)
    assert decision.status is status
    assert decision.cause == "provider_answered"
    assert decision.outcome is outcome
    assert decision.confirmed_via is via
    assert decision.evidence == result.evidence
    assert decision.next_attempt_at is None
    if error_code is None:
        assert decision.error is None
    else:
        assert decision.error is not None
        assert (decision.error.code, decision.error.message) == (error_code, error_message)


@pytest.mark.parametrize("attempts", [1, 2, 4])
def test_retry_below_max_attempts_is_rescheduled_with_backoff(attempts: int) -> None:
    decision = lifecycle.after_cancel(BLIP, attempts, NOW, POLICY, random.Random(7))
    assert decision.status is Status.QUEUED
    assert decision.cause == "retry_scheduled"
    assert decision.error is not None
    assert (decision.error.code, decision.error.message) == ("http_503", BLIP.message)
    assert decision.next_attempt_at is not None
    wait = (decision.next_attempt_at - NOW).total_seconds()
    assert ceiling(attempts) / 2 <= wait <= ceiling(attempts)
    assert decision.evidence["http_status"] == 503
    assert decision.evidence["retry_in_s"] == pytest.approx(wait, abs=0.001)


def test_retry_honours_the_providers_hint() -> None:
    hinted = RetryLater("exceeded_rate", "429", delay_s=120)
    decision = lifecycle.after_cancel(hinted, 1, NOW, POLICY, random.Random(7))
    assert decision.status is Status.QUEUED
    assert decision.next_attempt_at is not None
    assert 120 <= (decision.next_attempt_at - NOW).total_seconds() <= 121


@pytest.mark.parametrize("attempts", [5, 6, 50])
def test_retry_at_max_attempts_fails_exhausted(attempts: int) -> None:
    decision = lifecycle.after_cancel(BLIP, attempts, NOW, POLICY, random.Random(7))
    assert decision.status is Status.FAILED
    assert decision.cause == "attempts_exhausted"
    assert decision.next_attempt_at is None
    assert decision.error is not None
    assert decision.error.code == EXHAUSTED
    assert BLIP.message in decision.error.message
    assert f"after {attempts} attempts" in decision.error.message
    assert decision.error.details == {"last_code": "http_503"}


# --- after_status_check ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("result", "status", "via"),
    [
        pytest.param(CANCELED, Status.CONFIRMED, ConfirmedVia.RECONCILIATION, id="canceled"),
        pytest.param(COMPLETED, Status.FAILED, None, id="completed"),
    ],
)
def test_settled_status_check_is_a_reconciliation(
    result: Settled, status: Status, via: ConfirmedVia | None
) -> None:
    decision = lifecycle.after_status_check(result, 3, NOW, POLICY)
    assert decision is not None
    assert decision.status is status
    assert decision.cause == "status_check"
    assert decision.outcome is result.outcome
    assert decision.confirmed_via is via


@pytest.mark.parametrize("attempts", [1, 4, 5])
def test_still_open_means_send_again(attempts: int) -> None:
    assert lifecycle.after_status_check(StillOpen(), attempts, NOW, POLICY) is None


@pytest.mark.parametrize("attempts", [6, 9])
def test_still_open_past_max_attempts_fails_exhausted(attempts: int) -> None:
    decision = lifecycle.after_status_check(StillOpen({"seen": "open"}), attempts, NOW, POLICY)
    assert decision is not None
    assert decision.status is Status.FAILED
    assert decision.cause == "attempts_exhausted"
    assert decision.evidence == {"seen": "open"}
    assert decision.error is not None
    assert decision.error.code == EXHAUSTED
    assert f"after {attempts - 1} cancel attempts" in decision.error.message


@pytest.mark.parametrize(
    ("attempts", "status"), [(2, Status.QUEUED), (5, Status.FAILED)], ids=["below", "at-max"]
)
def test_status_check_retry_later(attempts: int, status: Status) -> None:
    decision = lifecycle.after_status_check(BLIP, attempts, NOW, POLICY, random.Random(3))
    assert decision is not None
    assert decision.status is status
    if status is Status.QUEUED:
        assert decision.next_attempt_at is not None
        assert decision.next_attempt_at > NOW
    else:
        assert decision.error is not None
        assert decision.error.code == EXHAUSTED


# --- from_webhook ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("effect", "status", "via", "error_code"),
    [
        (Settled(Outcome.CANCELED, ok=True), Status.CONFIRMED, ConfirmedVia.WEBHOOK, None),
        (Settled(Outcome.DECLINED, ok=True), Status.CONFIRMED, ConfirmedVia.WEBHOOK, None),
        (Settled(Outcome.EXPIRED, ok=True), Status.CONFIRMED, ConfirmedVia.WEBHOOK, None),
        (COMPLETED, Status.FAILED, None, "completed"),
    ],
    ids=["canceled", "declined", "expired", "all-signed"],
)
def test_from_webhook(
    effect: Settled, status: Status, via: ConfirmedVia | None, error_code: str | None
) -> None:
    decision = lifecycle.from_webhook(effect)
    assert decision.status is status
    assert decision.cause == "webhook"
    assert decision.outcome is effect.outcome
    assert decision.confirmed_via is via
    assert (decision.error.code if decision.error else None) == error_code


# --- backoff_s ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempts", "expected_ceiling"),
    [(0, 2), (1, 2), (2, 4), (3, 8), (5, 32), (9, 512), (10, 900), (20, 900), (64, 900)],
)
def test_backoff_bounds_are_exact(attempts: int, expected_ceiling: float) -> None:
    assert lifecycle.backoff_s(attempts, POLICY, rng=Extremes(high=False)) == expected_ceiling / 2
    assert lifecycle.backoff_s(attempts, POLICY, rng=Extremes(high=True)) == expected_ceiling


def test_backoff_ceiling_is_monotonic_and_capped() -> None:
    highs = [lifecycle.backoff_s(n, POLICY, rng=Extremes(high=True)) for n in range(1, 40)]
    assert highs == sorted(highs)
    assert max(highs) == POLICY.backoff_max_s


@pytest.mark.parametrize("attempts", [1, 3, 6, 12])
def test_backoff_jitter_stays_within_half_and_full_ceiling(attempts: int) -> None:
    rng = random.Random(1234)
    delays = [lifecycle.backoff_s(attempts, POLICY, rng=rng) for _ in range(500)]
    top = ceiling(attempts)
    assert all(top / 2 <= d <= top for d in delays)
    # Jitter, not a constant: the draws spread over most of the allowed range.
    assert max(delays) - min(delays) > top / 2 * 0.8


def test_backoff_is_reproducible_with_a_seed() -> None:
    first = [lifecycle.backoff_s(4, POLICY, rng=random.Random(99)) for _ in range(3)]
    again = [lifecycle.backoff_s(4, POLICY, rng=random.Random(99)) for _ in range(3)]
    assert first == again


@pytest.mark.parametrize(
    ("attempts", "hint"),
    [(1, 120.0), (1, 0.5), (3, 30.0), (20, 3600.0)],
    ids=["above-ceiling", "small", "mid", "above-backoff-max"],
)
def test_backoff_hint_is_a_floor(attempts: int, hint: float) -> None:
    rng = random.Random(5)
    for _ in range(200):
        delay = lifecycle.backoff_s(attempts, POLICY, hint, rng)
        assert delay >= hint
        assert delay <= max(ceiling(attempts), hint + min(1.0, hint * 0.1))


@pytest.mark.parametrize("hint", [None, 0.0, -5.0, 0.1])
def test_backoff_hint_below_the_jitter_changes_nothing(hint: float | None) -> None:
    for seed in range(50):
        plain = lifecycle.backoff_s(4, POLICY, rng=random.Random(seed))
        hinted = lifecycle.backoff_s(4, POLICY, hint, rng=random.Random(seed))
        assert hinted == plain


@pytest.mark.parametrize("attempts", [1_025, 10_000])
def test_backoff_is_capped_for_any_attempt_count(attempts: int) -> None:
    """max_attempts is configurable, so nothing bounds `attempts` but the policy."""
    delay = lifecycle.backoff_s(attempts, POLICY, rng=random.Random(1))
    assert POLICY.backoff_max_s / 2 <= delay <= POLICY.backoff_max_s
