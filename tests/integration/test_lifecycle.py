"""The Dropbox Sign lifecycle end to end: real HTTP to the service and to the simulator."""

from __future__ import annotations

from datetime import datetime, timedelta

import asyncpg
import pytest

from orchestrator.web import keys
from tests.integration.conftest import Harness


async def test_enqueue_send_and_confirm_by_the_check_a_callback_prompts(
    harness: Harness,
) -> None:
    """The default (DROPBOX_SIGN_CONFIRM_BY=status): the genuine callback is the trigger,
    named in the history, and the provider's answer to the status check it prompted ends
    the cancellation."""
    created = await harness.enqueue("sr-happy", reason="deal fell through")
    assert created["status"] == "queued"
    assert created["attempts"] == 0

    assert await harness.dispatch_once() == 1
    assert (await harness.get(created["id"]))["status"] == "queued"  # a check is due now
    assert await harness.dispatch_once() == 1
    row = await harness.get(created["id"])
    assert row["status"] == "confirmed"
    assert row["outcome"] == "canceled"
    assert row["confirmed_via"] == "reconciliation"
    assert row["attempts"] == 2
    assert row["submitted_at"] is not None
    confirm_by = datetime.fromisoformat(row["confirm_by"])
    submitted = datetime.fromisoformat(row["submitted_at"])
    assert confirm_by - submitted == timedelta(hours=1)

    history = await harness.events(created["id"])
    causes = [(e["from_status"], e["to_status"], e["cause"]) for e in history]
    assert causes == [
        (None, "queued", "enqueued"),
        ("queued", "sending", "claimed"),
        ("sending", "awaiting_confirmation", "provider_queued_cancel"),
        ("awaiting_confirmation", "queued", "webhook_needs_check"),
        ("queued", "sending", "claimed"),
        ("sending", "confirmed", "status_check"),
    ]
    assert history[3]["evidence"]["event_type"] == "signature_request_canceled"
    assert history[3]["evidence"]["settles"] is False
    stats = harness.sim_stats()
    assert (stats["cancel_calls"], stats["status_calls"]) == (1, 1)
    assert harness.sim.get_request("dropbox_sign", "sr-happy")["state"] == "canceled"


async def test_410_on_cancel_confirms_via_provider_response(harness: Harness) -> None:
    harness.sim.seed_request("dropbox_sign", "sr-gone", "canceled")
    created = await harness.enqueue("sr-gone")
    await harness.dispatch()
    row = await harness.get(created["id"])
    assert (row["status"], row["outcome"], row["confirmed_via"]) == (
        "confirmed",
        "canceled",
        "provider_response",
    )


async def test_completed_request_fails_with_the_providers_message(harness: Harness) -> None:
    harness.sim.seed_request("dropbox_sign", "sr-signed", "completed")
    created = await harness.enqueue("sr-signed")
    await harness.dispatch()
    row = await harness.get(created["id"])
    assert (row["status"], row["outcome"]) == ("failed", "completed")
    assert row["confirmed_via"] is None
    assert "signed" in row["last_error"]["message"]
    assert row["last_error"]["code"] == "completed"
    assert harness.sim_stats()["cancel_calls"] == 1


async def test_unknown_request_fails_as_not_found(harness: Harness) -> None:
    harness.sim.seed_request("dropbox_sign", "sr-missing", "not_found")
    created = await harness.enqueue("sr-missing")
    await harness.dispatch()
    row = await harness.get(created["id"])
    assert (row["status"], row["outcome"]) == ("failed", "not_found")
    assert row["last_error"]["code"] == "not_found"


async def test_declined_request_is_confirmed_as_declined(harness: Harness) -> None:
    harness.sim.seed_request("dropbox_sign", "sr-declined", "declined")
    created = await harness.enqueue("sr-declined")
    await harness.dispatch()
    row = await harness.get(created["id"])
    assert (row["status"], row["outcome"], row["confirmed_via"]) == (
        "confirmed",
        "declined",
        "reconciliation",
    )


