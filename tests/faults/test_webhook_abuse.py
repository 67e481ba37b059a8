"""Fault 4, webhook abuse: redeliveries, a callback that overtakes the cancel call, forged,
stale, oversized and malformed events, and events for another account.

Each gets the right answer; no forged or malformed event changes a cancellation or stores
anything (the cancellations, cancellation_events and webhook_inbox tables are compared row by
row before and after).
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from orchestrator.providers.dropbox_sign import ACK, event_hash
from orchestrator.simulator.app import SimulatorServer
from orchestrator.simulator.truto import signature as truto_signature
from orchestrator.web import keys
from tests.faults.common import is_problem
from tests.integration.conftest import Harness
from tests.integration.processes import wait_for

MAIN_ID = "sim-account"  # the simulator's account id: its callbacks are reported for it
EMEA_ID = "acct-emea"
EMEA_KEY = "emea-api-key-not-the-main-one"
TEN_MB = 10 * 1024 * 1024
REPLAY_WINDOW_S = 60
JSON = "application/json"


@pytest.fixture
def settings_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sim_server: SimulatorServer
) -> dict[str, Any]:
    """Two Dropbox Sign accounts, each declaring its account id, so an event is checked
    against the key of the account it names, and only that one."""
    monkeypatch.setenv("FAULTS_MAIN_KEY", sim_server.simulator.dropbox_sign.settings.api_key)
    monkeypatch.setenv("FAULTS_EMEA_KEY", EMEA_KEY)
    sim_server.simulator.dropbox_sign.settings.extra_api_keys = {EMEA_KEY: EMEA_ID}
    config = tmp_path / "accounts.toml"
    config.write_text(
        f"""
[[accounts]]
provider = "dropbox_sign"
name = "default"
base_url = "{sim_server.dropbox_sign_url}"
secret_env = "FAULTS_MAIN_KEY"
account_id = "{MAIN_ID}"

