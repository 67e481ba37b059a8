"""Every error answer is application/problem+json (RFC 9457), built here and only here.

The domain raises errors.*; this table says what each is in HTTP.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from aiohttp import web

from orchestrator import errors

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/problem+json"
#: A database that is restarting or failing over is usually back within seconds; a caller
#: that waits this long before its retry does not add to the load meanwhile.
DATABASE_RETRY_AFTER_S = "2"

#: error type -> (HTTP status, title, type slug)
_PROBLEMS: dict[type[errors.OrchestratorError], tuple[int, str, str]] = {
    errors.NotFound: (404, "Not found", "not-found"),
    errors.Conflict: (409, "Conflict", "conflict"),
    errors.InvalidRequest: (422, "Invalid request", "invalid-request"),
    errors.MalformedRequest: (400, "Bad request", "bad-request"),
    errors.UnsupportedMediaType: (415, "Unsupported media type", "unsupported-media-type"),
    errors.Unauthorized: (401, "Unauthorized", "unauthorized"),
    errors.Forbidden: (403, "Forbidden", "forbidden"),
    errors.TooManyRequests: (429, "Too many requests", "too-many-requests"),
    errors.MisdirectedRequest: (421, "Misdirected request", "misdirected-request"),
    errors.DatabaseUnavailable: (503, "Database unavailable", "database-unavailable"),
    errors.ProviderNotConfigured: (422, "Provider not configured", "provider-not-configured"),
}

_WEBHOOK_STATUS: dict[errors.RejectReason, tuple[int, str]] = {
    errors.RejectReason.NO_ENDPOINT: (404, "No such webhook endpoint"),
    errors.RejectReason.MEDIA_TYPE: (415, "Unsupported webhook content type"),
    errors.RejectReason.MALFORMED: (400, "Malformed webhook"),
    errors.RejectReason.TOO_LARGE: (413, "Webhook too large"),
    errors.RejectReason.SIGNATURE: (401, "Webhook signature invalid"),
    errors.RejectReason.STALE: (401, "Webhook outside the replay window"),
}


def problem(
    status: int,
    title: str,
    detail: str,
    slug: str,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(body(status, title, detail, slug, extra)),
        content_type=CONTENT_TYPE,
        headers=headers,
    )


def body(
    status: int, title: str, detail: str, slug: str, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """`extra` members never replace the problem's own (type, title, status, detail)."""
    members: dict[str, Any] = {
        "type": f"/problems/{slug}",
        "title": title,
        "status": status,
        "detail": detail,
    }
    members.update({k: v for k, v in (extra or {}).items() if k not in members})
    return members


def describe(exc: errors.OrchestratorError) -> dict[str, Any]:
    """The problem an error is, as a JSON object (one item's answer inside a batch)."""
    if isinstance(exc, errors.WebhookRejected):
        status, title = _WEBHOOK_STATUS[exc.reason]
        return body(status, title, exc.detail, "webhook-rejected", {"reason": exc.reason.value})
    for kind in type(exc).__mro__:
        if kind in _PROBLEMS:
            status, title, slug = _PROBLEMS[kind]
            break
    else:
        status, title, slug = 500, "Internal error", "internal"
    return body(status, title, exc.detail, slug, exc.extra)


def from_error(exc: errors.OrchestratorError) -> web.Response:
    described = describe(exc)
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, errors.Unauthorized) else None
    if isinstance(exc, errors.DatabaseUnavailable):
        headers = {"Retry-After": DATABASE_RETRY_AFTER_S}
    if isinstance(exc, errors.TooManyRequests):
        headers = {"Retry-After": str(exc.extra["retry_after_s"])}
    return web.Response(
        status=described["status"],
        body=orjson.dumps(described),
        content_type=CONTENT_TYPE,
        headers=headers,
    )


@web.middleware
async def problems_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except errors.OrchestratorError as exc:
        answer = from_error(exc)
        if answer.status >= 500:
            log.warning("%s %s: %s", request.method, request.path, exc.detail)
        return answer
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
