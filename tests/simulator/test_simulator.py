"""The provider simulators over real HTTP on loopback.

The simulators are what the orchestrator's tests trust to behave like Dropbox Sign, Truto
and Aptly, so these tests pin the wire behaviour the orchestrator depends on: shapes,
status codes, headers, callback signing and retries, and each fault.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from orchestrator.simulator import (
    ACK_TEXT,
    ConfigError,
    DropboxSignSettings,
    Faults,
    Simulator,
    SimulatorServer,
    TrutoSettings,
    event_hash,
)
from orchestrator.simulator.__main__ import _changes, _parse

WAIT_S = 2.0
DS_KEY = "test-key"


def basic(key: str) -> dict[str, str]:
    """aiohttp 3.14 deprecates BasicAuth (warnings are errors here), so build the header."""
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


DS_AUTH = basic(DS_KEY)
TRUTO = {"Authorization": "Bearer sim-truto-token"}
APTLY = {"Authorization": "Bearer sim-aptly-token"}


@dataclasses.dataclass
class Received:
    content_type: str
    headers: dict[str, str]
    raw: bytes
    payload: dict[str, Any]
    form_fields: list[str]


class Receiver:
    """A callback endpoint on loopback; answers from ``answers`` first, then acknowledges."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, str]] = []
        self.received: list[Received] = []
        self._arrived = asyncio.Condition()
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        fields: list[str] = []
        if request.content_type == "multipart/form-data":
            form = await request.post()
            fields = list(form.keys())
            text = str(form["json"])
            raw = text.encode()
        else:
            raw = await request.read()
            text = raw.decode()
        async with self._arrived:
            self.received.append(
                Received(request.content_type, dict(request.headers), raw, json.loads(text), fields)
            )
            self._arrived.notify_all()
        status, body = self.answers.pop(0) if self.answers else (200, ACK_TEXT)
        return web.Response(status=status, text=body)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/callback", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/callback"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def wait_for(self, count: int) -> list[Received]:
        async with asyncio.timeout(WAIT_S), self._arrived:
            await self._arrived.wait_for(lambda: len(self.received) >= count)
        return self.received


async def eventually(check: Callable[[], bool]) -> None:
    """Poll simulator state that no task or event signals (a handler finishing)."""
    for _ in range(int(WAIT_S / 0.005)):
        if check():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the condition did not become true in time")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.stop()


@pytest.fixture
async def server(receiver: Receiver) -> AsyncIterator[SimulatorServer]:
    sim = Simulator(
        dropbox_sign=DropboxSignSettings(
            api_key=DS_KEY,
            callback_url=receiver.url,
            callback_delay_s=0.01,
            callback_backoff_s=0.01,
            callback_backoff_max_s=0.05,
            callback_timeout_s=1.0,
        ),
        truto=TrutoSettings(webhook_url=receiver.url, webhook_backoff_s=0.01),
        faults=Faults(seed=7),
    )
    async with SimulatorServer(sim) as srv:
        yield srv


@pytest.fixture
def sim(server: SimulatorServer) -> Simulator:
    return server.simulator


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


Call = Callable[..., Awaitable[tuple[int, Any, Any]]]


@pytest.fixture
def call(http: aiohttp.ClientSession) -> Call:
    async def do(method: str, url: str, **kwargs: Any) -> tuple[int, Any, Any]:
        async with http.request(method, url, **kwargs) as response:
            text = await response.text()
            return response.status, json.loads(text) if text else None, response.headers

    return do


# --- Dropbox Sign ---------------------------------------------------------------------


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


async def test_rate_limit_per_account(server: SimulatorServer, sim: Simulator, call: Call) -> None:
    sim.configure({"dropbox_sign": {"rate_limit_per_min": 2}})
    url = f"{server.dropbox_sign_url}/signature_request/rl"
    before = time.time()
    for _ in range(2):
        assert (await call("GET", url, headers=DS_AUTH))[0] == 200
    status, body, headers = await call("GET", url, headers=DS_AUTH)
    assert status == 429
    assert body == {"error": {"error_msg": "Rate limit exceeded", "error_name": "exceeded_rate"}}
    assert headers["X-RateLimit-Limit"] == "2"
    assert headers["X-RateLimit-Remaining"] == "0"
    reset = int(headers["X-Ratelimit-Reset"])
    assert before + 59 <= reset <= time.time() + 61
    assert (await call("GET", url, headers=DS_AUTH))[0] == 429
    ds = sim.dropbox_sign
    assert ds.counters.calls_before_reset == 1
    [window] = ds.limit_windows[:1]
    assert window.until == reset
    assert len(ds.call_times("sim-account")) == 4
    assert [t for t in ds.call_times("sim-account") if window.start < t < window.until]


