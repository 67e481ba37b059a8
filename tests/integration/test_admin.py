"""Operators' actions over real HTTP: retry now (status check first) and abandon.

Tokens here: `root` is bare (every scope), `ops` reads and acts, `caller` enqueues and
reads but may not act. The history names whoever acted by the token's name (given in
ORCH_API_TOKENS, or derived with ORCH_SECRET_KEY), never the token or a hash of it.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest

from orchestrator.tokens import derived_name
from tests.integration.conftest import Harness
from tests.tokens import SECRET_KEY, token

ROOT, OPS, CALLER = token("root"), token("ops"), token("caller")
AS_ROOT = {"Authorization": f"Bearer {ROOT}"}
AS_OPS = {"Authorization": f"Bearer {OPS}"}
AS_CALLER = {"Authorization": f"Bearer {CALLER}"}


# ops has no name=: its name is derived with ORCH_SECRET_KEY.
TOKENS = {"api_tokens": f"{ROOT};name=root,{OPS}:read+admin,{CALLER}:enqueue+read;name=caller"}


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return TOKENS


def name_of(secret: str) -> str:
    if secret == ROOT:
        return "token:root"
    return "token:" + derived_name(secret, SECRET_KEY)


async def act(
    harness: Harness,
    action: str,
    cancellation_id: str,
    body: Any,
    headers: dict[str, str] | None = None,
) -> aiohttp.ClientResponse:
    return await harness.client.post(
        f"/v1/cancellations/{cancellation_id}/{action}",
        json=body,
        headers=AS_OPS if headers is None else headers,
    )


async def ok(response: aiohttp.ClientResponse) -> dict[str, Any]:
    text = await response.text()
    assert response.status == 200, text
    data: dict[str, Any] = orjson.loads(text)
    return data


async def problem(response: aiohttp.ClientResponse, status: int) -> dict[str, Any]:
    text = await response.text()
    assert response.status == status, text
    assert response.content_type == "application/problem+json"
    data: dict[str, Any] = orjson.loads(text)
    assert data["status"] == status
    return data


async def get(harness: Harness, cancellation_id: str) -> dict[str, Any]:
    response = await harness.client.get(f"/v1/cancellations/{cancellation_id}", headers=AS_OPS)
    return await ok(response)


async def events(harness: Harness, cancellation_id: str) -> list[dict[str, Any]]:
    response = await harness.client.get(
        f"/v1/cancellations/{cancellation_id}/events", headers=AS_OPS
    )
    return list((await ok(response))["events"])


def call_kinds(harness: Harness) -> list[str]:
    return [call.kind for call in harness.sim.dropbox_sign.calls]


@pytest.mark.parametrize("settings_overrides", [{**TOKENS, "backoff_base_s": 600}])
async def test_retry_sends_now_after_a_status_check(harness: Harness) -> None:
    """A cancel waiting out a long backoff is tried at once, and the attempt asks for the
    request's status before it cancels again."""
    harness.sim.configure({"dropbox_sign": {"error_5xx_rate": 1.0}})
    created = await harness.enqueue("sr-wait", headers=AS_ROOT)
    assert await harness.dispatch() == 1
    row = await get(harness, created["id"])
    assert row["status"] == "queued"
    waiting_until = datetime.fromisoformat(row["next_attempt_at"])
    assert (waiting_until - harness.clock.now()).total_seconds() >= 300
    assert await harness.dispatch() == 0  # nothing is due before the backoff ends
    harness.sim.configure({"dropbox_sign": {"error_5xx_rate": 0.0}})
    calls_before = len(call_kinds(harness))
    status_before = harness.sim_stats()["status_calls"]

    row = await ok(await act(harness, "retry", created["id"], {"reason": "provider is back"}))
    assert row["status"] == "queued"
    assert datetime.fromisoformat(row["next_attempt_at"]) == harness.clock.now()

    assert await harness.dispatch() == 1  # the clock has not moved: it is due now
    # ... and the cancel's callback prompts the check that confirms it (the default).
    assert call_kinds(harness)[calls_before:] == ["status", "cancel", "status"]
    assert harness.sim_stats()["status_calls"] == status_before + 2
    row = await get(harness, created["id"])
    assert row["status"] == "confirmed"

    history = await events(harness, created["id"])
    retried = [e for e in history if e["cause"] == "retry_requested"]
    assert len(retried) == 1
    assert (retried[0]["from_status"], retried[0]["to_status"]) == ("queued", "queued")
    assert retried[0]["evidence"] == {"reason": "provider is back", "by": name_of(OPS)}


