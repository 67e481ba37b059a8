"""Completion callbacks over real HTTP: a receiver on loopback checks every signature with
its own HMAC (the Standard Webhooks spec, written out here, not the package the service
signs with), and the worker is stepped by hand with the harness's clock."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import re
import secrets
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict

from orchestrator.clock import ManualClock
from orchestrator.domain import callbacks
from orchestrator.simulator.app import SimulatorServer
from orchestrator.tokens import callback_secret
from orchestrator.web import keys
from orchestrator.web.app import create_app
from orchestrator.workers.callbacks import CallbackReport, CallbackSender
from tests.integration.conftest import AiohttpClient, Harness, make_settings
from tests.integration.test_trust import callback, key, post_callback, until_terminal
from tests.tokens import entry, token

SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
#: What the receiver verifies with: without tokens, the anonymous caller's derived secret.
ANON = callback_secret(SECRET, "anonymous")


def signature_valid(secret: str, headers: Any, body: bytes) -> bool:
    """Standard Webhooks, by hand: HMAC-SHA256 with the base64-decoded key after `whsec_`,
    over `webhook-id.webhook-timestamp.body`, compared with each `v1,<base64>` offered."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    offered = headers["webhook-signature"].split(" ")
    return any(
        version == "v1" and hmac.compare_digest(sig, expected)
        for version, _, sig in (item.partition(",") for item in offered)
    )


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    valid: bool

    @property
    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = orjson.loads(self.body)
        return data


@dataclass
class Receiver:
    """A service that integrates: answers each POST with the next of `answers` (200 once
    they run out) and keeps what it got."""

    server: TestServer
    answers: list[int] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    elsewhere: list[Received] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str = "/hook") -> str:
        return str(self.server.make_url(path))


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    app = web.Application()
    server = TestServer(app, host="127.0.0.1")
    state = Receiver(server)

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        state.received.append(
            Received(dict(request.headers), body, signature_valid(ANON, request.headers, body))
        )
        state.arrived.set()
        status = state.answers.pop(0) if state.answers else 200
        if 300 <= status < 400:
            raise web.HTTPTemporaryRedirect(state.url("/elsewhere"))
        return web.Response(status=status)

    async def elsewhere(request: web.Request) -> web.Response:
        body = await request.read()
        state.elsewhere.append(Received(dict(request.headers), body, False))
        return web.Response(status=200)

    app.router.add_post("/hook", hook)
    app.router.add_post("/elsewhere", elsewhere)
    await server.start_server()
    try:
        yield state
    finally:
        await server.close()


def listing(receiver: Receiver, *more: str) -> str:
    """ORCH_CALLBACK_HOSTS naming the loopback receiver (an internal host the operator lists)."""
    return ", ".join((f"127.0.0.1:{receiver.server.port}", *more))


@pytest.fixture
def settings_overrides(receiver: Receiver) -> dict[str, Any]:
    return {
        "callback_secret": SECRET,
        "callback_hosts": listing(receiver, "a.example", "b.example"),
        "callback_retry_for_s": 3600,
    }


def sender(harness: Harness) -> CallbackSender:
    return harness.app[keys.CALLBACKS]


async def deliver(harness: Harness) -> CallbackReport:
    return await sender(harness).run_once()


async def abandon(harness: Harness, cancellation_id: str) -> dict[str, Any]:
    response = await harness.client.post(
        f"/v1/cancellations/{cancellation_id}/abandon", json={"reason": "not needed"}
    )
    data: dict[str, Any] = await response.json()
    assert response.status == 200, data
    return data