async def test_forced_429_over_the_control_plane(server: SimulatorServer, call: Call) -> None:
    status, config, _ = await call(
        "PATCH", f"{server.url}/_sim/faults", json={"rate_429": 1.0, "retry_after_s": 0}
    )
    assert status == 200 and config["truto"]["rate_429"] == 1.0
    status, _, headers = await call(
        "POST", f"{server.dropbox_sign_url}/signature_request/cancel/x", headers=DS_AUTH
    )
    assert status == 429 and int(headers["X-Ratelimit-Reset"]) >= int(time.time())
    status, body, headers = await call(
        "POST",
        f"{server.truto_url}/unified/e-signature/workflows/cancel?integrated_account_id=ia",
        headers=TRUTO,
        json={"id": "w", "message": "m"},
    )
    assert status == 429
    assert body == {
        "statusCode": 429,
        "error": "Too Many Requests",
        "message": "Rate limit exceeded",
    }
    assert (headers["ratelimit-remaining"], headers["ratelimit-reset"]) == ("0", "0")
    assert "ratelimit-limit" in headers
    status, body, headers = await call(
        "PATCH", f"{server.aptly_url}/v1/actions/a/cancel-action", headers=APTLY, json={}
    )
    assert status == 429 and headers["Retry-After"] == "0" and body["statusCode"] == 429


async def test_5xx_fault_uses_each_providers_error_shape(
    server: SimulatorServer, sim: Simulator, call: Call
) -> None:
    sim.configure({"error_5xx_rate": 1.0})
    status, body, _ = await call(
        "POST", f"{server.dropbox_sign_url}/signature_request/cancel/x", headers=DS_AUTH
    )
    assert status in (500, 502, 503) and set(body["error"]) == {"error_msg", "error_name"}
    status, body, _ = await call(
        "POST",
        f"{server.truto_url}/unified/e-signature/workflows/cancel?integrated_account_id=ia",
        headers=TRUTO,
        json={"id": "w", "message": "m"},
    )
    assert status in (500, 502, 503) and body["statusCode"] == status
    status, body, _ = await call(
        "PATCH", f"{server.aptly_url}/v1/actions/a/cancel-action", headers=APTLY, json={}
    )
    assert status in (500, 502, 503) and body["statusCode"] == status and "timestamp" in body
    assert sim.dropbox_sign.state_of("x") == "open"


async def test_reset_fault_is_a_connection_error(server: SimulatorServer, sim: Simulator) -> None:
    sim.configure({"reset_rate": 1.0})
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.post(
                f"{server.dropbox_sign_url}/signature_request/cancel/x", headers=DS_AUTH
            )
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.patch(
                f"{server.aptly_url}/v1/actions/a/cancel-action", headers=APTLY, json={}
            )
    assert sim.dropbox_sign.counters.injected_resets == 1
    assert sim.dropbox_sign.calls[-1].status == 0


async def test_slow_fault_outlasts_a_client_timeout(
    server: SimulatorServer, sim: Simulator, http: aiohttp.ClientSession
) -> None:
    sim.configure({"slow_rate": 1.0, "slow_s": 0.3})
    with pytest.raises(TimeoutError):
        await http.post(
            f"{server.dropbox_sign_url}/signature_request/cancel/slow",
            headers=DS_AUTH,
            timeout=aiohttp.ClientTimeout(total=0.05),
        )
    # The provider still acts on a call its client gave up on.
    await eventually(lambda: sim.dropbox_sign.state_of("slow") in ("canceling", "canceled"))


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


# --- Truto ----------------------------------------------------------------------------


