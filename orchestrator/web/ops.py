"""Health, readiness, metrics, the API description and the stats callers poll."""

from __future__ import annotations

from aiohttp import web

from orchestrator.web import keys, openapi
from orchestrator.web.json import json_response

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    readiness = await request.app[keys.SERVICE].readiness()
    status = "ready" if readiness.ready else "unavailable"
    return json_response(
        {"status": status, **readiness.details}, status=200 if readiness.ready else 503
    )


@routes.get("/openapi.json")
async def openapi_json(request: web.Request) -> web.Response:
    service = request.app[keys.SERVICE]
    return json_response(openapi.build(service.served_accounts(), service.callbacks))


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    body = request.app[keys.METRICS].render()
    return web.Response(body=body, content_type="text/plain", charset="utf-8")


@routes.get("/v1/stats")
async def stats(request: web.Request) -> web.Response:
    return json_response(await request.app[keys.SERVICE].stats())
