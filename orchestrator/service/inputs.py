"""What the use cases accept, validated once, whoever calls them (HTTP, CLI, demo, batch)."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
)

from orchestrator.domain.model import Cancellation, ProviderName, Status

# Printable ASCII without spaces: provider ids are opaque, but never need more than this.
# An id becomes one segment of a provider's URL path, so it may not be able to change that
# path after normalisation or decoding along the way: no `/`, `\\`, `?`, `#` or `%` (nor
# `%2e%2e`, `%2F`, ...), and not made of dots alone (`.`, `..`). Written without lookaround
# so JSON Schema, pydantic and hypothesis read it alike: at least one character that is not a
# dot, among characters that are all allowed.
_ID_CHAR = r"[\x21\x22\x24\x26-\x2e\x30-\x3e\x40-\x5b\x5d-\x7e]"
_ID_NOT_DOT = r"[\x21\x22\x24\x26-\x2d\x30-\x3e\x40-\x5b\x5d-\x7e]"
RESOURCE_ID_PATTERN = rf"^{_ID_CHAR}*{_ID_NOT_DOT}{_ID_CHAR}*$"
RESOURCE_ID_RULE = (
    "must be printable ASCII without spaces, '/', '\\', '?', '#' or '%', and not dots alone:"
    " it is sent as one segment of the provider's URL path"
)
ResourceId = Annotated[
    str, StringConstraints(min_length=1, max_length=256, pattern=RESOURCE_ID_PATTERN)
]
#: What a listing may search for: any id a row may hold, including one stored before ids
#: were held to ResourceId (a search reaches no provider).
StoredResourceId = Annotated[
    str, StringConstraints(min_length=1, max_length=256, pattern=r"^[!-~]+$")
]
AccountName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
IdempotencyKey = Annotated[
    str, StringConstraints(min_length=1, max_length=255, pattern=r"^[!-~]+$")
]
Reason = Annotated[str, StringConstraints(max_length=2000)]
CallbackUrl = Annotated[str, StringConstraints(min_length=1, max_length=2048)]
#: A position in the listing: the last item's created_at (microseconds since the epoch) and
#: id. Every string this pattern admits is a position, so the description says exactly what
#: is accepted (a cursor is still best taken from `next`, never built).
Cursor = Annotated[
    str,
    StringConstraints(
        pattern=r"^[0-9]{1,16}_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
    ),
]

#: A position in a cancellation's history: the id of the last event read (`next`).
EventCursor = Annotated[str, StringConstraints(pattern=r"^[0-9]{1,18}$")]

MAX_PAGE = 200
#: JSON nested deeper than this is refused: no cancellation needs it, and PostgreSQL's
#: encoder (orjson) stops at 254 levels.
MAX_JSON_DEPTH = 64
_INT64 = 2**63


def storable(value: Any, where: str = "", depth: int = 0) -> Any:
    """Refuse what valid JSON allows but PostgreSQL's jsonb and text cannot hold."""
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"{where or 'value'} is nested deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError(f"{where or 'value'} contains a NUL character")
    elif isinstance(value, bool) or value is None:
        pass
    elif isinstance(value, int):
        if not -_INT64 <= value < _INT64:
            raise ValueError(f"{where or 'value'} is an integer beyond 64 bits")
    elif isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"{where or 'value'} is not a finite number")
        # JSON Schema cannot tell 1e30 from a 31-digit integer, so the description bounds
        # every number alike (web/openapi.py, JsonValue): no float past the integers' range.
        if not -_INT64 <= value < _INT64:
            raise ValueError(f"{where or 'value'} is a number beyond the 64-bit integer range")
    elif isinstance(value, dict):
        for key, item in value.items():
            storable(key, f"a key in {where or 'object'}", depth + 1)
            storable(item, f"{where}.{key}" if where else str(key), depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            storable(item, f"{where}[{index}]", depth + 1)
    return value


def check_callback_url(url: str) -> str:
    """An absolute http(s) URL with a host and no credentials (they would show in the
    cancellation and its history; the signature is what authenticates a callback)."""
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        raise ValueError("must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise ValueError("is not a valid URL") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("must be an http:// or https:// URL")
    if not parts.hostname:
        raise ValueError("must name a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not carry credentials")
    return url


class EnqueueRequest(BaseModel):
    """A cancel to record and send: the body of POST /v1/cancellations."""

    model_config = ConfigDict(extra="forbid", strict=True)

    provider: ProviderName
    resource_id: ResourceId
    account: AccountName = "default"
    reason: Reason | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)
    callback_url: CallbackUrl | None = Field(
        None,
        description="an http(s) URL to POST the cancellation to once it is confirmed or "
        "failed, signed as Standard Webhooks says",
    )

    @field_validator("provider", mode="before")
    @classmethod
    def _provider_name(cls, value: Any) -> Any:
        # Strict mode takes no str for an enum; the JSON and Python callers both send one.
        return ProviderName(value) if isinstance(value, str) and value in _PROVIDERS else value

    @field_validator("resource_id", mode="wrap")
    @classmethod
    def _one_path_segment(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        """Say why in words: the pattern's own message is a wall of escapes."""
        try:
            return handler(value)
        except ValidationError as exc:
            if any(e["type"] == "string_pattern_mismatch" for e in exc.errors()):
                raise ValueError(RESOURCE_ID_RULE) from None
            raise

    @field_validator("reason", "metadata", "params")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        return storable(value)

    @field_validator("callback_url")
    @classmethod
    def _callback_url(cls, value: str | None) -> str | None:
        return None if value is None else check_callback_url(value)

    def request_hash(self) -> str:
        """Identifies the request for Idempotency-Key checks, independent of key order.
        A request without callback_url hashes as it did before the field existed."""
        data = self.model_dump(
            mode="json", exclude={"callback_url"} if self.callback_url is None else None
        )
        return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()


_PROVIDERS = frozenset(p.value for p in ProviderName)

#: The most items one batch may carry.
MAX_BATCH = 1000


class BatchItem(EnqueueRequest):
    """One item of POST /v1/cancellations/batch: an enqueue body, with its own optional
    idempotency key (what the Idempotency-Key header is to a single enqueue)."""

    idempotency_key: IdempotencyKey | None = Field(
        None,
        description="this item's Idempotency-Key: the same key and body answer the same"
        " cancellation (200), the same key with another body is a 409",
    )

    def enqueue_request(self) -> EnqueueRequest:
        """The item without its key: what the key's request hash is computed over."""
        return EnqueueRequest.model_construct(
            **{name: getattr(self, name) for name in EnqueueRequest.model_fields}
        )


class BatchRequest(BaseModel):
    """The body of POST /v1/cancellations/batch. The items are checked one by one (a bad
    item does not sink the batch), so here they are only JSON values."""

    model_config = ConfigDict(extra="forbid", strict=True)

    items: list[Any] = Field(min_length=1, max_length=MAX_BATCH)


class ListQuery(BaseModel):
    """Which cancellations to list: the query of GET /v1/cancellations."""

    model_config = ConfigDict(extra="forbid")

    status: Status | None = None
    provider: ProviderName | None = None
    resource_id: StoredResourceId | None = None
    limit: int = Field(50, ge=1, le=MAX_PAGE)
    after: Cursor | None = Field(None, description="the `next` cursor of the previous page")


class EventsQuery(BaseModel):
    """Which part of a cancellation's history: the query of GET /v1/cancellations/{id}/events.
    Oldest first; a callback flood cannot make one answer (or one dashboard page) unbounded."""

    model_config = ConfigDict(extra="forbid")

    limit: int = Field(100, ge=1, le=MAX_PAGE)
    after: EventCursor | None = Field(None, description="the `next` cursor of the previous page")


#: The longest a status request may wait for a change.
MAX_WAIT_S = 60


class WaitQuery(BaseModel):
    """How long GET /v1/cancellations/{id} may wait for a change: its query."""

    model_config = ConfigDict(extra="forbid")

    wait: float = Field(
        0,
        ge=0,
        le=MAX_WAIT_S,
        allow_inf_nan=False,
        description="seconds to wait for the cancellation to change (long polling), 0-60;"
        " with If-None-Match, to change from that ETag",
    )
    until: Literal["change", "terminal"] = Field(
        "change",
        description="`terminal`: return early only once the cancellation has ended",
    )


class ActionRequest(BaseModel):
    """An operator's action on one cancellation (retry, abandon): why."""

    model_config = ConfigDict(extra="forbid", strict=True)

    reason: Annotated[str, StringConstraints(min_length=1, max_length=2000)]

    @field_validator("reason")
    @classmethod
    def _storable(cls, value: str) -> str:
        return str(storable(value))


def encode_cursor(row: Cancellation) -> str:
    micros = (row.created_at - _EPOCH) // timedelta(microseconds=1)
    return f"{micros}_{row.id}"


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The position a cursor names; ListQuery has checked its shape (Cursor)."""
    micros, _, ident = cursor.partition("_")
    return _EPOCH + timedelta(microseconds=int(micros)), uuid.UUID(ident)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def valid_idempotency_key(key: str) -> bool:
    return 0 < len(key) <= 255 and all("!" <= ch <= "~" for ch in key)
