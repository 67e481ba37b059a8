"""Aptly stand-in: ``PATCH /v1/actions/{actionId}/cancel-action``.

Like Truto, Aptly confirms in the response (``data.status.actionStatusName``); every answer
is wrapped in ``{statusCode, timestamp, message}`` and a 429 says how long to wait in
``Retry-After`` seconds.
"""

from __future__ import annotations

import dataclasses
import http
import json
import time
import uuid
from typing import Any

from aiohttp import web

from orchestrator.simulator.base import CommonSettings, ProviderSimulator
from orchestrator.simulator.faults import Faults
from orchestrator.simulator.records import RequestRecord, iso

BODY_FIELDS = ("status", "documentId", "roleId", "delegationId", "decisionId")


@dataclasses.dataclass
class AptlySettings(CommonSettings):
    token: str = "sim-aptly-token"
    tenant_id: str = "sim-tenant"
    # True: cancelling a cancelled action answers 200 with it again (our reading of a PATCH
    # that sets a status, docs/providers.md); False: 400 "Action already cancelled".
    idempotent_cancel: bool = True


def _stable_uuid(*parts: str) -> str:
    """Ids that stay the same for the same action, so repeated answers match."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "aptly:" + ":".join(parts)))


def _reply(status: int, message: str, data: dict[str, Any] | None = None) -> web.Response:
    body: dict[str, Any] = {"statusCode": status, "timestamp": iso(time.time()), "message": message}
    if data is not None:
        body["data"] = data
    return web.json_response(body, status=status)


class AptlySimulator(ProviderSimulator):
    name = "aptly"
    settings: AptlySettings

    def __init__(self, settings: AptlySettings | None = None, faults: Faults | None = None) -> None:
        super().__init__(settings or AptlySettings(), faults)

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_patch("/v1/actions/{actionId}/cancel-action", self._handle_cancel)
        return app

    # --- ProviderSimulator hooks ------------------------------------------------------

    def authenticate(self, request: web.Request) -> str | None:
        if request.headers.get("Authorization", "") != f"Bearer {self.settings.token}":
            return None
        return self.settings.tenant_id

    def unauthorized_response(self) -> web.Response:
        return _reply(401, "Unauthorized")

    def rate_limited_response(self, now: float, until: float, limit: int) -> web.Response:
        response = _reply(429, "Too Many Requests")
        response.headers["Retry-After"] = str(round(until - now))
        return response

    def server_error_response(self, status: int) -> web.Response:
        return _reply(status, http.HTTPStatus(status).phrase)

    # --- the API ----------------------------------------------------------------------

    async def _handle_cancel(self, request: web.Request) -> web.StreamResponse:
        action_id = request.match_info["actionId"]
        return await self.serve(
            request, "cancel", action_id, lambda _: self._cancel(request, action_id)
        )

    async def _cancel(self, request: web.Request, action_id: str) -> web.Response:
        try:
            body: Any = json.loads(await request.read() or b"{}")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return _reply(400, "Invalid request body")
        rec = self.record(action_id)
        if rec.state == "open":
            rec.state = "canceled"
            rec.canceled_at = time.time()
            rec.last_cancel_body = body
            return _reply(200, "Success", self.action(rec))
        if rec.state == "canceled":
            rec.duplicate_cancel_calls += 1
            self.counters.duplicate_cancel_calls += 1
            if self.settings.idempotent_cancel:
                return _reply(200, "Success", self.action(rec))
            return _reply(400, "Action already cancelled")
        if rec.state == "not_found":
            return _reply(404, "Action not found")
        return _reply(400, f"Action already {rec.state}")

    def action(self, rec: RequestRecord) -> dict[str, Any]:
        """A trimmed version of the action object on the cancel page."""
        body = rec.last_cancel_body if isinstance(rec.last_cancel_body, dict) else {}
        ids = {f: body.get(f) or _stable_uuid(rec.id, f) for f in BODY_FIELDS[1:]}
        status_name = "Cancelled" if rec.state == "canceled" else "To Do"
        return {
            "id": _stable_uuid(rec.id),
            "actionId": rec.id,
            "tenantId": self.settings.tenant_id,
            "actionName": f"Simulated action {rec.id}",
            "description": "An action served by the Aptly simulator.",
            **ids,
            "actionStatusId": _stable_uuid("status", status_name),
            "createdAt": iso(rec.created_at),
            "updateAt": iso(rec.canceled_at or rec.created_at),
            "isDeleted": False,
            "isSystemGenerated": False,
            "status": {
                "id": _stable_uuid("status", status_name),
                "actionStatusName": status_name,
                "isEnabled": True,
            },
        }
