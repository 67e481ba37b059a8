"""The one interface every provider adapter implements, and the HTTP plumbing they share.

An adapter turns a cancellation into provider calls and provider answers into the domain's
results (Queued, Settled, RetryLater, StillOpen). Webhook verification and parsing are pure
functions of headers and bytes, so they are tested without a network.
"""

from __future__ import annotations

import abc
import email.utils
import logging
import math
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any, ClassVar

import aiohttp
import orjson
from pydantic import BaseModel, SecretStr, ValidationError
from yarl import URL

from orchestrator import errors
from orchestrator.domain.model import (
    CancelResult,
    Outcome,
    Refused,
    RetryLater,
    Settled,
    StatusResult,
    StillOpen,
    WebhookEvent,
)

log = logging.getLogger(__name__)

# How much of a provider's answer we keep as evidence: enough to explain, never a whole document.
_EVIDENCE_BODY_LIMIT = 4096
#: A verified event is stored as the few fields the service uses (each adapter's `_kept`),
#: never its body: each string at most this long, the whole at most KEPT_EVENT_BYTES of JSON.
KEPT_STRING = 256
KEPT_EVENT_BYTES = 2048
#: JSON nested deeper than this is refused, in a request or a verified callback: no event
#: needs it, and PostgreSQL's encoder stops at 254 levels.
MAX_JSON_DEPTH = 64
_RATE_HEADERS = (
    "retry-after",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
)


@dataclass(frozen=True)
class Account:
    """One set of credentials at one provider. Secrets stay SecretStr until the call."""

    provider: str
    name: str
    base_url: str | None
    secret: SecretStr | None = None
    webhook_secret: SecretStr | None = None
    rate_limit_per_min: float | None = None
    account_id: str | None = None

    @property
    def key(self) -> str:
        return f"{self.provider}:{self.name}"


@dataclass(frozen=True)
class Target:
    """What an adapter needs to know about the cancellation it acts on."""

    resource_id: str
    reason: str | None = None
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Answer:
    """A provider's HTTP answer, reduced to what classification and evidence need."""

    method: str
    path: str
    status: int
    headers: Mapping[str, str]
    body: Any

    def evidence(self) -> dict[str, Any]:
        body = self.body
        if isinstance(body, str) and len(body) > _EVIDENCE_BODY_LIMIT:
            body = body[:_EVIDENCE_BODY_LIMIT] + "…"
        elif not isinstance(body, str) and len(orjson.dumps(body)) > _EVIDENCE_BODY_LIMIT:
            body = {"truncated": orjson.dumps(body)[:_EVIDENCE_BODY_LIMIT].decode(errors="replace")}
        headers = {k.lower(): v for k, v in self.headers.items() if k.lower() in _RATE_HEADERS}
        evidence: dict[str, Any] = {
            "call": f"{self.method} {self.path}",
            "http_status": self.status,
            "body": body,
        }
        if headers:
            evidence["headers"] = headers
        return evidence


