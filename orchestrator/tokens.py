"""The ORCH_API_TOKENS grammar, token names, and the per-receiver callback secrets.

Pure functions over strings (no environment, no I/O): config.py validates the setting with
`parse` at start-up, the web layer authenticates with the result, the callback worker and
`orchestrator callback-secret` derive the same per-receiver secret with `callback_secret`.

    ORCH_API_TOKENS = entry *("," entry)
    entry   = token [":" scope *("+" scope)] *(";" option)
    scope   = "enqueue" / "read" / "admin"                ; none given: every scope
    option  = "name=" NAME                                ; [A-Za-z0-9_.-]{1,64}
            / "accounts=" provider "/" account *("+" provider "/" account)
            / "rate=" COUNT "/" ("s" / "min" / "h")        ; enqueues, a token bucket

A token is at least 32 characters and cannot contain `,` `:` `;` or spaces (make one with
`python -c 'import secrets; print(secrets.token_urlsafe(32))'`). A token without `name=` is
named with ORCH_SECRET_KEY (`t-` and 12 hex of an HMAC of the token under that key), so a
name never lets anyone test a guess of the token offline. No message ever repeats a token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass

MIN_TOKEN_LENGTH = 32
SCOPES = ("enqueue", "read", "admin")
MAKE_ONE = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_ACCOUNT = re.compile(r"[a-z_]{1,32}/[A-Za-z0-9_.-]{1,64}")
_RATE = re.compile(r"([1-9][0-9]{0,6})/(s|min|h)")
_PER = {"s": 1.0, "min": 60.0, "h": 3600.0}
_FORBIDDEN_IN_TOKEN = re.compile(r"[,:;\s]")
_NAME_PURPOSE = b"orchestrator-token-name-v1\x00"
_CALLBACK_PURPOSE = b"orchestrator-callback-secret-v1\x00"
#: Who acts when no tokens are configured (loopback development): one anonymous caller.
ANONYMOUS = "anonymous"


@dataclass(frozen=True)
class Rate:
    """`count` enqueues per `per_s` seconds: a bucket of `count`, refilled evenly."""

    count: int
    per_s: float

    @property
    def per_second(self) -> float:
        return self.count / self.per_s


@dataclass(frozen=True)
class TokenSpec:
    name: str
    secret: str
    scopes: frozenset[str]
    #: "provider/account" this token may act on; None: every account.
    accounts: frozenset[str] | None = None
    rate: Rate | None = None

    def __repr__(self) -> str:  # never the secret
        return f"TokenSpec(name={self.name!r}, scopes={sorted(self.scopes)})"


def parse(entries: tuple[str, ...], secret_key: str | None) -> list[TokenSpec]:
    """Every entry checked; a ValueError names ORCH_API_TOKENS and the entry's position,
    never its token."""
    specs: list[TokenSpec] = []
    for position, entry in enumerate(entries, start=1):
        specs.append(_entry(entry, position, secret_key))
    names = [s.name for s in specs]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(f"ORCH_API_TOKENS: the name {name!r} is given to two tokens")
    secrets_seen = [s.secret for s in specs]
    if len(set(secrets_seen)) != len(secrets_seen):
        raise ValueError("ORCH_API_TOKENS: the same token is listed twice")
    return specs


def _entry(entry: str, position: int, secret_key: str | None) -> TokenSpec:
    where = f"ORCH_API_TOKENS: entry {position}"
    head, *options = entry.strip().split(";")
    secret, colon, scope_text = head.partition(":")
    secret = secret.strip()
    if not secret:
        raise ValueError(f"{where}: the token is empty")
    if _FORBIDDEN_IN_TOKEN.search(secret):
        raise ValueError(f"{where}: a token cannot contain ',', ':', ';' or spaces")
    if len(secret) < MIN_TOKEN_LENGTH:
        raise ValueError(
            f"{where}: the token has {len(secret)} characters, at least {MIN_TOKEN_LENGTH}"
            f" are needed (make one: {MAKE_ONE})"
        )
    scopes = frozenset(SCOPES)
    if colon:
        given = [s.strip() for s in scope_text.split("+")]
        unknown = [s for s in given if s not in SCOPES]
        if unknown or not given:
            raise ValueError(
                f"{where}: unknown scope {'+'.join(unknown) or '(none)'!r}"
                f" (known: {', '.join(SCOPES)})"
            )
        scopes = frozenset(given)
    values: dict[str, str] = {}
    for option in options:
        key, equals, value = option.strip().partition("=")
        if not equals or key not in ("name", "accounts", "rate"):
            raise ValueError(
                f"{where}: unknown option {key.strip()[:20]!r} (known: name=, accounts=, rate=)"
            )
        if key in values:
            raise ValueError(f"{where}: {key}= is given twice")
        values[key] = value.strip()
    name = values.get("name")
    if name is None:
        if not secret_key:
            raise ValueError(
                f"{where} has no name=: give each token a name, or set ORCH_SECRET_KEY to"
                " derive one"
            )
        name = derived_name(secret, secret_key)
    elif not _NAME.fullmatch(name):
        raise ValueError(f"{where}: name= must be 1-64 of A-Z a-z 0-9 _ . -")
    accounts = None
    if "accounts" in values:
        listed = [a.strip() for a in values["accounts"].split("+")]
        bad = [a for a in listed if not _ACCOUNT.fullmatch(a)]
        if bad or not listed:
            raise ValueError(
                f"{where}: accounts= takes provider/account, e.g. dropbox_sign/default"
            )
        accounts = frozenset(listed)
    rate = None
    if "rate" in values:
        match = _RATE.fullmatch(values["rate"])
        if match is None:
            raise ValueError(f"{where}: rate= takes COUNT/s, COUNT/min or COUNT/h, e.g. 60/min")
        rate = Rate(int(match[1]), _PER[match[2]])
    return TokenSpec(name, secret, scopes, accounts, rate)


def derived_name(secret: str, secret_key: str) -> str:
    """A stable name for an unnamed token: an HMAC under the server's key, so without the
    key the name says nothing about the token."""
    mac = hmac.new(secret_key.encode(), _NAME_PURPOSE + secret.encode(), hashlib.sha256)
    return "t-" + mac.hexdigest()[:12]


def actor(name: str) -> str:
    """How the history names whoever used a token."""
    return f"token:{name}"


def callback_secret(base: str, receiver: str) -> str:
    """The Standard Webhooks secret (`whsec_...`) that signs callbacks for what `receiver`
    (a token name, or `anonymous`) enqueued: HMAC-SHA256 of the name under the key of
    ORCH_CALLBACK_SECRET, so one receiver's secret verifies nothing sent to another."""
    key = base64.b64decode(base.removeprefix("whsec_"))
    derived = hmac.new(key, _CALLBACK_PURPOSE + receiver.encode(), hashlib.sha256).digest()
    return "whsec_" + base64.b64encode(derived).decode()


def receiver_of(enqueued_by: str | None) -> str:
    """The receiver name a cancellation's callbacks are signed for, from its enqueued_by
    (`token:<name>` or `anonymous`; rows from before 0008 have none: anonymous)."""
    if enqueued_by is None:
        return ANONYMOUS
    return enqueued_by.removeprefix("token:")
