"""Bearer tokens with scopes, accounts and an enqueue rate for /v1, compared in constant time.

ORCH_API_TOKENS lists the tokens (the grammar is in orchestrator/tokens.py). Each has a
name, the only thing histories, logs and the dashboard show of it. Webhooks never take
these tokens: the providers sign their callbacks instead.
"""

from __future__ import annotations

import enum
import hmac
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from orchestrator import errors, tokens
from orchestrator.config import Settings
from orchestrator.service import Caller
from orchestrator.web.access import WHO
from orchestrator.web.limits import TokenBucket


class Scope(enum.StrEnum):
    ENQUEUE = "enqueue"
    READ = "read"
    ADMIN = "admin"


@dataclass(frozen=True)
class Token:
    secret: bytes
    scopes: frozenset[Scope]
    #: The token's public name (given, or derived with ORCH_SECRET_KEY): never the token.
    name: str
    accounts: frozenset[str] | None = None
    rate: tokens.Rate | None = None

    @property
    def actor(self) -> str:
        """How the history names whoever used this token: `token:<name>`."""
        return tokens.actor(self.name)

    def caller(self) -> Caller:
        return Caller(self.actor, self.accounts, scope=self.name)

    def __repr__(self) -> str:  # never the secret
        return f"Token(name={self.name!r})"


def from_specs(specs: list[tokens.TokenSpec]) -> list[Token]:
    return [
        Token(
            s.secret.encode(),
            frozenset(Scope(x) for x in s.scopes),
            s.name,
            s.accounts,
            s.rate,
        )
        for s in specs
    ]


def parse_tokens(settings: Settings) -> list[Token]:
    """The configured tokens (Settings checked them at start-up)."""
    return from_specs(settings.tokens())


#: The token that authenticated this request, when tokens are configured.
TOKEN = web.RequestKey("token", Token)
#: Per token name, its enqueue bucket (tokens with a rate only); in memory, per instance.
BUCKETS = web.AppKey("token_buckets", dict[str, TokenBucket])


def required_scope(request: web.Request) -> Scope | None:
    """The scope an API call needs; None outside /v1 (health, metrics, webhooks, docs)."""
    if not request.path.startswith("/v1/"):
        return None
    if request.method == "POST":
        if request.path.endswith(("/retry", "/abandon")):
            return Scope.ADMIN
        return Scope.ENQUEUE
    return Scope.READ


def authenticate(tokens_: list[Token], presented: str) -> Token | None:
    """The token `presented` is, if any. Every token is compared, so the time taken says
    nothing about which matched (the dashboard's login uses this too)."""
    given = presented.encode()
    found = None
    for token in tokens_:
        if hmac.compare_digest(token.secret, given):
            found = token
    return found


def actor(request: web.Request) -> str:
    token = request.get(TOKEN)
    return token.actor if token else tokens.ANONYMOUS


def caller(request: web.Request) -> Caller:
    """Who is calling, as the service sees it; without tokens, the one anonymous caller."""
    token = request.get(TOKEN)
    return token.caller() if token else Caller(tokens.ANONYMOUS, None, scope=None)


def take_enqueues(request: web.Request, wanted: int) -> int:
    """How many of `wanted` enqueues the caller's rate allows now (all without a rate);
    none at all is a 429 with Retry-After."""
    token = request.get(TOKEN)
    if token is None or token.rate is None:
        return wanted
    bucket = request.app[BUCKETS][token.name]
    granted = bucket.take_up_to(wanted)
    if granted == 0:
        raise errors.TooManyRequests(
            f"token {token.name!r} may enqueue {token.rate.count} per {token.rate.per_s:g}s",
            retry_after_s=bucket.wait_for(1),
        )
    return granted


def enqueue_wait(request: web.Request, count: int) -> float:
    """Seconds until the caller's rate allows `count` more enqueues (up to its burst)."""
    token = request.get(TOKEN)
    if token is None or token.rate is None:
        return 0.0
    return request.app[BUCKETS][token.name].wait_for(count)


def bearer_auth_middleware(settings: Settings) -> Any:
    tokens_ = parse_tokens(settings)

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        needed = required_scope(request)
        if tokens_ and needed is not None:
            header = request.headers.get("Authorization", "")
            scheme, _, given = header.partition(" ")
            if scheme.lower() != "bearer" or not given:
                raise errors.Unauthorized("send Authorization: Bearer <token>")
            found = authenticate(tokens_, given.strip())
            if found is None:
                raise errors.Unauthorized("the bearer token is not valid")
            if needed not in found.scopes:
                raise errors.Forbidden(
                    f"this token lacks the {needed.value!r} scope", missing_scope=needed.value
                )
            request[TOKEN] = found
            request[WHO] = found.name
        response: web.StreamResponse = await handler(request)
        return response

    return middleware


def buckets(settings: Settings) -> dict[str, TokenBucket]:
    return {
        t.name: TokenBucket(t.rate.per_second, t.rate.count)
        for t in settings.tokens()
        if t.rate is not None
    }
