"""Provider answers, classified: the Retry-After maths and the Dropbox Sign adapter over HTTP.

aioresponses stands in for the provider's URL only; nothing leaves the process.
"""

from __future__ import annotations

import base64
import email.utils
import inspect
import time
import types
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses
from pydantic import SecretStr
from yarl import URL

from orchestrator.domain.model import Outcome, Queued, Refused, RetryLater, Settled, StillOpen
from orchestrator.providers.base import Account, Target, retry_after_s
from orchestrator.providers.dropbox_sign import DropboxSign

NOW = 1_714_560_000.0

# --- retry_after_s --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param({"Retry-After": "120"}, 120.0, id="retry-after-seconds"),
        pytest.param({"retry-after": "0"}, 0.0, id="retry-after-zero"),
        pytest.param({"Retry-After": "1.5"}, 1.5, id="retry-after-fraction"),
        pytest.param(
            {"Retry-After": email.utils.formatdate(NOW + 30, usegmt=True)},
            30.0,
            id="retry-after-http-date",
        ),
        pytest.param(
            {"Retry-After": email.utils.formatdate(NOW - 30, usegmt=True)},
            0.0,
            id="retry-after-date-in-the-past",
        ),
        pytest.param({"X-Ratelimit-Reset": str(int(NOW) + 42)}, 42.0, id="x-ratelimit-reset-unix"),
        pytest.param({"X-RateLimit-Reset": str(int(NOW) - 5)}, 0.0, id="x-ratelimit-reset-past"),
        pytest.param({"ratelimit-reset": "7"}, 7.0, id="ratelimit-reset-seconds"),
        pytest.param(
            {"Retry-After": "3", "X-Ratelimit-Reset": str(int(NOW) + 10)},
            10.0,
            id="the-longest-wait-wins",
        ),
        pytest.param({}, None, id="none"),
        pytest.param({"Content-Type": "application/json"}, None, id="unrelated-headers"),
        pytest.param({"X-Ratelimit-Reset": "soon"}, None, id="reset-not-a-number"),
    ],
)
def test_retry_after_s(headers: dict[str, str], expected: float | None) -> None:
    wait = retry_after_s(headers, now=NOW)
    if expected is None:
        assert wait is None
    else:
        assert wait == pytest.approx(expected, abs=0.001)


def test_retry_after_s_uses_the_current_time_by_default() -> None:
    wait = retry_after_s({"X-Ratelimit-Reset": str(int(time.time()) + 60)})
    assert wait is not None
    assert 58 <= wait <= 60


@pytest.mark.parametrize(
    "value", ["soon", "Wed, 99 Foo 2024 99:99:99 GMT", ""], ids=["word", "bad-date", "empty"]
)
def test_a_malformed_retry_after_is_ignored(value: str) -> None:
    """A provider's broken header must not turn a 429 into an exception in the dispatcher."""
    assert retry_after_s({"Retry-After": value}, now=NOW) is None
    assert retry_after_s(
        {"Retry-After": value, "X-Ratelimit-Reset": str(int(NOW) + 9)}, now=NOW
    ) == pytest.approx(9.0)


# --- the Dropbox Sign adapter ---------------------------------------------------------

BASE = "https://api.dropbox-sign.test/v3"
API_KEY = "sk-test-123"
ACCOUNT = Account("dropbox_sign", "default", BASE, SecretStr(API_KEY))
TARGET = Target("sr-1")
CANCEL_URL = f"{BASE}/signature_request/cancel/sr-1"
STATUS_URL = f"{BASE}/signature_request/sr-1"


def error_body(name: str, message: str) -> dict[str, Any]:
    return {"error": {"error_name": name, "error_msg": message}}


def signature_request(**state: Any) -> dict[str, Any]:
    return {
        "signature_request": {
            "signature_request_id": "sr-1",
            "is_complete": False,
            "is_declined": False,
            "signatures": [{"status_code": "awaiting_signature"}],
            **state,
        }
    }


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        yield session


_NEEDS_STREAM_WRITER = (
    "stream_writer" in inspect.signature(aiohttp.ClientResponse.__init__).parameters
)


class _Response(aiohttp.ClientResponse):
    """aioresponses 0.7.9 predates aiohttp 3.14's required `stream_writer` argument
    (pnuckowski/aioresponses#289); a response it builds has finished uploading, so a stub
    that reports the bytes sent is all the constructor reads."""

    def __init__(self, method: str, url: URL, **kwargs: Any) -> None:
        if _NEEDS_STREAM_WRITER:
            kwargs.setdefault("stream_writer", types.SimpleNamespace(output_size=0))
        super().__init__(method, url, **kwargs)