async def test_retry_keeps_to_a_pause_the_provider_asked_for(harness: Harness) -> None:
    """A 429's wait hint pauses the whole account: an operator's retry moves the attempt
    up to the end of that pause, not before it, so the provider is not called early."""
    harness.sim.configure({"dropbox_sign": {"rate_429": 1.0, "retry_after_s": 600}})
    created = await harness.enqueue("sr-paused", headers=AS_ROOT)
    await harness.dispatch()
    harness.sim.configure({"dropbox_sign": {"rate_429": 0.0}})

    await ok(await act(harness, "retry", created["id"], {"reason": "try now"}))
    assert await harness.dispatch() == 0
    assert call_kinds(harness) == ["cancel"]

    harness.advance(601)
    assert await harness.dispatch() == 1
    assert call_kinds(harness) == ["cancel", "status", "cancel", "status"]
    assert (await get(harness, created["id"]))["status"] == "confirmed"


async def test_retry_of_a_cancel_awaiting_confirmation_checks_status_now(
    harness: Harness,
) -> None:
    """The callback never came: rather than wait out the hour, the operator asks now; the
    status check finds the cancel landed and nothing is sent twice."""
    harness.sim.configure({"dropbox_sign": {"drop_callback_rate": 1.0}})
    created = await harness.enqueue("sr-quiet", headers=AS_ROOT)
    await harness.dispatch()
    assert (await get(harness, created["id"]))["status"] == "awaiting_confirmation"
    before = harness.sim_stats()
    assert (before["cancel_calls"], before["status_calls"]) == (1, 0)

    await ok(await act(harness, "retry", created["id"], {"reason": "customer is waiting"}))
    assert await harness.dispatch() == 1

    after = harness.sim_stats()
    assert (after["cancel_calls"], after["status_calls"]) == (1, 1)
    row = await get(harness, created["id"])
    assert (row["status"], row["confirmed_via"]) == ("confirmed", "reconciliation")
    causes = [e["cause"] for e in await events(harness, created["id"])]
    assert causes[-3:] == ["retry_requested", "claimed", "status_check"]


async def test_abandon_ends_failed_with_the_operators_reason(harness: Harness) -> None:
    created = await harness.enqueue("sr-drop", headers=AS_ROOT)
    reason = "the customer cancelled by phone; ticket OPS-12"

    row = await ok(await act(harness, "abandon", created["id"], {"reason": reason}))
    assert row["status"] == "failed"
    assert row["last_error"]["code"] == "abandoned"
    assert row["last_error"]["message"] == reason
    assert row["next_attempt_at"] is None
    assert await get(harness, created["id"]) == row

    last = (await events(harness, created["id"]))[-1]
    assert (last["from_status"], last["to_status"], last["cause"]) == (
        "queued",
        "failed",
        "abandoned",
    )
    assert last["evidence"] == {"reason": reason, "by": name_of(OPS)}

    assert await harness.dispatch() == 0
    assert harness.sim_stats()["cancel_calls"] == 0


