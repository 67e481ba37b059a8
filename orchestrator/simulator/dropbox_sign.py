"""Dropbox Sign stand-in: ``/v3/signature_request/cancel/{id}`` and ``/v3/signature_request/{id}``.

The point of this provider is that a 200 from cancel only means *queued*: the request turns
``canceled`` a moment later and only the ``signature_request_canceled`` callback says so.
Callbacks are multipart posts with one ``json`` field, signed with the account's API key,
and are retried until the receiver answers 200 with ``Hello API Event Received``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import json
import math
import time
import uuid
from typing import Any

import aiohttp
from aiohttp import web

from orchestrator.simulator import delivery
from orchestrator.simulator.base import CommonSettings, ProviderSimulator
from orchestrator.simulator.faults import Faults
from orchestrator.simulator.records import RequestRecord

ACK_TEXT = "Hello API Event Received"

# What an emitted event does to the request, for events that change it.
EVENT_STATES = {
    "signature_request_all_signed": "completed",
    "signature_request_declined": "declined",
    "signature_request_expired": "expired",
    "signature_request_canceled": "canceled",
    "signature_request_destroyed": "not_found",
}

_SIGNATURE_STATUS = {"completed": "signed", "declined": "declined", "expired": "expired"}

_CANNOT_CANCEL = {
    "completed": "This request has already been signed by all signers and cannot be canceled",
    "declined": "This request has been declined and cannot be canceled",
    "expired": "This request has expired and cannot be canceled",
}


@dataclasses.dataclass
class DropboxSignSettings(CommonSettings):
    api_key: str = "sim-dropbox-sign-api-key"
    account_id: str = "sim-account"
    # More accounts, API key -> account id; each request's events are signed with the key
    # of the account that first called for it.
    extra_api_keys: dict[str, str] = dataclasses.field(default_factory=dict)
    callback_url: str | None = None
    callback_format: str = "multipart"  # or "json": the event as the raw request body
    callback_delay_s: float = 0.05
    callback_max_tries: int = 8
    callback_backoff_s: float = 0.2
    callback_backoff_max_s: float = 5.0
    callback_timeout_s: float = 5.0


def event_hash(api_key: str, event_time: str, event_type: str) -> str:
    """Dropbox Sign's ``event_hash``: hex HMAC-SHA256 of time + type under the API key."""
    message = (event_time + event_type).encode()
    return hmac.new(api_key.encode(), message, hashlib.sha256).hexdigest()


def _error(status: int, name: str, message: str) -> web.Response:
    return web.json_response({"error": {"error_msg": message, "error_name": name}}, status=status)


def _deleted() -> web.Response:
    return _error(410, "deleted", "This resource has been deleted")


def _not_found() -> web.Response:
    return _error(404, "not_found", "Not found")


