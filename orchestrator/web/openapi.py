"""The OpenAPI 3.1 description served at /openapi.json; request schemas come from the models."""

from __future__ import annotations

import functools
from typing import Any

from orchestrator.domain.model import Status
from orchestrator.web.schemas import MAX_PAGE, CancellationIn

_REF = "#/components/schemas/{model}"


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/problem+json": {"schema": {"$ref": _REF.format(model="Problem")}}},
    }


def _json(schema_name: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": _REF.format(model=schema_name)}}},
    }


_TIME = {"type": ["string", "null"], "format": "date-time"}

_CANCELLATION = {
    "type": "object",
    "required": ["id", "provider", "account", "resource_id", "status", "attempts"],
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "provider": {"type": "string"},
        "account": {"type": "string"},
        "resource_id": {"type": "string"},
        "status": {"type": "string", "enum": [s.value for s in Status]},
        "outcome": {"type": ["string", "null"]},
        "confirmed_via": {
            "type": ["string", "null"],
            "enum": ["webhook", "provider_response", "reconciliation", None],
        },
        "attempts": {"type": "integer"},
        "reason": {"type": ["string", "null"]},
        "metadata": {"type": "object"},
        "params": {"type": "object"},
        "provider_state": {"type": ["object", "null"]},
        "created_at": {"type": "string", "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"},
        "submitted_at": _TIME,
        "confirm_by": _TIME,
        "confirmed_at": _TIME,
        "next_attempt_at": _TIME,
        "last_error": {
            "type": ["object", "null"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "at": {"type": "string", "format": "date-time"},
                "details": {"type": "object"},
            },
        },
    },
}

_PROBLEM = {
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}


# A bearer token when ORCH_API_TOKENS is set; none otherwise.
_SECURITY: list[dict[str, list[str]]] = [{"bearer": []}, {}]


def _id_parameter() -> dict[str, Any]:
    return {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}


@functools.cache
def build() -> dict[str, Any]:
    request_schema = CancellationIn.model_json_schema(ref_template=_REF)
    definitions = request_schema.pop("$defs", {})
    auth_errors = {"401": _problem("Missing or wrong bearer token (when ORCH_API_TOKENS is set)")}
    unavailable = {"503": _problem("The database is unreachable; retry later")}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "orchestrator",
            "version": "1",
            "description": "Durable cancellation of e-signature requests.",
        },
        "components": {
            "schemas": {
                "CancellationIn": request_schema,
                "Cancellation": _CANCELLATION,
                "Problem": _PROBLEM,
                **definitions,
            },
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "paths": {
            "/v1/cancellations": {
                "post": {
                    "summary": "Enqueue a cancellation (idempotent)",
                    "security": _SECURITY,
                    "parameters": [
                        {
                            "name": "Idempotency-Key",
                            "in": "header",
                            "schema": {"type": "string", "maxLength": 255},
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": _REF.format(model="CancellationIn")}
                            }
                        },
                    },
                    "responses": {
                        "202": _json("Cancellation", "Accepted: recorded and queued"),
                        "200": _json("Cancellation", "The existing cancellation for this key"),
                        "400": _problem("The body is not JSON"),
                        "409": _problem("The Idempotency-Key was used with another body"),
                        "413": _problem("The body is too large"),
                        "415": _problem("The body is not application/json"),
                        "422": _problem("A field is invalid; `errors` lists them"),
                        **auth_errors,
                        **unavailable,
                    },
                },
                "get": {
                    "summary": "List cancellations, newest first (keyset pagination)",
                    "security": _SECURITY,
                    "parameters": [
                        {
                            "name": "status",
                            "in": "query",
                            "schema": {"type": "string", "enum": [s.value for s in Status]},
                        },
                        {"name": "provider", "in": "query", "schema": {"type": "string"}},
                        {"name": "resource_id", "in": "query", "schema": {"type": "string"}},
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE},
                        },
                        {"name": "after", "in": "query", "schema": {"type": "string"}},
                    ],
                    "responses": {
                        "200": {
                            "description": "A page",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "properties": {
                                            "items": {
                                                "type": "array",
                                                "items": {
                                                    "$ref": _REF.format(model="Cancellation")
                                                },
                                            },
                                            "next": {"type": ["string", "null"]},
                                        },
                                    }
                                }
                            },
                        },
                        "422": _problem("A query parameter is invalid"),
                        **auth_errors,
                        **unavailable,
                    },
                },
            },
            "/v1/cancellations/{id}": {
                "get": {
                    "summary": "One cancellation",
                    "security": _SECURITY,
                    "parameters": [_id_parameter()],
                    "responses": {
                        "200": _json("Cancellation", "The cancellation"),
                        "404": _problem("No such cancellation"),
                        **auth_errors,
                        **unavailable,
                    },
                }
            },
            "/v1/cancellations/{id}/events": {
                "get": {
                    "summary": "Every transition of one cancellation, with cause and evidence",
                    "security": _SECURITY,
                    "parameters": [_id_parameter()],
                    "responses": {
                        "200": {"description": "The history", "content": {"application/json": {}}},
                        "404": _problem("No such cancellation"),
                        **auth_errors,
                        **unavailable,
                    },
                }
            },
            "/v1/stats": {
                "get": {
                    "summary": "Counts per status, overdue, last confirmation",
                    "security": _SECURITY,
                    "responses": {
                        "200": {"description": "Stats", "content": {"application/json": {}}},
                        **auth_errors,
                        **unavailable,
                    },
                }
            },
            "/webhooks/{provider}": {
                "post": {
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
                        **unavailable,
                    },
                }
            },
            "/healthz": {
                "get": {"summary": "Process alive", "responses": {"200": {"description": "ok"}}}
            },
            "/readyz": {
                "get": {
                    "summary": "Database reachable and migrations current",
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
