"""The behaviour every provider shares, run for each registered provider against its simulator.

Adding a provider means adding a Case here; the tests below then run for it too.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest

from orchestrator.providers.dropbox_sign import event_hash
from orchestrator.providers.registry import PROVIDERS
from orchestrator.simulator.truto import signature as truto_signature
from tests.integration.conftest import Harness


@dataclass(frozen=True)
class Case:
    provider: str
    confirmed_via: str
    #: The attempts to a confirmation: a Dropbox Sign callback prompts one more, the check.
    attempts: int = 1
    params: dict[str, Any] = field(default_factory=dict)
    webhook_path: str | None = None

    def resource(self, name: str) -> str:
        return f"{self.provider}-{name}"


CASES = [
    Case("dropbox_sign", "reconciliation", attempts=2, webhook_path="/webhooks/dropbox_sign"),
    Case(
        "truto",
        "provider_response",
        params={
            "integrated_account_id": "62f44730-dd91-461e-bd6a-aedd9e0ad79d",
            "message": "contract changed",
        },
        webhook_path="/webhooks/truto",
    ),
    Case(
        "aptly",
        "provider_response",
        params={"status": "Cancelled", "documentId": "30af6294-e42a-4c31-9a6f-88b1bdba06e1"},
    ),
]


def test_every_registered_provider_has_a_case() -> None:
    assert {c.provider for c in CASES} == set(PROVIDERS)


cases = pytest.mark.parametrize("case", CASES, ids=lambda c: c.provider)


async def enqueue(harness: Harness, case: Case, name: str, **extra: Any) -> dict[str, Any]:
    return await harness.enqueue(
        case.resource(name), provider=case.provider, params=case.params, **extra
    )


@cases
async def test_enqueue_to_confirmed(harness: Harness, case: Case) -> None:
    created = await enqueue(harness, case, "ok")
    await harness.dispatch()
    row = await harness.get(created["id"])
    assert (row["status"], row["outcome"], row["confirmed_via"]) == (
        "confirmed",
        "canceled",
        case.confirmed_via,
    )
    assert harness.sim_stats(case.provider)["cancel_calls"] == 1
    assert harness.sim.get_request(case.provider, case.resource("ok"))["state"] == "canceled"


@cases
async def test_cannot_cancel_fails_with_the_providers_message(harness: Harness, case: Case) -> None:
    harness.sim.seed_request(case.provider, case.resource("done"), "completed")
    created = await enqueue(harness, case, "done")
    await harness.dispatch()
    row = await harness.get(created["id"])
    assert row["status"] == "failed"
    assert row["outcome"] in {"completed", "not_cancelable"}
    answer = next(e for e in await harness.events(created["id"]) if e["to_status"] == "failed")
    body = answer["evidence"].get("body") or answer["evidence"]["cancel"]["body"]
    provider_message = body.get("message") or body["error"]["error_msg"]
    assert row["last_error"]["message"] == provider_message


@cases
@pytest.mark.parametrize("fault", ["rate_429", "error_5xx_rate"])
async def test_throttling_and_server_errors_are_retried(
    harness: Harness, case: Case, fault: str
) -> None:
    harness.sim.configure({case.provider: {fault: 1.0, "retry_after_s": 20}})
    created = await enqueue(harness, case, fault)
    await harness.dispatch()
    row = await harness.get(created["id"])
    assert row["status"] == "queued"
    wait = datetime.fromisoformat(row["next_attempt_at"]) - harness.clock.now()
    if fault == "rate_429":
        assert wait >= timedelta(seconds=19)  # the provider's reset is honoured
        assert harness.sim_stats(case.provider)["cancel_calls"] == 1
    else:
        assert harness.sim_stats(case.provider)["cancel_calls"] == 3  # quick tries first

    harness.sim.configure({case.provider: {fault: 0.0}})
    harness.advance(wait.total_seconds() + 0.01)
    await harness.dispatch()
    row = await harness.get(created["id"])
    assert (row["status"], row["attempts"]) == ("confirmed", 1 + case.attempts)


def forged(case: Case, resource_id: str) -> tuple[bytes, dict[str, str]]:
    if case.provider == "dropbox_sign":
        when, kind = str(int(time.time())), "signature_request_canceled"
        body = {
            "event": {
                "event_type": kind,
                "event_time": when,
                "event_hash": event_hash("wrong-key", when, kind),
            },
            "signature_request": {"signature_request_id": resource_id},
        }
        return json.dumps(body).encode(), {"Content-Type": "application/json"}
    raw = json.dumps(
        {
            "id": str(uuid.uuid4()),
            "event": "record:updated",
            "payload": {"record": {"id": resource_id}},
            "created_at": datetime.now().astimezone().isoformat(),
        }
    ).encode()
    return raw, {
        "Content-Type": "application/json",
        "X-Truto-Signature": truto_signature("wrong-secret", raw),
    }


@cases
async def test_bad_webhook_signature_is_401_and_changes_nothing(
    harness: Harness, case: Case, db: asyncpg.Connection
) -> None:
    if case.webhook_path is None:
        response = await harness.client.post(f"/webhooks/{case.provider}", data=b"{}")
        assert response.status == 404  # no webhooks: nothing to verify, nothing accepted
        return
    created = await enqueue(harness, case, "forged")
    before = await harness.get(created["id"])
    body, headers = forged(case, case.resource("forged"))
    response = await harness.client.post(case.webhook_path, data=body, headers=headers)
    assert response.status == 401
    assert response.content_type == "application/problem+json"
    assert await harness.get(created["id"]) == before
    assert await db.fetchval("SELECT count(*) FROM webhook_inbox") == 0


# --- what is particular to one provider ---------------------------------------------------

TRUTO = CASES[1]
APTLY = CASES[2]


@pytest.mark.parametrize(
    ("provider", "params", "field"),
    [
        ("truto", {"integrated_account_id": "x"}, "params.message"),
        ("truto", {"message": "m"}, "params.integrated_account_id"),
        ("truto", {"integrated_account_id": "x", "message": "m", "other": 1}, "params.other"),
        ("aptly", {"documentId": "not-a-uuid"}, "params.documentId"),
        ("aptly", {"roleId": 7}, "params.roleId"),
        ("dropbox_sign", {"anything": 1}, "params"),
    ],
)
async def test_provider_params_are_validated(
    harness: Harness, provider: str, params: dict[str, Any], field: str
) -> None:
    response = await harness.client.post(
        "/v1/cancellations",
        json={"provider": provider, "resource_id": "r-1", "params": params},
    )
    assert response.status == 422
    problem = await response.json()
    assert field in [e["field"] for e in problem["errors"]]
    assert (await (await harness.client.get("/v1/stats")).json())["total"] == 0


async def test_truto_keeps_the_workflow_and_remote_errors(harness: Harness) -> None:
    created = await enqueue(harness, TRUTO, "wf")
    await harness.dispatch()
    row = await harness.get(created["id"])
    assert set(row["provider_state"]) >= {"status", "stage"}

    harness.sim.seed_request("truto", TRUTO.resource("gone"), "not_found")
    failed = await enqueue(harness, TRUTO, "gone")
    await harness.dispatch()
    row = await harness.get(failed["id"])
    assert (row["status"], row["outcome"]) == ("failed", "not_found")
    assert row["last_error"]["details"]["truto_is_remote_error"] is True
    assert "raw_response" in row["last_error"]["details"]


async def test_aptly_keeps_the_action_status(harness: Harness) -> None:
    created = await enqueue(harness, APTLY, "act")
    await harness.dispatch()
    row = await harness.get(created["id"])
    assert row["provider_state"]["status"]["actionStatusName"]
    sent = harness.sim.get_request("aptly", APTLY.resource("act"))
    assert sent["last_cancel_body"] == APTLY.params


@pytest.mark.parametrize("settings_overrides", [{"aptly_base_url": None}])
async def test_aptly_without_a_base_url_is_a_clear_configuration_error(
    harness: Harness,
) -> None:
    response = await harness.client.post(
        "/v1/cancellations",
        json={"provider": "aptly", "resource_id": "a-1", "params": APTLY.params},
    )
    assert response.status == 422
    problem = await response.json()
    assert "APTLY_BASE_URL" in problem["detail"]
