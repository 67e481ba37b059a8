"""A resource id is one segment of the provider's URL path, whatever it holds.

Enqueue refuses ids that could change the path (tests/integration/test_bad_input.py), but a
row stored before it did, or written some other way, still reaches the adapters: each builds
its URL with the id percent-encoded as one segment, and sends nothing when normalisation
would still change the path (`.`, `..`, empty). aioresponses answers for the provider here
and records the URL each call was made to; nothing leaves the process.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from orchestrator.domain.model import Outcome, Settled
from orchestrator.providers.aptly import Aptly
from orchestrator.providers.base import Account, Provider, Target, request_url
from orchestrator.providers.dropbox_sign import DropboxSign
from orchestrator.providers.registry import PROVIDERS
from orchestrator.providers.truto import Truto
from tests.unit.test_provider_http import ProviderMock

TRUTO_PARAMS = {"integrated_account_id": "62f44730-dd91-461e-bd6a-aedd9e0ad79d", "message": "m"}
APTLY_PARAMS = {"status": "Cancelled"}

#: (provider, operation, base URL, params, the path with {} where the encoded id goes)
CALLS: list[tuple[Provider, str, str, dict[str, Any], str]] = [
    (DropboxSign(), "cancel", "https://ds.test/v3", {}, "/v3/signature_request/cancel/{}"),
    (DropboxSign(), "status", "https://ds.test/v3", {}, "/v3/signature_request/{}"),
    (Truto(), "status", "https://truto.test", TRUTO_PARAMS, "/unified/e-signature/workflows/{}"),
    (Aptly(), "cancel", "https://aptly.test/a", APTLY_PARAMS, "/a/v1/actions/{}/cancel-action"),
]  # fmt: skip

#: id -> how it appears in the path: percent-encoded, one segment, nothing normalised away
ENCODED = {
    "a/../b": "a%2F..%2Fb",
    "%2e%2e": "%252e%252e",
    "%2F..%2F": "%252F..%252F",
    "a?b": "a%3Fb",
    "a#b": "a%23b",
    "a\\b": "a%5Cb",
    "..%2f": "..%252f",
    "...": "...",
    "sr-1": "sr-1",
    # Characters a path may hold as they are still go encoded, and the call is made.
    "gHl4GV:u*@pF": "gHl4GV%3Au%2A%40pF",
    "S&F^Y;=+$,!": "S%26F%5EY%3B%3D%2B%24%2C%21",
    "ft100<)0Rl": "ft100%3C%290Rl",
}
#: ids that would still change the path (or leave a segment empty): never sent
UNSENDABLE = ["..", ".", ""]


def test_every_adapter_that_puts_the_id_in_a_path_is_in_the_table() -> None:
    assert {type(p).name for p, *_ in CALLS} == set(PROVIDERS)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        yield session


@pytest.fixture
def provider() -> Iterator[ProviderMock]:
    mock = ProviderMock()
    with mock:
        for method in ("GET", "POST", "PATCH"):
            mock.add(re.compile(r".*"), method, status=404, payload={}, repeat=True)
        yield mock


def account(adapter: Provider, base_url: str) -> Account:
    return Account(type(adapter).name, "default", base_url, SecretStr("k" * 40))


def sent_paths(mock: ProviderMock) -> list[str]:
    return [url.raw_path for (_, url) in mock.requests]


@pytest.mark.parametrize(("resource_id", "encoded"), ENCODED.items(), ids=list(ENCODED))
@pytest.mark.parametrize(
    ("adapter", "operation", "base_url", "params", "path"),
    CALLS,
    ids=[f"{type(c[0]).name}-{c[1]}" for c in CALLS],
)
async def test_the_id_is_one_encoded_segment_of_the_path(
    http: aiohttp.ClientSession,
    provider: ProviderMock,
    adapter: Provider,
    operation: str,
    base_url: str,
    params: dict[str, Any],
    path: str,
    resource_id: str,
    encoded: str,
) -> None:
    target = Target(resource_id, params=params)
    await getattr(adapter, operation)(http, account(adapter, base_url), target)
    assert sent_paths(provider) == [path.format(encoded)]


@pytest.mark.parametrize("resource_id", UNSENDABLE, ids=["dotdot", "dot", "empty"])
@pytest.mark.parametrize(
    ("adapter", "operation", "base_url", "params", "path"),
    CALLS,
    ids=[f"{type(c[0]).name}-{c[1]}" for c in CALLS],
)
async def test_an_id_that_would_rewrite_the_path_is_refused_and_never_sent(
    http: aiohttp.ClientSession,
    provider: ProviderMock,
    adapter: Provider,
    operation: str,
    base_url: str,
    params: dict[str, Any],
    path: str,
    resource_id: str,
) -> None:
    target = Target(resource_id, params=params)
    result = await getattr(adapter, operation)(http, account(adapter, base_url), target)
    assert isinstance(result, Settled)
    assert (result.outcome, result.ok) == (Outcome.NOT_CANCELABLE, False)
    assert result.error_code == "invalid_resource_id"
    assert sent_paths(provider) == []


async def test_truto_sends_the_id_in_the_body_of_a_fixed_path(
    http: aiohttp.ClientSession, provider: ProviderMock
) -> None:
    adapter = Truto()
    target = Target("..", params=TRUTO_PARAMS)
    await adapter.cancel(http, account(adapter, "https://truto.test"), target)
    ((_, url),) = provider.requests
    assert url.raw_path == "/unified/e-signature/workflows/cancel"
    (call,) = provider.requests[("POST", url)]
    assert call.kwargs["json"]["id"] == ".."


@pytest.mark.parametrize(
    ("path", "sendable"),
    [
        ("/signature_request/cancel/sr-1", True),
        ("/signature_request/cancel/..", False),
        ("/signature_request/cancel/.", False),
        ("/signature_request/cancel/", False),
        ("/v1/actions//cancel-action", False),
        # an escaped dot is a dot to whoever decodes before normalising: refused too
        ("/signature_request/cancel/%2E%2E", False),
        ("/signature_request/cancel/.%2e", False),
        ("/signature_request/cancel/a%2F..%2Fb", True),
        ("/signature_request/cancel/a%3Ab%2A%40c", True),
    ],
)
def test_request_url_refuses_a_path_that_normalisation_would_change(
    path: str, sendable: bool
) -> None:
    url = request_url("https://ds.test/v3", path)
    assert (url is not None) == sendable
    if url is not None:
        assert url.raw_path == "/v3" + path