async def test_truto_cancel_returns_the_cancelled_workflow(
    server: SimulatorServer, sim: Simulator, call: Call
) -> None:
    url = f"{server.truto_url}/unified/e-signature/workflows/cancel?integrated_account_id=ia1"
    body = {"id": "wf1", "message": "customer asked", "remote_data": {}}
    status, first, _ = await call("POST", url, headers=TRUTO, json=body)
    assert status == 200
    assert first["id"] == "wf1" and first["status"] == "inactive"
    assert first["stage"]["name"] == "Cancelled"
    assert {"name", "created_at", "updated_at", "remote_data"} <= set(first)
    assert sim.truto.cancel_call_times("ia1")


async def test_truto_repeated_cancel_is_ironclads_invalid_state(
    server: SimulatorServer, sim: Simulator, call: Call
) -> None:
    sim.configure({"truto": {"idempotent_cancel": False}})
    url = f"{server.truto_url}/unified/e-signature/workflows/cancel?integrated_account_id=ia1"
    body = {"id": "wf2", "message": "customer asked"}
    status, first, _ = await call("POST", url, headers=TRUTO, json=body)
    assert status == 200
    status, again, _ = await call("POST", url, headers=TRUTO, json=body)
    assert status == 400
    assert again == {
        "statusCode": 400,
        "error": "Bad Request",
        "message": "workflow is cancelled and cannot be cancelled",
        "truto_is_remote_error": True,
        "raw_response": {
            "code": "INVALID_STATE",
            "message": "workflow is cancelled and cannot be cancelled",
            "param": "workflowId",
        },
    }
    assert sim.truto.state_of("wf2") == "canceled"
    assert sim.stats()["truto"]["duplicate_cancel_calls"] == 1

    sim.configure({"truto": {"idempotent_cancel": True}})
    status, third, _ = await call("POST", url, headers=TRUTO, json=body)
    assert (status, third) == (200, first)


@pytest.mark.parametrize(
    ("query", "headers", "body", "status", "message"),
    [
        (
            "?integrated_account_id=ia",
            {"Authorization": "Bearer nope"},
            {},
            401,
            "Invalid API token",
        ),
        ("", TRUTO, {"id": "w", "message": "m"}, 400, "integrated_account_id is required"),
        ("?integrated_account_id=ia", TRUTO, {"message": "m"}, 400, "id is required"),
        ("?integrated_account_id=ia", TRUTO, {"id": "w"}, 400, "message is required"),
    ],
)
async def test_truto_rejects_bad_calls(
    server: SimulatorServer,
    call: Call,
    query: str,
    headers: dict[str, str],
    body: dict[str, str],
    status: int,
    message: str,
) -> None:
    url = f"{server.truto_url}/unified/e-signature/workflows/cancel{query}"
    got, answer, _ = await call("POST", url, headers=headers, json=body)
    assert got == status
    assert answer["statusCode"] == status and answer["message"] == message
    assert "error" in answer


@pytest.mark.parametrize(
    ("state", "status", "code"),
    [
        ("completed", 400, "INVALID_STATE"),
        ("declined", 400, "INVALID_STATE"),
        ("canceled", 400, "INVALID_STATE"),
        ("not_found", 404, "NOT_FOUND"),
    ],
)
async def test_truto_remote_errors(
    server: SimulatorServer, sim: Simulator, call: Call, state: str, status: int, code: str
) -> None:
    sim.configure({"truto": {"idempotent_cancel": False}})
    sim.seed_request("truto", "w", state)
    url = f"{server.truto_url}/unified/e-signature/workflows/cancel?integrated_account_id=ia"
    got, body, _ = await call("POST", url, headers=TRUTO, json={"id": "w", "message": "m"})
    assert got == status
    assert body["truto_is_remote_error"] is True and body["statusCode"] == status
    assert body["raw_response"]["code"] == code


TRUTO_WORKFLOWS = "/unified/e-signature/workflows"


