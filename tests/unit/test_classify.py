"""The shared reading of a cancel answered at once (Truto, Aptly)."""

from __future__ import annotations

import pytest

from orchestrator.domain.model import Outcome, RetryLater, Settled
from orchestrator.providers.base import Answer, classify_cancel


def answer(status: int, headers: dict[str, str] | None = None) -> Answer:
    return Answer("POST", "/cancel", status, headers or {}, {"message": "m"})


@pytest.mark.parametrize("status", [200, 202, 204])
def test_2xx_is_canceled_and_keeps_the_providers_state(status: int) -> None:
    result = classify_cancel(answer(status), message="m", provider_state={"status": "x"})
    assert isinstance(result, Settled)
    assert (result.outcome, result.ok, result.provider_state) == (
        Outcome.CANCELED,
        True,
        {"status": "x"},
    )


@pytest.mark.parametrize("status", [401, 408, 429, 500, 502, 503])
def test_transient_answers_are_retried_with_the_providers_code(status: int) -> None:
    result = classify_cancel(answer(status), message="busy", code="remote_busy")
    assert isinstance(result, RetryLater)
    assert (result.code, result.message) == ("remote_busy", "busy")


def test_a_rate_limit_names_its_wait() -> None:
    result = classify_cancel(answer(429, {"Retry-After": "7"}), message="slow down")
    assert isinstance(result, RetryLater)
    assert (result.code, result.delay_s) == ("http_429", 7.0)


@pytest.mark.parametrize(
    ("status", "code", "outcome", "error_code"),
    [
        (404, None, Outcome.NOT_FOUND, "not_found"),
        (409, None, Outcome.NOT_CANCELABLE, "not_cancelable"),
        (400, "already_completed", Outcome.NOT_CANCELABLE, "already_completed"),
    ],
)
def test_other_answers_fail_with_the_providers_message(
    status: int, code: str | None, outcome: Outcome, error_code: str
) -> None:
    result = classify_cancel(answer(status), message="it is done", code=code, details={"d": 1})
    assert isinstance(result, Settled)
    assert (result.outcome, result.ok, result.error_code, result.error_message) == (
        outcome,
        False,
        error_code,
        "it is done",
    )
    assert result.error_details == {"d": 1}
