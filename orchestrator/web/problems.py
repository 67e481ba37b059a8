"""Every error answer is application/problem+json (RFC 9457), built here and only here."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from aiohttp import web

from orchestrator import errors

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/problem+json"


def problem(
    status: int,
    title: str,
    detail: str,
    slug: str,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> web.Response:
    body = {"type": f"/problems/{slug}", "title": title, "status": status, "detail": detail}
    body.update(extra)
    return web.Response(
        status=status,
        body=orjson.dumps(body),
        content_type=CONTENT_TYPE,
        headers=headers,
    )


@web.middleware
async def problems_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except errors.OrchestratorError as exc:
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, errors.Unauthorized) else None
        if exc.status >= 500:
            log.warning("%s %s: %s", request.method, request.path, exc.detail)
        return problem(exc.status, exc.title, exc.detail, exc.type_slug, headers, **exc.extra)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        detail = exc.text if exc.text and exc.text != f"{exc.status}: {exc.reason}" else exc.reason
        slug = exc.reason.lower().replace(" ", "-")
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        return problem(exc.status, exc.reason, detail, slug, headers)
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return problem(
            500, "Internal error", "an unexpected error occurred; it is logged", "internal"
        )
