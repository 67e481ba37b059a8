"""The OpenAPI 3.1 description served at /openapi.json.

Every request and response schema, query parameter and enum comes from the pydantic models
that validate and serialise (service.inputs, web.schemas); this module only says which
operation uses which, so the description cannot drift from what the service accepts.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.json_schema import models_json_schema

from orchestrator.providers import registry
from orchestrator.service.callbacks import CallbackPolicy
from orchestrator.service.inputs import (
    MAX_BATCH,
    ActionRequest,
    EnqueueRequest,
    EventsQuery,
    ListQuery,
    WaitQuery,
)
from orchestrator.web import docs, schemas

_REF = "#/components/schemas/{model}"


class Problem(BaseModel):
    """An RFC 9457 problem; `errors` lists each field at fault in a 422."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[dict[str, str]] | None = None


class BatchIn(BaseModel):
    """Up to 1,000 enqueue bodies (each a CancellationIn, plus an optional
    `idempotency_key`: that item's Idempotency-Key). The items are checked one by one, so
    any JSON value is accepted here: an item that is not a valid enqueue body is answered
    with its own 422 in the results, and the rest are enqueued."""

    model_config = ConfigDict(extra="forbid")

    items: list[Any]


class BatchEntry(BaseModel):
    """One item's answer, in the items' order: 202 created, 200 found (the open cancellation
    of the same request, or the same idempotency_key and body), 409 the idempotency_key was
    used with another body (with that cancellation), 422 the item is invalid (`problem`
    names each field as `items[i].field`)."""

    status: int
    cancellation: schemas.CancellationOut | None = None  # type: ignore[valid-type]
    problem: Problem | None = None


class BatchResults(BaseModel):
    results: list[BatchEntry]


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
_FORBIDDEN = {
    "403": _problem(
        "The token lacks the scope this operation needs, or is limited to other accounts"
        " (`account` names the one refused)"
    )
}
_RATED = {
    "429": _problem(
        "Beyond this token's enqueue rate (`rate=` in ORCH_API_TOKENS); Retry-After says when"
    )
}
_UNAVAILABLE = {
    "503": {
        **_problem(
            "The database is unreachable, or no connection to it was free within"
            " ORCH_DB_ACQUIRE_TIMEOUT_S; retry after Retry-After seconds"
        ),
        "headers": {
            "Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}
        },
    }
}
# A bearer token when ORCH_API_TOKENS is set; none otherwise.
_SECURITY: list[dict[str, list[str]]] = [{"bearer": []}, {}]

_ETAG = {
    "ETag": {
        "description": 'The entity tag of the cancellation\'s state, `"<id>-v<version>"`;'
        " it changes with every change. Send it back in If-None-Match.",
        "schema": {"type": "string"},
    }
}
_IF_NONE_MATCH = {
    "name": "If-None-Match",
    "in": "header",
    "description": "An ETag this caller has seen: 304 while it is still current. With `wait`,"
    " the request waits while it is current, then answers 200 with the new state, or 304 when"
    " the wait ends first.",
    "schema": {"type": "string"},
}

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


#: What `storable` (service/inputs.py) lets into a free-form object (metadata, params): any
#: nesting, and numbers within the 64-bit integer range, floats included, since JSON Schema
#: cannot tell 1e30 from a 31-digit integer and our encoder holds no integer beyond it.
#: What each provider's webhook must carry to be read at all (the adapters' parse_webhook);
#: the signature decides the rest (401).
_WEBHOOK_EVENTS: dict[str, Any] = {
    "DropboxSignEvent": {
        "type": "object",
        "description": "A Dropbox Sign callback: `event` with its time, type and hash",
        "required": ["event"],
        "properties": {
            "event": {
                "type": "object",
                "required": ["event_time", "event_type", "event_hash"],
                "properties": {
                    name: {"type": "string", "minLength": 1}
                    for name in ("event_time", "event_type", "event_hash")
                },
            }
        },
    },
    "TrutoEvent": {
        "type": "object",
        "description": "A Truto webhook: its `id` and `created_at`",
        "required": ["id", "created_at"],
        "properties": {
            "id": {"type": "string"},
            "created_at": {"type": ["string", "number"]},
        },
    },
}

#: PostgreSQL's text and jsonb hold no U+0000, so neither a string nor a key may carry one.
_NO_NUL = r"^[^\u0000]*$"
_JSON_VALUE = {
    "description": "Any JSON value: numbers within the 64-bit integer range, no U+0000 in a"
    " string or a key",
    "anyOf": [
        {"type": "string", "pattern": _NO_NUL},
        {"type": "boolean"},
        {"type": "null"},
        {"type": "number", "minimum": -(2**63), "maximum": 2**63 - 1},
        {"type": "array", "items": _ref("JsonValue")},
        {
            "type": "object",
            "propertyNames": {"pattern": _NO_NUL},
            "additionalProperties": _ref("JsonValue"),
        },
    ],
}


