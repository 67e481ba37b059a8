"""Chromium driven by Playwright, against the service served on loopback by the
integration suite's harness (real HTTP, real Postgres, workers stepped by hand).

The browser is Debian's Chromium (`apt-get install chromium`; .ci/run installs it), never
one downloaded by `playwright install`. Without it the tests skip and say so.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from tests.integration.conftest import harness, settings_overrides, sim_server

__all__ = ["harness", "settings_overrides", "sim_server"]

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: A laptop screen: the dashboard must read well at this size.
LAPTOP = {"width": 1366, "height": 768}
#: Each run's screenshots (git ignores this folder, so a run leaves the tree clean); the
#: reviewed copies committed for reading sit one level up, in tests/artifacts/.
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "latest"


def chromium() -> str | None:
    """Debian's Chromium, wherever the PATH has it if not at the usual place."""
    return CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    executable = chromium()
    if executable is None:
        pytest.skip(
            f"no Chromium at {CHROMIUM} nor on the PATH: run `apt-get install -y chromium` "
            "(.ci/run does this when it is missing) to run the browser tests"
        )
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=executable, headless=True, args=ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport=LAPTOP)
    # Generous bounds for a busy two-core machine; each is a limit on waiting, never a pause.
    context.set_default_timeout(30_000)
    expect.set_options(timeout=15_000)
    tab = await context.new_page()
    try:
        yield tab
    finally:
        await context.close()


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
