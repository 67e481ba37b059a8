"""What the HTTP API answers, derived from the domain's row models so the two cannot drift.

The request side is orchestrator.service.inputs; /openapi.json is built from both.
"""

from __future__ import annotations

import dataclasses
import typing
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from orchestrator.domain.model import Cancellation, Event, Status

#: The columns of a cancellation the API shows; the rest (leases, fencing, hashes) are the
#: service's own bookkeeping.
PUBLIC = (
    "id",
    "provider",
    "account",
    "resource_id",
    "status",
    "outcome",
    "confirmed_via",
    "attempts",
    "reason",
    "metadata",
    "params",
    "provider_state",
    "created_at",
    "updated_at",
    "submitted_at",
    "confirm_by",
    "confirmed_at",
    "next_attempt_at",
    "callback_url",
)


class LastError(BaseModel):
    """Why the last attempt failed, or why the cancellation ended failed."""

    code: str
    message: str
    at: datetime | None = None
    details: dict[str, Any] | None = None


class _CancellationBase(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    last_error: LastError | None

    @model_validator(mode="after")
    def _next_attempt_only_while_queued(self) -> _CancellationBase:
        if getattr(self, "status", None) is not Status.QUEUED:
            self.next_attempt_at = None
        return self


def _fields_of(model: type[Any], names: tuple[str, ...]) -> dict[str, Any]:
    hints = typing.get_type_hints(model)
    known = {f.name for f in dataclasses.fields(model)}
    missing = set(names) - known
    if missing:
        raise TypeError(f"{model.__name__} has no field {sorted(missing)}")
    return {name: (hints[name], ...) for name in names}


CancellationOut: type[BaseModel] = create_model(
    "Cancellation", __base__=_CancellationBase, **_fields_of(Cancellation, PUBLIC)
)
EventOut: type[BaseModel] = create_model(
    "Event",
    __config__=ConfigDict(from_attributes=True),
    **_fields_of(Event, tuple(f.name for f in dataclasses.fields(Event))),
)


class CancellationPage(BaseModel):
    items: list[CancellationOut]  # type: ignore[valid-type]
    next: str | None = Field(description="the cursor of the next page (`after`), if any")


class History(BaseModel):
    cancellation_id: str
    events: list[EventOut]  # type: ignore[valid-type]
    next: str | None = Field(description="the cursor of the next page (`after`), if any")


def cancellation_out(row: Cancellation) -> dict[str, Any]:
    data: dict[str, Any] = CancellationOut.model_validate(row).model_dump(mode="json")
    return data


def event_out(event: Event) -> dict[str, Any]:
    data: dict[str, Any] = EventOut.model_validate(event).model_dump(mode="json")
    return data