async def test_the_history_names_the_actor_never_the_token_nor_its_hash(
    harness: Harness, db: asyncpg.Connection
) -> None:
    created = await harness.enqueue("sr-who", headers=AS_ROOT)
    await ok(await act(harness, "retry", created["id"], {"reason": "first"}, AS_ROOT))
    await ok(await act(harness, "abandon", created["id"], {"reason": "second"}, AS_OPS))

    acted = [e for e in await events(harness, created["id"]) if "by" in e["evidence"]]
    assert [(e["cause"], e["evidence"]["by"]) for e in acted] == [
        ("enqueued", "token:root"),
        ("retry_requested", "token:root"),
        ("abandoned", name_of(OPS)),
    ]
    stored = await db.fetchval("SELECT string_agg(evidence::text, ' ') FROM cancellation_events")
    assert ROOT not in stored and OPS not in stored
    for secret in (ROOT, OPS):  # no name is a prefix of the token's hash (issue 16)
        digest = hashlib.sha256(secret.encode()).hexdigest()
        assert digest[:8] not in stored
    assert name_of(OPS).removeprefix("token:t-") not in hashlib.sha256(OPS.encode()).hexdigest()


async def test_an_action_on_a_terminal_cancellation_is_a_409_that_says_why(
    harness: Harness,
) -> None:
    created = await harness.enqueue("sr-done", headers=AS_ROOT)
    await harness.dispatch()
    assert (await get(harness, created["id"]))["status"] == "confirmed"
    history = await events(harness, created["id"])

    for action in ("retry", "abandon"):
        body = await problem(await act(harness, action, created["id"], {"reason": "x"}), 409)
        assert "already confirmed" in body["detail"], body
        assert body["cancellation_status"] == "confirmed"
    assert await events(harness, created["id"]) == history

    abandoned = await harness.enqueue("sr-gone", headers=AS_ROOT)
    await ok(await act(harness, "abandon", abandoned["id"], {"reason": "no longer needed"}))
    body = await problem(await act(harness, "abandon", abandoned["id"], {"reason": "again"}), 409)
    assert "already failed" in body["detail"]
    body = await problem(await act(harness, "retry", abandoned["id"], {"reason": "undo"}), 409)
    assert "already failed" in body["detail"]


async def test_a_token_without_the_admin_scope_is_refused(harness: Harness) -> None:
    created = await harness.enqueue("sr-scope", headers=AS_CALLER)
    for action in ("retry", "abandon"):
        body = await problem(
            await act(harness, action, created["id"], {"reason": "x"}, AS_CALLER), 403
        )
        assert body["missing_scope"] == "admin"
        assert "admin" in body["detail"]
    assert (await get(harness, created["id"]))["status"] == "queued"
    assert [e["cause"] for e in await events(harness, created["id"])] == ["enqueued"]

    response = await act(harness, "retry", created["id"], {"reason": "x"}, {})
    await problem(response, 401)


BAD_BODIES: list[tuple[str, Any, str]] = [
    ("no reason", {}, "reason"),
    ("an empty reason", {"reason": ""}, "reason"),
    ("a reason that is not text", {"reason": 42}, "reason"),
    ("an unknown field", {"reason": "x", "force": True}, "force"),
    ("a NUL in the reason", {"reason": "a\x00b"}, "reason"),
]


async def test_an_action_needs_a_reason(harness: Harness, subtests: pytest.Subtests) -> None:
    created = await harness.enqueue("sr-why", headers=AS_ROOT)
    for case, body, field in BAD_BODIES:
        with subtests.test(case):
            for action in ("retry", "abandon"):
                answer = await problem(await act(harness, action, created["id"], body), 422)
                assert field in [e["field"] for e in answer["errors"]], answer
    assert [e["cause"] for e in await events(harness, created["id"])] == ["enqueued"]

    response = await harness.client.post(
        f"/v1/cancellations/{created['id']}/retry", data="reason=x", headers=AS_OPS
    )
    await problem(response, 415)
    response = await harness.client.post(
        f"/v1/cancellations/{created['id']}/retry", data=b"{", headers={**AS_OPS, **JSON}
    )
    await problem(response, 400)


JSON = {"Content-Type": "application/json"}


async def test_an_action_on_an_unknown_cancellation_is_a_404(harness: Harness) -> None:
    for ident in ("00000000-0000-4000-8000-000000000000", "not-a-uuid"):
        for action in ("retry", "abandon"):
            await problem(await act(harness, action, ident, {"reason": "x"}), 404)
