"""Dropbox Sign (formerly HelloSign): a 200 only queues the cancel; a callback confirms it.

POST {base}/signature_request/cancel/{id} and GET {base}/signature_request/{id}, HTTP Basic
with the API key as user name. Callbacks carry event_hash = hex HMAC-SHA256(api key,
event_time + event_type); see ../shared/seeds/README.md.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re
import time
import urllib.parse
from collections.abc import Mapping
from typing import Any, ClassVar

import aiohttp
import orjson

from orchestrator import errors
from orchestrator.domain.model import (
    CancelResult,
    Outcome,
    Queued,
    Refused,
    Settled,
    StatusResult,
    StillOpen,
    WebhookEvent,
)
from orchestrator.providers import base

ACK = "Hello API Event Received"

# What each event means for an open cancellation; other event types are stored and ignored.
_EFFECTS: dict[str, Settled] = {
    "signature_request_canceled": Settled(Outcome.CANCELED, ok=True),
    "signature_request_declined": Settled(Outcome.DECLINED, ok=True),
    "signature_request_expired": Settled(Outcome.EXPIRED, ok=True),
    "signature_request_all_signed": Settled(
        Outcome.COMPLETED,
        ok=False,
        error_code="completed",
        error_message="every signer signed before the cancel took effect",
    ),
}
_STATE_EFFECTS: dict[Outcome, Settled] = {
    Outcome.COMPLETED: _EFFECTS["signature_request_all_signed"],
    Outcome.DECLINED: _EFFECTS["signature_request_declined"],
    Outcome.EXPIRED: _EFFECTS["signature_request_expired"],
}


def event_hash(api_key: str, event_time: str, event_type: str) -> str:
    return hmac.new(
        api_key.encode(), (event_time + event_type).encode(), hashlib.sha256
    ).hexdigest()


def _error(answer: base.Answer) -> tuple[str, str]:
    body = answer.body if isinstance(answer.body, dict) else {}
    error = body.get("error")
    if not isinstance(error, dict):
        error = {}
    name = str(error.get("error_name") or f"http_{answer.status}")
    message = str(error.get("error_msg") or f"{answer.path} answered {answer.status}")
    return name, message


def _request_state(request: Mapping[str, Any], now: float) -> Outcome | None:
    """The final state a signature request object shows, or None while it is still open."""
    if request.get("is_complete"):
        return Outcome.COMPLETED
    if request.get("is_declined"):
        return Outcome.DECLINED
    codes = {s.get("status_code") for s in request.get("signatures") or [] if isinstance(s, dict)}
    expires_at = request.get("expires_at")
    if "expired" in codes or (isinstance(expires_at, int | float) and 0 < expires_at < now):
        return Outcome.EXPIRED
    return None


class DropboxSign(base.Provider):
    name = "dropbox_sign"
    webhook_names = ("dropbox_sign", "hellosign")
    webhook_ack: ClassVar[str] = ACK

    def check_account(self, account: base.Account) -> str | None:
        if account.secret is None:
            return f"dropbox_sign account {account.name!r} has no API key (DROPBOX_SIGN_API_KEY)"
        return None

    def _auth(self, account: base.Account) -> dict[str, str]:
        """HTTP Basic with the API key as user name and an empty password."""
        assert account.secret is not None
        token = base64.b64encode(f"{account.secret.get_secret_value()}:".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    async def cancel(
        self, http: aiohttp.ClientSession, account: base.Account, target: base.Target
    ) -> CancelResult:
        path = f"/signature_request/cancel/{base.segment(target.resource_id)}"
        answer = await base.call(http, account, "POST", path, headers=self._auth(account))
        if not isinstance(answer, base.Answer):
            return answer
        if answer.status == 200:
            return Queued(answer.evidence())
        if answer.status == 410:
            return Settled(Outcome.CANCELED, ok=True, evidence=answer.evidence())
        if answer.status in (401, 408, 409, 429) or answer.status >= 500:
            # 401 is our key, not the request: retrying lets a fixed key recover the backlog.
            return base.transient(answer, code=_error(answer)[0])
        name, message = _error(answer)
        if answer.status == 404:
            return Settled(
                Outcome.NOT_FOUND, False, answer.evidence(), error_code=name, error_message=message
            )
        # 400/403: refused. Whether it is final depends on the request's state (already
        # canceled by an attempt whose answer was lost, or completed): a status check decides.
        return Refused(name, message, answer.evidence())

    async def status(
        self, http: aiohttp.ClientSession, account: base.Account, target: base.Target
    ) -> StatusResult:
        path = f"/signature_request/{base.segment(target.resource_id)}"
        answer = await base.call(http, account, "GET", path, headers=self._auth(account))
        if not isinstance(answer, base.Answer):
            return answer
        if answer.status == 410:
            return Settled(Outcome.CANCELED, ok=True, evidence=answer.evidence())
        if answer.status == 404:
            name, message = _error(answer)
            return Settled(
                Outcome.NOT_FOUND, False, answer.evidence(), error_code=name, error_message=message
            )
        if answer.status != 200 or not isinstance(answer.body, dict):
            return base.transient(answer, code=_error(answer)[0])
        request = answer.body.get("signature_request") or {}
        outcome = _request_state(request, time.time())
        if outcome is None:
            return StillOpen(answer.evidence())
        effect = _STATE_EFFECTS[outcome]
        return Settled(
            effect.outcome,
            effect.ok,
            answer.evidence(),
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
        """Dropbox Sign retries a delivery for days, so old events are legitimate: a replay
        is caught by the inbox's duplicate key instead of a time window."""
        payload = _decode_body(headers.get("Content-Type", ""), body)
        event = payload.get("event")
        if not isinstance(event, dict):
            raise errors.WebhookRejected(
                errors.RejectReason.MALFORMED, "the callback has no 'event' object"
            )
        event_time, event_type, given_hash = (
            event.get("event_time"),
            event.get("event_type"),
            event.get("event_hash"),
        )
        if not all(isinstance(v, str) and v for v in (event_time, event_type, given_hash)):
            raise errors.WebhookRejected(
                errors.RejectReason.SIGNATURE,
                "event_time, event_type and event_hash are required strings",
            )
        assert isinstance(event_time, str) and isinstance(event_type, str)
        assert isinstance(given_hash, str)
        account = _verify(event, event_time, event_type, given_hash, accounts)
        base.reject_too_deep(payload)
        # The hash was verified in lower case: every case variant of it is this one event.
        verified_hash = given_hash.lower()

        request = payload.get("signature_request")
        resource_id = None
        if isinstance(request, dict) and isinstance(request.get("signature_request_id"), str):
            resource_id = request["signature_request_id"]
            if len(resource_id) > base.KEPT_STRING:
                raise errors.WebhookRejected(
                    errors.RejectReason.MALFORMED,
                    f"signature_request_id is longer than {base.KEPT_STRING} characters",
                )
        when = _unix_seconds(event_time)
        dedupe = hashlib.sha256(
            "|".join((resource_id or "", event_type, event_time, verified_hash)).encode()
        ).hexdigest()
        effect = _EFFECTS.get(event_type) if resource_id else None
        if effect is not None:
            effect = Settled(
                effect.outcome,
                effect.ok,
                {"event_type": event_type, "event_time": event_time},
                error_code=effect.error_code,
                error_message=effect.error_message,
            )
        return WebhookEvent(
            provider=self.name,
            account=account.name,
            resource_id=resource_id,
            event_type=event_type,
            event_time=when,
            dedupe_key=dedupe,
            payload=_kept(event, event_time, event_type, verified_hash, resource_id),
            effect=effect,
        )


