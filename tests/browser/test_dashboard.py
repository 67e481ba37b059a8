"""The dashboard in a real browser: log in, watch a cancellation appear, retry it, see its
history grow, abandon it, see the failure. Screenshots go to tests/artifacts/ for review."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.async_api import Page, expect

from tests.integration.conftest import Harness
from tests.tokens import entry, token

TOKEN = token("dashboard-admin")
AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: The pages refresh themselves every few seconds (ui.REFRESH_S); this is how long a test
#: waits for a change to show before it fails, not a pause.
SHOWS_WITHIN_MS = 30_000


@pytest.mark.parametrize("settings_overrides", [{"api_tokens": entry("dashboard-admin")}])
async def test_enqueue_retry_and_abandon_from_the_dashboard(
    harness: Harness, page: Page, artifacts: Path
) -> None:
    # Some history for the dashboard to show: a failure with the provider's message and a
    # confirmation that never came.
    harness.sim.seed_request("dropbox_sign", "sr-2291-signed", "completed")
    await harness.enqueue("sr-2291-signed", headers=AUTH)
    harness.sim.configure({"dropbox_sign": {"drop_callback_rate": 1.0}})
    await harness.enqueue("sr-2292-quiet", headers=AUTH)
    await harness.enqueue("sr-2293-quiet", headers=AUTH, provider="dropbox_sign")
    await harness.dispatch()
    harness.sim.configure({"dropbox_sign": {"drop_callback_rate": 0.0}})
    harness.advance(3600 + 754)

    base = str(harness.client.make_url("/ui/")).rstrip("/")
    await page.goto(f"{base}/")
    await expect(page).to_have_url(re.compile(r"/ui/login"))
    await page.fill("#token", TOKEN)
    await page.click("button:has-text('Log in')")
    await expect(page.locator("h2", has_text="Overdue confirmations")).to_be_visible()

    # Enqueued through the API while the page is open: the page shows it by itself.
    harness.sim.configure({"dropbox_sign": {"error_5xx_rate": 1.0}})
    created = await harness.enqueue("sr-4711-browser", headers=AUTH)
    await harness.dispatch()  # fails with a 5xx: queued again, with the error
    row = page.locator("tr", has=page.locator("a", has_text="sr-4711-browser"))
    await expect(row).to_be_visible(timeout=SHOWS_WITHIN_MS)
    await expect(row.locator(".badge")).to_have_text("queued")
    await page.screenshot(path=artifacts / "dashboard-1-overview.png")

    await row.locator("a", has_text="sr-4711-browser").click()
    await expect(page).to_have_url(re.compile(rf"/ui/cancellations/{created['id']}$"))
    history = page.locator("#history tbody tr")
    before = await history.count()
    assert before >= 3  # enqueued, claimed, retry scheduled

    await page.fill("#reason", "provider status page says resolved")
    await page.click("button:has-text('Retry now')")
    await expect(page.locator(".notice.ok")).to_contain_text("Retry requested")
    await expect(history).to_have_count(before + 1)
    await expect(history.last).to_contain_text("provider status page says resolved")

    # The worker takes the retry (status check first); the open page picks it up.
    await harness.dispatch()
    await expect(history).to_have_count(before + 3, timeout=SHOWS_WITHIN_MS)
    await expect(page.locator("#history")).to_contain_text("claimed")
    await page.screenshot(path=artifacts / "dashboard-2-history.png")

    await page.fill("#reason", "customer withdrew the envelope by phone")
    await page.click("button:has-text('Abandon')")
    await expect(page.locator(".notice.ok")).to_contain_text("Abandoned")
    await expect(page.locator("#status .badge")).to_have_text("failed")
    await expect(page.locator(".last-error")).to_contain_text("abandoned")
    await expect(page.locator(".last-error")).to_contain_text("customer withdrew the envelope")
    await expect(page.locator("button:has-text('Retry now')")).to_have_count(0)
    await page.screenshot(path=artifacts / "dashboard-3-abandoned.png")

    api = await harness.client.get(f"/v1/cancellations/{created['id']}", headers=AUTH)
    stored = await api.json()
    assert (stored["status"], stored["last_error"]["code"]) == ("failed", "abandoned")

    await page.click("a.brand")
    failures = page.locator("section", has=page.locator("h2", has_text="Recent failures"))
    await expect(failures).to_contain_text("sr-4711-browser")
    await expect(failures).to_contain_text("customer withdrew the envelope by phone")
    await page.screenshot(path=artifacts / "dashboard-4-failures.png")

    await page.fill("input[name=q]", "sr-4711-browser")
    await page.press("input[name=q]", "Enter")
    results = page.locator("#results")
    await expect(results).to_contain_text("Cancellations of sr-4711-browser")
    await expect(results.locator("tbody tr")).to_have_count(1)
    await expect(results.locator("tbody tr .badge")).to_have_text("failed")
    await page.screenshot(path=artifacts / "dashboard-5-search.png")
