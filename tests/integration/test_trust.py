"""The outcomes the README promises, at their edges (issue 10): an outage only delays, and
no replay, redirect, absurd header or transient failure ends a cancellation falsely.

Each test drives the service over real HTTP against the simulators, with the clock moved by
hand, and names the README promise it holds.
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest

from orchestrator.providers.base import KEPT_EVENT_BYTES
from orchestrator.providers.dropbox_sign import event_hash
from orchestrator.web import keys
from tests.integration.conftest import Harness


def callback(resource_id: str, key: str, event_time: float, event_type: str) -> aiohttp.FormData:
    """A genuinely signed Dropbox Sign callback: the hash covers only time and type, so a
    captured one can be re-posted with any request id."""
    when = str(int(event_time))
    payload = {
        "event": {
            "event_time": when,
            "event_type": event_type,
            "event_hash": event_hash(key, when, event_type),
        },
        "signature_request": {"signature_request_id": resource_id},
    }
    form = aiohttp.FormData(default_to_multipart=True)
    form.add_field("json", orjson.dumps(payload).decode())
    return form


async def post_callback(harness: Harness, form: aiohttp.FormData) -> int:
    response = await harness.client.post("/webhooks/dropbox_sign", data=form)
    return response.status


def key(harness: Harness) -> str:
    return harness.sim.dropbox_sign.settings.api_key


async def until_terminal(harness: Harness, cancellation_id: str, steps: int = 60) -> dict[str, Any]:
    """Step the dispatcher and the clock until the cancellation ends (bounded)."""
    for _ in range(steps):
        row = await harness.get(cancellation_id)
        if row["status"] in ("confirmed", "failed"):
            return row
        if row["status"] == "awaiting_confirmation":
            harness.advance(3601)
            await harness.sweep()
        elif row["next_attempt_at"]:
            due = datetime.fromisoformat(row["next_attempt_at"])
            harness.advance(max(0.0, (due - harness.clock.now()).total_seconds()) + 0.01)
        await harness.dispatch()
    raise AssertionError(f"{cancellation_id} did not end: {await harness.get(cancellation_id)}")


# --- an outage only delays ----------------------------------------------------------------


@pytest.mark.parametrize("settings_overrides", [{"backoff_base_s": 0.2, "backoff_max_s": 1}])
async def test_a_20_second_outage_fails_nothing(harness: Harness) -> None:
    """Issue 10's figure: with these backoffs a 20 s outage failed 20 of 20 cancels after 8
    attempts. Now every one is retried through the outage and confirmed after it."""
    harness.sim.configure({"dropbox_sign": {"error_5xx_rate": 1.0}})
    ids = [(await harness.enqueue(f"sr-outage-{n}"))["id"] for n in range(20)]
    outage_ends = harness.clock.now() + timedelta(seconds=20)
    while harness.clock.now() < outage_ends:
        await harness.dispatch()
        harness.advance(1)
    rows = [await harness.get(i) for i in ids]
    assert {r["status"] for r in rows} == {"queued"}
    assert min(r["attempts"] for r in rows) > 8

    harness.sim.configure({"dropbox_sign": {"error_5xx_rate": 0.0}})
    harness.advance(1)
    await harness.dispatch()
    assert [(await harness.get(i))["status"] for i in ids] == ["confirmed"] * 20


# --- a replayed callback cannot settle another request ------------------------------------


WEBHOOK_MODE = pytest.mark.parametrize(
    "settings_overrides", [{"dropbox_sign_confirm_by": "webhook"}], ids=["confirm_by_webhook"]
)


@WEBHOOK_MODE
async def test_a_callback_older_than_the_first_cancel_call_only_prompts_a_check(
    harness: Harness,
) -> None:
    """DROPBOX_SIGN_CONFIRM_BY=webhook. A genuine `signature_request_canceled` captured 400 s
    before this request's cancel was first sent, re-posted with its id: it does not confirm;
    the status check finds the request still open, and the cancel is sent (and confirmed by
    its own callback)."""
    captured_at = harness.clock.now().timestamp() - 400
    # The provider answers 200 but never acts on it: the request stays open (signable).
    harness.sim.configure({"dropbox_sign": {"lose_cancel_rate": 1.0}})
    created = await harness.enqueue("sr-victim")
    await harness.dispatch()
    assert (await harness.get(created["id"]))["status"] == "awaiting_confirmation"

    replay = callback("sr-victim", key(harness), captured_at, "signature_request_canceled")
    assert await post_callback(harness, replay) == 200
    row = await harness.get(created["id"])
    assert row["status"] == "queued"  # not confirmed: only a status check is due
    assert [e["cause"] for e in await harness.events(created["id"])][-1] == "webhook_needs_check"

    assert harness.sim.get_request("dropbox_sign", "sr-victim")["state"] == "open"
    harness.sim.configure({"dropbox_sign": {"lose_cancel_rate": 0.0}})
    status_calls = harness.sim_stats()["status_calls"]
    await harness.dispatch()
    assert harness.sim_stats()["status_calls"] == status_calls + 1
    final = await harness.get(created["id"])
    assert (final["status"], final["confirmed_via"]) == ("confirmed", "webhook")
    assert harness.sim.get_request("dropbox_sign", "sr-victim")["state"] == "canceled"


@WEBHOOK_MODE
async def test_a_callback_within_the_skew_still_confirms(harness: Harness) -> None:
    """The control, and the limit of DROPBOX_SIGN_CONFIRM_BY=webhook: the same callback
    dated inside the allowed skew settles at once, whether or not the provider acted."""
    harness.sim.configure({"dropbox_sign": {"drop_callback_rate": 1.0}})
    created = await harness.enqueue("sr-fresh")
    await harness.dispatch()
    now = harness.clock.now().timestamp()
    assert (
        await post_callback(
            harness, callback("sr-fresh", key(harness), now - 200, "signature_request_canceled")
        )
        == 200
    )
    row = await harness.get(created["id"])
    assert (row["status"], row["confirmed_via"]) == ("confirmed", "webhook")


async def test_a_stored_event_never_settles_a_later_enqueue_on_its_own(
    harness: Harness,
) -> None:
    """Posted for a request nobody had enqueued, the event is stored; the later enqueue is
    not confirmed by it: the provider is asked, finds the request open, and the cancel goes
    out. The stored event stays in the history as evidence."""
    a_minute_ago = harness.clock.now().timestamp() - 60
    form = callback("sr-later", key(harness), a_minute_ago, "signature_request_canceled")
    assert await post_callback(harness, form) == 200
    created = await harness.enqueue("sr-later")
    assert created["status"] == "queued"
    await harness.dispatch_once()
    assert harness.sim_stats()["status_calls"] == 1
    assert harness.sim_stats()["cancel_calls"] == 1
    await harness.dispatch()  # the check the cancel's own callback prompted
    history = await harness.events(created["id"])
    assert history[0]["evidence"]["stored_events"][0]["event_type"] == (
        "signature_request_canceled"
    )
    row = await harness.get(created["id"])
    assert (row["status"], row["confirmed_via"]) == ("confirmed", "reconciliation")
    assert harness.sim_stats()["status_calls"] == 2


async def test_confirm_by_status_lets_no_callback_settle_anything(harness: Harness) -> None:
    """DROPBOX_SIGN_CONFIRM_BY=status, the default: every callback only triggers the status
    check, which is what confirms (as `reconciliation`)."""
    created = await harness.enqueue("sr-proof")
    await harness.dispatch_once()  # the simulator's callback arrives and only asks for a check
    row = await harness.get(created["id"])
    assert row["status"] == "queued"
    await harness.dispatch_once()
    row = await harness.get(created["id"])
    assert (row["status"], row["confirmed_via"]) == ("confirmed", "reconciliation")


# --- a captured callback cannot end a cancellation (issue 16), under the default settings ---


async def open_and_awaiting(harness: Harness, resource_id: str) -> str:
    """A cancellation whose cancel the provider answered 200 and never acted on: the request
    stays open (signable), and no callback of its own comes."""
    harness.sim.configure({"dropbox_sign": {"lose_cancel_rate": 1.0}})
    created = await harness.enqueue(resource_id)
    await harness.dispatch()
    assert (await harness.get(created["id"]))["status"] == "awaiting_confirmation"
    return str(created["id"])


@pytest.mark.parametrize(
    ("event_type", "would_be"),
    [("signature_request_canceled", "confirmed"), ("signature_request_all_signed", "failed")],
)
async def test_a_captured_callback_replayed_never_ends_an_open_cancellation(
    harness: Harness, event_type: str, would_be: str
) -> None:
    """A genuine event, captured and re-posted with another open request's id, dated within
    the skew (DROPBOX_SIGN_CONFIRM_BY=webhook would make it `would_be`): it only prompts a
    status check; the provider still holds the request open, so the cancel is sent again
    and the cancellation waits for a confirmation. The history names the callback."""
    ident = await open_and_awaiting(harness, "sr-victim")
    now = harness.clock.now().timestamp()
    replay = callback("sr-victim", key(harness), now, event_type)
    assert await post_callback(harness, replay) == 200
    assert (await harness.get(ident))["status"] == "queued"
    status_calls = harness.sim_stats()["status_calls"]

    await harness.dispatch()
    assert harness.sim_stats()["status_calls"] == status_calls + 1
    row = await harness.get(ident)
    assert row["status"] == "awaiting_confirmation"
    assert harness.sim.get_request("dropbox_sign", "sr-victim")["state"] == "open"
    history = await harness.events(ident)
    assert would_be not in {e["to_status"] for e in history}
    trigger = next(e for e in history if e["cause"] == "webhook_needs_check")
    assert trigger["evidence"]["event_type"] == event_type
    assert trigger["evidence"]["settles"] is False


async def test_a_genuine_callback_confirms_after_the_check_it_prompts(harness: Harness) -> None:
    """The provider canceled and says so: the callback prompts one check, whose answer
    (410 or a canceled request) ends the cancellation as `reconciliation`."""
    ident = await open_and_awaiting(harness, "sr-genuine")
    harness.sim.seed_request("dropbox_sign", "sr-genuine", "canceled")
    now = harness.clock.now().timestamp()
    form = callback("sr-genuine", key(harness), now, "signature_request_canceled")
    assert await post_callback(harness, form) == 200
    await harness.dispatch()
    row = await harness.get(ident)
    assert (row["status"], row["outcome"], row["confirmed_via"]) == (
        "confirmed",
        "canceled",
        "reconciliation",
    )
    causes = [e["cause"] for e in await harness.events(ident)]
    assert causes[-3:] == ["webhook_needs_check", "claimed", "status_check"]


async def test_fifty_callbacks_for_one_cancellation_cost_one_status_check(
    harness: Harness, db: asyncpg.Connection
) -> None:
    """Fifty genuine, distinct events for one open cancellation: one check is due, one
    history row names the trigger, and the provider sees one status call."""
    ident = await open_and_awaiting(harness, "sr-flood")
    now = harness.clock.now().timestamp()
    for n in range(50):
        form = callback("sr-flood", key(harness), now - n, "signature_request_canceled")
        assert await post_callback(harness, form) == 200
    assert await db.fetchval("SELECT count(*) FROM webhook_inbox") == 50
    history = await harness.events(ident)
    assert [e["cause"] for e in history].count("webhook_needs_check") == 1
    status_calls = harness.sim_stats()["status_calls"]
    await harness.dispatch()
    assert harness.sim_stats()["status_calls"] == status_calls + 1


async def test_callbacks_during_an_attempt_prompt_one_check_after_it(harness: Harness) -> None:
    """Callbacks that arrive while the cancel is in flight neither start a check of their
    own nor are lost: the attempt's write, leaving the request awaiting confirmation, makes
    one check due at once, and that check confirms."""
    created = await harness.enqueue("sr-inflight")
    dispatcher = harness.app[keys.DISPATCHER]
    (row,) = await dispatcher.claim(10)
    harness.sim.seed_request("dropbox_sign", "sr-inflight", "canceled")
    now = harness.clock.now().timestamp()
    for n in range(20):
        form = callback("sr-inflight", key(harness), now - n, "signature_request_canceled")
        assert await post_callback(harness, form) == 200
    assert (await harness.get(created["id"]))["status"] == "sending"
    await dispatcher.process(row)  # the 410: settled by the provider's own answer
    assert (await harness.get(created["id"]))["status"] == "confirmed"

    harness.sim.configure({"dropbox_sign": {"drop_callback_rate": 1.0}})
    again = await harness.enqueue("sr-inflight-2")
    (row,) = await dispatcher.claim(10)
    for n in range(20):
        form = callback("sr-inflight-2", key(harness), now - n, "signature_request_canceled")
        assert await post_callback(harness, form) == 200
    await dispatcher.process(row)  # 200: the cancel is queued at the provider
    await harness.provider_idle()
    after = await harness.get(again["id"])
    assert (after["status"], after["next_attempt_at"]) == ("queued", after["updated_at"])
    trigger = (await harness.events(again["id"]))[-1]
    assert trigger["cause"] == "webhook_needs_check"
    assert len(trigger["evidence"]["arrived_during_attempt"]) == 20
    status_calls = harness.sim_stats()["status_calls"]
    await harness.dispatch()
    assert harness.sim_stats()["status_calls"] == status_calls + 1
    assert (await harness.get(again["id"]))["confirmed_via"] == "reconciliation"


def case_variants(digest: str, count: int) -> list[str]:
    """`count` distinct upper/lower-case spellings of one hex digest."""
    letters = [i for i, ch in enumerate(digest) if ch.isalpha()]
    variants = []
    for n in range(count):
        chars = list(digest)
        for bit, i in enumerate(letters[:20]):
            if n >> bit & 1:
                chars[i] = chars[i].upper()
        variants.append("".join(chars))
    assert len(set(variants)) == count
    return variants


async def test_case_variants_of_one_captured_hash_are_one_event(
    harness: Harness, db: asyncpg.Connection
) -> None:
    """Verification lowercases the hash, and so does the dedupe key: 200 spellings of one
    captured event_hash are one inbox row, at most one check, one history row."""
    ident = await open_and_awaiting(harness, "sr-cases")
    when = str(int(harness.clock.now().timestamp()))
    digest = event_hash(key(harness), when, "signature_request_canceled")
    for variant in case_variants(digest, 200):
        payload = {
            "event": {
                "event_time": when,
                "event_type": "signature_request_canceled",
                "event_hash": variant,
            },
            "signature_request": {"signature_request_id": "sr-cases"},
        }
        response = await harness.client.post("/webhooks/dropbox_sign", json=payload)
        assert response.status == 200, await response.text()
    assert await db.fetchval("SELECT count(*) FROM webhook_inbox") == 1
    history = await harness.events(ident)
    assert [e["cause"] for e in history].count("webhook_needs_check") == 1
    status_calls = harness.sim_stats()["status_calls"]
    await harness.dispatch()
    assert harness.sim_stats()["status_calls"] <= status_calls + 1


async def test_a_padded_callback_stores_only_the_kept_fields(
    harness: Harness, db: asyncpg.Connection
) -> None:
    """A verified event padded with 500 KB of fields: the inbox keeps the five fields the
    service reads, under the cap, not the body."""
    when = str(int(harness.clock.now().timestamp()))
    payload = {
        "event": {
            "event_time": when,
            "event_type": "signature_request_viewed",
            "event_hash": event_hash(key(harness), when, "signature_request_viewed"),
        },
        "signature_request": {
            "signature_request_id": "sr-padded",
            **{f"pad{n}": "x" * 1000 for n in range(500)},
        },
    }
    response = await harness.client.post("/webhooks/dropbox_sign", json=payload)
    assert response.status == 200, await response.text()
    stored = await db.fetchval("SELECT payload::text FROM webhook_inbox")
    assert len(stored.encode()) <= KEPT_EVENT_BYTES
    assert set(orjson.loads(stored)) == {
        "event_time",
        "event_type",
        "event_hash",
        "reported_for_account_id",
        "signature_request_id",
    }


# --- redirects are never followed -----------------------------------------------------------


async def test_a_redirect_is_an_error_kept_and_retried_never_a_success(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    harness.sim.configure({"dropbox_sign": {"redirect_rate": 1.0}})
    created = await harness.enqueue("sr-moved")
    with caplog.at_level(logging.ERROR, logger="orchestrator.providers.base"):
        await harness.dispatch()
    row = await harness.get(created["id"])
    assert row["status"] == "queued"
    assert row["last_error"]["code"] == "redirect"
    assert row["last_error"]["details"]["http_status"] == 302
    assert row["last_error"]["details"]["location"]
    assert harness.sim_stats()["redirects_followed"] == 0
    assert any("DROPBOX_SIGN_BASE_URL" in r.getMessage() for r in caplog.records)

    harness.sim.configure({"dropbox_sign": {"redirect_rate": 0.0}})
    assert (await until_terminal(harness, created["id"]))["status"] == "confirmed"


# --- wait hints are bounded -----------------------------------------------------------------


@pytest.mark.parametrize(
    "hint",
    [
        {"raw_retry_after": "1e300"},
        {"raw_retry_after": "inf"},
        {"raw_retry_after": "-5"},
        {"raw_ratelimit_reset": str(int(datetime(5000, 1, 1).timestamp()))},
    ],
    ids=["1e300", "inf", "negative", "year-5000"],
)
async def test_an_absurd_wait_hint_pauses_the_account_for_an_hour_at_most(
    harness: Harness, db: asyncpg.Connection, hint: dict[str, str]
) -> None:
    harness.sim.configure({"dropbox_sign": {"rate_429": 1.0, **hint}})
    first = await harness.enqueue("sr-hint")
    await harness.dispatch()
    row = await harness.get(first["id"])
    assert row["status"] == "queued"
    wait = datetime.fromisoformat(row["next_attempt_at"]) - harness.clock.now()
    assert timedelta(0) <= wait <= timedelta(seconds=3601)
    paused = await db.fetchval("SELECT paused_until FROM account_budgets")
    assert paused - harness.clock.now() <= timedelta(seconds=3600)

    # The account is paused, never for ever: after the cap the next cancels go out.
    harness.sim.configure(
        {"dropbox_sign": {"rate_429": 0.0, "raw_retry_after": None, "raw_ratelimit_reset": None}}
    )
    for n in range(21):
        await harness.enqueue(f"sr-after-{n}")
    assert await harness.dispatch() == 0
    calls = harness.sim_stats()["cancel_calls"]
    harness.advance(3602)
    assert await harness.dispatch() == 22
    assert harness.sim_stats()["cancel_calls"] == calls + 22


# --- a transient failure never becomes a final outcome --------------------------------------


async def test_a_failing_status_check_after_a_refusal_never_ends_the_cancellation(
    harness: Harness,
) -> None:
    """The demo's 2-in-30 flake: the cancel got 400 (the request was declined), and the
    status check asked why met a 5xx. That used to end it `not_cancelable`."""
    harness.sim.seed_request("dropbox_sign", "sr-declined", "declined")
    harness.sim.configure({"dropbox_sign": {"status_5xx_rate": 1.0}})
    created = await harness.enqueue("sr-declined")
    await harness.dispatch()
    row = await harness.get(created["id"])
    assert row["status"] == "queued"  # not failed/not_cancelable
    assert row["last_error"]["code"] != "not_cancelable"

    harness.sim.configure({"dropbox_sign": {"status_5xx_rate": 0.0}})
    final = await until_terminal(harness, created["id"])
    assert (final["status"], final["outcome"]) == ("confirmed", "declined")


async def test_a_cancel_that_landed_before_a_reset_is_confirmed_by_the_status_check(
    harness: Harness,
) -> None:
    """Truto processed the cancel but the connection was reset before its answer. The call
    may have landed, so the next attempt reads the workflow before it cancels again, and the
    read confirms it: no second cancel, no refusal to misread."""
    harness.sim.configure({"truto": {"reset_after_cancel_rate": 1.0}})
    created = await harness.enqueue(
        "wf-reset",
        provider="truto",
        params={"integrated_account_id": "62f44730-dd91-461e-bd6a-aedd9e0ad79d", "message": "m"},
    )
    await harness.dispatch()
    row = await harness.get(created["id"])
    assert row["status"] == "queued"
    harness.sim.configure({"truto": {"reset_after_cancel_rate": 0.0}})
    final = await until_terminal(harness, created["id"])
    assert (final["status"], final["outcome"], final["confirmed_via"]) == (
        "confirmed",
        "canceled",
        "reconciliation",
    )


# --- deep JSON is a 400, never a 500 ----------------------------------------------------------


async def test_a_signed_callback_nested_900_deep_is_answered_400(harness: Harness) -> None:
    when = str(int(time.time()))
    event = {
        "event_time": when,
        "event_type": "signature_request_viewed",
        "event_hash": event_hash(key(harness), when, "signature_request_viewed"),
    }
    deep = "[" * 900 + '"x"' + "]" * 900  # as deep as orjson parses; orjson cannot write it
    body = (
        '{"event": ' + orjson.dumps(event).decode() + ', "signature_request": '
        '{"signature_request_id": "sr-deep", "metadata": ' + deep + "}}"
    )
    response = await harness.client.post(
        "/webhooks/dropbox_sign", data=body, headers={"Content-Type": "application/json"}
    )
    assert response.status == 400, await response.text()
    assert response.content_type == "application/problem+json"


async def test_an_enqueue_nested_900_deep_is_a_client_error(harness: Harness) -> None:
    deep = '{"a": ' * 900 + "{}" + "}" * 900
    body = '{"provider": "dropbox_sign", "resource_id": "sr-d", "metadata": ' + deep + "}"
    response = await harness.client.post(
        "/v1/cancellations", data=body, headers={"Content-Type": "application/json"}
    )
    assert 400 <= response.status < 500, await response.text()
    assert response.content_type == "application/problem+json"


# --- retention ---------------------------------------------------------------------------------


@pytest.mark.parametrize("settings_overrides", [{"retention_s": 86_400}])
async def test_retention_deletes_what_ended_long_ago_and_keeps_the_rest(
    harness: Harness, db: asyncpg.Connection
) -> None:
    old = await harness.enqueue("sr-old")
    await harness.dispatch()
    assert (await harness.get(old["id"]))["status"] == "confirmed"
    now = harness.clock.now().timestamp()
    # An event for a request nobody cancels, received now.
    await post_callback(
        harness, callback("sr-nobody", key(harness), now, "signature_request_viewed")
    )
    harness.advance(86_401)
    young = await harness.enqueue("sr-young")  # ends now: kept
    response = await harness.client.post(
        f"/v1/cancellations/{young['id']}/abandon", json={"reason": "ended just now"}
    )
    assert response.status == 200, await response.text()
    open_one = await harness.enqueue("sr-open")  # open: never deleted

    report = await harness.sweep()
    assert (report.deleted, report.inbox_deleted) == (1, 1)
    assert (await harness.client.get(f"/v1/cancellations/{old['id']}")).status == 404
    history = "SELECT count(*) FROM cancellation_events WHERE cancellation_id = $1"
    assert await db.fetchval(history, uuid.UUID(old["id"])) == 0
    assert await db.fetchval("SELECT count(*) FROM webhook_inbox") == 0
    assert (await harness.get(young["id"]))["status"] == "failed"
    assert (await harness.get(open_one["id"]))["status"] == "queued"
    stats = await (await harness.client.get("/v1/stats")).json()
    assert [stats[k] for k in ("total", "confirmed", "failed", "queued")] == [2, 0, 1, 1]


# --- accounts this instance lacks ---------------------------------------------------------------


async def test_a_row_of_an_account_this_instance_lacks_costs_no_attempt(
    harness: Harness, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    """Written by an instance that has the account `emea`; this one has not: it never claims
    the row, never fails it, and says so in /readyz."""
    await db.execute(
        "SELECT result FROM enqueue_cancellation(gen_random_uuid(), 'dropbox_sign', 'emea',"
        " 'sr-elsewhere', NULL, '{}', '{}', NULL, 'h', now())"
    )
    for _ in range(3):
        assert await harness.dispatch() == 0
        harness.advance(1000)
    assert await db.fetchval("SELECT attempts FROM cancellations") == 0
    ready = await (await harness.client.get("/readyz")).json()
    assert ready["unserved_accounts"] == {"dropbox_sign:emea": 1}
    with caplog.at_level(logging.WARNING, logger="orchestrator.workers.sweeper"):
        await harness.sweep()
    assert any("dropbox_sign:emea (1)" in r.getMessage() for r in caplog.records)
    assert harness.app[keys.DISPATCHER].served().keys() >= {"dropbox_sign:default"}


@pytest.mark.parametrize("settings_overrides", [{"dropbox_sign_rate_limit_per_min": 10}])
async def test_a_row_without_budget_for_its_second_call_goes_back_unsent(
    harness: Harness,
) -> None:
    """10 a minute: a burst of one call. An overdue row needs two (the status check, then
    the cancel); the claim paid for the first, and with nothing left the row goes back with
    its attempt refunded, instead of sleeping in a throttle past its lease."""
    harness.sim.configure({"dropbox_sign": {"lose_cancel_rate": 1.0}})  # stays open
    created = await harness.enqueue("sr-two-calls")
    assert await harness.dispatch() == 1
    harness.advance(3601)
    assert (await harness.sweep()).overdue == 1
    assert await harness.dispatch() == 1  # 6 s of refill bought one call: the status check
    row = await harness.get(created["id"])
    assert row["status"] == "queued"
    assert row["attempts"] == 1  # the second claim's attempt was refunded
    assert [e["cause"] for e in await harness.events(created["id"])][-1] == "throttled"
    assert harness.sim_stats()["status_calls"] == 1
    assert harness.sim_stats()["cancel_calls"] == 1
