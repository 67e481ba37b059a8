"""The package as a user installs it: a wheel, in a fresh venv, not editable.

It must migrate an empty database from the migrations it carries and serve a cancel to
`confirmed` through the simulator. The dependencies come from the suite's own venv through a
.pth file, so the test needs no network; the orchestrator package comes only from the wheel.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from orchestrator.simulator.app import SimulatorServer
from orchestrator.store import migrations
from tests.conftest import _admin, with_database
from tests.integration.processes import (
    ServiceProcess,
    clean_env,
    install_wheel,
    run_checked,
    wait_for,
)
from tests.tokens import entry, token

TOKEN = token("wheel")
TOKENS = entry("wheel")


def run(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    try:
        return run_checked(command, cwd, env)
    except RuntimeError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def installed(repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bin/ of a fresh venv holding only the wheel built from the repository."""
    setuptools = importlib.metadata.version("setuptools")
    if tuple(int(part) for part in setuptools.split(".")[:2]) < (70, 1):
        pytest.fail(f"setuptools {setuptools} cannot build the wheel offline: run make install")
    work = tmp_path_factory.mktemp("wheel")
    bin_dir = install_wheel(repo_root, work)
    where = run(
        [str(bin_dir / "python"), "-c", "import orchestrator; print(orchestrator.__file__)"], work
    )
    assert Path(where.strip()).is_relative_to(work / "venv"), where
    return bin_dir


@pytest.fixture
def empty_dsn(pg_server: str) -> Iterator[str]:
    name = f"wheel_{os.getpid()}"
    asyncio.run(_admin(pg_server, f"DROP DATABASE IF EXISTS {name}", f"CREATE DATABASE {name}"))
    try:
        yield with_database(pg_server, name)
    finally:
        asyncio.run(_admin(pg_server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture
async def sim() -> AsyncIterator[SimulatorServer]:
    async with SimulatorServer() as server:
        yield server


async def test_the_wheel_migrates_and_confirms_a_cancel(
    installed: Path, empty_dsn: str, sim: SimulatorServer, tmp_path: Path
) -> None:
    migrated = await asyncio.to_thread(
        run,
        [str(installed / "orchestrator"), "migrate"],
        tmp_path,
        clean_env(DATABASE_URL=empty_dsn),
    )
    latest, shipped = migrations.latest_version(), len(migrations.discover())
    assert migrated.strip() == f"applied {shipped} migration(s); schema is at {latest}"

    env = clean_env(DATABASE_URL=empty_dsn, ORCH_API_TOKENS=TOKENS, **sim.env())
    service = ServiceProcess(
        env, tmp_path / "service.log", command=[str(installed / "orchestrator"), "serve"]
    )
    sim.simulator.dropbox_sign.callback_url = f"{service.url}/webhooks/dropbox_sign"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        service.start()
        await service.wait_ready()
        async with aiohttp.ClientSession(headers=auth) as http:
            async with http.get(f"{service.url}/readyz") as response:
                assert (await response.json())["schema"] == latest
            body = {"provider": "dropbox_sign", "resource_id": "sr-from-the-wheel"}
            async with http.post(f"{service.url}/v1/cancellations", json=body) as response:
                assert response.status == 202, await response.text()
                location = f"{service.url}/v1/cancellations/{(await response.json())['id']}"

            async def confirmed() -> dict[str, Any] | None:
                async with http.get(location) as response:
                    row: dict[str, Any] = await response.json()
                return row if row["status"] == "confirmed" else None

            row = await wait_for(confirmed, 30, what="the cancel confirmed")
        # The wheel carries the dashboard's templates and stylesheet (package-data).
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
            login = {"token": TOKEN, "next": "/ui/"}
            origin = {"Origin": service.url}
            async with browser.post(f"{service.url}/ui/login", data=login, headers=origin) as page:
                assert page.status == 200, await page.text()
                assert "sr-from-the-wheel" in await page.text()
            async with browser.get(f"{service.url}/ui/static/style.css") as style:
                assert style.status == 200
        service.terminate()
        assert service.wait_exit(timeout_s=15) == 0
    finally:
        service.stop()
    assert row["outcome"] == "canceled"
    assert sim.simulator.stats()["dropbox_sign"]["cancel_calls"] == 1
    assert "Traceback" not in (tmp_path / "service.log").read_text()
