"""/v1/cancellations: enqueue, read, list, and the history of one."""

from __future__ import annotations

import uuid

from aiohttp import web
from pydantic import ValidationError

from orchestrator import errors
from orchestrator.store.repository import NewCancellation
from orchestrator.web import keys, schemas
from orchestrator.web.json import json_response

routes = web.RouteTableDef()

JSON_TYPES = ("application/json",)


def _field_error(field: str, message: str) -> errors.InvalidRequest:
    return errors.InvalidRequest(f"{field}: {message}", [{"field": field, "message": message}])


async def _read_request(request: web.Request) -> schemas.CancellationIn:
    if request.content_type not in JSON_TYPES:
        raise errors.UnsupportedMediaType(
            f"send the cancellation as application/json, not {request.content_type!r}"
        )
    body = await request.read()
    try:
        return schemas.CancellationIn.model_validate_json(body)
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            raise errors.BadRequest("the body is not valid JSON") from None
        if any(e["type"] == "model_type" for e in exc.errors()):
            raise errors.InvalidRequest(
                "the body must be a JSON object", [{"field": "body", "message": "not an object"}]
            ) from None
        raise errors.InvalidRequest.from_validation(exc, "cancellation") from None


@routes.post("/v1/cancellations")
async def enqueue(request: web.Request) -> web.Response:
    app = request.app
    body = await _read_request(request)
    key = request.headers.get("Idempotency-Key")
    if key is not None and not _valid_key(key):
        raise _field_error("Idempotency-Key", "must be 1-255 printable ASCII characters")

    providers = app[keys.PROVIDERS]
    provider = providers.get(body.provider)
    if provider is None:
        known = ", ".join(sorted(providers))
        raise _field_error("provider", f"unknown provider {body.provider!r}; known: {known}")
    account = app[keys.ACCOUNTS].get(body.provider, body.account)
    if account is None:
        raise _field_error("account", f"no {body.provider} account named {body.account!r}")
    params = provider.validate_params(body.params)
    if problem := provider.check_account(account):
        raise errors.ProviderNotConfigured(problem)

    row, created = await app[keys.STORE].enqueue(
        NewCancellation(
            provider=body.provider,
            account=body.account,
            resource_id=body.resource_id,
            reason=body.reason,
            metadata=body.metadata,
            params=params,
            idempotency_key=key,
            request_hash=body.request_hash(),
        ),
        app[keys.CLOCK].now(),
    )
    app[keys.METRICS].enqueued.labels(body.provider, str(created).lower()).inc()
    if created and row.status == "queued":
        app[keys.DISPATCHER].wake()
    location = str(request.app.router["cancellation"].url_for(id=str(row.id)))
    return json_response(
        schemas.cancellation_out(row),
        status=202 if created else 200,
        headers={"Location": location},
    )


def _valid_key(key: str) -> bool:
    return 0 < len(key) <= 255 and all("!" <= ch <= "~" for ch in key)


def _cancellation_id(request: web.Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.match_info["id"])
    except ValueError:
        raise errors.NotFound(f"no cancellation {request.match_info['id']!r}") from None


@routes.get("/v1/cancellations/{id}", name="cancellation")
async def get_one(request: web.Request) -> web.Response:
    ident = _cancellation_id(request)
    row = await request.app[keys.STORE].get(ident)
    if row is None:
        raise errors.NotFound(f"no cancellation {ident}")
    return json_response(schemas.cancellation_out(row))


@routes.get("/v1/cancellations/{id}/events")
async def events(request: web.Request) -> web.Response:
    ident = _cancellation_id(request)
    history = await request.app[keys.STORE].events(ident)
    if history is None:
        raise errors.NotFound(f"no cancellation {ident}")
    return json_response(
        {"cancellation_id": str(ident), "events": [schemas.event_out(e) for e in history]}
    )


@routes.get("/v1/cancellations")
async def list_all(request: web.Request) -> web.Response:
    try:
        query = schemas.ListQuery.model_validate(dict(request.query))
    except ValidationError as exc:
        raise errors.InvalidRequest.from_validation(exc, "query") from None
    rows = await request.app[keys.STORE].list_cancellations(
        status=query.status.value if query.status else None,
        provider=query.provider,
        resource_id=query.resource_id,
        after=schemas.decode_cursor(query.after) if query.after else None,
        limit=query.limit + 1,
    )
    page = rows[: query.limit]
    next_cursor = schemas.encode_cursor(page[-1]) if len(rows) > query.limit else None
    return json_response(
        {"items": [schemas.cancellation_out(r) for r in page], "next": next_cursor}
    )