def _free_form_values(schema: dict[str, Any]) -> None:
    """Each free-form object property of `schema` holds JsonValues."""
    for prop in schema.get("properties", {}).values():
        if prop.get("type") == "object" and prop.get("additionalProperties") is True:
            prop["additionalProperties"] = _ref("JsonValue")
            prop["propertyNames"] = {"pattern": _NO_NUL}


#: One realistic enqueue per provider: for readers, and for schemathesis's examples phase.
_EXAMPLES: dict[str, dict[str, Any]] = {
    "dropbox_sign": {
        "provider": "dropbox_sign",
        "resource_id": "fa5c8a0b0f492d768749333ad6fcc214c111e967",
        "reason": "the deal fell through",
    },
    "truto": {
        "provider": "truto",
        "resource_id": "5b2c1e0a-9d3f-4f6e-8a7b-1c2d3e4f5a6b",
        "params": {
            "integrated_account_id": "62f44730-dd91-461e-bd6a-aedd9e0ad79d",
            "message": "Cancelled: the deal fell through",
        },
    },
    "aptly": {
        "provider": "aptly",
        "resource_id": "3f2b6c1e-8a4d-4c59-9e0f-2d7b1a6c5e43",
        "params": {"status": "Cancelled"},
    },
}


def _enqueue_variants(
    components: dict[str, Any], served: Iterable[str] | None, callbacks: CallbackPolicy | None
) -> dict[str, Any]:
    """CancellationIn as one variant per provider, told apart by `provider`: each with its
    own `params` (the adapter's params_model) and, when `served` ("provider:account") is
    given, only the accounts this instance can send through."""
    base = components.pop("EnqueueRequest")
    _free_form_values(base)
    if callbacks is not None:
        _callback_url(base, callbacks)
    accounts: dict[str, list[str]] | None = None
    if served is not None:
        accounts = {}
        for key in served:
            provider_name, _, account = key.partition(":")
            accounts.setdefault(provider_name, []).append(account)
    variants = {}
    for name, provider in registry.PROVIDERS.items():
        if accounts is not None and name not in accounts:
            continue  # nothing to send it through: an enqueue would be refused
        variant = copy.deepcopy(base)
        variant["title"] = f"CancellationIn ({name})"
        if name in _EXAMPLES:
            variant["examples"] = [_EXAMPLES[name]]
        properties = variant["properties"]
        properties["provider"] = {"type": "string", "const": name}
        model = provider.params_model
        if model is None:
            properties["params"] = {
                "type": "object",
                "maxProperties": 0,
                "description": f"{name} takes no params",
            }
        else:
            properties["params"] = _ref(model.__name__)
            if model.model_json_schema().get("required"):
                variant["required"] = [*variant["required"], "params"]
        if accounts is not None:
            names = sorted(accounts[name])
            properties["account"] = {**properties["account"], "enum": names}
            if properties["account"].get("default") not in names:
                properties["account"].pop("default", None)
                variant["required"] = [*variant["required"], "account"]
        variants[f"CancellationIn_{name}"] = variant
    if not variants:  # no account served at all: describe the shape, every enqueue fails
        variants["CancellationIn_any"] = base
    refs = {key.removeprefix("CancellationIn_"): _ref(key) for key in variants}
    return {
        **variants,
        "CancellationIn": {
            "oneOf": list(refs.values()),
            "discriminator": {
                "propertyName": "provider",
                "mapping": {provider: ref["$ref"] for provider, ref in refs.items()},
            },
        },
    }


def build(
    served: Iterable[str] | None = None, callbacks: CallbackPolicy | None = None
) -> dict[str, Any]:
    """The description; `served` ("provider:account") narrows each provider's accounts to
    those this instance can send through, and leaves out a provider it cannot; `callbacks`
    says which callback_url this instance takes (none without a signing secret)."""
    return _build(None if served is None else tuple(sorted(served)), callbacks)


