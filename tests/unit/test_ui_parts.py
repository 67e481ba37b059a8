"""The dashboard's pure parts: how durations read, and what a session cookie accepts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr

from orchestrator.web import sessions, ui
from orchestrator.web.auth import parse_tokens

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("seconds", "reads"),
    [
        (-3, "0 s"),
        (0, "0 s"),
        (59.9, "59 s"),
        (60, "1 min 00 s"),
        (754, "12 min 34 s"),
        (3600, "1 h 00 min"),
        (3600 + 125, "1 h 02 min"),
        (86400 * 3 + 3600 * 4 + 59, "3 d 4 h"),
    ],
)
def test_durations_read_short(seconds: float, reads: str) -> None:
    assert ui.duration(seconds) == reads


def test_ago_reads_past_and_future_and_iso_text() -> None:
    assert ui.ago(NOW - timedelta(seconds=90), NOW) == "1 min 30 s ago"
    assert ui.ago(NOW + timedelta(seconds=5), NOW) == "in 5 s"
    assert ui.ago((NOW - timedelta(hours=2)).isoformat(), NOW) == "2 h 00 min ago"
    assert ui.ago(None, NOW) == "—"
    assert ui.when("not a time") == "—"


TOKENS = parse_tokens((SecretStr("alpha"), SecretStr("beta:read")))


def test_a_session_names_its_token_and_never_holds_it() -> None:
    alpha, beta = TOKENS
    value = sessions.issue(beta, NOW)
    assert "beta" not in value
    assert sessions.verify(TOKENS, value, NOW) is beta
    assert sessions.verify(TOKENS, sessions.issue(alpha, NOW), NOW) is alpha


@pytest.mark.parametrize(
    "tamper",
    [
        lambda v: "",
        lambda v: "garbage",
        lambda v: v + "0",
        lambda v: v.replace(".", ".9", 1),  # a later expiry under the old signature
        lambda v: "0" * 12 + v[12:],  # another name under the old signature
        lambda v: ".".join(v.split(".")[:2]) + ".",
    ],
)
def test_a_tampered_session_is_refused(tamper: object) -> None:
    value = sessions.issue(TOKENS[1], NOW)
    assert callable(tamper)
    assert sessions.verify(TOKENS, tamper(value), NOW) is None


def test_a_session_ends_with_its_lifetime_or_its_token() -> None:
    value = sessions.issue(TOKENS[1], NOW)
    later = NOW + timedelta(seconds=sessions.LIFETIME_S)
    assert sessions.verify(TOKENS, value, later - timedelta(seconds=1)) is TOKENS[1]
    assert sessions.verify(TOKENS, value, later) is None
    assert sessions.verify(TOKENS[:1], value, NOW) is None  # the token was removed
    rotated = parse_tokens((SecretStr("alpha"), SecretStr("beta2:read")))
    assert sessions.verify(rotated, value, NOW) is None