async def test_dropped_callback_is_reconciled_after_the_timeout(harness: Harness) -> None:
    harness.sim.configure({"dropbox_sign": {"drop_callback_rate": 1.0}})
    created = await harness.enqueue("sr-dropped")
    await harness.dispatch()
    assert (await harness.get(created["id"]))["status"] == "awaiting_confirmation"

    harness.advance(3599)
    assert (await harness.sweep()).overdue == 0
    harness.advance(2)
    assert (await harness.sweep()).overdue == 1
    row = await harness.get(created["id"])
    assert row["status"] == "queued"

    await harness.dispatch()
    row = await harness.get(created["id"])
    assert (row["status"], row["outcome"], row["confirmed_via"]) == (
        "confirmed",
        "canceled",
        "reconciliation",
    )
    stats = harness.sim_stats()
    assert (stats["cancel_calls"], stats["status_calls"]) == (1, 1)
    causes = [e["cause"] for e in await harness.events(created["id"])]
    assert causes[-3:] == ["confirmation_overdue", "claimed", "status_check"]


async def test_lost_cancel_is_sent_again_after_a_status_check(harness: Harness) -> None:
    harness.sim.configure({"dropbox_sign": {"lose_cancel_rate": 1.0}})
    created = await harness.enqueue("sr-lost")
    await harness.dispatch()
    harness.sim.configure({"dropbox_sign": {"lose_cancel_rate": 0.0}})

    harness.advance(3601)
    await harness.sweep()
    await harness.dispatch()
    row = await harness.get(created["id"])
    # The sweep's check finds it open and cancels again; that cancel's callback prompts the
    # check that confirms it.
    assert (row["status"], row["confirmed_via"], row["attempts"]) == (
        "confirmed",
        "reconciliation",
        3,
    )
    stats = harness.sim_stats()
    assert (stats["cancel_calls"], stats["status_calls"]) == (2, 2)


async def test_overdue_row_is_reconciled_once_per_round(harness: Harness) -> None:
    harness.sim.configure({"dropbox_sign": {"drop_callback_rate": 1.0}})
    created = await harness.enqueue("sr-once")
    await harness.dispatch()
    harness.advance(3601)
    first, second = await harness.sweep(), await harness.sweep()
    assert (first.overdue, second.overdue) == (1, 0)
    assert (await harness.get(created["id"]))["status"] == "queued"


async def test_server_errors_are_retried_then_rescheduled_with_backoff(harness: Harness) -> None:
    harness.sim.configure({"dropbox_sign": {"error_5xx_rate": 1.0}})
    created = await harness.enqueue("sr-5xx")
    await harness.dispatch()
    row = await harness.get(created["id"])
    assert row["status"] == "queued"
    retry = [e for e in await harness.events(created["id"]) if e["cause"] == "retry_scheduled"]
    assert retry[-1]["evidence"]["http_status"] >= 500
    assert row["last_error"]["message"].endswith(str(retry[-1]["evidence"]["http_status"]))
    # The in-process tries (three) happened before the durable reschedule.
    assert harness.sim_stats()["cancel_calls"] == 3
    next_at = datetime.fromisoformat(row["next_attempt_at"])
    assert next_at > harness.clock.now()

    harness.sim.configure({"dropbox_sign": {"error_5xx_rate": 0.0}})
    assert await harness.dispatch() == 0  # not due yet
    harness.advance((next_at - harness.clock.now()).total_seconds() + 0.01)
    assert await harness.dispatch() == 1
    row = await harness.get(created["id"])
    assert (row["status"], row["attempts"]) == ("confirmed", 3)  # the last: the check


@pytest.mark.parametrize("settings_overrides", [{"retry_for_s": 7200, "backoff_max_s": 900}])
async def test_an_outage_only_delays_until_the_retry_window_ends(harness: Harness) -> None:
    """Every call fails for the whole retry window (2 hours here, 72 by default): the
    cancellation is retried all along, far more than the old cap of 8 attempts, and ends
    `exhausted` only when ORCH_RETRY_FOR_S has passed."""
    harness.sim.configure({"dropbox_sign": {"error_5xx_rate": 1.0}})
    created = await harness.enqueue("sr-exhaust")
    enqueued_at = harness.clock.now()
    while True:
        await harness.dispatch()
        row = await harness.get(created["id"])
        if row["status"] != "queued":
            break
        assert harness.clock.now() - enqueued_at <= timedelta(hours=2)
        due = datetime.fromisoformat(row["next_attempt_at"])
        harness.advance((due - harness.clock.now()).total_seconds())
    assert row["status"] == "failed"
    assert row["last_error"]["code"] == "exhausted"
    assert harness.clock.now() - enqueued_at >= timedelta(hours=2)
    assert row["attempts"] > 8