#: The shape of a callback_url check_callback_url (service/inputs.py) takes: http(s), a
#: host (a name, an IPv4 address or an IPv6 one in brackets), a port within 0-65535, no
#: credentials, no space or control character. Which hosts and ports are allowed is the
#: operator's list (ORCH_CALLBACK_HOSTS), deliberately not published: it maps the receivers
#: inside the network. The description says so, and that any other is a 422.
_PORT = r"(?::(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4}))?"
_URL_REST = r"(?:[/?#][!-~]*)?"
_ANY_HOST = r"(?:[A-Za-z0-9._~-]+|\[[0-9A-Fa-f:.]+\])"
_HOSTS_NOTE = (
    " Only hosts the operator allows are accepted (ORCH_CALLBACK_HOSTS, not published here):"
    " a listed host:port, or under `*` any host whose addresses are all public; any other is"
    " refused with a 422 naming callback_url, and checked again at each delivery."
)


def _callback_url(variant: dict[str, Any], callbacks: CallbackPolicy) -> None:
    properties = variant["properties"]
    if not callbacks.enabled:
        del properties["callback_url"]  # refused here: no secret to sign callbacks with
        return
    prop = properties["callback_url"]
    prop["description"] = prop.get("description", "") + _HOSTS_NOTE
    options = [s for s in prop.get("anyOf", []) if s.get("type") != "null"]
    string = options[0] if options else prop
    string["pattern"] = f"^https?://{_ANY_HOST}{_PORT}{_URL_REST}$"


