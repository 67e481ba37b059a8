"""The state machine as a table: (what happened, attempts so far) -> the decision."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.domain import lifecycle
from orchestrator.domain.lifecycle import EXHAUSTED, Attempt, Cause, Policy
from orchestrator.domain.model import (
    ConfirmedVia,
    Outcome,
    Queued,
    Refused,
    RetryLater,
    Settled,
    Status,
    StillOpen,
)

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
POLICY = Policy(max_attempts=5, confirm_timeout_s=3600.0, backoff_base_s=2.0, backoff_max_s=900.0)
#: The default: no attempt cap, 72 hours of trying.
BY_TIME = Policy()


def at(attempts: int, enqueued_ago_s: float = 0.0) -> Attempt:
    """Attempt number `attempts` of a cancel enqueued `enqueued_ago_s` before NOW."""
    return Attempt(attempts, NOW - timedelta(seconds=enqueued_ago_s))


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
    decision = lifecycle.after_cancel(Queued({"http_status": 200}), at(1), NOW, POLICY)
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
    decision = lifecycle.after_cancel(result, at(1), NOW, POLICY)
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
    decision = lifecycle.after_cancel(BLIP, at(attempts), NOW, POLICY, random.Random(7))
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
    decision = lifecycle.after_cancel(hinted, at(1), NOW, POLICY, random.Random(7))
    assert decision.status is Status.QUEUED
    assert decision.next_attempt_at is not None
    assert 120 <= (decision.next_attempt_at - NOW).total_seconds() <= 121


@pytest.mark.parametrize("attempts", [5, 6, 50])
def test_retry_at_max_attempts_fails_exhausted(attempts: int) -> None:
    decision = lifecycle.after_cancel(BLIP, at(attempts), NOW, POLICY, random.Random(7))
    assert decision.status is Status.FAILED
    assert decision.cause == "gave_up"
    assert decision.next_attempt_at is None
    assert decision.error is not None
    assert decision.error.code == EXHAUSTED
    assert BLIP.message in decision.error.message
    assert f"after {attempts} attempts" in decision.error.message
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
    decision = lifecycle.after_status_check(result, at(3), NOW, POLICY)
    assert decision is not None
    assert decision.status is status
    assert decision.cause == Cause.STATUS_CHECK
    assert decision.outcome is result.outcome
    assert decision.confirmed_via is via


@pytest.mark.parametrize("attempts", [1, 4, 5])
def test_still_open_means_send_again(attempts: int) -> None:
    assert lifecycle.after_status_check(StillOpen(), at(attempts), NOW, POLICY) is None


def test_still_open_after_the_retry_window_gives_up() -> None:
    decision = lifecycle.after_status_check(
        StillOpen({"seen": "open"}), at(40, BY_TIME.retry_for_s), NOW, BY_TIME
    )
    assert decision is not None
    assert decision.status is Status.FAILED
    assert decision.cause == "gave_up"
    assert decision.evidence == {"seen": "open"}
    assert decision.error is not None
    assert decision.error.code == EXHAUSTED


def test_still_open_within_the_window_sends_again_whatever_the_attempt_count() -> None:
    assert lifecycle.after_status_check(StillOpen(), at(500, 3600), NOW, BY_TIME) is None


@pytest.mark.parametrize(
    ("attempts", "status"), [(2, Status.QUEUED), (5, Status.FAILED)], ids=["below", "at-max"]
)
def test_status_check_retry_later(attempts: int, status: Status) -> None:
    decision = lifecycle.after_status_check(BLIP, at(attempts), NOW, POLICY, random.Random(3))
    assert decision is not None
    assert decision.status is status
    if status is Status.QUEUED:
        assert decision.next_attempt_at is not None
        assert decision.next_attempt_at > NOW
        assert decision.needs_check, "a failed check is repeated before the next cancel"
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


# --- giving up by time (ORCH_RETRY_FOR_S), not by count --------------------------------


@pytest.mark.parametrize("attempts", [1, 8, 40, 500])
def test_within_the_retry_window_a_failure_is_retried_whatever_the_count(attempts: int) -> None:
    """The default has no attempt cap: an outage only delays, for up to 72 hours."""
    decision = lifecycle.after_cancel(BLIP, at(attempts, 3600), NOW, BY_TIME, random.Random(1))
    assert decision.status is Status.QUEUED
    assert decision.cause == Cause.RETRY_SCHEDULED


@pytest.mark.parametrize("enqueued_ago_s", [259_200, 259_201, 10**7])
def test_at_the_end_of_the_retry_window_it_gives_up(enqueued_ago_s: float) -> None:
    decision = lifecycle.after_cancel(BLIP, at(3, enqueued_ago_s), NOW, BY_TIME)
    assert decision.status is Status.FAILED
    assert decision.cause == Cause.GAVE_UP
    assert decision.error is not None
    assert decision.error.code == EXHAUSTED
    assert "259200s after the enqueue" in decision.error.message


def test_the_last_attempt_is_scheduled_at_the_deadline_not_after_it() -> None:
    """A backoff that would end past the deadline is cut to it: the window is used whole."""
    almost = BY_TIME.retry_for_s - 10
    decision = lifecycle.after_cancel(BLIP, at(30, almost), NOW, BY_TIME, Extremes(high=True))
    assert decision.status is Status.QUEUED
    assert decision.next_attempt_at == NOW + timedelta(seconds=10)


def test_a_failure_that_may_have_landed_checks_the_status_next() -> None:
    timed_out = RetryLater("timeout", "timed out", may_have_landed=True)
    assert lifecycle.after_cancel(timed_out, at(1), NOW, BY_TIME).needs_check
    assert not lifecycle.after_cancel(BLIP, at(1), NOW, BY_TIME).needs_check


# --- a refused cancel is read with a status check ----------------------------------------

REFUSED = Refused("bad_request", "Signature request cannot be canceled", {"http_status": 400})


def test_a_refusal_of_a_request_still_open_is_final() -> None:
    decision = lifecycle.after_refusal(REFUSED, StillOpen({"seen": "open"}), at(1), NOW, BY_TIME)
    assert decision.status is Status.FAILED
    assert decision.outcome is Outcome.NOT_CANCELABLE
    assert decision.error is not None
    assert (decision.error.code, decision.error.message) == (
        "bad_request",
        "Signature request cannot be canceled",
    )
    assert decision.evidence == {"cancel": {"http_status": 400}, "status": {"seen": "open"}}


def test_a_refusal_of_a_request_already_canceled_is_a_confirmation() -> None:
    decision = lifecycle.after_refusal(REFUSED, CANCELED, at(2), NOW, BY_TIME)
    assert decision.status is Status.CONFIRMED
    assert decision.confirmed_via is ConfirmedVia.RECONCILIATION
    assert decision.outcome is Outcome.CANCELED


def test_a_refusal_of_a_completed_request_fails_completed() -> None:
    decision = lifecycle.after_refusal(REFUSED, COMPLETED, at(1), NOW, BY_TIME)
    assert decision.status is Status.FAILED
    assert decision.outcome is Outcome.COMPLETED
    assert decision.error is not None
    assert decision.error.code == "completed"


@pytest.mark.parametrize(
    "blip",
    [
        RetryLater("http_503", "GET answered 503", may_have_landed=True),
        RetryLater("timeout", "GET timed out", may_have_landed=True),
        RetryLater("http_429", "GET answered 429", delay_s=5),
    ],
    ids=["5xx", "timeout", "429"],
)
def test_a_transient_status_check_after_a_refusal_never_ends_it(blip: RetryLater) -> None:
    decision = lifecycle.after_refusal(REFUSED, blip, at(1), NOW, BY_TIME, random.Random(2))
    assert decision.status is Status.QUEUED
    assert decision.needs_check
    assert decision.error is not None
    assert decision.error.code == blip.code


# --- wait hints are bounded ------------------------------------------------------------


@pytest.mark.parametrize(
    ("hint", "expected"),
    [(math.inf, 3600.0), (math.nan, 3600.0), (1e300, 3600.0), (-5.0, 0.0), (42.0, 42.0)],
    ids=["inf", "nan", "1e300", "negative", "plain"],
)
def test_a_wait_hint_is_bounded(hint: float, expected: float) -> None:
    assert lifecycle.bounded_wait(hint, BY_TIME) == expected


@pytest.mark.parametrize("hint", [math.inf, math.nan, 1e300])
def test_an_absurd_hint_never_raises_and_waits_at_most_the_cap(hint: float) -> None:
    decision = lifecycle.after_cancel(
        RetryLater("http_429", "slow down", delay_s=hint), at(1), NOW, BY_TIME, random.Random(1)
    )
    assert decision.next_attempt_at is not None
    wait = (decision.next_attempt_at - NOW).total_seconds()
    assert 3600 <= wait <= 3601


# --- the transition table --------------------------------------------------------------


def test_every_decision_this_module_makes_is_in_the_table() -> None:
    """A table-driven sweep: each producer of decisions, from each status it can act on."""
    open_statuses = (Status.QUEUED, Status.SENDING, Status.AWAITING_CONFIRMATION)
    made = [
        (Status.SENDING, lifecycle.after_cancel(Queued(), at(1), NOW, BY_TIME)),
        (Status.SENDING, lifecycle.after_cancel(CANCELED, at(1), NOW, BY_TIME)),
        (Status.SENDING, lifecycle.after_cancel(COMPLETED, at(1), NOW, BY_TIME)),
        (Status.SENDING, lifecycle.after_cancel(BLIP, at(1), NOW, BY_TIME)),
        (Status.SENDING, lifecycle.after_cancel(BLIP, at(1, 10**7), NOW, BY_TIME)),
        (Status.SENDING, lifecycle.after_refusal(REFUSED, StillOpen(), at(1), NOW, BY_TIME)),
        (Status.SENDING, lifecycle.after_refusal(REFUSED, CANCELED, at(1), NOW, BY_TIME)),
        (Status.SENDING, lifecycle.throttled(NOW, {})),
        *[(s, lifecycle.from_webhook(CANCELED)) for s in open_statuses],
        *[(s, lifecycle.abandon(s, "gone", {})) for s in open_statuses],
        (Status.QUEUED, lifecycle.retry_now(Status.QUEUED, NOW, {})),
        (Status.AWAITING_CONFIRMATION, lifecycle.retry_now(Status.AWAITING_CONFIRMATION, NOW, {})),
    ]
    for from_status, decision in made:
        assert isinstance(decision, lifecycle.Decision)
        assert lifecycle.is_legal(from_status, decision.status, decision.cause), (
            from_status,
            decision.status,
            decision.cause,
        )


@pytest.mark.parametrize("terminal", [Status.CONFIRMED, Status.FAILED])
def test_operators_cannot_act_on_a_terminal_cancellation(terminal: Status) -> None:
    assert isinstance(lifecycle.retry_now(terminal, NOW, {}), str)
    assert isinstance(lifecycle.abandon(terminal, "why", {}), str)


def test_no_transition_leaves_a_terminal_status() -> None:
    assert not [t for t in lifecycle.TRANSITIONS if t[0] is not None and t[0].is_terminal]
