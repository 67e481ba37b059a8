"""The dashboard's sessions live on the server (issue 16, item 5): logout ends them, they
can be revoked for one token or all, a removed token loses them; cookies are Secure and
HSTS is sent behind TLS; failed logins are limited per client address."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import asyncpg
import pytest

from orchestrator.clock import ManualClock
from orchestrator.simulator.app import SimulatorServer
from orchestrator.web import sessions, ui
from orchestrator.web.app import create_app
from tests.integration.conftest import AiohttpClient, Harness, make_settings
from tests.tokens import entry
from tests.tokens import token as tok

TOKENS = {"api_tokens": f"{entry('ada')},{entry('bob', 'read')}"}


def origin(harness: Harness) -> dict[str, str]:
    return {"Origin": str(harness.client.make_url("")).rstrip("/")}


async def login(harness: Harness, label: str, headers: dict[str, str] | None = None) -> Any:
    response = await harness.client.post(
        "/ui/login",
        data={"token": tok(label)},
        headers={**origin(harness), **(headers or {})},
        allow_redirects=False,
    )
    assert response.status == 303, await response.text()
    return response.cookies[sessions.COOKIE]


def use(harness: Harness, value: str) -> None:
    jar = harness.client.session.cookie_jar
    jar.clear()
    jar.update_cookies({sessions.COOKIE: value}, response_url=harness.client.make_url("/ui/"))


async def opens(harness: Harness, value: str) -> bool:
    use(harness, value)
    response = await harness.client.get("/ui/", allow_redirects=False)
    assert response.status in (200, 303)
    return response.status == 200


@pytest.mark.parametrize("settings_overrides", [TOKENS])
async def test_logout_ends_the_session_on_the_server(
    harness: Harness, db: asyncpg.Connection
) -> None:
    value = (await login(harness, "ada")).value
    assert tok("ada") not in value and "ada" not in value
    stored = await db.fetchrow("SELECT id_hash, token_name FROM ui_sessions")
    assert stored["token_name"] == "ada" and value.encode() not in bytes(stored["id_hash"])
    assert await opens(harness, value)
    response = await harness.client.post(
        "/ui/logout", data={}, headers=origin(harness), allow_redirects=False
    )
    assert response.status == 303
    assert await db.fetchval("SELECT count(*) FROM ui_sessions") == 0
    # The old cookie, replayed after logout, opens nothing.
    assert not await opens(harness, value)


def revoke(dsn: str, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCH_", "DATABASE_URL"))}
    env["DATABASE_URL"] = dsn
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", "sessions", "revoke", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("settings_overrides", [TOKENS])
async def test_sessions_are_revoked_for_one_token_or_all(harness: Harness, dsn: str) -> None:
    ada = (await login(harness, "ada")).value
    bob = (await login(harness, "bob")).value
    ada_again = (await login(harness, "ada")).value

    done = revoke(dsn, "--token", "bob")
    assert done.returncode == 0, done.stderr
    assert "ended 1 session(s)" in done.stdout
    assert not await opens(harness, bob)
    assert await opens(harness, ada) and await opens(harness, ada_again)

    done = revoke(dsn, "--all")
    assert done.returncode == 0, done.stderr
    assert "ended 2 session(s)" in done.stdout
    assert not await opens(harness, ada) and not await opens(harness, ada_again)


@pytest.mark.parametrize("settings_overrides", [TOKENS])
async def test_a_token_removed_from_the_config_loses_its_sessions(
    harness: Harness,
    aiohttp_client: AiohttpClient,
    sim_server: SimulatorServer,
    dsn: str,
    db: asyncpg.Connection,
) -> None:
    await login(harness, "ada")
    await login(harness, "bob")
    settings = make_settings(sim_server, dsn, api_tokens=entry("ada"))
    app = create_app(settings, dsn, clock=ManualClock(), run_workers=False)
    await aiohttp_client(app)  # starting it ends bob's sessions
    names = await db.fetch("SELECT token_name FROM ui_sessions")
    assert [r["token_name"] for r in names] == ["ada"]


SECURE = {**TOKENS, "public_url": "https://orchestrator.example"}


@pytest.mark.parametrize("settings_overrides", [SECURE])
async def test_behind_tls_the_cookie_is_secure_and_hsts_is_sent(harness: Harness) -> None:
    cookie = await login(harness, "ada")
    assert cookie["secure"]
    for path in ("/ui/login", "/healthz"):
        response = await harness.client.get(path, allow_redirects=False)
        assert response.headers["Strict-Transport-Security"].startswith("max-age=")


@pytest.mark.parametrize(
    ("overrides", "secure"),
    [
        ({**TOKENS, "trusted_proxies": "127.0.0.1"}, True),
        ({**TOKENS, "trusted_proxies": "10.0.0.0/8"}, False),
        (TOKENS, False),
    ],
)
async def test_x_forwarded_proto_is_believed_only_from_a_listed_proxy(
    aiohttp_client: AiohttpClient,
    sim_server: SimulatorServer,
    dsn: str,
    overrides: dict[str, Any],
    secure: bool,
) -> None:
    settings = make_settings(sim_server, dsn, **overrides)
    client = await aiohttp_client(create_app(settings, dsn, run_workers=False))
    response = await client.post(
        "/ui/login",
        data={"token": tok("ada")},
        headers={
            "Origin": str(client.make_url("")).rstrip("/"),
            "X-Forwarded-Proto": "https",
        },
        allow_redirects=False,
    )
    assert response.status == 303
    assert bool(response.cookies[sessions.COOKIE]["secure"]) is secure
    assert ("Strict-Transport-Security" in response.headers) is secure


@pytest.mark.parametrize("settings_overrides", [TOKENS])
async def test_failed_logins_are_limited_per_client_address(harness: Harness) -> None:
    for _ in range(ui.LOGIN_FAILURES):
        response = await harness.client.post(
            "/ui/login", data={"token": "guess"}, headers=origin(harness), allow_redirects=False
        )
        assert response.status == 401
    for token in ("guess", tok("ada")):  # while limited, even the right token waits
        response = await harness.client.post(
            "/ui/login", data={"token": token}, headers=origin(harness), allow_redirects=False
        )
        assert response.status == 429, await response.text()
        assert 1 <= int(response.headers["Retry-After"]) <= ui.LOGIN_REFILL_S
        assert sessions.COOKIE not in response.cookies