@functools.cache
def _build(served: tuple[str, ...] | None, callbacks: CallbackPolicy | None) -> dict[str, Any]:
    params_models = {p.params_model for p in registry.PROVIDERS.values() if p.params_model}
    models: list[tuple[type[BaseModel], Any]] = [
        *((model, "validation") for model in sorted(params_models, key=lambda m: m.__name__)),
        (EnqueueRequest, "validation"),
        (ActionRequest, "validation"),
        (schemas.CancellationOut, "serialization"),
        (schemas.CancellationPage, "serialization"),
        (schemas.History, "serialization"),
        (Problem, "serialization"),
        (ListQuery, "validation"),
        (EventsQuery, "validation"),
        (WaitQuery, "validation"),
        (BatchIn, "validation"),
        (BatchResults, "serialization"),
    ]
    _, definitions = models_json_schema(models, ref_template=_REF)
    components = definitions["$defs"]
    list_query = components.pop("ListQuery")
    events_query = components.pop("EventsQuery")
    components["JsonValue"] = _JSON_VALUE
    components.update(_WEBHOOK_EVENTS)
    for model in params_models:
        _free_form_values(components[model.__name__])
    components["ActionRequest"]["examples"] = [{"reason": "signed on paper; nothing to cancel"}]
    components.update(_enqueue_variants(components, served, callbacks))
    wait_query = components.pop("WaitQuery")
    batch_items = components["BatchIn"]["properties"]["items"]
    batch_items.update(minItems=1, maxItems=MAX_BATCH)
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
                        "202": _json(
                            "Cancellation",
                            "Accepted: recorded and queued",
                            links=_LINKS,
                            headers=_ETAG,
                        ),
                        "200": _json(
                            "Cancellation",
                            "The existing cancellation for this request or key",
                            links=_LINKS,
                            headers=_ETAG,
                        ),
                        "400": _problem("The body is not JSON"),
                        "409": _problem("The Idempotency-Key was used with another body"),
                        "413": _problem("The body is too large"),
                        "415": _problem("The body is not application/json"),
                        "422": _problem("A field is invalid; `errors` lists them"),
                        **_AUTH,
                        **_FORBIDDEN,
                        **_RATED,
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
            "/v1/cancellations/batch": {
                "post": {
                    "operationId": "enqueueCancellations",
                    "summary": "Enqueue up to 1,000 cancellations in one request",
                    "description": "Each item is what POST /v1/cancellations takes, plus an"
                    " optional `idempotency_key` (the Idempotency-Key header of a single"
                    " enqueue, for that item). Items are answered one by one, in order: a bad"
                    " item does not sink the batch. The batch is written in a few"
                    " transactions, not one per item.",
                    "security": _SECURITY,
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("BatchIn")}},
                    },
                    "responses": {
                        "207": _json("BatchResults", "One entry per item, in order"),
                        "400": _problem("The body is not JSON"),
                        "413": _problem("The body is too large (ORCH_MAX_BODY_BYTES)"),
                        "415": _problem("The body is not application/json"),
                        "422": _problem('The body is not `{"items": [1 to 1,000 items]}`'),
                        **_AUTH,
                        **_FORBIDDEN,
                        **_RATED,
                        **_UNAVAILABLE,
                    },
                }
            },
            "/v1/cancellations/{id}": {
                "get": {
                    "operationId": "getCancellation",
                    "summary": "One cancellation; with `wait`, a long poll for its next change",
                    "description": "Without `wait`, the state now. With `wait` (seconds, at"
                    " most 60), the answer comes as soon as the cancellation changes from the"
                    " ETag in If-None-Match (or, without one, from its state when the request"
                    " arrived), or when the wait ends; an ended cancellation is answered at"
                    " once. Changes made by any instance wake the wait (PostgreSQL"
                    " LISTEN/NOTIFY). To follow a cancellation to its end: repeat with the"
                    " last ETag, or ask `until=terminal`.",
                    "security": _SECURITY,
                    "parameters": [_ID, *_query_parameters(wait_query), _IF_NONE_MATCH],
                    "responses": {
                        "200": _json("Cancellation", "The cancellation", headers=_ETAG),
                        "304": {
                            "description": "The ETag in If-None-Match is still current (after"
                            " the wait, if one was asked for)",
                            "headers": _ETAG,
                        },
                        "404": _problem("No such cancellation"),
                        "422": _problem(
                            "`wait` is not 0-60, or another query parameter is invalid"
                        ),
                        "429": _problem(
                            "With `wait`: this instance holds ORCH_MAX_LONG_POLLS long polls"
                            " already; ask again after Retry-After"
                        ),
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
                    "description": "A page of the history, oldest first (`limit`, 100 by"
                    " default); `next` is the `after` of the following page.",
                    "security": _SECURITY,
                    "parameters": [_ID, *_query_parameters(events_query)],
                    "responses": {
                        "200": _json("History", "A page of the history, oldest first"),
                        "404": _problem("No such cancellation"),
                        "422": _problem("A query parameter is invalid"),
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
                    "summary": "Provider callbacks, signed by the provider (no bearer token)",
                    "parameters": [
                        {
                            "name": "provider",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "enum": sorted(registry.WEBHOOK_ROUTES)},
                        },
                        {
                            "name": "X-Truto-Signature",
                            "in": "header",
                            "description": "Truto: format=sha256,v=<HMAC of the raw body>",
                            "schema": {"type": "string"},
                        },
                    ],
                    "requestBody": {
                        "required": True,
                        "description": "The provider's own event format, signed by it (Dropbox"
                        " Sign: event.event_hash; Truto: X-Truto-Signature). Which format is"
                        " read depends on `provider`: /webhooks/dropbox_sign and"
                        " /webhooks/hellosign take a Dropbox Sign event (anything else is"
                        " 400), /webhooks/truto a Truto event, and /webhooks/aptly none (404).",
                        "content": {
                            "application/json": {
                                "schema": {"anyOf": [_ref("DropboxSignEvent"), _ref("TrutoEvent")]}
                            },
                            "multipart/form-data": {
                                "schema": {
                                    "type": "object",
                                    "required": ["json"],
                                    "properties": {
                                        "json": {
                                            "type": "string",
                                            "contentMediaType": "application/json",
                                            "contentSchema": _ref("DropboxSignEvent"),
                                            "description": "Dropbox Sign's default: the event"
                                            " JSON in a form field",
                                        }
                                    },
                                }
                            },
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "Stored (the provider's expected acknowledgement)",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
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
                    "description": "Without a token (where tokens are configured) only"
                    " `status`; a `read` token or ORCH_METRICS_TOKEN adds the details"
                    " (unserved accounts, the schema versions).",
                    "security": _SECURITY,
                    "responses": {
                        "200": {"description": "ready"},
                        "503": {"description": "not ready"},
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "description": "Where tokens are configured, a `read` token or"
                    " ORCH_METRICS_TOKEN (the scraper's own).",
                    "security": _SECURITY,
                    "responses": {"200": {"description": "text"}, **_AUTH, **_FORBIDDEN},
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This description",
                    "description": "Without a token (where tokens are configured), the"
                    " description of any instance, naming no account and no callback host;"
                    " a `read` token or ORCH_METRICS_TOKEN gets this instance's own.",
                    "security": _SECURITY,
                    "responses": {"200": {"description": "json"}},
                }
            },
            "/docs": {
                "get": {
                    "summary": "This description rendered by Swagger UI (served here, no CDN)",
                    "responses": {"200": {"description": "html", "content": {"text/html": {}}}},
                }
            },
            "/docs/{asset}": {
                "get": {
                    "summary": "A file the /docs page loads",
                    "parameters": [
                        {
                            "name": "asset",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "enum": list(docs.ASSETS)},
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": "the file",
                            "content": {media: {} for media in docs.ASSETS.values()},
                        },
                        "404": _problem("Not one of the page's files"),
                    },
                }
            },
        },
    }
