"""Fault 7, bad input at the API: property-based fuzzing of the public routes over real HTTP.

Hypothesis sends arbitrary JSON, near-valid cancellations, raw bytes, arbitrary query strings,
path segments and headers. Whatever comes in, nothing answers 5xx, and every 4xx is an
RFC 9457 problem (application/problem+json with type, title, status and detail).
"""

from __future__ import annotations

import json
import string
import urllib.parse
from typing import Any

import pytest
import yarl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.faults.common import PARAMS, is_problem
from tests.integration.conftest import Harness

FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# --- strategies ---------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
provider_names = st.sampled_from([*PARAMS, "Dropbox_Sign", "hellosign", ""]) | st.text(max_size=20)
resource_ids = (
    st.text(alphabet=string.ascii_letters + string.digits + "-_.!~", min_size=1, max_size=40)
    | st.text(max_size=300)
    | json_values
)
FIELDS = ("provider", "resource_id", "account", "reason", "metadata", "params")


@st.composite
def near_valid_bodies(draw: st.DrawFn) -> Any:
    """A valid cancellation for some provider, then a few fields changed, added or removed."""
    provider = draw(st.sampled_from(list(PARAMS)))
    body: dict[str, Any] = {"provider": provider, "resource_id": "sr-fuzz"}
    if PARAMS[provider]:
        body["params"] = dict(PARAMS[provider])
    changes = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "provider": provider_names,
                "resource_id": resource_ids,
                "account": st.sampled_from(["default", "emea", ""])
                | st.text(max_size=70)
                | json_values,
                "reason": st.text(max_size=2100) | json_values,
                "metadata": st.dictionaries(st.text(max_size=10), json_values, max_size=5)
                | json_values,
                "params": st.dictionaries(
                    st.sampled_from(
                        [
                            "integrated_account_id",
                            "message",
                            "remote_data",
                            "status",
                            "documentId",
                            "roleId",
                        ]
                    )
                    | st.text(max_size=10),
                    json_values | st.uuids().map(str),
                    max_size=4,
                )
                | json_values,
            },
        )
    )
    body.update(changes)
    for name in draw(st.sets(st.sampled_from(FIELDS), max_size=2)):
        body.pop(name, None)
    body.update(draw(st.dictionaries(st.text(max_size=10), json_values, max_size=2)))
    return body


def encode(value: Any) -> bytes:
    """The stdlib writes NaN, Infinity and huge integers, which a strict parser refuses."""
    return json.dumps(value, allow_nan=True).encode()


bodies = (
    near_valid_bodies().map(encode)
    | json_values.map(encode)
    | st.binary(max_size=300)
    | st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass"))
)
header_text = st.text(
    alphabet=st.characters(
        min_codepoint=0x20,
        max_codepoint=0x2FF,
        blacklist_categories=("Cs",),
        blacklist_characters="\x7f",
    ),
    max_size=300,
)
content_types = (
    st.sampled_from(
        [
            "application/json",
            "application/json; charset=utf-8",
            "application/JSON",
            "application/json; charset=latin-1",
            "application/problem+json",
            "text/plain",
            "multipart/form-data; boundary=x",
            "application/x-www-form-urlencoded",
            "",
        ]
    )
    | header_text
)
idempotency_keys = (
    st.none() | st.text(alphabet=string.printable.strip(), max_size=300) | header_text
)
query_keys = st.sampled_from(["status", "provider", "resource_id", "limit", "after"]) | st.text(
    max_size=8
)
query_values = (
    st.sampled_from(["queued", "confirmed", "dropbox_sign", "0", "1", "200", "201", "-1", ""])
    | st.integers(min_value=-(2**70), max_value=2**70).map(str)
    | st.text(max_size=60)
)
query_strings = st.lists(st.tuples(query_keys, query_values), max_size=5).map(
    urllib.parse.urlencode
) | st.text(max_size=80).map(lambda t: urllib.parse.quote(t, safe="=&%+"))
segments = (
    st.uuids().map(str)
    | st.text(min_size=1, max_size=80).map(lambda t: urllib.parse.quote(t, safe=""))
    | st.text(alphabet="%0123456789abcdefABCDEFgz.", min_size=1, max_size=12)
)


# --- the property -------------------------------------------------------------------------


async def assert_well_answered(response: Any) -> None:
    text = await response.text()
    assert response.status < 500, (response.status, text[:500])
    if response.status >= 400:
        assert is_problem(response.status, response.content_type, text), (
            response.status,
            response.content_type,
            text[:500],
        )


def url(harness: Harness, path_and_query: str) -> yarl.URL:
    return yarl.URL(str(harness.client.make_url("")).rstrip("/") + path_and_query, encoded=True)


@FUZZ
@given(body=bodies, content_type=content_types, key=idempotency_keys)
async def test_enqueue_never_5xx(
    harness: Harness, body: bytes, content_type: str, key: str | None
) -> None:
    headers = {"Content-Type": content_type}
    if key is not None:
        headers["Idempotency-Key"] = key
    response = await harness.client.post("/v1/cancellations", data=body, headers=headers)
    await assert_well_answered(response)


@FUZZ
@given(body=near_valid_bodies(), key=idempotency_keys)
async def test_near_valid_cancellations_never_5xx(
    harness: Harness, body: Any, key: str | None
) -> None:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Idempotency-Key"] = key
    response = await harness.client.post("/v1/cancellations", data=encode(body), headers=headers)
    await assert_well_answered(response)


@FUZZ
@given(query=query_strings)
async def test_listing_never_5xx(harness: Harness, query: str) -> None:
    response = await harness.client.session.get(url(harness, f"/v1/cancellations?{query}"))
    await assert_well_answered(response)


@FUZZ
@given(
    segment=segments, events=st.booleans(), method=st.sampled_from(["GET", "GET", "POST", "DELETE"])
)
async def test_one_cancellation_never_5xx(
    harness: Harness, segment: str, events: bool, method: str
) -> None:
    path = f"/v1/cancellations/{segment}" + ("/events" if events else "")
    response = await harness.client.session.request(method, url(harness, path))
    await assert_well_answered(response)


@pytest.mark.parametrize("path", ["/v1/stats", "/healthz", "/readyz"])
async def test_the_other_routes_answer(harness: Harness, path: str) -> None:
    response = await harness.client.get(path)
    assert response.status == 200