async def test_truto_workflow_read_is_the_status_check(
    server: SimulatorServer, sim: Simulator, call: Call
) -> None:
    read = f"{server.truto_url}{TRUTO_WORKFLOWS}/wf-r?integrated_account_id=ia1"
    status, before, _ = await call("GET", read, headers=TRUTO)
    assert status == 200
    assert (before["id"], before["status"], before["stage"]) == (
        "wf-r",
        "active",
        {"id": "review", "name": "Review"},
    )
    assert before["remote_data"]["status"] == "active"
    assert before["remote_data"]["isCancelled"] is False

    cancel = f"{server.truto_url}{TRUTO_WORKFLOWS}/cancel?integrated_account_id=ia1"
    _, cancelled, _ = await call("POST", cancel, headers=TRUTO, json={"id": "wf-r", "message": "m"})
    status, after, _ = await call("GET", read, headers=TRUTO)
    assert status == 200 and after == cancelled
    assert after["status"] == "inactive"
    assert after["stage"] == {"id": "cancelled", "name": "Cancelled"}
    assert (after["remote_data"]["status"], after["remote_data"]["isCancelled"]) == (
        "cancelled",
        True,
    )
    stats = sim.stats()["truto"]
    assert (stats["status_calls"], stats["cancel_calls"]) == (2, 1)
    assert [c.kind for c in sim.truto.calls] == ["status", "cancel", "status"]
    assert sim.truto.call_times("ia1") and len(sim.truto.calls) == 3


@pytest.mark.parametrize(
    ("state", "status", "stage", "remote_status"),
    [
        ("completed", "inactive", {"id": "completed", "name": "Completed"}, "completed"),
        ("declined", "inactive", {"id": "declined", "name": "Declined"}, "declined"),
        ("expired", "inactive", {"id": "expired", "name": "Expired"}, "expired"),
    ],
)
async def test_truto_workflow_read_of_finished_workflows(
    server: SimulatorServer,
    sim: Simulator,
    call: Call,
    state: str,
    status: str,
    stage: dict[str, str],
    remote_status: str,
) -> None:
    sim.seed_request("truto", "wf-f", state)
    got, body, _ = await call(
        "GET", f"{server.truto_url}{TRUTO_WORKFLOWS}/wf-f?integrated_account_id=ia", headers=TRUTO
    )
    assert got == 200
    assert (body["status"], body["stage"], body["remote_data"]["status"]) == (
        status,
        stage,
        remote_status,
    )
    assert body["remote_data"]["isComplete"] is (state == "completed")


async def test_truto_workflow_read_errors(
    server: SimulatorServer, sim: Simulator, call: Call
) -> None:
    sim.seed_request("truto", "gone", "not_found")
    base = f"{server.truto_url}{TRUTO_WORKFLOWS}"
    status, body, _ = await call("GET", f"{base}/gone?integrated_account_id=ia", headers=TRUTO)
    assert status == 404
    assert body == {
        "statusCode": 404,
        "error": "Not Found",
        "message": "Workflow not found",
        "truto_is_remote_error": True,
        "raw_response": {
            "code": "NOT_FOUND",
            "message": "workflow does not exist",
            "param": "workflowId",
        },
    }
    status, body, _ = await call("GET", f"{base}/w", headers=TRUTO)
    assert (status, body["message"]) == (400, "integrated_account_id is required")
    bad = {"Authorization": "Bearer nope"}
    status, body, _ = await call("GET", f"{base}/w?integrated_account_id=ia", headers=bad)
    assert (status, body["message"]) == (401, "Invalid API token")


async def test_truto_workflow_read_meets_the_rate_limit_and_faults(
    server: SimulatorServer, sim: Simulator, call: Call
) -> None:
    sim.configure({"truto": {"rate_limit_per_min": 1}})
    read = f"{server.truto_url}{TRUTO_WORKFLOWS}/wf-l?integrated_account_id=ia"
    assert (await call("GET", read, headers=TRUTO))[0] == 200
    status, _, headers = await call("GET", read, headers=TRUTO)
    assert status == 429 and headers["ratelimit-remaining"] == "0"
    sim.configure({"truto": {"rate_limit_per_min": None, "error_5xx_rate": 1.0}})
    status, body, _ = await call("GET", read, headers=TRUTO)
    assert status in (500, 502, 503) and body["statusCode"] == status
    assert sim.stats()["truto"]["status_calls"] == 3


