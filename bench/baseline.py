"""The yardstick: the leanest honest version of the same end-to-end flow, on the same stack.

aiohttp + asyncpg, one table, one INSERT per enqueue, claims of due rows in batches with
FOR UPDATE SKIP LOCKED, one UPDATE per claimed batch for the provider's answers, one
UPDATE per callback (verified and parsed like the real thing). No history, no retries, no
fencing, no idempotency keys, no inbox, no validation beyond the two fields it needs.

With --naive it is issue 18's "naive hand-written aiohttp + asyncpg service doing the same
work (one table, three statements per cancel)": the same, but one UPDATE per provider answer
instead of one per claimed batch.

It exists only so the benchmark can say how far the product is from what the stack allows;
the product never imports it. Run by bench/run.py as its own process:

    python bench/baseline.py --dsn DSN --port P --provider-url URL --api-key KEY
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import functools
import hashlib
import hmac
import urllib.parse
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import orjson
from aiohttp import web

SCHEMA = """
CREATE TABLE IF NOT EXISTS baseline_cancellations (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    provider     text        NOT NULL,
    resource_id  text        NOT NULL,
    status       text        NOT NULL DEFAULT 'queued',
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    confirmed_at timestamptz
);
CREATE INDEX IF NOT EXISTS baseline_due ON baseline_cancellations (created_at)
    WHERE status = 'queued';
CREATE INDEX IF NOT EXISTS baseline_resource ON baseline_cancellations (resource_id);
"""

INSERT = """
INSERT INTO baseline_cancellations (provider, resource_id) VALUES ($1, $2)
RETURNING id, status, created_at
"""

CLAIM = """
UPDATE baseline_cancellations SET status = 'sending'
WHERE id IN (
    SELECT id FROM baseline_cancellations WHERE status = 'queued'
    ORDER BY created_at LIMIT $1 FOR UPDATE SKIP LOCKED
)
RETURNING id, resource_id
"""

# A callback may have confirmed a row before its cancel call returned: only 'sending' moves.
ANSWERED = """
UPDATE baseline_cancellations c SET status = a.status
FROM unnest($1::uuid[], $2::text[]) AS a (id, status)
WHERE c.id = a.id AND c.status = 'sending'
"""

# --naive: one UPDATE per answer instead of one per claimed batch.
ANSWERED_ONE = """
UPDATE baseline_cancellations SET status = $2 WHERE id = $1 AND status = 'sending'
"""

CONFIRM = """
UPDATE baseline_cancellations SET status = 'confirmed', confirmed_at = clock_timestamp()
WHERE provider = 'dropbox_sign' AND resource_id = $1
  AND status IN ('queued', 'sending', 'awaiting_confirmation')
