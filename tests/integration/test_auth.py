"""Bearer tokens guard /v1; health checks and provider webhooks stay open."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest

from orchestrator.providers.dropbox_sign import event_hash
from tests.integration.conftest import Harness
from tests.integration.processes import free_port
from tests.tokens import token as tok

BODY = {"provider": "dropbox_sign", "resource_id": "sr-1"}


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    # The old forms (`token`, `token:scope+scope`) still work: names come from ORCH_SECRET_KEY.
    return {"api_tokens": f"{tok('t1')},{tok('t2')}"}


async def assert_unauthorized(response: aiohttp.ClientResponse) -> None:
    text = await response.text()
    assert response.status == 401, text
    assert response.content_type == "application/problem+json"
    assert response.headers.get("WWW-Authenticate", "").startswith("Bearer")
    problem = orjson.loads(text)
    assert problem["status"] == 401
    assert {"type", "title", "detail"} <= set(problem)


BAD_AUTHORIZATIONS: list[tuple[str, str | None]] = [
    ("no header", None),
    ("a wrong token", "Bearer wrong"),
    ("a token that only starts like one", f"Bearer {tok('t1')}x"),
    ("a prefix of a token", f"Bearer {tok('t1')[:-1]}"),
    ("an empty token", "Bearer "),
    ("the Basic scheme", "Basic dDE6"),
    ("no scheme", tok("t1")),
]


async def test_v1_refuses_requests_without_a_valid_token(
    harness: Harness, db: asyncpg.Connection, subtests: pytest.Subtests
) -> None:
    for case, authorization in BAD_AUTHORIZATIONS:
        with subtests.test(case):
            headers = {"Authorization": authorization} if authorization is not None else {}
            await assert_unauthorized(
                await harness.client.post("/v1/cancellations", json=BODY, headers=headers)
            )
            await assert_unauthorized(await harness.client.get("/v1/stats", headers=headers))
            await assert_unauthorized(
                await harness.client.get("/v1/cancellations", headers=headers)
            )
            assert await db.fetchval("SELECT count(*) FROM cancellations") == 0


async def test_either_token_is_accepted(harness: Harness, db: asyncpg.Connection) -> None:
    for n, label in enumerate(["t1", "t2"], start=1):
        auth = {"Authorization": f"Bearer {tok(label)}"}
        body = {**BODY, "resource_id": f"sr-{label}"}
        response = await harness.client.post("/v1/cancellations", json=body, headers=auth)
        assert response.status == 202, await response.text()
        created = await response.json()

        response = await harness.client.get(f"/v1/cancellations/{created['id']}", headers=auth)
        assert response.status == 200
        response = await harness.client.get("/v1/stats", headers=auth)
        assert (await response.json())["total"] == n
    assert await db.fetchval("SELECT count(*) FROM cancellations") == 2


async def test_health_and_webhooks_need_no_token(harness: Harness) -> None:
    response = await harness.client.get("/healthz")
    assert response.status == 200

    key = harness.sim.dropbox_sign.settings.api_key
    event_time, event_type = "1714559990", "callback_test"
    callback = {
        "event": {
            "event_time": event_time,
            "event_type": event_type,
            "event_hash": event_hash(key, event_time, event_type),
        }
    }
    form = aiohttp.FormData(default_to_multipart=True)
    form.add_field("json", orjson.dumps(callback).decode())
    response = await harness.client.post("/webhooks/dropbox_sign", data=form)
    assert response.status == 200, await response.text()
    assert await response.text() == "Hello API Event Received"


# --- scopes (issue 12) ----------------------------------------------------------------------

SCOPED = {
    "api_tokens": f"{tok('abc')}:enqueue,{tok('def')}:read,{tok('ghi')}:enqueue+read+admin,"
    f"{tok('bare')}"
}

#: What each request needs, and the tokens that hold it.
CALLS: list[tuple[str, str, str, set[str]]] = [
    ("enqueue", "POST", "/v1/cancellations", {"abc", "ghi", "bare"}),
    ("enqueue", "POST", "/v1/cancellations/batch", {"abc", "ghi", "bare"}),
    ("read", "GET", "/v1/cancellations/{id}", {"def", "ghi", "bare"}),
    ("read", "GET", "/v1/cancellations/{id}/events", {"def", "ghi", "bare"}),
    ("read", "GET", "/v1/cancellations", {"def", "ghi", "bare"}),
    ("read", "GET", "/v1/stats", {"def", "ghi", "bare"}),
    ("admin", "POST", "/v1/cancellations/{id}/retry", {"ghi", "bare"}),
    ("admin", "POST", "/v1/cancellations/{id}/abandon", {"ghi", "bare"}),
]


def bearer(label: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok(label)}"}


@pytest.mark.parametrize("settings_overrides", [SCOPED])
async def test_each_token_reaches_what_its_scopes_allow_and_no_more(
    harness: Harness, subtests: pytest.Subtests
) -> None:
    created = await harness.enqueue("sr-scopes", headers=bearer("abc"))
    for scope, method, template, allowed in CALLS:
        path = template.format(id=created["id"])
        body: dict[str, Any] | None = None
        if method == "POST":
            body = {"reason": "scope check"} if "{id}" in template else BODY
            body = {"items": [BODY]} if template.endswith("/batch") else body
        for token in ("abc", "def", "ghi", "bare"):
            with subtests.test(f"{token} {method} {template}"):
                response = await harness.client.request(
                    method, path, json=body, headers=bearer(token)
                )
                text = await response.text()
                if token in allowed:
                    assert response.status not in (401, 403), text
                    continue
                assert response.status == 403, text
                assert response.content_type == "application/problem+json"
                problem = orjson.loads(text)
                assert problem["status"] == 403
                assert problem["missing_scope"] == scope
                assert repr(scope) in problem["detail"]


@pytest.mark.parametrize("settings_overrides", [SCOPED])
async def test_the_admin_scope_retries_and_abandons(harness: Harness) -> None:
    created = await harness.enqueue("sr-admin", headers=bearer("abc"))
    path = f"/v1/cancellations/{created['id']}/abandon"
    response = await harness.client.post(path, json={"reason": "by hand"}, headers=bearer("ghi"))
    assert response.status == 200, await response.text()
    assert (await response.json())["status"] == "failed"
    again = await harness.client.post(path, json={"reason": "twice"}, headers=bearer("ghi"))
    assert again.status == 409
    problem = await again.json()
    assert problem["status"] == 409 and problem["cancellation_status"] == "failed"
    history = await harness.client.get(
        f"/v1/cancellations/{created['id']}/events", headers=bearer("def")
    )
    (abandoned,) = [e for e in (await history.json())["events"] if e["cause"] == "abandoned"]
    assert abandoned["evidence"]["by"].startswith("token:")
    assert tok("ghi") not in orjson.dumps(abandoned).decode()


@pytest.mark.parametrize("settings_overrides", [SCOPED])
@pytest.mark.parametrize("route", ["dropbox_sign", "truto"])
async def test_webhooks_never_take_api_tokens(
    harness: Harness, db: asyncpg.Connection, route: str
) -> None:
    """The API token with every scope opens no webhook: only the provider's signature does."""
    await harness.enqueue("sr-webhook", headers=bearer("ghi"))
    event = {
        "event": {"event_time": "1714559990", "event_type": "signature_request_canceled"},
        "signature_request": {"signature_request_id": "sr-webhook"},
    }
    form = aiohttp.FormData(default_to_multipart=True)
    form.add_field("json", orjson.dumps(event).decode())
    unsigned: Any = form if route == "dropbox_sign" else orjson.dumps(event)
    headers = bearer("ghi")
    if route == "truto":
        headers["Content-Type"] = "application/json"
    response = await harness.client.post(f"/webhooks/{route}", data=unsigned, headers=headers)
    text = await response.text()
    assert response.status == 401, text
    assert orjson.loads(text)["reason"] == "signature"
    assert await db.fetchval("SELECT status FROM cancellations") == "queued"


def test_an_unknown_scope_stops_start_up_naming_the_setting(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "ORCH_API_TOKENS": f"{tok('abc')}:enqueue;name=abc,{tok('def')}:read+delete;name=def",
        "ORCH_DATA_DIR": str(tmp_path),
        "ORCH_PORT": str(free_port()),
    }
    env.pop("DATABASE_URL", None)
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "ORCH_API_TOKENS" in result.stderr
    assert "'delete'" in result.stderr
    assert tok("def") not in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "pgdata").exists()