[[accounts]]
provider = "dropbox_sign"
name = "emea"
base_url = "{sim_server.dropbox_sign_url}"
secret_env = "FAULTS_EMEA_KEY"
account_id = "{EMEA_ID}"
"""
    )
    return {"accounts_file": str(config), "webhook_replay_window_s": REPLAY_WINDOW_S}


# --- building events --------------------------------------------------------------------


def dropbox_event(
    key: str,
    event_type: str = "signature_request_canceled",
    resource_id: str | None = "sr-open",
    *,
    account_id: str | None = MAIN_ID,
    event_time: str | None = None,
) -> dict[str, Any]:
    when = event_time or str(int(time.time()))
    event: dict[str, Any] = {
        "event_type": event_type,
        "event_time": when,
        "event_hash": event_hash(key, when, event_type),
        "event_metadata": {"reported_for_account_id": account_id},
    }
    payload: dict[str, Any] = {"event": event}
    if resource_id is not None:
        payload["signature_request"] = {"signature_request_id": resource_id, "is_complete": False}
    return payload


def multipart(json_text: bytes, boundary: str = "b0undary") -> tuple[bytes, str]:
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="json"\r\n\r\n'.encode()
        + json_text
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def truto_event(created_at: str | None = None) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "event": "record:updated",
        "payload": {"id": "wf-1", "status": "inactive"},
        "environment_id": "sim-environment",
        "created_at": created_at or datetime.now(UTC).isoformat(),
        "webhook_id": "sim-webhook",
    }


def truto_headers(secret: str, body: bytes) -> dict[str, str]:
    return {"Content-Type": JSON, "X-Truto-Signature": truto_signature(secret, body)}


# --- what the database holds --------------------------------------------------------------


async def snapshot(db: asyncpg.Connection) -> tuple[list[Any], list[Any], list[Any]]:
    return (
        [tuple(r) for r in await db.fetch("SELECT * FROM cancellations ORDER BY id")],
        [tuple(r) for r in await db.fetch("SELECT * FROM cancellation_events ORDER BY id")],
        [tuple(r) for r in await db.fetch("SELECT * FROM webhook_inbox ORDER BY id")],
    )


async def awaiting(harness: Harness, resource_id: str = "sr-open") -> dict[str, Any]:
    """An open Dropbox Sign cancellation whose callback the provider will never send."""
    harness.sim.configure({"dropbox_sign": {"drop_callback_rate": 1.0}})
    created = await harness.enqueue(resource_id)
    await harness.dispatch()
    row = await harness.get(created["id"])
    assert row["status"] == "awaiting_confirmation", row
    return row


async def post(
    harness: Harness, path: str, body: bytes, headers: dict[str, str]
) -> tuple[int, str, str]:
    response = await harness.client.post(path, data=io.BytesIO(body), headers=headers)
    return response.status, response.content_type, await response.text()


# --- forged, stale, oversized and malformed: the right 4xx and nothing changed -------------


def bad_requests(
    truto_secret: str, main_key: str
) -> list[tuple[str, str, bytes, dict[str, str], int]]:
    """(case, path, body, headers, status)."""
    ds = "/webhooks/dropbox_sign"

    def ds_json(payload: Any, content_type: str = JSON) -> tuple[bytes, dict[str, str]]:
        return orjson.dumps(payload), {"Content-Type": content_type}

    def ds_multipart(payload: Any) -> tuple[bytes, dict[str, str]]:
        body, content_type = multipart(orjson.dumps(payload))
        return body, {"Content-Type": content_type}

    def raw(body: bytes, content_type: str) -> tuple[bytes, dict[str, str]]:
        return body, {"Content-Type": content_type}

    def truto_raw(body: bytes, secret: str = truto_secret) -> tuple[bytes, dict[str, str]]:
        return body, truto_headers(secret, body)

    def truto(payload: Any, secret: str = truto_secret) -> tuple[bytes, dict[str, str]]:
        return truto_raw(orjson.dumps(payload), secret)

    no_hash = dropbox_event(main_key)
    del no_hash["event"]["event_hash"]
    stale = datetime.fromtimestamp(time.time() - 2 * REPLAY_WINDOW_S, UTC).isoformat()
    cases: list[tuple[str, str, tuple[bytes, dict[str, str]], int]] = [
        ("forged event_hash", ds, ds_multipart(dropbox_event("not-the-key")), 401),
        ("forged event_hash, JSON body", ds, ds_json(dropbox_event("not-the-key")), 401),
        (
            "hash made with another account's key",
            ds,
            ds_multipart(dropbox_event(EMEA_KEY, account_id=MAIN_ID)),
            401,
        ),
        (
            "unknown reported_for_account_id",
            ds,
            ds_multipart(dropbox_event(main_key, account_id="acct-nobody")),
            401,
        ),
        ("no event_hash", ds, ds_multipart(no_hash), 401),
        ("event is not an object", ds, ds_multipart({"event": "canceled"}), 400),
        ("broken JSON", ds, (b'{"event": {"event_type": ', {"Content-Type": JSON}), 400),
        ("a JSON array", ds, ds_json([dropbox_event(main_key)]), 400),
        ("empty body", ds, (b"", {"Content-Type": JSON}), 400),
        (
            "broken multipart: no closing boundary",
            ds,
            (
                b'--b0undary\r\nContent-Disposition: form-data; name="json"\r\n\r\n{"event"',
                {"Content-Type": "multipart/form-data; boundary=b0undary"},
            ),
            400,
        ),
        (
            "broken multipart: no boundary parameter",
            ds,
            (multipart(b"{}")[0], {"Content-Type": "multipart/form-data"}),
            400,
        ),
        (
            "multipart without a json field",
            ds,
            (
                b'--b0undary\r\nContent-Disposition: form-data; name="other"\r\n\r\nx\r\n'
                b"--b0undary--\r\n",
                {"Content-Type": "multipart/form-data; boundary=b0undary"},
            ),
            400,
        ),
        ("multipart with broken JSON inside", ds, raw(*multipart(b"{nope")), 400),
        (
            "wrong content type: text/plain",
            ds,
            ds_json(dropbox_event(main_key), "text/plain"),
            415,
        ),
        (
            "wrong content type: octet-stream",
            ds,
            ds_json(dropbox_event(main_key), "application/octet-stream"),
            415,
        ),
        ("a body of 10 MB", ds, (b"x" * TEN_MB, {"Content-Type": JSON}), 413),
        ("truto: forged signature", "/webhooks/truto", truto(truto_event(), "not-the-secret"), 401),
        (
            "truto: no signature",
            "/webhooks/truto",
            (orjson.dumps(truto_event()), {"Content-Type": JSON}),
            401,
        ),
        (
            "truto: malformed signature header",
            "/webhooks/truto",
            (orjson.dumps(truto_event()), {"Content-Type": JSON, "X-Truto-Signature": "v=zz"}),
            401,
        ),
        ("truto: replay of an old event", "/webhooks/truto", truto(truto_event(stale)), 401),
        ("truto: broken JSON, signed", "/webhooks/truto", truto_raw(b'{"id": '), 400),
        ("truto: no id, signed", "/webhooks/truto", truto({**truto_event(), "id": None}), 400),
        (
            "truto: no created_at, signed",
            "/webhooks/truto",
            truto({**truto_event(), "created_at": None}),
            400,
        ),
        ("truto: a body of 10 MB", "/webhooks/truto", raw(b"x" * TEN_MB, JSON), 413),
        ("unknown provider", "/webhooks/nobody", ds_json(dropbox_event(main_key)), 404),
        ("aptly sends no webhooks", "/webhooks/aptly", ds_json(dropbox_event(main_key)), 404),
    ]
    return [(case, path, body, headers, status) for case, path, (body, headers), status in cases]


async def test_forged_stale_oversized_and_malformed_events_change_nothing(
    harness: Harness, db: asyncpg.Connection, subtests: pytest.Subtests
) -> None:
    await awaiting(harness)
    before = await snapshot(db)
    secret = harness.sim.truto.settings.webhook_secret
    key = harness.sim.dropbox_sign.settings.api_key
    for case, path, body, headers, status in bad_requests(secret, key):
        with subtests.test(case):
            got, content_type, text = await post(harness, path, body, headers)
            assert got == status, text[:500]
            assert is_problem(status, content_type, text), (content_type, text[:500])
            assert await snapshot(db) == before


# --- redeliveries and races ---------------------------------------------------------------


async def test_the_same_callback_three_times_confirms_once(
    harness: Harness, db: asyncpg.Connection
) -> None:
    """Three deliveries of one callback: one inbox row, one status check prompted (the
    default), one confirmation."""
    row = await awaiting(harness)
    (dropped,) = harness.sim.dropbox_sign.events  # the real callback, signed, never delivered
    body, content_type = multipart(orjson.dumps(dropped))
    answers = [
        await post(harness, "/webhooks/dropbox_sign", body, {"Content-Type": content_type})
        for _ in range(3)
    ]
    assert [(status, text) for status, _, text in answers] == [(200, ACK)] * 3
    causes = [e["cause"] for e in await harness.events(row["id"])]
    assert causes == ["enqueued", "claimed", "provider_queued_cancel", "webhook_needs_check"]
    assert await db.fetchval("SELECT count(*) FROM webhook_inbox") == 1
    status_calls = harness.sim_stats()["status_calls"]
    await harness.dispatch()
    assert harness.sim_stats()["status_calls"] == status_calls + 1
    after = await harness.get(row["id"])
    assert (after["status"], after["confirmed_via"]) == ("confirmed", "reconciliation")

    # Truto's events are de-duplicated by their id in the same way.
    secret = harness.sim.truto.settings.webhook_secret
    truto = orjson.dumps(truto_event())
    for _ in range(3):
        status, _, _ = await post(harness, "/webhooks/truto", truto, truto_headers(secret, truto))
        assert status == 200
    assert await db.fetchval("SELECT count(*) FROM webhook_inbox WHERE provider = 'truto'") == 1


async def test_a_callback_before_the_cancel_call_returned(
    harness: Harness, db: asyncpg.Connection
) -> None:
    """DROPBOX_SIGN_CONFIRM_BY=webhook: the provider's callback overtakes the answer to the
    cancel call: the callback confirms, and the late answer is fenced off (it would have moved
    the row to awaiting_confirmation). Under the default the callback waits for the attempt,
    then prompts one check: tests/integration/test_trust.py::
    test_callbacks_during_an_attempt_prompt_one_check_after_it."""
    service = harness.app[keys.SERVICE]  # this module's settings fixture sets the accounts
    service.webhooks = dataclasses.replace(service.webhooks, confirm_by_status=frozenset())
    harness.sim.configure(
        {"dropbox_sign": {"drop_callback_rate": 1.0, "slow_rate": 1.0, "slow_s": 1.0}}
    )
    created = await harness.enqueue("sr-race")
    dispatch = asyncio.create_task(harness.app[keys.DISPATCHER].run_once())

    async def call_received() -> bool:
        return harness.sim.dropbox_sign.counters.cancel_calls > 0

    await wait_for(call_received, 5, interval_s=0.01, what="the cancel call at the provider")
    assert (await harness.get(created["id"]))["status"] == "sending"

    key = harness.sim.dropbox_sign.settings.api_key
    body, content_type = multipart(orjson.dumps(dropbox_event(key, resource_id="sr-race")))
    status, _, text = await post(
        harness, "/webhooks/dropbox_sign", body, {"Content-Type": content_type}
    )
    assert (status, text) == (200, ACK)
    assert (await harness.get(created["id"]))["status"] == "confirmed"

    async with asyncio.timeout(10):
        assert await dispatch == 1
    after = await harness.get(created["id"])
    assert (after["status"], after["confirmed_via"], after["outcome"]) == (
        "confirmed",
        "webhook",
        "canceled",
    )
    events = await harness.events(created["id"])
    assert [e["cause"] for e in events] == ["enqueued", "claimed", "webhook"]
    assert [e["to_status"] for e in events].count("confirmed") == 1


# --- valid events that must not touch the cancellation ------------------------------------


async def test_an_unknown_event_type_is_acknowledged_and_changes_nothing(
    harness: Harness, db: asyncpg.Connection
) -> None:
    await awaiting(harness)
    before = await snapshot(db)
    key = harness.sim.dropbox_sign.settings.api_key
    body, content_type = multipart(orjson.dumps(dropbox_event(key, "signature_request_teleported")))
    status, _, text = await post(
        harness, "/webhooks/dropbox_sign", body, {"Content-Type": content_type}
    )
    assert (status, text) == (200, ACK)
    after = await snapshot(db)
    assert after[:2] == before[:2]
    (stored,) = await db.fetch("SELECT event_type, effect FROM webhook_inbox")
    assert (stored["event_type"], stored["effect"]) == ("signature_request_teleported", None)


async def test_an_event_for_another_account_settles_nothing_of_this_one(
    harness: Harness, db: asyncpg.Connection
) -> None:
    """Signed by emea, about a request whose open cancellation belongs to `default`: it is
    emea's event, kept for emea, and `default`'s cancellation stays open."""
    await awaiting(harness)
    before = await snapshot(db)
    body, content_type = multipart(
        orjson.dumps(dropbox_event(EMEA_KEY, resource_id="sr-open", account_id=EMEA_ID))
    )
    status, _, text = await post(
        harness, "/webhooks/dropbox_sign", body, {"Content-Type": content_type}
    )
    assert (status, text) == (200, ACK)
    after = await snapshot(db)
    assert after[:2] == before[:2]
    (stored,) = await db.fetch("SELECT account, processed_at FROM webhook_inbox")
    assert (stored["account"], stored["processed_at"]) == ("emea", None)