class ProviderMock(aioresponses):
    def add(self, url: Any, method: str = "GET", *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("response_class", _Response)
        super().add(url, method, *args, **kwargs)


@pytest.fixture
def provider_mock() -> Iterator[ProviderMock]:
    mock = ProviderMock()
    with mock:
        yield mock


async def test_200_means_queued(http: aiohttp.ClientSession, provider_mock: ProviderMock) -> None:
    provider_mock.post(CANCEL_URL, status=200, payload={})
    result = await DropboxSign().cancel(http, ACCOUNT, TARGET)
    assert isinstance(result, Queued)
    assert result.evidence["call"] == "POST /signature_request/cancel/sr-1"
    assert result.evidence["http_status"] == 200


async def test_410_means_already_canceled(
    http: aiohttp.ClientSession, provider_mock: ProviderMock
) -> None:
    provider_mock.post(CANCEL_URL, status=410, payload=error_body("deleted", "deleted"))
    result = await DropboxSign().cancel(http, ACCOUNT, TARGET)
    assert isinstance(result, Settled)
    assert (result.outcome, result.ok) == (Outcome.CANCELED, True)
    assert result.evidence["http_status"] == 410


async def test_404_is_not_found_and_keeps_the_providers_words(
    http: aiohttp.ClientSession, provider_mock: ProviderMock
) -> None:
    provider_mock.post(CANCEL_URL, status=404, payload=error_body("not_found", "Not found"))
    result = await DropboxSign().cancel(http, ACCOUNT, TARGET)
    assert isinstance(result, Settled)
    assert (result.outcome, result.ok) == (Outcome.NOT_FOUND, False)
    assert (result.error_code, result.error_message) == ("not_found", "Not found")
    assert result.evidence["body"] == error_body("not_found", "Not found")


@pytest.mark.parametrize("status", [400, 403])
async def test_a_refusal_is_returned_for_the_dispatcher_to_check(
    http: aiohttp.ClientSession, provider_mock: ProviderMock, status: int
) -> None:
    """The adapter makes one call: the status check a refusal needs goes through the
    dispatcher, under the account's budget and metrics like every other call."""
    message = "This request has already been signed by all signers and cannot be canceled"
    provider_mock.post(CANCEL_URL, status=status, payload=error_body("bad_request", message))
    result = await DropboxSign().cancel(http, ACCOUNT, TARGET)
    assert isinstance(result, Refused)
    assert (result.code, result.message) == ("bad_request", message)
    assert result.evidence["http_status"] == status
    assert ("GET", URL(STATUS_URL)) not in provider_mock.requests


async def test_429_waits_until_the_rate_limit_resets(
    http: aiohttp.ClientSession, provider_mock: ProviderMock
) -> None:
    reset = int(time.time()) + 30
    provider_mock.post(
        CANCEL_URL,
        status=429,
        payload=error_body("exceeded_rate", "Rate limit exceeded"),
        headers={"X-Ratelimit-Reset": str(reset), "X-RateLimit-Remaining": "0"},
    )
    result = await DropboxSign().cancel(http, ACCOUNT, TARGET)
    assert isinstance(result, RetryLater)
    assert result.code == "exceeded_rate"
    assert result.delay_s is not None
    assert 28 <= result.delay_s <= 30
    assert result.evidence["headers"]["x-ratelimit-reset"] == str(reset)


@pytest.mark.parametrize(
    ("status", "body", "code"),
    [
        (500, error_body("internal_error", "oops"), "internal_error"),
        (502, "<html>bad gateway</html>", "http_502"),
        (503, {}, "http_503"),
        (401, error_body("unauthorized", "Unauthorized api key"), "unauthorized"),
    ],
)
async def test_server_errors_are_transient(
    http: aiohttp.ClientSession, provider_mock: ProviderMock, status: int, body: Any, code: str
) -> None:
    if isinstance(body, str):
        provider_mock.post(CANCEL_URL, status=status, body=body)
    else:
        provider_mock.post(CANCEL_URL, status=status, payload=body)
    result = await DropboxSign().cancel(http, ACCOUNT, TARGET)
    assert isinstance(result, RetryLater)
    assert result.code == code
    assert result.delay_s is None
    assert result.evidence["http_status"] == status


async def test_a_connection_error_is_transient(
    http: aiohttp.ClientSession, provider_mock: ProviderMock
) -> None:
    provider_mock.post(CANCEL_URL, exception=aiohttp.ClientConnectionError("refused"))
    result = await DropboxSign().cancel(http, ACCOUNT, TARGET)
    assert isinstance(result, RetryLater)
    assert result.code == "network"
    assert result.evidence["exception"] == "ClientConnectionError"


async def test_a_timeout_is_transient(
    http: aiohttp.ClientSession, provider_mock: ProviderMock
) -> None:
    provider_mock.post(CANCEL_URL, exception=TimeoutError())
    result = await DropboxSign().cancel(http, ACCOUNT, TARGET)
    assert isinstance(result, RetryLater)
    assert result.code == "timeout"


async def test_a_429_with_a_malformed_retry_after_is_still_retried(
    http: aiohttp.ClientSession, provider_mock: ProviderMock
) -> None:
    provider_mock.post(
        CANCEL_URL,
        status=429,
        payload=error_body("exceeded_rate", "Rate limit exceeded"),
        headers={"Retry-After": "later"},
    )
    result = await DropboxSign().cancel(http, ACCOUNT, TARGET)
    assert isinstance(result, RetryLater)
    assert result.code == "exceeded_rate"


@pytest.mark.parametrize(
    ("method", "url", "call"),
    [("POST", CANCEL_URL, "cancel"), ("GET", STATUS_URL, "status")],
)
async def test_basic_auth_with_the_api_key_as_user_name(
    http: aiohttp.ClientSession, provider_mock: ProviderMock, method: str, url: str, call: str
) -> None:
    provider_mock.add(url, method, status=410, payload={})
    await getattr(DropboxSign(), call)(http, ACCOUNT, TARGET)
    (request,) = provider_mock.requests[(method, URL(url))]
    expected = "Basic " + base64.b64encode(f"{API_KEY}:".encode()).decode()
    assert request.kwargs["headers"]["Authorization"] == expected


async def test_the_resource_id_is_quoted_into_the_path(
    http: aiohttp.ClientSession, provider_mock: ProviderMock
) -> None:
    url = f"{BASE}/signature_request/cancel/a%2Fb%3Fc"
    provider_mock.post(URL(url, encoded=True), status=200, payload={})
    result = await DropboxSign().cancel(http, ACCOUNT, Target("a/b?c"))
    assert isinstance(result, Queued)


# --- status() -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "outcome", "ok"),
    [
        (200, signature_request(is_complete=True), Outcome.COMPLETED, False),
        (200, signature_request(is_declined=True), Outcome.DECLINED, True),
        (200, signature_request(signatures=[{"status_code": "expired"}]), Outcome.EXPIRED, True),
        (200, signature_request(expires_at=int(NOW)), Outcome.EXPIRED, True),
        (410, error_body("deleted", "deleted"), Outcome.CANCELED, True),
        (404, error_body("not_found", "Not found"), Outcome.NOT_FOUND, False),
    ],
    ids=["completed", "declined", "signature-expired", "past-expires-at", "gone", "not-found"],
)
async def test_status_of_a_settled_request(
    http: aiohttp.ClientSession,
    provider_mock: ProviderMock,
    status: int,
    body: dict[str, Any],
    outcome: Outcome,
    ok: bool,
) -> None:
    provider_mock.get(STATUS_URL, status=status, payload=body)
    result = await DropboxSign().status(http, ACCOUNT, TARGET)
    assert isinstance(result, Settled)
    assert (result.outcome, result.ok) == (outcome, ok)


async def test_status_of_an_open_request(
    http: aiohttp.ClientSession, provider_mock: ProviderMock
) -> None:
    provider_mock.get(
        STATUS_URL, status=200, payload=signature_request(expires_at=int(time.time()) + 3600)
    )
    result = await DropboxSign().status(http, ACCOUNT, TARGET)
    assert isinstance(result, StillOpen)
    assert result.evidence["http_status"] == 200


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_status_check_errors_are_transient(
    http: aiohttp.ClientSession, provider_mock: ProviderMock, status: int
) -> None:
    provider_mock.get(STATUS_URL, status=status, payload=error_body("x", "y"))
    assert isinstance(await DropboxSign().status(http, ACCOUNT, TARGET), RetryLater)
