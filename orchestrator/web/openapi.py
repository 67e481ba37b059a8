"""The OpenAPI 3.1 description served at /openapi.json.

Every request and response schema, query parameter and enum comes from the pydantic models
that validate and serialise (service.inputs, web.schemas); this module only says which
operation uses which, so the description cannot drift from what the service accepts.
"""

from __future__ import annotations

import functools
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from orchestrator.service.inputs import ActionRequest, EnqueueRequest, ListQuery
from orchestrator.web import schemas

_REF = "#/components/schemas/{model}"


class Problem(BaseModel):
    """An RFC 9457 problem; `errors` lists each field at fault in a 422."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[dict[str, str]] | None = None


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(model=name)}


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/problem+json": {"schema": _ref("Problem")}},
    }


def _json(name: str, description: str, **extra: Any) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": _ref(name)}},
        **extra,
    }


def _query_parameters(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """One query parameter per field of a model's schema, with the field's own schema."""
    required = set(schema.get("required", []))
    parameters = []
    for name, field_schema in schema["properties"].items():
        field_schema = dict(field_schema)
        field_schema.pop("title", None)
        description = field_schema.pop("description", None)
        if "anyOf" in field_schema:  # Optional[X]: a query parameter is absent, never null
            options = [s for s in field_schema.pop("anyOf") if s.get("type") != "null"]
            field_schema = (
                {**options[0], **field_schema} if len(options) == 1 else {"anyOf": options}
            )
        field_schema.pop("default", None) if field_schema.get("default") is None else None
        parameter: dict[str, Any] = {
            "name": name,
            "in": "query",
            "required": name in required,
            "schema": field_schema,
        }
        if description:
            parameter["description"] = description
        parameters.append(parameter)
    return parameters


_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "format": "uuid"},
}
_AUTH = {"401": _problem("Missing or wrong bearer token (when ORCH_API_TOKENS is set)")}
_FORBIDDEN = {"403": _problem("The token lacks the scope this operation needs")}
_UNAVAILABLE = {"503": _problem("The database is unreachable; retry later")}
# A bearer token when ORCH_API_TOKENS is set; none otherwise.
_SECURITY: list[dict[str, list[str]]] = [{"bearer": []}, {}]

_LINKS = {
    "GetCancellation": {
        "operationId": "getCancellation",
        "parameters": {"id": "$response.body#/id"},
        "description": "Follow the cancellation this answer describes",
    },
    "GetCancellationEvents": {
        "operationId": "getCancellationEvents",
        "parameters": {"id": "$response.body#/id"},
        "description": "Its history of transitions",
    },
}


def _action(summary: str, operation_id: str, done: str) -> dict[str, Any]:
    return {
        "post": {
            "operationId": operation_id,
            "summary": summary,
            "security": _SECURITY,
            "parameters": [_ID],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref("ActionRequest")}},
            },
            "responses": {
                "200": _json("Cancellation", done),
                "400": _problem("The body is not JSON"),
                "404": _problem("No such cancellation"),
                "409": _problem("The cancellation's state does not allow this; `detail` says why"),
                "415": _problem("The body is not application/json"),
                "422": _problem("A field is invalid; `errors` lists them"),
                **_AUTH,
                **_FORBIDDEN,
                **_UNAVAILABLE,
            },
        }
    }


@functools.cache
def build() -> dict[str, Any]:
    models: list[tuple[type[BaseModel], Any]] = [
        (EnqueueRequest, "validation"),
        (ActionRequest, "validation"),
        (schemas.CancellationOut, "serialization"),
        (schemas.CancellationPage, "serialization"),
        (schemas.History, "serialization"),
        (Problem, "serialization"),
        (ListQuery, "validation"),
    ]
    _, definitions = models_json_schema(models, ref_template=_REF)
    components = definitions["$defs"]
    list_query = components.pop("ListQuery")
    components["CancellationIn"] = components.pop("EnqueueRequest")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "orchestrator",
            "version": "1",
            "description": "Durable cancellation of e-signature requests.",
        },
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "paths": {
            "/v1/cancellations": {
                "post": {
                    "operationId": "enqueueCancellation",
                    "summary": "Enqueue a cancellation (idempotent)",
                    "security": _SECURITY,
                    "parameters": [
                        {
                            "name": "Idempotency-Key",
                            "in": "header",
                            "schema": {
                                "type": "string",
                                "minLength": 1,
                                "maxLength": 255,
                                "pattern": "^[!-~]+$",
                            },
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("CancellationIn")}},
                    },
                    "responses": {
                        "202": _json("Cancellation", "Accepted: recorded and queued", links=_LINKS),
                        "200": _json(
                            "Cancellation",
                            "The existing cancellation for this request or key",
                            links=_LINKS,
                        ),
                        "400": _problem("The body is not JSON"),
                        "409": _problem("The Idempotency-Key was used with another body"),
                        "413": _problem("The body is too large"),
                        "415": _problem("The body is not application/json"),
                        "422": _problem("A field is invalid; `errors` lists them"),
                        **_AUTH,
                        **_FORBIDDEN,
                        **_UNAVAILABLE,
                    },
                },
                "get": {
                    "operationId": "listCancellations",
                    "summary": "List cancellations, newest first (keyset pagination)",
                    "security": _SECURITY,
                    "parameters": _query_parameters(list_query),
                    "responses": {
                        "200": _json("CancellationPage", "A page"),
                        "422": _problem("A query parameter is invalid"),
                        **_AUTH,
                        **_FORBIDDEN,
                        **_UNAVAILABLE,
                    },
                },
            },
            "/v1/cancellations/{id}": {
                "get": {
                    "operationId": "getCancellation",
                    "summary": "One cancellation",
                    "security": _SECURITY,
                    "parameters": [_ID],
                    "responses": {
                        "200": _json("Cancellation", "The cancellation"),
                        "404": _problem("No such cancellation"),
                        **_AUTH,
                        **_FORBIDDEN,
                        **_UNAVAILABLE,
                    },
                }
            },
            "/v1/cancellations/{id}/events": {
                "get": {
                    "operationId": "getCancellationEvents",
                    "summary": "Every transition of one cancellation, with cause and evidence",
                    "security": _SECURITY,
                    "parameters": [_ID],
                    "responses": {
                        "200": _json("History", "The history, oldest first"),
                        "404": _problem("No such cancellation"),
                        **_AUTH,
                        **_FORBIDDEN,
                        **_UNAVAILABLE,
                    },
                }
            },
            "/v1/cancellations/{id}/retry": _action(
                "Retry now, checking the provider's status first (admin)",
                "retryCancellation",
                "Queued for an attempt now",
            ),
            "/v1/cancellations/{id}/abandon": _action(
                "Give up: the cancellation ends failed, code `abandoned` (admin)",
                "abandonCancellation",
                "Abandoned",
            ),
            "/v1/stats": {
                "get": {
                    "operationId": "getStats",
                    "summary": "Counts per status, overdue, last confirmation",
                    "security": _SECURITY,
                    "responses": {
                        "200": {"description": "Stats", "content": {"application/json": {}}},
                        **_AUTH,
                        **_FORBIDDEN,
                        **_UNAVAILABLE,
                    },
                }
            },
            "/webhooks/{provider}": {
                "post": {
                    "operationId": "receiveWebhook",
                    "summary": "Provider callbacks (dropbox_sign, hellosign, truto)",
                    "parameters": [
                        {
                            "name": "provider",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {
                        "200": {"description": "Stored (the provider's expected acknowledgement)"},
                        "400": _problem("Malformed"),
                        "401": _problem("Signature invalid, or a stale event"),
                        "404": _problem("No such webhook endpoint"),
                        "413": _problem("Too large"),
                        "415": _problem("Unsupported content type"),
                        **_UNAVAILABLE,
                    },
                }
            },
            "/healthz": {
                "get": {"summary": "Process alive", "responses": {"200": {"description": "ok"}}}
            },
            "/readyz": {
                "get": {
                    "summary": "Database reachable and its schema the code's",
                    "responses": {
                        "200": {"description": "ready"},
                        "503": {"description": "not ready"},
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {"200": {"description": "text"}},
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This description",
                    "responses": {"200": {"description": "json"}},
                }
            },
        },
    }
