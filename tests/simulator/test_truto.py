"""Truto: the cancel's answer is the confirmation, the workflow read is the status check, and
Ironclad's errors come back as remote errors.
"""

from __future__ import annotations

import hashlib
import hmac

import pytest

from orchestrator.simulator import Simulator, SimulatorServer
from tests.simulator.support import TRUTO, TRUTO_WORKFLOWS, Call, Receiver


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
    sim.seed_request("truto", "w", state)
    url = f"{server.truto_url}/unified/e-signature/workflows/cancel?integrated_account_id=ia"
    got, body, _ = await call("POST", url, headers=TRUTO, json={"id": "w", "message": "m"})
    assert got == status
    assert body["truto_is_remote_error"] is True and body["statusCode"] == status
    assert body["raw_response"]["code"] == code


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
