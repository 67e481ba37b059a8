"""The dashboard's pages over real HTTP: what they show, login, scopes and the CSRF guard.

tests/browser drives the same pages in Chromium; these check the server's side of it.
"""

from __future__ import annotations

import re
from typing import Any

import aiohttp
import pytest

from orchestrator.web import sessions
from tests.integration.conftest import Harness
from tests.tokens import entry
from tests.tokens import token as tok


def origin(harness: Harness) -> dict[str, str]:
    return {"Origin": str(harness.client.make_url("")).rstrip("/")}


async def page(response: aiohttp.ClientResponse, status: int = 200) -> str:
    text = await response.text()
    assert response.status == status, text[:2000]
    assert response.content_type == "text/html"
    return text


def visible(html: str) -> str:
    """The page's text without tags, spaces collapsed: what a reader sees."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


async def post_form(
    harness: Harness, path: str, form: dict[str, str], headers: dict[str, str] | None = None
) -> aiohttp.ClientResponse:
    return await harness.client.post(
        path,
        data=form,
        headers=origin(harness) if headers is None else headers,
        allow_redirects=False,
    )


# --- open (no tokens configured) ---------------------------------------------------------


async def test_the_overview_shows_counts_overdue_and_failures(harness: Harness) -> None:
    harness.sim.seed_request("dropbox_sign", "sr-signed", "completed")
    failed = await harness.enqueue("sr-signed")
    harness.sim.configure({"dropbox_sign": {"drop_callback_rate": 1.0}})
    late = await harness.enqueue("sr-late")
    await harness.dispatch()
    harness.sim.configure({"dropbox_sign": {"drop_callback_rate": 0.0}})
    fresh = await harness.enqueue("sr-fresh")
    harness.advance(3600 + 125)  # sr-late's confirmation is 2 min 05 s overdue

    response = await harness.client.get("/ui", allow_redirects=False)
    assert (response.status, response.headers["Location"]) == (302, "/ui/")
    html = await page(await harness.client.get("/ui/"))
    text = visible(html)
    assert "Overdue confirmations 1" in text
    assert "2 min 05 s" in text
    assert f'href="/ui/cancellations/{late["id"]}"' in html
    row = await harness.get(failed["id"])
    assert row["status"] == "failed"
    assert row["last_error"]["message"] in text  # the provider's own words
    assert f'href="/ui/cancellations/{fresh["id"]}"' in html
    # By provider: dropbox_sign has 1 queued, 1 awaiting, 1 failed; the others none.
    counts = re.search(r"<td>dropbox_sign</td>(.*?)</tr>", html, re.S)
    assert counts is not None
    assert re.findall(r">(\d+)<", counts.group(1)) == ["1", "0", "1", "0", "1", "3"]


async def test_the_page_of_a_cancellation_shows_its_history_and_acts(harness: Harness) -> None:
    created = await harness.enqueue("sr-acted")
    url = f"/ui/cancellations/{created['id']}"
    html = await page(await harness.client.get(url))
    assert "Retry now" in html and "Abandon" in html
    assert [c for c in re.findall(r'class="cause-(\w+)"', html)] == ["enqueued"]

    response = await post_form(harness, f"{url}/retry", {"reason": "provider is back"})
    assert (response.status, response.headers["Location"]) == (303, f"{url}?done=retry")
    html = await page(await harness.client.get(response.headers["Location"]))
    assert re.findall(r'class="cause-(\w+)"', html) == ["enqueued", "retry_requested"]
    assert "“provider is back” — anonymous" in visible(html)
    assert "Retry requested" in html

    response = await post_form(harness, f"{url}/abandon", {"reason": "  "})
    html = await page(response, 422)
    assert "reason" in visible(html)
    assert "  </textarea>" in html  # what was typed is kept

    response = await post_form(harness, f"{url}/abandon", {"reason": "customer called"})
    assert response.status == 303
    row = await harness.get(created["id"])
    assert (row["status"], row["last_error"]["code"]) == ("failed", "abandoned")
    html = await page(await harness.client.get(url))
    assert "customer called" in html
    assert "Retry now" not in html  # nothing left to do

    response = await post_form(harness, f"{url}/retry", {"reason": "undo"})
    html = await page(response, 409)
    assert "already failed" in html


async def test_the_history_page_shows_a_hundred_events_at_a_time(harness: Harness) -> None:
    """A history longer than a page (here 1 + 120 retries) is shown a hundred events at a
    time, with a link to the next page; a bad cursor is a 422 page, never a 500."""
    created = await harness.enqueue("sr-long")
    for n in range(120):
        response = await harness.client.post(
            f"/v1/cancellations/{created['id']}/retry", json={"reason": f"try {n}"}
        )
        assert response.status == 200
    url = f"/ui/cancellations/{created['id']}"
    html = await page(await harness.client.get(url))
    assert len(re.findall(r'class="cause-(\w+)"', html)) == 100
    (next_page,) = re.findall(r'rel="next" href="([^"]+)"', html)
    html = await page(await harness.client.get(next_page.replace("&amp;", "&")))
    causes = re.findall(r'class="cause-(\w+)"', html)
    assert causes == ["retry_requested"] * 21
    assert 'rel="next"' not in html
    assert "From the first event" in html
    await page(await harness.client.get(f"{url}?after=x"), 422)


async def test_search_by_resource_id_and_by_id(harness: Harness) -> None:
    first = await harness.enqueue("sr-find-me")
    await harness.client.post(
        f"/v1/cancellations/{first['id']}/abandon", json={"reason": "to enqueue again"}
    )
    second = await harness.enqueue("sr-find-me")
    await harness.enqueue("sr-other")

    html = await page(await harness.client.get("/ui/search", params={"q": "sr-find-me"}))
    assert set(re.findall(r'href="/ui/cancellations/([0-9a-f-]+)"', html)) == {
        first["id"],
        second["id"],
    }
    response = await harness.client.get(
        "/ui/search", params={"q": second["id"]}, allow_redirects=False
    )
    assert response.headers["Location"] == f"/ui/cancellations/{second['id']}"
    html = await page(await harness.client.get("/ui/search", params={"q": "nothing-here"}))
    assert "No cancellation has this resource id." in html
    html = await page(await harness.client.get("/ui/search", params={"q": "two words"}), 422)
    await page(await harness.client.get("/ui/cancellations/not-an-id"), 404)
    unknown = "00000000-0000-4000-8000-000000000000"
    await page(await harness.client.get(f"/ui/cancellations/{unknown}"), 404)
    await page(await harness.client.get("/ui/search", params={"q": unknown}), 404)


async def test_a_post_from_another_site_is_refused(harness: Harness) -> None:
    created = await harness.enqueue("sr-csrf")
    path = f"/ui/cancellations/{created['id']}/abandon"
    for headers in ({}, {"Origin": "https://evil.example"}, {"Origin": "null"}):
        response = await post_form(harness, path, {"reason": "x"}, headers)
        await page(response, 403)
    referer = {"Referer": str(harness.client.make_url(f"/ui/cancellations/{created['id']}"))}
    assert (await post_form(harness, path, {"reason": "x"}, referer)).status == 303


async def test_pages_carry_security_headers_and_static_files_are_served(
    harness: Harness,
) -> None:
    response = await harness.client.get("/ui/")
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-store"
    for name, kind in (("style.css", "text/css"), ("refresh.js", "javascript")):
        response = await harness.client.get(f"/ui/static/{name}")
        assert response.status == 200
        assert kind in response.content_type
    await page(await harness.client.get("/ui/nowhere"), 404)


# --- with tokens -------------------------------------------------------------------------

ADMIN, READER, CALLER = tok("admin"), tok("reader"), tok("caller")
TOKENS = ",".join([entry("admin"), entry("reader", "read"), entry("caller", "enqueue")])


@pytest.mark.parametrize("settings_overrides", [{"api_tokens": TOKENS}])
async def test_login_with_a_token_and_scopes(harness: Harness, settings_overrides: Any) -> None:
    auth = {"Authorization": f"Bearer {ADMIN}"}
    created = await harness.enqueue("sr-login", headers=auth)
    url = f"/ui/cancellations/{created['id']}"

    response = await harness.client.get(url, allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == f"/ui/login?next={url}"

    for token, status in (("wrong", 401), (CALLER, 403)):
        response = await post_form(harness, "/ui/login", {"token": token, "next": url})
        await page(response, status)
        assert sessions.COOKIE not in response.cookies

    response = await post_form(harness, "/ui/login", {"token": READER, "next": url})
    assert (response.status, response.headers["Location"]) == (303, url)
    cookie = response.cookies[sessions.COOKIE]
    assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/ui"
    assert READER not in cookie.value
    html = await page(await harness.client.get(url))
    assert "read only" in html and "Retry now" not in html
    response = await post_form(harness, f"{url}/retry", {"reason": "x"})
    await page(response, 403)

    await post_form(harness, "/ui/login", {"token": ADMIN, "next": url})
    html = await page(await harness.client.get(url))
    assert "Retry now" in html
    response = await post_form(harness, f"{url}/retry", {"reason": "from the dashboard"})
    assert response.status == 303
    events = await harness.client.get(f"/v1/cancellations/{created['id']}/events", headers=auth)
    last = (await events.json())["events"][-1]
    assert last["evidence"] == {"reason": "from the dashboard", "by": "token:admin"}

    response = await post_form(harness, "/ui/logout", {})
    assert response.status == 303
    response = await harness.client.get(url, allow_redirects=False)
    assert response.status == 303


def set_session(harness: Harness, value: str) -> None:
    jar = harness.client.session.cookie_jar
    jar.clear()
    jar.update_cookies({sessions.COOKIE: value}, response_url=harness.client.make_url("/ui/"))


@pytest.mark.parametrize("settings_overrides", [{"api_tokens": entry("admin")}])
async def test_a_session_ends_when_it_expires_or_is_forged(harness: Harness) -> None:
    response = await post_form(harness, "/ui/login", {"token": ADMIN})
    assert (response.status, response.headers["Location"]) == (303, "/ui/")
    assert (await harness.client.get("/ui/", allow_redirects=False)).status == 200

    value = response.cookies[sessions.COOKIE].value
    for forged in (value[:-1] + ("A" if value[-1] != "A" else "B"), "x" * 43, value + "0", ""):
        set_session(harness, forged)
        assert (await harness.client.get("/ui/", allow_redirects=False)).status == 303

    set_session(harness, value)
    assert (await harness.client.get("/ui/", allow_redirects=False)).status == 200
    harness.advance(sessions.LIFETIME_S + 1)
    assert (await harness.client.get("/ui/", allow_redirects=False)).status == 303


@pytest.mark.parametrize("settings_overrides", [{"api_tokens": entry("admin")}])
async def test_login_only_redirects_within_the_dashboard(harness: Harness) -> None:
    for target in ("https://evil.example/", "//evil.example/ui/", "/v1/stats"):
        response = await post_form(harness, "/ui/login", {"token": ADMIN, "next": target})
        assert response.headers["Location"] == "/ui/"
