"""The Host check (421 against DNS rebinding) and who may read /metrics, /readyz's details
and /openapi.json, over real HTTP on loopback (issue 16)."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from orchestrator.web.app import create_app
from tests.integration.conftest import AiohttpClient, Harness, make_settings
from tests.tokens import entry, token

READ = token("reader")
ENQUEUE = token("enqueuer")
SCRAPER = "m" * 40


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- Host -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/stats", "/metrics", "/openapi.json", "/ui/"])
async def test_a_rebound_name_gets_421_from_a_tokenless_loopback_service(
    harness: Harness, path: str
) -> None:
    """`make run`: no token, bound to 127.0.0.1. A page at evil.example whose name now
    resolves to 127.0.0.1 sends `Host: evil.example`; nothing is answered but a 421."""
    response = await harness.client.get(path, headers={"Host": "evil.example"})
    assert response.status == 421
    assert response.headers["Content-Type"] == "application/problem+json"
    assert "ORCH_ALLOWED_HOSTS" in (await response.json())["detail"]


async def test_probes_answer_any_host_but_say_only_ready_to_an_unlisted_one(
    harness: Harness,
) -> None:
    """Kubernetes probes send the pod's address as Host: they must not get 421, and a rebound
    name learns no more from /readyz than ready or not."""
    pod = {"Host": "10.1.2.3:8080"}
    assert (await harness.client.get("/healthz", headers=pod)).status == 200
    ready = await harness.client.get("/readyz", headers=pod)
    assert (ready.status, await ready.json()) == (200, {"status": "ready"})
    listed = await (await harness.client.get("/readyz")).json()
    assert set(listed) > {"status"}  # the details, to a listed Host (no tokens configured)


async def test_a_webhook_to_a_rebound_name_gets_421_and_stores_nothing(
    harness: Harness, db: asyncpg.Connection
) -> None:
    response = await harness.client.post(
        "/webhooks/dropbox_sign", json={"event": {}}, headers={"Host": "evil.example:8080"}
    )
    assert response.status == 421
    assert await db.fetchval("SELECT count(*) FROM webhook_inbox") == 0


async def test_the_loopback_names_are_answered_with_any_port(harness: Harness) -> None:
    port = harness.client.port
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "[::1]:8080", "localhost"):
        response = await harness.client.get("/v1/stats", headers={"Host": host})
        assert response.status == 200, host
    # What the harness itself sends (the whole suite runs through this check).
    assert (await harness.client.get("/v1/stats")).status == 200


@pytest.mark.parametrize(
    ("allowed", "host", "status"),
    [
        ("orchestrator.example", "orchestrator.example:8443", 200),
        ("orchestrator.example", "127.0.0.1", 421),
        ("orchestrator.example:8443", "orchestrator.example:8080", 421),
        ("*", "anything.example", 200),
    ],
)
async def test_orch_allowed_hosts_replaces_the_loopback_names(
    aiohttp_client: AiohttpClient, harness: Harness, dsn: str, allowed: str, host: str, status: int
) -> None:
    settings = make_settings(harness.sim_server, dsn, allowed_hosts=allowed)
    client = await aiohttp_client(create_app(settings, dsn, run_workers=False))
    assert (await client.get("/v1/stats", headers={"Host": host})).status == status


# --- /metrics, /readyz, /openapi.json -------------------------------------------------------


async def guarded(
    aiohttp_client: AiohttpClient, harness: Harness, dsn: str, **overrides: Any
) -> TestClient[Any, Any]:
    settings = make_settings(
        harness.sim_server,
        dsn,
        api_tokens=f"{entry('reader', 'read')},{entry('enqueuer', 'enqueue')}",
        metrics_token=SCRAPER,
        callback_secret="whsec_" + "c2VjcmV0LWtleS1vZi10d2VudHktZm91ci1ieXRlcw==",
        callback_hosts="hooks.internal.example",
        **overrides,
    )
    return await aiohttp_client(create_app(settings, dsn, run_workers=False))


async def add_unserved_row(db: asyncpg.Connection) -> None:
    """A row of an account this instance lacks: /readyz's details name it."""
    await db.execute(
        "SELECT result FROM enqueue_cancellation(gen_random_uuid(), 'dropbox_sign',"
        " 'emea-payroll', 'sr-elsewhere', NULL, '{}', '{}', NULL, 'h', now())"
    )


@pytest.mark.parametrize(
    ("token", "status"),
    [(None, 401), ("not-a-token-" + "x" * 30, 401), (ENQUEUE, 403), (READ, 200), (SCRAPER, 200)],
    ids=["none", "unknown", "enqueue-only", "read", "metrics-token"],
)
async def test_metrics_need_a_read_token_or_the_metrics_token(
    aiohttp_client: AiohttpClient, harness: Harness, dsn: str, token: str | None, status: int
) -> None:
    client = await guarded(aiohttp_client, harness, dsn)
    response = await client.get("/metrics", headers=bearer(token) if token else None)
    assert response.status == status
    if status == 200:
        assert "orchestrator_long_polls_waiting" in await response.text()
    else:
        assert response.headers["Content-Type"] == "application/problem+json"


async def test_readiness_without_a_token_is_only_ready_or_not(
    aiohttp_client: AiohttpClient, harness: Harness, dsn: str, db: asyncpg.Connection
) -> None:
    client = await guarded(aiohttp_client, harness, dsn)
    await add_unserved_row(db)
    bare = await client.get("/readyz")
    assert bare.status == 200
    assert await bare.json() == {"status": "ready"}
    wrong = await client.get("/readyz", headers=bearer(ENQUEUE))
    assert await wrong.json() == {"status": "ready"}
    for reader in (READ, SCRAPER):
        detailed = await (await client.get("/readyz", headers=bearer(reader))).json()
        assert detailed["unserved_accounts"] == {"dropbox_sign:emea-payroll": 1}
    assert (await client.get("/healthz")).status == 200


async def test_openapi_without_a_token_names_no_account_and_no_callback_host(
    aiohttp_client: AiohttpClient, harness: Harness, dsn: str
) -> None:
    client = await guarded(aiohttp_client, harness, dsn)
    public = await client.get("/openapi.json")
    assert public.status == 200
    text = await public.text()
    assert "hooks.internal" not in text
    enqueue = (await public.json())["components"]["schemas"]["CancellationIn_dropbox_sign"]
    assert "enum" not in enqueue["properties"]["account"]

    for reader in (READ, SCRAPER):
        own = await (await client.get("/openapi.json", headers=bearer(reader))).json()
        enqueue = own["components"]["schemas"]["CancellationIn_dropbox_sign"]
        assert enqueue["properties"]["account"]["enum"] == ["default"]


async def test_without_any_token_configured_everything_stays_open(
    harness: Harness, db: asyncpg.Connection
) -> None:
    """A loopback `make run` has no token to show: the details are open, like the API."""
    await add_unserved_row(db)
    assert (await harness.client.get("/metrics")).status == 200
    ready = await (await harness.client.get("/readyz")).json()
    assert ready["unserved_accounts"] == {"dropbox_sign:emea-payroll": 1}