async def test_truto_webhook_is_signed(sim: Simulator, receiver: Receiver) -> None:
    sim.truto.emit_webhook("record:updated", {"id": "wf"})
    [got] = await receiver.wait_for(1)
    digest = hmac.new(b"sim-truto-webhook-secret", got.raw, hashlib.sha256).hexdigest()
    assert got.headers["X-Truto-Signature"] == f"format=sha256,v={digest}"
    assert set(got.payload) == {
        "id", "event", "payload", "environment_id", "created_at", "webhook_id",
    }  # fmt: skip


# --- Aptly ----------------------------------------------------------------------------


async def test_aptly_cancel_and_errors(server: SimulatorServer, sim: Simulator, call: Call) -> None:
    url = f"{server.aptly_url}/v1/actions/10001/cancel-action"
    body = {
        "status": "To Do",
        "documentId": "d",
        "roleId": "r",
        "delegationId": "g",
        "decisionId": "c",
    }
    status, first, _ = await call("PATCH", url, headers=APTLY, json=body)
    assert status == 200
    assert first["statusCode"] == 200 and first["message"] == "Success"
    assert first["timestamp"].endswith("Z")
    data = first["data"]
    assert data["actionId"] == "10001" and data["documentId"] == "d"
    assert data["status"]["actionStatusName"] == "Cancelled" and data["status"]["isEnabled"]
    status, again, _ = await call("PATCH", url, headers=APTLY, json=body)
    assert status == 200 and again["data"] == data
    sim.configure({"aptly": {"idempotent_cancel": False}})
    status, answer, _ = await call("PATCH", url, headers=APTLY, json=body)
    assert (status, answer["message"]) == (400, "Action already cancelled")
    assert sim.stats()["aptly"]["duplicate_cancel_calls"] == 2

    sim.seed_request("aptly", "done", "completed")
    sim.seed_request("aptly", "gone", "not_found")
    done_url = f"{server.aptly_url}/v1/actions/done/cancel-action"
    status, answer, _ = await call("PATCH", done_url, headers=APTLY, json=body)
    assert (status, answer["message"]) == (400, "Action already completed")
    gone_url = f"{server.aptly_url}/v1/actions/gone/cancel-action"
    status, answer, _ = await call("PATCH", gone_url, headers=APTLY, json=body)
    assert (status, answer["message"]) == (404, "Action not found")
    status, answer, _ = await call("PATCH", url, headers={"Authorization": "Bearer x"}, json=body)
    assert status == 401 and answer["statusCode"] == 401


# --- faults a client of the providers must survive -------------------------------------


def cancel_call(server: SimulatorServer, provider: str, request_id: str) -> dict[str, Any]:
    """The keyword arguments of one cancel call of ``provider``, for ``http.request``."""
    base = {"dropbox_sign": server.dropbox_sign_url, "truto": server.truto_url}
    if provider == "dropbox_sign":
        url = f"{base[provider]}/signature_request/cancel/{request_id}"
        return {"method": "POST", "url": url, "headers": DS_AUTH}
    if provider == "truto":
        url = f"{base[provider]}{TRUTO_WORKFLOWS}/cancel?integrated_account_id=ia"
        body = {"id": request_id, "message": "m"}
        return {"method": "POST", "url": url, "headers": TRUTO, "json": body}
    url = f"{server.aptly_url}/v1/actions/{request_id}/cancel-action"
    return {"method": "PATCH", "url": url, "headers": APTLY, "json": {}}


@pytest.mark.parametrize("provider", ["dropbox_sign", "truto", "aptly"])
async def test_redirect_fault_sends_callers_to_a_page_that_says_200(
    server: SimulatorServer, sim: Simulator, http: aiohttp.ClientSession, provider: str
) -> None:
    sim.configure({provider: {"redirect_rate": 1.0}})
    kwargs = cancel_call(server, provider, "moved")
    async with http.request(**kwargs, allow_redirects=False) as response:
        assert response.status == 302
        location = response.headers["Location"]
    assert location == f"{server.url}/_sim/redirected/{provider}"
    async with http.request(**kwargs) as response:  # following, as aiohttp does by default
        assert (response.status, await response.json()) == (200, {})
        assert response.history[0].status == 302
        # aiohttp turns a POST into a GET on 302 (and keeps a PATCH): either way, 200.
        assert response.method == ("PATCH" if provider == "aptly" else "GET")
    target = sim.provider(provider)
    assert target.state_of("moved") == "open"
    assert (target.counters.injected_redirects, target.counters.redirects_followed) == (2, 1)
    assert [c.status for c in target.calls] == [302, 302]