@pytest.mark.parametrize("settings_overrides", [{"max_attempts": 3}])
async def test_an_optional_attempt_cap_ends_it_sooner(harness: Harness) -> None:
    harness.sim.configure({"dropbox_sign": {"error_5xx_rate": 1.0}})
    created = await harness.enqueue("sr-capped")
    for _ in range(10):
        await harness.dispatch()
        row = await harness.get(created["id"])
        if row["status"] != "queued":
            break
        harness.advance(1000)
    assert (row["status"], row["attempts"]) == ("failed", 3)
    assert row["last_error"]["code"] == "exhausted"


async def test_rate_limit_answer_is_honoured(harness: Harness) -> None:
    harness.sim.configure({"dropbox_sign": {"rate_429": 1.0, "retry_after_s": 30}})
    created = await harness.enqueue("sr-429")
    await harness.dispatch()
    row = await harness.get(created["id"])
    assert row["status"] == "queued"
    assert row["last_error"]["code"] == "exceeded_rate"
    # The reset the provider announced (30 s) is a floor for the next attempt.
    wait = datetime.fromisoformat(row["next_attempt_at"]) - harness.clock.now()
    assert wait >= timedelta(seconds=29)
    assert harness.sim_stats()["cancel_calls"] == 1  # no quick retry into a 429
    # The wait holds for the whole account, on every instance: nothing more is claimed.
    other = await harness.enqueue("sr-429-other")
    assert await harness.dispatch() == 0
    assert (await harness.get(other["id"]))["attempts"] == 0
    harness.advance(40)  # past the wait and its jitter
    assert await harness.dispatch() == 2


@pytest.mark.parametrize("settings_overrides", [{"dropbox_sign_confirm_by": "webhook"}])
async def test_callback_racing_the_cancel_answer_wins(harness: Harness) -> None:
    """DROPBOX_SIGN_CONFIRM_BY=webhook: the callback lands while the cancel call is in
    flight; the late answer changes nothing."""
    created = await harness.enqueue("sr-race")
    dispatcher = harness.app[keys.DISPATCHER]
    (row,) = await dispatcher.claim(10)
    harness.sim.emit("dropbox_sign", "sr-race", "signature_request_canceled")
    await harness.provider_idle()
    assert (await harness.get(created["id"]))["status"] == "confirmed"

    await dispatcher.process(row)  # the cancel's answer arrives after the callback
    final = await harness.get(created["id"])
    assert (final["status"], final["confirmed_via"]) == ("confirmed", "webhook")
    confirmations = [
        e for e in await harness.events(created["id"]) if e["to_status"] == "confirmed"
    ]
    assert len(confirmations) == 1


@pytest.mark.parametrize("settings_overrides", [{"dropbox_sign_confirm_by": "webhook"}])
async def test_all_signed_callback_fails_the_open_cancellation(harness: Harness) -> None:
    """DROPBOX_SIGN_CONFIRM_BY=webhook: the callback alone ends it (the default asks first:
    test_trust.py::test_a_replayed_all_signed_never_fails_an_open_request)."""
    harness.sim.configure({"dropbox_sign": {"lose_cancel_rate": 1.0}})
    created = await harness.enqueue("sr-allsigned")
    await harness.dispatch()
    harness.sim.emit("dropbox_sign", "sr-allsigned", "signature_request_all_signed")
    await harness.provider_idle()
    row = await harness.get(created["id"])
    assert (row["status"], row["outcome"], row["confirmed_via"]) == ("failed", "completed", None)


async def test_an_event_before_the_enqueue_never_settles_it_on_its_own(
    harness: Harness,
) -> None:
    """A stored event is evidence, not proof: the first attempt asks the provider, which
    here confirms the request is canceled, so no cancel is sent at all."""
    harness.sim.emit("dropbox_sign", "sr-early", "signature_request_canceled")
    await harness.provider_idle()
    created = await harness.enqueue("sr-early")
    assert created["status"] == "queued"
    (enqueued,) = await harness.events(created["id"])
    assert [e["event_type"] for e in enqueued["evidence"]["stored_events"]] == [
        "signature_request_canceled"
    ]
    await harness.dispatch()
    row = await harness.get(created["id"])
    assert (row["status"], row["confirmed_via"]) == ("confirmed", "reconciliation")
    assert harness.sim_stats()["status_calls"] == 1
    assert harness.sim_stats()["cancel_calls"] == 0