#: 9999-12-31: the last second a timestamp column (and Python's datetime) can hold.
_LAST_SECOND = 253_402_300_799


def _unix_seconds(event_time: str) -> float | None:
    """`event_time` as Unix seconds (the documented form), or None for a time that cannot be
    read as one ("nan", "inf", "1e20", words): such an event is kept but never settles
    anything by its time, the same as an event with no time."""
    try:
        when = float(event_time)
    except ValueError:
        return None
    return when if math.isfinite(when) and 0 <= when <= _LAST_SECOND else None


def _kept(
    event: Mapping[str, Any],
    event_time: str,
    event_type: str,
    verified_hash: str,
    resource_id: str | None,
) -> dict[str, Any]:
    """What the inbox keeps of a callback: the fields verification and the lifecycle read.
    The rest of the body (titles, signers, files, whatever an attacker pads it with) is
    neither read nor stored."""
    metadata = event.get("event_metadata")
    reported = metadata.get("reported_for_account_id") if isinstance(metadata, dict) else None
    return base.kept(
        {
            "event_time": event_time,
            "event_type": event_type,
            "event_hash": verified_hash,
            "reported_for_account_id": reported if isinstance(reported, str) else None,
            "signature_request_id": resource_id,
        }
    )


def _verify(
    event: Mapping[str, Any],
    event_time: str,
    event_type: str,
    given_hash: str,
    accounts: list[base.Account],
) -> base.Account:
    """The account whose key made this hash; an account that declares its id is tried alone."""
    metadata = event.get("event_metadata")
    reported = metadata.get("reported_for_account_id") if isinstance(metadata, dict) else None
    declared = [a for a in accounts if a.account_id and a.account_id == reported]
    candidates = declared or [a for a in accounts if not a.account_id or reported is None]
    for account in candidates:
        if account.secret is None:
            continue
        expected = event_hash(account.secret.get_secret_value(), event_time, event_type)
        if hmac.compare_digest(expected.encode(), given_hash.lower().encode()):
            return account
    raise errors.WebhookRejected(
        errors.RejectReason.SIGNATURE, "event_hash does not match any configured account key"
    )


