"""Dropbox Sign callbacks, verified and parsed from headers and bytes alone: no network."""

from __future__ import annotations

import asyncio
import urllib.parse
from typing import Any

import aiohttp
import orjson
import pytest
from multidict import CIMultiDict
from pydantic import SecretStr

from orchestrator.domain.model import Outcome, Settled, WebhookEvent
from orchestrator.errors import WebhookRejected
from orchestrator.providers.base import KEPT_EVENT_BYTES, Account
from orchestrator.providers.dropbox_sign import DropboxSign, event_hash
from orchestrator.web import problems

KEY = "key-default"
OTHER_KEY = "key-other"
NOW = 1_714_560_000.0
EVENT_TIME = "1714559990"

DEFAULT = Account("dropbox_sign", "default", "https://api.test/v3", SecretStr(KEY))
OTHER = Account("dropbox_sign", "other", "https://api.test/v3", SecretStr(OTHER_KEY))

Headers = CIMultiDict[str]


def callback(
    event_type: str = "signature_request_canceled",
    *,
    resource_id: str | None = "sr-1",
    key: str = KEY,
    event_time: str = EVENT_TIME,
    account_id: str | None = None,
    event_hash_value: str | None = None,
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_time": event_time,
        "event_type": event_type,
        "event_hash": event_hash_value or event_hash(key, event_time, event_type),
        "event_metadata": {"reported_for_account_id": account_id},
    }
    payload: dict[str, Any] = {"event": event}
    if resource_id is not None:
        payload["signature_request"] = {
            "signature_request_id": resource_id,
            "title": "Café contract ✓",
        }
    return payload


def kept(payload: dict[str, Any]) -> dict[str, Any]:
    """What the inbox keeps of a callback (issue 16): five fields, the hash in lower case."""
    event = payload["event"]
    return {
        "event_time": event["event_time"],
        "event_type": event["event_type"],
        "event_hash": event["event_hash"].lower(),
        "reported_for_account_id": event["event_metadata"]["reported_for_account_id"],
        "signature_request_id": payload["signature_request"]["signature_request_id"],
    }


def test_case_variants_of_a_hash_are_one_event() -> None:
    """Verification compares the hash in lower case, so the dedupe key is built from that
    form: an upper-case copy of a captured hash is the same event, not a new one."""
    lower = callback()
    upper = callback(event_hash_value=lower["event"]["event_hash"].upper())
    mixed = callback(
        event_hash_value=lower["event"]["event_hash"][:32].upper()
        + lower["event"]["event_hash"][32:]
    )
    keys = {parse(*plain_json(p)).dedupe_key for p in (lower, upper, mixed)}
    assert len(keys) == 1


def test_only_the_kept_fields_of_a_padded_callback_are_stored() -> None:
    """A genuine hash on a body padded with 500 KB of fields nobody reads: the event keeps
    five short fields, whatever the body carried."""
    payload = callback()
    payload["signature_request"]["padding"] = {f"f{n}": "x" * 1000 for n in range(500)}
    payload["event"]["event_metadata"]["reported_for_account_id"] = "y" * 100_000
    headers, body = plain_json(payload)
    assert len(body) > 500_000
    event = parse(headers, body)
    assert set(event.payload) == {
        "event_time",
        "event_type",
        "event_hash",
        "reported_for_account_id",
        "signature_request_id",
    }
    assert len(orjson.dumps(event.payload)) <= KEPT_EVENT_BYTES


def test_a_request_id_longer_than_any_enqueue_accepts_is_refused() -> None:
    assert rejected(*plain_json(callback(resource_id="s" * 257))) == 400


@pytest.mark.parametrize("event_time", ["nan", "inf", "-1", "1e20", "soon"])
def test_a_signed_time_that_is_no_unix_time_is_read_as_none(event_time: str) -> None:
    """Signed by the key holder, but no time a timestamp can hold: read as no time at all
    (it settles nothing by its time) rather than crashing when it is stored."""
    event = parse(*plain_json(callback(event_time=event_time)))
    assert event.event_time is None


def multipart(payload: dict[str, Any]) -> tuple[Headers, bytes]:
    """The body the way Dropbox Sign sends it: multipart/form-data with one `json` field."""
    form = aiohttp.FormData(default_to_multipart=True)
    form.add_field("json", orjson.dumps(payload).decode())
    writer = form()
    body = asyncio.run(writer.as_bytes())
    return CIMultiDict({"Content-Type": writer.headers["Content-Type"]}), body


def plain_json(payload: dict[str, Any]) -> tuple[Headers, bytes]:
    return CIMultiDict({"Content-Type": "application/json"}), orjson.dumps(payload)


def urlencoded(payload: dict[str, Any]) -> tuple[Headers, bytes]:
    body = urllib.parse.urlencode({"json": orjson.dumps(payload).decode()}).encode()
    return CIMultiDict({"Content-Type": "application/x-www-form-urlencoded"}), body


