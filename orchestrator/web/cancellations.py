"""/v1/cancellations: HTTP in, a use case of the service, HTTP out. Nothing else."""

from __future__ import annotations

import uuid
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from orchestrator import errors
from orchestrator.service import (
    ActionRequest,
    BatchRequest,
    EnqueueRequest,
    EventsQuery,
    ItemResult,
    ListQuery,
    WaitQuery,
    etag,
    is_current,
)
from orchestrator.web import keys, problems, schemas
from orchestrator.web.auth import caller, enqueue_wait, take_enqueues
from orchestrator.web.json import json_response

routes = web.RouteTableDef()

JSON_TYPES = ("application/json",)

Body = TypeVar("Body", bound=BaseModel)


async def read_json(request: web.Request, model: type[Body], what: str) -> Body:
    if request.content_type not in JSON_TYPES:
        raise errors.UnsupportedMediaType(
            f"send the {what} as application/json, not {request.content_type!r}"
        )
    body = await request.read()
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        kinds = {e["type"] for e in exc.errors()}
        if "json_invalid" in kinds:
            raise errors.MalformedRequest("the body is not valid JSON") from None
        if "model_type" in kinds:
            raise errors.InvalidRequest(
                "the body must be a JSON object", [{"field": "body", "message": "not an object"}]
            ) from None
        raise errors.InvalidRequest.from_validation(exc, what) from None


def cancellation_id(request: web.Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.match_info["id"])
    except ValueError:
        raise errors.NotFound(f"no cancellation {request.match_info['id']!r}") from None


@routes.post("/v1/cancellations", name="enqueue")
async def enqueue(request: web.Request) -> web.Response:
    body = await read_json(request, EnqueueRequest, "cancellation")
    take_enqueues(request, 1)
    result = await request.app[keys.SERVICE].enqueue(
        body, request.headers.get("Idempotency-Key"), caller(request)
    )
    row = result.cancellation
    location = str(request.app.router["cancellation"].url_for(id=str(row.id)))
    return json_response(
        schemas.cancellation_out(row),
        status=202 if result.created else 200,
        headers={"Location": location, "ETag": etag(row)},
    )


@routes.post("/v1/cancellations/batch", name="batch")
async def enqueue_batch(request: web.Request) -> web.Response:
    body = await read_json(request, BatchRequest, "batch")
    allowed = take_enqueues(request, len(body.items))
    refused = errors.TooManyRequests(
        "beyond this token's enqueue rate: send this item again later",
        retry_after_s=enqueue_wait(request, len(body.items) - allowed),
    )
    results = await request.app[keys.SERVICE].enqueue_batch(
        body.items, caller(request), allowed=allowed, refused=refused
    )
    return json_response({"results": [batch_entry(r) for r in results]}, status=207)


def batch_entry(result: ItemResult) -> dict[str, Any]:
    """One item's answer: its own status, the cancellation, and the problem if refused."""
    entry: dict[str, Any] = {"status": 202 if result.created else 200}
    if result.error is not None:
        problem = problems.describe(result.error)
        entry = {"status": problem["status"], "problem": problem}
    if result.cancellation is not None:
        entry["cancellation"] = schemas.cancellation_out(result.cancellation)
    return entry


def if_none_match(request: web.Request) -> frozenset[str]:
    """The entity tags of If-None-Match (compared weakly, as RFC 9110 says for it)."""
    header = request.headers.get("If-None-Match", "")
    return frozenset(tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip())


# Not /v1/cancellations/batch: that path only takes POST (its Allow header says so).
@routes.get("/v1/cancellations/{id:(?!batch$)[^/]+}", name="cancellation")
async def get_one(request: web.Request) -> web.Response:
    ident = cancellation_id(request)
    try:
        query = WaitQuery.model_validate(dict(request.query))
    except ValidationError as exc:
        raise errors.InvalidRequest.from_validation(exc, "query") from None
    seen = if_none_match(request)
    row = await request.app[keys.SERVICE].wait_for_change(
        ident, seen, query.wait, until_terminal=query.until == "terminal"
    )
    headers = {"ETag": etag(row)}
    if is_current(row, seen):
        return web.Response(status=304, headers=headers)
    return json_response(schemas.cancellation_out(row), headers=headers)


@routes.get("/v1/cancellations/{id}/events", name="events")
async def events(request: web.Request) -> web.Response:
    ident = cancellation_id(request)
    try:
        query = EventsQuery.model_validate(dict(request.query))
    except ValidationError as exc:
        raise errors.InvalidRequest.from_validation(exc, "query") from None
    page = await request.app[keys.SERVICE].events(ident, query)
    return json_response(
        {
            "cancellation_id": str(ident),
            "events": [schemas.event_out(e) for e in page.items],
            "next": page.next,
        }
    )


@routes.get("/v1/cancellations", name="list")
async def list_all(request: web.Request) -> web.Response:
    try:
        query = ListQuery.model_validate(dict(request.query))
    except ValidationError as exc:
        raise errors.InvalidRequest.from_validation(exc, "query") from None
    page = await request.app[keys.SERVICE].list_cancellations(query)
    return json_response(
        {"items": [schemas.cancellation_out(r) for r in page.items], "next": page.next}
    )


@routes.post("/v1/cancellations/{id}/retry", name="retry")
async def retry(request: web.Request) -> web.Response:
    ident = cancellation_id(request)
    body = await read_json(request, ActionRequest, "action")
    row = await request.app[keys.SERVICE].retry(ident, body.reason, caller(request))
    return json_response(schemas.cancellation_out(row))


@routes.post("/v1/cancellations/{id}/abandon", name="abandon")
async def abandon(request: web.Request) -> web.Response:
    ident = cancellation_id(request)
    body = await read_json(request, ActionRequest, "action")
    row = await request.app[keys.SERVICE].abandon(ident, body.reason, caller(request))
    return json_response(schemas.cancellation_out(row))