def callback_rows(events: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [
        (e["from_status"], e["to_status"], e["cause"])
        for e in events
        if e["cause"].startswith("callback_")
    ]


async def test_a_confirmed_cancellation_is_posted_once_signed(
    harness: Harness, receiver: Receiver
) -> None:
    created = await harness.enqueue("sr-cb-happy", callback_url=receiver.url())
    assert created["callback_url"] == receiver.url()
    assert await deliver(harness) == CallbackReport()  # nothing has ended yet

    await harness.dispatch()
    assert (await harness.get(created["id"]))["status"] == "confirmed"
    assert await deliver(harness) == CallbackReport(delivered=1)
    assert await deliver(harness) == CallbackReport()

    (got,) = receiver.received
    assert got.valid
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["webhook-id"].startswith("msg_")
    assert int(got.headers["webhook-timestamp"]) == int(harness.clock.now().timestamp())
    assert got.json == await harness.get(created["id"])  # the body GET answers

    history = await harness.events(created["id"])
    assert [e["id"] for e in history] == sorted(e["id"] for e in history)
    assert [e["cause"] for e in history][-2:] == ["status_check", "callback_delivered"]
    last = history[-1]
    assert (last["from_status"], last["to_status"]) == ("confirmed", "confirmed")
    assert last["evidence"] == {
        "attempt": 1,
        "http_status": 200,
        "webhook_id": got.headers["webhook-id"],
    }


async def test_a_signature_made_with_another_secret_does_not_verify(
    harness: Harness, receiver: Receiver
) -> None:
    """The receiver's check is not vacuous."""
    created = await harness.enqueue("sr-cb-check", callback_url=receiver.url())
    await abandon(harness, created["id"])
    await deliver(harness)
    (got,) = receiver.received
    other = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    assert got.valid and not signature_valid(other, got.headers, got.body)
    assert not signature_valid(ANON, got.headers, got.body + b" ")
    assert not signature_valid(SECRET, got.headers, got.body)  # never the base secret


async def test_every_way_to_end_records_a_delivery_and_only_with_a_url(
    harness: Harness, receiver: Receiver, db: asyncpg.Connection
) -> None:
    harness.sim.seed_request("dropbox_sign", "sr-cb-signed", "completed")
    failed = await harness.enqueue("sr-cb-signed", callback_url=receiver.url())
    abandoned = await harness.enqueue("sr-cb-abandon", callback_url=receiver.url())
    silent = await harness.enqueue("sr-cb-silent")
    await abandon(harness, abandoned["id"])
    await harness.dispatch()  # sr-cb-signed fails (the provider answered), sr-cb-silent ends
    assert (await harness.get(failed["id"]))["status"] == "failed"
    assert (await harness.get(silent["id"]))["status"] == "confirmed"

    rows = await db.fetch("SELECT cancellation_id::text AS id, state FROM callback_deliveries")
    assert {(r["id"], r["state"]) for r in rows} == {
        (failed["id"], "pending"),
        (abandoned["id"], "pending"),
    }
    assert await deliver(harness) == CallbackReport(delivered=2)
    bodies = {r.json["id"]: r.json for r in receiver.received}
    assert bodies[failed["id"]]["last_error"]["code"] == "completed"
    assert bodies[abandoned["id"]]["last_error"]["code"] == "abandoned"


async def test_a_failed_attempt_is_retried_with_the_same_webhook_id(
    harness: Harness, receiver: Receiver
) -> None:
    receiver.answers = [500, 200]
    created = await harness.enqueue("sr-cb-retry", callback_url=receiver.url())
    await abandon(harness, created["id"])

    assert await deliver(harness) == CallbackReport(retrying=1)
    assert await deliver(harness) == CallbackReport()  # not due yet
    (failed,) = callback_rows(await harness.events(created["id"]))
    assert failed == ("failed", "failed", "callback_failed")
    evidence = (await harness.events(created["id"]))[-1]["evidence"]
    assert evidence["http_status"] == 500
    assert 0.5 <= evidence["retry_in_s"] <= 1  # backoff_base_s=1 in the harness, with jitter

    harness.advance(1)  # the backoff's ceiling (retry_in_s is rounded to the millisecond)
    assert await deliver(harness) == CallbackReport(delivered=1)
    first, second = receiver.received
    assert first.valid and second.valid
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert first.body == second.body
    assert callback_rows(await harness.events(created["id"])) == [
        ("failed", "failed", "callback_failed"),
        ("failed", "failed", "callback_delivered"),
    ]
    metrics = await (await harness.client.get("/metrics")).text()
    assert 'orchestrator_callback_attempts_total{cause="callback_failed"} 1.0' in metrics
    assert 'orchestrator_callback_attempts_total{cause="callback_delivered"} 1.0' in metrics


async def test_a_redirect_is_not_followed(harness: Harness, receiver: Receiver) -> None:
    receiver.answers = [307]
    created = await harness.enqueue("sr-cb-redirect", callback_url=receiver.url())
    await abandon(harness, created["id"])

    assert await deliver(harness) == CallbackReport(retrying=1)
    assert len(receiver.received) == 1
    assert receiver.elsewhere == []
    evidence = (await harness.events(created["id"]))[-1]["evidence"]
    assert evidence["http_status"] == 307
    assert evidence["error"] == "redirect"
    assert "redirect not followed" in evidence["reason"]


async def test_an_unreachable_receiver_is_retried(harness: Harness, receiver: Receiver) -> None:
    url = receiver.url()
    await receiver.server.close()
    created = await harness.enqueue("sr-cb-closed", callback_url=url)
    await abandon(harness, created["id"])
    assert await deliver(harness) == CallbackReport(retrying=1)
    evidence = (await harness.events(created["id"]))[-1]["evidence"]
    assert "http_status" not in evidence
    assert evidence["error"] == "connect_failed"  # the class, never the text (it names ports)
    assert str(receiver.server.port) not in orjson.dumps(evidence).decode()


async def test_the_delivery_gives_up_after_the_window(
    harness: Harness, receiver: Receiver, db: asyncpg.Connection
) -> None:
    receiver.answers = [503] * 10
    created = await harness.enqueue("sr-cb-giveup", callback_url=receiver.url())
    await abandon(harness, created["id"])

    assert await deliver(harness) == CallbackReport(retrying=1)
    harness.advance(1800)
    assert await deliver(harness) == CallbackReport(retrying=1)
    harness.advance(1800)  # the window (an hour here) has passed: one last try, then none
    assert await deliver(harness) == CallbackReport(gave_up=1)
    harness.advance(86_400)
    assert await deliver(harness) == CallbackReport()
    assert len(receiver.received) == 3

    causes = [c for _, _, c in callback_rows(await harness.events(created["id"]))]
    assert causes == ["callback_failed", "callback_failed", "callback_gave_up"]
    last = (await harness.events(created["id"]))[-1]["evidence"]
    assert last["gave_up_after_s"] == 3600
    assert await db.fetchval("SELECT state FROM callback_deliveries") == "gave_up"


async def test_the_last_retry_is_at_the_end_of_the_window(
    harness: Harness, receiver: Receiver
) -> None:
    """A backoff longer than what is left of the window is cut to its end."""
    receiver.answers = [500, 500]
    created = await harness.enqueue("sr-cb-edge", callback_url=receiver.url())
    await abandon(harness, created["id"])
    harness.advance(3599.5)
    assert await deliver(harness) == CallbackReport(retrying=1)
    assert (await harness.events(created["id"]))[-1]["evidence"]["retry_in_s"] == 0.5
    harness.advance(0.5)
    assert await deliver(harness) == CallbackReport(gave_up=1)


# --- what an enqueue may ask for ---------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://127.0.0.1/hook", "http:// or https://"),
        ("http:///hook", "must name a host"),
        ("https://user:pw@127.0.0.1/hook", "credentials"),
        ("https://127.0.0.1:port/hook", "not a valid URL"),
        ("https://127.0.0.1/a hook", "spaces"),
        ("/hook", "http:// or https://"),
    ],
)
async def test_a_bad_callback_url_is_a_422_naming_it(
    harness: Harness, url: str, message: str
) -> None:
    problem = await harness.enqueue("sr-cb-bad", expect=422, callback_url=url)
    (error,) = problem["errors"]
    assert error["field"] == "callback_url"
    assert message in error["message"]