def _decode_body(content_type: str, body: bytes) -> dict[str, Any]:
    """The event JSON from a multipart `json` field, a form field, or a plain JSON body."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == "multipart/form-data":
        raw = _multipart_field(content_type, body, "json")
    elif media_type == "application/x-www-form-urlencoded":
        values = urllib.parse.parse_qs(body.decode(errors="replace")).get("json")
        raw = values[0].encode() if values else None
    elif media_type in ("application/json", "text/json"):
        raw = body
    else:
        raise errors.WebhookRejected(
            errors.RejectReason.MEDIA_TYPE,
            "send multipart/form-data with a 'json' field, or application/json",
        )
    if raw is None:
        raise errors.WebhookRejected(
            errors.RejectReason.MALFORMED, "the callback has no 'json' field"
        )
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise errors.WebhookRejected(
            errors.RejectReason.MALFORMED, f"the callback JSON is malformed: {exc}"
        ) from None
    if not isinstance(payload, dict):
        raise errors.WebhookRejected(
            errors.RejectReason.MALFORMED, "the callback JSON must be an object"
        )
    return payload


_BOUNDARY = re.compile(r'boundary="?([^";\s]+)"?', re.IGNORECASE)


def _multipart_field(content_type: str, body: bytes, name: str) -> bytes | None:
    """One form field of a multipart/form-data body (RFC 7578), found by splitting on the
    boundary. email.parser builds a whole MIME message to read this one field, which the
    benchmark measured at half of the webhook's CPU (docs/benchmarks.md)."""
    match = _BOUNDARY.search(content_type)
    if match is None:
        raise errors.WebhookRejected(
            errors.RejectReason.MALFORMED, "multipart body without a boundary"
        )
    parts = body.split(b"--" + match[1].encode())
    if len(parts) < 3 or not parts[-1].startswith(b"--"):
        raise errors.WebhookRejected(
            errors.RejectReason.MALFORMED, "the multipart body is malformed"
        )
    wanted = re.compile(rb';\s*name="?' + re.escape(name.encode()) + rb'"?\s*(;|$)', re.I)
    for part in parts[1:-1]:
        head, separator, content = part.partition(b"\r\n\r\n")
        if not separator:
            raise errors.WebhookRejected(
                errors.RejectReason.MALFORMED, "the multipart body is malformed"
            )
        for line in head.split(b"\r\n"):
            if line[:20].lower() == b"content-disposition:" and wanted.search(line):
                return content[:-2] if content.endswith(b"\r\n") else content
    return None
