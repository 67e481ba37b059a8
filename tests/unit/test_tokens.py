"""The ORCH_API_TOKENS grammar, token names, receiver secrets and the token bucket."""

from __future__ import annotations

import pytest

from orchestrator import tokens
from orchestrator.web.limits import BucketsByKey, TokenBucket

SECRET = "s" * 40
KEY = "k" * 32
WHSEC = "whsec_" + "A" * 43 + "="


def test_the_old_forms_still_parse_with_a_secret_key() -> None:
    bare, scoped = tokens.parse((SECRET, "t" * 40 + ":enqueue+read"), KEY)
    assert bare.scopes == frozenset(tokens.SCOPES)
    assert scoped.scopes == {"enqueue", "read"}
    assert bare.name == tokens.derived_name(SECRET, KEY) and bare.name.startswith("t-")


def test_names_accounts_and_rate_parse() -> None:
    (spec,) = tokens.parse(
        (f"{SECRET}:enqueue;name=billing;accounts=dropbox_sign/default+truto/x;rate=600/min",),
        None,
    )
    assert spec.name == "billing"
    assert spec.accounts == {"dropbox_sign/default", "truto/x"}
    assert spec.rate == tokens.Rate(600, 60.0) and spec.rate.per_second == 10
    assert SECRET not in repr(spec)


@pytest.mark.parametrize(
    "entry",
    [
        "short;name=a",
        ":admin;name=a",
        f"{SECRET}:delete;name=a",
        f"{SECRET};name=has space",
        f"{SECRET};name=a;name=b",
        f"{SECRET};rate=0/s;name=a",
        f"{SECRET};rate=10/day;name=a",
        f"{SECRET};accounts=;name=a",
        f"{SECRET};owner=me;name=a",
        SECRET,  # no name and no ORCH_SECRET_KEY
    ],
)
def test_a_bad_entry_is_refused_naming_the_setting_not_the_token(entry: str) -> None:
    with pytest.raises(ValueError, match="ORCH_API_TOKENS") as caught:
        tokens.parse((entry,), None)
    assert SECRET not in str(caught.value) and "short" not in str(caught.value)


def test_each_receiver_has_its_own_callback_secret() -> None:
    a, b = tokens.callback_secret(WHSEC, "a"), tokens.callback_secret(WHSEC, "b")
    assert a.startswith("whsec_") and a != b and a != WHSEC
    assert a == tokens.callback_secret(WHSEC, "a")  # every instance derives the same
    assert tokens.receiver_of("token:a") == "a" and tokens.receiver_of(None) == "anonymous"


def test_the_bucket_grants_its_burst_then_refills_evenly() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=0.5, capacity=3, now=lambda: now[0])
    assert bucket.take_up_to(5) == 3
    assert bucket.take_up_to(1) == 0 and bucket.wait_for(1) == 2.0
    now[0] = 2.0
    assert bucket.take_up_to(2) == 1
    now[0] = 1000.0
    assert bucket.available() == 3  # never above capacity


def test_buckets_by_key_forget_the_least_recent_beyond_the_cap() -> None:
    buckets = BucketsByKey(rate=1, capacity=1, max_keys=2, now=lambda: 0.0)
    buckets.get("a").take_up_to(1)
    buckets.get("b")
    buckets.get("c")  # "a" is dropped: a flood of addresses cannot grow memory
    assert buckets.get("a").available() == 1