async def test_duplicate_callbacks_are_stored_once(
    harness: Harness, db: asyncpg.Connection
) -> None:
    harness.sim.configure({"dropbox_sign": {"duplicate_callback_rate": 1.0}})
    created = await harness.enqueue("sr-dup")
    await harness.dispatch()
    assert harness.sim_stats()["callbacks_delivered"] >= 2
    assert await db.fetchval("SELECT count(*) FROM webhook_inbox") == 1
    confirmations = [
        e for e in await harness.events(created["id"]) if e["to_status"] == "confirmed"
    ]
    assert len(confirmations) == 1


async def test_idempotency(harness: Harness) -> None:
    key = {"Idempotency-Key": "order-42"}
    first = await harness.enqueue("sr-idem", headers=key, reason="r")
    again = await harness.enqueue("sr-idem", headers=key, reason="r", expect=200)
    assert again["id"] == first["id"]
    conflict = await harness.client.post(
        "/v1/cancellations",
        json={"provider": "dropbox_sign", "resource_id": "sr-idem", "reason": "other"},
        headers=key,
    )
    assert conflict.status == 409
    assert conflict.content_type == "application/problem+json"

    no_key = await harness.enqueue("sr-idem", expect=200)
    assert no_key["id"] == first["id"]

    await harness.dispatch()
    assert (await harness.get(first["id"]))["status"] == "confirmed"
    after_terminal = await harness.enqueue("sr-idem")
    assert after_terminal["id"] != first["id"]
    replay = await harness.enqueue("sr-idem", headers=key, reason="r", expect=200)
    assert replay["id"] == first["id"]


async def test_location_header_points_at_the_cancellation(harness: Harness) -> None:
    response = await harness.client.post(
        "/v1/cancellations", json={"provider": "dropbox_sign", "resource_id": "sr-loc"}
    )
    assert response.status == 202
    follow = await harness.client.get(response.headers["Location"])
    assert (await follow.json())["resource_id"] == "sr-loc"


@pytest.mark.parametrize(
    "settings_overrides",
    [{"dropbox_sign_rate_limit_per_min": 30, "dropbox_sign_confirm_by": "webhook"}],
)
async def test_outgoing_calls_are_paced_per_account(harness: Harness) -> None:
    """30 a minute: a burst of a tenth of that, then the rest spread over the minute. (The
    callbacks confirm here, so every claim is a cancel and the figures are the burst's.)"""
    for n in range(40):
        await harness.enqueue(f"sr-paced-{n}")
    assert await harness.dispatch() == 3
    assert harness.sim_stats()["cancel_calls"] == 3
    assert await harness.dispatch() == 0  # the account's bucket is empty for now
    harness.advance(60)
    assert await harness.dispatch() == 3  # at most a burst at a time, refilled meanwhile
    harness.advance(10)
    assert await harness.dispatch() == 3  # 27 a minute refill: 4.5 in 10 s, capped at 3
    stats = await (await harness.client.get("/v1/stats")).json()
    assert stats["queued"] == 31


async def test_metrics_count_what_happened(harness: Harness) -> None:
    await harness.enqueue("sr-metrics")
    await harness.enqueue("sr-metrics", expect=200)
    await harness.dispatch()
    await harness.client.post(
        "/webhooks/dropbox_sign", data=b"{}", headers={"Content-Type": "application/json"}
    )
    response = await harness.client.get("/metrics")
    assert response.status == 200
    text = await response.text()
    for line in [
        'orchestrator_enqueued_total{created="true",provider="dropbox_sign"} 1.0',
        'orchestrator_enqueued_total{created="false",provider="dropbox_sign"} 1.0',
        'orchestrator_transitions_total{cause="provider_queued_cancel",'
        'status="awaiting_confirmation"} 1.0',
        'orchestrator_webhooks_total{outcome="check",provider="dropbox_sign"} 1.0',
        'orchestrator_transitions_total{cause="status_check",status="confirmed"} 1.0',
        'orchestrator_webhooks_total{outcome="rejected",provider="dropbox_sign"} 1.0',
        'orchestrator_provider_call_seconds_count{operation="cancel",provider="dropbox_sign",'
        'result="Queued"} 1.0',
    ]:
        assert line in text, line
