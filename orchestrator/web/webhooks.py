"""POST /webhooks/{provider}: verify and parse in the adapter, store and settle, answer fast."""

from __future__ import annotations

import logging
import time

from aiohttp import web

from orchestrator import errors
from orchestrator.providers.registry import WEBHOOK_ROUTES
from orchestrator.web import keys

log = logging.getLogger(__name__)

routes = web.RouteTableDef()


@routes.post("/webhooks/{provider}")
async def receive(request: web.Request) -> web.Response:
    provider = WEBHOOK_ROUTES.get(request.match_info["provider"])
    if provider is None:
        raise errors.NotFound(f"no webhook endpoint for {request.match_info['provider']!r}")
    body = await request.read()  # bounded by client_max_size: a larger body is a 413
    accounts = request.app[keys.ACCOUNTS].for_provider(provider.name)
    counter = request.app[keys.METRICS].webhooks
    try:
        event = provider.parse_webhook(
            request.headers,
            body,
            accounts,
            time.time(),
            request.app[keys.SETTINGS].webhook_replay_window_s,
        )
    except errors.WebhookRejected:
        counter.labels(provider.name, "rejected").inc()
        raise
    outcome = await request.app[keys.STORE].record_webhook(event, request.app[keys.CLOCK].now())
    counter.labels(provider.name, outcome.value).inc()
    log.debug(
        "webhook %s %s for %s: %s",
        provider.name,
        event.event_type,
        event.resource_id or "-",
        outcome.value,
    )
    return web.Response(text=provider.webhook_ack)