async def test_redirect_status_is_configurable_and_must_be_3xx(
    server: SimulatorServer, sim: Simulator, http: aiohttp.ClientSession, call: Call
) -> None:
    status, config, _ = await call(
        "PATCH", f"{server.url}/_sim/faults", json={"redirect_rate": 1.0, "redirect_status": 307}
    )
    assert status == 200 and config["aptly"]["redirect_status"] == 307
    async with http.request(**cancel_call(server, "aptly", "a")) as response:
        assert (response.status, response.method) == (200, "PATCH")  # 307 keeps the method
        assert response.history[0].status == 307
    for bad in (200, 404, "302"):
        status, body, _ = await call(
            "PATCH", f"{server.url}/_sim/faults", json={"redirect_status": bad}
        )
        assert status == 400 and "redirect_status" in body["error"]
    assert (await call("GET", f"{server.url}/_sim/redirected/nope"))[0] == 404


async def test_raw_wait_hints_replace_the_computed_ones(
    server: SimulatorServer, sim: Simulator, call: Call
) -> None:
    year_5000 = "95617584000"
    status, _, _ = await call(
        "PATCH",
        f"{server.url}/_sim/faults",
        json={"rate_429": 1.0, "raw_retry_after": "1e300", "raw_ratelimit_reset": year_5000},
    )
    assert status == 200
    answers = {}
    for provider in ("dropbox_sign", "truto", "aptly"):
        kwargs = cancel_call(server, provider, "w")
        status, _, headers = await call(kwargs.pop("method"), kwargs.pop("url"), **kwargs)
        assert status == 429
        answers[provider] = headers
    assert answers["dropbox_sign"]["Retry-After"] == "1e300"
    assert answers["dropbox_sign"]["X-Ratelimit-Reset"] == year_5000
    assert answers["truto"]["Retry-After"] == "1e300"
    assert answers["truto"]["ratelimit-reset"] == year_5000
    assert answers["aptly"]["Retry-After"] == "1e300"  # Aptly has no reset header

    sim.configure({"raw_retry_after": "inf", "raw_ratelimit_reset": "-5"})
    kwargs = cancel_call(server, "truto", "w")
    _, _, headers = await call(kwargs.pop("method"), kwargs.pop("url"), **kwargs)
    assert (headers["Retry-After"], headers["ratelimit-reset"]) == ("inf", "-5")

    sim.configure({"raw_retry_after": None, "raw_ratelimit_reset": None, "retry_after_s": 3})
    kwargs = cancel_call(server, "truto", "w")
    _, _, headers = await call(kwargs.pop("method"), kwargs.pop("url"), **kwargs)
    assert "Retry-After" not in headers and headers["ratelimit-reset"] == "3"
    for bad in ({"raw_retry_after": "1\r\nX-Evil: 1"}, {"raw_ratelimit_reset": 5}):
        assert (await call("PATCH", f"{server.url}/_sim/faults", json=bad))[0] == 400


async def test_status_5xx_fault_spares_the_cancels(
    server: SimulatorServer, sim: Simulator, call: Call
) -> None:
    sim.configure({"status_5xx_rate": 1.0})
    ds_status = f"{server.dropbox_sign_url}/signature_request/s5"
    truto_read = f"{server.truto_url}{TRUTO_WORKFLOWS}/s5?integrated_account_id=ia"
    status, body, _ = await call("GET", ds_status, headers=DS_AUTH)
    assert status in (500, 502, 503) and set(body["error"]) == {"error_msg", "error_name"}
    status, body, _ = await call("GET", truto_read, headers=TRUTO)
    assert status in (500, 502, 503) and body["statusCode"] == status
    for provider in ("dropbox_sign", "truto", "aptly"):
        kwargs = cancel_call(server, provider, "s5")
        assert (await call(kwargs.pop("method"), kwargs.pop("url"), **kwargs))[0] == 200
    assert sim.dropbox_sign.counters.injected_status_5xx == 1
    assert sim.truto.counters.injected_status_5xx == 1
    assert sim.truto.state_of("s5") == "canceled"


