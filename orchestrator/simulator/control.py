"""The ``/_sim`` control plane: the ``Simulator`` methods over HTTP.

It exists for runs where the simulator is another process (the demo, the benchmarks);
in-process tests can call the ``Simulator`` directly.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from orchestrator.simulator.faults import ConfigError
from orchestrator.simulator.hub import SIMULATOR_KEY, Simulator, UnknownProvider
from orchestrator.simulator.truto import TrutoSimulator

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/_sim/stats", _guard(_stats))
    router.add_post("/_sim/reset", _guard(_reset))
    router.add_get("/_sim/faults", _guard(_get_faults))
    router.add_patch("/_sim/faults", _guard(_patch_faults))
    router.add_post("/_sim/requests", _guard(_seed))
    router.add_get("/_sim/requests/{provider}/{id}", _guard(_get_request))
    router.add_post("/_sim/events", _guard(_emit))
    router.add_post("/_sim/callbacks", _guard(_callback))
    router.add_route("*", "/_sim/redirected/{provider}", _guard(_redirected))
    router.add_get("/_sim/calls/{provider}", _guard(_calls))
    router.add_post("/_sim/idle", _guard(_idle))


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _guard(handler: Handler) -> Handler:
    """Bad input becomes a JSON 400/404 instead of aiohttp's HTML 500."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except ConfigError as exc:
            return _error(400, str(exc))
        except UnknownProvider as exc:
            return _error(404, str(exc))

    return guarded


def _sim(request: web.Request) -> Simulator:
    return request.app[SIMULATOR_KEY]


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.read() or b"{}")
    except ValueError:
        raise ConfigError("the body must be JSON") from None
    if not isinstance(body, dict):
        raise ConfigError("the body must be a JSON object")
    return body


def _text(body: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{name} is required and must be a string")
    return value


async def _stats(request: web.Request) -> web.Response:
    return web.json_response(_sim(request).stats())


async def _reset(request: web.Request) -> web.Response:
    _sim(request).reset()
    return web.json_response({"reset": True})


async def _get_faults(request: web.Request) -> web.Response:
    return web.json_response(_sim(request).config())


async def _patch_faults(request: web.Request) -> web.Response:
    return web.json_response(_sim(request).configure(await _body(request)))


async def _seed(request: web.Request) -> web.Response:
    body = await _body(request)
    provider, request_id, state = (_text(body, n) or "" for n in ("provider", "id", "state"))
    return web.json_response(_sim(request).seed_request(provider, request_id, state))


async def _get_request(request: web.Request) -> web.Response:
    info = _sim(request).get_request(request.match_info["provider"], request.match_info["id"])
    if info is None:
        return _error(404, "the simulator has not seen this request")
    return web.json_response(info)


async def _emit(request: web.Request) -> web.Response:
    """``{"provider", "id"?, "event_type"}``; for Truto a ``payload`` object sends that
    payload as is instead of the workflow."""
    body = await _body(request)
    sim = _sim(request)
    provider = _text(body, "provider") or ""
    event_type = _text(body, "event_type") or ""
    payload = body.get("payload")
    target = sim.provider(provider)
    if isinstance(payload, dict) and isinstance(target, TrutoSimulator):
        return web.json_response(target.emit_webhook(event_type, payload))
    request_id = _text(body, "id", required=False)
    return web.json_response(sim.emit(provider, request_id, event_type))


async def _callback(request: web.Request) -> web.Response:
    """``{"provider", "id"?, "event_type", "event_time"?}``: a signed event that changes
    nothing at the provider, dated as asked (see ``Simulator.send_callback``)."""
    body = await _body(request)
    provider = _text(body, "provider") or ""
    event_type = _text(body, "event_type") or ""
    request_id = _text(body, "id", required=False)
    event_time = body.get("event_time")
    if isinstance(event_time, bool) or not isinstance(event_time, str | int | float | None):
        raise ConfigError("event_time must be a string or a number")
    sim = _sim(request)
    return web.json_response(sim.send_callback(provider, request_id, event_type, event_time))


async def _redirected(request: web.Request) -> web.Response:
    """Where the redirect fault sends callers: 200 ``{}`` to any method, the answer a client
    that follows redirects would wrongly take for success."""
    _sim(request).redirect_followed(request.match_info["provider"])
    return web.json_response({})


async def _calls(request: web.Request) -> web.Response:
    provider = _sim(request).provider(request.match_info["provider"])
    return web.json_response(
        {
            "calls": [c.to_dict() for c in provider.calls],
            "limit_windows": [w.to_dict() for w in provider.limit_windows],
        }
    )


async def _idle(request: web.Request) -> web.Response:
    """Wait (``?timeout=`` seconds, default 5) until queued cancels and callbacks are done."""
    try:
        timeout = float(request.query.get("timeout", "5"))
    except ValueError:
        raise ConfigError("timeout must be a number") from None
    try:
        async with asyncio.timeout(timeout):
            await _sim(request).wait_idle()
    except TimeoutError:
        return _error(504, "still busy")
    return web.json_response({"idle": True})
