"""Every provider time in its documented zone, whatever the host's zone (TZ).

Truto writes a webhook's created_at as `2024-09-10 12:00:00`: UTC, no zone designator; ISO
8601 with `T` and `Z` may also come. Dropbox Sign's event_time is Unix seconds. Each case
runs with the process's zone set to New York, Tokyo and UTC: a time read in the host's zone
would be hours off in two of them, and a fresh event refused as from the future."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

import orjson
import pytest
from pydantic import SecretStr

from orchestrator.errors import RejectReason, WebhookRejected
from orchestrator.providers.base import Account
from orchestrator.providers.dropbox_sign import DropboxSign, event_hash
from orchestrator.providers.truto import Truto
from orchestrator.simulator.truto import signature

ZONES = {"America/New_York": -5 * 3600, "Asia/Tokyo": 9 * 3600, "UTC": 0}
NOW = datetime(2026, 1, 15, 12, 0, 0, tzinfo=UTC).timestamp()  # winter: New York is UTC-5
SECRET = "truto-webhook-secret"
TRUTO = Account("truto", "default", "https://api.test", SecretStr("t"), SecretStr(SECRET))
DSIGN = Account("dropbox_sign", "default", "https://api.test/v3", SecretStr("key"))


@pytest.fixture(params=sorted(ZONES))
def host_zone(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The process's local zone for one test, restored after."""
    zone: str = request.param
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    assert time.localtime(NOW).tm_gmtoff == ZONES[zone]  # the zone really took effect
    try:
        yield zone
    finally:
        monkeypatch.undo()
        time.tzset()


def truto_webhook(created_at: object) -> tuple[dict[str, str], bytes]:
    body = orjson.dumps(
        {
            "id": "evt-1",
            "event": "record:updated",
            "payload": {"id": "wf-1"},
            "environment_id": "env",
            "created_at": created_at,
            "webhook_id": "wh",
        }
    )
    return {"X-Truto-Signature": signature(SECRET, body)}, body


@pytest.mark.parametrize(
    ("created_at", "age_s"),
    [
        ("2026-01-15 12:00:00", 0),  # Truto's documented form
        ("2026-01-15 11:58:30", 90),
        ("2026-01-15T12:00:00Z", 0),
        ("2026-01-15T12:00:00.250Z", 0),
        ("2026-01-15T12:00:00", 0),  # ISO 8601 without a zone: UTC too
        ("2026-01-15T07:00:00-05:00", 0),  # an explicit offset is honoured
        ("2026-01-15T21:00:00+09:00", 0),
    ],
)
def test_a_fresh_truto_webhook_is_accepted_in_any_host_zone(
    host_zone: str, created_at: str, age_s: float
) -> None:
    headers, body = truto_webhook(created_at)
    event = Truto().parse_webhook(headers, body, [TRUTO], now=NOW)
    assert event.event_time == pytest.approx(NOW - age_s, abs=0.5)


@pytest.mark.parametrize(
    ("created_at", "message"),
    [
        ("2026-01-15 11:00:00", "older than"),  # an hour old, documented form
        ("2026-01-15T11:00:00Z", "older than"),
        ("2026-01-15 13:00:00", "in the future"),  # an hour ahead
        ("2026-01-15T13:00:00Z", "in the future"),
    ],
)
def test_a_truto_webhook_an_hour_off_is_refused_in_any_host_zone(
    host_zone: str, created_at: str, message: str
) -> None:
    headers, body = truto_webhook(created_at)
    with pytest.raises(WebhookRejected) as caught:
        Truto().parse_webhook(headers, body, [TRUTO], now=NOW)
    assert caught.value.reason is RejectReason.STALE
    assert message in str(caught.value)


@pytest.mark.parametrize("created_at", ["yesterday", "", None, True, float("nan")])
def test_a_truto_time_that_is_no_time_is_malformed(created_at: object) -> None:
    headers, body = truto_webhook(created_at)
    with pytest.raises(WebhookRejected) as caught:
        Truto().parse_webhook(headers, body, [TRUTO], now=NOW)
    assert caught.value.reason is RejectReason.MALFORMED


def test_a_dropbox_sign_event_time_is_unix_seconds_in_any_host_zone(host_zone: str) -> None:
    when = str(int(NOW) - 10)
    event = {
        "event": {
            "event_time": when,
            "event_type": "signature_request_viewed",
            "event_hash": event_hash("key", when, "signature_request_viewed"),
        },
        "signature_request": {"signature_request_id": "sr-1"},
    }
    parsed = DropboxSign().parse_webhook(
        {"Content-Type": "application/json"}, orjson.dumps(event), [DSIGN], now=NOW
    )
    assert parsed.event_time == NOW - 10