HOSTS = {"callback_secret": SECRET, "callback_hosts": "hooks.example, 127.0.0.1:9"}


@pytest.mark.parametrize("settings_overrides", [HOSTS])
async def test_the_callback_hosts_restrict_the_url(harness: Harness) -> None:
    problem = await harness.enqueue(
        "sr-cb-host", expect=422, callback_url="https://evil.example/hook"
    )
    assert problem["errors"] == [
        {
            "field": "callback_url",
            "message": "host 'evil.example' on port 443 is not an allowed callback host",
        }
    ]
    await harness.enqueue("sr-cb-host", callback_url="https://HOOKS.example./done")
    await harness.enqueue("sr-cb-host-2", callback_url="http://127.0.0.1:9/hook")
    problem = await harness.enqueue(
        "sr-cb-host-3", expect=422, callback_url="http://127.0.0.1:5432/x"
    )
    assert "on port 5432 is not an allowed callback host" in problem["errors"][0]["message"]


@pytest.mark.parametrize("settings_overrides", [{}])
async def test_without_a_secret_a_callback_url_is_refused(harness: Harness) -> None:
    problem = await harness.enqueue(
        "sr-cb-nosecret", expect=422, callback_url="https://hooks.example/x"
    )
    assert problem["errors"][0]["field"] == "callback_url"
    assert "ORCH_CALLBACK_SECRET" in problem["errors"][0]["message"]
    await harness.enqueue("sr-cb-nosecret")  # without one, enqueues work as before
    assert keys.CALLBACKS not in harness.app


