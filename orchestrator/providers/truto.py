"""Truto's unified e-signature API: the cancel's 2xx answer is the confirmation.

POST {base}/unified/e-signature/workflows/cancel?integrated_account_id=..., Bearer token,
body {id, message, remote_data}. Errors are {statusCode, error, message}; those from the
provider behind Truto add truto_is_remote_error and raw_response, kept in last_error.
Webhooks are signed: X-Truto-Signature: format=sha256,v=<hex or base64 HMAC of the body>.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

import aiohttp
import orjson
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from orchestrator import errors
from orchestrator.domain.model import (
    CancelResult,
    Outcome,
    Settled,
    StatusResult,
    StillOpen,
    WebhookEvent,
)
from orchestrator.providers import base

NonEmpty = Annotated[str, StringConstraints(min_length=1, max_length=2000)]


class TrutoParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    integrated_account_id: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    message: NonEmpty
    remote_data: dict[str, Any] = Field(default_factory=dict)


# What a final workflow state means for a cancel; an active or paused workflow is still open.
_WORKFLOW_STATES: dict[str, Settled] = {
    "cancelled": Settled(Outcome.CANCELED, ok=True),
    "canceled": Settled(Outcome.CANCELED, ok=True),
    "declined": Settled(Outcome.DECLINED, ok=True),
    "expired": Settled(Outcome.EXPIRED, ok=True),
    "completed": Settled(
        Outcome.COMPLETED,
        ok=False,
        error_code="completed",
        error_message="the workflow completed before the cancel took effect",
    ),
}


def signature(secret: str, body: bytes) -> bytes:
    return hmac.new(secret.encode(), body, hashlib.sha256).digest()


def _error_fields(answer: base.Answer) -> tuple[str, str, dict[str, Any] | None]:
    body = answer.body if isinstance(answer.body, dict) else {}
    code = str(body.get("error") or f"http_{answer.status}").lower().replace(" ", "_")
    message = str(body.get("message") or f"{answer.path} answered {answer.status}")
    details = None
    if body.get("truto_is_remote_error"):
        details = {"truto_is_remote_error": True, "raw_response": body.get("raw_response")}
    return code, message, details


class Truto(base.Provider):
    name = "truto"
    webhook_names = ("truto",)
    params_model = TrutoParams

    def validate_params(self, params: dict[str, Any]) -> dict[str, Any]:
        return base.parse_params(TrutoParams, params, self.name).model_dump()

    def check_account(self, account: base.Account) -> str | None:
        if account.secret is None:
            return f"truto account {account.name!r} has no API token (TRUTO_API_TOKEN)"
        return None

    async def cancel(
        self, http: aiohttp.ClientSession, account: base.Account, target: base.Target
    ) -> CancelResult:
        assert account.secret is not None
        params = TrutoParams.model_validate(target.params)
        path = "/unified/e-signature/workflows/cancel"
        answer = await base.call(
            http,
            account,
            "POST",
            path,
            params={"integrated_account_id": params.integrated_account_id},
            headers={"Authorization": f"Bearer {account.secret.get_secret_value()}"},
            json={
                "id": target.resource_id,
                "message": params.message,
                "remote_data": params.remote_data,
            },
        )
        if not isinstance(answer, base.Answer):
            return answer
        code, message, details = _error_fields(answer)
        workflow = answer.body if isinstance(answer.body, dict) else {}
        return base.classify_cancel(
            answer,
            message=message,
            code=code,
            details=details,
            provider_state={k: workflow.get(k) for k in ("id", "status", "stage") if k in workflow},
        )

    async def status(
        self, http: aiohttp.ClientSession, account: base.Account, target: base.Target
    ) -> StatusResult:
        """Read the workflow back. Ironclad's own status (remote_data.status) tells a
        cancelled workflow from a completed one; Truto's unified status is `inactive` for
        both (docs/providers.md)."""
        assert account.secret is not None
        params = TrutoParams.model_validate(target.params)
        path = f"/unified/e-signature/workflows/{base.segment(target.resource_id)}"
        answer = await base.call(
            http,
            account,
            "GET",
            path,
            params={"integrated_account_id": params.integrated_account_id},
            headers={"Authorization": f"Bearer {account.secret.get_secret_value()}"},
        )
        if not isinstance(answer, base.Answer):
            return answer
        code, message, details = _error_fields(answer)
        if answer.status == 404:
            return Settled(
                Outcome.NOT_FOUND,
                False,
                answer.evidence(),
                error_code=code,
                error_message=message,
                error_details=details,
            )
        if answer.status != 200 or not isinstance(answer.body, dict):
            return base.transient(answer, code=code)
        workflow: dict[str, Any] = answer.body
        remote, stage = workflow.get("remote_data"), workflow.get("stage")
        state = str(
            (remote.get("status") if isinstance(remote, dict) else None)
            or (stage.get("id") if isinstance(stage, dict) else None)
            or ""
        ).lower()
        effect = _WORKFLOW_STATES.get(state)
        if effect is None:
            return StillOpen(answer.evidence())
        return Settled(
            effect.outcome,
            effect.ok,
            answer.evidence(),
            provider_state={k: workflow.get(k) for k in ("id", "status", "stage")},
            error_code=effect.error_code,
            error_message=effect.error_message,
        )

    def parse_webhook(
        self,
        headers: Mapping[str, str],
        body: bytes,
        accounts: list[base.Account],
        now: float,
        replay_window_s: float = 300.0,
        clock_skew_s: float = 300.0,
    ) -> WebhookEvent:
        account = _verify(headers.get("X-Truto-Signature", ""), body, accounts)
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise errors.WebhookRejected(
                errors.RejectReason.MALFORMED, "the webhook body is not valid JSON"
            ) from None
        if not isinstance(payload, dict) or not isinstance(payload.get("id"), str):
            raise errors.WebhookRejected(errors.RejectReason.MALFORMED, "the webhook needs an 'id'")
        base.reject_too_deep(payload)
        created = _timestamp(payload.get("created_at"))
        if created is None:
            raise errors.WebhookRejected(
                errors.RejectReason.MALFORMED, "the webhook needs a 'created_at' time"
            )
        if now - created > replay_window_s:
            raise errors.WebhookRejected(
                errors.RejectReason.STALE,
                f"the event is older than the {replay_window_s:.0f}s replay window",
            )
        if created - now > clock_skew_s:
            raise errors.WebhookRejected(
                errors.RejectReason.STALE,
                f"the event is dated more than {clock_skew_s:.0f}s in the future",
            )
        event_payload = payload.get("payload")
        resource_id = None
        if isinstance(event_payload, dict):
            record = event_payload.get("record") or event_payload
            if isinstance(record, dict) and isinstance(record.get("id"), str):
                resource_id = record["id"]
        event_type = str(payload.get("event") or "unknown")[: base.KEPT_STRING]
        if resource_id is not None:
            resource_id = resource_id[: base.KEPT_STRING]
        return WebhookEvent(
            provider=self.name,
            account=account.name,
            resource_id=resource_id,
            event_type=event_type,
            event_time=created,
            dedupe_key=payload["id"],
            # Kept: the fields read here, never the body (the record and its environment).
            payload=base.kept(
                {
                    "id": payload["id"],
                    "event": event_type,
                    "created_at": created,
                    "record_id": resource_id,
                }
            ),
            effect=None,  # the cancel's own answer confirms; events are kept for the record
        )


def _verify(header: str, body: bytes, accounts: list[base.Account]) -> base.Account:
    """Check the signature before anything in the body is read."""
    parts = dict(
        (name.strip(), value.strip())
        for name, _, value in (p.partition("=") for p in header.split(","))
        if value
    )
    if parts.get("format") != "sha256" or not parts.get("v"):
        raise errors.WebhookRejected(
            errors.RejectReason.SIGNATURE, "missing or malformed X-Truto-Signature"
        )
    given = parts["v"].strip()
    candidates: list[bytes] = []
    with contextlib.suppress(ValueError):
        candidates.append(bytes.fromhex(given))
    with contextlib.suppress(binascii.Error, ValueError):
        candidates.append(base64.b64decode(given, validate=True))
    for account in accounts:
        if account.webhook_secret is None:
            continue
        expected = signature(account.webhook_secret.get_secret_value(), body)
        if any(hmac.compare_digest(expected, c) for c in candidates):
            return account
    raise errors.WebhookRejected(
        errors.RejectReason.SIGNATURE, "X-Truto-Signature does not match any webhook secret"
    )


def _timestamp(value: object) -> float | None:
    """created_at as seconds since the epoch. Truto's documentation writes it
    `2024-09-10 12:00:00`: UTC, with no zone designator; ISO 8601 with `T` and `Z` (or an
    offset) may also come. A time without a zone is read as UTC, never in the host's zone:
    on a host in New York a fresh event would otherwise be five hours in the future."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.timestamp()
    return None
