"""Health, readiness, metrics, the API description and the stats callers poll.

/healthz and /readyz's status are open to probes; what names accounts or callback hosts
(/metrics, /readyz's details, this instance's /openapi.json) needs a reader's token when
tokens are configured (web/guards.py).
"""

from __future__ import annotations

from aiohttp import web

from orchestrator.web import keys, openapi
from orchestrator.web.guards import READERS
from orchestrator.web.json import json_response

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    readiness = await request.app[keys.SERVICE].readiness()
    status = "ready" if readiness.ready else "unavailable"
    details = readiness.details if request.app[READERS].allows(request) else {}
    return json_response({"status": status, **details}, status=200 if readiness.ready else 503)


@routes.get("/openapi.json")
async def openapi_json(request: web.Request) -> web.Response:
    """Without a reader's token (where tokens are configured), the description of any
    instance: it names no account and no callback host, and /docs still shows it."""
    if not request.app[READERS].allows(request):
        return json_response(openapi.build())
    service = request.app[keys.SERVICE]
    return json_response(openapi.build(service.served_accounts(), service.callbacks))


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    request.app[READERS].check(request)
    body = request.app[keys.METRICS].render()
    return web.Response(body=body, content_type="text/plain", charset="utf-8")


@routes.get("/v1/stats")
async def stats(request: web.Request) -> web.Response:
    return json_response(await request.app[keys.SERVICE].stats())