async def test_the_callback_url_is_part_of_the_idempotency_key_hash(harness: Harness) -> None:
    key = {"Idempotency-Key": "cb-key-1"}
    first = await harness.enqueue("sr-cb-idem", headers=key, callback_url="https://a.example/x")
    again = await harness.enqueue(
        "sr-cb-idem", expect=200, headers=key, callback_url="https://a.example/x"
    )
    assert again["id"] == first["id"]
    await harness.enqueue("sr-cb-idem", expect=409, headers=key, callback_url="https://b.example")
    await harness.enqueue("sr-cb-idem", expect=409, headers=key)


# --- a restart between the end and the delivery -------------------------------------------


async def test_a_restart_between_the_end_and_the_delivery_still_delivers(
    aiohttp_client: AiohttpClient,
    sim_server: SimulatorServer,
    dsn: str,
    receiver: Receiver,
) -> None:
    clock = ManualClock()
    settings = make_settings(
        sim_server,
        dsn,
        callback_secret=SECRET,
        callback_hosts=listing(receiver),
        callback_poll_s=0.05,
    )
    crashes: list[BaseException] = []

    # The first instance ends the cancellation and stops before any worker could call back.
    first = await aiohttp_client(create_app(settings, dsn, clock=clock, run_workers=False))
    response = await first.post(
        "/v1/cancellations",
        json={
            "provider": "dropbox_sign",
            "resource_id": "sr-cb-restart",
            "callback_url": receiver.url(),
        },
    )
    ident = (await response.json())["id"]
    response = await first.post(f"/v1/cancellations/{ident}/abandon", json={"reason": "x"})
    assert response.status == 200
    await first.close()
    assert receiver.received == []

    # A new instance, workers running as in production, delivers it.
    on_crash: Callable[[BaseException], None] = crashes.append
    second = await aiohttp_client(
        create_app(settings, dsn, clock=clock, run_workers=True, on_worker_crash=on_crash)
    )
    async with asyncio.timeout(10):
        await receiver.arrived.wait()
    (got,) = receiver.received
    assert got.valid and got.json["id"] == ident and got.json["status"] == "failed"
    async with asyncio.timeout(10):
        while True:
            events = (await (await second.get(f"/v1/cancellations/{ident}/events")).json())[
                "events"
            ]
            if events[-1]["cause"] == "callback_delivered":
                break
            await asyncio.sleep(0.02)
    await second.close()
    assert crashes == []


# --- the README's example ------------------------------------------------------------------


def readme_verify(repo_root: Path) -> Callable[..., bool]:
    text = (repo_root / "README.md").read_text()
    start = text.index("### Completion callbacks")
    part = text[start : text.find("\n## ", start)]
    (code,) = re.findall(r"```python\n(.*?)```", part, re.DOTALL)
    namespace: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), namespace)  # the README's own example
    verify: Callable[..., bool] = namespace["verify"]
    return verify


async def test_the_readmes_verification_example_accepts_a_real_callback(
    harness: Harness, receiver: Receiver, repo_root: Path
) -> None:
    verify = readme_verify(repo_root)
    created = await harness.enqueue("sr-cb-readme", callback_url=receiver.url())
    await abandon(harness, created["id"])
    await deliver(harness)
    (got,) = receiver.received
    headers = CIMultiDict(got.headers)
    assert verify(ANON, headers, got.body)
    assert not verify(ANON, headers, got.body.replace(b"failed", b"confirmed"))
    other = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    assert not verify(other, headers, got.body)
    stale = CIMultiDict(headers)
    stale["webhook-timestamp"] = str(int(headers["webhook-timestamp"]) - 301)
    assert not verify(ANON, stale, got.body)


# --- several workers ------------------------------------------------------------------------


