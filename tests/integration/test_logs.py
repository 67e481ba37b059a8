"""Structured logs: JSON one object per line (or readable text), every line of a request
carrying its X-Request-Id, every line about a cancellation carrying what it is about."""

from __future__ import annotations

import io
import logging
import os
import re
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from aiohttp import web

from orchestrator import logs
from orchestrator.simulator.app import SimulatorServer
from orchestrator.simulator.truto import signature as truto_signature
from orchestrator.web.app import create_app
from tests.faults import common
from tests.integration.conftest import AiohttpClient, Harness, make_settings
from tests.integration.processes import ServiceProcess
from tests.tokens import entry, token

StartLogs = Callable[[logs.LogFormat], io.StringIO]
PROBLEM = "application/problem+json"


@pytest.fixture
def log_output() -> Iterator[StartLogs]:
    """Configure the process's logging as `serve` does, into a buffer; undone afterwards."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, sys.excepthook, threading.excepthook)

    def start(fmt: logs.LogFormat) -> io.StringIO:
        stream = io.StringIO()
        logs.configure("DEBUG", fmt, stream)
        return stream

    yield start
    root.handlers[:], level, sys.excepthook, threading.excepthook = saved
    root.setLevel(level)
    logging.captureWarnings(False)


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line parsed; fails on any line that is not one JSON object."""
    parsed = []
    for line in text.splitlines():
        value = orjson.loads(line)
        assert isinstance(value, dict), line
        assert {"time", "level", "logger", "message"} <= value.keys(), line
        parsed.append(value)
    return parsed


def truto_event(sim: SimulatorServer) -> tuple[bytes, dict[str, str]]:
    body = orjson.dumps(
        {
            "id": str(uuid.uuid4()),
            "event": "record:updated",
            "created_at": datetime.now(UTC).isoformat(),
        }
    )
    secret = sim.simulator.truto.settings.webhook_secret
    assert secret is not None
    headers = {
        "Content-Type": "application/json",
        "X-Truto-Signature": truto_signature(secret, body),
    }
    return body, headers


async def test_json_lines_of_a_webhook_carry_the_request_id(
    harness: Harness, log_output: StartLogs
) -> None:
    stream = log_output("json")
    body, headers = truto_event(harness.sim_server)
    response = await harness.client.post(
        "/webhooks/truto", data=body, headers={**headers, "X-Request-Id": "req-webhook-1"}
    )
    assert response.status == 200
    assert response.headers["X-Request-Id"] == "req-webhook-1"
    lines = json_lines(stream.getvalue())
    (webhook,) = [line for line in lines if line["message"].startswith("webhook truto")]
    assert webhook["request_id"] == "req-webhook-1"
    assert webhook["level"] == "DEBUG"
    assert webhook["logger"] == "orchestrator.service.cancellations"
    datetime.fromisoformat(webhook["time"])


async def test_an_unhandled_error_is_one_json_line_with_its_traceback(
    aiohttp_client: AiohttpClient,
    sim_server: SimulatorServer,
    dsn: str,
    log_output: StartLogs,
) -> None:
    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("a bug, on purpose")

    app = create_app(make_settings(sim_server, dsn), dsn, run_workers=False)
    app.router.add_get("/v1/broken", broken)
    client = await aiohttp_client(app)
    stream = log_output("json")
    response = await client.get("/v1/broken", headers={"X-Request-Id": "req-boom"})
    assert response.status == 500
    assert response.content_type == PROBLEM
    assert response.headers["X-Request-Id"] == "req-boom"
    lines = json_lines(stream.getvalue())
    (error,) = [line for line in lines if line["level"] == "ERROR"]
    assert error["request_id"] == "req-boom"
    assert error["message"] == "unhandled error in GET /v1/broken"
    assert error["exc_info"].startswith("Traceback (most recent call last):")
    assert "RuntimeError: a bug, on purpose" in error["exc_info"]
    assert all(line["request_id"] == "req-boom" for line in lines)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/healthz", 200),
        ("GET", "/v1/stats", 200),
        ("GET", "/no/such/page", 404),
        ("GET", f"/v1/cancellations/{uuid.uuid4()}", 404),
        ("POST", "/v1/cancellations", 422),
        ("DELETE", "/healthz", 405),
        ("POST", "/webhooks/truto", 401),
    ],
)
async def test_the_request_id_is_echoed_on_every_answer(
    harness: Harness, method: str, path: str, status: int
) -> None:
    body = {"provider": "truto"} if path == "/v1/cancellations" else None
    sent = "caller-chosen id/1.0 (ok)"
    response = await harness.client.request(method, path, json=body, headers={"X-Request-Id": sent})
    assert response.status == status
    assert response.headers["X-Request-Id"] == sent
    if status >= 400:
        assert response.content_type == PROBLEM

    generated = await harness.client.request(method, path, json=body)
    assert generated.status == status
    assert re.fullmatch(r"[0-9a-f]{32}", generated.headers["X-Request-Id"])


@pytest.mark.parametrize("sent", ["x" * 129, "café", "", "tab\there"])
async def test_an_unfit_request_id_is_replaced(harness: Harness, sent: str) -> None:
    response = await harness.client.get("/healthz", headers={"X-Request-Id": sent})
    assert response.status == 200
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-Id"])


async def test_the_longest_request_id_is_kept(harness: Harness) -> None:
    sent = "y" * 128
    response = await harness.client.get("/healthz", headers={"X-Request-Id": sent})
    assert response.headers["X-Request-Id"] == sent