class DropboxSignSimulator(ProviderSimulator):
    name = "dropbox_sign"
    reset_header = "X-Ratelimit-Reset"
    settings: DropboxSignSettings

    def __init__(
        self, settings: DropboxSignSettings | None = None, faults: Faults | None = None
    ) -> None:
        super().__init__(settings or DropboxSignSettings(), faults)

    @property
    def callback_url(self) -> str | None:
        return self.settings.callback_url

    @callback_url.setter
    def callback_url(self, url: str | None) -> None:
        self.settings.callback_url = url

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v3/signature_request/cancel/{id}", self._handle_cancel)
        app.router.add_get("/v3/signature_request/{id}", self._handle_status)
        return app

    # --- ProviderSimulator hooks ------------------------------------------------------

    def authenticate(self, request: web.Request) -> str | None:
        """The password is ignored, as Dropbox Sign does; the user name must be the key."""
        header = request.headers.get("Authorization", "")
        try:
            auth = aiohttp.BasicAuth.decode(header)
        except ValueError:
            return None
        return self._accounts().get(auth.login)

    def _accounts(self) -> dict[str, str]:
        """API key -> account id."""
        return {**self.settings.extra_api_keys, self.settings.api_key: self.settings.account_id}

    def _signer(self, rec: RequestRecord | None) -> tuple[str, str]:
        """The (API key, account id) an event about ``rec`` is reported for."""
        if rec is not None and rec.account is not None:
            for key, account_id in self._accounts().items():
                if account_id == rec.account:
                    return key, account_id
        return self.settings.api_key, self.settings.account_id

    def unauthorized_response(self) -> web.Response:
        return _error(401, "unauthorized", "Unauthorized api key")

    def rate_limited_response(self, now: float, until: float, limit: int) -> web.Response:
        response = _error(429, "exceeded_rate", "Rate limit exceeded")
        response.headers["X-RateLimit-Limit"] = str(limit)
        response.headers["X-RateLimit-Remaining"] = "0"
        response.headers[self.reset_header] = str(int(until))
        return response

    def announced_until(self, now: float, until: float) -> float:
        """``X-Ratelimit-Reset`` is a whole Unix second, so the wait rounds up to it."""
        return float(math.ceil(until))

    def server_error_response(self, status: int) -> web.Response:
        if status == 500:
            return _error(500, "internal_error", "An internal error occurred")
        return _error(status, "service_unavailable", "The service is temporarily unavailable")

    # --- the API ----------------------------------------------------------------------

    async def _handle_cancel(self, request: web.Request) -> web.StreamResponse:
        request_id = request.match_info["id"]
        return await self.serve(request, "cancel", request_id, lambda _: self._cancel(request_id))

    async def _handle_status(self, request: web.Request) -> web.StreamResponse:
        request_id = request.match_info["id"]
        return await self.serve(request, "status", request_id, lambda _: self._status(request_id))

    async def _cancel(self, request_id: str) -> web.Response:
        rec = self.record(request_id)
        state = rec.state
        if state == "open":
            if self.faults.chance("lose_cancel_rate"):
                rec.lost_cancels += 1
                self.counters.lost_cancels += 1
            else:
                rec.state = "canceling"
                self.spawn(self._complete_cancel(rec), name=f"cancel-{request_id}")
            return web.json_response({})
        if state in ("canceling", "canceled"):
            rec.duplicate_cancel_calls += 1
            self.counters.duplicate_cancel_calls += 1
            return web.json_response({}) if state == "canceling" else _deleted()
        if state == "not_found":
            return _not_found()
        return _error(400, "bad_request", _CANNOT_CANCEL[state])

    async def _status(self, request_id: str) -> web.Response:
        rec = self.record(request_id)
        if rec.state == "canceled":
            return _deleted()
        if rec.state == "not_found":
            return _not_found()
        return web.json_response({"signature_request": self.signature_request(rec)})

    async def _complete_cancel(self, rec: RequestRecord) -> None:
        await asyncio.sleep(self.settings.callback_delay_s)
        # A signer may have finished, or the simulator been reset, while the cancel waited.
        if self.records.get(rec.id) is not rec or rec.state != "canceling":
            return
        rec.state = "canceled"
        rec.canceled_at = time.time()
        self._dispatch(rec, "signature_request_canceled")

    # --- events -----------------------------------------------------------------------

    def signature_request(self, rec: RequestRecord) -> dict[str, Any]:
        """The object ``GET /signature_request/{id}`` and the callbacks carry."""
        expired = rec.state == "expired"
        return {
            "signature_request_id": rec.id,
            "title": f"Simulated request {rec.id}",
            "is_complete": rec.state == "completed",
            "is_declined": rec.state == "declined",
            "has_error": False,
            "created_at": int(rec.created_at),
            "expires_at": int(time.time()) - 3600 if expired else None,
            "signatures": [
                {
                    "signature_id": hashlib.sha256(rec.id.encode()).hexdigest()[:32],
                    "signer_email_address": "signer@example.com",
                    "signer_name": "Simulated Signer",
                    "status_code": _SIGNATURE_STATUS.get(rec.state, "awaiting_signature"),
                }
            ],
        }

    def emit(self, request_id: str | None, event_type: str) -> dict[str, Any]:
        """Post an event as if something happened at Dropbox Sign (a signer finished,
        declined, ...). Events in ``EVENT_STATES`` change the request first; a
        ``callback_test`` (``request_id`` None) carries no signature request."""
        rec: RequestRecord | None = None
        if request_id is not None:
            rec = self.record(request_id)
            new_state = EVENT_STATES.get(event_type)
            if new_state is not None:
                rec.state = new_state
                if new_state == "canceled":
                    rec.canceled_at = time.time()
        return self._dispatch(rec, event_type)

    def send_callback(
        self, request_id: str | None, event_type: str, event_time: str | None = None
    ) -> dict[str, Any]:
        """Post a signed event about ``request_id`` without anything happening to it, dated
        ``event_time`` (Unix seconds as a string; now when None).

        The hash covers only time and type, so this is exactly what a replay of a genuine
        event onto another request, or a late redelivery of an old one, looks like."""
        rec = None if request_id is None else self.record(request_id)
        return self._dispatch(rec, event_type, event_time)

    def _dispatch(
        self, rec: RequestRecord | None, event_type: str, event_time: str | None = None
    ) -> dict[str, Any]:
        if event_time is None:
            event_time = str(int(time.time()))
        api_key, account_id = self._signer(rec)
        event: dict[str, Any] = {
            "event": {
                "event_type": event_type,
                "event_time": event_time,
                "event_hash": event_hash(api_key, event_time, event_type),
                "event_metadata": {
                    "related_signature_id": None,
                    "reported_for_account_id": account_id,
                    "reported_for_app_id": None,
                    "event_message": None,
                },
            }
        }
        if rec is not None:
            event["signature_request"] = self.signature_request(rec)
            rec.events.append(event_type)
        self.events.append(event)
        body, content_type = self._encode(json.dumps(event))
        s = self.settings
        policy = delivery.RetryPolicy(
            max_tries=s.callback_max_tries,
            backoff_s=s.callback_backoff_s,
            backoff_max_s=s.callback_backoff_max_s,
            timeout_s=s.callback_timeout_s,
        )
        delivery.send(
            self, s.callback_url, body, {"Content-Type": content_type}, _acknowledged, policy
        )
        return event

    def _encode(self, text: str) -> tuple[bytes, str]:
        if self.settings.callback_format == "json":
            return text.encode(), "application/json"
        boundary = uuid.uuid4().hex
        body = (
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="json"\r\n\r\n'
            f"{text}\r\n"
            f"--{boundary}--\r\n"
        )
        return body.encode(), f"multipart/form-data; boundary={boundary}"


def _acknowledged(status: int, text: str) -> bool:
    return status == 200 and ACK_TEXT in text
