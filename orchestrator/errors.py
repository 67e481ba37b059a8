"""The project's errors: what went wrong, in the domain's words.

The store, the adapters and the service raise these; the web layer alone turns each into an
RFC 9457 problem (web/problems.py holds the HTTP status of each), and the CLI prints them.
"""

from __future__ import annotations

import enum
import math
from typing import Any

from pydantic import ValidationError


class OrchestratorError(Exception):
    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class NotFound(OrchestratorError):
    pass


class Conflict(OrchestratorError):
    """The request is valid but the cancellation's state or history forbids it."""


class InvalidRequest(OrchestratorError):
    """`errors` lists each field at fault and why."""

    def __init__(self, detail: str, errors: list[dict[str, str]]) -> None:
        super().__init__(detail, errors=errors)

    @classmethod
    def field(cls, field: str, message: str) -> InvalidRequest:
        return cls(f"{field}: {message}", [{"field": field, "message": message}])

    @classmethod
    def from_validation(cls, exc: ValidationError, what: str, prefix: str = "") -> InvalidRequest:
        fields = []
        for error in exc.errors(include_url=False):
            field = ".".join(str(part) for part in error["loc"]) or "body"
            message = "unknown field" if error["type"] == "extra_forbidden" else error["msg"]
            fields.append({"field": prefix + field, "message": message})
        names = ", ".join(f["field"] for f in fields)
        return cls(f"the {what} is invalid: {names}", fields)


class MalformedRequest(OrchestratorError):
    """The body cannot be read at all (not JSON, nested too deep)."""


class UnsupportedMediaType(OrchestratorError):
    pass


class Unauthorized(OrchestratorError):
    """No credentials, or credentials nobody issued."""


class Forbidden(OrchestratorError):
    """Valid credentials without the scope this action needs."""


class TooManyRequests(OrchestratorError):
    """A limit of this instance was reached; `retry_after_s` says when to try again."""

    def __init__(self, detail: str, retry_after_s: float) -> None:
        super().__init__(detail, retry_after_s=max(1, math.ceil(retry_after_s)))


class MisdirectedRequest(OrchestratorError):
    """The request's Host is not a name this service answers to (DNS rebinding)."""


class DatabaseUnavailable(OrchestratorError):
    pass


class ProviderNotConfigured(OrchestratorError):
    """The provider or account is known but lacks the settings it needs."""


class IllegalTransition(Exception):
    """Postgres refused a transition that lifecycle.TRANSITIONS does not list (SQLSTATE
    TR001, migration 0011). A bug, not a client's error: deliberately no OrchestratorError,
    so the web layer answers 500 and logs it at ERROR with its traceback."""


class RejectReason(enum.StrEnum):
    """Why a webhook was refused; a label of the rejections metric, and the HTTP status's
    source (web/problems.py)."""

    NO_ENDPOINT = "no_endpoint"
    MEDIA_TYPE = "media_type"
    MALFORMED = "malformed"
    TOO_LARGE = "too_large"
    SIGNATURE = "signature"
    STALE = "stale"


class WebhookRejected(OrchestratorError):
    """A webhook that failed verification or could not be parsed; it changes nothing."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
