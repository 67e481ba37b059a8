"""Truto stand-in: the unified e-signature workflow cancel and read, Ironclad behind them.

``POST /unified/e-signature/workflows/cancel?integrated_account_id=...`` answers
synchronously: the 200 carries the cancelled workflow, so there is no queued state and no
lost cancel here. ``GET /unified/e-signature/workflows/{id}?integrated_account_id=...`` reads
a workflow back (the status check). Errors that come from the provider behind Truto
(Ironclad) carry ``truto_is_remote_error`` and the ``raw_response``; the rate limit is per
integrated account, with Truto's normalised ``ratelimit-*`` headers. docs/providers.md
writes down the shapes and which of them are assumptions.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import hmac
import http
import json
import time
import uuid
from typing import Any

from aiohttp import web

from orchestrator.simulator import delivery
from orchestrator.simulator.base import CommonSettings, ProviderSimulator
from orchestrator.simulator.faults import Faults
from orchestrator.simulator.records import RequestRecord, iso

CANCEL_PATH = "/unified/e-signature/workflows/cancel"
WORKFLOW_PATH = "/unified/e-signature/workflows/{id}"

# How each simulated state reads in the unified workflow: (status, stage id, stage name,
# Ironclad's own status in remote_data). Truto's unified status has no "cancelled" or
# "completed", so both are "inactive" and only the stage and remote_data tell them apart.
# Ironclad knows no declined or expired workflow; those rows are the simulator's own.
_WORKFLOW_STATES = {
    "open": ("active", "review", "Review", "active"),
    "canceled": ("inactive", "cancelled", "Cancelled", "cancelled"),
    "completed": ("inactive", "completed", "Completed", "completed"),
    "declined": ("inactive", "declined", "Declined", "declined"),
    "expired": ("inactive", "expired", "Expired", "expired"),
}


@dataclasses.dataclass
class TrutoSettings(CommonSettings):
    token: str = "sim-truto-token"
    webhook_url: str | None = None
    webhook_secret: str = "sim-truto-webhook-secret"
    environment_id: str = "sim-environment"
    webhook_id: str = "sim-webhook"
    webhook_max_tries: int = 4
    webhook_backoff_s: float = 0.2
    webhook_backoff_max_s: float = 5.0
    webhook_timeout_s: float = 5.0
    # False: a cancel of a cancelled workflow is Ironclad's 400 INVALID_STATE, passed on as a
    # remote error (our reading, docs/providers.md); True: 200 with the workflow again.
    idempotent_cancel: bool = False


def documented_time(ts: float) -> str:
    """A webhook's created_at as Truto's documentation writes it: `2024-09-10 12:00:00`,
    UTC with a space and no zone designator (../shared/seeds/README.md)."""
    return datetime.datetime.fromtimestamp(ts, tz=datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")


def signature(secret: str, body: bytes) -> str:
    """The ``X-Truto-Signature`` header value for ``body``."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return f"format=sha256,v={digest}"


def _error(status: int, message: str, raw: dict[str, Any] | None = None) -> web.Response:
    body: dict[str, Any] = {
        "statusCode": status,
        "error": http.HTTPStatus(status).phrase,
        "message": message,
    }
    if raw is not None:
        body["truto_is_remote_error"] = True
        body["raw_response"] = raw
    return web.json_response(body, status=status)


def _workflow_not_found() -> web.Response:
    """Ironclad's documented 404 body, passed through by Truto as ``raw_response``."""
    raw = {"code": "NOT_FOUND", "message": "workflow does not exist", "param": "workflowId"}
    return _error(404, "Workflow not found", raw)


