"""Aptly: the cancel's 200 carries the cancelled action."""

from __future__ import annotations

from orchestrator.simulator import Simulator, SimulatorServer
from tests.simulator.support import APTLY, Call


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
