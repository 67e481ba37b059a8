"""One access-log line per request, JSON like every other line, and HSTS behind TLS.

A middleware rather than aiohttp's AbstractAccessLogger: it runs inside the request id's
logging context (so the line carries `request_id` like every other line of the request),
it sees the matched route's pattern and the token that authenticated, and it works the same
under `orchestrator serve` and the tests' servers. aiohttp's own access log stays off
(`serve` passes access_log=None; logs.configure quiets `aiohttp.access`), so nothing is
printed twice. The line names the route pattern (`/v1/cancellations/{id}`), never the
query, a header or a cookie: no token or session can reach the log.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import time

from aiohttp import web
from aiohttp.typedefs import Handler

from orchestrator.web import keys

log = logging.getLogger("orchestrator.access")

#: The public name of whoever the request authenticated as (a token's name), set by the
#: bearer middleware or the dashboard's guard.
WHO = web.RequestKey("who", str)

HSTS = "max-age=31536000"
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def route_of(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "(unmatched)"


@web.middleware
async def access_log_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        if is_https(request):
            response.headers.setdefault("Strict-Transport-Security", HSTS)
        return response
    except web.HTTPException as exc:
        status = exc.status
        if is_https(request):
            exc.headers.setdefault("Strict-Transport-Security", HSTS)
        raise
    except asyncio.CancelledError:
        status = 499  # the client went away
        raise
    finally:
        duration_ms = round((time.perf_counter() - started) * 1000, 2)
        route = route_of(request)
        log.info(
            "%s %s %d %.2fms by %s",
            request.method,
            route,
            status,
            duration_ms,
            request.get(WHO) or "-",
            extra={
                "method": request.method,
                "route": route,
                "status": status,
                "duration_ms": duration_ms,
                "token": request.get(WHO),
            },
        )


@functools.lru_cache(maxsize=8)
def _networks(proxies: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(p, strict=False) for p in proxies)


def from_trusted_proxy(request: web.Request) -> bool:
    settings = request.config_dict[keys.SETTINGS]
    if not settings.trusted_proxies or not request.remote:
        return False
    try:
        peer = ipaddress.ip_address(request.remote)
    except ValueError:
        return False
    return any(peer in net for net in _networks(settings.trusted_proxies))


def is_https(request: web.Request) -> bool:
    """The client reached us over TLS: ORCH_PUBLIC_URL is https, the connection itself is,
    or a listed proxy (ORCH_TRUSTED_PROXIES) says so in X-Forwarded-Proto."""
    settings = request.config_dict[keys.SETTINGS]
    if settings.behind_tls() or request.secure:
        return True
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return forwarded == "https" and from_trusted_proxy(request)
