"""Security: secrets never appear in logs, error bodies or the stored history.

A service process runs a full flow at log level DEBUG with distinctive secrets, failures
included (providers answering 401 to accounts with wrong keys, forged webhooks, calls with a
wrong bearer token, bad requests); then the captured log, every answer it gave, and every row
of cancellations, cancellation_events and webhook_inbox are searched for each secret, raw and
in the forms it travels in (Basic auth, hex core, a prefix). The service connects to
PostgreSQL as a role with a known password, so DATABASE_URL carries a secret too.
"""

from __future__ import annotations

import base64
import logging
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import asyncpg
import orjson
import pytest

from orchestrator.config import load_settings
from orchestrator.providers.dropbox_sign import event_hash
from orchestrator.simulator.app import SimulatorServer
from orchestrator.simulator.aptly import AptlySettings
from orchestrator.simulator.dropbox_sign import DropboxSignSettings
from orchestrator.simulator.hub import Simulator
from orchestrator.simulator.truto import TrutoSettings
from orchestrator.simulator.truto import signature as truto_signature
from tests.faults import common
from tests.integration.processes import ServiceProcess


def secret(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex}"


SECRETS = {
    "DROPBOX_SIGN_API_KEY": secret("dskey"),
    "TRUTO_API_TOKEN": secret("trutotoken"),
    "TRUTO_WEBHOOK_SECRET": secret("trutowhsec"),
    "APTLY_TOKEN": secret("aptlytoken"),
    "ORCH_API_TOKENS": secret("apitoken"),  # unnamed: named with ORCH_SECRET_KEY
    "ORCH_SECRET_KEY": secret("secretkey"),
    # The keys of the `wrong` accounts, which the providers refuse with 401.
    "FAULTS_WRONG_DS_KEY": secret("wrongdskey"),
    "FAULTS_WRONG_TRUTO_TOKEN": secret("wrongtrutotoken"),
    "FAULTS_WRONG_APTLY_TOKEN": secret("wrongaptlytoken"),
    # The password inside DATABASE_URL (the service never reads this variable itself).
    "FAULTS_DB_PASSWORD": secret("dbpassword"),
}
API_TOKEN = SECRETS["ORCH_API_TOKENS"]
DB_ROLE = f"faults_secrets_{uuid.uuid4().hex[:8]}"


def with_role(dsn: str, role: str, password: str) -> str:
    parts = urllib.parse.urlsplit(dsn)
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{role}:{password}@{host}"))


def forms(value: str) -> list[str]:
    """The secret, its random core, a prefix of that core, and the Basic credentials built
    from it; any of them in the output is a leak."""
    core = value.rsplit("-", 1)[1]
    basic = base64.b64encode(f"{value}:".encode()).decode()
    return [value, core, core[:16], basic.rstrip("=")]


def leaks(where: str, text: str) -> list[str]:
    return [
        f"{name} ({form[:12]}…) in {where}"
        for name, value in SECRETS.items()
        for form in forms(value)
        if form in text
    ]


@pytest.fixture
async def sim() -> AsyncIterator[SimulatorServer]:
    simulator = Simulator(
        dropbox_sign=DropboxSignSettings(api_key=SECRETS["DROPBOX_SIGN_API_KEY"]),
        truto=TrutoSettings(
            token=SECRETS["TRUTO_API_TOKEN"], webhook_secret=SECRETS["TRUTO_WEBHOOK_SECRET"]
        ),
        aptly=AptlySettings(token=SECRETS["APTLY_TOKEN"]),
    )
    async with SimulatorServer(simulator) as server:
        yield server


def accounts_file(path: Path, sim: SimulatorServer) -> Path:
    path.write_text(
        f"""
[[accounts]]
provider = "dropbox_sign"
name = "wrong"
base_url = "{sim.dropbox_sign_url}"
secret_env = "FAULTS_WRONG_DS_KEY"

[[accounts]]
provider = "truto"
name = "wrong"
base_url = "{sim.truto_url}"
secret_env = "FAULTS_WRONG_TRUTO_TOKEN"

[[accounts]]
provider = "aptly"
name = "wrong"
base_url = "{sim.aptly_url}"
secret_env = "FAULTS_WRONG_APTLY_TOKEN"
"""
    )
    return path


