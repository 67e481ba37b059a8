"""Completion callbacks without a database: the retry rule, the settings, the enqueue field."""

from __future__ import annotations

import base64
import random
from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.config import ConfigError, load_settings
from orchestrator.domain.callbacks import (
    Answer,
    AttemptCause,
    DeliveryPolicy,
    DeliveryState,
    after_attempt,
)
from orchestrator.service.inputs import EnqueueRequest

ENDED = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
POLICY = DeliveryPolicy(retry_for_s=3600, backoff_base_s=2, backoff_max_s=60)


def at(seconds: float) -> datetime:
    return ENDED + timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("answer", "attempt", "now_s", "cause", "state", "retry_in"),
    [
        (Answer(200), 1, 0, AttemptCause.DELIVERED, DeliveryState.DELIVERED, None),
        (Answer(204), 7, 5000, AttemptCause.DELIVERED, DeliveryState.DELIVERED, None),
        (Answer(500), 1, 0, AttemptCause.FAILED, DeliveryState.PENDING, (1, 2)),
        (Answer(307, "redirect"), 1, 0, AttemptCause.FAILED, DeliveryState.PENDING, (1, 2)),
        (Answer(error="timeout"), 3, 10, AttemptCause.FAILED, DeliveryState.PENDING, (4, 8)),
        (Answer(404), 30, 100, AttemptCause.FAILED, DeliveryState.PENDING, (30, 60)),
        # never past the window's end: the last try is at the end itself
        (Answer(500), 30, 3590, AttemptCause.FAILED, DeliveryState.PENDING, (10, 10)),
        (Answer(500), 4, 3600, AttemptCause.GAVE_UP, DeliveryState.GAVE_UP, None),
        # however late it came due, one try is made; a failure then gives up
        (Answer(500), 1, 90_000, AttemptCause.GAVE_UP, DeliveryState.GAVE_UP, None),
    ],
)
def test_after_attempt(
    answer: Answer,
    attempt: int,
    now_s: float,
    cause: AttemptCause,
    state: DeliveryState,
    retry_in: tuple[float, float] | None,
) -> None:
    outcome = after_attempt(answer, attempt, ENDED, at(now_s), POLICY, random.Random(7))
    assert (outcome.cause, outcome.state) == (cause, state)
    assert outcome.evidence["attempt"] == attempt
    if retry_in is None:
        assert outcome.next_attempt_at is None
        return
    low, high = retry_in
    assert outcome.next_attempt_at is not None
    waited = (outcome.next_attempt_at - at(now_s)).total_seconds()
    assert low <= waited <= high
    assert outcome.evidence["retry_in_s"] == round(waited, 3)


def test_a_give_up_says_how_long_it_tried() -> None:
    outcome = after_attempt(Answer(502), 9, ENDED, at(3700), POLICY)
    assert outcome.evidence == {"attempt": 9, "http_status": 502, "gave_up_after_s": 3700}


SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()


def test_the_callback_settings_and_their_defaults() -> None:
    settings = load_settings(
        callback_secret=SECRET, callback_hosts=" Hooks.Example. ,b.example,,", api_tokens=""
    )
    assert settings.callback_hosts == ("b.example", "hooks.example")
    assert settings.callback_secret is not None
    assert settings.callback_secret.get_secret_value() == SECRET
    assert SECRET not in repr(settings) and SECRET not in str(settings.callback_secret)
    defaults = load_settings()
    assert (defaults.callback_secret, defaults.callback_hosts) == (None, ())
    assert (defaults.callback_timeout_s, defaults.callback_retry_for_s) == (5, 86_400)


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        (base64.b64encode(bytes(32)).decode(), "whsec_"),
        ("whsec_not base64!", "not valid base64"),
        ("whsec_" + base64.b64encode(bytes(8)).decode(), "24 to 64 bytes, found 8"),
    ],
)
def test_a_malformed_callback_secret_stops_start_up_without_showing_it(
    secret: str, message: str
) -> None:
    with pytest.raises(ConfigError, match="ORCH_CALLBACK_SECRET") as caught:
        load_settings(callback_secret=secret)
    assert message in str(caught.value)
    assert secret.removeprefix("whsec_") not in str(caught.value)


def test_a_callback_secret_without_hosts_stops_start_up() -> None:
    """A secret alone would let any enqueue token aim the service anywhere."""
    with pytest.raises(ConfigError, match="ORCH_CALLBACK_HOSTS: required when ORCH_CALLBACK"):
        load_settings(callback_secret=SECRET)
    with pytest.raises(ConfigError, match="ORCH_CALLBACK_HOSTS: required"):
        load_settings(callback_secret=SECRET, callback_hosts=" , ")
    load_settings(callback_secret=SECRET, callback_hosts="*")
    load_settings(callback_hosts="hooks.example")  # no secret: nothing is sent anyway


def test_retention_no_longer_needs_to_outlast_the_callback_window() -> None:
    """The retention statement itself keeps a cancellation whose callback is pending
    (tests/integration/test_callbacks.py), so a short retention is allowed."""
    load_settings(callback_secret=SECRET, callback_hosts="*", retention_s=3600)


def test_a_request_without_callback_url_hashes_as_before_the_field() -> None:
    """Idempotency-Keys in flight across the upgrade keep matching their requests."""
    request = EnqueueRequest.model_validate(
        {"provider": "dropbox_sign", "resource_id": "sr-1", "reason": "r"}
    )
    # The hash of this body before callback_url existed (0.1.0).
    assert request.request_hash() == (
        "b07c8669f6c50e09dd546ee16b2929506c6c330cc2dc2781a0914e0e1229279e"
    )
    with_url = request.model_copy(update={"callback_url": "https://hooks.example/x"})
    assert with_url.request_hash() != request.request_hash()