class TrutoSimulator(ProviderSimulator):
    name = "truto"
    reset_header = "ratelimit-reset"
    settings: TrutoSettings

    def __init__(self, settings: TrutoSettings | None = None, faults: Faults | None = None) -> None:
        super().__init__(settings or TrutoSettings(), faults)

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post(CANCEL_PATH, self._handle_cancel)
        app.router.add_get(WORKFLOW_PATH, self._handle_get)
        return app

    # --- ProviderSimulator hooks ------------------------------------------------------

    def authenticate(self, request: web.Request) -> str | None:
        """The rate-limit account is the integrated account: that is what Truto meters."""
        if request.headers.get("Authorization", "") != f"Bearer {self.settings.token}":
            return None
        return request.query.get("integrated_account_id", "")

    def unauthorized_response(self) -> web.Response:
        return _error(401, "Invalid API token")

    def rate_limited_response(self, now: float, until: float, limit: int) -> web.Response:
        response = _error(429, "Rate limit exceeded")
        response.headers["ratelimit-limit"] = str(limit)
        response.headers["ratelimit-remaining"] = "0"
        response.headers[self.reset_header] = str(round(until - now))
        return response

    def server_error_response(self, status: int) -> web.Response:
        return _error(status, f"{http.HTTPStatus(status).phrase} (simulated)")

    # --- the API ----------------------------------------------------------------------

    async def _handle_cancel(self, request: web.Request) -> web.StreamResponse:
        try:
            body: Any = json.loads(await request.read() or b"null")
        except ValueError:
            body = None
        request_id = body.get("id") if isinstance(body, dict) else None
        if not isinstance(request_id, str) or not request_id:
            request_id = None
        return await self.serve(
            request, "cancel", request_id, lambda _: self._cancel(request, body)
        )

    async def _handle_get(self, request: web.Request) -> web.StreamResponse:
        workflow_id = request.match_info["id"]
        return await self.serve(
            request, "status", workflow_id, lambda _: self._get(request, workflow_id)
        )

    async def _cancel(self, request: web.Request, body: Any) -> web.Response:
        if not request.query.get("integrated_account_id"):
            return _error(400, "integrated_account_id is required")
        if not isinstance(body, dict):
            return _error(400, "Request body must be a JSON object")
        for field in ("id", "message"):
            if not isinstance(body.get(field), str) or not body[field]:
                return _error(400, f"{field} is required")
        remote_data = body.get("remote_data", {})
        if not isinstance(remote_data, dict):
            return _error(400, "remote_data must be an object")
        rec = self.record(body["id"])
        if rec.state == "open":
            rec.state = "canceled"
            rec.canceled_at = time.time()
            rec.last_cancel_body = body
            return web.json_response(self.workflow(rec))
        if rec.state == "canceled":
            rec.duplicate_cancel_calls += 1
            self.counters.duplicate_cancel_calls += 1
            if self.settings.idempotent_cancel:
                return web.json_response(self.workflow(rec))
        if rec.state == "not_found":
            return _workflow_not_found()
        # Ironclad's documented answer to an action the workflow's state forbids.
        message = f"workflow is {_WORKFLOW_STATES[rec.state][3]} and cannot be cancelled"
        raw = {"code": "INVALID_STATE", "message": message, "param": "workflowId"}
        return _error(400, message, raw)

    async def _get(self, request: web.Request, workflow_id: str) -> web.Response:
        if not request.query.get("integrated_account_id"):
            return _error(400, "integrated_account_id is required")
        rec = self.record(workflow_id)
        if rec.state == "not_found":
            return _workflow_not_found()
        return web.json_response(self.workflow(rec))

    def workflow(self, rec: RequestRecord) -> dict[str, Any]:
        """The unified workflow object, as the cancel and the read answer it.

        ``remote_data`` is a trimmed Ironclad workflow (its ``status`` is one of active,
        paused, completed, cancelled; ``step`` its stage)."""
        status, stage_id, stage_name, remote_status = _WORKFLOW_STATES[rec.state]
        updated = iso(rec.canceled_at or rec.created_at)
        body = rec.last_cancel_body if isinstance(rec.last_cancel_body, dict) else {}
        return {
            "id": rec.id,
            "name": f"Simulated workflow {rec.id}",
            "description": None,
            "type": "contract",
            "status": status,
            "stage": {"id": stage_id, "name": stage_name},
            "created_at": iso(rec.created_at),
            "updated_at": updated,
            "created_by": {"id": "sim-user", "name": "Simulated User"},
            "custom_fields": {},
            "urls": [{"type": "view", "url": f"https://ironclad.example/workflows/{rec.id}"}],
            "remote_data": {
                "id": rec.id,
                "title": f"Simulated workflow {rec.id}",
                "status": remote_status,
                "step": stage_name,
                "isCancelled": rec.state == "canceled",
                "isComplete": rec.state == "completed",
                "created": iso(rec.created_at),
                "lastUpdated": updated,
                "comment": body.get("message"),
            },
        }

    # --- webhooks ---------------------------------------------------------------------

    def emit_webhook(
        self, event: str, payload: dict[str, Any], created_at: str | None = None
    ) -> dict[str, Any]:
        """Send a webhook to ``settings.webhook_url``; any 2xx counts as delivered.
        ``created_at`` (now when None) lets a test send one dated in the past or future."""
        message = {
            "id": str(uuid.uuid4()),
            "event": event,
            "payload": payload,
            "environment_id": self.settings.environment_id,
            "created_at": documented_time(time.time()) if created_at is None else created_at,
            "webhook_id": self.settings.webhook_id,
        }
        self.events.append(message)
        raw = json.dumps(message).encode()
        headers = {
            "Content-Type": "application/json",
            "X-Truto-Signature": signature(self.settings.webhook_secret, raw),
        }
        s = self.settings
        policy = delivery.RetryPolicy(
            max_tries=s.webhook_max_tries,
            backoff_s=s.webhook_backoff_s,
            backoff_max_s=s.webhook_backoff_max_s,
            timeout_s=s.webhook_timeout_s,
        )
        delivery.send(self, s.webhook_url, raw, headers, _accepted, policy)
        return message

    def emit(
        self, request_id: str | None, event_type: str, created_at: str | None = None
    ) -> dict[str, Any]:
        """A webhook about one workflow, carrying its current unified object."""
        payload = {} if request_id is None else self.workflow(self.record(request_id))
        return self.emit_webhook(event_type, payload, created_at)


def _accepted(status: int, _text: str) -> bool:
    return 200 <= status < 300