async def test_two_workers_share_the_outbox_without_sending_twice(
    harness: Harness, receiver: Receiver
) -> None:
    ids = []
    for n in range(6):
        created = await harness.enqueue(f"sr-cb-pair-{n}", callback_url=receiver.url())
        await abandon(harness, created["id"])
        ids.append(created["id"])
    first = sender(harness)
    second = CallbackSender(
        first.outbox, first.http, SECRET, first.render, first.policy, harness.clock, batch=4
    )
    reports = await asyncio.gather(first.run_once(), second.run_once(), first.run_once())
    assert sum(r.delivered for r in reports) == 6
    assert sorted(r.json["id"] for r in receiver.received) == sorted(ids)


async def test_a_worker_that_dies_mid_attempt_is_replaced_after_its_lease(
    harness: Harness, receiver: Receiver
) -> None:
    created = await harness.enqueue("sr-cb-lease", callback_url=receiver.url())
    await abandon(harness, created["id"])
    live = sender(harness)
    (stalled,) = await live.outbox.claim(harness.clock.now(), 10, "dead-worker", live.lease_s)
    assert await live.run_once() == CallbackReport()  # leased: nobody else takes it

    harness.advance(live.lease_s)
    assert await live.run_once() == CallbackReport(delivered=1)
    (got,) = receiver.received
    assert got.headers["webhook-id"] == stalled.webhook_id

    # The stalled worker's late answer changes nothing: the later claim fenced it off.
    late = callbacks.after_attempt(
        callbacks.Answer(500), stalled.attempt, stalled.ended_at, harness.clock.now(), live.policy
    )
    assert not await live.outbox.finish(stalled, late, harness.clock.now())
    assert [c for _, _, c in callback_rows(await harness.events(created["id"]))] == [
        "callback_delivered"
    ]


# --- retention ------------------------------------------------------------------------------


async def test_retention_keeps_a_cancellation_until_its_callback_is_done(
    harness: Harness, receiver: Receiver, db: asyncpg.Connection
) -> None:
    """Past retention, a cancellation whose callback is still pending survives the sweep;
    it goes once the callback is delivered or given up, not before."""
    harness.app[keys.SWEEPER].retention_s = 600  # shorter than the retry window (an hour)
    delivered = await harness.enqueue("sr-cb-keep-1", callback_url=receiver.url("/hook"))
    refused = await harness.enqueue("sr-cb-keep-2", callback_url=receiver.url("/missing"))
    for created in (delivered, refused):
        await abandon(harness, created["id"])
    harness.advance(601)

    assert (await harness.sweep()).deleted == 0  # both callbacks pending: both kept
    assert await deliver(harness) == CallbackReport(delivered=1, retrying=1)  # /missing: 404
    assert (await harness.sweep()).deleted == 1
    assert (await harness.client.get(f"/v1/cancellations/{delivered['id']}")).status == 404
    assert (await harness.get(refused["id"]))["status"] == "failed"

    harness.advance(3600)  # the window has passed: one last try fails and gives up
    assert await deliver(harness) == CallbackReport(gave_up=1)
    assert (await harness.sweep()).deleted == 1
    assert (await harness.client.get(f"/v1/cancellations/{refused['id']}")).status == 404
    assert await db.fetchval("SELECT count(*) FROM callback_deliveries") == 0


ROWS_OF = """
SELECT (SELECT count(*) FROM cancellation_events WHERE cancellation_id = ANY($1)) AS events,
       (SELECT count(*) FROM callback_deliveries WHERE cancellation_id = ANY($1)) AS deliveries,
       (SELECT count(*) FROM callback_attempts WHERE cancellation_id = ANY($1)) AS attempts,
       (SELECT count(*) FROM webhook_inbox WHERE cancellation_id = ANY($1)) AS inbox
"""
ORPHANS = """
SELECT (SELECT count(*) FROM cancellation_events e
        WHERE NOT EXISTS (SELECT 1 FROM cancellations c WHERE c.id = e.cancellation_id))
       + (SELECT count(*) FROM callback_deliveries d
          WHERE NOT EXISTS (SELECT 1 FROM cancellations c WHERE c.id = d.cancellation_id))
       + (SELECT count(*) FROM callback_attempts a
          WHERE NOT EXISTS (SELECT 1 FROM cancellations c WHERE c.id = a.cancellation_id)
             OR NOT EXISTS (SELECT 1 FROM callback_deliveries d WHERE d.id = a.delivery_id))
       + (SELECT count(*) FROM webhook_inbox w
          WHERE w.cancellation_id IS NOT NULL
            AND NOT EXISTS (SELECT 1 FROM cancellations c WHERE c.id = w.cancellation_id))
"""