async def test_text_format_stays_readable(harness: Harness, log_output: StartLogs) -> None:
    stream = log_output("text")
    body, headers = truto_event(harness.sim_server)
    response = await harness.client.post(
        "/webhooks/truto", data=body, headers={**headers, "X-Request-Id": "req-text"}
    )
    assert response.status == 200
    (line,) = [line for line in stream.getvalue().splitlines() if "webhook truto" in line]
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} DEBUG orchestrator\.service\.cancellations:"
        r" webhook truto record:updated for -: \w+ \[request_id=req-text provider=truto\]",
        line,
    ), line


async def test_dispatcher_lines_carry_the_cancellation(
    harness: Harness, log_output: StartLogs
) -> None:
    created = await harness.enqueue("log-resource-1")
    stream = log_output("json")
    assert await harness.dispatch() == 1
    lines = json_lines(stream.getvalue())
    about = [line for line in lines if line.get("cancellation_id") == created["id"]]
    assert any(line["logger"] == "orchestrator.workers.dispatcher" for line in about), lines
    for line in about:
        assert line["provider"] == "dropbox_sign"
        assert line["resource_id"] == "log-resource-1"
        assert "request_id" not in line  # the dispatcher works outside any request


def test_bind_nests_and_restores() -> None:
    with logs.bind(request_id="r1"):
        with logs.bind(cancellation_id="c1", provider=None):
            assert dict(logs.bound()) == {"request_id": "r1", "cancellation_id": "c1"}
        assert dict(logs.bound()) == {"request_id": "r1"}
    assert dict(logs.bound()) == {}
    with pytest.raises(TypeError, match="unknown log fields"), logs.bind(user="x"):
        pass


def test_the_default_is_text_on_a_terminal_and_json_otherwise() -> None:
    assert logs.default_format(io.StringIO()) == "json"
    leader, follower = os.openpty()
    with open(follower, "w") as terminal:
        assert logs.default_format(terminal) == "text"
    os.close(leader)


@pytest.mark.timeout(90)
async def test_every_line_serve_writes_is_json_when_not_on_a_terminal(
    sim_server: SimulatorServer, dsn: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    secret = token("logger")
    env = common.service_env(
        sim_server, dsn, ORCH_LOG_LEVEL="DEBUG", ORCH_API_TOKENS=entry("logger")
    )
    env.pop("ORCH_LOG_FORMAT", None)
    log = tmp_path / "service.log"
    service = ServiceProcess(env, log)
    sim_server.simulator.dropbox_sign.callback_url = f"{service.url}/webhooks/dropbox_sign"
    try:
        service.start()
        await service.wait_ready()
        auth = {"Authorization": f"Bearer {secret}"}
        async with aiohttp.ClientSession(headers=auth) as http:
            body, headers = truto_event(sim_server)
            async with http.post(
                f"{service.url}/webhooks/truto",
                data=body,
                headers={**headers, "X-Request-Id": "req-serve"},
            ) as response:
                assert response.status == 200
                assert response.headers["X-Request-Id"] == "req-serve"
            async with http.post(
                f"{service.url}/v1/cancellations",
                json=common.cancel_body("dropbox_sign", "log-serve-1"),
                headers={"X-Request-Id": "req-enqueue"},
            ) as response:
                assert response.status == 202
                ident = (await response.json())["id"]
            await common.wait_all_terminal(db, 1, timeout_s=30)
        service.terminate()
        assert service.wait_exit(timeout_s=15) == 0
    finally:
        service.stop()
    lines = json_lines(log.read_text())
    (clock,) = [line for line in lines if line["logger"] == "orchestrator.store.clock_check"]
    assert clock["message"].startswith("clock within 1.0 s of PostgreSQL's")
    assert [line for line in lines if line.get("request_id") == "req-serve"]
    about = [line for line in lines if line.get("cancellation_id") == ident]
    assert about
    assert all(line["resource_id"] == "log-serve-1" for line in about)
    # One access line per request, JSON, naming the token, never its secret (issue 16).
    access = [line for line in lines if line["logger"] == "orchestrator.access"]
    (enqueue,) = [line for line in access if line.get("request_id") == "req-enqueue"]
    assert {k: enqueue[k] for k in ("method", "route", "status", "token")} == {
        "method": "POST",
        "route": "/v1/cancellations",
        "status": 202,
        "token": "logger",
    }
    assert isinstance(enqueue["duration_ms"], float) and enqueue["duration_ms"] >= 0
    (webhook,) = [line for line in access if line.get("request_id") == "req-serve"]
    assert (webhook["route"], webhook["status"], webhook["token"]) == (
        "/webhooks/{provider}",
        200,
        None,
    )
    text = log.read_text()
    assert secret not in text and "Authorization" not in text and "Bearer" not in text
    assert not [line for line in lines if line["logger"] == "aiohttp.access"]
    print(f"\nsample JSON lines from serve:\n{chr(10).join(log.read_text().splitlines()[:12])}")


async def test_lines_about_a_cancellation_carry_its_id_provider_and_resource(
    harness: Harness, log_output: StartLogs
) -> None:
    """The dispatcher's, the webhook's and an operator action's lines all name it."""
    stream = log_output("json")
    created = await harness.enqueue("sr-log-ctx")
    harness.sim.configure({"dropbox_sign": {"drop_callback_rate": 1.0}})
    await harness.dispatch()
    await harness.client.post(
        f"/v1/cancellations/{created['id']}/abandon", json={"reason": "logged"}
    )
    lines = json_lines(stream.getvalue())
    about = [line for line in lines if line.get("resource_id") == "sr-log-ctx"]
    assert {line["logger"] for line in about} >= {
        "orchestrator.workers.dispatcher",
        "orchestrator.service.cancellations",
    }
    action = [line for line in about if line["message"].startswith("abandoned by")]
    assert len(action) == 1
    assert action[0]["cancellation_id"] == created["id"]
    assert action[0]["provider"] == "dropbox_sign"
    assert "logged" in action[0]["message"]
