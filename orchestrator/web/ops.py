"""Health, readiness and the stats callers poll."""

from __future__ import annotations

import asyncpg
from aiohttp import web

from orchestrator.store import migrations
from orchestrator.store.db import CONNECTION_ERRORS
from orchestrator.web import keys, openapi
from orchestrator.web.json import json_response

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    store = request.app[keys.STORE]
    try:
        async with store.pool.acquire(timeout=2) as conn:
            current = await migrations.current_version(conn)
    except (*CONNECTION_ERRORS, asyncpg.PostgresError) as exc:
        return json_response(
            {"status": "unavailable", "database": f"unreachable: {type(exc).__name__}"},
            status=503,
        )
    latest = migrations.latest_version()
    if current != latest:
        return json_response(
            {"status": "unavailable", "database": "ok", "schema": current, "expected": latest},
            status=503,
        )
    return json_response({"status": "ready", "database": "ok", "schema": current})


@routes.get("/openapi.json")
async def openapi_json(request: web.Request) -> web.Response:
    return json_response(openapi.build())


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    body = request.app[keys.METRICS].render()
    return web.Response(body=body, content_type="text/plain", charset="utf-8")


@routes.get("/v1/stats")
async def stats(request: web.Request) -> web.Response:
    data = await request.app[keys.STORE].stats(request.app[keys.CLOCK].now())
    when = data["last_confirmed_at"]
    data["last_confirmed_at"] = when.isoformat() if when else None
    return json_response(data)