@pytest.mark.parametrize(
    ("provider", "landed"),
    [
        ("dropbox_sign", ("canceling", "canceled")),
        ("truto", ("canceled",)),
        ("aptly", ("canceled",)),
    ],
)
async def test_reset_after_cancel_lands_the_cancel_but_loses_the_answer(
    server: SimulatorServer,
    sim: Simulator,
    http: aiohttp.ClientSession,
    provider: str,
    landed: tuple[str, ...],
) -> None:
    sim.configure({provider: {"reset_after_cancel_rate": 1.0}})
    with pytest.raises(aiohttp.ClientConnectionError):
        async with http.request(**cancel_call(server, provider, "landed")):
            pass
    target = sim.provider(provider)
    assert target.state_of("landed") in landed
    assert target.counters.resets_after_cancel == 1
    assert [c.status for c in target.calls] == [0]
    assert target.stats()["responses"] == {}


async def test_reset_after_cancel_spares_status_checks(
    server: SimulatorServer, sim: Simulator, call: Call, receiver: Receiver
) -> None:
    sim.configure({"reset_after_cancel_rate": 1.0})
    status, _, _ = await call(
        "GET", f"{server.dropbox_sign_url}/signature_request/r", headers=DS_AUTH
    )
    assert status == 200
    with pytest.raises(aiohttp.ClientConnectionError):
        await call(**cancel_call(server, "dropbox_sign", "r"))
    [got] = await receiver.wait_for(1)  # the provider went on and confirmed it
    assert got.payload["event"]["event_type"] == "signature_request_canceled"


async def test_callbacks_are_sent_as_asked_without_changing_the_request(
    server: SimulatorServer, sim: Simulator, receiver: Receiver, call: Call
) -> None:
    await call(**cancel_call(server, "dropbox_sign", "genuine"))
    [genuine] = await receiver.wait_for(1)
    event = genuine.payload["event"]

    replay = {
        "provider": "dropbox_sign",
        "id": "victim",
        "event_type": event["event_type"],
        "event_time": event["event_time"],
    }
    status, sent, _ = await call("POST", f"{server.url}/_sim/callbacks", json=replay)
    assert status == 200
    assert sent["event"]["event_hash"] == event["event_hash"]  # the hash ignores the id
    old = {**replay, "id": "other", "event_time": 1_000_000_000}
    status, sent_old, _ = await call("POST", f"{server.url}/_sim/callbacks", json=old)
    assert status == 200 and sent_old["event"]["event_time"] == "1000000000"

    _, replayed, aged = await receiver.wait_for(3)
    assert replayed.payload["signature_request"]["signature_request_id"] == "victim"
    assert replayed.payload["event"]["event_hash"] == event["event_hash"]
    assert aged.payload["event"]["event_time"] == "1000000000"
    assert aged.payload["event"]["event_hash"] == event_hash(
        DS_KEY, "1000000000", "signature_request_canceled"
    )
    assert sim.dropbox_sign.state_of("victim") == sim.dropbox_sign.state_of("other") == "open"


async def test_truto_webhook_dated_as_asked(
    server: SimulatorServer, sim: Simulator, receiver: Receiver, call: Call
) -> None:
    base = f"{server.url}/_sim/callbacks"
    future = {"provider": "truto", "id": "wf", "event_type": "record:updated"}
    status, sent, _ = await call(
        "POST", base, json={**future, "event_time": "2999-01-01T00:00:00Z"}
    )
    assert status == 200 and sent["created_at"] == "2999-01-01T00:00:00Z"
    status, sent, _ = await call("POST", base, json={**future, "event_time": 0})
    assert status == 200 and sent["created_at"] == "1970-01-01T00:00:00.000Z"
    first, second = await receiver.wait_for(2)
    assert first.payload["created_at"] == "2999-01-01T00:00:00Z"
    assert first.payload["payload"]["id"] == "wf"
    assert sim.truto.state_of("wf") == "open"
    for bad in (
        {**future, "event_time": True},
        {**future, "event_time": 1e300},
        {**future, "provider": "aptly"},
        {"provider": "dropbox_sign", "event_time": "1"},
    ):
        assert (await call("POST", base, json=bad))[0] == 400, bad
    assert second.payload["created_at"] == "1970-01-01T00:00:00.000Z"


