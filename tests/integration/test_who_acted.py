"""Who acted is on record, and a token acts only where and as fast as it may (issue 16,
item 4): the `enqueued` history entry names the token, idempotency keys are scoped per
token, a token limited to accounts gets 403 elsewhere, a token with a rate gets 429.
Over real HTTP, real Postgres; start-up refusals run `orchestrator serve` itself."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from orchestrator import tokens
from tests.integration.conftest import Harness
from tests.integration.processes import free_port
from tests.tokens import entry
from tests.tokens import token as tok

BODY = {"provider": "dropbox_sign"}


def bearer(label: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok(label)}"}


async def history(harness: Harness, ident: str, label: str = "alpha") -> list[dict[str, Any]]:
    response = await harness.client.get(f"/v1/cancellations/{ident}/events", headers=bearer(label))
    assert response.status == 200
    events: list[dict[str, Any]] = (await response.json())["events"]
    return events


async def batch(harness: Harness, items: list[dict[str, Any]], label: str) -> list[dict[str, Any]]:
    response = await harness.client.post(
        "/v1/cancellations/batch", json={"items": items}, headers=bearer(label)
    )
    assert response.status == 207, await response.text()
    results: list[dict[str, Any]] = (await response.json())["results"]
    return results


TWO = {"api_tokens": f"{entry('alpha')},{entry('beta')}"}


@pytest.mark.parametrize("settings_overrides", [TWO])
async def test_the_enqueued_entry_names_the_token_single_and_batch(
    harness: Harness, db: asyncpg.Connection
) -> None:
    single = await harness.enqueue("sr-who-1", headers=bearer("alpha"))
    (result,) = await batch(harness, [{**BODY, "resource_id": "sr-who-2"}], "beta")
    assert result["status"] == 202, result
    for ident, name in (
        (single["id"], "token:alpha"),
        (result["cancellation"]["id"], "token:beta"),
    ):
        (first, *_) = await history(harness, ident)
        assert first["cause"] == "enqueued"
        assert first["evidence"]["by"] == name
    stored = await db.fetchval("SELECT string_agg(evidence::text, ' ') FROM cancellation_events")
    assert tok("alpha") not in stored and tok("beta") not in stored


async def test_without_tokens_the_enqueued_entry_says_anonymous(harness: Harness) -> None:
    created = await harness.enqueue("sr-anon")
    response = await harness.client.get(f"/v1/cancellations/{created['id']}/events")
    (first, *_) = (await response.json())["events"]
    assert first["evidence"]["by"] == "anonymous"


@pytest.mark.parametrize("settings_overrides", [TWO])
async def test_idempotency_keys_are_scoped_per_token(
    harness: Harness, db: asyncpg.Connection
) -> None:
    key = {"Idempotency-Key": "order-42"}
    body = {"resource_id": "sr-idem"}
    first = await harness.enqueue(**body, headers={**bearer("alpha"), **key})
    again = await harness.enqueue(**body, headers={**bearer("alpha"), **key}, expect=200)
    assert again["id"] == first["id"]
    # The same key from another token is another request: it does not find alpha's.
    other = await harness.enqueue("sr-idem-b", headers={**bearer("beta"), **key})
    assert other["id"] != first["id"]
    # ...and alpha's key with another body still conflicts only within alpha's scope.
    response = await harness.client.post(
        "/v1/cancellations",
        json={**BODY, "resource_id": "sr-idem-c"},
        headers={**bearer("alpha"), **key},
    )
    assert response.status == 409
    (item,) = await batch(
        harness, [{**BODY, "resource_id": "sr-idem-b", "idempotency_key": "order-42"}], "beta"
    )
    assert (item["status"], item["cancellation"]["id"]) == (200, other["id"])
    assert await db.fetchval("SELECT count(*) FROM cancellations") == 2


async def test_without_tokens_there_is_one_anonymous_scope(harness: Harness) -> None:
    key = {"Idempotency-Key": "dev-1"}
    first = await harness.enqueue("sr-dev", headers=key)
    again = await harness.enqueue("sr-dev", headers=key, expect=200)
    assert again["id"] == first["id"]


LIMITED = {
    "api_tokens": ",".join(
        [
            entry("boss"),
            entry("ds-only", accounts="dropbox_sign/default"),
            entry("truto-only", accounts="truto/default"),
        ]
    )
}


@pytest.mark.parametrize("settings_overrides", [LIMITED])
async def test_a_token_limited_to_accounts_is_refused_elsewhere_naming_the_account(
    harness: Harness, db: asyncpg.Connection
) -> None:
    allowed = await harness.enqueue("sr-acct", headers=bearer("ds-only"))
    response = await harness.client.post(
        "/v1/cancellations", json={**BODY, "resource_id": "sr-acct-2"}, headers=bearer("truto-only")
    )
    problem = await response.json()
    assert response.status == 403, problem
    assert problem["account"] == "dropbox_sign/default"
    assert "dropbox_sign/default" in problem["detail"]

    results = await batch(
        harness,
        [
            {
                "provider": "truto",
                "resource_id": "sr-t-1",
                "params": {"integrated_account_id": "ia-1", "message": "m"},
            },
            {**BODY, "resource_id": "sr-acct-3"},
        ],
        "truto-only",
    )
    assert results[0]["status"] in (200, 202), results[0]
    assert results[1]["status"] == 403
    assert results[1]["problem"]["account"] == "dropbox_sign/default"

    for action in ("retry", "abandon"):
        response = await harness.client.post(
            f"/v1/cancellations/{allowed['id']}/{action}",
            json={"reason": "not mine"},
            headers=bearer("truto-only"),
        )
        assert response.status == 403, await response.text()
        assert (await response.json())["account"] == "dropbox_sign/default"
    # Reads are not limited by account (documented): a limited token can look.
    response = await harness.client.get(
        f"/v1/cancellations/{allowed['id']}", headers=bearer("truto-only")
    )
    assert response.status == 200
    assert (
        await db.fetchval("SELECT count(*) FROM cancellations WHERE resource_id LIKE 'sr-acct%'")
        == 1
    )


RATED = {"api_tokens": f"{entry('slow', rate='3/min')},{entry('fast')}"}


@pytest.mark.parametrize("settings_overrides", [RATED])
async def test_a_token_beyond_its_enqueue_rate_gets_429_with_retry_after(
    harness: Harness, db: asyncpg.Connection
) -> None:
    for n in range(2):
        await harness.enqueue(f"sr-rate-{n}", headers=bearer("slow"))
    # A batch takes what is left (one), and refuses the rest item by item.
    results = await batch(
        harness, [{**BODY, "resource_id": f"sr-rate-b{n}"} for n in range(3)], "slow"
    )
    assert [r["status"] for r in results] == [202, 429, 429]
    assert results[1]["problem"]["retry_after_s"] >= 1
    response = await harness.client.post(
        "/v1/cancellations", json={**BODY, "resource_id": "sr-rate-x"}, headers=bearer("slow")
    )
    problem = await response.json()
    assert response.status == 429, problem
    assert response.content_type == "application/problem+json"
    assert 1 <= int(response.headers["Retry-After"]) <= 20  # one of 3/min refills in 20 s
    assert "slow" in problem["detail"]
    # Another token has its own budget (none here).
    await harness.enqueue("sr-rate-fast", headers=bearer("fast"))
    assert await db.fetchval("SELECT count(*) FROM cancellations") == 4


# --- start-up ----------------------------------------------------------------------------

LONG = tok("startup")

REFUSED = [
    ("short", "x" * 31 + ";name=short", "at least 32"),
    ("empty", ":admin;name=empty", "empty"),
    ("unknown option", f"{LONG};colour=blue", "unknown option"),
    ("malformed rate", f"{LONG};name=a;rate=fast", "rate="),
    ("malformed accounts", f"{LONG};name=a;accounts=everything", "accounts="),
    ("no name, no key", LONG, "ORCH_SECRET_KEY"),
    ("unknown account", f"{LONG};name=a;accounts=dropbox_sign/nowhere", "not configured"),
    ("a name twice", f"{LONG};name=a,{tok('other')};name=a", "two tokens"),
]


@pytest.mark.parametrize(("case", "value", "says"), REFUSED, ids=[c[0] for c in REFUSED])
def test_a_weak_or_malformed_token_entry_stops_start_up_without_echoing_it(
    tmp_path: Path, case: str, value: str, says: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCH_", "DATABASE_URL"))}
    env.update(ORCH_API_TOKENS=value, ORCH_DATA_DIR=str(tmp_path), ORCH_PORT=str(free_port()))
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "ORCH_API_TOKENS" in done.stderr
    assert says in done.stderr, done.stderr
    secret = value.split(";")[0].split(":")[0]
    if secret:
        assert secret not in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "pgdata").exists()


def test_a_derived_name_is_keyed_never_a_hash_of_the_token() -> None:
    import hashlib

    name = tokens.derived_name(LONG, "k" * 32)
    assert name.startswith("t-")
    assert name[2:] not in hashlib.sha256(LONG.encode()).hexdigest()
    assert name != tokens.derived_name(LONG, "j" * 32)  # another key, another name
    assert name == tokens.derived_name(LONG, "k" * 32)  # every instance agrees