"""

ACK = "Hello API Event Received"

POOL = web.AppKey("pool", asyncpg.Pool)
HTTP = web.AppKey("http", aiohttp.ClientSession)
WAKE = web.AppKey("wake", asyncio.Event)
ARGS = web.AppKey("args", argparse.Namespace)


async def enqueue(request: web.Request) -> web.Response:
    try:
        body = orjson.loads(await request.read())
        provider, resource_id = body["provider"], body["resource_id"]
        if not (isinstance(provider, str) and isinstance(resource_id, str)):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        return web.json_response({"title": "provider and resource_id are required"}, status=422)
    row = await request.app[POOL].fetchrow(INSERT, provider, resource_id)
    assert row is not None
    request.app[WAKE].set()
    out = {"id": str(row["id"]), "status": row["status"], "created_at": row["created_at"]}
    return web.Response(body=orjson.dumps(out), status=202, content_type="application/json")


async def callback(request: web.Request) -> web.Response:
    form = await request.post()
    raw = form.get("json")
    if not isinstance(raw, str):
        return web.Response(status=400, text="no json field")
    payload = orjson.loads(raw)
    event = payload.get("event") or {}
    event_time, event_type = str(event.get("event_time", "")), str(event.get("event_type", ""))
    key = request.app[ARGS].api_key.encode()
    expected = hmac.new(key, (event_time + event_type).encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, str(event.get("event_hash", ""))):
        return web.Response(status=401, text="bad event_hash")
    resource_id = (payload.get("signature_request") or {}).get("signature_request_id")
    if event_type == "signature_request_canceled" and isinstance(resource_id, str):
        await request.app[POOL].execute(CONFIRM, resource_id)
    return web.Response(text=ACK)


async def ready(request: web.Request) -> web.Response:
    await request.app[POOL].fetchval("SELECT 1")
    return web.Response(text="ready")


async def send_batch(app: web.Application, rows: list[asyncpg.Record]) -> None:
    args, http = app[ARGS], app[HTTP]
    auth = "Basic " + base64.b64encode(f"{args.api_key}:".encode()).decode()

    async def cancel(resource_id: str) -> str:
        url = f"{args.provider_url}/signature_request/cancel/{urllib.parse.quote(resource_id)}"
        try:
            async with http.post(url, headers={"Authorization": auth}) as response:
                await response.read()
                if response.status == 200:
                    return "awaiting_confirmation"
                return "confirmed" if response.status == 410 else "failed"
        except (aiohttp.ClientError, TimeoutError):
            return "failed"

    if args.naive:

        async def cancel_and_write(row: asyncpg.Record) -> None:
            await app[POOL].execute(ANSWERED_ONE, row["id"], await cancel(row["resource_id"]))

        await asyncio.gather(*(cancel_and_write(r) for r in rows))
        return
    statuses = await asyncio.gather(*(cancel(r["resource_id"]) for r in rows))
    await app[POOL].execute(ANSWERED, [r["id"] for r in rows], list(statuses))


async def dispatch(app: web.Application) -> None:
    args, pool, wake = app[ARGS], app[POOL], app[WAKE]
    inflight = 0
    tasks: set[asyncio.Task[None]] = set()

    def done(task: asyncio.Task[None], *, n: int) -> None:
        nonlocal inflight
        inflight -= n
        tasks.discard(task)
        wake.set()

    while True:
        free = min(args.concurrency - inflight, args.batch)
        rows = await pool.fetch(CLAIM, free) if free > 0 else []
        if rows:
            inflight += len(rows)
            task = asyncio.create_task(send_batch(app, rows))
            tasks.add(task)
            task.add_done_callback(functools.partial(done, n=len(rows)))
        if rows and len(rows) == free:
            continue
        wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), 1.0)


def make_app(args: argparse.Namespace) -> web.Application:
    app = web.Application()
    app[ARGS] = args
    app[WAKE] = asyncio.Event()

    async def resources(app: web.Application) -> AsyncIterator[None]:
        async with asyncpg.create_pool(args.dsn, min_size=1, max_size=args.pool) as pool:
            await pool.execute(SCHEMA)
            app[POOL] = pool
            timeout = aiohttp.ClientTimeout(total=args.provider_timeout)
            connector = aiohttp.TCPConnector(limit=args.concurrency * 2)
            async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
                app[HTTP] = http
                worker = asyncio.create_task(dispatch(app), name="dispatcher")
                yield
                worker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await worker

    app.cleanup_ctx.append(resources)
    app.router.add_post("/v1/cancellations", enqueue)
    app.router.add_post("/webhooks/dropbox_sign", callback)
    app.router.add_get("/readyz", ready)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--provider-url", required=True, help="Dropbox Sign API base (…/v3)")
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--provider-timeout", type=float, default=10.0)
    parser.add_argument("--pool", type=int, default=8)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--naive",
        action="store_true",
        help="issue 18's naive service: one UPDATE per provider answer, so three statements"
        " per cancel (INSERT, UPDATE on the answer, UPDATE on the callback) plus the claims",
    )
    args = parser.parse_args()
    # run_app turns SIGTERM into a graceful stop.
    web.run_app(
        make_app(args),
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
        shutdown_timeout=1,
    )


if __name__ == "__main__":
    main()