async def test_a_retention_round_leaves_no_row_of_a_deleted_cancellation(
    harness: Harness, receiver: Receiver, db: asyncpg.Connection
) -> None:
    """No foreign key cascades since 0010: retention deletes a cancellation's history, its
    callback delivery and attempts and the inbox events it used itself, in one statement.
    After a round nothing is left of what it deleted, and what it kept keeps every row."""
    harness.app[keys.SWEEPER].retention_s = 600
    old = [
        await harness.enqueue(f"sr-cb-orphan-{i}", callback_url=receiver.url()) for i in range(3)
    ]
    # A signed callback for the first, before its attempt: an inbox event used by it.
    now = harness.clock.now().timestamp()
    form = callback("sr-cb-orphan-0", key(harness), now, "signature_request_canceled")
    assert await post_callback(harness, form) == 200
    await harness.dispatch()
    assert all([(await until_terminal(harness, c["id"]))["status"] == "confirmed" for c in old])
    assert await deliver(harness) == CallbackReport(delivered=3)
    harness.advance(601)
    kept = await harness.enqueue("sr-cb-orphan-kept", callback_url=receiver.url())
    await abandon(harness, kept["id"])
    assert await deliver(harness) == CallbackReport(delivered=1)

    old_ids = [uuid.UUID(c["id"]) for c in old]
    kept_ids = [uuid.UUID(kept["id"])]
    before = dict(await db.fetchrow(ROWS_OF, old_ids))
    assert all(before.values()), before  # every table has rows to delete: not vacuous
    kept_before = dict(await db.fetchrow(ROWS_OF, kept_ids))

    assert (await harness.sweep()).deleted == 3
    assert dict(await db.fetchrow(ROWS_OF, old_ids)) == dict.fromkeys(before, 0)
    assert await db.fetchval(ORPHANS) == 0
    assert dict(await db.fetchrow(ROWS_OF, kept_ids)) == kept_before
    assert (await harness.get(kept["id"]))["status"] == "failed"


# --- one secret per receiver (issue 16, item 6) -----------------------------------------------

RECEIVER_TOKENS = f"{entry('svc-a')},{entry('svc-b')}"


def printed_secret(name: str) -> str:
    """What `orchestrator callback-secret --token NAME` prints."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCH_", "DATABASE_URL"))}
    env.update(
        ORCH_CALLBACK_SECRET=SECRET,
        ORCH_CALLBACK_HOSTS="hooks.example",
        ORCH_API_TOKENS=RECEIVER_TOKENS,
    )
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "callback-secret", "--token", name],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


async def test_a_callback_signed_for_one_receiver_fails_at_another(
    aiohttp_client: AiohttpClient,
    sim_server: SimulatorServer,
    dsn: str,
    receiver: Receiver,
    repo_root: Path,
) -> None:
    """Receiver A's delivery does not verify with B's secret (a replay of it to B's endpoint
    is refused), and the secret `orchestrator callback-secret --token svc-a` prints verifies
    it, with the README's own example."""
    settings = make_settings(
        sim_server,
        dsn,
        callback_secret=SECRET,
        callback_hosts=listing(receiver),
        callback_retry_for_s=3600,
        api_tokens=RECEIVER_TOKENS,
    )
    app = create_app(settings, dsn, clock=ManualClock(), run_workers=False)
    client = await aiohttp_client(app)
    as_a = {"Authorization": f"Bearer {token('svc-a')}"}
    body = {"provider": "dropbox_sign", "resource_id": "sr-cb-a", "callback_url": receiver.url()}
    response = await client.post("/v1/cancellations", json=body, headers=as_a)
    assert response.status == 202, await response.text()
    created = await response.json()
    response = await client.post(
        f"/v1/cancellations/{created['id']}/abandon", json={"reason": "x"}, headers=as_a
    )
    assert response.status == 200
    assert await app[keys.CALLBACKS].run_once() == CallbackReport(delivered=1)
    (got,) = receiver.received
    headers = CIMultiDict(got.headers)

    printed = {name: printed_secret(name) for name in ("svc-a", "svc-b")}
    for value in printed.values():
        assert value.startswith("whsec_") and value != SECRET
    verify = readme_verify(repo_root)
    assert verify(printed["svc-a"], headers, got.body)
    assert not verify(printed["svc-b"], headers, got.body)
    assert not verify(SECRET, headers, got.body)
    assert not verify(ANON, headers, got.body)
