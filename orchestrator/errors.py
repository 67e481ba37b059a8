"""The project's errors. The web layer turns each into an RFC 9457 problem; nothing else does."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError


class OrchestratorError(Exception):
    status = 500
    title = "Internal error"
    type_slug = "internal"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class NotFound(OrchestratorError):
    status = 404
    title = "Not found"
    type_slug = "not-found"


class Conflict(OrchestratorError):
    status = 409
    title = "Conflict"
    type_slug = "conflict"


class InvalidRequest(OrchestratorError):
    """422: `errors` lists each field at fault and why."""

    status = 422
    title = "Invalid request"
    type_slug = "invalid-request"

    def __init__(self, detail: str, errors: list[dict[str, str]]) -> None:
        super().__init__(detail, errors=errors)

    @classmethod
    def from_validation(cls, exc: ValidationError, what: str, prefix: str = "") -> InvalidRequest:
        fields = []
        for error in exc.errors(include_url=False):
            field = ".".join(str(part) for part in error["loc"]) or "body"
            message = "unknown field" if error["type"] == "extra_forbidden" else error["msg"]
            fields.append({"field": prefix + field, "message": message})
        names = ", ".join(f["field"] for f in fields)
        return cls(f"the {what} is invalid: {names}", fields)


class BadRequest(OrchestratorError):
    status = 400
    title = "Bad request"
    type_slug = "bad-request"


class Unauthorized(OrchestratorError):
    status = 401
    title = "Unauthorized"
    type_slug = "unauthorized"


class UnsupportedMediaType(OrchestratorError):
    status = 415
    title = "Unsupported media type"
    type_slug = "unsupported-media-type"


class DatabaseUnavailable(OrchestratorError):
    status = 503
    title = "Database unavailable"
    type_slug = "database-unavailable"


class ProviderNotConfigured(OrchestratorError):
    """The provider or account is known but lacks the settings it needs (422 at enqueue)."""

    status = 422
    title = "Provider not configured"
    type_slug = "provider-not-configured"


class WebhookRejected(OrchestratorError):
    """A webhook that failed verification or could not be parsed; it changes nothing."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.title = {
            400: "Malformed webhook",
            401: "Webhook signature invalid",
            413: "Webhook too large",
            415: "Unsupported webhook content type",
        }.get(status, "Webhook rejected")
        self.type_slug = "webhook-rejected"