def parse(headers: Headers, body: bytes, accounts: list[Account] | None = None) -> WebhookEvent:
    return DropboxSign().parse_webhook(
        headers, body, accounts if accounts is not None else [DEFAULT], NOW
    )


def rejected(headers: Headers, body: bytes, accounts: list[Account] | None = None) -> int:
    with pytest.raises(WebhookRejected) as caught:
        parse(headers, body, accounts)
    return problems.from_error(caught.value).status


ENCODINGS = [
    pytest.param(multipart, id="multipart"),
    pytest.param(plain_json, id="json"),
    pytest.param(urlencoded, id="urlencoded"),
]


@pytest.mark.parametrize("encode", ENCODINGS)
def test_valid_callback_in_every_encoding(encode: Any) -> None:
    payload = callback()
    event = parse(*encode(payload))
    assert event.provider == "dropbox_sign"
    assert event.account == "default"
    assert event.resource_id == "sr-1"
    assert event.event_type == "signature_request_canceled"
    assert event.event_time == float(EVENT_TIME)
    assert event.payload == kept(payload)  # the fields the service reads, not the body
    assert event.effect is not None
    assert (event.effect.outcome, event.effect.ok) == (Outcome.CANCELED, True)


def test_multipart_built_by_hand_with_a_crlf_body() -> None:
    payload = callback()
    boundary = "----dropbox-boundary"
    body = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="other"\r\n\r\n'
        "ignored\r\n"
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="json"\r\n\r\n'
        f"{orjson.dumps(payload).decode()}\r\n"
        f"--{boundary}--\r\n"
    ).encode()
    headers = CIMultiDict({"Content-Type": f"multipart/form-data; boundary={boundary}"})
    event = parse(headers, body)
    assert event.resource_id == "sr-1"
    assert event.payload == kept(payload)


@pytest.mark.parametrize(
    ("event_type", "outcome", "ok", "error_code"),
    [
        ("signature_request_canceled", Outcome.CANCELED, True, None),
        ("signature_request_all_signed", Outcome.COMPLETED, False, "completed"),
        ("signature_request_declined", Outcome.DECLINED, True, None),
        ("signature_request_expired", Outcome.EXPIRED, True, None),
    ],
)
def test_settling_events(
    event_type: str, outcome: Outcome, ok: bool, error_code: str | None
) -> None:
    event = parse(*plain_json(callback(event_type)))
    assert event.event_type == event_type
    assert isinstance(event.effect, Settled)
    assert event.effect.outcome is outcome
    assert event.effect.ok is ok
    assert event.effect.error_code == error_code
    assert event.effect.evidence == {"event_type": event_type, "event_time": EVENT_TIME}


@pytest.mark.parametrize(
    "event_type",
    ["signature_request_sent", "signature_request_viewed", "signature_request_signed"],
)
def test_other_events_have_no_effect(event_type: str) -> None:
    event = parse(*plain_json(callback(event_type)))
    assert event.resource_id == "sr-1"
    assert event.effect is None


def test_callback_test_without_a_signature_request() -> None:
    event = parse(*multipart(callback("callback_test", resource_id=None)))
    assert event.event_type == "callback_test"
    assert event.resource_id is None
    assert event.effect is None
    assert event.account == "default"


def test_a_settling_event_without_a_request_settles_nothing() -> None:
    event = parse(*plain_json(callback("signature_request_canceled", resource_id=None)))
    assert event.effect is None


def test_the_account_whose_key_signed_is_picked() -> None:
    event = parse(*plain_json(callback(key=OTHER_KEY)), accounts=[DEFAULT, OTHER])
    assert event.account == "other"


def test_an_uppercase_hash_is_accepted() -> None:
    payload = callback(event_hash_value=event_hash(KEY, EVENT_TIME, "signature_request_canceled"))
    payload["event"]["event_hash"] = payload["event"]["event_hash"].upper()
    assert parse(*plain_json(payload)).account == "default"


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(callback(event_hash_value="0" * 64), id="bad-hash"),
        pytest.param(callback(key=OTHER_KEY), id="hash-under-another-key"),
        pytest.param(
            callback(
                event_time="1714559991",
                event_hash_value=event_hash(KEY, EVENT_TIME, "signature_request_canceled"),
            ),
            id="event-time-altered",
        ),
        pytest.param(
            callback(
                "signature_request_all_signed",
                event_hash_value=event_hash(KEY, EVENT_TIME, "signature_request_canceled"),
            ),
            id="event-type-altered",
        ),
    ],
)
def test_a_hash_that_does_not_verify_is_401(payload: dict[str, Any]) -> None:
    assert rejected(*plain_json(payload)) == 401


@pytest.mark.parametrize("field", ["event_hash", "event_time", "event_type"])
def test_a_missing_signed_field_is_401(field: str) -> None:
    payload = callback()
    del payload["event"][field]
    assert rejected(*multipart(payload)) == 401