@pytest.mark.timeout(120)
async def test_no_secret_in_logs_answers_or_rows(
    sim: SimulatorServer, dsn: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    await db.execute(
        f"CREATE ROLE {DB_ROLE} LOGIN SUPERUSER PASSWORD '{SECRETS['FAULTS_DB_PASSWORD']}'"
    )
    env = common.service_env(
        sim,
        with_role(dsn, DB_ROLE, SECRETS["FAULTS_DB_PASSWORD"]),
        **SECRETS,
        ORCH_CONFIG=str(accounts_file(tmp_path / "accounts.toml", sim)),
        ORCH_LOG_LEVEL="DEBUG",
        ORCH_MAX_ATTEMPTS="2",
        ORCH_BACKOFF_BASE_S="0.1",
        ORCH_BACKOFF_MAX_S="0.5",
    )
    env.pop("APTLY_API_TOKEN")  # APTLY_TOKEN, from SECRETS, is the one to use
    log = tmp_path / "service.log"
    service = ServiceProcess(env, log)
    sim.simulator.dropbox_sign.callback_url = f"{service.url}/webhooks/dropbox_sign"
    answers: list[str] = []

    async def keep(response: aiohttp.ClientResponse) -> int:
        answers.append(f"{response.status} {dict(response.headers)} {await response.text()}")
        return response.status

    try:
        service.start()
        await service.wait_ready()
        auth = {"Authorization": f"Bearer {API_TOKEN}"}
        async with aiohttp.ClientSession(headers=auth) as http, aiohttp.ClientSession() as anon:
            url = service.url
            # The API refuses a missing or wrong token, and a bad body, and says why.
            async with anon.get(f"{url}/v1/stats") as response:
                assert await keep(response) == 401
            wrong = {"Authorization": f"Bearer {API_TOKEN[:-1]}x"}
            async with anon.get(f"{url}/v1/stats", headers=wrong) as response:
                assert await keep(response) == 401
            async with http.post(
                f"{url}/v1/cancellations", json={"provider": "truto", "resource_id": "x"}
            ) as response:
                assert await keep(response) == 422

            ids = []
            for provider in common.PROVIDERS:
                for account in ("default", "wrong"):
                    body = common.cancel_body(provider, f"sec-{provider}-{account}", account)
                    async with http.post(f"{url}/v1/cancellations", json=body) as response:
                        assert await keep(response) == 202
                        ids.append((await response.json())["id"])

            # Forged webhooks, then a genuine Truto event.
            when = str(int(time.time()))
            forged = {
                "event": {
                    "event_type": "signature_request_canceled",
                    "event_time": when,
                    "event_hash": event_hash("guessed-key", when, "signature_request_canceled"),
                },
                "signature_request": {"signature_request_id": "sec-dropbox_sign-default"},
            }
            async with anon.post(f"{url}/webhooks/dropbox_sign", json=forged) as response:
                assert await keep(response) == 401
            truto_event = orjson.dumps(
                {
                    "id": str(uuid.uuid4()),
                    "event": "record:updated",
                    "created_at": datetime.now(UTC).isoformat(),
                }
            )
            for key, expected in [("guessed-secret", 401), (SECRETS["TRUTO_WEBHOOK_SECRET"], 200)]:
                headers = {
                    "Content-Type": "application/json",
                    "X-Truto-Signature": truto_signature(key, truto_event),
                }
                async with anon.post(
                    f"{url}/webhooks/truto", data=truto_event, headers=headers
                ) as response:
                    assert await keep(response) == expected

            await common.wait_all_terminal(db, len(ids), timeout_s=60)
            for ident in ids:
                for path in (f"/v1/cancellations/{ident}", f"/v1/cancellations/{ident}/events"):
                    async with http.get(f"{url}{path}") as response:
                        assert await keep(response) == 200
            for path in ("/v1/cancellations", "/v1/stats", "/metrics", "/readyz"):
                async with http.get(f"{url}{path}") as response:
                    assert await keep(response) == 200
        service.terminate()
        assert service.wait_exit(timeout_s=15) == 0
    finally:
        service.stop()
        await db.execute(f"DROP ROLE IF EXISTS {DB_ROLE}")

    outcomes = {tuple(r) for r in await db.fetch("SELECT account, status FROM cancellations")}
    assert outcomes == {("default", "confirmed"), ("wrong", "failed")}
    refused = sum(p.counters.unauthorized for p in sim.simulator.providers.values())
    assert refused >= 6  # each wrong account was refused on each of its attempts

    found = leaks("the service log", log.read_text())
    found += leaks("an answer", "\n".join(answers))
    for table in ("cancellations", "cancellation_events", "webhook_inbox"):
        rows = await db.fetch(f"SELECT t::text AS row FROM {table} t")  # noqa: S608
        found += leaks(table, "\n".join(r["row"] for r in rows))
    print(
        f"\nsecrets: {len(SECRETS)} secrets, {len(log.read_text().splitlines())} log lines at"
        f" DEBUG, {len(answers)} answers, {refused} 401s from providers: {len(found)} leaks"
    )
    assert found == []
    assert "settings: " in log.read_text(), "the service logs its settings at DEBUG"


def test_no_secret_in_the_settings_as_shown_or_logged(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv(
        "DATABASE_URL", f"postgresql://app:{SECRETS['FAULTS_DB_PASSWORD']}@db:5432/orchestrator"
    )
    monkeypatch.setenv("ORCH_CONFIG", str(accounts_file_at(tmp_path / "accounts.toml")))
    settings = load_settings()
    accounts = settings.accounts()
    assert settings.database_url is not None
    assert SECRETS["FAULTS_DB_PASSWORD"] in settings.database_url.get_secret_value()
    assert {a.secret.get_secret_value() for a in accounts if a.secret} >= {
        SECRETS["FAULTS_WRONG_DS_KEY"],
        SECRETS["DROPBOX_SIGN_API_KEY"],
    }

    logger = logging.getLogger("orchestrator.tests.secrets")
    with caplog.at_level(logging.DEBUG, logger=logger.name):
        logger.debug("settings: %s", settings)
        logger.debug("settings: %r", settings)
        logger.debug("dumped: %s", settings.model_dump())
        logger.debug("accounts: %s", accounts)
    shown = {
        "repr(settings)": repr(settings),
        "str(settings)": str(settings),
        "model_dump()": repr(settings.model_dump()),
        "model_dump_json()": settings.model_dump_json(),
        "the accounts": repr(accounts),
        "the log": caplog.text,
    }
    found = [leak for where, text in shown.items() for leak in leaks(where, text)]
    assert found == []
    assert "postgresql://app:***@db:5432/orchestrator" in repr(settings)


def accounts_file_at(path: Path) -> Path:
    path.write_text(
        """
[[accounts]]
provider = "dropbox_sign"
name = "wrong"
base_url = "https://api.hellosign.com/v3"
secret_env = "FAULTS_WRONG_DS_KEY"
"""
    )
    return path
