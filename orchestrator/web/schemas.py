"""What the HTTP API accepts and answers."""

from __future__ import annotations

import base64
import binascii
import hashlib
import uuid
from datetime import datetime
from typing import Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from orchestrator.domain.model import Status
from orchestrator.store.repository import Cancellation, Event

# Printable ASCII without spaces: provider ids are opaque, but never need more than this.
ResourceId = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=r"^[!-~]+$")]
AccountName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
IdempotencyKey = Annotated[
    str, StringConstraints(min_length=1, max_length=255, pattern=r"^[!-~]+$")
]

ProviderName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]

MAX_PAGE = 200
_INT64 = 2**63


def storable(value: Any, where: str = "") -> Any:
    """Refuse what valid JSON allows but PostgreSQL's jsonb and text cannot hold."""
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
    elif isinstance(value, dict):
        for key, item in value.items():
            storable(key, f"a key in {where or 'object'}")
            storable(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            storable(item, f"{where}[{index}]")
    return value


class CancellationIn(BaseModel):
    """POST /v1/cancellations."""

    model_config = ConfigDict(extra="forbid", strict=True)

    provider: ProviderName
    resource_id: ResourceId
    account: AccountName = "default"
    reason: Annotated[str, StringConstraints(max_length=2000)] | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("reason", "metadata", "params")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        return storable(value)

    def request_hash(self) -> str:
        """Identifies the request for Idempotency-Key checks, independent of key order."""
        return hashlib.sha256(
            orjson.dumps(self.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
        ).hexdigest()


class ListQuery(BaseModel):
    """GET /v1/cancellations query string."""

    model_config = ConfigDict(extra="forbid")

    status: Status | None = None
    provider: ProviderName | None = None
    resource_id: ResourceId | None = None
    limit: int = Field(50, ge=1, le=MAX_PAGE)
    after: str | None = None

    @field_validator("after")
    @classmethod
    def _cursor(cls, value: str | None) -> str | None:
        if value is not None:
            decode_cursor(value)
        return value


def encode_cursor(row: Cancellation) -> str:
    raw = f"{row.created_at.isoformat()}|{row.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, ident = raw.split("|", 1)
        when = datetime.fromisoformat(at)
        if when.tzinfo is None:
            raise ValueError("naive time")
        return when, uuid.UUID(ident)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ValueError("not a cursor this API handed out") from None


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def cancellation_out(row: Cancellation) -> dict[str, Any]:
    last_error = None
    if row.last_error:
        last_error = {k: row.last_error.get(k) for k in ("code", "message", "at")}
        if "details" in row.last_error:
            last_error["details"] = row.last_error["details"]
    return {
        "id": str(row.id),
        "provider": row.provider,
        "account": row.account,
        "resource_id": row.resource_id,
        "status": row.status,
        "outcome": row.outcome,
        "confirmed_via": row.confirmed_via,
        "attempts": row.attempts,
        "reason": row.reason,
        "metadata": row.metadata,
        "params": row.params,
        "provider_state": row.provider_state,
        "created_at": _time(row.created_at),
        "updated_at": _time(row.updated_at),
        "submitted_at": _time(row.submitted_at),
        "confirm_by": _time(row.confirm_by),
        "confirmed_at": _time(row.confirmed_at),
        "next_attempt_at": _time(row.next_attempt_at) if row.status == "queued" else None,
        "last_error": last_error,
    }


def event_out(event: Event) -> dict[str, Any]:
    return {
        "id": event.id,
        "at": _time(event.at),
        "from_status": event.from_status,
        "to_status": event.to_status,
        "cause": event.cause,
        "evidence": event.evidence,
    }