def retry_after_s(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """The wait a provider asked for: Retry-After (seconds or a date) or a rate-limit reset.

    X-Ratelimit-Reset is a Unix time at Dropbox Sign; ratelimit-reset is seconds at Truto.
    A large number is read as a Unix time, a small one as seconds. A value that is not a
    finite number, or is negative, comes back as infinity: the caller bounds every wait.
    """
    now = time.time() if now is None else now
    lowered = {k.lower(): v for k, v in headers.items()}
    waits: list[float] = []
    for name in ("retry-after", "x-ratelimit-reset", "ratelimit-reset"):
        raw = lowered.get(name)
        if raw is None:
            continue
        try:
            value = float(raw)
        except ValueError:
            if name != "retry-after":
                continue
            try:
                parsed = email.utils.parsedate_to_datetime(raw)
                if parsed.tzinfo is None:
                    parsed = parsed.replace(tzinfo=UTC)
                value = parsed.timestamp()
            except (ValueError, TypeError, IndexError, OverflowError):
                continue  # a header we cannot read is no instruction; backoff applies
        if not math.isfinite(value) or value < 0:
            waits.append(math.inf)  # absurd: the caller caps it (lifecycle.bounded_wait)
        else:
            waits.append(value - now if value > 1_000_000_000 else value)
    return max(0.0, max(waits)) if waits else None


def transient(answer: Answer, code: str | None = None) -> RetryLater:
    message = f"{answer.method} {answer.path} answered {answer.status}"
    return RetryLater(
        code=code or f"http_{answer.status}",
        message=message,
        delay_s=retry_after_s(answer.headers) if answer.status in (429, 503) else None,
        evidence=answer.evidence(),
        may_have_landed=answer.status >= 500,
    )


def classify_cancel(
    answer: Answer,
    *,
    message: str,
    code: str | None = None,
    details: dict[str, Any] | None = None,
    provider_state: dict[str, Any] | None = None,
) -> CancelResult:
    """The usual reading of a cancel that is answered at once (Truto, Aptly): 2xx canceled;
    401, 408, 429 and 5xx worth another try; 404 not found; any other 4xx a refusal, which a
    status check reads (lifecycle.after_refusal). `code` is the provider's own error code,
    if its error body names one."""
    if 200 <= answer.status < 300:
        return Settled(Outcome.CANCELED, True, answer.evidence(), provider_state=provider_state)
    if answer.status in (401, 408, 429) or answer.status >= 500:
        retry = transient(answer, code=code)
        return RetryLater(
            retry.code, message, retry.delay_s, retry.evidence, details, retry.may_have_landed
        )
    if answer.status == 404:
        return Settled(
            Outcome.NOT_FOUND,
            False,
            answer.evidence(),
            error_code=code or Outcome.NOT_FOUND.value,
            error_message=message,
            error_details=details,
        )
    return Refused(code or Outcome.NOT_CANCELABLE.value, message, answer.evidence(), details)


def segment(value: str) -> str:
    """`value` percent-encoded as one path segment: `/`, `?`, `#`, `%` and `\\` become
    escapes, so an id can name nothing but itself (dots alone are refused by `request_url`)."""
    return urllib.parse.quote(value, safe="")


def request_url(base_url: str, path: str) -> URL | None:
    """The URL of `base_url` + `path`, sent exactly as built (encoded: nothing re-quoted or
    normalised on the way), or None when a segment of `path` is empty or decodes to `.` or
    `..`: normalised by a client, a proxy or the provider, `cancel/..` is another endpoint
    and `cancel/` (an empty id) one too. Enqueue refuses such ids; this holds for rows
    stored before it did, and for any other way an id reaches an adapter."""
    segments = path.split("/")
    if segments[0] != "" or any(
        urllib.parse.unquote(segment) in ("", ".", "..") for segment in segments[1:]
    ):
        return None
    return URL(str(URL(base_url)).rstrip("/") + path, encoded=True)


def unsafe_path(method: str, path: str) -> Settled:
    """A cancel (or status check) that cannot be sent: its id would rewrite the provider's
    path. Final, and sent nowhere: no attempt of it could ever do anything else."""
    message = f"{method} {path} was not sent: the resource id would change the provider's URL path"
    return Settled(
        Outcome.NOT_CANCELABLE,
        False,
        {"call": f"{method} {path}", "not_sent": "the resource id would change the URL path"},
        error_code="invalid_resource_id",
        error_message=message,
    )


async def call(
    http: aiohttp.ClientSession,
    account: Account,
    method: str,
    path: str,
    **kwargs: Any,
) -> Answer | RetryLater | Settled:
    """One HTTP call to the account's base URL plus `path`; a network failure, a timeout or
    a redirect becomes RetryLater, never an exception. Redirects are never followed: a POST
    turned into a GET elsewhere, without its credentials, would answer for something else.
    A path that normalisation would rewrite is not sent at all (`unsafe_path`)."""
    url = request_url(account.base_url or "", path)
    if url is None:
        log.error("%s %s%s not sent: the path would be rewritten", method, account.base_url, path)
        return unsafe_path(method, path)
    try:
        async with http.request(method, url, allow_redirects=False, **kwargs) as response:
            raw = await response.read()
            if 300 <= response.status < 400:
                return _redirected(account, method, path, response.status, response.headers)
            body: Any
            try:
                body = orjson.loads(raw) if raw else {}
            except orjson.JSONDecodeError:
                body = raw.decode(errors="replace")
            return Answer(method, path, response.status, dict(response.headers), body)
    except TimeoutError:
        return RetryLater(
            "timeout",
            f"{method} {path} timed out",
            evidence={"call": f"{method} {path}"},
            may_have_landed=True,
        )
    except aiohttp.ClientError as exc:
        return RetryLater(
            "network",
            f"{method} {path} failed: {type(exc).__name__}",
            evidence={"call": f"{method} {path}", "exception": type(exc).__name__},
            may_have_landed=not isinstance(exc, aiohttp.ClientConnectorError),
        )


def _redirected(
    account: Account, method: str, path: str, status: int, headers: Mapping[str, str]
) -> RetryLater:
    location = headers.get("Location", "")
    setting = (
        f"{account.provider.upper()}_BASE_URL"
        if account.name == "default"
        else f"base_url of account {account.name!r} in ORCH_CONFIG"
    )
    log.error(
        "%s %s%s answered %d redirecting to %r: redirects are not followed; fix %s",
        method,
        account.base_url,
        path,
        status,
        location,
        setting,
    )
    return RetryLater(
        "redirect",
        f"{method} {path} answered {status} (a redirect to {location!r}); fix {setting}",
        evidence={"call": f"{method} {path}", "http_status": status, "location": location},
        details={"http_status": status, "location": location},
    )


def too_deep(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether parsed JSON nests deeper than `limit` (iterative: no recursion limit)."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return False


def reject_too_deep(payload: Any) -> None:
    """A signed body may still be absurd: refuse it as malformed (a 400, never a 500)."""
    if too_deep(payload):
        raise errors.WebhookRejected(
            errors.RejectReason.MALFORMED, "the event JSON is nested too deeply"
        )


def kept(fields: Mapping[str, str | float | bool | None]) -> dict[str, Any]:
    """What the inbox keeps of a verified event: the adapter's chosen scalar fields, each
    string cut to KEPT_STRING characters, so a padded body (up to ORCH_MAX_BODY_BYTES of
    fields nobody reads) costs the database a few hundred bytes, not a megabyte, per event
    for the retention period (issue 16)."""
    out: dict[str, Any] = {}
    for name, value in fields.items():
        if isinstance(value, str) and len(value) > KEPT_STRING:
            value = value[:KEPT_STRING]
        out[name] = value
    assert len(orjson.dumps(out)) <= KEPT_EVENT_BYTES, "an adapter keeps too many fields"
    return out


def parse_params(model: type[BaseModel], params: dict[str, Any], provider: str) -> BaseModel:
    """Validate an enqueue's `params` against a provider's model; 422 names each field."""
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        raise errors.InvalidRequest.from_validation(
            exc, f"params for {provider}", prefix="params."
        ) from None


class Provider(abc.ABC):
    """A provider adapter. Register each in providers/registry.py."""

    name: ClassVar[str]
    #: Path segments under /webhooks/ that route to this adapter.
    webhook_names: ClassVar[tuple[str, ...]] = ()
    #: What an enqueue's `params` must be (validate_params), for the API description; None:
    #: the provider takes no params.
    params_model: ClassVar[type[BaseModel] | None] = None

    def validate_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """Check the provider-specific `params` of an enqueue; raise InvalidRequest if wrong."""
        if params:
            raise errors.InvalidRequest(
                f"{self.name} takes no params",
                [{"field": "params", "message": f"{self.name} takes no params"}],
            )
        return {}

    def check_account(self, account: Account) -> str | None:
        """Why this account cannot send cancels yet (a setting is missing), or None."""
        return None

    @abc.abstractmethod
    async def cancel(
        self, http: aiohttp.ClientSession, account: Account, target: Target
    ) -> CancelResult: ...

    async def status(
        self, http: aiohttp.ClientSession, account: Account, target: Target
    ) -> StatusResult:
        """Where the provider has no status endpoint, the cancel is simply sent again."""
        return StillOpen({"status_check": "not offered by this provider"})

    def parse_webhook(
        self,
        headers: Mapping[str, str],
        body: bytes,
        accounts: list[Account],
        now: float,
        replay_window_s: float = 300.0,
        clock_skew_s: float = 300.0,
    ) -> WebhookEvent:
        """Verify, then parse; raise WebhookRejected. Adapters without webhooks refuse all.

        `now` and `replay_window_s` let an adapter refuse stale (or future) events where the
        provider's events carry a creation time meant for that."""
        raise errors.WebhookRejected(
            errors.RejectReason.NO_ENDPOINT, f"{self.name} sends no webhooks"
        )

    #: The body a provider expects from a successful webhook delivery.
    webhook_ack: ClassVar[str] = "ok"