def test_an_empty_hash_is_401() -> None:
    payload = callback()
    payload["event"]["event_hash"] = ""
    assert rejected(*plain_json(payload)) == 401


def test_no_accounts_means_nothing_verifies() -> None:
    assert rejected(*plain_json(callback()), accounts=[]) == 401


def test_an_account_without_a_key_never_verifies() -> None:
    keyless = Account("dropbox_sign", "default", "https://api.test/v3", None)
    assert rejected(*plain_json(callback()), accounts=[keyless]) == 401


# --- accounts that declare their Dropbox Sign account id ---------------------------------

DECLARED = Account(
    "dropbox_sign", "declared", "https://api.test/v3", SecretStr("key-declared"), account_id="acc-1"
)


def test_a_declared_account_is_tried_alone() -> None:
    """Signed with the other account's key but reported for acc-1: only acc-1 may verify it."""
    payload = callback(key=OTHER_KEY, account_id="acc-1")
    assert rejected(*plain_json(payload), accounts=[OTHER, DECLARED]) == 401


def test_a_declared_account_verifies_its_own_events() -> None:
    payload = callback(key="key-declared", account_id="acc-1")
    assert parse(*plain_json(payload), accounts=[OTHER, DECLARED]).account == "declared"


def test_an_event_for_an_undeclared_account_skips_declared_ones() -> None:
    payload = callback(key="key-declared", account_id="acc-unknown")
    assert rejected(*plain_json(payload), accounts=[OTHER, DECLARED]) == 401
    payload = callback(key=OTHER_KEY, account_id="acc-unknown")
    assert parse(*plain_json(payload), accounts=[OTHER, DECLARED]).account == "other"


# --- what cannot be parsed ------------------------------------------------------------


def _json_headers() -> Headers:
    return CIMultiDict({"Content-Type": "application/json"})


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        pytest.param(_json_headers(), b'{"event": ', id="truncated-json"),
        pytest.param(_json_headers(), b"not json at all", id="not-json"),
        pytest.param(_json_headers(), b"[1, 2]", id="json-array"),
        pytest.param(_json_headers(), b'{"no_event": {}}', id="no-event-object"),
        pytest.param(_json_headers(), b'{"event": "a string"}', id="event-not-object"),
        pytest.param(
            CIMultiDict({"Content-Type": "application/x-www-form-urlencoded"}),
            b"json=%7B%22event",
            id="urlencoded-malformed",
        ),
    ],
)
def test_malformed_json_is_400(headers: Headers, body: bytes) -> None:
    assert rejected(headers, body) == 400


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        pytest.param("multipart/form-data; boundary=xyz", b"garbage without parts", id="no-parts"),
        pytest.param("multipart/form-data", b"--xyz\r\n\r\n{}\r\n--xyz--\r\n", id="no-boundary"),
        pytest.param(
            "multipart/form-data; boundary=xyz",
            b'--xyz\r\nContent-Disposition: form-data; name="json"\r\n\r\n{"event": {}}\r\n',
            id="unterminated",
        ),
    ],
)
def test_broken_multipart_is_400(content_type: str, body: bytes) -> None:
    assert rejected(CIMultiDict({"Content-Type": content_type}), body) == 400


def test_multipart_without_a_json_field_is_400() -> None:
    form = aiohttp.FormData(default_to_multipart=True)
    form.add_field("payload", orjson.dumps(callback()).decode())
    writer = form()
    body = asyncio.run(writer.as_bytes())
    headers = CIMultiDict({"Content-Type": writer.headers["Content-Type"]})
    assert rejected(headers, body) == 400


def test_urlencoded_without_a_json_field_is_400() -> None:
    headers = CIMultiDict({"Content-Type": "application/x-www-form-urlencoded"})
    assert rejected(headers, b"payload=%7B%7D") == 400


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", ""])
def test_other_content_types_are_415(content_type: str) -> None:
    body = orjson.dumps(callback())
    assert rejected(CIMultiDict({"Content-Type": content_type}), body) == 415


# --- deduplication --------------------------------------------------------------------


@pytest.mark.parametrize("encode", ENCODINGS)
def test_a_redelivery_has_the_same_dedupe_key(encode: Any) -> None:
    first = parse(*encode(callback()))
    again = parse(*encode(callback()))
    assert first.dedupe_key == again.dedupe_key


def test_the_dedupe_key_ignores_the_encoding() -> None:
    assert parse(*multipart(callback())).dedupe_key == parse(*plain_json(callback())).dedupe_key


@pytest.mark.parametrize(
    "changed",
    [
        pytest.param({"event_time": "1714559999"}, id="event-time"),
        pytest.param({"event_type": "signature_request_declined"}, id="event-type"),
        pytest.param({"resource_id": "sr-2"}, id="resource"),
    ],
)
def test_a_different_event_has_a_different_dedupe_key(changed: dict[str, str]) -> None:
    assert parse(*plain_json(callback(**changed))).dedupe_key != (
        parse(*plain_json(callback())).dedupe_key
    )
