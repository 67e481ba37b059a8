"""The shared reading of a cancel answered at once (Truto, Aptly)."""

from __future__ import annotations

import orjson
import pytest

from orchestrator.domain.model import Outcome, Refused, RetryLater, Settled
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


def test_not_found_fails_with_the_providers_message() -> None:
    result = classify_cancel(answer(404), message="it is gone", details={"d": 1})
    assert isinstance(result, Settled)
    assert (result.outcome, result.ok, result.error_code, result.error_message) == (
        Outcome.NOT_FOUND,
        False,
        "not_found",
        "it is gone",
    )
    assert result.error_details == {"d": 1}


@pytest.mark.parametrize(
    ("status", "code", "error_code"),
    [(409, None, "not_cancelable"), (400, "already_completed", "already_completed")],
)
def test_other_refusals_are_left_to_a_status_check(
    status: int, code: str | None, error_code: str
) -> None:
    """A 4xx may answer a request that an earlier, lost attempt already canceled: it is a
    refusal to read with the request's status, never a final outcome on its own."""
    result = classify_cancel(answer(status), message="it is done", code=code, details={"d": 1})
    assert isinstance(result, Refused)
    assert (result.code, result.message, result.details) == (error_code, "it is done", {"d": 1})


@pytest.mark.parametrize("status", [500, 502, 503])
def test_a_5xx_may_have_landed(status: int) -> None:
    result = classify_cancel(answer(status), message="busy")
    assert isinstance(result, RetryLater) and result.may_have_landed


@pytest.mark.parametrize("status", [401, 408, 429])
def test_a_refused_call_did_not_land(status: int) -> None:
    result = classify_cancel(answer(status), message="busy")
    assert isinstance(result, RetryLater) and not result.may_have_landed


def test_an_error_extra_never_replaces_a_problem_member() -> None:
    """A domain error's extra named like a problem member is dropped, never a crash."""
    from orchestrator import errors
    from orchestrator.web.problems import from_error

    response = from_error(errors.Conflict("why", status="queued", title="x", shown=1))
    assert response.status == 409
    assert response.body is not None
    body = orjson.loads(response.body)  # type: ignore[arg-type]
    assert (body["status"], body["title"], body["shown"]) == (409, "Conflict", 1)