# --- control plane ----------------------------------------------------------------------


async def test_control_plane(
    server: SimulatorServer, sim: Simulator, receiver: Receiver, call: Call
) -> None:
    base = f"{server.url}/_sim"
    status, record, _ = await call(
        "POST", f"{base}/requests", json={"provider": "aptly", "id": "a1", "state": "completed"}
    )
    assert status == 200 and record["state"] == "completed"
    status, record, _ = await call("GET", f"{base}/requests/aptly/a1")
    assert status == 200 and record["state"] == "completed"
    assert (await call("GET", f"{base}/requests/aptly/never"))[0] == 404
    assert (await call("GET", f"{base}/requests/nope/a1"))[0] == 404
    bad_seed = {"provider": "aptly", "id": "a1", "state": "weird"}
    assert (await call("POST", f"{base}/requests", json=bad_seed))[0] == 400
    assert (await call("PATCH", f"{base}/faults", json={"no_such": 1}))[0] == 400
    assert (await call("PATCH", f"{base}/faults", json={"error_5xx_rate": 2}))[0] == 400

    status, event, _ = await call(
        "POST",
        f"{base}/events",
        json={"provider": "dropbox_sign", "id": "d1", "event_type": "signature_request_declined"},
    )
    assert status == 200 and event["signature_request"]["is_declined"] is True
    assert (await call("POST", f"{base}/idle?timeout=2"))[:2] == (200, {"idle": True})
    assert receiver.received[0].payload["event"]["event_type"] == "signature_request_declined"

    status, stats, _ = await call("GET", f"{base}/stats")
    assert stats["aptly"]["states"]["completed"] == 1
    assert stats["dropbox_sign"]["callbacks_delivered"] == 1
    status, calls, _ = await call("GET", f"{base}/calls/dropbox_sign")
    assert status == 200 and calls == {"calls": [], "limit_windows": []}

    assert (await call("POST", f"{base}/reset"))[0] == 200
    assert sim.get_request("aptly", "a1") is None
    assert sim.stats()["dropbox_sign"]["callbacks_delivered"] == 0


def test_faults_are_reproducible_and_validated() -> None:
    one, two = Faults(seed=3, error_5xx_rate=0.5), Faults(seed=3, error_5xx_rate=0.5)
    one.bind("dropbox_sign")
    two.bind("dropbox_sign")
    assert [one.chance("error_5xx_rate") for _ in range(50)] == [
        two.chance("error_5xx_rate") for _ in range(50)
    ]
    with pytest.raises(ConfigError):
        Faults(drop_callback_rate=1.5)
    with pytest.raises(ConfigError):
        one.update({"slow_s": "soon"})
    sim = Simulator()
    with pytest.raises(ConfigError):
        sim.configure({"truto": {"callback_url": "http://x"}})
    sim.configure({"seed": 5, "aptly": {"seed": 6}})
    assert (sim.truto.faults.seed, sim.aptly.faults.seed) == (5, 6)


def test_command_line_settings() -> None:
    args = _parse(["--port", "0", "--seed", "2", "--set", "error_5xx_rate=0.25", "--set", "x=y"])
    assert _changes(args) == {"seed": 2, "error_5xx_rate": 0.25, "x": "y"}
    sets = ["raw_retry_after=1e300", "raw_ratelimit_reset=-5", "redirect_status=307"]
    args = _parse([arg for item in [*sets, "callback_url=null"] for arg in ("--set", item)])
    changes = _changes(args)
    assert changes == {
        "raw_retry_after": "1e300",
        "raw_ratelimit_reset": "-5",
        "redirect_status": 307,
        "callback_url": None,
    }
    Simulator().configure(changes)
