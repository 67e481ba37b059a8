"""POST /webhooks/{provider}: the service verifies, parses and records; we answer fast."""

from __future__ import annotations

from aiohttp import web

from orchestrator.web import keys

routes = web.RouteTableDef()


@routes.post("/webhooks/{provider}")
async def receive(request: web.Request) -> web.Response:
    body = await request.read()  # bounded by client_max_size: a larger body is a 413
    ack, _ = await request.app[keys.SERVICE].receive_webhook(
        request.match_info["provider"], request.headers, body
    )
    return web.Response(text=ack)
