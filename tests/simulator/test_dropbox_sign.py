"""Dropbox Sign: a cancel is only queued, the signed callback confirms it, a canceled request
answers 410.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time

import pytest

from orchestrator.simulator import Simulator, SimulatorServer, event_hash
from tests.simulator.support import DS_AUTH, DS_KEY, WAIT_S, Call, Receiver, basic, eventually


async def test_cancel_is_queued_then_confirmed_by_a_signed_multipart_callback(
    server: SimulatorServer, sim: Simulator, receiver: Receiver, call: Call
) -> None:
    url = f"{server.dropbox_sign_url}/signature_request/cancel/sr1"
    status, body, _ = await call("POST", url, headers=DS_AUTH)
    assert (status, body) == (200, {})

    [got] = await receiver.wait_for(1)
    assert got.content_type == "multipart/form-data"
    assert got.form_fields == ["json"]
    event = got.payload["event"]
    assert event["event_type"] == "signature_request_canceled"
    assert isinstance(event["event_time"], str)
    expected = hmac.new(
        DS_KEY.encode(), (event["event_time"] + event["event_type"]).encode(), hashlib.sha256
    ).hexdigest()
    assert (
        event["event_hash"]
        == expected
        == event_hash(DS_KEY, event["event_time"], "signature_request_canceled")
    )
    assert event["event_metadata"]["reported_for_account_id"] == "sim-account"
    assert got.payload["signature_request"]["signature_request_id"] == "sr1"

    status_url = f"{server.dropbox_sign_url}/signature_request/sr1"
    status, body, _ = await call("GET", status_url, headers=DS_AUTH)
    assert status == 410
    assert body == {
        "error": {"error_msg": "This resource has been deleted", "error_name": "deleted"}
    }
    status, body, _ = await call("POST", url, headers=DS_AUTH)
    assert status == 410 and body["error"]["error_name"] == "deleted"

    async with asyncio.timeout(WAIT_S):
        await sim.wait_idle()
    stats = sim.stats()["dropbox_sign"]
    assert stats["cancel_calls"] == 2
    assert stats["duplicate_cancel_calls"] == 1
    assert stats["status_calls"] == 1
    assert stats["responses"] == {"200": 1, "410": 2}
    assert (stats["callbacks_sent"], stats["callbacks_delivered"]) == (1, 1)
    assert stats["callback_failures"] == 0
    assert stats["states"]["canceled"] == 1
    record = sim.get_request("dropbox_sign", "sr1")
    assert record is not None
    assert record["state"] == "canceled" and record["cancel_calls"] == 2


async def test_queued_cancel_answers_200_again_and_status_shows_open(
    server: SimulatorServer, sim: Simulator, call: Call
) -> None:
    sim.configure({"dropbox_sign": {"callback_delay_s": 0.3}})
    url = f"{server.dropbox_sign_url}/signature_request/cancel/sr2"
    assert (await call("POST", url, headers=DS_AUTH))[:2] == (200, {})
    assert (await call("POST", url, headers=DS_AUTH))[:2] == (200, {})
    status, body, _ = await call(
        "GET", f"{server.dropbox_sign_url}/signature_request/sr2", headers=DS_AUTH
    )
    assert status == 200
    request = body["signature_request"]
    assert request["is_complete"] is False and request["is_declined"] is False
    assert request["expires_at"] is None
    assert request["signatures"][0]["status_code"] == "awaiting_signature"
    assert sim.dropbox_sign.state_of("sr2") == "canceling"
    assert sim.dropbox_sign.counters.duplicate_cancel_calls == 1


async def test_callback_is_retried_until_acknowledged(
    server: SimulatorServer, sim: Simulator, receiver: Receiver, call: Call
) -> None:
    receiver.answers = [(500, "boom"), (200, "ok but not the magic words")]
    await call("POST", f"{server.dropbox_sign_url}/signature_request/cancel/r", headers=DS_AUTH)
    got = await receiver.wait_for(3)
    assert got[0].payload == got[2].payload
    async with asyncio.timeout(WAIT_S):
        await sim.wait_idle()
    stats = sim.stats()["dropbox_sign"]
    assert (stats["callback_attempts"], stats["callback_failures"]) == (3, 2)
    assert stats["callbacks_delivered"] == 1


async def test_callback_gives_up_after_max_tries(
    server: SimulatorServer, sim: Simulator, receiver: Receiver, call: Call
) -> None:
    sim.configure({"callback_max_tries": 2})
    receiver.answers = [(503, "")] * 5
    await call("POST", f"{server.dropbox_sign_url}/signature_request/cancel/r", headers=DS_AUTH)
    async with asyncio.timeout(WAIT_S):
        await sim.wait_idle()
    assert len(receiver.received) == 2
    assert sim.dropbox_sign.counters.callbacks_abandoned == 1


async def test_drop_and_duplicate_callback_faults(
    server: SimulatorServer, sim: Simulator, receiver: Receiver, call: Call
) -> None:
    sim.configure({"dropbox_sign": {"drop_callback_rate": 1.0}})
    await call("POST", f"{server.dropbox_sign_url}/signature_request/cancel/d1", headers=DS_AUTH)
    async with asyncio.timeout(WAIT_S):
        await sim.wait_idle()
    assert sim.dropbox_sign.state_of("d1") == "canceled"
    assert receiver.received == []
    assert sim.stats()["dropbox_sign"]["callbacks_dropped"] == 1

    sim.configure({"drop_callback_rate": 0.0, "duplicate_callback_rate": 1.0})
    await call("POST", f"{server.dropbox_sign_url}/signature_request/cancel/d2", headers=DS_AUTH)
    first, second = await receiver.wait_for(2)
    assert first.raw == second.raw
    assert sim.stats()["dropbox_sign"]["callbacks_duplicated"] == 1


async def test_late_callback_arrives_after_a_later_event(
    server: SimulatorServer, sim: Simulator, receiver: Receiver, call: Call
) -> None:
    sim.configure({"late_callback_rate": 1.0, "late_callback_s": 0.2})
    await call("POST", f"{server.dropbox_sign_url}/signature_request/cancel/l1", headers=DS_AUTH)
    await eventually(lambda: sim.dropbox_sign.state_of("l1") == "canceled")
    sim.configure({"late_callback_rate": 0.0})
    sim.emit("dropbox_sign", "l2", "signature_request_all_signed")
    got = await receiver.wait_for(2)
    order = [(r.payload["signature_request"]["signature_request_id"]) for r in got]
    assert order == ["l2", "l1"]
    assert sim.dropbox_sign.state_of("l2") == "completed"


async def test_lost_cancel_answers_200_but_nothing_happens(
    server: SimulatorServer, sim: Simulator, receiver: Receiver, call: Call
) -> None:
    sim.configure({"lose_cancel_rate": 1.0})
    url = f"{server.dropbox_sign_url}/signature_request/cancel/lost"
    assert (await call("POST", url, headers=DS_AUTH))[:2] == (200, {})
    async with asyncio.timeout(WAIT_S):
        await sim.wait_idle()
    assert sim.dropbox_sign.state_of("lost") == "open" and receiver.received == []
    sim.configure({"lose_cancel_rate": 0.0})
    assert (await call("POST", url, headers=DS_AUTH))[0] == 200
    await receiver.wait_for(1)
    record = sim.get_request("dropbox_sign", "lost")
    assert record is not None
    assert (record["lost_cancels"], record["duplicate_cancel_calls"]) == (1, 0)


@pytest.mark.parametrize(
    ("state", "status", "name", "message_part"),
    [
        ("completed", 400, "bad_request", "signed by all signers"),
        ("declined", 400, "bad_request", "declined"),
        ("expired", 400, "bad_request", "expired"),
        ("not_found", 404, "not_found", "Not found"),
        ("canceled", 410, "deleted", "deleted"),
    ],
)
async def test_cancel_of_seeded_states(
    server: SimulatorServer,
    sim: Simulator,
    call: Call,
    state: str,
    status: int,
    name: str,
    message_part: str,
) -> None:
    sim.seed_request("dropbox_sign", "s", state)
    got, body, _ = await call(
        "POST", f"{server.dropbox_sign_url}/signature_request/cancel/s", headers=DS_AUTH
    )
    assert got == status
    assert body["error"]["error_name"] == name
    assert message_part in body["error"]["error_msg"]


@pytest.mark.parametrize(
    ("state", "flag", "code"),
    [("completed", "is_complete", "signed"), ("declined", "is_declined", "declined")],
)
async def test_status_of_finished_requests(
    server: SimulatorServer, sim: Simulator, call: Call, state: str, flag: str, code: str
) -> None:
    sim.seed_request("dropbox_sign", "f", state)
    status, body, _ = await call(
        "GET", f"{server.dropbox_sign_url}/signature_request/f", headers=DS_AUTH
    )
    assert status == 200
    assert body["signature_request"][flag] is True
    assert body["signature_request"]["signatures"][0]["status_code"] == code


async def test_status_of_expired_and_missing_requests(
    server: SimulatorServer, sim: Simulator, call: Call
) -> None:
    sim.seed_request("dropbox_sign", "e", "expired")
    sim.seed_request("dropbox_sign", "n", "not_found")
    _, body, _ = await call(
        "GET", f"{server.dropbox_sign_url}/signature_request/e", headers=DS_AUTH
    )
    request = body["signature_request"]
    assert isinstance(request["expires_at"], int) and request["expires_at"] < time.time()
    assert request["signatures"][0]["status_code"] == "expired"
    status, body, _ = await call(
        "GET", f"{server.dropbox_sign_url}/signature_request/n", headers=DS_AUTH
    )
    assert status == 404 and body["error"]["error_name"] == "not_found"


@pytest.mark.parametrize(
    "headers", [{}, basic("wrong"), {"Authorization": "Basic !!!"}, {"Authorization": "Bearer k"}]
)
async def test_dropbox_sign_rejects_bad_keys(
    server: SimulatorServer, sim: Simulator, call: Call, headers: dict[str, str]
) -> None:
    status, body, _ = await call(
        "POST", f"{server.dropbox_sign_url}/signature_request/cancel/x", headers=headers
    )
    assert status == 401
    assert body == {"error": {"error_msg": "Unauthorized api key", "error_name": "unauthorized"}}
    assert sim.dropbox_sign.state_of("x") is None


async def test_events_from_other_accounts_are_signed_with_their_key(
    server: SimulatorServer, sim: Simulator, receiver: Receiver, call: Call
) -> None:
    sim.configure({"extra_api_keys": {"other-key": "acct-2"}})
    await call(
        "POST",
        f"{server.dropbox_sign_url}/signature_request/cancel/o1",
        headers=basic("other-key"),
    )
    [got] = await receiver.wait_for(1)
    event = got.payload["event"]
    assert event["event_metadata"]["reported_for_account_id"] == "acct-2"
    assert event["event_hash"] == event_hash("other-key", event["event_time"], event["event_type"])
    assert sim.dropbox_sign.cancel_call_times("acct-2") and not sim.dropbox_sign.cancel_call_times(
        "sim-account"
    )


async def test_signer_finishing_before_the_queued_cancel_wins(
    server: SimulatorServer, sim: Simulator, receiver: Receiver, call: Call
) -> None:
    sim.configure({"callback_delay_s": 0.1})
    await call("POST", f"{server.dropbox_sign_url}/signature_request/cancel/race", headers=DS_AUTH)
    sim.emit("dropbox_sign", "race", "signature_request_all_signed")
    async with asyncio.timeout(WAIT_S):
        await sim.wait_idle()
    assert sim.dropbox_sign.state_of("race") == "completed"
    assert [r.payload["event"]["event_type"] for r in receiver.received] == [
        "signature_request_all_signed"
    ]


async def test_callback_test_event_and_json_format(
    server: SimulatorServer, sim: Simulator, receiver: Receiver
) -> None:
    sim.configure({"callback_format": "json"})
    sim.emit("dropbox_sign", None, "callback_test")
    [got] = await receiver.wait_for(1)
    assert got.content_type == "application/json"
    assert got.payload["event"]["event_type"] == "callback_test"
    assert "signature_request" not in got.payload
